/**
 * Streaming safetensors writer: the header is written first from the tensor list, then the data of each
 * tensor in order, chunk by chunk, so a checkpoint larger than memory can be written. The file appears at
 * its final path only when complete (temp file + fsync + rename).
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { byteSize, safetensorsName, type DType } from '../core/dtype.js';
import { OlmoeError, withIo } from '../core/errors.js';

export interface TensorSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export function tensorByteLength(spec: TensorSpec): number {
  return byteSize(spec.dtype, spec.shape);
}

export class SafetensorsWriter {
  private readonly fd: number;
  private readonly tempPath: string;
  private written = 0;
  private readonly totalData: number;
  private closed = false;

  constructor(
    readonly path: string,
    specs: readonly TensorSpec[],
    metadata: Record<string, string> = { format: 'pt' },
  ) {
    this.tempPath = `${path}.tmp-${process.pid}`;
    const { header, totalData } = encodeHeader(specs, metadata);
    this.totalData = totalData;
    this.fd = withIo(this.tempPath, 'create', () => openSync(this.tempPath, 'w'));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    this.writeOrAbort(length);
    this.writeOrAbort(header);
  }

  /** Append the next bytes of tensor data (tensors in the order given to the constructor). */
  write(bytes: Uint8Array): void {
    if (this.written + bytes.length > this.totalData) {
      throw new OlmoeError('input', `${this.path}: more data written than the header declares (${this.totalData} bytes)`);
    }
    this.writeOrAbort(bytes);
    this.written += bytes.length;
  }

  /** Flush, check completeness and move the file into place. */
  finish(): void {
    if (this.written !== this.totalData) {
      this.abort();
      throw new OlmoeError('input', `${this.path}: ${this.written} of ${this.totalData} data bytes written`);
    }
    try {
      withIo(this.tempPath, 'write', () => fsyncSync(this.fd));
      closeSync(this.fd);
      this.closed = true;
      withIo(this.path, 'move into place', () => renameSync(this.tempPath, this.path));
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  /** A failed write (disk full) removes the partial file before reporting. */
  private writeOrAbort(bytes: Uint8Array): void {
    try {
      withIo(this.tempPath, 'write', () => writeAll(this.fd, bytes));
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  /** Remove the partial file; the final path is never touched. */
  abort(): void {
    if (!this.closed) closeSync(this.fd);
    this.closed = true;
    rmSync(this.tempPath, { force: true });
  }
}

function encodeHeader(specs: readonly TensorSpec[], metadata: Record<string, string>): { header: Buffer; totalData: number } {
  const entries: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const spec of specs) {
    const size = tensorByteLength(spec);
    entries[spec.name] = { dtype: safetensorsName(spec.dtype), shape: spec.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const json = JSON.stringify(entries);
  // Pad with spaces so the data region starts 8-byte aligned, as the reference writer does.
  const padding = (8 - (Buffer.byteLength(json) % 8)) % 8;
  return { header: Buffer.from(json + ' '.repeat(padding), 'utf8'), totalData: offset };
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** Write a whole safetensors file from in-memory tensors (small checkpoints, tests). */
export function writeSafetensors(path: string, tensors: ReadonlyArray<TensorSpec & { bytes: Uint8Array }>, metadata?: Record<string, string>): void {
  const writer = new SafetensorsWriter(path, tensors, metadata);
  try {
    for (const tensor of tensors) writer.write(tensor.bytes);
    writer.finish();
  } catch (error) {
    writer.abort();
    throw error;
  }
}

/**
 * Streaming safetensors writer: the header is written first from the tensor list, then the data of each
 * tensor in order, chunk by chunk, so a checkpoint larger than memory can be written. The file appears at
 * its final path only when complete (temp file + fsync + rename).
 */
import { byteSize, safetensorsName, type DType } from '../core/dtype.js';
import { OlmoeError } from '../core/errors.js';
import { AtomicFile } from './atomic-file.js';

export interface TensorSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export function tensorByteLength(spec: TensorSpec): number {
  return byteSize(spec.dtype, spec.shape);
}

export class SafetensorsWriter {
  private readonly file: AtomicFile;
  private readonly totalData: number;
  private readonly headerBytes: number;

  constructor(
    readonly path: string,
    specs: readonly TensorSpec[],
    metadata: Record<string, string> = { format: 'pt' },
  ) {
    const { header, totalData } = encodeHeader(specs, metadata);
    this.totalData = totalData;
    this.file = new AtomicFile(path);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    this.file.write(length);
    this.file.write(header);
    this.headerBytes = this.file.written;
  }

  /** Append the next bytes of tensor data (tensors in the order given to the constructor). */
  write(bytes: Uint8Array): void {
    if (this.file.written - this.headerBytes + bytes.length > this.totalData) {
      throw new OlmoeError('input', `${this.path}: more data written than the header declares (${this.totalData} bytes)`);
    }
    this.file.write(bytes);
  }

  /** Flush, check completeness and move the file into place. */
  finish(): void {
    const data = this.file.written - this.headerBytes;
    if (data !== this.totalData) {
      this.abort();
      throw new OlmoeError('input', `${this.path}: ${data} of ${this.totalData} data bytes written`);
    }
    this.file.finish();
  }

  /** Remove the partial file; the final path is never touched. */
  abort(): void {
    this.file.abort();
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

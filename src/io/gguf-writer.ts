/**
 * Streaming GGUF v3 writer: typed metadata and tensor infos first, then each tensor's bytes in order, padded to
 * the alignment; written to a temporary file and renamed into place when complete.
 */
import { byteSize, type DType } from '../core/dtype.js';
import { OlmoeError } from '../core/errors.js';
import { AtomicFile } from './atomic-file.js';
import { GGML_TYPE_IDS, GGUF_MAGIC } from './gguf.js';

type Scalar = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'bool' | 'string' | 'u64' | 'i64' | 'f64';
/** A metadata value with the exact GGUF type llama.cpp expects for its key. */
export type GgufMetadataValue =
  | { type: Exclude<Scalar, 'string' | 'bool' | 'u64' | 'i64'>; value: number }
  | { type: 'u64' | 'i64'; value: number | bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; elementType: Scalar; values: readonly (number | string | boolean | bigint)[] };

const TYPE_IDS: Record<Scalar | 'array', number> = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 };

export interface GgufTensorSpec {
  name: string;
  dtype: DType;
  /** PyTorch order (slowest first); written as ne (fastest first). */
  shape: readonly number[];
}

const ALIGNMENT = 32;
const SCALAR_BYTES: Record<Exclude<Scalar, 'string'>, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8 };

export class GgufWriter {
  private readonly file: AtomicFile;
  private readonly sizes: number[];
  private tensorIndex = 0;
  private writtenInTensor = 0;

  constructor(
    readonly path: string,
    metadata: ReadonlyArray<[string, GgufMetadataValue]>,
    tensors: readonly GgufTensorSpec[],
  ) {
    this.sizes = tensors.map((t) => byteSize(t.dtype, t.shape));
    const header = encodeHeader(metadata, tensors, this.sizes);
    this.file = new AtomicFile(path);
    this.file.write(header);
  }

  /** Append bytes of the current tensor (tensors in the order given); padding is added between tensors. */
  write(bytes: Uint8Array): void {
    if (this.tensorIndex >= this.sizes.length) throw new OlmoeError('input', `${this.path}: more data than the tensors declare`);
    const size = this.sizes[this.tensorIndex]!;
    if (this.writtenInTensor + bytes.length > size) throw new OlmoeError('input', `${this.path}: tensor ${this.tensorIndex} gets more than its ${size} bytes`);
    this.file.write(bytes);
    this.writtenInTensor += bytes.length;
    if (this.writtenInTensor === size) {
      this.file.write(new Uint8Array(padding(size)));
      this.tensorIndex++;
      this.writtenInTensor = 0;
    }
  }

  finish(): void {
    if (this.tensorIndex !== this.sizes.length) {
      this.abort();
      throw new OlmoeError('input', `${this.path}: ${this.tensorIndex} of ${this.sizes.length} tensors written`);
    }
    this.file.finish();
  }

  abort(): void {
    this.file.abort();
  }
}

const padding = (size: number) => (ALIGNMENT - (size % ALIGNMENT)) % ALIGNMENT;

/** Little-endian encoder that grows as needed. */
class Encoder {
  private buffer = Buffer.alloc(1 << 16);
  length = 0;

  private room(bytes: number): number {
    if (this.length + bytes > this.buffer.length) {
      const grown = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + bytes));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const at = this.length;
    this.length += bytes;
    return at;
  }

  scalar(type: Scalar, value: number | string | boolean | bigint): void {
    if (type === 'string') {
      const bytes = Buffer.from(String(value), 'utf8');
      this.scalar('u64', bytes.length);
      const at = this.room(bytes.length); // grow first: the buffer written to must be the one kept
      bytes.copy(this.buffer, at);
      return;
    }
    const at = this.room(SCALAR_BYTES[type]);
    const b = this.buffer;
    switch (type) {
      case 'u8': b.writeUInt8(Number(value), at); break;
      case 'i8': b.writeInt8(Number(value), at); break;
      case 'u16': b.writeUInt16LE(Number(value), at); break;
      case 'i16': b.writeInt16LE(Number(value), at); break;
      case 'u32': b.writeUInt32LE(Number(value), at); break;
      case 'i32': b.writeInt32LE(Number(value), at); break;
      case 'f32': b.writeFloatLE(Number(value), at); break;
      case 'f64': b.writeDoubleLE(Number(value), at); break;
      case 'bool': b.writeUInt8(value ? 1 : 0, at); break;
      case 'u64': b.writeBigUInt64LE(BigInt(value), at); break;
      case 'i64': b.writeBigInt64LE(BigInt(value), at); break;
    }
  }

  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

function encodeHeader(metadata: ReadonlyArray<[string, GgufMetadataValue]>, tensors: readonly GgufTensorSpec[], sizes: number[]): Buffer {
  const e = new Encoder();
  e.scalar('u32', GGUF_MAGIC);
  e.scalar('u32', 3);
  e.scalar('u64', tensors.length);
  e.scalar('u64', metadata.length);
  for (const [key, value] of metadata) {
    e.scalar('string', key);
    e.scalar('u32', TYPE_IDS[value.type]);
    if (value.type === 'array') {
      e.scalar('u32', TYPE_IDS[value.elementType]);
      e.scalar('u64', value.values.length);
      for (const item of value.values) e.scalar(value.elementType, item);
    } else {
      e.scalar(value.type, value.value);
    }
  }
  let offset = 0;
  tensors.forEach((tensor, i) => {
    e.scalar('string', tensor.name);
    e.scalar('u32', tensor.shape.length);
    for (const dim of [...tensor.shape].reverse()) e.scalar('u64', dim);
    e.scalar('u32', GGML_TYPE_IDS[tensor.dtype]);
    e.scalar('u64', offset);
    offset += sizes[i]! + padding(sizes[i]!);
  });
  const header = e.bytes();
  return Buffer.concat([header, Buffer.alloc(padding(header.length))]);
}

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
    switch (type) {
      case 'u8': this.buffer.writeUInt8(Number(value), this.room(1)); break;
      case 'i8': this.buffer.writeInt8(Number(value), this.room(1)); break;
      case 'u16': this.buffer.writeUInt16LE(Number(value), this.room(2)); break;
      case 'i16': this.buffer.writeInt16LE(Number(value), this.room(2)); break;
      case 'u32': this.buffer.writeUInt32LE(Number(value), this.room(4)); break;
      case 'i32': this.buffer.writeInt32LE(Number(value), this.room(4)); break;
      case 'f32': this.buffer.writeFloatLE(Number(value), this.room(4)); break;
      case 'f64': this.buffer.writeDoubleLE(Number(value), this.room(8)); break;
      case 'bool': this.buffer.writeUInt8(value ? 1 : 0, this.room(1)); break;
      case 'u64': this.buffer.writeBigUInt64LE(BigInt(value), this.room(8)); break;
      case 'i64': this.buffer.writeBigInt64LE(BigInt(value), this.room(8)); break;
      case 'string': {
        const bytes = Buffer.from(String(value), 'utf8');
        this.scalar('u64', bytes.length);
        bytes.copy(this.buffer, this.room(bytes.length));
        break;
      }
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

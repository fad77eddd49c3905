/**
 * GGUF (llama.cpp's single-file format, v2/v3): "GGUF", version, tensor and key-value counts, typed metadata,
 * tensor infos (name, dims fastest-first, ggml type, offset), then data aligned to general.alignment (32).
 * The header is read strictly through a bounds-checked reader; tensor data is only located, never read here.
 */
import { closeSync, fstatSync, readSync } from 'node:fs';
import { byteSize, type DType } from '../core/dtype.js';
import { FormatError, UnsupportedError } from '../core/errors.js';
import { openRegularFile } from './files.js';
import type { TensorEntry } from './safetensors.js';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufFile {
  readonly file: string;
  readonly version: number;
  readonly metadata: Map<string, GgufValue>;
  /** Shapes in PyTorch order (slowest dimension first), i.e. GGUF's ne reversed. */
  readonly tensors: Map<string, TensorEntry>;
  readonly alignment: number;
}

/** ggml type ids (ggml.h) of the formats this project reads and writes. */
export const GGML_TYPES: Record<number, DType> = { 0: 'f32', 1: 'f16', 2: 'q4_0', 8: 'q8_0', 12: 'q4_k', 13: 'q5_k', 14: 'q6_k', 30: 'bf16' };
const GGML_TYPE_NAMES: Record<number, string> = {
  3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS',
  19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M',
};
export const GGML_TYPE_IDS = Object.fromEntries(Object.entries(GGML_TYPES).map(([id, dtype]) => [dtype, Number(id)])) as Record<DType, number>;

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const MAX_DIMS = 4;

/** Sequential little-endian reads over a file descriptor, refilling a window, never past the end. */
class HeaderReader {
  private buffer = Buffer.alloc(1 << 20);
  private start = 0; // file position of buffer[0]
  private filled = 0;
  position = 0;

  constructor(
    private readonly fd: number,
    private readonly file: string,
    readonly size: number,
  ) {}

  private ensure(bytes: number, what: string): void {
    if (this.position + bytes > this.size) {
      throw new FormatError(this.file, `truncated: ${what} needs ${bytes} bytes at offset ${this.position}, the file has ${this.size}`);
    }
    if (this.position >= this.start && this.position + bytes <= this.start + this.filled) return;
    if (bytes > this.buffer.length) this.buffer = Buffer.alloc(bytes);
    this.start = this.position;
    this.filled = readSync(this.fd, this.buffer, 0, Math.min(this.buffer.length, this.size - this.start), this.start);
  }

  private at(bytes: number, what: string): number {
    this.ensure(bytes, what);
    const offset = this.position - this.start;
    this.position += bytes;
    return offset;
  }

  u8 = (what: string) => this.buffer.readUInt8(this.at(1, what));
  i8 = (what: string) => this.buffer.readInt8(this.at(1, what));
  u16 = (what: string) => this.buffer.readUInt16LE(this.at(2, what));
  i16 = (what: string) => this.buffer.readInt16LE(this.at(2, what));
  u32 = (what: string) => this.buffer.readUInt32LE(this.at(4, what));
  i32 = (what: string) => this.buffer.readInt32LE(this.at(4, what));
  f32 = (what: string) => this.buffer.readFloatLE(this.at(4, what));
  f64 = (what: string) => this.buffer.readDoubleLE(this.at(8, what));
  u64 = (what: string) => this.buffer.readBigUInt64LE(this.at(8, what));
  i64 = (what: string) => this.buffer.readBigInt64LE(this.at(8, what));

  /** A u64 that must be a safe count or offset. */
  count(what: string, limit = Number.MAX_SAFE_INTEGER): number {
    const value = this.u64(what);
    if (value > BigInt(limit)) throw new FormatError(this.file, `${what} ${value} is implausible (limit ${limit})`);
    return Number(value);
  }

  string(what: string): string {
    const length = this.count(`${what} length`, this.size);
    const offset = this.at(length, what);
    return this.buffer.toString('utf8', offset, offset + length);
  }
}

export function readGguf(file: string): GgufFile {
  const fd = openRegularFile(file);
  try {
    return parseGguf(new HeaderReader(fd, file, fstatSync(fd).size), file);
  } finally {
    closeSync(fd);
  }
}

/** llama.cpp's limits where the format sets none: nesting depth of arrays and elements per array. */
const MAX_ARRAY_DEPTH = 4;
const MAX_ARRAY_LENGTH = 1 << 26;
const MAX_ALIGNMENT = 1 << 20;

function parseGguf(r: HeaderReader, file: string): GgufFile {
  const magic = r.u32('magic');
  if (magic !== GGUF_MAGIC) throw new FormatError(file, `not a GGUF file (magic 0x${magic.toString(16)}, expected "GGUF")`);
  const version = r.u32('version');
  if (version !== 2 && version !== 3) throw new UnsupportedError(`${file}: GGUF version ${version} is not supported (2 or 3)`);
  const tensorCount = r.count('tensor count', 1_000_000);
  const kvCount = r.count('metadata count', 1_000_000);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = r.string(`metadata key ${i}`);
    if (metadata.has(key)) throw new FormatError(file, `metadata key ${JSON.stringify(key)} appears twice`);
    metadata.set(key, readValue(r, file, r.u32(`type of ${key}`), key, 0));
  }
  const alignment = readAlignment(file, metadata);
  const infos = Array.from({ length: tensorCount }, (_, i) => readTensorInfo(r, file, i));
  const dataStart = Math.ceil(r.position / alignment) * alignment;
  const tensors = new Map<string, TensorEntry>();
  let expectedOffset = 0; // llama.cpp: tensors are stored in header order, each padded to the alignment
  let previous: TensorEntry | undefined;
  for (const info of infos) {
    if (tensors.has(info.name)) throw new FormatError(file, `tensor ${JSON.stringify(info.name)} appears twice`);
    const entry = locate(info, { file, dataStart, size: r.size, alignment });
    if (info.offset !== expectedOffset) {
      const after = previous ? `tensor ${JSON.stringify(previous.name)} ([${previous.shape.join(', ')}] ${previous.dtype}) ends at ${expectedOffset}` : 'the first tensor starts at 0';
      throw new FormatError(file, `tensor ${JSON.stringify(info.name)} has offset ${info.offset} but ${after} (padded to ${alignment}): a shape, type or offset is wrong`);
    }
    expectedOffset += Math.ceil(entry.byteLength / alignment) * alignment;
    tensors.set(info.name, entry);
    previous = entry;
  }
  checkDataRegionUsed(file, { dataStart, end: dataStart + expectedOffset, size: r.size, alignment, tensors: tensorCount });
  return { file, version, metadata, tensors, alignment };
}

/** general.alignment: a u32 power of two (llama.cpp refuses anything else), 32 when absent. */
function readAlignment(file: string, metadata: Map<string, GgufValue>): number {
  const value = metadata.get('general.alignment');
  if (value === undefined) return 32;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || (value & (value - 1)) !== 0 || value > MAX_ALIGNMENT) {
    throw new FormatError(file, `general.alignment ${String(value)} is not a power of two up to ${MAX_ALIGNMENT}`);
  }
  return value;
}

/**
 * The tensors must account for every byte after the header: a file longer than its tensors (by more than the
 * last tensor's padding) has a wrong tensor count or offsets, and its weights would be read from the wrong place.
 */
function checkDataRegionUsed(file: string, at: { dataStart: number; end: number; size: number; alignment: number; tensors: number }): void {
  if (at.tensors === 0 ? at.size <= at.dataStart : at.size > at.end - at.alignment && at.size <= at.end) return;
  if (at.size > at.end) {
    throw new FormatError(file, `${at.size - at.end} bytes after the last of its ${at.tensors} tensors belong to no tensor (wrong tensor count or offsets?)`);
  }
  throw new FormatError(file, `truncated: the tensors end at byte ${at.end} but the file has ${at.size}`);
}

function readValue(r: HeaderReader, file: string, type: number, key: string, depth: number): GgufValue {
  switch (type) {
    case 0: return r.u8(key);
    case 1: return r.i8(key);
    case 2: return r.u16(key);
    case 3: return r.i16(key);
    case 4: return r.u32(key);
    case 5: return r.i32(key);
    case 6: return shortestFloat32(r.f32(key));
    case 7: return r.u8(key) !== 0;
    case 8: return r.string(key);
    case 9: {
      if (depth >= MAX_ARRAY_DEPTH) throw new FormatError(file, `metadata ${JSON.stringify(key)}: arrays nested more than ${MAX_ARRAY_DEPTH} deep`);
      const elementType = r.u32(`${key} element type`);
      // Each element takes at least one byte, so a length beyond the bytes left is a lie; cap what we hold in memory.
      const length = r.count(`${key} length`, Math.min(r.size - r.position, MAX_ARRAY_LENGTH));
      const values: GgufValue[] = new Array(length);
      for (let i = 0; i < length; i++) values[i] = readValue(r, file, elementType, key, depth + 1);
      return values;
    }
    case 10: return r.u64(key);
    case 11: return r.i64(key);
    case 12: return r.f64(key);
    default: throw new FormatError(file, `metadata ${JSON.stringify(key)} has unknown value type ${type}`);
  }
}

/** The shortest decimal that is the same float32 (1e-5, not 0.000009999999747), as the writer meant it. */
function shortestFloat32(value: number): number {
  for (let digits = 1; digits < 10; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === value) return candidate;
  }
  return value;
}

interface TensorInfo {
  name: string;
  ne: number[];
  type: number;
  offset: number;
}

function readTensorInfo(r: HeaderReader, file: string, index: number): TensorInfo {
  const name = r.string(`tensor ${index} name`);
  const dims = r.u32(`tensor ${name} dimension count`);
  if (dims === 0 || dims > MAX_DIMS) throw new FormatError(file, `tensor ${JSON.stringify(name)} has ${dims} dimensions (1..${MAX_DIMS} allowed)`);
  const ne = Array.from({ length: dims }, () => r.count(`tensor ${name} dimension`, 2 ** 40));
  return { name, ne, type: r.u32(`tensor ${name} type`), offset: r.count(`tensor ${name} offset`) };
}

function locate(info: TensorInfo, at: { file: string; dataStart: number; size: number; alignment: number }): TensorEntry {
  const where = `tensor ${JSON.stringify(info.name)}`;
  const dtype = GGML_TYPES[info.type];
  if (!dtype) {
    const name = GGML_TYPE_NAMES[info.type] ?? `type ${info.type}`;
    throw new UnsupportedError(`${at.file}: ${where} uses ggml type ${name} (${info.type}); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K`);
  }
  const shape = [...info.ne].reverse();
  let byteLength: number;
  try {
    byteLength = byteSize(dtype, shape);
  } catch (error) {
    throw new FormatError(at.file, `${where}: ${(error as Error).message}`, { cause: error });
  }
  if (!Number.isSafeInteger(byteLength)) throw new FormatError(at.file, `${where}: shape [${shape}] of ${dtype} is too large`);
  if (info.offset % at.alignment !== 0) throw new FormatError(at.file, `${where}: offset ${info.offset} is not aligned to ${at.alignment}`);
  const offset = at.dataStart + info.offset;
  if (offset + byteLength > at.size) {
    throw new FormatError(at.file, `truncated: ${where} needs bytes [${offset}, ${offset + byteLength}) but the file has ${at.size}`);
  }
  return { name: info.name, dtype, shape, file: at.file, offset, byteLength };
}

/** A metadata value as a number (u64 included), or undefined. */
export function metadataNumber(gguf: GgufFile, key: string): number | undefined {
  const value = gguf.metadata.get(key);
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  return undefined;
}

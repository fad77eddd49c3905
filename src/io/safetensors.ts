/**
 * safetensors: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
 * then the data region. The header is checked strictly (bounds, overlaps, dtype, shape × dtype = byte span)
 * and tensors are read positionally, one at a time: a multi-GB shard is never read whole.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { byteSize, SAFETENSORS_DTYPES, typedView, widenInto, type DType } from '../core/dtype.js';
import { FormatError } from '../core/errors.js';
import { openRegularFile } from './files.js';
import { firstDuplicateKey } from './json.js';

export interface TensorEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  readonly file: string;
  readonly tensors: Map<string, TensorEntry>;
  readonly metadata: Record<string, string>;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024; // the limit of the Rust safetensors crate

export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openRegularFile(file);
  try {
    const fileSize = fstatSync(fd).size;
    const { raw, headerBytes } = readHeaderJson(fd, file, fileSize);
    return parseHeader(file, raw, { dataStart: 8 + headerBytes, dataSize: fileSize - 8 - headerBytes });
  } finally {
    closeSync(fd);
  }
}

function openOrThrow(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (error) {
    throw new FormatError(file, `cannot open: ${(error as Error).message}`, { cause: error });
  }
}

function readHeaderJson(fd: number, file: string, fileSize: number): { raw: unknown; headerBytes: number } {
  if (fileSize < 8) throw new FormatError(file, `truncated: ${fileSize} bytes, too short for the 8-byte header length`);
  const lengthBytes = Buffer.alloc(8);
  readFully(fd, lengthBytes, 0, file);
  const headerBytes = lengthBytes.readBigUInt64LE(0);
  if (headerBytes > BigInt(fileSize - 8)) {
    throw new FormatError(file, `header length ${headerBytes} runs past the end of the file (${fileSize} bytes): truncated or not safetensors`);
  }
  if (headerBytes > BigInt(MAX_HEADER_BYTES)) throw new FormatError(file, `header length ${headerBytes} exceeds ${MAX_HEADER_BYTES}`);
  const header = Buffer.alloc(Number(headerBytes));
  readFully(fd, header, 8, file);
  const text = header.toString('utf8');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new FormatError(file, `header is not valid JSON (${(error as Error).message})`, { cause: error });
  }
  const duplicate = firstDuplicateKey(text);
  if (duplicate !== undefined) throw new FormatError(file, `header names ${JSON.stringify(duplicate)} twice`);
  return { raw, headerBytes: Number(headerBytes) };
}

/** Read exactly buffer.length bytes at `position`; a short read means the file ended early. */
export function readFully(fd: number, buffer: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < buffer.length) {
    const chunk = Math.min(buffer.length - done, 1 << 30);
    const n = readSync(fd, buffer, done, chunk, position + done);
    if (n === 0) throw new FormatError(file, `truncated: expected ${buffer.length} bytes at offset ${position}, file ends after ${done}`);
    done += n;
  }
}

interface DataRegion {
  dataStart: number;
  dataSize: number;
}

function parseHeader(file: string, raw: unknown, region: DataRegion): SafetensorsHeader {
  if (!isRecord(raw)) throw new FormatError(file, 'header JSON is not an object');
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (name === '__metadata__') metadata = parseMetadata(file, value);
    else tensors.set(name, parseEntry(file, name, value, region));
  }
  checkTiling(file, [...tensors.values()], region);
  return { file, tensors, metadata };
}

/**
 * As the safetensors crate requires: the tensors' byte ranges follow each other without gaps or overlaps and
 * end exactly at the end of the file. A header length that is off shifts every tensor; this is where it shows.
 */
function checkTiling(file: string, entries: TensorEntry[], region: DataRegion): void {
  const sorted = [...entries].sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let end = region.dataStart;
  let previous: TensorEntry | undefined;
  for (const entry of sorted) {
    if (entry.offset < end) throw new FormatError(file, `tensors ${JSON.stringify(previous!.name)} and ${JSON.stringify(entry.name)} overlap in the data region`);
    if (entry.offset > end) throw new FormatError(file, `${entry.offset - end} bytes before tensor ${JSON.stringify(entry.name)} belong to no tensor (wrong header length or data_offsets?)`);
    end += entry.byteLength;
    if (entry.byteLength > 0) previous = entry;
  }
  const dataEnd = region.dataStart + region.dataSize;
  if (end !== dataEnd) throw new FormatError(file, `the tensors end at byte ${end} but the file has ${dataEnd} bytes (wrong header length or data_offsets?)`);
}

function parseMetadata(file: string, value: unknown): Record<string, string> {
  if (!isRecord(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    throw new FormatError(file, '__metadata__ must map strings to strings');
  }
  return value as Record<string, string>;
}

function parseEntry(file: string, name: string, value: unknown, region: DataRegion): TensorEntry {
  const where = `tensor ${JSON.stringify(name)}`;
  if (!isRecord(value)) throw new FormatError(file, `${where}: entry is not an object`);
  const dtype = Object.hasOwn(SAFETENSORS_DTYPES, String(value.dtype)) ? SAFETENSORS_DTYPES[String(value.dtype)] : undefined;
  if (!dtype) {
    throw new FormatError(file, `${where}: unsupported dtype ${JSON.stringify(value.dtype)} (supported: ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`);
  }
  const shape = value.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(file, `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  const offsets = value.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new FormatError(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > region.dataSize) {
    throw new FormatError(file, `${where}: data_offsets [${begin}, ${end}] outside the data region of ${region.dataSize} bytes`);
  }
  const expected = byteSize(dtype, shape as number[]);
  if (end - begin !== expected) {
    throw new FormatError(file, `${where}: shape [${shape}] × ${dtype} is ${expected} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype, shape, file, offset: region.dataStart + begin, byteLength: end - begin };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Read one tensor's bytes into a fresh, aligned buffer. */
export function readTensorBytes(entry: TensorEntry, fd?: number): Uint8Array {
  const bytes = Buffer.allocUnsafeSlow(entry.byteLength);
  const ownFd = fd ?? openOrThrow(entry.file);
  try {
    readFully(ownFd, bytes, entry.offset, entry.file);
  } finally {
    if (fd === undefined) closeSync(ownFd);
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Read one tensor widened to float32 (any stored float or quantized dtype). */
export function readTensorFloat32(entry: TensorEntry): Float32Array {
  const values = new Float32Array(entry.shape.reduce((a, b) => a * b, 1));
  widenInto(entry.dtype, typedView(entry.dtype, readTensorBytes(entry)), 0, values.length, values);
  return values;
}

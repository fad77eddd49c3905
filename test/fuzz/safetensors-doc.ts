/**
 * A safetensors file as an editable document: the header's entries in order (duplicates allowed, values any
 * JSON), optional trailing spaces in the header, an optional override of the 8-byte header length, and the
 * data region. The fuzzer's own codec, independent of src/io/safetensors.ts.
 */
import { Entries, jsonText, toEntries, type JsonLike } from './random.js';

export interface SafetensorsDoc {
  entries: [string, JsonLike][];
  /** Spaces after the JSON (the Rust writer pads the header to 8 bytes this way). */
  headerPadding: number;
  /** Written instead of the true header length when set. */
  headerLength?: bigint;
  data: Buffer;
}

export interface TensorRecord {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export function parseSafetensorsDoc(bytes: Buffer): SafetensorsDoc {
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString('utf8', 8, 8 + length)) as Record<string, unknown>;
  return { entries: Object.entries(header).map(([k, v]) => [k, toEntries(v)]), headerPadding: 0, data: Buffer.from(bytes.subarray(8 + length)) };
}

export function encodeSafetensorsDoc(doc: SafetensorsDoc): Buffer {
  const json = Buffer.from(jsonText(new Entries(doc.entries)) + ' '.repeat(doc.headerPadding), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt.asUintN(64, doc.headerLength ?? BigInt(json.length)));
  return Buffer.concat([length, json, doc.data]);
}

/** The entry as a plain record when it still has the seed's shape (the mutators edit these). */
export function tensorRecord(value: JsonLike): TensorRecord | undefined {
  if (!(value instanceof Entries)) return undefined;
  const record = Object.fromEntries(value.entries) as Record<string, unknown>;
  const offsets = record.data_offsets;
  if (typeof record.dtype !== 'string' || !Array.isArray(record.shape) || !Array.isArray(offsets) || offsets.length !== 2) return undefined;
  return record as unknown as TensorRecord;
}

export function recordEntries(record: Record<string, unknown>): Entries {
  return toEntries(record) as Entries;
}

/** Names of the entries that are tensors (not __metadata__). */
export function tensorNames(doc: SafetensorsDoc): string[] {
  return doc.entries.filter(([name, value]) => name !== '__metadata__' && tensorRecord(value)).map(([name]) => name);
}

/** Rewrite the data region with the tensors in `order`, `gap` bytes between them; content unchanged. */
export function relayoutSafetensors(doc: SafetensorsDoc, order: readonly string[], gap = 0): SafetensorsDoc {
  const pieces: Buffer[] = [];
  const placed = new Map<string, [number, number]>();
  let at = 0;
  for (const name of order) {
    const record = tensorRecord(doc.entries.find(([n]) => n === name)![1])!;
    const [begin, end] = record.data_offsets;
    if (at > 0 && gap > 0) {
      pieces.push(Buffer.alloc(gap));
      at += gap;
    }
    pieces.push(doc.data.subarray(begin, end));
    placed.set(name, [at, at + end - begin]);
    at += end - begin;
  }
  const entries = doc.entries.map(([name, value]): [string, JsonLike] => {
    const record = placed.has(name) ? tensorRecord(value) : undefined;
    return record ? [name, recordEntries({ ...record, data_offsets: placed.get(name)! })] : [name, value];
  });
  return { ...doc, entries, data: Buffer.concat(pieces) };
}

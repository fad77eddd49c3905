/**
 * A GGUF file as an editable document for the fuzzer: header, typed metadata, tensor infos and the data region,
 * parsed from a (valid) seed and written back either faithfully or with any one field of the header replaced
 * by a raw value. Writing through a flat field list is what makes the mutations structure-aware: a tensor count,
 * a string length or a dimension can be set to 2^63 while every other byte stays where a reader expects it.
 * This is the fuzzer's own small codec, deliberately independent of src/io/gguf.ts.
 */

export const T = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;

export type Value = number | bigint | boolean | string | ArrayValue | RawValue;
/** Pre-encoded value bytes (after the type), for values too deep to build as objects. */
export interface RawValue {
  raw: Buffer;
}
export interface ArrayValue {
  elementType: number;
  items: Value[];
}
export interface Kv {
  key: string;
  type: number;
  value: Value;
}
export interface TensorInfo {
  name: string;
  /** ne, fastest dimension first, as stored. */
  dims: bigint[];
  type: number;
  /** Relative to the data region. */
  offset: bigint;
}
export interface GgufDoc {
  magic: number;
  version: number;
  kvs: Kv[];
  tensors: TensorInfo[];
  /** The padding the writer puts between the header and the data region (0 = none). */
  alignment: number;
  /** Everything from the start of the data region to the end of the file. */
  data: Buffer;
}

/** One encoded field; `role` says what it is, for the field mutators. */
export type FieldKind = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64' | 'u64' | 'i64' | 'raw';
export interface Field {
  role: string;
  kind: FieldKind;
  value: number | bigint | Buffer;
}

const SCALAR_KIND: Record<number, FieldKind> = { 0: 'u8', 1: 'i8', 2: 'u16', 3: 'i16', 4: 'u32', 5: 'i32', 6: 'f32', 7: 'u8', 10: 'u64', 11: 'i64', 12: 'f64' };
const SIZE: Record<Exclude<FieldKind, 'raw'>, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, f64: 8, u64: 8, i64: 8 };

export function parseGgufDoc(bytes: Buffer): GgufDoc {
  let at = 0;
  const u32 = () => ((at += 4), bytes.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), bytes.readBigUInt64LE(at - 8));
  const str = () => {
    const length = Number(u64());
    at += length;
    return bytes.toString('utf8', at - length, at);
  };
  const value = (type: number): Value => {
    switch (type) {
      case T.u8: return bytes.readUInt8((at += 1) - 1);
      case T.i8: return bytes.readInt8((at += 1) - 1);
      case T.u16: return bytes.readUInt16LE((at += 2) - 2);
      case T.i16: return bytes.readInt16LE((at += 2) - 2);
      case T.u32: return u32();
      case T.i32: return bytes.readInt32LE((at += 4) - 4);
      case T.f32: return bytes.readFloatLE((at += 4) - 4);
      case T.bool: return bytes.readUInt8((at += 1) - 1) !== 0;
      case T.string: return str();
      case T.u64: return u64();
      case T.i64: return bytes.readBigInt64LE((at += 8) - 8);
      case T.f64: return bytes.readDoubleLE((at += 8) - 8);
      case T.array: {
        const elementType = u32();
        const length = Number(u64());
        return { elementType, items: Array.from({ length }, () => value(elementType)) };
      }
      default: throw new Error(`seed GGUF: unknown value type ${type}`);
    }
  };
  const magic = u32();
  const version = u32();
  const tensorCount = Number(u64());
  const kvCount = Number(u64());
  const kvs: Kv[] = [];
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const type = u32();
    kvs.push({ key, type, value: value(type) });
  }
  const tensors: TensorInfo[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignmentKv = kvs.find((kv) => kv.key === 'general.alignment');
  const declared = alignmentKv ? Number(alignmentKv.value) : 32;
  const alignment = Number.isInteger(declared) && declared > 0 && declared <= 65536 ? declared : 32; // a mutated one lays out as 32
  const dataStart = Math.ceil(at / alignment) * alignment;
  return { magic, version, kvs, tensors, alignment, data: Buffer.from(bytes.subarray(dataStart)) };
}

/** The document as a flat list of fields, in file order. */
export function ggufFields(doc: GgufDoc): Field[] {
  const fields: Field[] = [];
  const str = (role: string, text: string | Buffer) => {
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    fields.push({ role: `${role}.length`, kind: 'u64', value: BigInt(bytes.length) }, { role: `${role}.bytes`, kind: 'raw', value: bytes });
  };
  const value = (role: string, type: number, v: Value) => {
    if (type === T.string) return str(`${role}.string`, v as string);
    if (typeof v === 'object' && 'raw' in v) return void fields.push({ role: `${role}.raw`, kind: 'raw', value: v.raw });
    if (type === T.array) {
      const array = v as ArrayValue;
      fields.push({ role: `${role}.element_type`, kind: 'u32', value: array.elementType }, { role: `${role}.array_length`, kind: 'u64', value: BigInt(array.items.length) });
      for (const item of array.items) value(`${role}.item`, array.elementType, item);
      return;
    }
    const kind = SCALAR_KIND[type];
    if (!kind) throw new Error(`cannot encode value type ${type}`);
    fields.push({ role: `${role}.scalar`, kind, value: typeof v === 'boolean' ? Number(v) : (v as number | bigint) });
  };
  fields.push(
    { role: 'magic', kind: 'u32', value: doc.magic },
    { role: 'version', kind: 'u32', value: doc.version },
    { role: 'tensor_count', kind: 'u64', value: BigInt(doc.tensors.length) },
    { role: 'kv_count', kind: 'u64', value: BigInt(doc.kvs.length) },
  );
  for (const kv of doc.kvs) {
    str('kv.key', kv.key);
    fields.push({ role: 'kv.type', kind: 'u32', value: kv.type });
    value('kv.value', kv.type, kv.value);
  }
  for (const tensor of doc.tensors) {
    str('tensor.name', tensor.name);
    fields.push({ role: 'tensor.n_dims', kind: 'u32', value: tensor.dims.length });
    for (const dim of tensor.dims) fields.push({ role: 'tensor.dim', kind: 'u64', value: dim });
    fields.push({ role: 'tensor.type', kind: 'u32', value: tensor.type }, { role: 'tensor.offset', kind: 'u64', value: tensor.offset });
  }
  const headerBytes = fields.reduce((sum, f) => sum + fieldSize(f), 0);
  const padded = doc.alignment > 0 && doc.alignment <= 65536 ? Math.ceil(headerBytes / doc.alignment) * doc.alignment : headerBytes;
  fields.push({ role: 'padding', kind: 'raw', value: Buffer.alloc(padded - headerBytes) }, { role: 'data', kind: 'raw', value: doc.data });
  return fields;
}

function fieldSize(field: Field): number {
  return field.kind === 'raw' ? (field.value as Buffer).length : SIZE[field.kind];
}

export function encodeFields(fields: readonly Field[]): Buffer {
  const out = Buffer.alloc(fields.reduce((sum, f) => sum + fieldSize(f), 0));
  let at = 0;
  for (const { kind, value } of fields) {
    if (kind === 'raw') {
      (value as Buffer).copy(out, at);
      at += (value as Buffer).length;
      continue;
    }
    at = writeScalar(out, at, kind, value as number | bigint);
  }
  return out;
}

/** Write a number wrapped into the field's width (a mutated value may not fit its type: 2^63 in a u32 wraps). */
function writeScalar(out: Buffer, at: number, kind: Exclude<FieldKind, 'raw'>, value: number | bigint): number {
  const int = (bits: number) => BigInt.asUintN(bits, typeof value === 'bigint' ? value : BigInt(Math.trunc(Number.isFinite(value) ? value : 0)));
  switch (kind) {
    case 'u8': case 'i8': return out.writeUInt8(Number(int(8)), at);
    case 'u16': case 'i16': return out.writeUInt16LE(Number(int(16)), at);
    case 'u32': case 'i32': return out.writeUInt32LE(Number(int(32)), at);
    case 'u64': case 'i64': return out.writeBigUInt64LE(int(64), at);
    case 'f32': return out.writeFloatLE(Number(value), at);
    case 'f64': return out.writeDoubleLE(Number(value), at);
  }
}

export function encodeGgufDoc(doc: GgufDoc): Buffer {
  return encodeFields(ggufFields(doc));
}

/** ggml block sizes and bytes per block of the types the seeds use, to find a tensor's bytes. */
const TYPE_LAYOUT: Record<number, { block: number; bytes: number }> = { 0: { block: 1, bytes: 4 }, 1: { block: 1, bytes: 2 }, 30: { block: 1, bytes: 2 }, 8: { block: 32, bytes: 34 }, 2: { block: 32, bytes: 18 } };

export function tensorByteLength(tensor: TensorInfo): number {
  const layout = TYPE_LAYOUT[tensor.type];
  if (!layout) throw new Error(`fuzzer does not know ggml type ${tensor.type}`);
  const elements = tensor.dims.reduce((a, b) => a * Number(b), 1);
  return (elements / layout.block) * layout.bytes;
}

/** Lay the tensors out again in the given order with the given alignment (content unchanged). */
export function relayout(doc: GgufDoc, order: readonly TensorInfo[], alignment: number): GgufDoc | undefined {
  if (!doc.tensors.every((t) => TYPE_LAYOUT[t.type])) return undefined; // an earlier mutation changed a type: not applicable
  const pieces: Buffer[] = [];
  let at = 0;
  const placed = new Map<TensorInfo, bigint>();
  for (const tensor of order) {
    const length = tensorByteLength(tensor);
    const pad = (alignment - (at % alignment)) % alignment;
    pieces.push(Buffer.alloc(pad), doc.data.subarray(Number(tensor.offset), Number(tensor.offset) + length));
    at += pad;
    placed.set(tensor, BigInt(at));
    at += length;
  }
  pieces.push(Buffer.alloc((alignment - (at % alignment)) % alignment));
  const tensors = doc.tensors.map((t) => ({ ...t, offset: placed.get(t)! }));
  const kvs = doc.kvs.filter((kv) => kv.key !== 'general.alignment');
  if (alignment !== 32) kvs.push({ key: 'general.alignment', type: T.u32, value: alignment });
  return { ...doc, kvs, tensors, alignment, data: Buffer.concat(pieces) };
}

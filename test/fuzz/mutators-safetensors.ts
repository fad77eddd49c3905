/**
 * safetensors mutators: header length, dtype strings, shapes, data_offsets (overlaps, gaps, reversed), entry
 * types, names that are Object.prototype members, duplicate keys, __metadata__, NaN/Inf weights, damaged
 * header text, deep nesting, and content-preserving edits (reordered keys, padding, relaid-out data).
 */
import { mutator, type Mutator } from './mutator.js';
import { EDGE_INTEGERS, EDGE_JSON, Entries, nested, Raw, type JsonLike, type Random } from './random.js';
import { encodeSafetensorsDoc, parseSafetensorsDoc, recordEntries, relayoutSafetensors, tensorNames, tensorRecord, type SafetensorsDoc } from './safetensors-doc.js';

function parse(bytes: Buffer): SafetensorsDoc | undefined {
  try {
    return parseSafetensorsDoc(bytes);
  } catch {
    return undefined;
  }
}

function docMutator(name: string, oracle: Mutator['oracle'], edit: (doc: SafetensorsDoc, random: Random) => SafetensorsDoc | undefined): Mutator {
  return mutator('safetensors', name, oracle, (bytes, random) => {
    const doc = parse(bytes);
    if (!doc || tensorNames(doc).length === 0) return undefined;
    const edited = edit(doc, random);
    return edited && encodeSafetensorsDoc(edited);
  });
}

/** Replace one tensor's record field through `edit` (which gets the record as a plain object). */
function editTensor(doc: SafetensorsDoc, random: Random, edit: (record: Record<string, JsonLike>, name: string) => JsonLike): SafetensorsDoc {
  const name = random.pick(tensorNames(doc));
  const entries = doc.entries.map(([n, value]): [string, JsonLike] => (n === name ? [n, edit({ ...(tensorRecord(value) as unknown as Record<string, JsonLike>) }, n)] : [n, value]));
  return { ...doc, entries };
}

const DTYPES: readonly JsonLike[] = ['F32', 'F16', 'BF16', 'F64', 'I8', 'U8', 'I16', 'I32', 'I64', 'BOOL', 'F8_E4M3', 'F8_E5M2', 'bf16', 'float32', '', ' BF16', '__proto__', 'constructor', 'toString', 'hasOwnProperty', null, 5, ['BF16'], {}];
const NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '', ' ', '\u0000', '__metadata__', 'model.embed_tokens.weight', 'x'.repeat(10000)];

function numberEdge(original: number, random: Random): JsonLike {
  if (random.chance(0.5)) return random.pick(EDGE_JSON);
  return random.pick([original + 1, original - 1, original * 2, -original, original + 0.5, Number(random.pick(EDGE_INTEGERS))]);
}

function editNumberList(list: number[], random: Random): JsonLike {
  const out: JsonLike[] = [...list];
  switch (random.int(5)) {
    case 0: return random.pick(EDGE_JSON);
    case 1: out.push(random.pick([1, 0, 2])); return out;
    case 2: out.pop(); return out;
    case 3: return [...out].reverse();
    default: {
      const at = random.int(Math.max(1, out.length));
      out[at] = numberEdge(list[at] ?? 0, random);
      return out;
    }
  }
}

function nanBytes(dtype: string, random: Random): Buffer {
  const which = random.pick(['nan', 'inf', '-inf'] as const);
  if (dtype === 'F32') return Buffer.from(new Uint8Array(new Float32Array([which === 'nan' ? NaN : which === 'inf' ? Infinity : -Infinity]).buffer));
  const out = Buffer.alloc(2);
  const bf16 = { nan: 0x7fc0, inf: 0x7f80, '-inf': 0xff80 }[which];
  const f16 = { nan: 0x7e00, inf: 0x7c00, '-inf': 0xfc00 }[which];
  out.writeUInt16LE(dtype === 'BF16' ? bf16 : f16);
  return out;
}

/** Damage the header text (keeping the length field honest so the JSON parser sees the damage). */
function damageHeader(doc: SafetensorsDoc, random: Random): Buffer {
  const bytes = encodeSafetensorsDoc(doc);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = Buffer.from(bytes.subarray(8, 8 + length));
  const at = random.int(header.length);
  let damaged: Buffer;
  switch (random.int(6)) {
    case 0: damaged = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), header]); break; // BOM
    case 1: damaged = Buffer.concat([header.subarray(0, at), header.subarray(at + 1)]); break;
    case 2: damaged = Buffer.concat([header.subarray(0, at), Buffer.from([random.pick([0x00, 0xff, 0xc3, 0x22, 0x5c, 0x2c])]), header.subarray(at)]); break;
    case 3: damaged = Buffer.concat([header.subarray(0, header.length - 1), Buffer.from(',}')]); break;
    case 4: damaged = Buffer.concat([header, Buffer.from(random.pick(['x', '\u0000', '{}', ' \n\t']))]); break;
    default: damaged = Buffer.from(header.toString('utf8').replace(/"dtype"/, random.pick(["'dtype'", 'dtype', '"dtype" ', '"dt\\u0079pe"'])));
  }
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(damaged.length));
  return Buffer.concat([out, damaged, doc.data]);
}

export const safetensorsMutators: readonly Mutator[] = [
  docMutator('reorder_keys', 'identical', (doc, r) => ({ ...doc, entries: r.shuffle(doc.entries) })),
  docMutator('header_padding', 'identical', (doc, r) => ({ ...doc, headerPadding: r.range(1, 64) })),
  docMutator('metadata', 'identical', (doc, r) => ({ ...doc, entries: [['__metadata__', new Entries([['format', 'pt'], ['fuzz', 'x'.repeat(r.int(100))]])], ...doc.entries.filter(([n]) => n !== '__metadata__')] })),
  docMutator('relayout', 'identical', (doc, r) => relayoutSafetensors(doc, r.shuffle(tensorNames(doc)))),
  docMutator('gap', 'error', (doc, r) => relayoutSafetensors(doc, tensorNames(doc), r.pick([1, 2, 8, 64]))),
  docMutator('append', 'error', (doc, r) => ({ ...doc, data: Buffer.concat([doc.data, r.bytes(r.range(1, 64))]) })),
  docMutator('duplicate_same', 'error', (doc, r) => {
    const entry = r.pick(doc.entries);
    const entries = [...doc.entries];
    entries.splice(r.int(entries.length + 1), 0, entry);
    return { ...doc, entries };
  }),
  docMutator('duplicate_other', 'error', (doc, r) => {
    const names = tensorNames(doc);
    const source = r.pick(names);
    const value = doc.entries.find(([n]) => n === source)![1];
    return { ...doc, entries: [...doc.entries, [r.pick(names), value]] };
  }),
  docMutator('header_length', 'error', (doc, r) => {
    const length = BigInt(encodeSafetensorsDoc(doc).readBigUInt64LE(0));
    return { ...doc, headerLength: r.chance(0.6) ? length + BigInt(r.pick([-8, -2, -1, 1, 2, 8])) : r.pick([0n, 1n, 2n, 7n, ...EDGE_INTEGERS.slice(-10)]) };
  }),
  docMutator('dtype', 'finite-or-error', (doc, r) => editTensor(doc, r, (record) => recordEntries({ ...record, dtype: r.pick(DTYPES) }))),
  docMutator('shape', 'finite-or-error', (doc, r) => editTensor(doc, r, (record) => recordEntries({ ...record, shape: editNumberList(record.shape as number[], r) }))),
  docMutator('data_offsets', 'finite-or-error', (doc, r) => {
    const otherName = r.pick(tensorNames(doc));
    const other = tensorRecord(doc.entries.find(([n]) => n === otherName)![1])!.data_offsets;
    return editTensor(doc, r, (record) => {
      const [begin, end] = record.data_offsets as [number, number];
      const offsets = r.pick<JsonLike>([
        editNumberList([begin, end], r), [end, begin], [other[0], other[0] + end - begin], [begin + 1, end + 1], [begin - 1, end - 1], [begin, end, end],
        [begin, end + 2], [begin + 2, end], [0, end - begin], [begin, new Raw(`${end}.0`)], [String(begin), end], [begin + 2 ** 53, end + 2 ** 53],
      ]);
      return recordEntries({ ...record, data_offsets: offsets });
    });
  }),
  docMutator('entry_type', 'finite-or-error', (doc, r) => editTensor(doc, r, () => r.pick<JsonLike>([null, [], 5, 'BF16', {}, true, new Entries([['dtype', 'BF16']])]))),
  docMutator('entry_extra_field', 'identical-or-error', (doc, r) => editTensor(doc, r, (record) => recordEntries({ ...record, [r.pick(['offsets', '__proto__', 'constructor', 'x'])]: r.pick(EDGE_JSON.slice(0, 20)) }))),
  docMutator('rename', 'finite-or-error', (doc, r) => {
    const name = r.pick(tensorNames(doc));
    const to = r.pick([...NAMES, r.pick(tensorNames(doc))]);
    return { ...doc, entries: doc.entries.map(([n, v]): [string, JsonLike] => [n === name ? to : n, v]) };
  }),
  docMutator('drop', 'finite-or-error', (doc, r) => {
    const name = r.pick(tensorNames(doc));
    return { ...doc, entries: doc.entries.filter(([n]) => n !== name) };
  }),
  docMutator('metadata_bad', 'finite-or-error', (doc, r) => ({
    ...doc,
    entries: [['__metadata__', r.pick<JsonLike>([5, null, [], 'pt', new Entries([['format', 5]]), new Entries([['a', new Entries([])]]), nested(r.pick([10, 5000, 20000]), 1, true)])], ...doc.entries],
  })),
  docMutator('nan_weights', 'finite-or-error', (doc, r) => {
    const name = r.pick(tensorNames(doc));
    const record = tensorRecord(doc.entries.find(([n]) => n === name)![1])!;
    const [begin, end] = record.data_offsets;
    const pattern = nanBytes(record.dtype, r);
    const data = Buffer.from(doc.data);
    for (let i = 0, n = r.range(1, 4); i < n && end > begin; i++) pattern.copy(data, begin + r.int((end - begin) / pattern.length) * pattern.length);
    return { ...doc, data };
  }),
  docMutator('deep_nesting', 'finite-or-error', (doc, r) => {
    const depth = r.pick([100, 5000, 20000]);
    if (r.chance(0.5)) return editTensor(doc, r, (record) => recordEntries({ ...record, shape: nested(depth) }));
    return { ...doc, entries: [...doc.entries, ['fuzz', nested(depth, 1, r.chance(0.5))]] };
  }),
  docMutator('many_entries', 'finite-or-error', (doc, r) => {
    const extra: [string, JsonLike][] = Array.from({ length: r.pick([100, 20000]) }, (_, i) => [`extra.${i}`, new Entries([['dtype', 'BF16'], ['shape', [0]], ['data_offsets', [0, 0]]])]);
    return { ...doc, entries: [...doc.entries, ...extra] };
  }),
  mutator('safetensors', 'header_syntax', 'finite-or-error', (bytes, r) => {
    const doc = parse(bytes);
    return doc && damageHeader(doc, r);
  }),
  mutator('safetensors', 'truncate', 'error', (bytes, r) => bytes.subarray(0, r.chance(0.3) ? r.int(16) : r.int(bytes.length))),
];

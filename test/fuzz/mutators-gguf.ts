/**
 * GGUF mutators: one field of the header set to an edge value (counts, lengths, types, dims, offsets), and
 * document edits (reordered or duplicated metadata, relaid-out data, other alignments, nested arrays, NaN
 * weights, odd tokenizer metadata, truncation). Each says by its oracle whether it changes content.
 */
import { encodeFields, encodeGgufDoc, ggufFields, parseGgufDoc, relayout, T, tensorByteLength, type Field, type GgufDoc, type Kv, type Value } from './gguf-doc.js';
import { mutator, type Mutator } from './mutator.js';
import { EDGE_INTEGERS, type Random } from './random.js';

function parse(bytes: Buffer): GgufDoc | undefined {
  try {
    return parseGgufDoc(bytes);
  } catch {
    return undefined; // an earlier mutation broke the structure: this one does not apply
  }
}

/** Edit the document; undefined from `edit` means not applicable. */
function docMutator(name: string, oracle: Mutator['oracle'], edit: (doc: GgufDoc, random: Random) => GgufDoc | undefined): Mutator {
  return mutator('gguf', name, oracle, (bytes, random) => {
    const doc = parse(bytes);
    const edited = doc && edit(doc, random);
    return edited && encodeGgufDoc(edited);
  });
}

/** Near the original value, or at the edges of the field's width. */
function edgeValue(original: bigint, random: Random): bigint {
  switch (random.int(4)) {
    case 0: return original + BigInt(random.pick([-1, 1]));
    case 1: return original * 2n + BigInt(random.int(2));
    default: return random.pick(EDGE_INTEGERS);
  }
}

/** Set one field whose role matches to a new value. */
function fieldMutator(name: string, role: RegExp, value: (original: bigint, random: Random, field: Field) => bigint): Mutator {
  return mutator('gguf', name, 'finite-or-error', (bytes, random) => {
    const doc = parse(bytes);
    if (!doc) return undefined;
    const fields = ggufFields(doc);
    const candidates = fields.filter((f) => role.test(f.role) && f.kind !== 'raw');
    if (candidates.length === 0) return undefined;
    const field = random.pick(candidates);
    const original = BigInt(Math.trunc(Number(field.value)));
    field.value = value(typeof field.value === 'bigint' ? field.value : original, random, field);
    return encodeFields(fields);
  });
}

const fieldMutators: Mutator[] = [
  fieldMutator('magic', /^magic$/, (_, r) => r.pick([0n, 0x47475546n, 0x46554746n, BigInt(r.int(2 ** 32))])),
  fieldMutator('version', /^version$/, (_, r) => r.pick([0n, 1n, 2n, 4n, 2n ** 31n, 2n ** 32n - 1n])),
  fieldMutator('tensor_count', /^tensor_count$/, edgeValue),
  fieldMutator('kv_count', /^kv_count$/, edgeValue),
  fieldMutator('key_length', /^kv\.key\.length$/, edgeValue),
  fieldMutator('string_length', /(string|tensor\.name)\.length$/, edgeValue),
  fieldMutator('value_type', /^kv\.type$/, (_, r) => BigInt(r.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 255, 2 ** 31, 2 ** 32 - 1]))),
  fieldMutator('array_element_type', /element_type$/, (_, r) => BigInt(r.pick([0, 1, 4, 6, 7, 8, 9, 10, 12, 13, 2 ** 32 - 1]))),
  fieldMutator('array_length', /array_length$/, edgeValue),
  fieldMutator('n_dims', /^tensor\.n_dims$/, (o, r) => r.pick([0n, 1n, 2n, 3n, 4n, 5n, 8n, 64n, 2n ** 31n, 2n ** 32n - 1n, o + 1n])),
  fieldMutator('dim', /^tensor\.dim$/, edgeValue),
  fieldMutator('tensor_type', /^tensor\.type$/, (_, r) => BigInt(r.pick([0, 1, 2, 3, 6, 8, 10, 12, 13, 14, 15, 16, 24, 28, 29, 30, 31, 39, 40, 255, 2 ** 31]))),
  fieldMutator('tensor_offset', /^tensor\.offset$/, (o, r) => (r.chance(0.5) ? o + BigInt(r.pick([-32, -1, 1, 8, 16, 32, 64])) : edgeValue(o, r))),
  fieldMutator('scalar_value', /^kv\.value\.scalar$/, edgeValue),
];

/** Replace the value of one key (keeps its position); adds it at the end when absent. */
function setKv(doc: GgufDoc, kv: Kv): GgufDoc {
  const at = doc.kvs.findIndex((k) => k.key === kv.key);
  const kvs = [...doc.kvs];
  if (at >= 0) kvs[at] = kv;
  else kvs.push(kv);
  return { ...doc, kvs };
}

const MODEL_KEYS = /^olmoe\./;

function randomValue(random: Random, depth = 0): { type: number; value: Value } {
  const type = random.pick([T.u8, T.i8, T.u16, T.i16, T.u32, T.i32, T.f32, T.bool, T.string, T.u64, T.i64, T.f64, ...(depth < 3 ? [T.array] : [])]);
  switch (type) {
    case T.f32: case T.f64: return { type, value: random.pick([0, -1, 1.5, NaN, Infinity, -Infinity, 3.4e38]) };
    case T.bool: return { type, value: random.chance(0.5) };
    case T.string: return { type, value: random.pick(['', 'olmoe', '__proto__', 'constructor', '\u0000', 'é'.repeat(random.int(300))]) };
    case T.u64: case T.i64: return { type, value: random.pick(EDGE_INTEGERS) };
    case T.array: {
      const element = randomValue(random, depth + 1);
      return { type, value: { elementType: element.type, items: Array.from({ length: random.int(5) }, () => element.value) } };
    }
    default: return { type, value: random.int(128) };
  }
}

/** An array of arrays `depth` levels deep (GGUF allows arrays of arrays), as encoded bytes. */
function nestedArray(depth: number): Value {
  const level = Buffer.alloc(12);
  level.writeUInt32LE(T.array, 0);
  level.writeBigUInt64LE(1n, 4);
  const innermost = Buffer.from([T.u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
  return { raw: Buffer.concat([...Array.from({ length: depth - 1 }, () => level), innermost]) };
}

const ALIGNMENTS: readonly { type: number; value: Value }[] = [
  { type: T.u32, value: 0 }, { type: T.u32, value: 1 }, { type: T.u32, value: 3 }, { type: T.u32, value: 12 }, { type: T.u32, value: 24 }, { type: T.u32, value: 48 },
  { type: T.u32, value: 2 ** 31 }, { type: T.u32, value: 2 ** 32 - 1 }, { type: T.u64, value: 2n ** 63n }, { type: T.i32, value: -32 }, { type: T.f32, value: 32 },
  { type: T.f32, value: NaN }, { type: T.string, value: '32' }, { type: T.bool, value: true }, { type: T.u64, value: 64n },
];

function nanPattern(type: number, random: Random): Buffer {
  const bits = random.pick(['nan', 'inf', '-inf'] as const);
  if (type === 0) return Buffer.from(new Uint8Array(new Float32Array([bits === 'nan' ? NaN : bits === 'inf' ? Infinity : -Infinity]).buffer));
  const half = bits === 'nan' ? 0x7e00 : bits === 'inf' ? 0x7c00 : 0xfc00; // f16; also a q8_0 block scale
  const out = Buffer.alloc(2);
  out.writeUInt16LE(type === 30 ? (bits === 'nan' ? 0x7fc0 : bits === 'inf' ? 0x7f80 : 0xff80) : half);
  return out;
}

const TOKEN_NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '', ' ', '\u0000', 'Ġ', '<|endoftext|>', 'x'.repeat(5000)];

function stringArray(doc: GgufDoc, key: string): string[] | undefined {
  const value = doc.kvs.find((k) => k.key === key)?.value;
  return value && typeof value === 'object' && 'items' in value ? (value.items as string[]) : undefined;
}

function withStrings(doc: GgufDoc, key: string, items: Value[], elementType: number = T.string): GgufDoc {
  return setKv(doc, { key, type: T.array, value: { elementType, items } });
}

const CHAT_TEMPLATES = [
  '{{', '{% for %}', '{{ messages[0].content.upper() }}', '{{ raise_exception("refused") }}', '{{ 1 / 0 }}', '{{ messages[99].content }}',
  '{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}', '{% for i in range(100000000) %}x{% endfor %}', '{{ "x" * 100000000 }}', '{{ bos_token + eos_token }}',
];

const docMutators: Mutator[] = [
  docMutator('reorder_kv', 'identical', (doc, r) => ({ ...doc, kvs: r.shuffle(doc.kvs) })),
  // llama.cpp requires the data in header order, each tensor padded to the alignment (gguf.cpp: "tensor has
  // offset …, expected …"): reordering the infos moves the data with them, and another order is allowed to fail.
  docMutator('reorder_tensor_infos', 'identical', (doc, r) => {
    const order = r.shuffle(doc.tensors);
    const laid = relayout(doc, order, doc.alignment); // its tensors are still in the old header order
    return laid && { ...laid, tensors: order.map((t) => laid.tensors[doc.tensors.indexOf(t)]!) };
  }),
  docMutator('relayout', 'identical', (doc, r) => relayout(doc, doc.tensors, r.pick([8, 16, 32, 64, 256, 4096]))),
  docMutator('data_order', 'identical-or-error', (doc, r) => relayout(doc, r.shuffle(doc.tensors), r.pick([32, 64]))),
  docMutator('unknown_kv', 'identical', (doc, r) => {
    const kvs = [...doc.kvs];
    const taken = new Set(kvs.map((kv) => kv.key)); // a second unknown_kv must not repeat a key: that is duplicate_kv
    for (let i = 0, n = r.range(1, 3); i < n; i++) {
      let key = `fuzz.key${i}`;
      while (taken.has(key)) key += '_';
      taken.add(key);
      kvs.splice(r.int(kvs.length + 1), 0, { key, ...randomValue(r) });
    }
    return { ...doc, kvs };
  }),
  docMutator('nested_array', 'identical-or-error', (doc, r) => setKv(doc, { key: 'fuzz.nested', type: T.array, value: nestedArray(r.pick([2, 3, 16, 1000, 5000, 20000])) })),
  docMutator('alignment_value', 'finite-or-error', (doc, r) => setKv(doc, { key: 'general.alignment', ...r.pick(ALIGNMENTS) })),
  docMutator('duplicate_kv', 'error', (doc, r) => {
    const kvs = [...doc.kvs];
    kvs.splice(r.int(kvs.length + 1), 0, r.pick(doc.kvs));
    return { ...doc, kvs };
  }),
  docMutator('conflicting_kv', 'error', (doc, r) => {
    const model = doc.kvs.filter((k) => MODEL_KEYS.test(k.key));
    const kv = r.pick(model);
    return { ...doc, kvs: [...doc.kvs, { key: kv.key, type: T.u32, value: r.pick([0, 1, 3, 64, 2 ** 31]) }] };
  }),
  docMutator('drop_kv', 'finite-or-error', (doc, r) => {
    const kvs = [...doc.kvs];
    kvs.splice(r.int(kvs.length), 1);
    return { ...doc, kvs };
  }),
  docMutator('retype_kv', 'finite-or-error', (doc, r) => {
    const kv = r.pick(doc.kvs.filter((k) => MODEL_KEYS.test(k.key) || k.key.startsWith('tokenizer.ggml.') && k.type !== T.array));
    const value = Number(typeof kv.value === 'object' ? 0 : kv.value);
    const n = Number.isFinite(value) ? value : 0;
    const retyped = r.pick<{ type: number; value: Value }>([
      { type: T.u64, value: BigInt(Math.trunc(n)) }, { type: T.i32, value: -Math.trunc(n) }, { type: T.f32, value: n + 0.5 }, { type: T.f64, value: NaN },
      { type: T.string, value: String(n) }, { type: T.bool, value: true }, { type: T.array, value: { elementType: T.u32, items: [Math.trunc(n)] } }, { type: T.i64, value: -1n },
    ]);
    return setKv(doc, { key: kv.key, ...retyped });
  }),
  docMutator('model_value', 'finite-or-error', (doc, r) => {
    const kv = r.pick(doc.kvs.filter((k) => MODEL_KEYS.test(k.key)));
    if (kv.type === T.f32) return setKv(doc, { ...kv, value: r.pick([0, -1, NaN, Infinity, 1e-45, 3.4e38]) });
    return setKv(doc, { ...kv, type: T.u32, value: Number(r.pick([0n, 1n, 2n, 3n, 7n, 64n, 1000n, 2n ** 20n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n])) });
  }),
  docMutator('duplicate_tensor', 'error', (doc, r) => {
    const tensors = [...doc.tensors];
    tensors.splice(r.int(tensors.length + 1), 0, { ...r.pick(doc.tensors) });
    return { ...doc, tensors };
  }),
  docMutator('drop_tensor', 'finite-or-error', (doc, r) => {
    const tensors = [...doc.tensors];
    tensors.splice(r.int(tensors.length), 1);
    return { ...doc, tensors };
  }),
  docMutator('rename_tensor', 'finite-or-error', (doc, r) => {
    if (doc.tensors.length === 0) return undefined;
    const tensors = [...doc.tensors];
    const at = r.int(tensors.length);
    const other = r.pick(doc.tensors).name;
    tensors[at] = { ...tensors[at]!, name: r.pick([...TOKEN_NAMES, other, 'blk.99.attn_q.weight', 'blk.-1.ffn_up_exps.weight', 'output.weight', 'blk.0.ffn_up_exps.weight.x']) };
    return { ...doc, tensors };
  }),
  docMutator('tensor_shape', 'finite-or-error', (doc, r) => {
    const tensors = [...doc.tensors];
    const at = r.int(tensors.length);
    const dims = [...tensors[at]!.dims];
    const edit = r.int(4);
    if (edit === 0 && dims.length > 1) dims.reverse();
    else if (edit === 1 && dims.length < 4) dims.push(1n);
    else if (edit === 2 && dims.length > 1 && dims[dims.length - 1] === 1n) dims.pop();
    else dims[r.int(dims.length)] = r.pick([0n, 1n, 2n ** 31n, 2n ** 40n]);
    tensors[at] = { ...tensors[at]!, dims };
    return { ...doc, tensors };
  }),
  docMutator('overlap', 'error', (doc, r) => {
    const tensors = [...doc.tensors];
    const at = r.int(tensors.length);
    const others = doc.tensors.filter((t) => t.offset !== tensors[at]!.offset);
    if (others.length === 0) return undefined;
    tensors[at] = { ...tensors[at]!, offset: r.pick(others).offset };
    return { ...doc, tensors };
  }),
  docMutator('nan_weights', 'finite-or-error', (doc, r) => {
    const tensor = r.pick(doc.tensors.filter((t) => [0, 1, 8, 30].includes(t.type)));
    const data = Buffer.from(doc.data);
    const length = tensorByteLength(tensor);
    const pattern = nanPattern(tensor.type, r);
    const stride = tensor.type === 8 ? 34 : pattern.length; // q8_0: overwrite a block's f16 scale
    for (let i = 0, n = r.range(1, 4); i < n; i++) pattern.copy(data, Number(tensor.offset) + r.int(length / stride) * stride);
    return { ...doc, data };
  }),
  docMutator('tokens', 'identical-or-error', (doc, r) => {
    const tokens = stringArray(doc, 'tokenizer.ggml.tokens');
    if (!tokens) return undefined;
    const items = [...tokens];
    for (let i = 0, n = r.range(1, 4); i < n; i++) {
      const edit = r.int(3);
      if (edit === 0) items[r.int(items.length)] = r.pick(TOKEN_NAMES);
      else if (edit === 1) items[r.int(items.length)] = r.pick(items); // duplicate token
      else items.push(r.pick(TOKEN_NAMES));
    }
    if (r.chance(0.1)) items.length = r.int(items.length);
    return withStrings(doc, 'tokenizer.ggml.tokens', items);
  }),
  docMutator('token_types', 'identical-or-error', (doc, r) => {
    const types = stringArray(doc, 'tokenizer.ggml.token_type') as unknown as number[] | undefined;
    if (!types) return undefined;
    if (r.chance(0.1)) return withStrings(doc, 'tokenizer.ggml.token_type', types.map(String)); // strings where ids belong
    if (r.chance(0.2)) return withStrings(doc, 'tokenizer.ggml.token_type', r.pick([[], types.slice(0, 10), [...types, 1, 1]]), T.i32);
    const items = [...types];
    for (let i = 0, n = r.range(1, 10); i < n; i++) items[r.int(items.length)] = r.pick([-1, 0, 2, 3, 4, 5, 6, 7, 2 ** 31 - 1, -(2 ** 31)]);
    return withStrings(doc, 'tokenizer.ggml.token_type', items, T.i32);
  }),
  docMutator('merges', 'identical-or-error', (doc, r) => {
    const merges = stringArray(doc, 'tokenizer.ggml.merges') ?? [];
    const items: string[] = [...merges];
    for (let i = 0, n = r.range(1, 4); i < n; i++) {
      const odd = r.pick(['a', 'a b c', '', ' ', 'Ġ Ġ', '__proto__ constructor', 'zz yy', 'toString valueOf', merges[0] ?? 'a b']);
      if (items.length && r.chance(0.5)) items[r.int(items.length)] = odd;
      else items.push(odd);
    }
    return withStrings(doc, 'tokenizer.ggml.merges', items);
  }),
  docMutator('special_ids', 'identical-or-error', (doc, r) => {
    const key = r.pick(['tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.padding_token_id', 'tokenizer.ggml.unknown_token_id']);
    return setKv(doc, { key, ...r.pick<{ type: number; value: Value }>([
      { type: T.u32, value: 600 }, { type: T.u32, value: 2 ** 32 - 1 }, { type: T.i32, value: -1 }, { type: T.u64, value: 2n ** 63n }, { type: T.string, value: '0' }, { type: T.f32, value: 0.5 },
    ]) });
  }),
  docMutator('tokenizer_model', 'identical-or-error', (doc, r) =>
    setKv(doc, { key: r.pick(['tokenizer.ggml.model', 'tokenizer.ggml.pre']), type: T.string, value: r.pick(['llama', 'bert', '', 'olmo', 'gpt2', '__proto__']) })),
  docMutator('chat_template', 'identical-or-error', (doc, r) => setKv(doc, { key: 'tokenizer.chat_template', type: T.string, value: r.pick(CHAT_TEMPLATES) })),
];

const byteMutators: Mutator[] = [
  mutator('gguf', 'invalid_utf8', 'finite-or-error', (bytes, r) => {
    // A key or tensor name whose bytes are not UTF-8.
    const doc = parse(bytes);
    if (!doc) return undefined;
    const fields = ggufFields(doc);
    const field = r.pick(fields.filter((f) => f.role === 'kv.key.bytes' || f.role === 'tensor.name.bytes'));
    const name = Buffer.from(field.value as Buffer);
    name[r.int(name.length)] = r.pick([0xff, 0xc0, 0x80, 0x00]);
    field.value = name;
    return encodeFields(fields);
  }),
  mutator('gguf', 'truncate', 'finite-or-error', (bytes, r) => {
    const doc = parse(bytes);
    const boundaries: number[] = [];
    let end = 0;
    for (const f of doc ? ggufFields(doc) : []) boundaries.push((end += f.kind === 'raw' ? (f.value as Buffer).length : sizeOfKind(f)));
    const at = boundaries.length > 1 && r.chance(0.5) ? r.pick(boundaries.slice(0, -1)) - r.int(2) : r.int(bytes.length);
    return bytes.subarray(0, Math.max(0, at));
  }),
  mutator('gguf', 'append', 'identical-or-error', (bytes, r) => Buffer.concat([bytes, r.bytes(r.range(1, 100))])),
];

function sizeOfKind(field: Field): number {
  return { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, f64: 8, u64: 8, i64: 8 }[field.kind as 'u8'];
}

export const ggufMutators: readonly Mutator[] = [...fieldMutators, ...docMutators, ...byteMutators];

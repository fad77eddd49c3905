/**
 * Mutators of the HF folder's JSON files: config.json (edge values, 2^31 layers/experts, missing and
 * duplicate keys, nesting, wrong root types, broken syntax), tokenizer.json (vocab and merges oddities,
 * Object.prototype names as tokens, missing fields, other model types), tokenizer_config.json (special
 * tokens, chat templates that recurse or loop) and generation_config.json.
 */
import { mutator, type Mutator, type Target } from './mutator.js';
import { EDGE_JSON, Entries, jsonText, nested, Raw, toEntries, type JsonLike, type Random } from './random.js';

type Edit = (root: Entries, random: Random) => JsonLike | undefined;

function jsonMutator(target: Target, name: string, oracle: Mutator['oracle'], edit: Edit): Mutator {
  return mutator(target, name, oracle, (bytes, random) => {
    let root: JsonLike;
    try {
      root = toEntries(JSON.parse(bytes.toString('utf8')));
    } catch {
      return undefined;
    }
    if (!(root instanceof Entries)) return undefined;
    const edited = edit(root, random);
    return edited === undefined ? undefined : Buffer.from(jsonText(edited), 'utf8');
  });
}

function get(root: Entries, key: string): JsonLike | undefined {
  return root.entries.find(([k]) => k === key)?.[1];
}

function set(root: Entries, key: string, value: JsonLike): Entries {
  const at = root.entries.findIndex(([k]) => k === key);
  const entries = [...root.entries];
  if (at >= 0) entries[at] = [key, value];
  else entries.push([key, value]);
  return new Entries(entries);
}

function drop(root: Entries, key: string): Entries {
  return new Entries(root.entries.filter(([k]) => k !== key));
}

/** Tokenizer and generation settings cannot change logits; config.json and the index can. */
const contentOracle = (target: Target): Mutator['oracle'] => (target === 'config' || target === 'index' ? 'finite-or-error' : 'identical-or-error');

/** Damage JSON text: BOM, a cut, a stray byte, a trailing comma, a comment, a NaN literal. */
function damageText(target: Target): Mutator {
  return mutator(target, 'syntax', contentOracle(target), (bytes, r) => {
    const text = bytes.toString('utf8');
    const at = r.int(text.length);
    switch (r.int(7)) {
      case 0: return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]);
      case 1: return bytes.subarray(0, r.int(bytes.length));
      case 2: return Buffer.concat([bytes.subarray(0, at), Buffer.from([r.pick([0x00, 0xff, 0x22, 0x7b, 0x5d])]), bytes.subarray(at)]);
      case 3: return Buffer.from(text.replace(/}\s*$/, ',}'));
      case 4: return Buffer.from(`// comment\n${text}`);
      case 5: return Buffer.from(text.replace(/: *[0-9.e-]+/, ': NaN'));
      default: return Buffer.from(`${text}${r.pick(['x', '{}', '\u0000', ' '])}`);
    }
  });
}

function rootType(target: Target): Mutator {
  return mutator(target, 'root_type', contentOracle(target), (_, r) =>
    Buffer.from(r.pick(['[]', '1', '"config"', 'null', 'true', '', ' ', '[{}]', '{"__proto__": {"model_type": "olmoe"}}'])),
  );
}

// ---- config.json ----

const CONFIG_KEYS = [
  'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'num_experts', 'num_experts_per_tok',
  'shared_expert_intermediate_size', 'norm_topk_prob', 'rms_norm_eps', 'rope_theta', 'rope_scaling', 'rope_parameters', 'max_position_embeddings', 'tie_word_embeddings',
  'clip_qkv', 'eos_token_id', 'bos_token_id', 'pad_token_id', 'model_type', 'head_dim', 'hidden_act', 'attention_bias', 'torch_dtype',
];
const SIZE_KEYS = ['num_hidden_layers', 'num_experts', 'num_experts_per_tok', 'vocab_size', 'hidden_size', 'intermediate_size', 'num_attention_heads', 'num_key_value_heads', 'shared_expert_intermediate_size', 'max_position_embeddings'];
const INFORMATIONAL: [string, JsonLike[]][] = [
  ['transformers_version', ['4.99.0', '', 'x'.repeat(1000)]], ['initializer_range', [0.02, 1e308]], ['architectures', [['OlmoeForCausalLM', 'Other'], []]],
  ['use_cache', [false]], ['router_aux_loss_coef', [0, 1e9]], ['output_router_logits', [true]], ['attention_dropout', [0.5]], ['_name_or_path', ['fuzz']],
];

const configMutators: Mutator[] = [
  jsonMutator('config', 'reorder', 'identical', (root, r) => new Entries(r.shuffle(root.entries))),
  jsonMutator('config', 'unknown_key', 'identical', (root, r) => set(root, r.pick(['fuzz_key', 'num_layers', 'n_experts', 'vocab']), r.pick(EDGE_JSON))),
  jsonMutator('config', 'informational', 'identical', (root, r) => {
    const [key, values] = r.pick(INFORMATIONAL);
    return set(root, key, r.pick(values));
  }),
  jsonMutator('config', 'proto_key', 'identical-or-error', (root, r) =>
    new Entries([...root.entries, [r.pick(['__proto__', 'constructor', 'toString']), r.pick<JsonLike>([new Entries([['hidden_size', 64], ['num_hidden_layers', 9]]), 5, null, 'x'])]])),
  jsonMutator('config', 'value', 'finite-or-error', (root, r) => set(root, r.pick(CONFIG_KEYS), r.pick(EDGE_JSON))),
  jsonMutator('config', 'huge_size', 'finite-or-error', (root, r) => set(root, r.pick(SIZE_KEYS), r.pick([2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 40, 2 ** 53 - 1, 1e6, 65536]))),
  jsonMutator('config', 'drop_key', 'finite-or-error', (root, r) => drop(root, r.pick(CONFIG_KEYS))),
  jsonMutator('config', 'duplicate_same', 'identical-or-error', (root, r) => new Entries([...root.entries, r.pick(root.entries)])),
  jsonMutator('config', 'duplicate_other', 'finite-or-error', (root, r) => new Entries([...root.entries, [r.pick(CONFIG_KEYS), r.pick(EDGE_JSON)]])),
  jsonMutator('config', 'deep_nesting', 'finite-or-error', (root, r) => set(root, r.pick(CONFIG_KEYS), nested(r.pick([100, 5000, 20000]), 1, r.chance(0.5)))),
  jsonMutator('config', 'rope_parameters', 'finite-or-error', (root, r) =>
    set(drop(root, 'rope_theta'), 'rope_parameters', r.pick<JsonLike>([r.pick(EDGE_JSON), new Entries([['rope_theta', r.pick(EDGE_JSON)]]), new Entries([['rope_type', r.pick(EDGE_JSON)], ['rope_theta', 10000]])]))),
  jsonMutator('config', 'huge_string', 'finite-or-error', (root, r) => set(root, r.pick(['model_type', 'hidden_act', 'rope_scaling', 'head_dim']), 'x'.repeat(r.pick([1000, 1_000_000])))),
  damageText('config'),
  rootType('config'),
];

// ---- tokenizer.json ----

const JS_NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'isPrototypeOf', 'length'];

function model(root: Entries): Entries | undefined {
  const value = get(root, 'model');
  return value instanceof Entries ? value : undefined;
}

function editModel(root: Entries, edit: (model: Entries) => Entries | undefined): Entries | undefined {
  const m = model(root);
  const edited = m && edit(m);
  return edited && set(root, 'model', edited);
}

function editVocab(root: Entries, edit: (vocab: [string, JsonLike][]) => [string, JsonLike][]): Entries | undefined {
  return editModel(root, (m) => {
    const vocab = get(m, 'vocab');
    return vocab instanceof Entries ? set(m, 'vocab', new Entries(edit([...vocab.entries]))) : undefined;
  });
}

const tokenizerMutators: Mutator[] = [
  jsonMutator('tokenizer', 'reorder', 'identical', (root, r) => {
    const shuffled = new Entries(r.shuffle(root.entries));
    return editVocab(shuffled, (vocab) => r.shuffle(vocab)) ?? shuffled;
  }),
  jsonMutator('tokenizer', 'js_names', 'identical-or-error', (root, r) =>
    editVocab(root, (vocab) => {
      const name = r.pick(JS_NAMES);
      if (r.chance(0.5)) vocab.push([name, r.pick([vocab.length, 5, 600, 70000])]);
      else vocab[r.int(vocab.length)]![0] = name;
      return vocab;
    })),
  jsonMutator('tokenizer', 'duplicate_token', 'identical-or-error', (root, r) => editVocab(root, (vocab) => [...vocab, [r.pick(vocab)[0], r.pick([0, 1, 555, 9999])]])),
  jsonMutator('tokenizer', 'duplicate_id', 'identical-or-error', (root, r) =>
    editVocab(root, (vocab) => {
      vocab[r.int(vocab.length)]![1] = r.pick(vocab)[1];
      return vocab;
    })),
  jsonMutator('tokenizer', 'token_id', 'identical-or-error', (root, r) =>
    editVocab(root, (vocab) => {
      vocab[r.int(vocab.length)]![1] = r.pick([-1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 1e308, new Raw('1e999'), '5', null, [], 100000]);
      return vocab;
    })),
  jsonMutator('tokenizer', 'merges', 'identical-or-error', (root, r) =>
    editModel(root, (m) => {
      const merges = get(m, 'merges');
      if (!Array.isArray(merges) || r.chance(0.15)) return set(m, 'merges', r.pick(EDGE_JSON));
      const edited = [...merges];
      for (let i = 0, n = r.range(1, 3); i < n; i++) {
        const odd = r.pick<JsonLike>(['a', 'a b c', '', ' ', 'zz yy', '__proto__ constructor', 'toString valueOf', ['a', 'b'], ['a'], 5, null, merges[0] ?? 'a b']);
        if (edited.length && r.chance(0.5)) edited[r.int(edited.length)] = odd;
        else edited.push(odd);
      }
      return set(m, 'merges', edited);
    })),
  jsonMutator('tokenizer', 'added_tokens', 'identical-or-error', (root, r) => {
    const added = get(root, 'added_tokens');
    if (!Array.isArray(added) || added.length === 0 || r.chance(0.15)) return set(root, 'added_tokens', r.pick(EDGE_JSON));
    const edited = [...added];
    const at = r.int(edited.length);
    const token = edited[at];
    if (r.chance(0.3)) edited.push(token ?? null); // duplicate
    else if (token instanceof Entries) edited[at] = set(token, r.pick(['id', 'content', 'special', 'normalized', 'lstrip']), r.pick([...EDGE_JSON, ...JS_NAMES]));
    return set(root, 'added_tokens', edited);
  }),
  jsonMutator('tokenizer', 'drop', 'identical-or-error', (root, r) => {
    const path = r.pick(['model', 'added_tokens', 'pre_tokenizer', 'decoder', 'normalizer', 'post_processor', 'model.type', 'model.vocab', 'model.merges', 'model.unk_token']);
    if (!path.startsWith('model.')) return drop(root, path);
    return editModel(root, (m) => drop(m, path.slice('model.'.length)));
  }),
  jsonMutator('tokenizer', 'component_type', 'identical-or-error', (root, r) => {
    const key = r.pick(['model', 'pre_tokenizer', 'decoder', 'normalizer', 'post_processor']);
    const type = r.pick<JsonLike>(['WordPiece', 'Unigram', 'WordLevel', 'Sequence', 'Metaspace', 'NFKC', 'Replace', 'Split', 'TemplateProcessing', '', '__proto__', 5, null]);
    const value = get(root, key);
    return set(root, key, value instanceof Entries ? set(value, 'type', type) : new Entries([['type', type]]));
  }),
  jsonMutator('tokenizer', 'deep_nesting', 'identical-or-error', (root, r) => {
    const value = nested(r.pick([100, 5000, 20000]), 1, r.chance(0.5));
    if (r.chance(0.5)) return set(root, r.pick(['normalizer', 'pre_tokenizer', 'decoder', 'added_tokens', 'fuzz']), value);
    return editModel(root, (m) => set(m, r.pick(['vocab', 'merges', 'unk_token', 'dropout']), value));
  }),
  jsonMutator('tokenizer', 'many_tokens', 'identical-or-error', (root, r) =>
    editVocab(root, (vocab) => [...vocab, ...Array.from({ length: r.pick([1000, 20000]) }, (_, i): [string, JsonLike] => [`fz${i}`, vocab.length + i])])),
  damageText('tokenizer'),
  rootType('tokenizer'),
];

// ---- tokenizer_config.json and generation_config.json ----

const CHAT_TEMPLATES: JsonLike[] = [
  '{{', '{% for %}', '{{ messages[0].content.upper() }}', '{{ raise_exception("refused") }}', '{{ 1 / 0 }}', '{{ messages[99].content }}', '{{ messages.__proto__ }}',
  '{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}', '{% for i in range(100000000) %}x{% endfor %}', '{{ "x" * 100000000 }}', '{% for m in messages %}{{ m }}{% endfor %}',
  [], [{ name: 'default', template: '{{' }], [{ name: 'tool_use' }], 5, null,
];

const tokenizerConfigMutators: Mutator[] = [
  jsonMutator('tokenizer_config', 'special_tokens', 'identical-or-error', (root, r) =>
    set(root, r.pick(['bos_token', 'eos_token', 'pad_token', 'unk_token']), r.pick<JsonLike>([...EDGE_JSON, ...JS_NAMES, new Entries([['content', r.pick(JS_NAMES)]]), '<|nope|>']))),
  jsonMutator('tokenizer_config', 'flags', 'identical-or-error', (root, r) =>
    set(root, r.pick(['add_bos_token', 'add_eos_token', 'clean_up_tokenization_spaces', 'model_max_length']), r.pick(EDGE_JSON))),
  jsonMutator('tokenizer_config', 'chat_template', 'identical-or-error', (root, r) => set(set(root, 'bos_token', '<|endoftext|>'), 'chat_template', r.pick(CHAT_TEMPLATES))),
  damageText('tokenizer_config'),
  rootType('tokenizer_config'),
];

const generationConfigMutators: Mutator[] = [
  jsonMutator('generation_config', 'value', 'identical-or-error', (root, r) =>
    set(root, r.pick(['eos_token_id', 'do_sample', 'temperature', 'top_k', 'top_p', 'min_p', 'repetition_penalty', 'max_new_tokens']), r.pick(EDGE_JSON))),
  damageText('generation_config'),
  rootType('generation_config'),
];

// ---- model.safetensors.index.json (of the sharded seed) ----

function editWeightMap(root: Entries, edit: (map: [string, JsonLike][]) => JsonLike): Entries | undefined {
  const map = get(root, 'weight_map');
  return map instanceof Entries ? set(root, 'weight_map', edit([...map.entries])) : undefined;
}

const SHARD_NAMES: JsonLike[] = ['../model.safetensors', '/etc/hostname', 'model.safetensors', 'config.json', '', '.', '..', 'missing.safetensors', 'a/b.safetensors', 'x\\y', '\u0000', 5, null, [], {}, '__proto__'];

const indexMutators: Mutator[] = [
  jsonMutator('index', 'reorder', 'identical', (root, r) => editWeightMap(new Entries(r.shuffle(root.entries)), (map) => new Entries(r.shuffle(map)))),
  jsonMutator('index', 'metadata', 'identical', (root, r) => set(root, 'metadata', r.pick<JsonLike>([new Entries([['total_size', 1]]), null, 'x', [], nested(100)]))),
  jsonMutator('index', 'shard_name', 'finite-or-error', (root, r) =>
    editWeightMap(root, (map) => {
      map[r.int(map.length)]![1] = r.pick([...SHARD_NAMES, r.pick(map)[1]]);
      return new Entries(map);
    })),
  jsonMutator('index', 'tensor_name', 'finite-or-error', (root, r) =>
    editWeightMap(root, (map) => {
      const at = r.int(map.length);
      map[at] = [r.pick(['__proto__', 'constructor', 'toString', '', 'model.extra', r.pick(map)[0]]), map[at]![1]];
      return new Entries(map);
    })),
  jsonMutator('index', 'drop_entry', 'finite-or-error', (root, r) => editWeightMap(root, (map) => new Entries(map.filter((_, i) => i !== r.int(map.length))))),
  jsonMutator('index', 'duplicate_entry', 'identical-or-error', (root, r) => editWeightMap(root, (map) => new Entries([...map, r.pick(map)]))),
  jsonMutator('index', 'weight_map', 'finite-or-error', (root, r) => set(root, 'weight_map', r.pick([...EDGE_JSON, nested(20000, 1, true)]))),
  damageText('index'),
  rootType('index'),
];

export const jsonMutators: readonly Mutator[] = [...configMutators, ...tokenizerMutators, ...tokenizerConfigMutators, ...generationConfigMutators, ...indexMutators];

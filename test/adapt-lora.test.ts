/**
 * LoRA adapters in PEFT's layout: the tensor names and config keys PEFT writes (names written out by hand from
 * PEFT's `base_model.model.<module>.lora_A.weight` scheme), PEFT's target matching (suffix after a dot, regex
 * fullmatch, layers_to_transform), strict reading (missing tensor, rank mismatch, unknown target, another base
 * model, unsupported features), and the merge law: (W + s·B·A)·x = W·x + s·B·(A·x) to 1e-5, and B = 0 gives W bit
 * for bit.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { UnsupportedError, WeightError, FormatError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { readConfigFile, type OlmoeConfig } from '../src/model/config.js';
import { writeSafetensors } from '../src/io/safetensors-writer.js';
import { readSafetensorsHeader, readTensorFloat32 } from '../src/io/safetensors.js';
import { initLoraModule, loraScaling, mergeLora, type LoraModule } from '../src/train/adapt/lora.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, readPeftAdapter, targetedModules, writePeftAdapter, type LoraAdapter, type LoraSettings } from '../src/train/adapt/peft.js';
import { tempDir, tinyModelDir } from './helpers.js';

const tiny: OlmoeConfig = readConfigFile(join(tinyModelDir, 'config.json')); // D 96, 6 heads × 16, 16 experts of 48, 3 layers

function randomAdapter(settings: LoraSettings, config: OlmoeConfig, seed = 1): LoraAdapter {
  const rng = createRng(seed);
  const modules = new Map<string, LoraModule>();
  for (const shape of targetedModules(settings, config)) {
    const module = initLoraModule(shape, settings.r, loraScaling(settings.alpha, settings.r, settings.useRslora), rng);
    for (let i = 0; i < module.b.length; i++) module.b[i] = rng() - 0.5; // a trained adapter: B ≠ 0
    modules.set(shape.name, module);
  }
  return { settings, modules };
}

const SETTINGS: LoraSettings = { r: 4, alpha: 8, dropout: 0.05, targetModules: ['q_proj', 'v_proj', 'gate_proj'], useRslora: false, baseModelNameOrPath: 'test/tiny-olmoe' };

describe('PEFT layout', () => {
  it('writes PEFT\'s names, shapes and config keys, and reads back the same adapter', () => {
    const dir = tempDir();
    const adapter = randomAdapter(SETTINGS, tiny);
    writePeftAdapter(dir, adapter);
    const { tensors } = readSafetensorsHeader(join(dir, ADAPTER_WEIGHTS));
    // 3 layers × (q, v + 16 experts' gate_proj) × (A, B).
    assert.equal(tensors.size, 3 * 18 * 2);
    const q = tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    assert.deepEqual(q?.shape, [4, 96]);
    assert.deepEqual(tensors.get('base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight')?.shape, [96, 4]);
    assert.deepEqual(tensors.get('base_model.model.model.layers.1.mlp.experts.15.gate_proj.lora_A.weight')?.shape, [4, 96]);
    assert.deepEqual(tensors.get('base_model.model.model.layers.1.mlp.experts.15.gate_proj.lora_B.weight')?.shape, [48, 4]);
    assert.equal(tensors.has('base_model.model.model.layers.0.mlp.gate.lora_A.weight'), false, '"gate_proj" never adapts the router');
    const config = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8')) as Record<string, unknown>;
    assert.deepEqual([config.peft_type, config.task_type, config.r, config.lora_alpha, config.lora_dropout, config.bias, config.use_dora], ['LORA', 'CAUSAL_LM', 4, 8, 0.05, 'none', false]);
    assert.deepEqual(config.target_modules, ['q_proj', 'v_proj', 'gate_proj']);
    const read = readPeftAdapter(dir, tiny);
    assert.deepEqual([...read.modules.keys()], [...adapter.modules.keys()]);
    for (const [name, module] of adapter.modules) {
      const other = read.modules.get(name)!;
      assert.deepEqual(other.a, module.a, name);
      assert.deepEqual(other.b, module.b, name);
      assert.equal(other.scaling, 2, 'alpha / r');
    }
  });

  it('matches targets as PEFT does: suffix after a dot, regex over the whole name, layers_to_transform, per-module rank', () => {
    const names = (settings: Partial<LoraSettings>) => targetedModules({ ...SETTINGS, ...settings }, tiny).map((m) => m.name);
    assert.deepEqual(names({ targetModules: ['gate'] }), ['model.layers.0.mlp.gate', 'model.layers.1.mlp.gate', 'model.layers.2.mlp.gate'], 'the router only when named');
    assert.deepEqual(names({ targetModules: String.raw`.*\.self_attn\.(k|o)_proj` }), [0, 1, 2].flatMap((l) => [`model.layers.${l}.self_attn.k_proj`, `model.layers.${l}.self_attn.o_proj`]));
    assert.throws(() => names({ targetModules: String.raw`self_attn\.k_proj` }), /selects no module/, 'a regex matches the whole name, not a part');
    assert.deepEqual(names({ targetModules: ['q_proj'], layersToTransform: [1] }), ['model.layers.1.self_attn.q_proj']);
    assert.equal(names({ targetModules: String.raw`.*\.q_proj`, layersToTransform: [1] }).length, 3, 'PEFT ignores layers_to_transform for a regex');
    assert.deepEqual(names({ targetModules: ['model.layers.2.mlp.experts.3.down_proj'] }), ['model.layers.2.mlp.experts.3.down_proj']);
    const dir = tempDir();
    const settings: LoraSettings = { ...SETTINGS, targetModules: ['q_proj', 'k_proj'], rankPattern: new Map([['k_proj', 2]]), alphaPattern: new Map([['layers.0.self_attn.q_proj', 16]]), useRslora: true };
    const rng = createRng(2);
    const modules = new Map(targetedModules(settings, tiny).map((shape) => {
      const rank = shape.name.endsWith('k_proj') ? 2 : 4;
      return [shape.name, initLoraModule(shape, rank, 1, rng)];
    }));
    writePeftAdapter(dir, { settings, modules });
    const read = readPeftAdapter(dir, tiny);
    assert.equal(read.modules.get('model.layers.1.self_attn.k_proj')!.rank, 2);
    assert.equal(read.modules.get('model.layers.1.self_attn.k_proj')!.scaling, 8 / Math.SQRT2, 'rslora: alpha / √r');
    assert.equal(read.modules.get('model.layers.0.self_attn.q_proj')!.scaling, 16 / 2, 'alpha_pattern');
    assert.equal(read.modules.get('model.layers.1.self_attn.q_proj')!.scaling, 8 / 2);
  });
});

describe('reading is strict', () => {
  function adapterDir(settings = SETTINGS): string {
    const dir = tempDir();
    writePeftAdapter(dir, randomAdapter(settings, tiny));
    return dir;
  }
  const editConfig = (dir: string, edit: (c: Record<string, unknown>) => void) => {
    const path = join(dir, ADAPTER_CONFIG);
    const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    edit(config);
    writeFileSync(path, JSON.stringify(config));
  };
  /** Rewrite the weights file keeping the tensors `keep` accepts, reshaped by `shape`. */
  const rewriteWeights = (dir: string, keep: (name: string) => boolean, extra: { name: string; shape: number[] }[] = []) => {
    const path = join(dir, ADAPTER_WEIGHTS);
    const entries = [...readSafetensorsHeader(path).tensors.values()].filter((e) => keep(e.name));
    const tensors = entries.map((e) => ({ name: e.name, dtype: 'f32' as const, shape: [...e.shape], bytes: new Uint8Array(readTensorFloat32(e).buffer) }));
    for (const t of extra) tensors.push({ ...t, dtype: 'f32', bytes: new Uint8Array(t.shape[0]! * t.shape[1]! * 4) });
    writeSafetensors(path, tensors);
  };

  it('a missing tensor', () => {
    const dir = adapterDir();
    rewriteWeights(dir, (name) => name !== 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight');
    assert.throws(() => readPeftAdapter(dir, tiny), (e: Error) => e instanceof WeightError && /missing tensor base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_B\.weight/.test(e.message));
  });
  it('an extra tensor', () => {
    const dir = adapterDir();
    rewriteWeights(dir, () => true, [{ name: 'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', shape: [4, 96] }]);
    assert.throws(() => readPeftAdapter(dir, tiny), /unexpected tensor "base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight"/);
  });
  it('a rank mismatch', () => {
    const dir = adapterDir();
    editConfig(dir, (c) => (c.r = 8));
    assert.throws(() => readPeftAdapter(dir, tiny), /rank mismatch for model\.layers\.0\.self_attn\.q_proj: lora_A has 4 rows and lora_B 4 columns, the config's rank is 8/);
  });
  it('an unknown target, and a regex that selects nothing', () => {
    const dir = adapterDir();
    editConfig(dir, (c) => (c.target_modules = ['q_proj', 'query_key_value']));
    assert.throws(() => readPeftAdapter(dir, tiny), (e: Error) => e instanceof FormatError && /unknown target "query_key_value".*q_proj, k_proj, v_proj, o_proj, gate, gate_proj, up_proj, down_proj, lm_head/.test(e.message));
    editConfig(dir, (c) => (c.target_modules = 'nothing\\.here'));
    assert.throws(() => readPeftAdapter(dir, tiny), /selects no module of this model/);
  });
  it('an adapter for another base model', () => {
    const dir = tempDir();
    writePeftAdapter(dir, randomAdapter({ ...SETTINGS, targetModules: ['down_proj'] }, { ...tiny, intermediateSize: 64 }));
    assert.throws(() => readPeftAdapter(dir, tiny), /model\.layers\.0\.mlp\.experts\.0\.down_proj: lora_A is \[4, 64\] and lora_B \[96, 4\] but model\.layers\.0\.mlp\.experts\.0\.down_proj is \[96, 48\] in this model: an adapter for another base model\?/);
  });
  it('features this version does not apply, and malformed values', () => {
    for (const [edit, pattern, cls] of [
      [(c: Record<string, unknown>) => (c.use_dora = true), /use_dora is true/, UnsupportedError],
      [(c: Record<string, unknown>) => (c.bias = 'all'), /bias is "all"/, UnsupportedError],
      [(c: Record<string, unknown>) => (c.peft_type = 'IA3'), /only LoRA adapters/, UnsupportedError],
      [(c: Record<string, unknown>) => (c.modules_to_save = ['lm_head']), /modules_to_save/, UnsupportedError],
      [(c: Record<string, unknown>) => (c.r = 0), /r must be a positive integer, not 0/, FormatError],
      [(c: Record<string, unknown>) => (c.target_modules = []), /target_modules must be a non-empty list/, FormatError],
      [(c: Record<string, unknown>) => (c.rank_pattern = { '(': 2 }), /rank_pattern: "\(" is not a regular expression/, FormatError],
    ] as const) {
      const dir = adapterDir();
      editConfig(dir, edit);
      assert.throws(() => readPeftAdapter(dir, tiny), (e: Error) => e instanceof cls && pattern.test(e.message), String(pattern));
    }
    assert.throws(() => readPeftAdapter(tempDir(), tiny), /adapter_config\.json: not found/);
  });
});

describe('merging', () => {
  const shape = { name: 'model.layers.0.self_attn.q_proj', inFeatures: 24, outFeatures: 20 };
  function module(seed: number, zeroB = false): LoraModule {
    const rng = createRng(seed);
    const m = initLoraModule(shape, 3, loraScaling(16, 3), rng);
    if (!zeroB) for (let i = 0; i < m.b.length; i++) m.b[i] = rng() - 0.5;
    return m;
  }
  const weight = (seed: number) => {
    const rng = createRng(seed);
    const w = Float32Array.from({ length: 20 * 24 }, () => rng() - 0.5);
    w[7] = -0; // a signed zero must survive a zero update
    return w;
  };
  const matVec = (m: ArrayLike<number>, rows: number, cols: number, x: ArrayLike<number>) => Array.from({ length: rows }, (_, r) => Array.from({ length: cols }, (_, c) => m[r * cols + c]! * x[c]!).reduce((a, b) => a + b, 0));

  it('the merged weight computes base + adapter: (W + s·B·A)·x = W·x + s·B·(A·x) to 1e-5', () => {
    const m = module(4);
    const w = weight(5);
    const merged = mergeLora(w, m);
    const rng = createRng(6);
    for (let trial = 0; trial < 5; trial++) {
      const x = Array.from({ length: 24 }, () => 2 * rng() - 1);
      const viaMerged = matVec(merged, 20, 24, x);
      const ax = matVec(m.a, 3, 24, x);
      const viaAdapter = matVec(w, 20, 24, x).map((y, o) => y + m.scaling * matVec(m.b, 20, 3, ax)[o]!);
      viaMerged.forEach((y, o) => assert.ok(Math.abs(y - viaAdapter[o]!) < 1e-5, `output ${o}: ${y} vs ${viaAdapter[o]}`));
    }
    assert.ok(merged.some((v, i) => Math.abs(v - w[i]!) > 1e-3), 'the adapter changes the weight');
  });

  it('B = 0 gives the base weight bit for bit (−0 included)', () => {
    const w = weight(5);
    const merged = mergeLora(w, module(4, true));
    assert.deepEqual(new Uint32Array(merged.buffer), new Uint32Array(w.buffer));
    assert.ok(Object.is(merged[7], -0));
    assert.throws(() => mergeLora(new Float32Array(3), module(4)), /the weight has 3 values, the adapter expects \[20, 24\]/);
  });
});

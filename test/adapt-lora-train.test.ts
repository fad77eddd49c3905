// LoRA in the training model (train/adapt/lora-train.ts): the gradients of A and B for every target kind (attention
// q/k/v/o, the router, routed experts, a shared expert), with and without dropout, against float64 central finite
// differences (the law every backward obeys here); B = 0 computes exactly the base model (bitwise logits); the base is
// frozen (no gradient storage, only A and B train); save → readPeftAdapter and load round trips; dropout is a
// function of (seed, pass) so a resumed run draws the same masks.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tape } from '../src/autograd/tape.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { floats } from '../src/backends/reference/tensor.js';
import { UnsupportedError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { parseConfig } from '../src/model/config.js';
import { attachLora } from '../src/train/adapt/lora-train.js';
import { loraSettings } from '../src/train/adapt/config.js';
import { readPeftAdapter, targetedModules, type LoraSettings } from '../src/train/adapt/peft.js';
import { TrainModel } from '../src/train/model.js';
import { tempDir } from './helpers.js';
import { centralDifference } from './finite-difference.js';

const f64 = new ReferenceBackend({ precision: 'f64' });
const f32 = new ReferenceBackend();

function tinyConfig(extra: Record<string, unknown> = {}) {
  return parseConfig({
    model_type: 'olmoe', vocab_size: 11, hidden_size: 8, intermediate_size: 3, num_hidden_layers: 2, num_attention_heads: 2,
    num_key_value_heads: 2, num_experts: 4, num_experts_per_tok: 2, max_position_embeddings: 16, rms_norm_eps: 1e-5, ...extra,
  });
}

function normalFrom(seed: number) {
  const rng = createRng(seed);
  return (n: number, std: number) => Float64Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng()));
}

function settings(targetModules: LoraSettings['targetModules'], extra: Partial<LoraSettings> = {}): LoraSettings {
  return { r: 2, alpha: 3, dropout: 0, targetModules, useRslora: false, ...extra };
}

const BATCH = { tokens: Int32Array.of(1, 5, 3, 9, 2, /* row 2 */ 4, 4, 0, 10, 7), sequences: 2, targets: Int32Array.of(5, 3, -1, 2, 4, 0, 10, 7) };
const LOSS_WEIGHTS = { loadBalancing: 0.5, routerZ: 0.5 };

function model(backend: ReferenceBackend, extra: Record<string, unknown> = {}, seed = 3): TrainModel {
  const m = new TrainModel({ config: tinyConfig(extra), routing: 'token_choice', capacityFactor: 1 }, backend);
  const normal = normalFrom(seed);
  m.initialize((values) => values.set(normal(values.length, 0.5)));
  return m;
}

/** A trained-looking adapter: B random too, so A's gradient is not zero. */
function randomizeB(backend: ReferenceBackend, params: readonly { name: string; value: unknown; shape: readonly number[] }[], seed = 5): void {
  const normal = normalFrom(seed);
  for (const p of params) if (p.name.includes('lora_B')) backend.write(p.value as never, normal(p.shape.reduce((a, b) => a * b, 1), 0.5));
}

function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    sum += (Math.abs(a[i]!) + Math.abs(b[i]!)) ** 2;
  }
  return sum === 0 ? 0 : Math.sqrt(diff / sum);
}

const KINDS: readonly [string, LoraSettings['targetModules'], Record<string, unknown>][] = [
  ['attention q/k/v/o', ['q_proj', 'k_proj', 'v_proj', 'o_proj'], {}],
  ['router (mlp.gate)', ['gate'], {}],
  ['q only (k, v frozen beside it)', ['q_proj'], {}],
  ['every expert gate/up/down', '.*\\.experts\\.\\d+\\.(gate|up|down)_proj', {}],
  ['one expert of one layer (next to frozen experts)', ['model.layers.1.mlp.experts.2.up_proj'], {}],
  ['shared expert', '.*shared_expert\\.(gate|up|down)_proj', { shared_expert_intermediate_size: 5 }],
];

describe('LoRA gradients against float64 finite differences', () => {
  for (const [label, targets, extra] of KINDS) {
    for (const dropout of label.startsWith('attention') || label.startsWith('router') ? [0, 0.3] : [0]) {
      it(`${label}${dropout ? `, dropout ${dropout}` : ''}: A and B`, () => {
        const m = model(f64, extra);
        const lora = attachLora(m, settings(targets, { dropout, ...(label.startsWith('router') ? { alpha: 4, r: 3 } : {}) }), createRng(11));
        randomizeB(f64, lora.params);
        // Every pass replays pass 0's dropout masks, so the finite differences see the function the tape recorded.
        const lossOn = (tape: Tape) => {
          lora.dropoutPasses = 0;
          return m.forward(tape, BATCH, LOSS_WEIGHTS).loss;
        };
        m.zeroGrads();
        const tape = new Tape(f64);
        tape.backward(lossOn(tape));
        const lossAt = () => floats((lossOn(new Tape(f64)) as unknown as { value: never }).value)[0]!;
        for (const param of lora.params) {
          const values = floats(param.value);
          const numeric = new Float64Array(values.length);
          for (let j = 0; j < values.length; j++) numeric[j] = centralDifference(values, j, lossAt);
          const analytic = floats(param.grad);
          assert.ok(analytic.some((g) => g !== 0), `${param.name}: the gradient is zero (nothing checked)`);
          const error = relativeError(analytic, numeric);
          assert.ok(error < 1e-6, `${param.name}: relative error ${error.toExponential(2)}`);
        }
      });
    }
  }

  it('dropout changes the loss (the masks act) and is off on an evaluation tape', () => {
    const m = model(f64);
    const lora = attachLora(m, settings(['q_proj', 'v_proj'], { dropout: 0.5 }), createRng(11));
    randomizeB(f64, lora.params);
    const loss = (tape: Tape) => floats((m.forward(tape, BATCH, LOSS_WEIGHTS).loss as unknown as { value: never }).value)[0]!;
    const evaluation = [loss(new Tape(f64, { grad: false })), loss(new Tape(f64, { grad: false }))];
    assert.equal(lora.dropoutPasses, 0, 'an evaluation pass draws no masks');
    assert.equal(evaluation[0], evaluation[1]);
    assert.equal(evaluation[0], floats(m.forward(f64, BATCH, LOSS_WEIGHTS).loss)[0]);
    const training = [loss(new Tape(f64)), loss(new Tape(f64))];
    assert.equal(lora.dropoutPasses, 2);
    assert.notEqual(training[0], evaluation[0]);
    assert.notEqual(training[0], training[1], 'each training pass draws new masks');
  });
});

describe('LoRA on the training model', () => {
  it('B = 0 computes exactly the base model: bitwise logits on the backend and on a recording tape', () => {
    const base = model(f32);
    const adapted = model(f32);
    attachLora(adapted, settings(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate', 'gate_proj', 'up_proj', 'down_proj']), createRng(1));
    const expected = f32.toFloat32(base.forward(f32, BATCH, LOSS_WEIGHTS).logits);
    assert.deepEqual(f32.toFloat32(adapted.forward(f32, BATCH, LOSS_WEIGHTS).logits), expected);
    const tape = new Tape(f32);
    assert.deepEqual(tape.toFloat32(adapted.forward(tape, BATCH, LOSS_WEIGHTS).logits), expected);
  });

  it('freezes the base: no gradient storage for it, only A and B train, counts as PEFT prints them', () => {
    const m = model(f32);
    const lora = attachLora(m, settings(['q_proj', 'v_proj']), createRng(1));
    assert.ok(m.params.every((p) => p.grad.shape.reduce((a, b) => a * b, 1) === 0), 'base gradients released');
    assert.deepEqual(lora.modules, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
    assert.deepEqual(lora.params.map((p) => p.name.replace('base_model.model.model.layers.', '')), [
      '0.self_attn.q_proj.lora_A.weight', '0.self_attn.q_proj.lora_B.weight', '0.self_attn.v_proj.lora_A.weight', '0.self_attn.v_proj.lora_B.weight',
      '1.self_attn.q_proj.lora_A.weight', '1.self_attn.q_proj.lora_B.weight', '1.self_attn.v_proj.lora_A.weight', '1.self_attn.v_proj.lora_B.weight',
    ]);
    // q: 8 → 8, v: 8 → 8 (2 heads × 4), r = 2: 2·8 + 8·2 = 32 per module, 4 modules.
    assert.equal(lora.trainableCount, 128);
    const base = m.params.reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
    assert.equal(lora.totalCount, base + 128);
    m.zeroGrads();
    const tape = new Tape(f32);
    tape.backward(m.forward(tape, BATCH, LOSS_WEIGHTS).loss);
    const bGrads = lora.params.filter((p) => p.name.includes('lora_B')).map((p) => f32.toFloat32(p.grad));
    assert.ok(bGrads.every((g) => g.some((v) => v !== 0)), 'B receives a gradient at B = 0 (A does not: dL/dA = s·Bᵀ·…)');
  });

  it('refuses what it does not apply: dropout on expert targets, lm_head, a second adapter', () => {
    assert.throws(() => attachLora(model(f32), settings(['gate_proj'], { dropout: 0.1 }), createRng(1)), (e: Error) => e instanceof UnsupportedError && /dropout 0.1 with expert targets/.test(e.message));
    assert.throws(() => attachLora(model(f32), settings(['lm_head']), createRng(1)), (e: Error) => e instanceof UnsupportedError && /lm_head/.test(e.message));
    const m = model(f32);
    attachLora(m, settings(['q_proj']), createRng(1));
    assert.throws(() => attachLora(m, settings(['v_proj']), createRng(1)), /already attached/);
  });

  it('save → readPeftAdapter gives the trained values (experts\' A transposed back to [r, in]); load restores them', () => {
    const m = model(f32);
    const lora = attachLora(m, settings(['q_proj', 'up_proj']), createRng(1));
    randomizeB(f32, lora.params);
    const dir = tempDir();
    lora.save(dir);
    const read = readPeftAdapter(dir, m.arch.config);
    assert.deepEqual([...read.modules.keys()], lora.modules);
    const up = read.modules.get('model.layers.0.mlp.experts.1.up_proj')!;
    const upA = lora.params.find((p) => p.name === 'base_model.model.model.layers.0.mlp.experts.1.up_proj.lora_A.weight')!;
    assert.deepEqual(upA.shape, [8, 2], 'held as [in, r]');
    const held = f32.toFloat32(upA.value);
    for (let k = 0; k < 2; k++) for (let i = 0; i < 8; i++) assert.equal(up.a[k * 8 + i], held[i * 2 + k]);
    for (const [name, module] of lora.adapter().modules) {
      assert.deepEqual(read.modules.get(name)!.a, module.a);
      assert.deepEqual(read.modules.get(name)!.b, module.b);
    }
    const other = model(f32);
    const restored = attachLora(other, settings(['q_proj', 'up_proj']), createRng(99));
    restored.load(dir);
    lora.params.forEach((p, i) => assert.deepEqual(f32.toFloat32(restored.params[i]!.value), f32.toFloat32(p.value)));
    const mismatched = attachLora(model(f32), settings(['q_proj']), createRng(1));
    assert.throws(() => mismatched.load(dir), /adapts 10 modules, this run 2/);
  });

  it('dropout masks follow (seed, pass): a resumed run that sets dropoutPasses back draws the same ones', () => {
    const run = () => {
      const m = model(f64);
      const lora = attachLora(m, settings(['q_proj', 'o_proj'], { dropout: 0.4 }), createRng(21));
      randomizeB(f64, lora.params);
      return { m, lora };
    };
    const loss = (m: TrainModel) => floats((m.forward(new Tape(f64), BATCH, LOSS_WEIGHTS).loss as unknown as { value: never }).value)[0]!;
    const unbroken = run();
    const losses = [loss(unbroken.m), loss(unbroken.m), loss(unbroken.m)];
    const resumed = run();
    resumed.lora.dropoutPasses = 2;
    assert.equal(loss(resumed.m), losses[2]);
  });

  it('a config\'s lora block: attention as named, the router only when asked ("mlp.gate" never catches gate_proj), experts all', () => {
    const config = tinyConfig();
    const block = { r: 8, alpha: 16, dropout: 0, attention: ['q_proj', 'v_proj'] as ('q_proj' | 'v_proj')[], experts: 'none' as const, router: false, use_rslora: false };
    const names = (b: Parameters<typeof loraSettings>[0]) => targetedModules(loraSettings(b, null), config).map((m) => m.name.replace(/^model\.layers\.\d+\./, ''));
    assert.deepEqual(names(block), ['self_attn.q_proj', 'self_attn.v_proj', 'self_attn.q_proj', 'self_attn.v_proj']);
    const withRouter = names({ ...block, router: true });
    assert.equal(withRouter.filter((n) => n === 'mlp.gate').length, 2);
    assert.ok(!withRouter.some((n) => n.endsWith('gate_proj')));
    const all = names({ ...block, experts: 'all' });
    assert.equal(all.filter((n) => /^mlp\.experts\.\d+\.(gate|up|down)_proj$/.test(n)).length, 2 * 4 * 3);
    assert.ok(!all.includes('mlp.gate'));
  });
});

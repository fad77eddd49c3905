/**
 * Training numerics: AdamW against the update written out by hand (PyTorch's documented algorithm, float64),
 * gradient clipping, the warmup + cosine schedule at its landmarks, and the truncated-normal init and its RNG.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InputError } from '../src/core/errors.js';
import { TrainRng, truncatedNormal } from '../src/train/init.js';
import { AdamW, clipGradNorm, OLMOE_ADAMW, RmsProp, type Param } from '../src/train/optim.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { announceSkip, backendCases } from './backends.js';
import { learningRate, type ScheduleOptions } from '../src/train/schedule.js';

function close(actual: number, expected: number, rel = 1e-6, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= rel * Math.max(Math.abs(expected), 1e-12), `${what} ${actual} vs ${expected}`);
}

for (const target of backendCases) {
  describe(`AdamW and clipping on the ${target.name} backend`, { skip: announceSkip(target.skip) }, () => {
    const backend = target.skip ? new ReferenceBackend() : target.create();
    const param = (name: string, data: number[], decay = true): Param => {
      const value = backend.zeros([data.length]);
      backend.write(value, Float32Array.from(data));
      return { name, value, grad: backend.zeros([data.length]), decay };
    };
    const data = (p: Param) => backend.toFloat32(p.value);
    const grad = (p: Param) => backend.toFloat32(p.grad);
    const setGrad = (p: Param, values: number[]) => backend.write(p.grad, Float32Array.from(values));

    it('uses the OLMoE hyperparameters of Table C3 by default', () => {
      assert.deepEqual(OLMOE_ADAMW, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
    });

    it('three steps match the hand-written update: decay, then lr·m̂/(√v̂+ε)', () => {
      const grads = [[0.5, -0.25], [0.1, 2.0], [-0.3, 0.05]];
      const lrs = [1e-2, 5e-3, 2e-3];
      for (const decay of [true, false]) {
        const p = param('w', [1.0, -2.0], decay);
        const opt = new AdamW(backend, [p]);
        // the reference: two elements, plain float64, written from the algorithm in the PyTorch documentation
        let w = [1.0, -2.0];
        let m = [0, 0];
        let v = [0, 0];
        for (let t = 1; t <= 3; t++) {
          const g = grads[t - 1]!;
          const lr = lrs[t - 1]!;
          setGrad(p, g);
          opt.step(lr);
          const wd = decay ? 0.1 : 0;
          m = m.map((mi, i) => 0.9 * mi + 0.1 * g[i]!);
          v = v.map((vi, i) => 0.95 * vi + 0.05 * g[i]! ** 2);
          w = w.map((wi, i) => wi * (1 - lr * wd) - (lr * (m[i]! / (1 - 0.9 ** t))) / (Math.sqrt(v[i]! / (1 - 0.95 ** t)) + 1e-8));
          w.forEach((wi, i) => close(data(p)[i]!, wi, 1e-6, `decay=${decay} step ${t} element ${i}`));
        }
        assert.equal(opt.stepCount, 3);
      }
    });

    it('the first step moves each weight by lr·sign(g) (plus decay only where decay is on)', () => {
      const decayed = param('w', [2.0], true);
      const gain = param('norm.weight', [2.0], false);
      setGrad(decayed, [3]);
      setGrad(gain, [3]);
      new AdamW(backend, [decayed, gain]).step(0.01);
      close(data(decayed)[0]!, 2.0 * (1 - 0.01 * 0.1) - 0.01, 1e-6);
      close(data(gain)[0]!, 2.0 - 0.01, 1e-6);
    });

    it('a gradient scale (clipping) is the same step as scaling the gradients first', () => {
      const [a, b] = [param('a', [0.3, -0.7]), param('b', [0.3, -0.7])];
      setGrad(a, [0.5 * 0.25, -1 * 0.25]);
      setGrad(b, [0.5, -1]);
      new AdamW(backend, [a]).step(1e-2);
      new AdamW(backend, [b]).step(1e-2, 0.25);
      assert.deepEqual(data(b), data(a));
    });

    it('state saved at step 2 and loaded into a fresh optimizer continues bit for bit', () => {
      const make = () => [param('a', [0.3, -0.7, 1.1]), param('b', [0.5], false)];
      const gradsAt = (t: number) => [[0.1 * t, -0.2, 0.05 * t * t], [t - 1.5]];
      const run = make();
      const opt = new AdamW(backend, run);
      let saved;
      let savedData: Float32Array[] = [];
      for (let t = 1; t <= 3; t++) {
        gradsAt(t).forEach((g, i) => setGrad(run[i]!, g));
        opt.step(1e-3);
        if (t === 2) {
          saved = opt.state();
          savedData = run.map((p) => data(p).slice());
        }
      }
      const resumed = make();
      resumed.forEach((p, i) => backend.write(p.value, savedData[i]!));
      const fresh = new AdamW(backend, resumed);
      fresh.load(saved!);
      assert.equal(fresh.stepCount, 2);
      gradsAt(3).forEach((g, i) => setGrad(resumed[i]!, g));
      fresh.step(1e-3);
      resumed.forEach((p, i) => assert.deepEqual(new Uint8Array(data(p).slice().buffer), new Uint8Array(data(run[i]!).slice().buffer)));
      assert.deepEqual(fresh.state(), opt.state());
    });

    it('load rejects a state of other params, naming the param', () => {
      const opt = new AdamW(backend, [param('a', [1, 2]), param('layers.0.mlp.gate', [1, 2, 3])]);
      const state = opt.state();
      assert.throws(() => new AdamW(backend, [param('a', [1, 2])]).load(state), (e) => e instanceof InputError && /2 m arrays for 1 params/.test(e.message));
      const other = new AdamW(backend, [param('a', [1, 2]), param('layers.0.mlp.gate', [1, 2])]);
      assert.throws(() => other.load(state), (e) => e instanceof InputError && /layers\.0\.mlp\.gate/.test(e.message));
    });

    it('rejects bad options and learning rates', () => {
      assert.throws(() => new AdamW(backend, [], { beta2: 1 }), InputError);
      assert.throws(() => new AdamW(backend, [], { eps: 0 }), InputError);
      assert.throws(() => new AdamW(backend, []).step(Number.NaN), InputError);
      assert.throws(() => new AdamW(backend, [{ name: 'x', value: backend.zeros([2]), grad: backend.zeros([3]), decay: true }]), /param x/);
    });

    it('clipGradNorm: the global norm, and the factor maxNorm / (norm + 1e-6) when above maxNorm', () => {
      const a = param('a', [0, 0]);
      const b = param('b', [0]);
      setGrad(a, [3, 0]);
      setGrad(b, [4]); // global norm 5
      const { norm, scale } = clipGradNorm(backend, [a, b], 1);
      assert.equal(norm, 5);
      close(scale, 1 / (5 + 1e-6), 1e-12);
      assert.deepEqual([...grad(a)], [3, 0], 'the gradients themselves are left for the optimizer to scale');
    });

    it('clipGradNorm: factor 1 below the limit; a non-finite norm comes back with factor 1', () => {
      const a = param('a', [0, 0]);
      setGrad(a, [0.3, 0.4]);
      const below = clipGradNorm(backend, [a], 1);
      close(below.norm, 0.5, 1e-7);
      assert.equal(below.scale, 1);
      setGrad(a, [Number.POSITIVE_INFINITY, 1]);
      assert.deepEqual(clipGradNorm(backend, [a], 1), { norm: Number.POSITIVE_INFINITY, scale: 1 });
      setGrad(a, [Number.NaN, 1]);
      assert.ok(Number.isNaN(clipGradNorm(backend, [a], 1).norm));
      assert.throws(() => clipGradNorm(backend, [a], 0), InputError);
    });
  });
}

describe('learningRate', () => {
  const o: ScheduleOptions = { peakLr: 4e-4, warmupSteps: 10, totalSteps: 110, finalLrRatio: 0.1 };

  it('warms up linearly to the peak at the last warmup step', () => {
    close(learningRate(0, o), 4e-4 / 10, 1e-12);
    close(learningRate(4, o), 4e-4 * 0.5, 1e-12);
    close(learningRate(9, o), 4e-4, 1e-12);
    close(learningRate(10, o), 4e-4, 1e-12); // cosine starts at the peak
  });

  it('follows the cosine to the floor: (1+r)/2·peak halfway, r·peak at the end and after', () => {
    close(learningRate(60, o), ((1 + 0.1) / 2) * 4e-4, 1e-12);
    close(learningRate(35, o), 4e-5 + (4e-4 - 4e-5) * (1 + Math.cos(Math.PI / 4)) / 2, 1e-12);
    close(learningRate(110, o), 4e-5, 1e-12);
    close(learningRate(5000, o), 4e-5, 1e-12);
    for (let s = 11; s < 200; s++) assert.ok(learningRate(s, o) <= learningRate(s - 1, o));
  });

  it('without warmup starts at the peak', () => {
    close(learningRate(0, { ...o, warmupSteps: 0 }), 4e-4, 1e-12);
  });

  it('rejects bad options and steps', () => {
    for (const bad of [{ peakLr: 0 }, { peakLr: Number.NaN }, { warmupSteps: -1 }, { warmupSteps: 1.5 }, { totalSteps: 10 }, { finalLrRatio: 1.5 }, { finalLrRatio: -0.1 }]) {
      assert.throws(() => learningRate(0, { ...o, ...bad }), InputError, JSON.stringify(bad));
    }
    assert.throws(() => learningRate(-1, o), InputError);
    assert.throws(() => learningRate(0.5, o), InputError);
  });
});

describe('truncated normal init', () => {
  it('stays within ±3σ with the truncated normal\'s mean and standard deviation', () => {
    const std = 0.02;
    const out = new Float32Array(1_000_000);
    truncatedNormal(out, std, ((rng) => () => rng.next())(new TrainRng(1234)));
    let sum = 0;
    let sumSquares = 0;
    let largest = 0;
    for (const x of out) {
      sum += x;
      sumSquares += x * x;
      largest = Math.max(largest, Math.abs(x));
    }
    assert.ok(largest <= 3 * std, `largest |x| ${largest}`);
    assert.ok(largest > 2.9 * std, 'the tails are reached');
    const mean = sum / out.length;
    const sampleStd = Math.sqrt(sumSquares / out.length - mean * mean);
    // N(0, 1) cut at ±3: variance 1 − 2·3·φ(3)/(2Φ(3) − 1), with Φ(3) = 0.9986501019683699 (tables)
    const phi3 = Math.exp(-4.5) / Math.sqrt(2 * Math.PI);
    const expected = std * Math.sqrt(1 - (6 * phi3) / (2 * 0.9986501019683699 - 1));
    close(expected / std, 0.98658, 1e-4, 'analytic');
    assert.ok(Math.abs(sampleStd - expected) < 0.003 * std, `std ${sampleStd / std}σ vs ${expected / std}σ`);
    assert.ok(Math.abs(mean) < 0.005 * std, `mean ${mean / std}σ`);
  });

  it('a zero std gives zeros; bad arguments are refused', () => {
    const out = new Float32Array(5).fill(1);
    truncatedNormal(out, 0, Math.random);
    assert.deepEqual([...out], [0, 0, 0, 0, 0]);
    assert.throws(() => truncatedNormal(out, -1, Math.random), InputError);
    assert.throws(() => truncatedNormal(out, 1, Math.random, 0), InputError);
  });
});

describe('TrainRng', () => {
  it('is seeded, uniform in [0, 1), and resumes exactly from its saved state', () => {
    const a = new TrainRng(42);
    const b = new TrainRng(42);
    const c = new TrainRng(43);
    const first = Array.from({ length: 5 }, () => a.next());
    assert.deepEqual(first, Array.from({ length: 5 }, () => b.next()));
    assert.notDeepEqual(first, Array.from({ length: 5 }, () => c.next()));
    const saved = a.state();
    assert.match(saved, /^[0-9a-f]{32}$/);
    const resumed = TrainRng.from(saved);
    const rest = Array.from({ length: 1000 }, () => a.next());
    assert.deepEqual(Array.from({ length: 1000 }, () => resumed.next()), rest);
    assert.ok(rest.every((u) => u >= 0 && u < 1));
    const mean = rest.reduce((s, u) => s + u, 0) / rest.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05);
    assert.notEqual(new TrainRng(2 ** 32).state(), new TrainRng(0).state());
  });

  it('refuses bad seeds and states', () => {
    assert.throws(() => new TrainRng(-1), InputError);
    assert.throws(() => new TrainRng(1.5), InputError);
    assert.throws(() => TrainRng.from('xyz'), InputError);
    assert.throws(() => TrainRng.from('0'.repeat(32)), InputError);
  });
});

describe('RMSProp (PyTorch RMSprop semantics)', () => {
  const backend = new ReferenceBackend({ precision: 'f64' });
  const param = (values: number[], grads: number[], decay = true): Param => {
    const value = backend.zeros([values.length]);
    backend.write(value, Float64Array.from(values));
    const grad = backend.zeros([grads.length]);
    backend.write(grad, Float64Array.from(grads));
    return { name: 'p', value, grad, decay };
  };
  const read = (p: Param) => Array.from(backend.toFloat32(p.value));

  it('two steps worked by hand: v ← α·v + (1−α)·g², p ← p − lr·g/(√v + ε)', () => {
    // α = 0.9, lr = 0.1, g = (0.5, −0.1) both steps.
    // step 1: v = (0.025, 0.001), g/√v = ±3.16227766 → p = (0.683772234, −1.683772234)
    // step 2: v = (0.0475, 0.0019), g/√v = ±2.29415734 → p = (0.454356500, −1.454356500)
    const p = param([1, -2], [0.5, -0.1]);
    const opt = new RmsProp(backend, [p], { alpha: 0.9 });
    opt.step(0.1);
    read(p).forEach((x, i) => assert.ok(Math.abs(x - [0.683772234, -1.683772234][i]!) < 1e-6, `step 1: ${x}`));
    opt.step(0.1);
    read(p).forEach((x, i) => assert.ok(Math.abs(x - [0.4543565, -1.4543565][i]!) < 1e-6, `step 2: ${x}`));
  });

  it('weight decay is added to the gradient (decay params only); the clipping scale multiplies the gradient first', () => {
    // decay 0.1, scale 0.5: g = 0.5·0.8 + 0.1·2 = 0.6 → v = 0.01·0.36, step = lr·0.6/0.06 = 10·lr.
    const decayed = param([2], [0.8]);
    const gain = param([2], [0.8], false); // g = 0.4 → the same first step size lr/√(1−α)
    new RmsProp(backend, [decayed, gain], { alpha: 0.99, weightDecay: 0.1 }).step(0.01, 0.5);
    assert.ok(Math.abs(read(decayed)[0]! - (2 - 0.1)) < 1e-6, `${read(decayed)}`);
    assert.ok(Math.abs(read(gain)[0]! - (2 - 0.1)) < 1e-6, `${read(gain)}`);
  });

  it('state and load resume bitwise; bad options refused', () => {
    const straight = param([0.3, -0.7, 1.1], [0.2, 0.05, -0.4]);
    const a = new RmsProp(backend, [straight], { momentum: 0.5 });
    for (let i = 0; i < 3; i++) a.step(0.01);
    const resumed = param([0.3, -0.7, 1.1], [0.2, 0.05, -0.4]);
    const b = new RmsProp(backend, [resumed], { momentum: 0.5 });
    b.step(0.01);
    const saved = b.state();
    const c = new RmsProp(backend, [resumed], { momentum: 0.5 });
    c.load(saved);
    c.step(0.01);
    c.step(0.01);
    assert.deepEqual(read(resumed), read(straight));
    assert.equal(c.stepCount, 3);
    assert.throws(() => new RmsProp(backend, [straight], { alpha: 1 }), InputError);
    assert.throws(() => c.load({ step: 1, m: [], v: [] }), /0 m arrays for 1 params/);
  });
});

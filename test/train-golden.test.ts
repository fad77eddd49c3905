// The training executor against an independent training golden (test/fixtures/tiny-olmoe/train-golden.json, made by
// PyTorch autograd in float64 from the tiny fixture's weights: tools/make_train_golden.py in ../shared): one batch's
// cross-entropy with ignored targets, the load-balancing and router z-loss in the OLMoE training code's form (spec
// §3.8), every parameter's gradient norm, sample gradients, and two AdamW steps with gradients near 1e-8 (where the
// placement of ε matters). Everything to 1e-6 relative.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseConfig } from '../src/model/config.js';
import type { Tensor } from '../src/core/backend.js';
import { Tape, type TapeTensor } from '../src/autograd/tape.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { floats } from '../src/backends/reference/tensor.js';
import { loadParams } from '../src/train/checkpoint.js';
import { TrainModel } from '../src/train/model.js';
import { AdamW, type Param } from '../src/train/optim.js';
import { backendCases } from './backends.js';
import { repoRoot, tinyModelDir } from './helpers.js';

interface Golden {
  batch: { tokens: number[][]; targets: number[][] };
  loss_weights: { load_balancing: number; router_z: number };
  cross_entropy: number;
  cross_entropy_no_target_ignored: number;
  load_balancing_unweighted: number;
  router_z_unweighted: number;
  total: number;
  grad_global_norm: number;
  grad_norms: Record<string, number>;
  grad_samples: Record<string, number[]>;
  adamw: {
    lr: number; betas: [number, number]; eps: number; weight_decay: { matrix: number; vector: number };
    initial: { matrix: number[][]; vector: number[] };
    grads: { matrix: number[][]; vector: number[] }[];
    after_each_step: { matrix: number[][]; vector: number[] }[];
  };
}

const golden = JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'tiny-olmoe', 'train-golden.json'), 'utf8')) as Golden;
const config = parseConfig(JSON.parse(readFileSync(join(tinyModelDir, 'config.json'), 'utf8')));

function close(actual: number, expected: number, what: string, rel = 1e-6): void {
  assert.ok(Math.abs(actual - expected) <= rel * Math.abs(expected), `${what}: ${actual} vs ${expected} (relative ${(Math.abs(actual - expected) / Math.abs(expected)).toExponential(2)})`);
}

/** The fixture model in float64 on the training executor: the golden batch's losses and every parameter's gradient. */
function runGolden(targets: Int32Array | undefined) {
  const model = new TrainModel({ config, routing: 'token_choice', capacityFactor: 1 }, new ReferenceBackend({ precision: 'f64' }));
  loadParams(model, tinyModelDir);
  const tape = new Tape(model.backend);
  const weights = { loadBalancing: golden.loss_weights.load_balancing, routerZ: golden.loss_weights.router_z };
  const result = model.forward(tape, { tokens: Int32Array.from(golden.batch.tokens.flat()), sequences: golden.batch.tokens.length, targets }, weights);
  tape.backward(result.loss);
  const grads = new Map(model.params.map((p) => [p.name, floats(p.grad)]));
  // Values in float64 (the numbers in `result` are read back as float32).
  const value = (t: Tensor) => floats((t as TapeTensor).value)[0]!;
  const sum = (terms: readonly Tensor[]) => terms.reduce((total, t) => total + value(t), 0);
  const { parts } = result;
  return { ce: value(parts.crossEntropy), lb: sum(parts.loadBalancing) / weights.loadBalancing, z: sum(parts.routerZ) / weights.routerZ, total: value(result.loss), grads };
}

describe('training golden (PyTorch float64)', () => {
  const run = runGolden(Int32Array.from(golden.batch.targets.flat()));

  it('cross-entropy over the counted targets, load-balancing loss, z-loss and their weighted total', () => {
    close(run.ce, golden.cross_entropy, 'cross-entropy');
    close(run.lb, golden.load_balancing_unweighted, 'load-balancing loss');
    close(run.z, golden.router_z_unweighted, 'router z-loss');
    close(run.total, golden.total, 'total');
  });

  it('cross-entropy of the same batch with no target ignored', () => {
    close(runGolden(undefined).ce, golden.cross_entropy_no_target_ignored, 'cross-entropy, every target');
  });

  it('gradient norm of every parameter (zero for experts no token chose) and the global norm', () => {
    let sumSquares = 0;
    for (const [name, grad] of run.grads) {
      let sumOfSquares = 0;
      for (const g of grad) sumOfSquares += g * g;
      const norm = Math.sqrt(sumOfSquares);
      sumSquares += sumOfSquares;
      const expected = golden.grad_norms[name];
      if (expected === undefined) assert.equal(norm, 0, `${name} has no gradient in the golden`);
      else close(norm, expected, `|grad ${name}|`);
    }
    assert.equal(Object.keys(golden.grad_norms).filter((name) => !run.grads.has(name)).length, 0, 'every golden tensor is a parameter');
    close(Math.sqrt(sumSquares), golden.grad_global_norm, 'global gradient norm');
  });

  it('sample gradients (the first values of five tensors)', () => {
    for (const [name, values] of Object.entries(golden.grad_samples)) {
      const grad = run.grads.get(name)!;
      values.forEach((v, i) => close(grad[i]!, v, `${name}[${i}]`)); // exact zeros (rows of unused token ids) stay exact
    }
  });

  it('two AdamW steps with gradients near 1e-8: ε is added to √v̂, weight decay on matrices only', () => {
    const { adamw } = golden;
    for (const target of backendCases) {
      if (target.skip) continue;
      const backend = target.create();
      const param = (name: string, values: number[], decay: boolean): Param => {
        const value = backend.zeros([values.length]);
        backend.write(value, Float32Array.from(values));
        return { name, value, grad: backend.zeros([values.length]), decay };
      };
      const matrix = param('matrix', adamw.initial.matrix.flat(), true);
      const vector = param('vector', adamw.initial.vector, false);
      assert.equal(adamw.weight_decay.vector, 0);
      const optimizer = new AdamW(backend, [matrix, vector], { beta1: adamw.betas[0], beta2: adamw.betas[1], eps: adamw.eps, weightDecay: adamw.weight_decay.matrix });
      adamw.grads.forEach((grads, step) => {
        backend.write(matrix.grad, Float32Array.from(grads.matrix.flat()));
        backend.write(vector.grad, Float32Array.from(grads.vector));
        optimizer.step(adamw.lr);
        const after = adamw.after_each_step[step]!;
        const [m, v] = [backend.toFloat32(matrix.value), backend.toFloat32(vector.value)];
        after.matrix.flat().forEach((x, i) => close(m[i]!, x, `${target.name}: step ${step + 1} matrix[${i}]`));
        after.vector.forEach((x, i) => close(v[i]!, x, `${target.name}: step ${step + 1} vector[${i}]`));
      });
    }
  });
});

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
import { Tape } from '../src/train/autograd.js';
import { loadParams } from '../src/train/checkpoint.js';
import { referenceGemm } from '../src/train/kernels.js';
import { TrainModel } from '../src/train/model.js';
import { AdamW, type Param } from '../src/train/optim.js';
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

/** The fixture model in float64, the golden batch's losses, and (with `backward`) every parameter's gradient. */
function runGolden(targets: Int32Array | undefined, backward: boolean) {
  const model = new TrainModel({ config, routing: 'token_choice', capacityFactor: 1 }, 'f64');
  loadParams(model, tinyModelDir);
  const tape = new Tape('f64', referenceGemm, { grad: backward });
  const weights = { loadBalancing: golden.loss_weights.load_balancing, routerZ: golden.loss_weights.router_z };
  const result = model.forward(tape, Int32Array.from(golden.batch.tokens.flat()), golden.batch.tokens.length, weights, targets);
  if (backward) tape.backward(result.loss);
  const grads = new Map(model.params.map((p) => [p.name, p.grad]));
  return { ce: result.crossEntropy, lb: result.loadBalancing / weights.loadBalancing, z: result.routerZ / weights.routerZ, total: result.loss.item(), grads };
}

describe('training golden (PyTorch float64)', () => {
  const run = runGolden(Int32Array.from(golden.batch.targets.flat()), true);

  it('cross-entropy over the counted targets, load-balancing loss, z-loss and their weighted total', () => {
    close(run.ce, golden.cross_entropy, 'cross-entropy');
    close(run.lb, golden.load_balancing_unweighted, 'load-balancing loss');
    close(run.z, golden.router_z_unweighted, 'router z-loss');
    close(run.total, golden.total, 'total');
  });

  it('cross-entropy of the same batch with no target ignored', () => {
    close(runGolden(undefined, false).ce, golden.cross_entropy_no_target_ignored, 'cross-entropy, every target');
  });

  it('gradient norm of every parameter (zero for experts no token chose) and the global norm', () => {
    let sumSquares = 0;
    for (const [name, grad] of run.grads) {
      const norm = Math.hypot(...grad);
      sumSquares += norm ** 2;
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
    const matrix: Param = { name: 'matrix', data: Float32Array.from(adamw.initial.matrix.flat()), grad: new Float32Array(4), decay: true };
    const vector: Param = { name: 'vector', data: Float32Array.from(adamw.initial.vector), grad: new Float32Array(2), decay: false };
    assert.equal(adamw.weight_decay.vector, 0);
    const optimizer = new AdamW([matrix, vector], { beta1: adamw.betas[0], beta2: adamw.betas[1], eps: adamw.eps, weightDecay: adamw.weight_decay.matrix });
    adamw.grads.forEach((grads, step) => {
      matrix.grad.set(grads.matrix.flat());
      vector.grad.set(grads.vector);
      optimizer.step(adamw.lr);
      const after = adamw.after_each_step[step]!;
      after.matrix.flat().forEach((v, i) => close(matrix.data[i]!, v, `step ${step + 1} matrix[${i}]`));
      after.vector.forEach((v, i) => close(vector.data[i]!, v, `step ${step + 1} vector[${i}]`));
    });
  });
});

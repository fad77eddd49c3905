/**
 * `olmoe train CONFIG --bench`: time optimizer steps of the configured model on its data without writing
 * anything, and say where the time goes: GEMMs (counted exactly: 2·M·N·K per product), the rest of forward
 * and backward (element-wise ops, softmax, routing, gathers), and the optimizer.
 */
import { Tape } from './autograd.js';
import type { TrainConfig } from './config.js';
import type { GemmKernels } from './kernels.js';
import { AdamW, clipGradNorm } from './optim.js';
import { buildRun } from './trainer.js';

export interface TrainBench {
  readonly kernels: string;
  readonly steps: number;
  readonly tokensPerStep: number;
  readonly secondsPerStep: number;
  readonly tokensPerSecond: number;
  /** GEMM FLOPs per second of step time (the useful arithmetic rate). */
  readonly gflops: number;
  /** GEMM FLOPs per second of GEMM time (how fast the kernels run). */
  readonly gemmGflops: number;
  readonly share: { readonly gemm: number; readonly otherForward: number; readonly otherBackward: number; readonly optimizer: number };
  readonly parameters: number;
}

export function benchTraining(config: TrainConfig, kernels: GemmKernels, steps = 3): TrainBench {
  const timed = timedKernels(kernels);
  const { model, loader, weights } = buildRun(config, timed);
  const optimizer = new AdamW(model.float32Params());
  const time = { forward: 0, backward: 0, optimizer: 0, gemmForward: 0, gemmBackward: 0, flops: 0, tokens: 0 };
  for (let step = -1; step < steps; step++) {
    const measured = step >= 0; // step -1 warms up (JIT, scratch buffers)
    for (let m = 0; m < config.data.micro_batches; m++) {
      const batch = loader.nextBatch();
      const tape = new Tape('f32', timed);
      timed.reset();
      let started = performance.now();
      const { loss } = model.forward(tape, batch.tokens, batch.rows, weights);
      const forward = performance.now() - started;
      const gemmForward = timed.ms;
      started = performance.now();
      tape.backward(loss, 1 / config.data.micro_batches);
      if (!measured) continue;
      time.forward += forward;
      time.gemmForward += gemmForward;
      time.backward += performance.now() - started;
      time.gemmBackward += timed.ms - gemmForward;
      time.flops += timed.flops;
      time.tokens += batch.rows * batch.seqLen;
    }
    const started = performance.now();
    clipGradNorm(model.float32Params(), config.optimizer.clip);
    optimizer.step(config.optimizer.lr);
    if (measured) time.optimizer += performance.now() - started;
  }
  const total = time.forward + time.backward + time.optimizer;
  const gemm = time.gemmForward + time.gemmBackward;
  return {
    kernels: kernels.name, steps, tokensPerStep: time.tokens / steps, secondsPerStep: total / 1000 / steps, tokensPerSecond: (time.tokens / total) * 1000,
    gflops: time.flops / total / 1e6, gemmGflops: time.flops / gemm / 1e6,
    share: { gemm: gemm / total, otherForward: (time.forward - time.gemmForward) / total, otherBackward: (time.backward - time.gemmBackward) / total, optimizer: time.optimizer / total },
    parameters: model.params.reduce((sum, p) => sum + p.data.length, 0),
  };
}

function timedKernels(inner: GemmKernels): GemmKernels & { ms: number; flops: number; reset(): void } {
  const kernels = {
    name: inner.name, ms: 0, flops: 0,
    reset() {
      kernels.ms = 0;
      kernels.flops = 0;
    },
    gemm(args: Parameters<GemmKernels['gemm']>[0]) {
      const started = performance.now();
      inner.gemm(args);
      kernels.ms += performance.now() - started;
      kernels.flops += 2 * args.m * args.n * args.k;
    },
  };
  return kernels;
}

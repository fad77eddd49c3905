/**
 * `olmoe train CONFIG --bench`: time optimizer steps of the configured model on its data without writing
 * anything, and say where the time goes: every backend op is timed (forward, backward, optimizer), and the
 * step's useful arithmetic (the model's FLOPs, counted from the config) is set beside the machine's peak.
 */
import type { TrainingBackend } from '../core/training.js';
import { Tape } from '../autograd/tape.js';
import type { OlmoeConfig } from '../model/config.js';
import type { TrainConfig } from './config.js';
import { AdamW, clipGradNorm } from './optim.js';
import { buildRun } from './trainer.js';

export interface OpTime {
  readonly op: string;
  readonly calls: number;
  /** Share of the measured step time. */
  readonly share: number;
}

export interface TrainBench {
  readonly backend: string;
  /** The config's matrix-product precision ('fp32' or 'bf16'). */
  readonly precision: 'fp32' | 'bf16';
  readonly steps: number;
  readonly tokensPerStep: number;
  readonly secondsPerStep: number;
  readonly tokensPerSecond: number;
  /** Training FLOPs per token: 3 × the forward's matrix products and attention (embedding lookups not counted). */
  readonly flopsPerToken: number;
  /** Useful FLOPs per second of step time. */
  readonly gflops: number;
  /** The machine's FP32 FMA throughput on the backend's threads, measured in the same run (native backend only). */
  readonly peakGflops?: number;
  readonly threads?: number;
  /** bf16 runs on the native backend: how its products run ('amx-bf16', 'avx512-bf16': vdpbf16ps, 'fp32-fma': rounded operands). */
  readonly bf16Kernel?: string;
  /** bf16 runs on AMX or vdpbf16ps: that instruction's throughput on the backend's threads, measured in the same run. */
  readonly bf16PeakGflops?: number;
  readonly phases: { readonly forward: number; readonly backward: number; readonly optimizer: number };
  /** Time per backend op, largest first. */
  readonly ops: readonly OpTime[];
  readonly parameters: number;
}

/** A backend that can measure the machine's FP32 peak on its threads (the native backend). */
interface PeakProbe {
  readonly threads?: number;
  readonly bf16Kernel?: string;
  peakGflops?(repeats?: number): number;
  bf16PeakGflops?(repeats?: number): number | undefined;
}

export function benchTraining(config: TrainConfig, backend: TrainingBackend, steps = 3): TrainBench {
  const probe = backend as TrainingBackend & PeakProbe;
  const peakGflops = probe.peakGflops?.();
  const bf16PeakGflops = config.precision === 'bf16' ? probe.bf16PeakGflops?.() : undefined;
  const timer = new OpTimer();
  const timed = timer.wrap(backend);
  const { model, loader, weights } = buildRun(config, timed);
  const optimizer = new AdamW(timed, model.params);
  const phases = { forward: 0, backward: 0, optimizer: 0 };
  let tokens = 0;
  for (let step = -1; step < steps; step++) {
    const measured = step >= 0; // step -1 warms up (JIT, scratch buffers)
    if (step === 0) timer.reset();
    model.zeroGrads();
    for (let m = 0; m < config.data.micro_batches; m++) {
      const batch = loader.nextBatch();
      const tape = new Tape(timed);
      let started = performance.now();
      const { loss } = model.forward(tape, { tokens: batch.tokens, sequences: batch.rows }, weights);
      const forward = performance.now() - started;
      started = performance.now();
      tape.backward(loss, 1 / config.data.micro_batches);
      tape.release();
      if (!measured) continue;
      phases.forward += forward;
      phases.backward += performance.now() - started;
      tokens += batch.rows * batch.seqLen;
    }
    const started = performance.now();
    const { scale } = clipGradNorm(timed, model.params, config.optimizer.clip);
    optimizer.step(config.optimizer.lr, scale);
    if (measured) phases.optimizer += performance.now() - started;
  }
  const total = phases.forward + phases.backward + phases.optimizer;
  const flopsPerToken = trainingFlopsPerToken(model.arch.config, config.data.sequence_length, model.arch.routing === 'expert_choice' ? model.arch.capacityFactor : 1);
  return {
    backend: backend.name, precision: config.precision, steps, tokensPerStep: tokens / steps, secondsPerStep: total / 1000 / steps, tokensPerSecond: (tokens / total) * 1000,
    flopsPerToken, gflops: (flopsPerToken * tokens) / total / 1e6, ...(peakGflops !== undefined && { peakGflops, threads: probe.threads }),
    ...(config.precision === 'bf16' && probe.bf16Kernel !== undefined && { bf16Kernel: probe.bf16Kernel }),
    ...(bf16PeakGflops !== undefined && { bf16PeakGflops }),
    phases: { forward: phases.forward / total, backward: phases.backward / total, optimizer: phases.optimizer / total },
    ops: timer.report(total), parameters: model.params.reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0),
  };
}

/**
 * 3 × (2 × the weights a token multiplies + causal attention's 4·H·Hd·(S+1)/2 per layer): the backward computes
 * two products for each of the forward's. Expert choice runs capacityFactor × K experts per token on average.
 */
export function trainingFlopsPerToken(c: OlmoeConfig, sequenceLength: number, expertsScale = 1): number {
  const attention = c.hiddenSize * (c.numHeads + 2 * c.numKVHeads) * c.headDim + c.numHeads * c.headDim * c.hiddenSize;
  const experts = expertsScale * c.numExpertsPerTok * 3 * c.hiddenSize * c.intermediateSize + 3 * c.hiddenSize * c.sharedExpertSize;
  const perLayer = 2 * (attention + c.numExperts * c.hiddenSize + experts) + 4 * c.numHeads * c.headDim * ((sequenceLength + 1) / 2);
  return 3 * (c.numLayers * perLayer + 2 * c.hiddenSize * c.vocabSize);
}

/** Times every method call of a backend by name (each op runs to completion before it returns). */
class OpTimer {
  private times = new Map<string, { ms: number; calls: number }>();

  wrap(backend: TrainingBackend): TrainingBackend {
    return new Proxy(backend, {
      get: (target, key, receiver) => {
        const value = Reflect.get(target, key, receiver);
        if (typeof value !== 'function' || typeof key !== 'string') return value;
        return (...args: unknown[]) => {
          const started = performance.now();
          const result = (value as (...a: unknown[]) => unknown).apply(target, args);
          const entry = this.times.get(key) ?? this.times.set(key, { ms: 0, calls: 0 }).get(key)!;
          entry.ms += performance.now() - started;
          entry.calls++;
          return result;
        };
      },
    });
  }

  reset(): void {
    this.times.clear();
  }

  report(totalMs: number): OpTime[] {
    return [...this.times].map(([op, t]) => ({ op, calls: t.calls, share: t.ms / totalMs })).sort((a, b) => b.share - a.share);
  }
}

/**
 * The loop `olmoe sft|dpo|kto` share, with the structure of the pretraining loop (trainer.ts, whose metrics and
 * checkpoint helpers it uses): a method (sft-method.ts, preference-method.ts) turns each micro-batch of examples
 * into a forward/backward on the tape; the loop clips, steps the optimizer at the scheduled learning rate, logs a
 * metrics record every step and checkpoints every `checkpoint_every` steps, resuming exactly from `latest.json`.
 *
 * Data order is a function of (seed, step) alone: example k of the stream is permutation_{⌊k/n⌋}[k mod n] (one seeded
 * shuffle per epoch), and step s takes stream positions [s·B, (s+1)·B). A resumed run needs only the step.
 *
 * With `lora`, attachLora (lora-train.ts) freezes the base and its A/B matrices are the only parameters optimized and
 * checkpointed; the adapter is written in PEFT's layout.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, DivergedError, withIo } from '../../core/errors.js';
import { createRng } from '../../core/rng.js';
import type { TrainingBackend } from '../../core/training.js';
import { removeStaleStaging, stagingPath } from '../../io/atomic-file.js';
import { readJsonObject } from '../../io/json.js';
import { Tape } from '../../autograd/tape.js';
import { resolveModelPath } from '../../model/pretrained.js';
import { OlmoeTokenizer } from '../../tokenizer/tokenizer.js';
import { ADAPTER_DIR, LATEST, latestCheckpoint, loadOptimizer, loadParams, loadTrainable, loadTrainerState, pointLatest, readArchitecture, saveCheckpoint, type TrainerState } from '../checkpoint.js';
import { TrainRng } from '../init.js';
import type { TrainLogRecord } from '../metrics-log.js';
import { TrainModel, type LossWeights, type RoutingStats, type StepResult, type TrainBatch, type TrainParam } from '../model.js';
import { AdamW, clipGradNorm, RmsProp, type Optimizer } from '../optim.js';
import { appendMetrics, dropOlderOptimizerStates, keepMetricsUpTo, METRICS_FILE } from '../trainer.js';
import { loraSettings, type AdaptKind, type DpoConfig, type KtoConfig, type SftConfig } from './config.js';
import { attachLora, type LoraTraining } from './lora-train.js';

export type AdaptConfig = SftConfig | DpoConfig | KtoConfig;

/** What a method sees of the run when it prepares (data, reference pass) before the policy is loaded. */
export interface AdaptContext {
  readonly config: AdaptConfig;
  /** The starting checkpoint's local folder. */
  readonly modelPath: string;
  readonly tokenizer: OlmoeTokenizer;
  readonly backend: TrainingBackend;
  readonly say: (line: string) => void;
}

/** One micro-batch's contribution to a step. */
export interface MicroOutcome {
  /** The method's loss of this micro-batch, already weighted by its share of the step. */
  readonly loss: number;
  /** Tokens in the forward (padding included). */
  readonly tokens: number;
  /**
   * Method metrics, each already weighted by the micro-batch's share of the step (they sum to the step's). A metric a
   * micro-batch cannot have (KTO's rewards of a kind it holds no example of) is left out, and the step's value is
   * then the mean over the micro-batches that have it (their shares renormalized).
   */
  readonly metrics: Readonly<Record<string, number>>;
  /** This micro-batch's share of the step (needed when it leaves a metric out); default: the metrics sum as given. */
  readonly share?: number;
}

export interface AdaptMethod {
  /** Examples the data stream runs over (SFT sequences, preference pairs, KTO examples). */
  readonly examples: number;
  /** Hash of the encoded data (a resume must see the same). */
  readonly dataHash: string;
  /** Lines printed before training (data counts, reference pass). */
  readonly summary: readonly string[];
  /**
   * Forward and backward of the examples `micro[m]` (indices into the data) for every micro-batch of one step;
   * `run` does one forward/backward on the tape and hands back what the loop logs.
   */
  step(micro: readonly (readonly number[])[], run: (batch: TrainBatch) => StepResult): MicroOutcome[];
  /** Metrics on the held-out data (data.valid), by forwards without gradient; absent when there is none. */
  evaluate?(forward: (batch: TrainBatch) => StepResult): Record<string, number>;
}

export interface AdaptOptions {
  readonly kind: AdaptKind;
  readonly config: AdaptConfig;
  readonly backend: TrainingBackend;
  /** Continue from the out folder's latest checkpoint (an error if there is none). */
  readonly resume?: boolean;
  readonly say?: (line: string) => void;
  readonly onStep?: (record: AdaptLogRecord, totalSteps: number) => void;
  /** Tests: stop after this step as if killed (no final checkpoint). */
  readonly stopAfterStep?: number;
}

/** A metrics.jsonl record: the pretraining fields (plot-train reads them) and the method's metrics. */
export type AdaptLogRecord = TrainLogRecord & { readonly method: AdaptKind; readonly examples: number; readonly [metric: string]: unknown };

export interface AdaptSummary {
  readonly steps: number;
  readonly lastLoss: number;
  readonly checkpoint: string | null;
  readonly seconds: number;
  /** Where the final model (or adapter) was written. */
  readonly out: string;
}

/** Run (or resume) an adaptation with `prepare`'s method. */
export async function adapt(opts: AdaptOptions, prepare: (context: AdaptContext) => Promise<AdaptMethod>): Promise<AdaptSummary> {
  const { config, backend } = opts;
  const say = opts.say ?? (() => {});
  const modelPath = await resolveModelPath(config.model);
  const tokenizer = OlmoeTokenizer.fromFolder(modelPath);
  checkOutFolder(config.out, opts.resume === true); // before the reference pass, which may take minutes
  const method = await prepare({ config, modelPath, tokenizer, backend, say }); // the reference pass runs before the policy loads
  method.summary.forEach((line) => say(line));
  const run = openRun(opts, modelPath, method, say);
  const started = performance.now();
  let lastLoss = NaN;
  if (run.startStep === 0 && method.evaluate) evaluateHeldOut(run, method, 0, say); // the starting model's held-out numbers
  for (let step = run.startStep; step < run.totalSteps; step++) {
    const record = trainStep(run, method, step);
    lastLoss = record.loss;
    appendMetrics(run.metricsPath, record);
    opts.onStep?.(record, run.totalSteps);
    const done = step + 1;
    const due = (config.checkpoint_every && done % config.checkpoint_every === 0) || done === run.totalSteps;
    if (due && method.evaluate) evaluateHeldOut(run, method, done, say);
    if (due) writeCheckpoint(run, done, say);
    if (opts.stopAfterStep === done) break;
  }
  if (readLatestStep(run) === run.totalSteps) publishFinal(run, say);
  return { steps: run.totalSteps, lastLoss, checkpoint: latestCheckpoint(config.out), seconds: (performance.now() - started) / 1000, out: config.out };
}

interface Run {
  readonly kind: AdaptKind;
  readonly config: AdaptConfig;
  readonly backend: TrainingBackend;
  readonly model: TrainModel;
  /** What the optimizer updates: every parameter, or the adapter's. */
  readonly params: readonly TrainParam[];
  readonly lora: LoraTraining | null;
  readonly optimizer: Optimizer;
  readonly tokenizerJson: string;
  readonly chatTemplate?: string;
  readonly rng: { current: TrainRng };
  readonly metricsPath: string;
  readonly totalSteps: number;
  readonly fingerprint: string;
  readonly startStep: number;
  tokens: number;
}

function openRun(opts: AdaptOptions, modelPath: string, method: AdaptMethod, say: (line: string) => void): Run {
  const { config, backend, kind } = opts;
  if (method.examples === 0) throw new ConfigError('data.train', 'holds no usable example after max_length');
  const model = new TrainModel(readArchitecture(modelPath), backend);
  loadParams(model, modelPath);
  const rng = { current: new TrainRng(config.seed) };
  const lora = config.lora ? attachLora(model, loraSettings(config.lora, config.model), () => rng.current.next()) : null;
  const params = lora ? lora.params : model.params;
  if (lora) {
    say(`LoRA r ${config.lora!.r}, alpha ${config.lora!.alpha}: ${lora.trainableCount.toLocaleString('en-US')} trainable of ${lora.totalCount.toLocaleString('en-US')} parameters ` +
      `(${((100 * lora.trainableCount) / lora.totalCount).toFixed(3)} %) in ${lora.modules.length} modules: ${describeModules(lora.modules)}`);
  } else say(`full fine-tuning: ${params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0).toLocaleString('en-US')} trainable parameters`);
  const totalSteps = config.steps ?? Math.ceil((config.epochs * method.examples) / config.data.batch_size);
  if (config.steps === undefined && config.optimizer.warmup_steps >= totalSteps) {
    throw new ConfigError('optimizer.warmup_steps', `${config.optimizer.warmup_steps} must be less than the ${totalSteps} steps that epochs (${config.epochs}) × ${method.examples} examples ÷ batch_size (${config.data.batch_size}) give`);
  }
  const run: Run = {
    kind, config, backend, model, params, lora, optimizer: makeOptimizer(kind, config, backend, params), rng,
    tokenizerJson: withIo(join(modelPath, 'tokenizer.json'), 'read', () => readFileSync(join(modelPath, 'tokenizer.json'), 'utf8')),
    chatTemplate: chatTemplateOf(modelPath), metricsPath: join(config.out, METRICS_FILE), totalSteps,
    fingerprint: runFingerprint(kind, config, method.dataHash), startStep: 0, tokens: 0,
  };
  withIo(config.out, 'create folder', () => mkdirSync(config.out, { recursive: true }));
  for (const target of [LATEST, METRICS_FILE]) removeStaleStaging(join(config.out, target));
  return opts.resume ? resumeRun(run, say) : startRun(run);
}

function makeOptimizer(kind: AdaptKind, config: AdaptConfig, backend: TrainingBackend, params: readonly TrainParam[]): Optimizer {
  const o = config.optimizer;
  if (o.kind === 'rmsprop') return new RmsProp(backend, params, { alpha: o.alpha, eps: o.eps, weightDecay: o.weight_decay });
  if (o.kind !== 'adamw') throw new ConfigError('optimizer.kind', `"${o.kind}" is not an optimizer of ${kind}`);
  return new AdamW(backend, params, { beta1: o.betas[0], beta2: o.betas[1], eps: o.eps, weightDecay: o.weight_decay });
}

/** "q_proj, k_proj (16 layers)": adapted module kinds with how many of each. */
function describeModules(modules: readonly string[]): string {
  const kinds = new Map<string, number>();
  for (const name of modules) {
    const kind = name.replace(/^model\.layers\.\d+\./, '').replace(/\.experts\.\d+\./, '.experts.*.');
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([kind, n]) => `${kind} ×${n}`).join(', ');
}

/** The starting checkpoint's chat template, if its tokenizer_config.json has one (kept in what we write). */
function chatTemplateOf(modelPath: string): string | undefined {
  const path = join(modelPath, 'tokenizer_config.json');
  if (!existsSync(path)) return undefined;
  const template = readJsonObject(path).chat_template;
  return typeof template === 'string' ? template : undefined;
}

/** What a resume must share with the run: the method, every setting but where and how often it checkpoints, the data. */
function runFingerprint(kind: AdaptKind, config: AdaptConfig, dataHash: string): string {
  const { out: _out, checkpoint_every: _every, ...settings } = config;
  return createHash('sha256').update(JSON.stringify({ kind, settings, dataHash })).digest('hex').slice(0, 16);
}

/** A new run needs an out folder without one; a resume needs a checkpoint there. */
function checkOutFolder(out: string, resume: boolean): void {
  if (!resume && latestCheckpoint(out)) throw new ConfigError('out', `${out} already holds a run; resume it (--resume) or choose another folder`);
  if (resume && !latestCheckpoint(out)) throw new ConfigError('out', `${out} has no checkpoint to resume from (no latest.json)`);
}

function startRun(run: Run): Run {
  checkOutFolder(run.config.out, false);
  writeFileSync(run.metricsPath, '');
  writeFileSync(join(run.config.out, `${run.kind}-config.json`), JSON.stringify(run.config, null, 2) + '\n');
  return run;
}

function resumeRun(run: Run, say: (line: string) => void): Run {
  const { config } = run;
  checkOutFolder(config.out, true);
  const dir = latestCheckpoint(config.out)!;
  const state = loadTrainerState(dir);
  if (state.configHash !== run.fingerprint) throw new ConfigError('(root)', `does not match the run in ${config.out}: the model, data or settings changed since ${dir} was written`);
  if (run.lora) {
    loadTrainable(dir, run.params, run.backend);
    run.lora.dropoutPasses = savedDropoutPasses(state.data, dir);
  } else loadParams(run.model, dir);
  const saved = loadOptimizer(dir, run.params);
  run.optimizer.load({ step: saved.step, m: [...saved.m], v: [...saved.v] });
  run.rng.current = TrainRng.from(state.rng);
  keepMetricsUpTo(run.metricsPath, state.step);
  say(`resuming ${config.out} at step ${state.step} from ${dir}`);
  return { ...run, startStep: state.step, tokens: state.tokens };
}

function savedDropoutPasses(data: unknown, dir: string): number {
  const passes = (data as { dropoutPasses?: unknown } | null)?.dropoutPasses;
  if (!Number.isSafeInteger(passes) || (passes as number) < 0) throw new ConfigError('lora', `${dir} holds no LoRA dropout position: it was not written by a LoRA run`);
  return passes as number;
}

/** The examples of step `step`, cut into micro-batches (the last may be smaller when B does not divide evenly). */
export function stepExamples(step: number, opts: { examples: number; batchSize: number; microBatches: number; seed: number }): number[][] {
  const { examples: n, batchSize, microBatches } = opts;
  const indices: number[] = [];
  let order: number[] = [];
  let epoch = -1;
  for (let k = step * batchSize; k < (step + 1) * batchSize; k++) {
    if (Math.floor(k / n) !== epoch) order = epochOrder((epoch = Math.floor(k / n)), n, opts.seed);
    indices.push(order[k % n]!);
  }
  const size = Math.ceil(batchSize / microBatches);
  return Array.from({ length: microBatches }, (_, m) => indices.slice(m * size, (m + 1) * size)).filter((micro) => micro.length > 0);
}

/** The seeded shuffle of epoch `epoch` (Fisher–Yates). */
function epochOrder(epoch: number, n: number, seed: number): number[] {
  const rng = createRng(seed * 1_000_003 + epoch);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** lr(s): linear warmup as pretraining's (the last warmup step at the peak), then constant or linear to 0 at the end. */
export function adaptLearningRate(step: number, o: { peak: number; warmup: number; total: number; schedule: 'constant' | 'linear' }): number {
  if (step < o.warmup) return (o.peak * (step + 1)) / o.warmup;
  if (o.schedule === 'constant') return o.peak;
  return o.peak * Math.max(0, (o.total - step) / (o.total - o.warmup));
}

/** Sums of routing statistics over a step's micro-batches. */
class RoutingTally {
  counts: Float64Array[] = [];
  entropy: number[] = [];
  forwards = 0;

  add(layers: readonly RoutingStats[]): void {
    layers.forEach((layer, l) => {
      this.counts[l] ??= new Float64Array(layer.counts.length);
      layer.counts.forEach((c, e) => (this.counts[l]![e]! += c));
      this.entropy[l] = (this.entropy[l] ?? 0) + layer.entropy;
    });
    this.forwards++;
  }
}

function trainStep(run: Run, method: AdaptMethod, step: number): AdaptLogRecord {
  const { config, model, backend } = run;
  const started = performance.now();
  for (const p of run.params) backend.fill(p.grad, 0);
  const micro = stepExamples(step, { examples: method.examples, batchSize: config.data.batch_size, microBatches: config.data.micro_batches, seed: config.seed });
  const tally = new RoutingTally();
  // Auxiliary load balancing (SFT only; 0 = off) averaged over micro-batches like pretraining's.
  const weights: LossWeights = { loadBalancing: ('load_balancing' in config ? config.load_balancing : 0) / micro.length, routerZ: 0 };
  let lbl = 0;
  const forwardBackward = (batch: TrainBatch): StepResult => {
    const tape = new Tape(backend);
    const result = model.forward(tape, batch, weights);
    if (!Number.isFinite(result.total)) throw new DivergedError(`loss is ${result.total} at step ${step + 1}; the last good checkpoint is ${latestCheckpoint(config.out) ?? '(none yet)'}`);
    tape.backward(result.loss); // the method's token weights already carry each micro-batch's share of the step
    tape.release();
    tally.add(result.layers);
    lbl += result.loadBalancing;
    return result;
  };
  const diverged = (what: string) => `${what} at step ${step + 1}; the last good checkpoint is ${latestCheckpoint(config.out) ?? '(none yet)'}`;
  let outcomes: MicroOutcome[];
  try {
    outcomes = method.step(micro, forwardBackward);
  } catch (e) {
    if (e instanceof DivergedError && !/ at step \d+;/.test(e.message)) throw new DivergedError(diverged(e.message));
    throw e;
  }
  const { norm: gradNorm, scale } = clipGradNorm(backend, run.params, config.optimizer.clip);
  if (!Number.isFinite(gradNorm)) throw new DivergedError(`gradient norm is ${gradNorm} at step ${step + 1}; the last good checkpoint is ${latestCheckpoint(config.out) ?? '(none yet)'}`);
  const lr = adaptLearningRate(step, { peak: config.optimizer.lr, warmup: config.optimizer.warmup_steps, total: run.totalSteps, schedule: config.optimizer.schedule });
  run.optimizer.step(lr, scale);
  const tokens = outcomes.reduce((sum, o) => sum + o.tokens, 0);
  run.tokens += tokens;
  const loss = outcomes.reduce((sum, o) => sum + o.loss, 0);
  const metrics: Record<string, number> = {};
  const shares: Record<string, number> = {};
  for (const o of outcomes) {
    for (const [key, value] of Object.entries(o.metrics)) {
      metrics[key] = (metrics[key] ?? 0) + value;
      shares[key] = (shares[key] ?? 0) + (o.share ?? 1);
    }
  }
  // Renormalize a metric that some micro-batches left out (shares given and summing below 1).
  if (outcomes.every((o) => o.share !== undefined)) for (const key of Object.keys(metrics)) if (shares[key]! > 0) metrics[key]! /= shares[key]!;
  return {
    kind: 'train', method: run.kind, step: step + 1, examples: micro.reduce((n, m) => n + m.length, 0), tokens: run.tokens, loss, ce: loss, lbl, zloss: 0, lr, gradNorm,
    tokensPerSecond: tokens / ((performance.now() - started) / 1000),
    expertLoad: tally.counts.map((c) => Array.from(c, (v) => round(v / c.reduce((a, b) => a + b, 0)))),
    routingEntropy: tally.entropy.map((e) => round(e / tally.forwards)),
    ...Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k, round(v)])),
  };
}

/** The method's held-out metrics into metrics.jsonl (kind "adapt-valid") and a line. */
function evaluateHeldOut(run: Run, method: AdaptMethod, step: number, say: (line: string) => void): void {
  const metrics = method.evaluate!((batch) => run.model.forward(run.backend, batch, { loadBalancing: 0, routerZ: 0 }));
  appendMetrics(run.metricsPath, { kind: 'adapt-valid', method: run.kind, step, ...Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k, round(v)])) });
  say(`  held-out @${step}: ${Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}`);
}

function round(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

function writeCheckpoint(run: Run, step: number, say: (line: string) => void): void {
  const { config } = run;
  const name = `checkpoints/step-${String(step).padStart(6, '0')}`;
  const saved = run.optimizer.state();
  // LoRA dropout masks are drawn per training pass: the count goes with the data position so a resume continues them.
  const data = { step, ...(run.lora && { dropoutPasses: run.lora.dropoutPasses }) };
  const state: TrainerState = { step, tokens: run.tokens, data, rng: run.rng.current.state(), configHash: run.fingerprint };
  withIo(join(config.out, 'checkpoints'), 'create folder', () => mkdirSync(join(config.out, 'checkpoints'), { recursive: true }));
  saveCheckpoint(join(config.out, name), {
    model: run.model, tokenizerJson: run.tokenizerJson, chatTemplate: run.chatTemplate, optimizer: saved, state,
    ...(run.lora && { adapter: { params: run.params, save: (dir: string) => run.lora!.save(dir) } }),
  });
  pointLatest(config.out, { step, checkpoint: name });
  dropOlderOptimizerStates(config.out, name);
  say(`checkpoint ${name}`);
}

function readLatestStep(run: Run): number | null {
  const dir = latestCheckpoint(run.config.out);
  return dir ? loadTrainerState(dir).step : null;
}

/** Files of the final checkpoint that make `out` a model folder (or, with LoRA, a PEFT adapter folder). */
const MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'];
const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'];

/**
 * Make `out` itself loadable (`olmoe generate/chat/eval out`): each file of the final checkpoint is hard-linked
 * (copied where links fail) beside it and renamed into place, so a kill leaves each file old or new, never cut.
 */
function publishFinal(run: Run, say: (line: string) => void): void {
  const dir = latestCheckpoint(run.config.out)!;
  const [from, files] = run.lora ? [join(dir, ADAPTER_DIR), ADAPTER_FILES] : [dir, MODEL_FILES];
  for (const file of files) {
    const target = join(run.config.out, file);
    const staging = stagingPath(target);
    rmSync(staging, { force: true });
    withIo(target, 'write', () => {
      try {
        linkSync(join(from, file), staging);
      } catch {
        copyFileSync(join(from, file), staging);
      }
      renameSync(staging, target);
    });
  }
  say(`${run.lora ? 'adapter' : 'model'} written to ${run.config.out}`);
}

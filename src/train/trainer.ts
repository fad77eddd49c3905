/**
 * The training loop: packed batches → forward/backward on the tape (gradient accumulation over micro-batches)
 * → global-norm clipping → AdamW at the scheduled learning rate; metrics JSONL every step, validation and
 * checkpoints every N steps, exact resume from `latest.json`. A non-finite loss or gradient stops the run with
 * the last good checkpoint intact.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { AtomicFile, removeStaleStaging, writeStep } from '../io/atomic-file.js';
import { join } from 'node:path';
import { ConfigError, DivergedError, FormatError, withIo } from '../core/errors.js';
import { parseConfig, type OlmoeConfig } from '../model/config.js';
import { Tape } from '../autograd/tape.js';
import type { TrainingBackend } from '../core/training.js';
import { LATEST, latestCheckpoint, loadOptimizer, loadParams, loadTrainerState, OPTIMIZER_FILE, pointLatest, readLatest, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { resumeFingerprint, type TrainConfig } from './config.js';
import { PackedLoader } from './data/packed-loader.js';
import { readShardsFor, type TokenShard } from './data/shard.js';
import { truncatedNormal, TrainRng } from './init.js';
import type { TaskLogRecord, TrainLogRecord, ValidLogRecord } from './metrics-log.js';
import { openInLoopEval, type InLoopEval } from './in-loop-eval.js';
import { TrainModel, type LossWeights } from './model.js';
import { AdamW, clipGradNorm } from './optim.js';
import { learningRate } from './schedule.js';
import { upcycleFrom } from './upcycle.js';
import { evaluate, tokenByteLengths, unigramScores } from './evaluate.js';

export interface TrainOptions {
  readonly config: TrainConfig;
  /** Where the model, its gradients and the optimizer state live and compute. */
  readonly backend: TrainingBackend;
  /** Continue from the run folder's latest checkpoint (an error if there is none). */
  readonly resume?: boolean;
  readonly onStep?: (record: TrainLogRecord) => void;
  readonly onEval?: (records: readonly ValidLogRecord[]) => void;
  readonly say?: (line: string) => void;
  /** Tests: end the process's work after this step as if killed (no final checkpoint). */
  readonly stopAfterStep?: number;
  /** Tests: checkpoint writes fail like a full disk after this many bytes. */
  readonly failCheckpointAfterBytes?: number;
  readonly onTasks?: (records: readonly TaskLogRecord[]) => void;
}

export interface TrainSummary {
  readonly steps: number;
  readonly tokens: number;
  readonly checkpoint: string | null;
  readonly lastLoss: number;
  readonly seconds: number;
}

export const METRICS_FILE = 'metrics.jsonl';
export const EXPORT_DIR = 'export';

/** Run (or resume) the training a config describes. */
export async function train(opts: TrainOptions): Promise<TrainSummary> {
  const inLoop = await openInLoopEval(opts.config, opts.backend, opts.say); // a bad task file stops the run before it starts
  const run = prepareRun(opts);
  const { config } = run;
  const started = performance.now();
  let lastLoss = NaN;
  for (let step = run.startStep; step < config.steps; step++) {
    const record = trainStep(run, step);
    lastLoss = record.loss;
    run.tokens = record.tokens;
    appendMetrics(run.metricsPath, record);
    opts.onStep?.(record);
    const done = step + 1;
    if (config.eval_every && done % config.eval_every === 0) runEvaluation(run, done, opts);
    if (inLoop?.due(done)) await runTaskEvaluation(run, inLoop, done, opts);
    if ((config.checkpoint_every && done % config.checkpoint_every === 0) || done === config.steps) writeCheckpoint(run, done, opts);
    if (opts.stopAfterStep === done) break;
  }
  if (run.startStep >= config.steps) finishRun(run, opts);
  return { steps: config.steps, tokens: run.tokens, checkpoint: latestCheckpoint(config.out), lastLoss, seconds: (performance.now() - started) / 1000 };
}

interface Run {
  readonly config: TrainConfig;
  readonly model: TrainModel;
  readonly optimizer: AdamW;
  readonly trainShards: readonly TokenShard[];
  readonly loader: PackedLoader;
  readonly valid: PackedLoader | null;
  readonly backend: TrainingBackend;
  readonly tokenizerJson: string;
  readonly tokenBytes: Float64Array;
  readonly rng: TrainRng;
  readonly metricsPath: string;
  readonly startStep: number;
  readonly weights: LossWeights;
  tokens: number;
}

/** The model, data and loss settings of a config (no files written): shared by training and `--bench`. */
export function buildRun(config: TrainConfig, backend: TrainingBackend) {
  backend.setMatmulPrecision(config.precision);
  const tokenizerJson = withIo(config.tokenizer, 'read', () => readFileSync(config.tokenizer, 'utf8'));
  const modelConfig = modelConfigFor(config, tokenizerJson);
  const model = new TrainModel({ config: modelConfig, routing: config.model.routing, capacityFactor: config.model.capacity_factor }, backend);
  // Truncated-normal init from the seed (a resumed run then overwrites it with the checkpoint).
  const rng = new TrainRng(config.seed);
  model.initialize((values) => truncatedNormal(values as Float32Array, config.model.init_std, () => rng.next()));
  const shards = (paths: readonly string[]) => readShardsFor(paths, tokenizerJson, modelConfig.vocabSize);
  const loaderOptions = { seqLen: config.data.sequence_length, batchSize: config.data.batch_size, seed: config.seed };
  const trainShards = shards(config.data.train);
  const loader = new PackedLoader(trainShards, loaderOptions);
  const valid = config.data.valid.length ? new PackedLoader(shards(config.data.valid), loaderOptions) : null;
  const weights: LossWeights = { loadBalancing: config.loss.load_balancing, routerZ: config.loss.router_z };
  return { tokenizerJson, model, trainShards, loader, valid, weights, backend, rng, tokenBytes: tokenByteLengths(tokenizerJson, modelConfig.vocabSize) };
}

function prepareRun(opts: TrainOptions): Run {
  const { config } = opts;
  const built = buildRun(config, opts.backend);
  const [beta1, beta2] = config.optimizer.betas;
  const optimizer = new AdamW(opts.backend, built.model.params, { beta1, beta2, eps: config.optimizer.eps, weightDecay: config.optimizer.weight_decay });
  withIo(config.out, 'create folder', () => mkdirSync(config.out, { recursive: true }));
  for (const target of [LATEST, METRICS_FILE, EXPORT_DIR]) removeStaleStaging(join(config.out, target));
  const run: Run = { ...built, config, optimizer, metricsPath: join(config.out, METRICS_FILE), startStep: 0, tokens: 0 };
  return opts.resume ? resumeRun(run, opts) : startRun(run, opts);
}

function startRun(run: Run, opts: TrainOptions): Run {
  const { config } = run;
  if (latestCheckpoint(config.out)) throw new ConfigError('out', `${config.out} already holds a run; resume it (--resume) or choose another folder`);
  if (config.model.upcycle_from) upcycleFrom(run.model, config.model.upcycle_from, opts.say);
  writeFileSync(run.metricsPath, '');
  if (run.valid) {
    const baseline = unigramScores(run.trainShards, run.valid, { batches: config.eval_batches, tokenBytes: run.tokenBytes });
    writeFileSync(join(config.out, 'baseline.json'), JSON.stringify({ kind: 'unigram', scores: baseline }, null, 2) + '\n');
    opts.say?.(`unigram baseline (validation): ${baseline.map((b) => `${b.domain} ${b.crossEntropy.toFixed(3)}`).join(', ')}`);
  }
  writeFileSync(join(config.out, 'train-config.json'), JSON.stringify(config, null, 2) + '\n');
  return run;
}

function resumeRun(run: Run, opts: TrainOptions): Run {
  const { config, model, optimizer, loader } = run;
  const dir = latestCheckpoint(config.out);
  if (!dir) throw new ConfigError('out', `${config.out} has no checkpoint to resume from (no latest.json)`);
  const state = loadTrainerState(dir);
  if (state.configHash !== resumeFingerprint(config)) {
    throw new ConfigError('(root)', `does not match the run in ${config.out}: model, data, optimizer, loss or seed changed since ${dir} was written`);
  }
  loadParams(model, dir);
  const saved = loadOptimizer(dir, model.params);
  optimizer.load({ step: saved.step, m: [...saved.m], v: [...saved.v] });
  loader.restore(state.data);
  keepMetricsUpTo(run.metricsPath, state.step);
  opts.say?.(`resuming ${config.out} at step ${state.step} from ${dir}`);
  return { ...run, startStep: state.step, rng: TrainRng.from(state.rng), tokens: state.tokens };
}

/** The OLMoE config of the run: the model section plus the tokenizer's vocabulary and special tokens. */
export function modelConfigFor(config: TrainConfig, tokenizerJson: string): OlmoeConfig {
  const { vocabSize, eos, pad } = vocabularyOf(tokenizerJson, config.tokenizer);
  const m = config.model;
  return parseConfig({
    model_type: 'olmoe', vocab_size: vocabSize, hidden_size: m.hidden_size, intermediate_size: m.intermediate_size,
    num_hidden_layers: m.num_hidden_layers, num_attention_heads: m.num_attention_heads, num_key_value_heads: m.num_key_value_heads,
    num_experts: m.num_experts, num_experts_per_tok: m.num_experts_per_tok, shared_expert_intermediate_size: m.shared_expert_intermediate_size, norm_topk_prob: m.norm_topk_prob, rms_norm_eps: m.rms_norm_eps,
    rope_theta: m.rope_theta, max_position_embeddings: m.max_position_embeddings ?? config.data.sequence_length,
    eos_token_id: eos, pad_token_id: pad, tie_word_embeddings: false, torch_dtype: 'float32',
  });
}

function vocabularyOf(tokenizerJson: string, file: string): { vocabSize: number; eos: number | null; pad: number | null } {
  let json: { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number; content: string }[] };
  try {
    json = JSON.parse(tokenizerJson);
  } catch (error) {
    throw new FormatError(file, `not valid JSON (${(error as Error).message})`);
  }
  const ids = [...Object.values(json.model?.vocab ?? {}), ...(json.added_tokens ?? []).map((t) => t.id)];
  if (!ids.length) throw new FormatError(file, 'has no vocabulary (model.vocab)');
  const special = (content: string) => json.added_tokens?.find((t) => t.content === content)?.id ?? null;
  return { vocabSize: Math.max(...ids) + 1, eos: special('<|endoftext|>'), pad: special('<|padding|>') };
}

/** One optimizer step: accumulate over micro-batches, clip, update. Returns the step's metrics record. */
function trainStep(run: Run, step: number): TrainLogRecord {
  const { config, model, optimizer, loader } = run;
  const started = performance.now();
  model.zeroGrads();
  const micro = config.data.micro_batches;
  const sums = { loss: 0, ce: 0, lbl: 0, z: 0, tokens: 0 };
  const { numLayers, numExperts } = model.arch.config;
  const counts = Array.from({ length: numLayers }, () => new Float64Array(numExperts)); // routed slots per expert
  const entropy = new Float64Array(numLayers);
  for (let m = 0; m < micro; m++) {
    const batch = loader.nextBatch();
    const tape = new Tape(run.backend);
    const result = model.forward(tape, { tokens: batch.tokens, sequences: batch.rows }, run.weights);
    const loss = result.total;
    if (!Number.isFinite(loss)) throw new DivergedError(`loss is ${loss} at step ${step + 1} (micro-batch ${m + 1}); the last good checkpoint is ${latestCheckpoint(config.out) ?? '(none yet)'}`);
    tape.backward(result.loss, 1 / micro); // OLMo divides each micro-batch's losses by their number
    tape.release(); // the step's activations and gradients go back to the backend for the next micro-batch
    sums.loss += loss / micro;
    sums.ce += result.crossEntropy / micro;
    sums.lbl += result.loadBalancing / micro;
    sums.z += result.routerZ / micro;
    sums.tokens += batch.rows * batch.seqLen;
    result.layers.forEach((layer, l) => {
      layer.counts.forEach((c, e) => (counts[l]![e]! += c));
      entropy[l]! += layer.entropy / micro;
    });
  }
  const { norm: gradNorm, scale } = clipGradNorm(run.backend, model.params, config.optimizer.clip);
  if (!Number.isFinite(gradNorm)) throw new DivergedError(`gradient norm is ${gradNorm} at step ${step + 1}; the last good checkpoint is ${latestCheckpoint(config.out) ?? '(none yet)'}`);
  const lr = learningRate(step, { peakLr: config.optimizer.lr, warmupSteps: config.optimizer.warmup_steps, totalSteps: config.steps, finalLrRatio: config.optimizer.final_lr_ratio });
  optimizer.step(lr, scale);
  const seconds = (performance.now() - started) / 1000;
  return {
    kind: 'train', step: step + 1, tokens: run.tokens + sums.tokens, loss: sums.loss, ce: sums.ce, lbl: sums.lbl, zloss: sums.z, lr, gradNorm,
    tokensPerSecond: sums.tokens / seconds,
    expertLoad: counts.map((c) => Array.from(c, (v) => round(v / c.reduce((a, b) => a + b, 0)))),
    routingEntropy: Array.from(entropy, round),
  };
}

function round(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

function runEvaluation(run: Run, step: number, opts: TrainOptions): void {
  if (!run.valid) return;
  const records = evaluate(run.model, run.valid, { batches: run.config.eval_batches, tokenBytes: run.tokenBytes }).map(
    (r): ValidLogRecord => ({ kind: 'valid', step, tokens: run.tokens, domain: r.domain, ce: r.crossEntropy, bitsPerByte: r.bitsPerByte }),
  );
  records.forEach((record) => appendMetrics(run.metricsPath, record));
  opts.onEval?.(records);
}

/** In-loop task accuracies (in-loop-eval.ts) into metrics.jsonl, before the step's checkpoint like validation. */
async function runTaskEvaluation(run: Run, inLoop: InLoopEval, step: number, opts: TrainOptions): Promise<void> {
  const records = await inLoop.run(run.model, step, run.tokens);
  records.forEach((record) => appendMetrics(run.metricsPath, record));
  opts.onTasks?.(records);
}

/**
 * Checkpoint, then point latest.json at it, then (at the end) the export, then record the export in latest.json:
 * whatever step a kill interrupts, latest.json names a complete checkpoint, and a resume redoes the rest.
 */
function writeCheckpoint(run: Run, step: number, opts: TrainOptions): void {
  const { config, model, optimizer } = run;
  const name = `checkpoints/step-${String(step).padStart(6, '0')}`;
  const saved = optimizer.state();
  const state: TrainerState = { step, tokens: run.tokens, data: run.loader.state(), rng: run.rng.state(), configHash: resumeFingerprint(config) };
  withIo(join(config.out, 'checkpoints'), 'create folder', () => mkdirSync(join(config.out, 'checkpoints'), { recursive: true }));
  saveCheckpoint(join(config.out, name), {
    model, tokenizerJson: run.tokenizerJson, optimizer: { step: saved.step, m: saved.m, v: saved.v }, state, failAfterBytes: opts.failCheckpointAfterBytes,
  });
  pointLatest(config.out, { step, checkpoint: name });
  dropOlderOptimizerStates(config.out, name);
  if (step === config.steps) writeExport(run, { step, checkpoint: name });
  opts.say?.(`checkpoint ${name}`);
}

/** A resumed run with no steps left: write what a kill after its last checkpoint left undone. */
function finishRun(run: Run, opts: TrainOptions): void {
  const latest = readLatest(run.config.out)!;
  dropOlderOptimizerStates(run.config.out, latest.checkpoint);
  const exportDue = run.config.export_dtype !== undefined && latest.step === run.config.steps && latest.exported !== run.config.export_dtype;
  if (!exportDue) return;
  writeExport(run, latest);
  opts.say?.(`${EXPORT_DIR}/ written from ${latest.checkpoint} (it was missing)`);
}

function writeExport(run: Run, latest: { step: number; checkpoint: string }): void {
  const dtype = run.config.export_dtype;
  if (!dtype) return;
  saveCheckpoint(join(run.config.out, EXPORT_DIR), { model: run.model, tokenizerJson: run.tokenizerJson, dtype });
  pointLatest(run.config.out, { ...latest, exported: dtype });
}

/** Older checkpoints keep their weights (router-saturation analysis reads them) but not their optimizer state. */
export function dropOlderOptimizerStates(runDir: string, latest: string): void {
  const dir = join(runDir, 'checkpoints');
  const names = existsSync(dir) ? readdirSync(dir).filter((n) => /^step-\d+$/.test(n) && `checkpoints/${n}` !== latest) : [];
  for (const name of names) {
    const path = join(dir, name, OPTIMIZER_FILE);
    if (!existsSync(path)) continue;
    writeStep();
    withIo(path, 'remove', () => rmSync(path));
  }
}

export function appendMetrics(path: string, record: TrainLogRecord | ValidLogRecord | TaskLogRecord | Record<string, unknown>): void {
  withIo(path, 'append to', () => appendFileSync(path, JSON.stringify(record, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n'));
}

/** A resumed run rewrites the steps after its checkpoint: drop their records (a killed run may have logged them). */
export function keepMetricsUpTo(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => {
      if (!line.trim()) return false;
      try {
        return (JSON.parse(line) as { step: number }).step <= step;
      } catch {
        return false; // a line cut short by the kill
      }
    });
  const file = new AtomicFile(path);
  file.write(Buffer.from(kept.map((line) => line + '\n').join('')));
  file.finish();
}

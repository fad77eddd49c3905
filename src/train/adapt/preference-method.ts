/**
 * DPO (dpo, dpo_norm, simpo) and KTO as adaptation methods (run.ts). The reference model's sequence log-probs are
 * computed once, before the policy is loaded, through the inference path (model/olmoe.ts, teacher-forced scoring of
 * the evaluation harness) and cached on disk (reference-cache.ts, keyed by a hash of every byte of the model's
 * tensors and of the encoded data, so a change of either computes them anew).
 *
 * A step's micro-batch is ONE forward over its rows — DPO: the chosen then the rejected sequences of its pairs; KTO:
 * its examples then their mismatched KL sequences — padded to the longest. The policy's sequence log-prob is
 * −Σ nll over the completion's tokens, so the sequence loss (losses.ts) backpropagates as a cross-entropy with
 * per-token weights w_t = −∂L/∂log p(sequence of t) (the weightedCrossEntropy op, whose weights the host computes
 * from the forward's own per-token values). KTO's KL rows get weight 0: the reference point is detached (TRL).
 */
import { DivergedError, InputError } from '../../core/errors.js';
import { modelContentHash } from '../../model/fingerprint.js';
import { loadModel } from '../../model/load.js';
import { join } from 'node:path';
import type { StepResult, TrainBatch } from '../model.js';
import { makeBatch, padRows } from './batching.js';
import type { DpoConfig, KtoConfig } from './config.js';
import type { EncodedSequence } from './encode.js';
import { readRecords } from './jsonl.js';
import { ktoKlEstimate, ktoLoss, preferenceLoss, type KtoLossOptions, type KtoLossResult, type PairLogprobs, type PreferenceLossOptions, type PreferenceLossResult } from './losses.js';
import { encodeKto, encodePreferences } from './preference.js';
import { parseKtoRecords, parsePreferenceRecord, type KtoRecord, type PreferenceRecord } from './records.js';
import { dataFingerprint, referenceLogprobs, type SequenceLogprob } from './reference-cache.js';
import type { AdaptContext, AdaptMethod, MicroOutcome } from './run.js';
import { padIdOf, trainBatch } from './sft-method.js';

/** The reference log-probs of `sequences` from the cache, scoring what is missing; a progress line every ~10 %. */
async function referencePass(context: AdaptContext, sequences: readonly EncodedSequence[], cacheDir: string): Promise<{ values: SequenceLogprob[]; line: string }> {
  const started = performance.now();
  const fingerprint = modelContentHash(context.modelPath); // any changed weight opens another cache file
  let next = 0.1;
  // The exact (f32) KV cache: the policy's training forward keeps no cache, so a rounded one would shift every reward.
  const reference = await loadModel(context.modelPath, { backend: context.backend, kvCache: 'f32' });
  const result = await referenceLogprobs(reference, sequences, {
    dir: cacheDir, modelFingerprint: fingerprint,
    onProgress: (done, total) => {
      if (done / total < next) return;
      context.say(`reference log-probs: ${done}/${total} sequences`);
      next = Math.floor((done / total) * 10 + 1) / 10;
    },
  });
  const seconds = (performance.now() - started) / 1000;
  const line = `reference log-probs of ${sequences.length} sequences: ${result.computed} computed, ${result.cached} from the cache ${result.path} (${seconds.toFixed(1)} s)`;
  return { values: result.values, line };
}

/** Per-row policy log-probs from the forward's per-token nll: −Σ over the row's targets. */
function rowLogprobs(nll: Float64Array, targets: Int32Array, rows: number): Float64Array {
  const length = targets.length / rows;
  const sums = new Float64Array(rows);
  for (let t = 0; t < targets.length; t++) if (targets[t]! >= 0) sums[Math.floor(t / length)]! -= nll[t]!;
  return sums;
}

/**
 * DPO's per-row token weights for rows [chosen_0..chosen_{n-1}, rejected_0..rejected_{n-1}] from the policy's row
 * log-probs; `reference` holds each pair's chosen then rejected value. log p = −Σ nll, so w = −share·∂L/∂log p.
 */
export function dpoRowWeights(logps: Float64Array, reference: readonly SequenceLogprob[], options: PreferenceLossOptions, share = 1): { weights: Float64Array; loss: PreferenceLossResult } {
  const n = logps.length / 2;
  const pairs: PairLogprobs[] = Array.from({ length: n }, (_, k) => ({
    policyChosen: logps[k]!, policyRejected: logps[n + k]!,
    referenceChosen: reference[2 * k]!.logprob, referenceRejected: reference[2 * k + 1]!.logprob,
    chosenTokens: reference[2 * k]!.tokens, rejectedTokens: reference[2 * k + 1]!.tokens,
  }));
  const loss = preferenceLoss(pairs, options);
  return { weights: Float64Array.from([...loss.gradChosen, ...loss.gradRejected], (g) => -share * g), loss };
}

/**
 * KTO's per-row token weights for rows [example_0..example_{n-1}, kl_0..kl_{n-1}]; `reference` holds each
 * example's value then its KL sequence's. The reference point comes from the rows' mismatched pairs and is a
 * constant of the backward (TRL detaches it): the KL rows weigh 0.
 */
export function ktoRowWeights(logps: Float64Array, reference: readonly SequenceLogprob[], labels: readonly boolean[], options: Omit<KtoLossOptions, 'kl'>, share = 1): { weights: Float64Array; loss: KtoLossResult } {
  const n = labels.length;
  const kl = ktoKlEstimate(Array.from(logps.subarray(n)), labels.map((_, k) => reference[2 * k + 1]!.logprob));
  const loss = ktoLoss(labels.map((label, k) => ({ policy: logps[k]!, reference: reference[2 * k]!.logprob, label })), { ...options, kl });
  return { weights: Float64Array.from({ length: 2 * n }, (_, row) => (row < n ? -share * loss.grad[row]! : 0)), loss };
}

/** One padded forward over `members`, with weights per row from `rowWeights(policy log-probs)`; returns the step result. */
export function forwardRows(members: readonly EncodedSequence[], padId: number, run: (batch: TrainBatch) => StepResult, rowWeights: (logps: Float64Array) => Float64Array): StepResult {
  const laid = makeBatch(padRows(members.length), members, { width: 'longest', padId });
  const { batch } = trainBatch(laid, () => 1, false);
  const targets = batch.targets!;
  const length = targets.length / laid.rows;
  return run({
    ...batch,
    tokenWeights: (nll) => {
      const perRow = rowWeights(rowLogprobs(nll, targets, laid.rows));
      return Float64Array.from(targets, (target, t) => (target >= 0 ? perRow[Math.floor(t / length)]! : 0));
    },
  });
}

const tokensOf = (s: EncodedSequence) => s.lossMask.reduce((n, bit) => n + bit, 0);

async function readAll<T>(files: readonly string[], parse: (record: Record<string, unknown>, source: { file: string; line: number }) => T | T[]): Promise<T[]> {
  const out: T[] = [];
  for (const file of files) for (const r of await readRecords(file, parse)) out.push(...(Array.isArray(r) ? r : [r]));
  return out;
}

export async function prepareDpo(context: AdaptContext): Promise<AdaptMethod> {
  const config = context.config as DpoConfig;
  const records = await readAll<PreferenceRecord>(config.data.train, parsePreferenceRecord);
  const { pairs, stats, warnings } = encodePreferences(context.tokenizer, records, { maxLength: config.data.max_length, policy: config.data.overflow });
  warnings.slice(0, 5).forEach((w) => context.say(`warning: ${w}`));
  if (warnings.length > 5) context.say(`warning: ... and ${warnings.length - 5} more`);
  const sequences = pairs.flatMap((p) => [p.chosen, p.rejected]);
  const summary = [
    `dpo data: ${records.length} pairs read, ${stats.pairs} kept; ${stats.identical} with chosen identical to rejected left out (warned), ` +
      `${stats.truncated} truncated and ${stats.dropped + stats.droppedNoTarget} dropped at max_length ${config.data.max_length}; loss ${config.loss}, β ${config.beta}`,
  ];
  if (pairs.length === 0) throw new InputError(`${config.data.train.join(', ')}: no preference pair left to train on`);
  let reference: SequenceLogprob[] = sequences.map((s) => ({ logprob: 0, tokens: tokensOf(s) }));
  if (config.loss !== 'simpo') {
    const pass = await referencePass(context, sequences, config.reference_cache ?? join(config.out, 'reference-cache'));
    reference = pass.values;
    summary.push(pass.line);
  }
  const padId = padIdOf(context.tokenizer);
  const options = { type: config.loss, beta: config.beta, labelSmoothing: config.label_smoothing, ...(config.gamma !== undefined && { gamma: config.gamma }) };
  const held = config.data.valid.length ? await heldOutPairs(context, config, summary) : null;
  return {
    ...(held && {
      evaluate(forward): Record<string, number> {
        // The DPO metrics over every held-out pair (TRL's eval_ metrics), one padded forward per batch.
        const sums: Record<string, number> = {};
        const n = held.sequences.length / 2;
        for (let at = 0; at < n; at += config.data.batch_size) {
          const pairs = Array.from({ length: Math.min(config.data.batch_size, n - at) }, (_, k) => at + k);
          const members = [...pairs.map((i) => held.sequences[2 * i]!), ...pairs.map((i) => held.sequences[2 * i + 1]!)];
          forwardRows(members, padId, forward, (logps) => {
            const { loss } = dpoRowWeights(logps, pairs.flatMap((i) => [held.reference[2 * i]!, held.reference[2 * i + 1]!]), options);
            const share = pairs.length / n;
            for (const [key, value] of Object.entries({ loss: loss.loss, ...loss.metrics })) sums[key] = (sums[key] ?? 0) + share * value;
            return new Float64Array(logps.length);
          });
        }
        return sums;
      },
    }),
    examples: pairs.length,
    dataHash: dataFingerprint(sequences),
    summary,
    step: (micro, run) =>
      rowSteps(micro, run, padId, (i) => [pairs[i]!.chosen, pairs[i]!.rejected], (logps, indices, share) =>
        dpoRowWeights(logps, indices.flatMap((i) => [reference[2 * i]!, reference[2 * i + 1]!]), options, share)),
  };
}

/**
 * A step of a method that scores two rows per example (DPO: chosen and rejected; KTO: the completion and its KL
 * partner): each micro-batch's first rows, then its second rows, in one forward; `weigh` turns their log-probs into
 * per-row loss weights and the micro-batch's loss, which is scaled by its share of the step.
 */
function rowSteps(
  micro: readonly (readonly number[])[],
  run: (batch: TrainBatch) => StepResult,
  padId: number,
  rowsOf: (example: number) => readonly [EncodedSequence, EncodedSequence],
  weigh: (logps: Float64Array, indices: readonly number[], share: number) => { weights: Float64Array; loss: { loss: number; metrics: object } },
): MicroOutcome[] {
  const total = micro.reduce((n, m) => n + m.length, 0);
  return micro.map((indices) => {
    const share = indices.length / total;
    const members = [...indices.map((i) => rowsOf(i)[0]), ...indices.map((i) => rowsOf(i)[1])];
    let outcome: { loss: number; metrics: object } | null = null;
    const result = forwardRows(members, padId, run, (logps) => {
      const bad = logps.findIndex((v) => !Number.isFinite(v));
      // Non-finite log-probs mean the policy's weights diverged: the trainer's DivergedError, not a data error.
      if (bad >= 0) throw new DivergedError(`the policy's log-probability of sequence ${bad + 1} of a micro-batch is ${logps[bad]}`);
      const rows = weigh(logps, indices, share);
      outcome = rows.loss;
      return rows.weights;
    });
    const done = outcome as { loss: number; metrics: object } | null;
    if (!done) throw new InputError('the forward gave no per-token values');
    const metrics = Object.fromEntries(Object.entries(done.metrics as Record<string, number>).map(([k, v]) => [k, share * v]));
    return { loss: share * done.loss, tokens: result.logits.shape[0]!, metrics, share };
  });
}

/** data.valid's pairs (chosen, rejected, ...) and their reference log-probs (zeros for simpo, which has none). */
async function heldOutPairs(context: AdaptContext, config: DpoConfig, summary: string[]): Promise<{ sequences: EncodedSequence[]; reference: SequenceLogprob[] } | null> {
  const records = await readAll<PreferenceRecord>(config.data.valid, parsePreferenceRecord);
  const { pairs } = encodePreferences(context.tokenizer, records, { maxLength: config.data.max_length, policy: config.data.overflow });
  if (pairs.length === 0) return null;
  const sequences = pairs.flatMap((p) => [p.chosen, p.rejected]);
  if (config.loss === 'simpo') return { sequences, reference: sequences.map((s) => ({ logprob: 0, tokens: tokensOf(s) })) };
  const pass = await referencePass(context, sequences, config.reference_cache ?? join(config.out, 'reference-cache'));
  summary.push(`held-out ${pass.line}`);
  return { sequences, reference: pass.values };
}

export async function prepareKto(context: AdaptContext): Promise<AdaptMethod> {
  const config = context.config as KtoConfig;
  const records = await readAll<KtoRecord>(config.data.train, parseKtoRecords);
  const { examples, stats } = encodeKto(context.tokenizer, records, { maxLength: config.data.max_length, policy: config.data.overflow, seed: config.seed });
  const sequences = examples.flatMap((e) => [e.sequence, e.kl]);
  const summary = [
    `kto data: ${records.length} examples (${stats.desirable} desirable, ${stats.undesirable} undesirable kept), ${stats.truncated} truncated and ` +
      `${stats.dropped + stats.droppedNoTarget} dropped at max_length ${config.data.max_length}; β ${config.beta}, weights ${config.desirable_weight}/${config.undesirable_weight}`,
  ];
  const pass = await referencePass(context, sequences, config.reference_cache ?? join(config.out, 'reference-cache'));
  summary.push(pass.line);
  const reference = pass.values;
  const padId = padIdOf(context.tokenizer);
  return {
    examples: examples.length,
    dataHash: dataFingerprint(sequences),
    summary,
    step: (micro, run) => {
      const options = { beta: config.beta, desirableWeight: config.desirable_weight, undesirableWeight: config.undesirable_weight };
      return rowSteps(micro, run, padId, (i) => [examples[i]!.sequence, examples[i]!.kl], (logps, indices, share) => {
        const rows = ktoRowWeights(logps, indices.flatMap((i) => [reference[2 * i]!, reference[2 * i + 1]!]), indices.map((i) => examples[i]!.label), options, share);
        // A micro-batch without desirable (or undesirable) examples has no rewards of that kind: left out, and the
        // step averages that metric over the micro-batches that have it (trainStep).
        const metrics = Object.fromEntries(Object.entries(rows.loss.metrics).filter(([, v]) => Number.isFinite(v)));
        return { weights: rows.weights, loss: { loss: rows.loss.loss, metrics } };
      });
    },
  };
}

/**
 * Supervised fine-tuning as an adaptation method (run.ts): chat data through the model's template, loss on every
 * assistant turn and its end-of-turn token only (encode.ts), packed rows of max_length or one padded row per
 * sequence. Packed sequences are separate attention sequences with their own positions (TrainBatch.documents), so
 * packing changes the speed, not the loss.
 *
 * The loss of a step is a weighted cross-entropy over its trained tokens:
 * - token (the paper; open-instruct's sum loss divided by the step's trained tokens): w = 1 / trained tokens of the step;
 * - sequence (TRL's default mean per sequence): w = 1 / (sequences of the step · trained tokens of its sequence).
 */
import { IGNORE_TARGET } from '../../core/training.js';
import type { TrainBatch } from '../model.js';
import { makeBatch, packRows, padRows, type SequenceBatch } from './batching.js';
import type { SftConfig } from './config.js';
import { trainedCount, type EncodedSequence } from './encode.js';
import { dataFingerprint } from './reference-cache.js';
import type { AdaptContext, AdaptMethod, MicroOutcome } from './run.js';
import { describeSftStats, loadSftData } from './sft-data.js';

/** A SequenceBatch as the training model's batch: targets where the mask says, per-token weights from `weightOf`. */
export function trainBatch(batch: SequenceBatch, weightOf: (sequence: number) => number, packed: boolean): { batch: TrainBatch; weights: Float64Array } {
  const { rows, width, tokens, lossMask, documentIds } = batch;
  const length = width - 1;
  const targets = new Int32Array(rows * length).fill(IGNORE_TARGET);
  const weights = new Float64Array(rows * length);
  for (let r = 0; r < rows; r++) {
    for (let s = 0; s < length; s++) {
      const next = r * width + s + 1;
      if (!lossMask[next]) continue;
      targets[r * length + s] = tokens[next]!;
      weights[r * length + s] = weightOf(documentIds[next]!);
    }
  }
  return { batch: { tokens, sequences: rows, targets, ...(packed && { documents: documentIds }), tokenWeights: () => weights }, weights };
}

/** The pad id of batches: the tokenizer's pad token, else eos (never a target: padding is masked). */
export function padIdOf(tokenizer: AdaptContext['tokenizer']): number {
  return tokenizer.tokenId(tokenizer.padToken) ?? tokenizer.tokenId(tokenizer.eosToken) ?? 0;
}

export async function prepareSft(context: AdaptContext): Promise<AdaptMethod> {
  const config = context.config as SftConfig;
  const { maxLength, policy } = { maxLength: config.data.max_length, policy: config.data.overflow };
  const data = await loadSftData(config.data.train, context.tokenizer, { maxLength, policy });
  const sequences: EncodedSequence[] = data.sequences.map((s) => s.sequence);
  const trained = sequences.map(trainedCount);
  const padId = padIdOf(context.tokenizer);
  const valid = config.data.valid.length ? (await loadSftData(config.data.valid, context.tokenizer, { maxLength, policy })).sequences.map((s) => s.sequence) : [];
  return {
    ...(valid.length > 0 && {
      evaluate(forward): Record<string, number> {
        // Mean cross-entropy per trained token over the whole held-out set (padded rows, one sequence each).
        const total = valid.reduce((n, s) => n + trainedCount(s), 0);
        let sum = 0;
        for (let at = 0; at < valid.length; at += config.data.batch_size) {
          const members = valid.slice(at, at + config.data.batch_size);
          sum += forward(trainBatch(makeBatch(padRows(members.length), members, { width: 'longest', padId }), () => 1, false).batch).crossEntropy;
        }
        return { ce: sum / total };
      },
    }),
    examples: sequences.length,
    dataHash: dataFingerprint(sequences),
    summary: [`sft data: ${describeSftStats(data.stats, maxLength)}; ${config.packing ? `packed into rows of ${maxLength}` : 'one padded row per sequence'}, loss per ${config.loss_reduction}`],
    step(micro, run): MicroOutcome[] {
      const all = micro.flat();
      const stepTrained = all.reduce((n, i) => n + trained[i]!, 0);
      return micro.map((indices) => {
        const members = indices.map((i) => sequences[i]!);
        const rows = config.packing ? packRows(members.map((s) => s.tokens.length), maxLength) : padRows(members.length);
        const laid = makeBatch(rows, members, { width: config.packing ? maxLength : 'longest', padId });
        const weightOf = (member: number) => (config.loss_reduction === 'token' ? 1 / stepTrained : 1 / (all.length * trained[indices[member]!]!));
        const { batch } = trainBatch(laid, weightOf, config.packing);
        const result = run(batch);
        return { loss: result.crossEntropy, tokens: laid.rows * laid.width, metrics: { trained_tokens: indices.reduce((n, i) => n + trained[i]!, 0), rows: laid.rows } };
      });
    },
  };
}

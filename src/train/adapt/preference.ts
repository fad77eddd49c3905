/**
 * Preference and KTO examples as token sequences whose loss mask covers the completion: the sequence log-prob of a
 * completion is the sum of log p over its masked tokens (DPO, SimPO and KTO all start from these sums).
 *
 * Chosen and rejected share the prompt's ids exactly (the prompt is its own tokenized span). KTO's KL reference
 * point needs mismatched pairs — a prompt with another example's completion; TRL builds them once per dataset
 * (KTOTrainer's _get_kl_dataset rotates completions by one within each batch), so their reference log-probs can be
 * cached like the others. Here the rotation runs over a seeded permutation and skips a partner with the same prompt
 * (a split paired file holds each prompt twice), so every KL pair is truly mismatched.
 */
import { InputError } from '../../core/errors.js';
import { createRng } from '../../core/rng.js';
import type { OlmoeTokenizer } from '../../tokenizer/tokenizer.js';
import { checkMaxLength, emptyLengthStats, fitOne, type LengthPolicy, type LengthStats } from './batching.js';
import { encodeTurns, type EncodedSequence } from './encode.js';
import type { RecordSource } from './jsonl.js';
import { sameTurns, type KtoRecord, type PreferenceRecord, type Turn } from './records.js';

export interface EncodedPair {
  readonly chosen: EncodedSequence;
  readonly rejected: EncodedSequence;
  readonly source: RecordSource;
}

export interface EncodedKto {
  readonly sequence: EncodedSequence;
  readonly label: boolean;
  /** This example's prompt with another example's completion, for the KL estimate. */
  readonly kl: EncodedSequence;
  readonly source: RecordSource;
}

export interface LengthOptions {
  maxLength: number;
  policy: LengthPolicy;
}

/** A prompt and a completion as one sequence; only the completion's assistant turns are trained. */
function encodeCompletion(tokenizer: OlmoeTokenizer, prompt: readonly Turn[], completion: readonly Turn[], source: RecordSource): EncodedSequence {
  return encodeTurns(tokenizer, [...prompt.map((t) => ({ ...t, train: false })), ...completion], source);
}

export interface PreferenceStats extends LengthStats {
  /** Pairs whose chosen equals rejected: warned about and left out (their DPO loss is ln 2 whatever the policy). */
  identical: number;
  /** Pairs kept. */
  pairs: number;
}

/** Both sides of a pair through max_length: the pair goes when either side goes, and is truncated when either is. */
function fitGroup(sequences: readonly EncodedSequence[], length: LengthOptions, stats: LengthStats): EncodedSequence[] | undefined {
  const outcomes = sequences.map((s) => fitOne(s, length.maxLength, length.policy));
  const worst = (['dropped', 'droppedNoTarget', 'truncated', 'fitted'] as const).find((status) => outcomes.some((o) => o.status === status))!;
  stats[worst]++;
  return worst === 'dropped' || worst === 'droppedNoTarget' ? undefined : outcomes.map((o) => (o as { sequence: EncodedSequence }).sequence);
}

/** Encode pairs, leave out identical ones (warned and counted) and those over max_length. */
export function encodePreferences(tokenizer: OlmoeTokenizer, records: readonly PreferenceRecord[], length: LengthOptions): { pairs: EncodedPair[]; stats: PreferenceStats; warnings: string[] } {
  checkMaxLength(length.maxLength);
  const warnings: string[] = [];
  const stats: PreferenceStats = { ...emptyLengthStats(), identical: 0, pairs: 0 };
  const pairs: EncodedPair[] = [];
  for (const r of records) {
    if (sameTurns(r.chosen, r.rejected)) {
      warnings.push(`${r.source.file}: line ${r.source.line}: chosen is identical to rejected; the pair is left out`);
      stats.identical++;
      continue;
    }
    const fitted = fitGroup([encodeCompletion(tokenizer, r.prompt, r.chosen, r.source), encodeCompletion(tokenizer, r.prompt, r.rejected, r.source)], length, stats);
    if (fitted) pairs.push({ chosen: fitted[0]!, rejected: fitted[1]!, source: r.source });
  }
  stats.pairs = pairs.length;
  return { pairs, stats, warnings };
}

/** For each example, the example whose completion it is paired with for the KL estimate (never the same prompt). */
export function klPartners(records: readonly KtoRecord[], seed: number): number[] {
  const n = records.length;
  const rng = createRng(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const partners = new Array<number>(n);
  order.forEach((example, k) => {
    for (let step = 1; step < n; step++) {
      const candidate = order[(k + step) % n]!;
      if (!sameTurns(records[candidate]!.prompt, records[example]!.prompt)) {
        partners[example] = candidate;
        return;
      }
    }
    throw new InputError(`KTO: every example has the prompt of ${records[example]!.source.file}: line ${records[example]!.source.line}; the KL estimate needs at least two different prompts`);
  });
  return partners;
}

export interface KtoStats extends LengthStats {
  desirable: number;
  undesirable: number;
}

/** Encode KTO examples with their mismatched KL sequences; an example goes when it or its KL sequence goes. */
export function encodeKto(tokenizer: OlmoeTokenizer, records: readonly KtoRecord[], opts: LengthOptions & { seed: number }): { examples: EncodedKto[]; stats: KtoStats } {
  checkMaxLength(opts.maxLength);
  const partners = klPartners(records, opts.seed);
  const stats: KtoStats = { ...emptyLengthStats(), desirable: 0, undesirable: 0 };
  const examples: EncodedKto[] = [];
  records.forEach((r, i) => {
    const own = encodeCompletion(tokenizer, r.prompt, r.completion, r.source);
    const kl = encodeCompletion(tokenizer, r.prompt, records[partners[i]!]!.completion, r.source);
    const fitted = fitGroup([own, kl], opts, stats);
    if (!fitted) return;
    examples.push({ sequence: fitted[0]!, label: r.label, kl: fitted[1]!, source: r.source });
    stats[r.label ? 'desirable' : 'undesirable']++;
  });
  if (stats.desirable === 0 || stats.undesirable === 0) {
    throw new InputError(`KTO data has ${stats.desirable} desirable and ${stats.undesirable} undesirable examples after max_length: it needs both kinds`);
  }
  return { examples, stats };
}

/**
 * SFT data end to end, for `olmoe sft` and `--show-mask`: JSONL files → records → token sequences with loss masks →
 * max_length applied, with the counts a run reports (records, kept, truncated, dropped, trained tokens).
 */
import type { OlmoeTokenizer } from '../../tokenizer/tokenizer.js';
import { fitToLength, type Fitted, type LengthPolicy, type LengthStats } from './batching.js';
import { encodeSftRecord, trainedCount } from './encode.js';
import { readRecords } from './jsonl.js';
import { parseSftRecord, type SftRecord } from './records.js';

export interface SftDataOptions {
  maxLength: number;
  policy: LengthPolicy;
}

export interface SftDataStats extends LengthStats {
  records: number;
  /** Records with more than one assistant turn. */
  multiTurn: number;
  tokens: number;
  trainedTokens: number;
}

export interface SftData {
  readonly records: readonly SftRecord[];
  /** Sequences that passed max_length, with the index of their record. */
  readonly sequences: readonly Fitted[];
  readonly stats: SftDataStats;
}

/** Read, encode and fit every record of `files` (in order). */
export async function loadSftData(files: readonly string[], tokenizer: OlmoeTokenizer, opts: SftDataOptions): Promise<SftData> {
  const records: SftRecord[] = [];
  for (const file of files) records.push(...(await readRecords(file, parseSftRecord)));
  const encoded = records.map((record) => encodeSftRecord(tokenizer, record));
  const { kept, stats } = fitToLength(encoded, opts.maxLength, opts.policy);
  const multiTurn = records.filter((r) => r.kind === 'chat' && r.turns.filter((t) => t.train).length > 1).length;
  const tokens = kept.reduce((sum, k) => sum + k.sequence.tokens.length, 0);
  const trainedTokens = kept.reduce((sum, k) => sum + trainedCount(k.sequence), 0);
  return { records, sequences: kept, stats: { ...stats, records: records.length, multiTurn, tokens, trainedTokens } };
}

/** One line a person reads: what max_length did to the data. */
export function describeSftStats(stats: SftDataStats, maxLength: number): string {
  const lost = stats.dropped + stats.droppedNoTarget;
  return (
    `${stats.records} records (${stats.multiTurn} multi-turn): ${stats.fitted + stats.truncated} kept, ${stats.truncated} truncated and ${lost} dropped at max_length ${maxLength}` +
    `${stats.droppedNoTarget ? ` (${stats.droppedNoTarget} because truncation left no trained token)` : ''}; ${stats.tokens} tokens, ${stats.trainedTokens} trained`
  );
}

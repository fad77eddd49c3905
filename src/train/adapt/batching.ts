/**
 * Encoded sequences → fixed-size training rows: `max_length` (drop or truncate, with counts), then packing (several
 * sequences end to end in a row, as TRL's `packing=True`) or padding (one sequence a row).
 *
 * A row holds W tokens; inputs are tokens[:, :W-1] and targets tokens[:, 1:], so lossMask[:, 1:] weighs the
 * targets. A packed sequence's first token is never a target (its mask bit is 0), so no loss crosses from one
 * sequence into the next; `documentIds` lets an engine also restart positions or block attention at the seams.
 * Legend: R rows, W row width (tokens).
 */
import { InputError } from '../../core/errors.js';
import { trainedCount, type EncodedSequence } from './encode.js';

export type LengthPolicy = 'drop' | 'truncate';

export interface LengthStats {
  /** Sequences that fit as they were. */
  fitted: number;
  /** Sequences cut to max_length (truncate). */
  truncated: number;
  /** Sequences over max_length left out (drop). */
  dropped: number;
  /** Sequences left out because truncation left no trained token. */
  droppedNoTarget: number;
}

export interface Fitted {
  readonly sequence: EncodedSequence;
  /** Index of the sequence in the input list (its record). */
  readonly index: number;
}

export function checkMaxLength(maxLength: number): void {
  checkLength('max_length', maxLength, 2);
}

function checkLength(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) throw new InputError(`${name} must be an integer ≥ ${min}, not ${value}`);
}

/** What max_length does to one sequence. */
export type FitOutcome = { readonly status: 'fitted' | 'truncated'; readonly sequence: EncodedSequence } | { readonly status: 'dropped' | 'droppedNoTarget' };

/** Keep a sequence, cut it from the right (truncate), or leave it out (drop, or truncation left no trained token). */
export function fitOne(sequence: EncodedSequence, maxLength: number, policy: LengthPolicy): FitOutcome {
  if (sequence.tokens.length <= maxLength) return { status: 'fitted', sequence };
  if (policy === 'drop') return { status: 'dropped' };
  const cut = { tokens: sequence.tokens.slice(0, maxLength), lossMask: sequence.lossMask.slice(0, maxLength) };
  return trainedCount(cut) === 0 ? { status: 'droppedNoTarget' } : { status: 'truncated', sequence: cut };
}

export function emptyLengthStats(): LengthStats {
  return { fitted: 0, truncated: 0, dropped: 0, droppedNoTarget: 0 };
}

/** Apply max_length to every sequence, counting each outcome. */
export function fitToLength(sequences: readonly EncodedSequence[], maxLength: number, policy: LengthPolicy): { kept: Fitted[]; stats: LengthStats } {
  checkMaxLength(maxLength);
  const stats = emptyLengthStats();
  const kept: Fitted[] = [];
  sequences.forEach((sequence, index) => {
    const outcome = fitOne(sequence, maxLength, policy);
    stats[outcome.status]++;
    if ('sequence' in outcome) kept.push({ sequence: outcome.sequence, index });
  });
  return { kept, stats };
}

/** Rows of sequence indices (into `lengths`): first fit in data order over the last `window` open rows. */
export function packRows(lengths: readonly number[], width: number, window = 64): number[][] {
  checkLength('row width', width, 2);
  const rows: { members: number[]; used: number }[] = [];
  lengths.forEach((length, i) => {
    if (length > width) throw new InputError(`sequence ${i} has ${length} tokens, more than the row width ${width}: apply max_length first`);
    const open = rows.slice(Math.max(0, rows.length - window)).find((row) => row.used + length <= width);
    if (open) {
      open.members.push(i);
      open.used += length;
    } else rows.push({ members: [i], used: length });
  });
  return rows.map((row) => row.members);
}

/** Padding: one sequence a row. */
export function padRows(count: number): number[][] {
  return Array.from({ length: count }, (_, i) => [i]);
}

export interface SequenceBatch {
  readonly rows: number;
  readonly width: number;
  /** [R, W] token ids; padding is `padId`. */
  readonly tokens: Int32Array;
  /** [R, W] 1 where the token is a loss target. */
  readonly lossMask: Uint8Array;
  /** [R, W] index of the sequence each token belongs to; -1 for padding. */
  readonly documentIds: Int32Array;
}

/**
 * Lay `rows` (lists of indices into `sequences`) into one batch of width `width` ('longest': the longest row's
 * length, as a padding collator does), padded with `padId` where no loss is taken.
 */
export function makeBatch(rows: readonly (readonly number[])[], sequences: readonly EncodedSequence[], opts: { width: number | 'longest'; padId: number }): SequenceBatch {
  const rowLength = (row: readonly number[]) => row.reduce((sum, i) => sum + sequences[i]!.tokens.length, 0);
  const width = opts.width === 'longest' ? rows.reduce((longest, row) => Math.max(longest, rowLength(row)), 2) : opts.width;
  const tokens = new Int32Array(rows.length * width).fill(opts.padId);
  const lossMask = new Uint8Array(rows.length * width);
  const documentIds = new Int32Array(rows.length * width).fill(-1);
  rows.forEach((row, r) => {
    if (rowLength(row) > width) throw new InputError(`row ${r} holds ${rowLength(row)} tokens, more than the batch width ${width}`);
    let at = r * width;
    for (const i of row) {
      const sequence = sequences[i]!;
      tokens.set(sequence.tokens, at);
      lossMask.set(sequence.lossMask, at);
      documentIds.fill(i, at, at + sequence.tokens.length);
      at += sequence.tokens.length;
    }
  });
  return { rows: rows.length, width, tokens, lossMask, documentIds };
}

/** Token utilisation of rows of width `width`: real tokens / (rows × width). */
export function packingEfficiency(rows: readonly (readonly number[])[], lengths: readonly number[], width: number): number {
  const used = rows.reduce((sum, row) => sum + row.reduce((s, i) => s + lengths[i]!, 0), 0);
  return rows.length === 0 ? 0 : used / (rows.length * width);
}

/**
 * Few-shot examples picked out of a documents file (a dataset's train split) by reference, in the reference order.
 * OLMES fixes each task's shots by hand (oe_eval/tasks/fewshot_sources.py, "OLMES:ARC-Challenge" etc.: rows of the
 * train split); a preset names those rows instead of copying their text. A reference gives the row's value in the
 * dataset's id column where it has one, and always a fingerprint of the row as it renders as a shot, so the shot
 * used is byte for byte the one OLMES shows — a row that renders otherwise is an error, not a silently other prompt.
 */
import { createHash } from 'node:crypto';
import { FormatError, preview } from '../core/errors.js';
import { FORMATS, RowReader, type FormatName, type PromptDoc } from './formats.js';

export interface ShotRef {
  /** The row's value in the id column (`fewshotKey`); rows without one are found by fingerprint alone. */
  readonly id?: string | number;
  /** shotFingerprint of the row. */
  readonly sha256: string;
}

const FINGERPRINT = /^[0-9a-f]{16}$/;

/**
 * The first 16 hex digits of the SHA-256 of the row's cloze shot, a blank line and its lettered shot (UTF-8): both
 * formulations' text of the example, so every field the prompt shows is covered.
 */
export function shotFingerprint(doc: PromptDoc): string {
  return createHash('sha256').update(`${doc.clozeShot}\n\n${doc.letteredShot}`).digest('hex').slice(0, 16);
}

/** A task file's "fewshotRows" list, checked: objects {id?, sha256}, ids needing a "fewshotKey". */
export function parseShotRefs(file: string, value: unknown, key: string | undefined): ShotRef[] {
  if (!Array.isArray(value) || value.length === 0) throw new FormatError(file, `"fewshotRows" must be a non-empty list of {"id"?, "sha256"}, got ${preview(value)}`);
  return value.map((ref: unknown, k): ShotRef => {
    const where = `"fewshotRows"[${k}]`;
    if (typeof ref !== 'object' || ref === null || Array.isArray(ref)) throw new FormatError(file, `${where} must be an object {"id"?, "sha256"}, got ${preview(ref)}`);
    const { id, sha256, ...rest } = ref as Record<string, unknown>;
    const extra = Object.keys(rest)[0];
    if (extra !== undefined) throw new FormatError(file, `${where}: unknown key ${JSON.stringify(extra)} (known: id, sha256)`);
    if (typeof sha256 !== 'string' || !FINGERPRINT.test(sha256)) throw new FormatError(file, `${where}: "sha256" must be 16 lowercase hex digits, got ${preview(sha256)}`);
    if (id === undefined) return { sha256 };
    if (typeof id !== 'string' && !Number.isSafeInteger(id)) throw new FormatError(file, `${where}: "id" must be a string or an integer, got ${preview(id)}`);
    if (key === undefined) throw new FormatError(file, `${where} has an "id" but the task names no "fewshotKey" (the column to find it in)`);
    return { id: id as string | number, sha256 };
  });
}

/**
 * The referenced rows of `rows` (read from `file`) in the given format, in reference order. A reference with an id
 * takes the row(s) whose `key` column holds it and keeps the one with its fingerprint; one without is found among
 * all rows by fingerprint. Errors name the file, the reference and what was not found.
 */
export function selectShots(file: string, rows: readonly unknown[], format: FormatName, refs: readonly ShotRef[], key?: string): PromptDoc[] {
  const render = (i: number): PromptDoc => {
    const row = rows[i];
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new FormatError(file, `row ${i + 1} is not an object`);
    return FORMATS[format](new RowReader(file, row as Record<string, unknown>, i));
  };
  let byFingerprint: ReturnType<typeof fingerprintIndex> | undefined;
  return refs.map((ref, k) => {
    const name = `few-shot example ${k + 1} (${ref.id === undefined ? '' : `${key} ${JSON.stringify(ref.id)}, `}fingerprint ${ref.sha256})`;
    if (ref.id === undefined) {
      byFingerprint ??= fingerprintIndex(rows.length, render);
      const doc = byFingerprint.docs.get(ref.sha256);
      const unread = byFingerprint.unread;
      if (!doc) throw new FormatError(file, `${name} is none of its ${rows.length} rows${unread.count ? ` (${unread.count} of them unreadable, the first: ${unread.first!.message})` : ''}`);
      return doc;
    }
    const candidates = rowsWithId(file, rows, key!, ref.id);
    if (candidates.length === 0) throw new FormatError(file, `${name}: no row has ${key} ${JSON.stringify(ref.id)}`);
    const docs = candidates.map(render);
    const doc = docs.find((d) => shotFingerprint(d) === ref.sha256);
    if (!doc) throw new FormatError(file, `${name}: the row with ${key} ${JSON.stringify(ref.id)} (row ${candidates[0]! + 1}) renders otherwise (fingerprint ${shotFingerprint(docs[0]!)}): not the curated example`);
    return doc;
  });
}

/** Indices of the rows whose `key` column equals `id` (numbers and BigInts compared by value). */
function rowsWithId(file: string, rows: readonly unknown[], key: string, id: string | number): number[] {
  const found: number[] = [];
  rows.forEach((row, i) => {
    if (typeof row !== 'object' || row === null || !Object.hasOwn(row, key)) throw new FormatError(file, `row ${i + 1}: "${key}" is missing`);
    const value = (row as Record<string, unknown>)[key];
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'bigint') throw new FormatError(file, `row ${i + 1}: "${key}" must be a string or integer, got ${preview(value)}`);
    if (typeof id === 'string' ? value === id : typeof value === 'bigint' ? value === BigInt(id) : value === id) found.push(i);
  });
  return found;
}

/**
 * Every row rendered once, by fingerprint (the first of identical renderings wins: they are the same shot). A row the
 * format cannot read cannot be a curated shot, so one odd row of a large train split does not stop the search; when
 * no row can be read, the file is not in the format and its first row's error says why.
 */
function fingerprintIndex(count: number, render: (i: number) => PromptDoc): { docs: Map<string, PromptDoc>; unread: { count: number; first?: Error } } {
  const docs = new Map<string, PromptDoc>();
  const unread: { count: number; first?: Error } = { count: 0 };
  for (let i = 0; i < count; i++) {
    try {
      const doc = render(i);
      const fingerprint = shotFingerprint(doc);
      if (!docs.has(fingerprint)) docs.set(fingerprint, doc);
    } catch (error) {
      if (!(error instanceof FormatError)) throw error;
      unread.count++;
      unread.first ??= error;
    }
  }
  if (unread.count === count && unread.first) throw unread.first;
  return { docs, unread };
}

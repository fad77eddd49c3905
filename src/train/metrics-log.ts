/**
 * Reading a trainer's metrics log: JSON Lines with one record per optimizer step (`kind: "train"`) and one per
 * validation domain and evaluation (`kind: "valid"`, domain "all" for the total). Values a run could not compute
 * (JSON has no NaN, so a diverged loss is written as null) are read as NaN and left out of the plots.
 */
import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { FormatError, withIo } from '../core/errors.js';

/** One optimizer step. `expertLoad` is [layer][expert] shares of routed slots; `routingEntropy` is nats per layer. */
export interface TrainLogRecord {
  kind: 'train';
  step: number;
  tokens: number;
  loss: number;
  ce: number;
  lbl: number;
  zloss: number;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  expertLoad?: number[][];
  routingEntropy?: number[];
}

export interface ValidLogRecord {
  kind: 'valid';
  step: number;
  tokens: number;
  domain: string;
  ce: number;
  bitsPerByte: number;
}

/**
 * One in-loop evaluation result (paper §4, appendix D): a task's accuracy under one formulation and normalization
 * with its standard error. A suite's macro average is logged as a task named after the suite (normalization
 * "primary": each task's primary one).
 */
export interface TaskLogRecord {
  kind: 'task';
  step: number;
  tokens: number;
  task: string;
  /** The suite the task belongs to, when it was given as part of one. */
  suite?: string;
  formulation: string;
  normalization: string;
  /** The task's primary normalization for this formulation (what OLMES reports). */
  primary: boolean;
  accuracy: number;
  stderr: number;
  /** Instances scored. */
  n: number;
  chance: number;
  /** Bits per byte of the gold answers under this formulation (a smooth signal beside accuracy); NaN for suite averages. */
  bitsPerByte: number;
}

export const TRAIN_SCALARS = ['tokens', 'loss', 'ce', 'lbl', 'zloss', 'lr', 'gradNorm', 'tokensPerSecond'] as const;
const VALID_SCALARS = ['tokens', 'ce', 'bitsPerByte'] as const;

export interface TrainingRun {
  file: string;
  label: string;
  train: TrainLogRecord[];
  valid: ValidLogRecord[];
  tasks: TaskLogRecord[];
  /** Lines skipped (a last line cut short by a killed run, records of unknown kinds). */
  warnings: string[];
}

/** Read and check one metrics file; `label` names the run in figures (default: the file name without .jsonl). */
export function readTrainingRun(file: string, label = basename(file, extname(file))): TrainingRun {
  const text = withIo(file, 'read', () => readFileSync(file, 'utf8'));
  return { file, label, ...parseTrainingLog(text, file) };
}

/**
 * Parse a metrics log. A malformed line is an error naming `file` and the line number, except the last line
 * when the file does not end with a newline: a run killed mid-write leaves that, and it is skipped with a warning.
 */
export function parseTrainingLog(text: string, file: string): Omit<TrainingRun, 'file' | 'label'> {
  const lines = text.split('\n');
  const run: Omit<TrainingRun, 'file' | 'label'> = { train: [], valid: [], tasks: [], warnings: [] };
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    const where = `line ${index + 1}`;
    const unterminated = index === lines.length - 1; // no '\n' after it
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      if (unterminated) return void run.warnings.push(`${file}: ${where}: skipped an incomplete last line (the run was stopped while writing it)`);
      throw new FormatError(file, `${where}: not JSON (${(error as Error).message})`);
    }
    const record = checkRecord(value, (message) => new FormatError(file, `${where}: ${message}`));
    if (record === undefined) run.warnings.push(`${file}: ${where}: skipped a record of unknown kind ${JSON.stringify((value as { kind: unknown }).kind)}`);
    else if (record.kind === 'train') run.train.push(record);
    else if (record.kind === 'task') run.tasks.push(record);
    else run.valid.push(record);
  });
  if (run.train.length + run.valid.length + run.tasks.length === 0) throw new FormatError(file, 'no metrics records: the file is empty');
  return run;
}

type Fail = (message: string) => Error;

function checkRecord(value: unknown, fail: Fail): TrainLogRecord | ValidLogRecord | TaskLogRecord | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail('expected a JSON object');
  const raw = value as Record<string, unknown>;
  if (raw.kind !== 'train' && raw.kind !== 'valid' && raw.kind !== 'task') {
    if (typeof raw.kind === 'string') return undefined; // a kind from a newer trainer: not ours to plot
    throw fail('missing "kind" ("train", "valid" or "task")');
  }
  if (!Number.isSafeInteger(raw.step) || (raw.step as number) < 0) throw fail(`"step" ${JSON.stringify(raw.step)}: expected an integer ≥ 0`);
  if (raw.kind === 'task') return checkTaskRecord(raw, fail);
  if (raw.kind === 'valid') {
    if (typeof raw.domain !== 'string') throw fail('"domain": expected a string');
    return { kind: 'valid', step: raw.step as number, domain: raw.domain, ...scalars(raw, VALID_SCALARS, fail) };
  }
  const record: TrainLogRecord = { kind: 'train', step: raw.step as number, ...scalars(raw, TRAIN_SCALARS, fail) };
  if (raw.expertLoad !== undefined && raw.expertLoad !== null) record.expertLoad = matrix(raw.expertLoad, '"expertLoad"', fail);
  if (raw.routingEntropy !== undefined && raw.routingEntropy !== null) record.routingEntropy = numbers(raw.routingEntropy, '"routingEntropy"', fail);
  return record;
}

/** The named fields as numbers: absent or null → NaN; anything else that is not a number is an error. */
function scalars<K extends string>(raw: Record<string, unknown>, keys: readonly K[], fail: Fail): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const key of keys) {
    const v = raw[key];
    if (v !== undefined && v !== null && typeof v !== 'number') throw fail(`"${key}" ${JSON.stringify(v)}: expected a number`);
    out[key] = typeof v === 'number' ? v : Number.NaN;
  }
  return out;
}

function numbers(value: unknown, what: string, fail: Fail): number[] {
  if (!Array.isArray(value)) throw fail(`${what}: expected an array of numbers`);
  return value.map((v, i) => {
    if (v !== null && typeof v !== 'number') throw fail(`${what}[${i}] ${JSON.stringify(v)}: expected a number`);
    return v ?? Number.NaN;
  });
}

function matrix(value: unknown, what: string, fail: Fail): number[][] {
  if (!Array.isArray(value)) throw fail(`${what}: expected an array (one per layer) of arrays of numbers`);
  return value.map((row, i) => numbers(row, `${what}[${i}]`, fail));
}

const TASK_SCALARS = ['tokens', 'accuracy', 'stderr', 'n', 'chance', 'bitsPerByte'] as const;

function checkTaskRecord(raw: Record<string, unknown>, fail: Fail): TaskLogRecord {
  const text = (key: string) => {
    if (typeof raw[key] !== 'string' || raw[key] === '') throw fail(`"${key}" ${JSON.stringify(raw[key])}: expected a non-empty string`);
    return raw[key] as string;
  };
  if (typeof raw.primary !== 'boolean') throw fail(`"primary" ${JSON.stringify(raw.primary)}: expected true or false`);
  const record: TaskLogRecord = {
    kind: 'task', step: raw.step as number, task: text('task'), formulation: text('formulation'), normalization: text('normalization'), primary: raw.primary,
    ...scalars(raw, TASK_SCALARS, fail),
  };
  if (raw.suite !== undefined) record.suite = text('suite');
  return record;
}

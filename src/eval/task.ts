/**
 * Multiple-choice tasks as data: a task file (JSON) names its documents (JSONL: question, choices, answer index),
 * fixed few-shot examples, an instance limit with a sampling seed (OLMES's: Python's Random(1234).sample), and the prompt pieces; both OLMES
 * formulations are built from it:
 * - cloze (CF): "Question: {question}\nAnswer:" continued by " {choice}", scored with each normalization;
 * - multiple-choice (MCF): the question, then " A. {choice}" lines, then "Answer:", continued by " A", " B", ….
 * Few-shot examples are the same prompt with the gold answer, separated by a blank line.
 */
import { createHash } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { FormatError } from '../core/errors.js';
import { readJsonObject } from '../io/json.js';
import { readRegularFile } from '../io/files.js';
import type { ChoiceInstance, Normalization } from './multiple-choice.js';
import { NORMALIZATIONS } from './multiple-choice.js';
import { pythonSample } from './python-random.js';

export const FORMULATIONS = ['cf', 'mcf'] as const;
export type Formulation = (typeof FORMULATIONS)[number];

export interface TaskDocument {
  readonly id: string;
  readonly question: string;
  readonly choices: readonly string[];
  readonly answer: number;
}

export interface Task {
  readonly name: string;
  readonly version: number;
  readonly file: string;
  readonly documents: readonly TaskDocument[];
  readonly fewshot: readonly TaskDocument[];
  readonly formulations: readonly Formulation[];
  /** Normalizations reported for the cloze formulation; the first is the task's primary one. */
  readonly normalizations: readonly Normalization[];
  /** Text before the few-shot examples (e.g. "The following are multiple choice questions about …"). */
  readonly preamble: string;
  /** The unconditioned prompt of pmi. */
  readonly unconditioned: string;
}

const MAX_DOCUMENT_FILE_BYTES = 1 << 30;
const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const SHOT_SEPARATOR = '\n\n';

/** Read a task file and its documents; `shots` and `limit` override the file's. */
export function readTask(file: string, overrides: { shots?: number; limit?: number } = {}): Task {
  const spec = readJsonObject(file);
  const text = (key: string, fallback?: string): string => {
    const value = spec[key] ?? fallback;
    if (typeof value !== 'string') throw new FormatError(file, `"${key}" must be a string`);
    return value;
  };
  const count = (key: string, fallback?: number): number | undefined => {
    const value = spec[key] ?? fallback;
    if (value === undefined) return undefined;
    if (!Number.isSafeInteger(value) || (value as number) < 0) throw new FormatError(file, `"${key}" must be a non-negative integer, got ${JSON.stringify(value)}`);
    return value as number;
  };
  const known = new Set(['name', 'version', 'documents', 'fewshot', 'shots', 'limit', 'seed', 'formulations', 'normalizations', 'preamble', 'unconditioned']);
  const unknown = Object.keys(spec).filter((key) => !known.has(key));
  if (unknown.length) throw new FormatError(file, `unknown key ${JSON.stringify(unknown[0])} (known: ${[...known].join(', ')})`);
  const here = dirname(file);
  const documents = readDocuments(resolve(here, text('documents')));
  const shots = overrides.shots ?? count('shots', 0)!;
  const fewshot = spec.fewshot === undefined ? [] : readDocuments(resolve(here, text('fewshot'))).slice(0, shots);
  if (fewshot.length < shots) throw new FormatError(file, `${shots} shots asked for, the few-shot file has ${fewshot.length} examples`);
  const limit = overrides.limit ?? count('limit');
  return {
    name: text('name'),
    version: count('version', 1)!,
    file,
    documents: limit !== undefined && limit < documents.length ? sample(documents, limit, count('seed', 1234)!) : documents,
    fewshot,
    formulations: listOf(file, spec, 'formulations', FORMULATIONS, ['cf', 'mcf']),
    normalizations: listOf(file, spec, 'normalizations', NORMALIZATIONS, ['per_char', 'none', 'per_token']),
    preamble: text('preamble', ''),
    unconditioned: text('unconditioned', 'Answer:'),
  };
}

function listOf<T extends string>(file: string, spec: Record<string, unknown>, key: string, allowed: readonly T[], fallback: T[]): T[] {
  const value = spec[key] ?? fallback;
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => allowed.includes(v as T))) {
    throw new FormatError(file, `"${key}" must be a non-empty list of ${allowed.join(' / ')}, got ${JSON.stringify(value)}`);
  }
  return value as T[];
}

/** JSONL documents {id?, question, choices, answer}; errors name the file, line and field. */
export function readDocuments(file: string): TaskDocument[] {
  const lines = readRegularFile(file, MAX_DOCUMENT_FILE_BYTES).toString('utf8').split('\n');
  const documents: TaskDocument[] = [];
  const ids = new Set<string>();
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `line ${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (error) {
      throw new FormatError(file, `${where} is not JSON (${(error as Error).message})`);
    }
    const document = parseDocument(file, where, row, documents.length);
    if (ids.has(document.id)) throw new FormatError(file, `${where}: id ${JSON.stringify(document.id)} appears twice`);
    ids.add(document.id);
    documents.push(document);
  });
  if (documents.length === 0) throw new FormatError(file, 'has no documents');
  return documents;
}

function parseDocument(file: string, where: string, row: unknown, index: number): TaskDocument {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new FormatError(file, `${where} is not a JSON object`);
  const { id, question, choices, answer } = row as Record<string, unknown>;
  if (typeof question !== 'string') throw new FormatError(file, `${where}: "question" must be a string`);
  if (!Array.isArray(choices) || choices.length < 2 || !choices.every((c) => typeof c === 'string')) {
    throw new FormatError(file, `${where}: "choices" must be a list of at least 2 strings`);
  }
  if (choices.length > LETTERS.length) throw new FormatError(file, `${where}: ${choices.length} choices, at most ${LETTERS.length}`);
  if (!Number.isInteger(answer) || (answer as number) < 0 || (answer as number) >= choices.length) {
    throw new FormatError(file, `${where}: "answer" ${JSON.stringify(answer)} is not an index into its ${choices.length} choices`);
  }
  if (id !== undefined && typeof id !== 'string' && typeof id !== 'number') throw new FormatError(file, `${where}: "id" must be a string or number`);
  return { id: id === undefined ? String(index) : String(id), question, choices: choices as string[], answer: answer as number };
}

/** `count` documents as OLMES picks them: Python's Random(seed).sample over the rows, in sample order. */
function sample(documents: readonly TaskDocument[], count: number, seed: number): TaskDocument[] {
  return pythonSample(documents.length, count, seed).map((i) => documents[i]!);
}

const clozeQuery = (doc: TaskDocument) => `Question: ${doc.question}\nAnswer:`;
const mcQuery = (doc: TaskDocument) => `Question: ${doc.question}\n${doc.choices.map((choice, k) => ` ${LETTERS[k]}. ${choice}`).join('\n')}\nAnswer:`;

/** The instances of one formulation: few-shot prefix + query as context, the choices as continuations. */
export function taskInstances(task: Task, formulation: Formulation): ChoiceInstance[] {
  const query = formulation === 'cf' ? clozeQuery : mcQuery;
  const answer = (doc: TaskDocument, k: number) => (formulation === 'cf' ? ` ${doc.choices[k]}` : ` ${LETTERS[k]}`);
  const shots = task.fewshot.map((doc) => `${query(doc)}${answer(doc, doc.answer)}${SHOT_SEPARATOR}`).join('');
  return task.documents.map((doc) => ({
    id: doc.id,
    context: `${task.preamble}${shots}${query(doc)}`,
    choices: doc.choices.map((_, k) => answer(doc, k)),
    gold: doc.answer,
    unconditionedContext: task.unconditioned,
  }));
}

/** A hash of every prompt and continuation of the instances: two runs with the same hash asked the same things. */
export function promptHash(instances: readonly ChoiceInstance[]): string {
  const hash = createHash('sha256');
  for (const instance of instances) hash.update(JSON.stringify([instance.context, instance.choices, instance.gold]));
  return hash.digest('hex').slice(0, 16);
}

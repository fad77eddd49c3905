/**
 * Multiple-choice tasks as data: a task file (JSON) names its documents (JSONL, or Parquet as the Hugging Face
 * datasets publish them) and their row format (src/eval/formats.ts: a dataset's schema in OLMES's layout), fixed
 * few-shot examples (a file of rows in the same format, the first `shots` used for every instance — or the rows of
 * it that "fewshotRows" names, in that order: src/eval/fewshot.ts), an instance
 * limit with OLMES's sampling (Python's Random(seed).sample, seed 1234), the normalizations and a preamble. Both
 * OLMES formulations are built from each row: cloze (CF) and lettered multiple-choice (MCF); few-shot examples
 * are separated by a blank line and carry their gold answer.
 */
import { createHash } from 'node:crypto';
import { closeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { FormatError } from '../core/errors.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import { hubDownloadFile, type HubOptions } from '../io/hub.js';
import { readJsonObject } from '../io/json.js';
import { openRegularFile, readRegularFile } from '../io/files.js';
import { parseShotRefs, selectShots, type ShotRef } from './fewshot.js';
import { FORMATS, LETTERS, RowReader, type FormatName, type PromptDoc } from './formats.js';
import type { ChoiceInstance, Normalization } from './multiple-choice.js';
import { NORMALIZATIONS } from './multiple-choice.js';
import { pythonSample } from './python-random.js';

/** Cloze, lettered multiple-choice, and generative (greedy answer after the cloze query, exact match). */
export const FORMULATIONS = ['cf', 'mcf', 'gen'] as const;
export type Formulation = (typeof FORMULATIONS)[number];

export interface Task {
  readonly name: string;
  readonly version: number;
  readonly file: string;
  readonly format: FormatName;
  readonly documents: readonly PromptDoc[];
  readonly fewshot: readonly PromptDoc[];
  readonly formulations: readonly Formulation[];
  /** Normalizations reported for the cloze formulation; the first is the task's primary one. */
  readonly normalizations: readonly Normalization[];
  /** Text before the few-shot examples (e.g. "The following are multiple choice questions (with answers) about …\n\n"). */
  readonly preamble: string;
  /** The unconditioned prompt of pmi. */
  readonly unconditioned: string;
}

const MAX_DOCUMENT_FILE_BYTES = 1 << 30;
const SHOT_SEPARATOR = '\n\n';
const KNOWN_KEYS = ['name', 'version', 'format', 'documents', 'fewshot', 'fewshotKey', 'fewshotRows', 'shots', 'limit', 'seed', 'formulations', 'normalizations', 'preamble', 'unconditioned'];

export interface ReadTaskOptions {
  /** Override the task file's shots and limit. */
  shots?: number;
  limit?: number;
  /** How `hf://datasets/…` documents are downloaded (cache, revision, progress, offline). */
  hub?: HubOptions;
}

/**
 * A documents path: relative to the task file, absolute, or `hf://datasets/ORG/NAME[@REVISION]/PATH` — a file of a
 * Hugging Face dataset repository, downloaded into the HF cache (as huggingface_hub lays it out) on first use.
 */
export async function resolveDocuments(path: string, taskFile: string, hub: HubOptions = {}): Promise<string> {
  if (!path.startsWith('hf://')) return resolve(dirname(taskFile), path);
  const match = /^hf:\/\/datasets\/([^/@]+\/[^/@]+)(?:@([^/]+))?\/(.+)$/.exec(path);
  if (!match) throw new FormatError(taskFile, `${JSON.stringify(path)} is not hf://datasets/ORG/NAME[@REVISION]/PATH`);
  const [, repo, revision, file] = match;
  const local = await hubDownloadFile(repo!, file!, { ...hub, repoType: 'dataset', revision: revision ? decodeURIComponent(revision) : hub.revision });
  return local!;
}

/** Read a task file and its documents; `shots` and `limit` override the file's. */
export async function readTask(file: string, overrides: ReadTaskOptions = {}): Promise<Task> {
  return taskFromSpec(readJsonObject(file), file, overrides);
}

/**
 * A task from its spec (a task file's JSON, or a built-in preset); `file` names it in errors, and relative
 * documents paths are read from its folder.
 */
export async function taskFromSpec(spec: Record<string, unknown>, file: string, overrides: ReadTaskOptions = {}): Promise<Task> {
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
  const unknown = Object.keys(spec).filter((key) => !KNOWN_KEYS.includes(key));
  if (unknown.length) throw new FormatError(file, `unknown key ${JSON.stringify(unknown[0])} (known: ${KNOWN_KEYS.join(', ')})`);
  const format = text('format', 'generic');
  if (!Object.hasOwn(FORMATS, format)) throw new FormatError(file, `"format" ${JSON.stringify(format)} is not one of ${Object.keys(FORMATS).join(', ')}`);
  const resolved = (key: string) => resolveDocuments(text(key), file, overrides.hub);
  const shotKey = spec.fewshotKey === undefined ? undefined : text('fewshotKey');
  const shotRefs = spec.fewshotRows === undefined ? undefined : parseShotRefs(file, spec.fewshotRows, shotKey);
  if ((shotRefs || shotKey !== undefined) && spec.fewshot === undefined) throw new FormatError(file, `"${shotRefs ? 'fewshotRows' : 'fewshotKey'}" picks rows of a "fewshot" file, and there is none`);
  const documents = await readDocuments(await resolved('documents'), format as FormatName);
  const shots = overrides.shots ?? count('shots', 0)!;
  const fewshot = spec.fewshot === undefined || shots === 0 ? [] : await readFewshot(await resolved('fewshot'), format as FormatName, shotRefs?.slice(0, shots), shotKey);
  if (fewshot.length < shots) throw new FormatError(file, `${shots} shots asked for, the few-shot ${shotRefs ? '"fewshotRows" list' : 'file'} has ${fewshot.length} examples`);
  const limit = overrides.limit ?? count('limit');
  // Preference pairs keep chosen first, so their lettered form would always answer "A": cloze only.
  const formulations = listOf(file, spec, 'formulations', FORMULATIONS, format === 'preference' ? ['cf'] : ['cf', 'mcf']);
  if (format === 'preference' && formulations.includes('mcf')) throw new FormatError(file, '"formulations": the preference format lists chosen first, so its lettered form ("mcf") would always answer A; use "cf" (and "gen")');
  if (formulations.includes('gen') && documents.some((doc) => !('query' in doc.cloze))) {
    throw new FormatError(file, `"formulations": "gen" needs a question to answer; format ${JSON.stringify(format)} scores partial contexts`);
  }
  return {
    name: text('name'),
    version: count('version', 1)!,
    file,
    format: format as FormatName,
    documents: limit !== undefined && limit < documents.length ? sample(documents, limit, count('seed', 1234)!) : documents,
    fewshot: fewshot.slice(0, shots),
    formulations,
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

/** The few-shot examples: the file's rows in order, or the rows `refs` names (found by `key` and fingerprint). */
async function readFewshot(file: string, format: FormatName, refs: readonly ShotRef[] | undefined, key: string | undefined): Promise<PromptDoc[]> {
  return refs ? selectShots(file, await readRows(file), format, refs, key) : readDocuments(file, format);
}

/** The rows of a JSONL or Parquet file, unformatted. */
export async function readRows(file: string): Promise<unknown[]> {
  return file.endsWith('.parquet') ? parquetRows(file) : jsonlRows(file);
}

/** Rows of a JSONL or Parquet file in a given format; errors name the file, row (line) and field. */
export async function readDocuments(file: string, format: FormatName = 'generic'): Promise<PromptDoc[]> {
  const rows = await readRows(file);
  const documents: PromptDoc[] = [];
  const ids = new Set<string>();
  rows.forEach((row, i) => {
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new FormatError(file, `row ${i + 1} is not an object`);
    const document = FORMATS[format](new RowReader(file, row as Record<string, unknown>, i));
    if (ids.has(document.id)) throw new FormatError(file, `row ${i + 1}: id ${JSON.stringify(document.id)} appears twice`);
    ids.add(document.id);
    documents.push(document);
  });
  if (documents.length === 0) throw new FormatError(file, 'has no documents');
  return documents;
}

/** JSONL rows; a blank line is skipped but still counted, so row numbers are line numbers. */
function jsonlRows(file: string): unknown[] {
  const lines = readRegularFile(file, MAX_DOCUMENT_FILE_BYTES).toString('utf8').split('\n');
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop();
  return lines.map((line, i) => {
    if (line.trim() === '') throw new FormatError(file, `row ${i + 1} is an empty line`);
    try {
      return JSON.parse(line) as unknown;
    } catch (error) {
      throw new FormatError(file, `row ${i + 1} is not JSON (${(error as Error).message})`);
    }
  });
}

async function parquetRows(file: string): Promise<unknown[]> {
  closeSync(openRegularFile(file)); // a clear error for a missing file, a folder or a FIFO
  try {
    return await parquetReadObjects({ file: await asyncBufferFromFile(file) });
  } catch (error) {
    throw new FormatError(file, `cannot read as Parquet: ${(error as Error).message}`, { cause: error });
  }
}

/** `count` documents as OLMES picks them: Python's Random(seed).sample over the rows, in sample order. */
function sample(documents: readonly PromptDoc[], count: number, seed: number): PromptDoc[] {
  return pythonSample(documents.length, count, seed).map((i) => documents[i]!);
}

/** The instances of one scored formulation: preamble + few-shot examples + the row's query as context. */
export function taskInstances(task: Task, formulation: 'cf' | 'mcf'): ChoiceInstance[] {
  const shots = task.fewshot.map((doc) => `${formulation === 'cf' ? doc.clozeShot : doc.letteredShot}${SHOT_SEPARATOR}`).join('');
  const prefix = `${task.preamble}${shots}`;
  return task.documents.map((doc): ChoiceInstance => {
    const base = { id: doc.id, gold: doc.gold, unconditionedContext: task.unconditioned };
    if (formulation === 'mcf') return { ...base, context: prefix + doc.lettered, choices: [...LETTERS.slice(0, doc.choiceCount)].map((letter) => ` ${letter}`) };
    if ('query' in doc.cloze) return { ...base, context: prefix + doc.cloze.query, choices: doc.cloze.continuations };
    const { contexts, continuation } = doc.cloze;
    return { ...base, context: prefix, contexts: contexts.map((context) => prefix + context), choices: contexts.map(() => continuation) };
  });
}

/**
 * How an instruction-tuned model is asked (OLMES's chat format with few-shot examples as turns): each example is a
 * user turn (its query, the preamble before the first) answered by an assistant turn (its gold answer), then the
 * row's query as the last user turn; the context is that conversation in the model's chat template with the
 * assistant turn opened, and the choices are the answers without their leading space. Partial scoring
 * (WinoGrande) has no query to ask and is refused.
 */
export type ChatRenderer = (messages: readonly ChatMessage[]) => string;

export function chatInstances(task: Task, formulation: 'cf' | 'mcf', render: ChatRenderer): ChoiceInstance[] {
  return task.documents.map((doc): ChoiceInstance => {
    const { query, answers } = chatTurn(task, doc, formulation);
    return {
      id: doc.id, gold: doc.gold,
      context: render(chatMessages(task, formulation, query)),
      choices: answers,
      unconditionedContext: render([{ role: 'user', content: task.unconditioned }]),
    };
  });
}

/** The generative formulation in chat format: the cloze query as the last user turn, answered by the gold choice. */
export function chatGenerationInstances(task: Task, render: ChatRenderer): GenerationInstance[] {
  return task.documents.map((doc) => {
    const { query, answers } = chatTurn(task, doc, 'cf');
    return { id: doc.id, context: render(chatMessages(task, 'cf', query)), gold: answers[doc.gold]! };
  });
}

function chatTurn(task: Task, doc: PromptDoc, formulation: 'cf' | 'mcf'): { query: string; answers: string[] } {
  if (formulation === 'mcf') return { query: doc.lettered, answers: [...LETTERS.slice(0, doc.choiceCount)] };
  if (!('query' in doc.cloze)) throw new FormatError(task.file, `document ${doc.id}: the chat format needs a question to ask; format ${JSON.stringify(task.format)} scores partial contexts`);
  return { query: doc.cloze.query, answers: doc.cloze.continuations.map((c) => c.trim()) };
}

function chatMessages(task: Task, formulation: 'cf' | 'mcf', query: string): ChatMessage[] {
  const messages: ChatMessage[] = task.fewshot.flatMap((shot): ChatMessage[] => {
    const { query: asked, answers } = chatTurn(task, shot, formulation);
    return [{ role: 'user', content: asked }, { role: 'assistant', content: answers[shot.gold]! }];
  });
  messages.push({ role: 'user', content: query });
  messages[0] = { role: 'user', content: `${task.preamble}${messages[0]!.content}` };
  return messages;
}

export interface GenerationInstance {
  readonly id: string;
  readonly context: string;
  /** The gold choice's text, compared after trimming. */
  readonly gold: string;
}

/** The generative formulation: the cloze prompt (cloze shots, then the row's query), answered by the gold choice. */
export function generationInstances(task: Task): GenerationInstance[] {
  const shots = task.fewshot.map((doc) => `${doc.clozeShot}${SHOT_SEPARATOR}`).join('');
  return task.documents.map((doc) => {
    if (!('query' in doc.cloze)) throw new FormatError(task.file, `document ${doc.id}: the generative formulation needs a question to answer`);
    return { id: doc.id, context: `${task.preamble}${shots}${doc.cloze.query}`, gold: doc.cloze.continuations[doc.gold]!.trim() };
  });
}

/** A hash of every prompt and continuation of the instances: two runs with the same hash asked the same things. */
export function promptHash(instances: readonly (ChoiceInstance | GenerationInstance)[]): string {
  const hash = createHash('sha256');
  for (const instance of instances) {
    hash.update(JSON.stringify('choices' in instance ? [instance.context, instance.contexts ?? null, instance.choices, instance.gold] : [instance.context, instance.gold]));
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * Run tasks on a model: each formulation's instances scored once (choices, and pmi's unconditioned terms when
 * asked for), then every normalization's accuracy from the same scores, bits per byte of the gold answers,
 * chance, and OLMES's number: the better of the cloze (its primary normalization) and multiple-choice results.
 * The generative formulation answers the cloze prompt greedily up to a newline and is scored by exact match.
 */
import type { ResultCache } from './cache.js';
import { exactMatch, generateUntil, normalizedMatch } from './generate-until.js';
import type { LoglikelihoodResult } from './loglikelihood.js';
import { accuracy, chanceAccuracy, goldBitsPerByte, meanWithStderr, scoreChoices, type ChoiceScores, type Estimate, type Normalization, type ScoredLanguageModel } from './multiple-choice.js';
import { chatGenerationInstances, chatInstances, generationInstances, promptHash, taskInstances, type ChatRenderer, type Formulation, type Task } from './task.js';

/** Tokens a generative answer may take before it is cut (the answers are short: a name, a word, a line). */
const GENERATION_MAX_TOKENS = 32;

export type Metric = Normalization | 'exact_match' | 'normalized_match';

export interface FormulationResult {
  readonly formulation: Formulation;
  /** Accuracy under each normalization computed (multiple-choice letters: 'none' only; generative: 'exact_match' and 'normalized_match'). */
  readonly accuracy: Partial<Record<Metric, Estimate>>;
  readonly primary: Metric;
  /** Bits per byte of the gold answers (NaN for the generative formulation, which scores no answer). */
  readonly bitsPerByte: Estimate;
  readonly chance: number;
  readonly promptHash: string;
  /** Instances whose context was cut from the left to fit the model. */
  readonly truncated: number;
}

export interface TaskResult {
  readonly task: string;
  readonly version: number;
  readonly instances: number;
  readonly shots: number;
  /** Asked in the model's chat template (few-shot examples as turns) rather than as plain text (absent: plain). */
  readonly chat?: boolean;
  readonly formulations: readonly FormulationResult[];
  /** OLMES: the best formulation's primary accuracy. */
  readonly best: { formulation: Formulation; accuracy: Estimate };
}

export interface RunOptions {
  prefixToken: number;
  cache?: ResultCache<LoglikelihoodResult>;
  prefixSharing?: boolean;
  /**
   * Ask in chat format, rendered by this (the model's chat template): for instruction-tuned models. A task scored
   * by partial contexts (WinoGrande's layout) has no question to ask and stays plain text (its result says chat false).
   */
  chat?: ChatRenderer;
  signal?: AbortSignal;
  onProgress?: (task: string, formulation: Formulation, done: number, total: number) => void;
  /** Per-instance scores (generative: the answers), for --log-samples. */
  onScores?: (task: string, formulation: Formulation, scores: readonly (ChoiceScores | GeneratedAnswer)[]) => void;
}

export interface GeneratedAnswer {
  readonly id: string;
  readonly output: string;
  readonly gold: string;
  readonly correct: boolean;
  readonly normalizedCorrect: boolean;
}

export async function runTask(lm: ScoredLanguageModel, task: Task, options: RunOptions): Promise<TaskResult> {
  const asksQuestions = task.documents.every((doc) => 'query' in doc.cloze);
  const opts = asksQuestions ? options : { ...options, chat: undefined };
  const formulations: FormulationResult[] = [];
  for (const formulation of task.formulations) {
    if (formulation === 'gen') {
      formulations.push(await runGeneration(lm, task, opts));
      continue;
    }
    const instances = opts.chat ? chatInstances(task, formulation, opts.chat) : taskInstances(task, formulation);
    const normalizations: Normalization[] = formulation === 'cf' ? [...task.normalizations] : ['none'];
    const scores = await scoreChoices(lm, instances, {
      prefixToken: opts.prefixToken,
      withUnconditioned: normalizations.includes('pmi'),
      cache: opts.cache,
      prefixSharing: opts.prefixSharing,
      signal: opts.signal,
      onProgress: (done, total) => opts.onProgress?.(task.name, formulation, done, total),
    });
    opts.onScores?.(task.name, formulation, scores);
    formulations.push({
      formulation,
      accuracy: Object.fromEntries(normalizations.map((n) => [n, accuracy(scores, n)])),
      primary: normalizations[0]!,
      bitsPerByte: goldBitsPerByte(scores),
      chance: chanceAccuracy(scores),
      promptHash: promptHash(instances),
      truncated: scores.filter((s) => s.truncated > 0).length,
    });
  }
  // OLMES's best is over the scored formulations; a task that only generates reports its exact match.
  const scored = formulations.filter((f) => f.formulation !== 'gen');
  const ranked = (scored.length > 0 ? scored : formulations).map((f) => ({ formulation: f.formulation, accuracy: f.accuracy[f.primary]! }));
  const best = ranked.reduce((a, b) => (b.accuracy.value > a.accuracy.value ? b : a));
  return { task: task.name, version: task.version, instances: task.documents.length, shots: task.fewshot.length, chat: opts.chat !== undefined, formulations, best };
}

/**
 * Greedy answers to the cloze prompts, cut at the first newline (or the end of the assistant's turn), scored by
 * exact match (primary) and by match after SQuAD-style normalisation (case, punctuation, articles); chance 0.
 */
async function runGeneration(lm: ScoredLanguageModel, task: Task, opts: RunOptions): Promise<FormulationResult> {
  const instances = opts.chat ? chatGenerationInstances(task, opts.chat) : generationInstances(task);
  const requests = instances.map((instance) => ({ context: instance.context, until: ['\n'], maxTokens: GENERATION_MAX_TOKENS }));
  const outputs = await generateUntil(lm, requests, { signal: opts.signal, onProgress: (done, total) => opts.onProgress?.(task.name, 'gen', done, total) });
  const answers = instances.map((instance, i): GeneratedAnswer => ({
    id: instance.id, output: outputs[i]!, gold: instance.gold, correct: exactMatch(outputs[i]!, [instance.gold]), normalizedCorrect: normalizedMatch(outputs[i]!, [instance.gold]),
  }));
  opts.onScores?.(task.name, 'gen', answers);
  const room = lm.model.config.maxPositionEmbeddings - GENERATION_MAX_TOKENS;
  return {
    formulation: 'gen',
    accuracy: { exact_match: meanWithStderr(answers.map((a) => (a.correct ? 1 : 0))), normalized_match: meanWithStderr(answers.map((a) => (a.normalizedCorrect ? 1 : 0))) },
    primary: 'exact_match',
    bitsPerByte: { value: NaN, stderr: NaN, n: instances.length },
    chance: 0,
    promptHash: promptHash(instances),
    truncated: instances.filter((instance) => lm.tokenizer.encode(instance.context, { addSpecialTokens: false }).length > room).length,
  };
}

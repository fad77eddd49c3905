/**
 * Run tasks on a model: each formulation's instances scored once (choices, and pmi's unconditioned terms when
 * asked for), then every normalization's accuracy from the same scores, bits per byte of the gold answers,
 * chance, and OLMES's number: the better of the cloze (its primary normalization) and multiple-choice results.
 */
import type { ResultCache } from './cache.js';
import type { LoglikelihoodResult } from './loglikelihood.js';
import { accuracy, chanceAccuracy, goldBitsPerByte, scoreChoices, type ChoiceScores, type Estimate, type Normalization, type ScoredLanguageModel } from './multiple-choice.js';
import { promptHash, taskInstances, type Formulation, type Task } from './task.js';

export interface FormulationResult {
  readonly formulation: Formulation;
  /** Accuracy under each normalization computed (multiple-choice letters: 'none' only). */
  readonly accuracy: Partial<Record<Normalization, Estimate>>;
  readonly primary: Normalization;
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
  readonly formulations: readonly FormulationResult[];
  /** OLMES: the best formulation's primary accuracy. */
  readonly best: { formulation: Formulation; accuracy: Estimate };
}

export interface RunOptions {
  prefixToken: number;
  cache?: ResultCache<LoglikelihoodResult>;
  prefixSharing?: boolean;
  signal?: AbortSignal;
  onProgress?: (task: string, formulation: Formulation, done: number, total: number) => void;
  /** Per-instance scores, for --log-samples. */
  onScores?: (task: string, formulation: Formulation, scores: readonly ChoiceScores[]) => void;
}

export async function runTask(lm: ScoredLanguageModel, task: Task, opts: RunOptions): Promise<TaskResult> {
  const formulations: FormulationResult[] = [];
  for (const formulation of task.formulations) {
    const instances = taskInstances(task, formulation);
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
  const ranked = formulations.map((f) => ({ formulation: f.formulation, accuracy: f.accuracy[f.primary]! }));
  const best = ranked.reduce((a, b) => (b.accuracy.value > a.accuracy.value ? b : a));
  return { task: task.name, version: task.version, instances: task.documents.length, shots: task.fewshot.length, formulations, best };
}

/**
 * A suite: tasks reported together with their unweighted (macro) average, as OLMES reports MMLU (57 subjects)
 * and its task sets. Each formulation is averaged over the tasks with its primary normalization, and the suite's
 * number is the better of those averages — not a per-task maximum.
 */
import { dirname, resolve } from 'node:path';
import { FormatError } from '../core/errors.js';
import { readJsonObject } from '../io/json.js';
import type { Estimate } from './multiple-choice.js';
import { runTask, type RunOptions, type TaskResult } from './run.js';
import { readTask, taskFromSpec, type Formulation, type ReadTaskOptions, type Task } from './task.js';
import type { ScoredLanguageModel } from './multiple-choice.js';

export interface Suite {
  readonly name: string;
  readonly tasks: readonly Task[];
}

export interface SuiteResult {
  readonly suite: string;
  readonly tasks: readonly TaskResult[];
  /** Per formulation: the mean over tasks of each task's primary accuracy (standard errors combined as independent). */
  readonly average: readonly { formulation: Formulation; accuracy: Estimate }[];
  readonly best: { formulation: Formulation; accuracy: Estimate };
}

/** A task file or a suite file ({"name", "tasks": [files]}), told apart by its "tasks" list; the file is read once. */
export async function readTaskOrSuite(file: string, opts: ReadTaskOptions = {}): Promise<{ suite: Suite; task?: undefined } | { task: Task; suite?: undefined }> {
  const spec = readJsonObject(file);
  return Array.isArray(spec.tasks) ? { suite: await suiteFromSpec(spec, file, opts) } : { task: await taskFromSpec(spec, file, opts) };
}

export async function readSuite(file: string, opts: ReadTaskOptions = {}): Promise<Suite> {
  return suiteFromSpec(readJsonObject(file), file, opts);
}

async function suiteFromSpec(spec: Record<string, unknown>, file: string, opts: ReadTaskOptions): Promise<Suite> {
  const unknown = Object.keys(spec).filter((key) => key !== 'name' && key !== 'tasks');
  if (unknown.length) throw new FormatError(file, `unknown key ${JSON.stringify(unknown[0])} in a suite (known: name, tasks)`);
  if (typeof spec.name !== 'string') throw new FormatError(file, '"name" must be a string');
  const files = spec.tasks;
  if (!Array.isArray(files) || files.length === 0 || !files.every((f) => typeof f === 'string')) throw new FormatError(file, '"tasks" must be a non-empty list of task files');
  const tasks: Task[] = [];
  for (const task of files as string[]) tasks.push(await readTask(resolve(dirname(file), task), opts));
  const names = new Set<string>();
  for (const task of tasks) {
    if (names.has(task.name)) throw new FormatError(file, `task ${JSON.stringify(task.name)} appears twice`);
    names.add(task.name);
  }
  return { name: spec.name, tasks };
}

export async function runSuite(lm: ScoredLanguageModel, suite: Suite, opts: RunOptions): Promise<SuiteResult> {
  const tasks: TaskResult[] = [];
  for (const task of suite.tasks) tasks.push(await runTask(lm, task, opts));
  const formulations = [...new Set(tasks.flatMap((t) => t.formulations.map((f) => f.formulation)))];
  const average = formulations
    .filter((formulation) => tasks.every((t) => t.formulations.some((f) => f.formulation === formulation)))
    .map((formulation) => {
      const primaries = tasks.map((t) => {
        const result = t.formulations.find((f) => f.formulation === formulation)!;
        return result.accuracy[result.primary]!;
      });
      return { formulation, accuracy: macroAverage(primaries) };
    });
  if (average.length === 0) throw new FormatError(suite.name, 'its tasks share no formulation to average');
  const best = average.reduce((a, b) => (b.accuracy.value > a.accuracy.value ? b : a));
  return { suite: suite.name, tasks, average, best };
}

/** The unweighted mean of task estimates; the standard error of a mean of independent estimates. */
export function macroAverage(estimates: readonly Estimate[]): Estimate {
  const k = estimates.length;
  const value = estimates.reduce((s, e) => s + e.value, 0) / k;
  const stderr = Math.sqrt(estimates.reduce((s, e) => s + e.stderr ** 2, 0)) / k;
  return { value, stderr, n: estimates.reduce((s, e) => s + e.n, 0) };
}

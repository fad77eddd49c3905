/**
 * A suite: tasks (and sub-suites) reported together with their unweighted (macro) average, as OLMES reports MMLU
 * (57 subjects) and its task sets. Each formulation is averaged over the members with its primary normalization.
 * The suite's number combines the members one of two ways: the better of those averages (OLMES's MMLU: one
 * formulation for all subjects), or the mean of each member's own better formulation (OLMES's average over its ten
 * tasks, each scored by its better of CF and MCF — OLMES v0.1 utils.py combine_metrics, task_suites.py).
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
  /** Suites that count as one member each beside the tasks (OLMES's MMLU among its ten tasks). */
  readonly suites?: readonly Suite[];
  /** How the members' numbers combine (default 'formulation'); see SuiteResult.best. */
  readonly combine?: SuiteCombine;
}

export type SuiteCombine = 'formulation' | 'member';

/** A member's own number: a task's better formulation, a sub-suite's best ('per-member' when it combines by member). */
export interface MemberScore {
  readonly name: string;
  readonly formulation: Formulation | 'per-member';
  readonly accuracy: Estimate;
}

export interface SuiteResult {
  readonly suite: string;
  readonly combine: SuiteCombine;
  readonly tasks: readonly TaskResult[];
  readonly suites: readonly SuiteResult[];
  /** Per formulation: the mean over members of each one's primary accuracy (standard errors combined as independent). */
  readonly average: readonly { formulation: Formulation; accuracy: Estimate }[];
  readonly members: readonly MemberScore[];
  /** 'formulation': the better of the averages; 'member': the mean of the members' own numbers. */
  readonly best: { formulation: Formulation | 'per-member'; accuracy: Estimate };
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
  const suites: SuiteResult[] = [];
  for (const sub of suite.suites ?? []) suites.push(await runSuite(lm, sub, opts));
  return combineSuite(suite.name, suite.combine ?? 'formulation', tasks, suites);
}

/** A suite's numbers from its members' results. */
export function combineSuite(name: string, combine: SuiteCombine, tasks: readonly TaskResult[], suites: readonly SuiteResult[]): SuiteResult {
  // Each member's primary accuracy per formulation it has: a task's primary normalization, a sub-suite's average.
  const byFormulation = [
    ...tasks.map((t) => new Map(t.formulations.map((f) => [f.formulation, f.accuracy[f.primary]!]))),
    ...suites.map((s) => new Map(s.average.map((a) => [a.formulation, a.accuracy]))),
  ];
  const formulations = [...new Set(byFormulation.flatMap((m) => [...m.keys()]))];
  const average = formulations
    .filter((formulation) => byFormulation.every((m) => m.has(formulation)))
    .map((formulation) => ({ formulation, accuracy: macroAverage(byFormulation.map((m) => m.get(formulation)!)) }));
  const members: MemberScore[] = [
    ...tasks.map((t) => ({ name: t.task, ...t.best })),
    ...suites.map((s) => ({ name: s.suite, ...s.best })),
  ];
  if (members.length === 0) throw new FormatError(name, 'has no tasks');
  if (combine === 'member') {
    return { suite: name, combine, tasks, suites, average, members, best: { formulation: 'per-member', accuracy: macroAverage(members.map((m) => m.accuracy)) } };
  }
  if (average.length === 0) throw new FormatError(name, 'its tasks share no formulation to average');
  const best = average.reduce((a, b) => (b.accuracy.value > a.accuracy.value ? b : a));
  return { suite: name, combine, tasks, suites, average, members, best };
}

/** The unweighted mean of task estimates; the standard error of a mean of independent estimates. */
export function macroAverage(estimates: readonly Estimate[]): Estimate {
  const k = estimates.length;
  const value = estimates.reduce((s, e) => s + e.value, 0) / k;
  const stderr = Math.sqrt(estimates.reduce((s, e) => s + e.stderr ** 2, 0)) / k;
  return { value, stderr, n: estimates.reduce((s, e) => s + e.n, 0) };
}

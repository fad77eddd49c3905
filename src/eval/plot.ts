/**
 * `olmoe eval-plot`: models or checkpoints compared on the tasks of their `olmoe eval --output` results files — per
 * task, each model's OLMES number (its best formulation's primary accuracy) as a bar with a ±1 standard error bar,
 * and the task's chance level as a tick. Suites appear as their tasks (and sub-suites) plus their own number.
 */
import { basename, extname } from 'node:path';
import { FormatError, InputError } from '../core/errors.js';
import { AtomicFile } from '../io/atomic-file.js';
import { readJsonObject } from '../io/json.js';
import { renderPng, renderSvg, titledSpec, type Spec } from '../plot/figures.js';

/** One bar: a model's number on a task. */
export interface EvalPoint {
  readonly task: string;
  readonly formulation: string;
  readonly accuracy: number;
  readonly stderr: number;
  readonly chance: number;
}

export interface EvalReport {
  readonly file: string;
  label: string;
  readonly points: readonly EvalPoint[];
}

type Json = Record<string, unknown>;

function estimate(value: unknown, where: string, file: string): { value: number; stderr: number } {
  const e = value as Json | null;
  if (typeof e !== 'object' || e === null || typeof e.value !== 'number' || typeof (e.stderr ?? 0) !== 'number') throw new FormatError(file, `${where}: expected an estimate {value, stderr}`);
  return { value: e.value, stderr: typeof e.stderr === 'number' ? e.stderr : Number.NaN };
}

function list(value: unknown, where: string, file: string): Json[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))) throw new FormatError(file, `${where}: expected a list of objects`);
  return value as Json[];
}

/** A task result's OLMES number: best formulation, its primary accuracy; chance of that formulation. */
function taskPoint(result: Json, where: string, file: string): EvalPoint {
  if (typeof result.task !== 'string') throw new FormatError(file, `${where}.task: expected a string`);
  const best = result.best as Json | undefined;
  if (typeof best?.formulation !== 'string') throw new FormatError(file, `${where}.best.formulation: expected a string`);
  const formulation = list(result.formulations, `${where}.formulations`, file).find((f) => f.formulation === best.formulation);
  const accuracy = estimate(best.accuracy, `${where}.best.accuracy`, file);
  return { task: result.task, formulation: best.formulation, accuracy: accuracy.value, stderr: accuracy.stderr, chance: typeof formulation?.chance === 'number' ? formulation.chance : Number.NaN };
}

/**
 * A suite's points: its sub-suites' (OLMES's MMLU inside the ten-task `olmes`), its tasks', then its own number,
 * whose chance is the mean of its members' chances.
 */
function suitePoints(suite: Json, where: string, file: string): EvalPoint[] {
  if (typeof suite.suite !== 'string') throw new FormatError(file, `${where}.suite: expected a string`);
  const subs = list(suite.suites, `${where}.suites`, file).map((sub, i) => suitePoints(sub, `${where}.suites[${i}]`, file));
  const tasks = list(suite.tasks, `${where}.tasks`, file).map((t, i) => taskPoint(t, `${where}.tasks[${i}]`, file));
  const chances = [...tasks.map((p) => p.chance), ...subs.map((points) => points[points.length - 1]!.chance)];
  const best = suite.best as Json | undefined;
  const accuracy = estimate(best?.accuracy, `${where}.best.accuracy`, file);
  const own = { task: `${suite.suite} (average)`, formulation: String(best?.formulation), accuracy: accuracy.value, stderr: accuracy.stderr, chance: chances.reduce((a, b) => a + b, 0) / chances.length };
  return [...subs.flat(), ...tasks, own];
}

/** Read an `olmoe eval --output` file; the label defaults to the file name without extension. */
export function readEvalReport(file: string, label = basename(file, extname(file))): EvalReport {
  const json = readJsonObject(file);
  const points = list(json.results, 'results', file).map((r, i) => taskPoint(r, `results[${i}]`, file));
  list(json.suites, 'suites', file).forEach((suite, s) => points.push(...suitePoints(suite, `suites[${s}]`, file)));
  if (points.length === 0) throw new FormatError(file, 'holds no task results (expected "results" or "suites" as olmoe eval --output writes them)');
  return { file, label, points };
}

/** Grouped bars: x = task, one bar per model, ±1 stderr whiskers, chance ticks. */
export function evalComparisonSpec(reports: readonly EvalReport[]): Spec {
  const rows = reports.flatMap((r) => r.points.map((p) => ({ model: r.label, task: p.task, formulation: p.formulation, accuracy: p.accuracy, lo: p.accuracy - (Number.isFinite(p.stderr) ? p.stderr : 0), hi: p.accuracy + (Number.isFinite(p.stderr) ? p.stderr : 0), chance: p.chance })));
  const tasks = [...new Set(rows.map((r) => r.task))];
  const models = reports.map((r) => r.label);
  const x = { field: 'task', type: 'nominal', title: null, sort: tasks, axis: { labelAngle: -30, labelLimit: 200 } };
  const offset = { field: 'model', type: 'nominal', sort: models };
  const color = { field: 'model', type: 'nominal', title: 'model', sort: models, scale: { scheme: 'tableau10' }, legend: { labelLimit: 400 } };
  const percent = { format: '.0%' };
  return titledSpec('Task accuracy by model', ['OLMES number per task: the best formulation\'s primary normalization; whiskers ±1 standard error; ticks: chance'], {
    data: { values: rows },
    width: Math.max(240, tasks.length * (24 * models.length + 24)),
    height: 260,
    layer: [
      { mark: 'bar', encoding: { x, xOffset: offset, y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', axis: percent, scale: { domain: [0, 1] } }, color, tooltip: [{ field: 'model' }, { field: 'task' }, { field: 'formulation' }, { field: 'accuracy', format: '.3f' }] } },
      { mark: { type: 'rule', color: '#222' }, encoding: { x, xOffset: offset, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
      { transform: [{ filter: 'isFinite(datum.chance)' }], mark: { type: 'tick', color: '#555', thickness: 2, strokeDash: [3, 2] }, encoding: { x, y: { aggregate: 'mean', field: 'chance', type: 'quantitative' } } },
    ],
  });
}

/** Write the comparison as SVG and PNG next to each other (`out` names either; the other extension is added). */
export async function plotEvalComparison(reports: readonly EvalReport[], out: string): Promise<string[]> {
  if (reports.length === 0) throw new InputError('give at least one results file');
  const labels = reports.map((r) => r.label);
  if (new Set(labels).size !== labels.length) throw new InputError(`model labels must differ: ${labels.join(', ')} (use --label)`);
  const stem = /\.(svg|png)$/i.test(out) ? out.slice(0, -4) : out;
  const svg = await renderSvg(evalComparisonSpec(reports));
  const files = [`${stem}.svg`, `${stem}.png`];
  for (const [path, bytes] of [[files[0]!, Buffer.from(svg)], [files[1]!, renderPng(svg)]] as const) {
    const file = new AtomicFile(path);
    file.write(bytes);
    file.finish();
  }
  return files;
}

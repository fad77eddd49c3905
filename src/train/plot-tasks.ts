/**
 * In-loop task accuracy over training (the paper's downstream curves, Figures 2–4 and section 4): one panel per
 * task, accuracy against step with a ±1 standard error band and the task's chance level dashed. One run: a line
 * per formulation and normalization; several runs (ablations): a line per run, each formulation's primary
 * normalization only, so that the panels stay readable.
 */
import { titledSpec, type Spec } from '../plot/figures.js';
import type { TaskLogRecord, TrainingRun } from './metrics-log.js';

type Row = Record<string, string | number>;

const STEP = { field: 'step', type: 'quantitative', title: 'step' } as const;
const PERCENT_AXIS = { format: '.0%' } as const;

function seriesName(r: TaskLogRecord): string {
  return r.normalization === 'primary' ? `${r.formulation} (macro avg.)` : `${r.formulation} ${r.normalization}`;
}

function taskRows(runs: readonly TrainingRun[]): Row[] {
  const several = runs.length > 1;
  return runs.flatMap((run) =>
    run.tasks
      .filter((r) => Number.isFinite(r.accuracy) && (!several || r.primary))
      .map((r) => {
        const stderr = Number.isFinite(r.stderr) ? r.stderr : 0;
        return { run: run.label, task: r.task, series: several ? `${run.label} · ${r.formulation}` : seriesName(r), step: r.step, accuracy: r.accuracy, lo: r.accuracy - stderr, hi: r.accuracy + stderr, chance: r.chance };
      }),
  );
}

/** The accuracy-vs-step figure, or undefined when no run logged task records. */
export function taskAccuracySpec(runs: readonly TrainingRun[]): Spec | undefined {
  const rows = taskRows(runs);
  if (rows.length === 0) return undefined;
  const tasks = [...new Set(rows.map((r) => r.task as string))];
  const color = { field: 'series', type: 'nominal', title: runs.length > 1 ? 'run · formulation' : 'formulation, normalization', scale: { scheme: 'tableau10' }, legend: { titleLimit: 320, labelLimit: 320 } };
  const y = { field: 'accuracy', type: 'quantitative', title: 'accuracy', axis: PERCENT_AXIS, scale: { zero: false } };
  return titledSpec('In-loop task accuracy', [
    'band: ±1 standard error; dashed: chance',
    runs.length > 1 ? 'each formulation\'s primary normalization (OLMES\'s number)' : 'every formulation and normalization scored',
  ], {
    data: { values: rows },
    facet: { field: 'task', type: 'nominal', title: null, sort: tasks },
    columns: Math.min(3, tasks.length),
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: 260,
      height: 170,
      layer: [
        { mark: { type: 'area', opacity: 0.15 }, encoding: { x: STEP, y: { field: 'lo', type: 'quantitative', axis: PERCENT_AXIS }, y2: { field: 'hi' }, color } },
        { mark: { type: 'line', point: true, strokeWidth: 1.5 }, encoding: { x: STEP, y, color } },
        { mark: { type: 'rule', strokeDash: [4, 3], color: '#555' }, encoding: { y: { aggregate: 'mean', field: 'chance', type: 'quantitative' } } },
      ],
    },
  });
}

/** Markdown lines: per run and task, the last evaluation's best formulation (primary normalization) ± stderr. */
export function taskSummary(runs: readonly TrainingRun[]): string[] {
  const tasks = [...new Set(runs.flatMap((r) => r.tasks.map((t) => t.task)))];
  if (tasks.length === 0) return [];
  const cell = (text: string) => text.replaceAll('|', '\\|');
  const lines = ['', '## In-loop task accuracy (last evaluation, best formulation)', '', `| task | ${runs.map((r) => cell(r.label)).join(' | ')} |`, `|---|${runs.map(() => '---:').join('|')}|`];
  for (const task of tasks) lines.push(`| ${cell(task)} | ${runs.map((run) => formatBest(finalBest(run, task))).join(' | ')} |`);
  return lines;
}

/** The last step's records of `task`: the primary normalization of the formulation that scores best (OLMES). */
export function finalBest(run: TrainingRun, task: string): TaskLogRecord | undefined {
  const records = run.tasks.filter((r) => r.task === task && r.primary && Number.isFinite(r.accuracy));
  const last = Math.max(...records.map((r) => r.step));
  return records.filter((r) => r.step === last).reduce<TaskLogRecord | undefined>((best, r) => (best && best.accuracy >= r.accuracy ? best : r), undefined);
}

export function formatBest(r: TaskLogRecord | undefined): string {
  return r ? `${(100 * r.accuracy).toFixed(1)} ± ${(100 * r.stderr).toFixed(1)} (${r.formulation}, step ${r.step})` : '–';
}

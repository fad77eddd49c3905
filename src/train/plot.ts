/**
 * `olmoe plot-train`: training curves of one or more runs (metrics logs from the trainer), overlaid by run label
 * for ablations such as "with LBL" vs "without LBL": losses, learning rate, gradient norm, throughput, expert load
 * and routing entropy per layer, validation CE per domain, in-loop task accuracy, and a summary table. Figures are SVG and PNG.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { InputError, withIo } from '../core/errors.js';
import { AtomicFile } from '../io/atomic-file.js';
import { renderPng, renderSvg, titledSpec, type Spec } from '../plot/figures.js';
import { TRAIN_SCALARS, type TrainLogRecord, type TrainingRun } from './metrics-log.js';
import { taskAccuracySpec, taskSummary } from './plot-tasks.js';

export interface PlotTrainingOptions {
  /** Train records per run beyond this are averaged in consecutive buckets, so that figures stay small (default 500). */
  maxPoints?: number;
}

export interface PlotTrainingResult {
  /** Written files, relative to the output folder. */
  files: string[];
  /** Figures left out because no run logged their values. */
  skipped: string[];
}

type Row = Record<string, string | number>;

const STEP = { field: 'step', type: 'quantitative', title: 'step' } as const;
const RUN = { field: 'run', type: 'nominal', title: 'run', scale: { scheme: 'tableau10' } } as const;
const PANEL = { width: 320, height: 180 } as const;
const LOSS_PANELS = [['loss', 'loss (total)'], ['ce', 'cross-entropy'], ['lbl', 'load-balancing loss'], ['zloss', 'router z-loss']] as const;

export async function plotTraining(runs: readonly TrainingRun[], outDir: string, opts: PlotTrainingOptions = {}): Promise<PlotTrainingResult> {
  if (runs.length === 0) throw new InputError('give at least one metrics file');
  const labels = runs.map((r) => r.label);
  if (new Set(labels).size !== labels.length) throw new InputError(`run labels must differ: ${labels.join(', ')}`);
  withIo(outDir, 'create folder', () => mkdirSync(outDir, { recursive: true }));
  const result: PlotTrainingResult = { files: [], skipped: [] };
  const write = (name: string, content: string | Uint8Array) => {
    const file = new AtomicFile(join(outDir, name));
    file.write(typeof content === 'string' ? new TextEncoder().encode(content) : content);
    file.finish();
    result.files.push(name);
  };
  const figure = async (name: string, spec: Spec | undefined) => {
    if (!spec) return void result.skipped.push(name);
    const svg = await renderSvg(spec);
    write(`${name}.svg`, svg);
    write(`${name}.png`, renderPng(svg));
  };
  const maxPoints = opts.maxPoints ?? 500;
  const averaged = runs.map((run) => ({ run: run.label, train: bucketMeans(run.train, maxPoints) }));
  const note = averageNote(runs, maxPoints);
  await figure('loss', lossSpec(averaged, runs, note));
  await figure('lr', stepSpec('Learning rate', lines(note), scalarRows(averaged, 'lr'), 'learning rate'));
  await figure('grad-norm', stepSpec('Gradient norm', lines('global L2 norm before clipping', note), scalarRows(averaged, 'gradNorm'), 'grad norm'));
  await figure('throughput', stepSpec('Throughput', lines('training tokens per second', note), scalarRows(averaged, 'tokensPerSecond'), 'tokens / s'));
  await figure('expert-load', expertLoadSpec(averaged, note));
  await figure('routing-entropy', entropySpec(averaged, note));
  await figure('validation', validationSpec(runs));
  await figure('tasks', taskAccuracySpec(runs));
  write('summary.md', summaryTable(runs));
  return result;
}

/** Consecutive records averaged in buckets of ⌈n / maxPoints⌉; each bucket is plotted at its last step. */
export function bucketMeans(records: readonly TrainLogRecord[], maxPoints: number): TrainLogRecord[] {
  const size = Math.max(1, Math.ceil(records.length / maxPoints));
  if (size === 1) return records.slice();
  const out: TrainLogRecord[] = [];
  for (let start = 0; start < records.length; start += size) out.push(average(records.slice(start, start + size)));
  return out;
}

function average(group: readonly TrainLogRecord[]): TrainLogRecord {
  const last = group.at(-1)!;
  const record: TrainLogRecord = { ...last };
  for (const key of TRAIN_SCALARS) if (key !== 'tokens') record[key] = mean(group.map((r) => r[key]));
  if (last.expertLoad) record.expertLoad = last.expertLoad.map((row, l) => row.map((_, e) => mean(group.map((r) => r.expertLoad?.[l]?.[e] ?? Number.NaN))));
  if (last.routingEntropy) record.routingEntropy = last.routingEntropy.map((_, l) => mean(group.map((r) => r.routingEntropy?.[l] ?? Number.NaN)));
  return record;
}

/** The mean of the finite values (NaN when there are none). */
function mean(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite);
  return finite.length ? finite.reduce((s, v) => s + v, 0) / finite.length : Number.NaN;
}

function averageNote(runs: readonly TrainingRun[], maxPoints: number): string {
  const size = Math.max(...runs.map((r) => Math.ceil(r.train.length / maxPoints)));
  return size > 1 ? `train values averaged over up to ${size} steps per point` : '';
}

/** Subtitle lines, leaving out empty ones. */
function lines(...texts: string[]): string[] {
  return texts.filter((t) => t !== '');
}

type Averaged = { run: string; train: TrainLogRecord[] }[];

function scalarRows(runs: Averaged, key: (typeof TRAIN_SCALARS)[number]): Row[] {
  return runs.flatMap(({ run, train }) => train.filter((r) => Number.isFinite(r[key])).map((r) => ({ run, step: r.step, value: r[key] })));
}

function stepSpec(title: string, subtitle: string | string[], rows: Row[], yTitle: string): Spec | undefined {
  if (rows.length === 0) return undefined;
  return titledSpec(title, subtitle, {
    data: { values: rows },
    width: 480,
    height: 240,
    mark: { type: 'line', strokeWidth: 1.5 },
    encoding: { x: STEP, y: { field: 'value', type: 'quantitative', title: yTitle, scale: { zero: false } }, color: RUN },
  });
}

/** One panel per loss term; validation CE (domain "all") as points on the cross-entropy panel. */
function lossSpec(averaged: Averaged, runs: readonly TrainingRun[], note: string): Spec | undefined {
  const rows: Row[] = LOSS_PANELS.flatMap(([key, metric]) => scalarRows(averaged, key).map((r) => ({ ...r, metric, source: 'train' })));
  for (const run of runs) {
    for (const v of run.valid) if (v.domain === 'all' && Number.isFinite(v.ce)) rows.push({ run: run.label, step: v.step, value: v.ce, metric: 'cross-entropy', source: 'validation' });
  }
  if (rows.length === 0) return undefined;
  const y = { field: 'value', type: 'quantitative', title: null, scale: { zero: false } };
  return titledSpec('Training loss', lines('lines: train; points: validation CE over all domains', note), {
    data: { values: rows },
    facet: { field: 'metric', type: 'nominal', title: null, sort: LOSS_PANELS.map(([, metric]) => metric) },
    columns: 2,
    resolve: { scale: { y: 'independent' } },
    spec: {
      ...PANEL,
      layer: [
        { transform: [{ filter: "datum.source === 'train'" }], mark: { type: 'line', strokeWidth: 1.5 }, encoding: { x: STEP, y, color: RUN } },
        { transform: [{ filter: "datum.source === 'validation'" }], mark: { type: 'point', filled: true, size: 36, shape: 'diamond' }, encoding: { x: STEP, y, color: RUN } },
      ],
    },
  });
}

/** Panels per layer over steps (layer names sort in numeric order). */
function layerPanels(title: string, subtitle: string[], rows: Row[], yTitle: string, reference: number | undefined, extra: object = {}): Spec {
  const layers = [...new Set(rows.map((r) => r.layer as string))];
  const y = { field: 'value', type: 'quantitative', title: yTitle };
  const line = { mark: { type: 'line', strokeWidth: 1.5 }, encoding: { x: STEP, y, color: RUN, ...extra } };
  const rule = { mark: { type: 'rule', strokeDash: [4, 3], color: '#555' }, encoding: { y: { datum: reference } } };
  return titledSpec(title, subtitle, {
    data: { values: rows },
    facet: { field: 'layer', type: 'nominal', title: null, sort: layers },
    columns: Math.min(4, layers.length),
    spec: { width: 200, height: 120, layer: reference === undefined ? [line] : [line, rule] },
  });
}

/** The number of experts, when every run that logs expert load has the same. */
function commonExperts(runs: Averaged): number | undefined {
  const counts = new Set(runs.flatMap(({ train }) => train.flatMap((r) => r.expertLoad?.map((row) => row.length) ?? [])));
  return counts.size === 1 ? [...counts][0] : undefined;
}

/** Largest and smallest expert share per layer: a balanced router keeps both near 1/E. */
function expertLoadSpec(runs: Averaged, note: string): Spec | undefined {
  const rows: Row[] = runs.flatMap(({ run, train }) =>
    train.flatMap((r) => (r.expertLoad ?? []).flatMap((shares, l) => {
      const finite = shares.filter(Number.isFinite);
      if (finite.length === 0) return [];
      const layer = `layer ${l}`;
      return [{ run, step: r.step, layer, stat: 'largest', value: Math.max(...finite) }, { run, step: r.step, layer, stat: 'smallest', value: Math.min(...finite) }];
    })));
  if (rows.length === 0) return undefined;
  const experts = commonExperts(runs);
  const uniform = experts ? `; dashed: uniform 1/${experts}` : '';
  return layerPanels('Expert load', lines(`largest (solid) and smallest (dotted) share of routed slots per layer${uniform}`, note), rows, 'share', experts ? 1 / experts : undefined,
    { strokeDash: { field: 'stat', type: 'nominal', title: 'expert', scale: { domain: ['largest', 'smallest'], range: [[1, 0], [2, 2]] } } });
}

function entropySpec(runs: Averaged, note: string): Spec | undefined {
  const rows: Row[] = runs.flatMap(({ run, train }) =>
    train.flatMap((r) => (r.routingEntropy ?? []).flatMap((value, l) => (Number.isFinite(value) ? [{ run, step: r.step, layer: `layer ${l}`, value }] : []))));
  if (rows.length === 0) return undefined;
  const experts = commonExperts(runs);
  const ceiling = experts ? `; dashed: ln ${experts}, uniform routing` : '';
  return layerPanels('Routing entropy', lines(`entropy of the router distribution per layer, nats${ceiling}`, note), rows, 'nats', experts ? Math.log(experts) : undefined);
}

function validationSpec(runs: readonly TrainingRun[]): Spec | undefined {
  const rows: Row[] = runs.flatMap((run) => run.valid.filter((v) => Number.isFinite(v.ce)).map((v) => ({ run: run.label, step: v.step, domain: v.domain, value: v.ce })));
  if (rows.length === 0) return undefined;
  const domains = [...new Set(rows.map((r) => r.domain as string))].sort((a, b) => (a === 'all' ? -1 : b === 'all' ? 1 : a.localeCompare(b)));
  return titledSpec('Validation cross-entropy', 'per domain ("all": every validation token)', {
    data: { values: rows },
    facet: { field: 'domain', type: 'nominal', title: null, sort: domains },
    columns: Math.min(3, domains.length),
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: 240,
      height: 150,
      mark: { type: 'line', point: true, strokeWidth: 1.5 },
      encoding: { x: STEP, y: { field: 'value', type: 'quantitative', title: 'CE (nats)', scale: { zero: false } }, color: RUN },
    },
  });
}

/** Markdown: per run the last step, final train loss and the best validation CE over all domains. */
export function summaryTable(runs: readonly TrainingRun[]): string {
  const cell = (text: string) => text.replaceAll('|', '\\|');
  const num = (x: number | undefined, digits = 4) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits));
  const lines = ['# Training runs', '', '| run | file | last step | tokens | final train loss | final train CE | best valid CE (all) | at step |', '|---|---|---:|---:|---:|---:|---:|---:|'];
  for (const run of runs) {
    const last = run.train.at(-1);
    const best = bestValid(run, 'all');
    lines.push(`| ${cell(run.label)} | ${cell(run.file)} | ${last?.step ?? '–'} | ${Number.isFinite(last?.tokens) ? last!.tokens : '–'} | ${num(last?.loss)} | ${num(last?.ce)} | ${num(best?.ce)} | ${best?.step ?? '–'} |`);
  }
  const domains = [...new Set(runs.flatMap((r) => r.valid.map((v) => v.domain)))].filter((d) => d !== 'all').sort();
  if (domains.length) {
    lines.push('', '## Best validation CE per domain', '', `| domain | ${runs.map((r) => cell(r.label)).join(' | ')} |`, `|---|${runs.map(() => '---:').join('|')}|`);
    for (const domain of domains) lines.push(`| ${cell(domain)} | ${runs.map((r) => num(bestValid(r, domain)?.ce)).join(' | ')} |`);
  }
  lines.push(...taskSummary(runs));
  const warnings = runs.flatMap((r) => r.warnings);
  if (warnings.length) lines.push('', '## Warnings', '', ...warnings.map((w) => `- ${w}`));
  return `${lines.join('\n')}\n`;
}

function bestValid(run: TrainingRun, domain: string) {
  return run.valid.filter((v) => v.domain === domain && Number.isFinite(v.ce)).reduce<(typeof run.valid)[number] | undefined>((best, v) => (best && best.ce <= v.ce ? best : v), undefined);
}

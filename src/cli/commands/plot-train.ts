/** `olmoe plot-train METRICS.jsonl... --out DIR`: training curves of one run, or of several overlaid by label. */
import type { Command } from 'commander';
import { join } from 'node:path';
import { InputError, plotTraining, readTrainingRun } from '../../index.js';

interface PlotTrainFlags {
  out: string;
  label?: string[];
}

export function registerPlotTrain(program: Command): void {
  program
    .command('plot-train')
    .description('training curves from trainer metrics logs (JSONL): loss terms, learning rate, grad norm, throughput, expert load, routing entropy, validation CE → SVG/PNG figures and summary.md; several logs are overlaid to compare runs')
    .argument('<metrics...>', 'metrics JSONL files written by the trainer')
    .requiredOption('--out <dir>', 'output folder')
    .option('--label <names...>', 'a name per file, in order, for legends and the summary (default: the file names)')
    .action(runPlotTrain);
}

async function runPlotTrain(paths: string[], flags: PlotTrainFlags): Promise<void> {
  const labels = flags.label;
  if (labels && labels.length !== paths.length) throw new InputError(`--label: ${labels.length} labels for ${paths.length} metrics files`);
  const runs = paths.map((path, i) => readTrainingRun(path, labels?.[i]));
  if (!labels && new Set(runs.map((r) => r.label)).size < runs.length) runs.forEach((run, i) => (run.label = paths[i]!)); // same file names in different folders
  for (const warning of runs.flatMap((r) => r.warnings)) process.stderr.write(`warning: ${warning}\n`);
  const { files, skipped } = await plotTraining(runs, flags.out);
  if (skipped.length) process.stderr.write(`no values logged for: ${skipped.join(', ')}\n`);
  process.stderr.write(`wrote ${files.length} files to ${flags.out}; see ${join(flags.out, 'summary.md')}\n`);
}

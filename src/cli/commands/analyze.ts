/** `olmoe analyze TRACE... --out DIR`: the paper's routing analyses as figures, an HTML report, JSON and CSV. */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { analyzeTraces, InputError, loadTokenizer, openTrace, type OlmoeTokenizer } from '../../index.js';
import { parseIds, parsePositiveInteger } from '../common.js';

interface AnalyzeFlags {
  out: string;
  layers?: string;
  minCount: number;
  tokenizer?: string;
  names?: string;
  quiet?: boolean;
}

export function registerAnalyze(program: Command): void {
  program
    .command('analyze')
    .description('routing analyses of traces (load, domain and vocabulary specialization, co-activation; router saturation across several traces of the same tokens, oldest first) → figures, report.html, metrics.json, CSV')
    .argument('<traces...>', 'trace folders from `olmoe trace`; with several, the last is the final checkpoint')
    .requiredOption('--out <dir>', 'output folder')
    .option('--layers <list>', 'layers for the per-layer figures (default: first, middle, last)')
    .option('--min-count <n>', 'leave out tokens seen fewer times from vocabulary specialization', parsePositiveInteger('--min-count'), 1)
    .option('--tokenizer <model>', 'model folder, GGUF or hub id whose tokenizer shows token text (default: the traced model, when it is a local path)')
    .option('--names <list>', 'comma-separated names for the traces in the figures (e.g. training steps)')
    .option('-q, --quiet', 'no progress output')
    .action(runAnalyze);
}

async function runAnalyze(paths: string[], flags: AnalyzeFlags): Promise<void> {
  const traces = paths.map((path) => openTrace(path));
  const names = flags.names?.split(',').map((n) => n.trim());
  if (names && names.length !== traces.length) throw new InputError(`--names: ${names.length} names for ${traces.length} traces`);
  const source = flags.tokenizer ?? (existsSync(traces.at(-1)!.header.model.name) ? traces.at(-1)!.header.model.name : undefined);
  let tokenizer: OlmoeTokenizer | undefined;
  if (source) tokenizer = await loadTokenizer(source);
  const started = performance.now();
  const result = await analyzeTraces(traces, flags.out, {
    layers: flags.layers === undefined ? undefined : parseIds(flags.layers, '--layers'),
    minCount: flags.minCount,
    names,
    decode: tokenizer ? (id) => tokenizer!.decode([id]) : undefined,
    onProgress: (step) => {
      if (!flags.quiet) process.stderr.write(`analyze: ${step}\n`);
    },
  });
  process.stderr.write(`wrote ${result.files.length} files to ${flags.out} in ${((performance.now() - started) / 1000).toFixed(1)} s; open ${join(flags.out, 'report.html')}\n`);
}

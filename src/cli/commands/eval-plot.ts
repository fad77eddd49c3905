/** `olmoe eval-plot RESULTS.json... --out FIG.svg`: models or checkpoints side by side on their `olmoe eval` tasks. */
import type { Command } from 'commander';
import { InputError, plotEvalComparison, readEvalReport } from '../../index.js';

interface EvalPlotFlags {
  out: string;
  label?: string[];
}

export function registerEvalPlot(program: Command): void {
  program
    .command('eval-plot')
    .description('compare models or checkpoints: per task, each results file\'s best-formulation accuracy with ±1 standard error bars and chance (SVG and PNG)')
    .argument('<results...>', 'results files written by olmoe eval --output')
    .requiredOption('--out <file>', 'figure path (.svg; a .png is written beside it)')
    .option('--label <names...>', 'a name per results file, in order (default: the file names)')
    .action(async (paths: string[], flags: EvalPlotFlags) => {
      if (flags.label && flags.label.length !== paths.length) throw new InputError(`--label: ${flags.label.length} labels for ${paths.length} results files`);
      const reports = paths.map((path, i) => readEvalReport(path, flags.label?.[i]));
      const files = await plotEvalComparison(reports, flags.out);
      process.stderr.write(`wrote ${files.join(' and ')}\n`);
    });
}

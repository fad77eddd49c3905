/** `olmoe ablate NAME`: one of the paper's small-scale ablations, trained and plotted into one folder. */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ABLATIONS, createBackend, InputError, runAblation } from '../../index.js';
import { parseInteger, parsePositiveInteger } from '../common.js';

interface AblateFlags {
  tokenizer: string;
  train: string[];
  valid: string[];
  out: string;
  runs: string;
  steps: number;
  seq: number;
  batch: number;
  seed: number;
  seeds: number;
  evalEvery?: number;
  backend?: string;
  threads?: number;
  logEvery: number;
  evalTasks?: string[];
  evalTasksEvery?: number;
  evalTasksLimit?: number;
}

export function registerAblate(program: Command): void {
  program
    .command('ablate')
    .description(`train the variants of one of the paper's ablations and plot them side by side (${ABLATIONS.map((a) => a.name).join(', ')}, or all)`)
    .argument('<name>', `${ABLATIONS.map((a) => a.name).join(' | ')} | all`)
    .requiredOption('--tokenizer <file>', 'tokenizer.json the shards were made with')
    .requiredOption('--train <shards...>', 'training token shards')
    .requiredOption('--valid <shards...>', 'validation token shards')
    .option('--out <dir>', 'results folder: figures, README and metrics (one subfolder per ablation)', join('docs', 'ablations'))
    .option('--runs <dir>', 'training runs with their checkpoints (one subfolder per ablation)', join('.olmoe', 'ablations'))
    .option('--steps <n>', 'optimizer steps per variant', parsePositiveInteger('--steps'), 400)
    .option('--seq <n>', 'sequence length', parsePositiveInteger('--seq'), 128)
    .option('--batch <n>', 'sequences per step', parsePositiveInteger('--batch'), 8)
    .option('--seed <n>', 'seed shared by every variant (the first one with --seeds)', parseInteger('--seed'), 0)
    .option('--seeds <n>', 'runs per variant, seeds seed … seed + n − 1 (init and data order); mean ± standard error over them', parsePositiveInteger('--seeds'), 1)
    .option('--eval-every <n>', 'validation every n steps (default: steps / 10); tokens-to-reach reads this curve', parsePositiveInteger('--eval-every'))
    .option('--backend <name>', 'native | reference')
    .option('--threads <n>', 'native backend threads', parsePositiveInteger('--threads'))
    .option('--log-every <n>', 'progress line every n steps', parsePositiveInteger('--log-every'), 50)
    .option('--eval-tasks <files...>', 'in-loop evaluation: task or suite files (as olmoe eval --tasks) scored during training; accuracy beside validation CE in the report')
    .option('--eval-tasks-every <n>', 'score the tasks every n steps (default: steps / 10)', parsePositiveInteger('--eval-tasks-every'))
    .option('--eval-tasks-limit <n>', 'at most n instances per task', parsePositiveInteger('--eval-tasks-limit'))
    .action(async (name: string, flags: AblateFlags) => {
      const chosen = name === 'all' ? ABLATIONS : ABLATIONS.filter((a) => a.name === name);
      if (!chosen.length) throw new InputError(`unknown ablation ${JSON.stringify(name)} (choose ${ABLATIONS.map((a) => a.name).join(', ')} or all)`);
      if (!flags.evalTasks && (flags.evalTasksEvery !== undefined || flags.evalTasksLimit !== undefined)) throw new InputError('--eval-tasks-every / --eval-tasks-limit need --eval-tasks');
      for (const file of flags.evalTasks ?? []) if (!existsSync(file)) throw new InputError(`--eval-tasks: ${file}: no such task or suite file`);
      if (flags.evalTasksEvery !== undefined && flags.evalTasksEvery > flags.steps) throw new InputError(`--eval-tasks-every ${flags.evalTasksEvery} is more than --steps ${flags.steps}: the tasks would never be scored`);
      if (flags.evalEvery !== undefined && flags.steps % flags.evalEvery !== 0) throw new InputError(`--eval-every ${flags.evalEvery} does not divide --steps ${flags.steps}: the final loss would not be validated`);
      const backend = createBackend(flags.backend, { threads: flags.threads });
      const data = {
        tokenizer: flags.tokenizer, train: flags.train, valid: flags.valid, steps: flags.steps, sequenceLength: flags.seq, batchSize: flags.batch, seed: flags.seed, seeds: flags.seeds, evalEvery: flags.evalEvery,
        evalTasks: flags.evalTasks?.map((file) => resolve(file)), evalTasksEvery: flags.evalTasksEvery, evalTasksLimit: flags.evalTasksLimit,
      };
      const say = (line: string) => process.stderr.write(line + '\n');
      for (const ablation of chosen) {
        const out = join(flags.out, ablation.name);
        const report = await runAblation(ablation, data, out, {
          backend, say, runs: join(flags.runs, ablation.name), threads: (backend as { threads?: number }).threads,
          onStep: (label, r, seed) => r.step % flags.logEvery === 0 && say(`  ${label} (seed ${seed}): step ${r.step}/${flags.steps} loss ${r.loss.toFixed(4)} ${r.tokensPerSecond.toFixed(0)} tok/s`),
        });
        process.stdout.write(report + '\n');
      }
    });
}

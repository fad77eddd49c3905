#!/usr/bin/env node
/** The `olmoe` command. Machine-readable output goes to stdout, messages and progress to stderr. */
import { Command, CommanderError } from 'commander';
import { OlmoeError } from '../index.js';
import { registerAnalyze } from './commands/analyze.js';
import { registerBench } from './commands/bench.js';
import { registerChat } from './commands/chat.js';
import { registerConvert } from './commands/convert.js';
import { registerCreateRandom } from './commands/create-random.js';
import { registerDemo } from './commands/demo.js';
import { registerDownload } from './commands/download.js';
import { registerCast, registerFuse } from './commands/fuse.js';
import { registerGenerate } from './commands/generate.js';
import { registerInfo } from './commands/info.js';
import { registerLogits, registerRoute } from './commands/route.js';
import { registerPrune } from './commands/prune.js';
import { registerServe } from './commands/serve.js';
import { registerTokenize } from './commands/tokenize.js';
import { registerTrace } from './commands/trace.js';
import { registerPlotTrain } from './commands/plot-train.js';
import { registerShard, registerTrainTokenizer } from './commands/train-data.js';
import { registerTrain } from './commands/train.js';
import { registerAdapt } from './commands/adapt.js';
import { registerEvaluate } from './commands/evaluate.js';
import { registerAblate } from './commands/ablate.js';
import { registerEval } from './commands/eval.js';
import { registerExportOlmo } from './commands/export-olmo.js';
import { registerEvalPlot } from './commands/eval-plot.js';

function buildProgram(): Command {
  const program = new Command('olmoe')
    .description('Run OLMoE sparse Mixture-of-Experts language models. MODEL is a local folder or a hub id (org/name).')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of [registerGenerate, registerChat, registerInfo, registerRoute, registerLogits, registerTokenize, registerDownload, registerCreateRandom, registerConvert, registerBench, registerServe, registerTrace, registerAnalyze, registerPrune, registerDemo, registerPlotTrain, registerTrainTokenizer, registerShard, registerTrain, registerAdapt, registerEvaluate, registerEval, registerAblate, registerExportOlmo, registerEvalPlot, registerFuse, registerCast]) {
    register(program);
  }
  program.commands.forEach((command) => command.exitOverride());
  return program;
}

async function main(): Promise<void> {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0); // `olmoe ... | head` closed the pipe
    throw error;
  });
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (error) {
    process.exitCode = reportError(error);
  }
}

function reportError(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode; // commander already printed the message
  if (error instanceof OlmoeError) {
    process.stderr.write(`olmoe: error: ${error.message}\n`);
    return error.code === 'aborted' ? 130 : 1;
  }
  const systemError = error as NodeJS.ErrnoException;
  if (typeof systemError?.code === 'string' && typeof systemError.syscall === 'string') {
    process.stderr.write(`olmoe: error: ${systemError.message}\n`); // the environment (permissions, disk), not a bug
    return 1;
  }
  const detail = process.env.OLMOE_DEBUG ? (error as Error).stack : (error as Error)?.message ?? String(error);
  process.stderr.write(`olmoe: internal error: ${detail}\n(this is a bug; set OLMOE_DEBUG=1 for the stack trace)\n`);
  return 2;
}

await main();

/** `olmoe train CONFIG.json`: train (or resume, or benchmark) an OLMoE from a training config. */
import type { Command } from 'commander';
import { benchTraining, createBackend, InputError, readTrainConfig, train, type TrainBench, type TrainLogRecord, type ValidLogRecord } from '../../index.js';
import { parsePositiveInteger, printJson } from '../common.js';

interface TrainFlags {
  resume?: boolean;
  bench?: number | true;
  backend?: string;
  threads?: number;
  precision?: 'fp32' | 'bf16';
  logEvery: number;
  json?: boolean;
  quiet?: boolean;
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('train an OLMoE from a config file (model shape, token shards, optimizer, schedule); checkpoints and metrics.jsonl go to its "out" folder')
    .argument('<config>', 'training config JSON (see README "Train")')
    .option('--resume', 'continue the run in the config\'s out folder from its latest checkpoint')
    .option('--bench [steps]', 'time this many optimizer steps (default 3) and report tokens/s, GFLOP/s and where the time goes; writes nothing', parsePositiveInteger('--bench'))
    .option('--backend <name>', 'native | reference (default: $OLMOE_BACKEND, else native when built)')
    .option('--threads <n>', 'native backend threads (default: all cores)', parsePositiveInteger('--threads'))
    .option('--precision <fp32|bf16>', 'matrix products in float32 or bf16 mixed precision (float32 master weights, gradients and optimizer); overrides the config\'s "precision"', parsePrecision)
    .option('--log-every <n>', 'print a progress line every n steps', parsePositiveInteger('--log-every'), 10)
    .option('--json', 'with --bench: print the result as JSON')
    .option('-q, --quiet', 'no progress lines')
    .action(runTrain);
}

async function runTrain(configPath: string, flags: TrainFlags): Promise<void> {
  const read = readTrainConfig(configPath);
  const config = flags.precision ? { ...read, precision: flags.precision } : read;
  const backend = createBackend(flags.backend, { threads: flags.threads });
  if (flags.bench) {
    const result = benchTraining(config, backend, flags.bench === true ? 3 : flags.bench);
    if (flags.json) return printJson(result);
    process.stdout.write(benchReport(result));
    return;
  }
  const say = (line: string) => !flags.quiet && process.stderr.write(line + '\n');
  const started = { at: performance.now(), step: -1 };
  const summary = await train({
    config, backend, resume: flags.resume, say,
    onStep: (r) => {
      if (started.step < 0) started.step = r.step - 1; // a resumed run starts later
      if (r.step % flags.logEvery === 0 || r.step === config.steps || r.step === 1) say(stepLine(r, config.steps, started));
    },
    onEval: (records) => say(evalLine(records)),
  });
  say(`done: ${summary.steps} steps, ${summary.tokens.toLocaleString('en-US')} tokens, last loss ${summary.lastLoss.toFixed(4)}; checkpoint ${summary.checkpoint}`);
}

function parsePrecision(text: string): 'fp32' | 'bf16' {
  if (text === 'fp32' || text === 'bf16') return text;
  throw new InputError(`--precision: ${JSON.stringify(text)} is not fp32 or bf16`);
}

function benchReport(result: TrainBench): string {
  const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
  const ops = result.ops.slice(0, 12).map((o) => `${o.op} ${pct(o.share)}`).join(', ');
  return (
    `${result.parameters.toLocaleString('en-US')} parameters, ${result.tokensPerStep} tokens/step, backend: ${result.backend}, precision: ${result.precision}` +
    (result.bf16Kernel ? ` (${result.bf16Kernel})` : '') + '\n' +
    `${result.tokensPerSecond.toFixed(0)} tokens/s, ${result.secondsPerStep.toFixed(2)} s/step, ${result.gflops.toFixed(1)} GFLOP/s useful ` +
    `(${(result.flopsPerToken / 1e6).toFixed(1)} MFLOP per token)` +
    (result.peakGflops ? `; FP32 peak of ${result.threads} thread(s) measured now: ${result.peakGflops.toFixed(0)} GFLOP/s (${((100 * result.gflops) / result.peakGflops).toFixed(0)} % used)` : '') +
    (result.bf16PeakGflops ? `; ${result.bf16Kernel} peak: ${result.bf16PeakGflops.toFixed(0)} GFLOP/s (${((100 * result.gflops) / result.bf16PeakGflops).toFixed(0)} % used)` : '') + '\n' +
    `time: forward ${pct(result.phases.forward)}, backward ${pct(result.phases.backward)}, optimizer ${pct(result.phases.optimizer)}\n` +
    `ops: ${ops}\n`
  );
}

function stepLine(r: TrainLogRecord, steps: number, started: { at: number; step: number }): string {
  const elapsed = (performance.now() - started.at) / 1000;
  const eta = (elapsed / (r.step - started.step)) * (steps - r.step);
  return `step ${r.step}/${steps}  loss ${r.loss.toFixed(4)} (ce ${r.ce.toFixed(4)} lbl ${r.lbl.toFixed(4)} z ${r.zloss.toFixed(5)})  ` +
    `lr ${r.lr.toExponential(2)}  |g| ${r.gradNorm.toFixed(2)}  ${r.tokensPerSecond.toFixed(0)} tok/s  eta ${formatSeconds(eta)}`;
}

function evalLine(records: readonly ValidLogRecord[]): string {
  return `  valid @${records[0]?.step}: ` + records.map((r) => `${r.domain} ${r.ce.toFixed(3)} (${r.bitsPerByte.toFixed(3)} bpb)`).join(', ');
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  return seconds >= 3600 ? `${(seconds / 3600).toFixed(1)} h` : seconds >= 60 ? `${(seconds / 60).toFixed(1)} min` : `${seconds.toFixed(0)} s`;
}

/** `olmoe sft|dpo|kto CONFIG.json`: adapt a model (supervised fine-tuning, DPO, KTO; optionally LoRA) from a config. */
import type { Command } from 'commander';
import { adapt, createBackend, loadSftData, loadTokenizer, prepareDpo, prepareKto, prepareSft, readAdaptConfig, showMask, type AdaptKind, type AdaptLogRecord, type SftConfig } from '../../index.js';
import { parsePositiveInteger } from '../common.js';

interface AdaptFlags {
  resume?: boolean;
  backend?: string;
  threads?: number;
  logEvery: number;
  quiet?: boolean;
  showMask?: number | true;
}

const DESCRIPTIONS: Record<AdaptKind, string> = {
  sft: 'supervised fine-tuning on chat JSONL (loss on every assistant turn); checkpoints, metrics.jsonl and the final model go to the config\'s "out" folder',
  dpo: 'direct preference optimization on {"prompt", "chosen", "rejected"} JSONL (losses dpo, dpo_norm, simpo); reference log-probs computed once and cached',
  kto: 'KTO on {"prompt", "completion", "label"} JSONL (a paired file is split); reference log-probs computed once and cached',
};

const PREPARE = { sft: prepareSft, dpo: prepareDpo, kto: prepareKto };

export function registerAdapt(program: Command): void {
  for (const kind of ['sft', 'dpo', 'kto'] as const) {
    const command = program
      .command(kind)
      .description(DESCRIPTIONS[kind])
      .argument('<config>', `${kind} config JSON (see README "Adapt")`)
      .option('--resume', 'continue the run in the config\'s out folder from its latest checkpoint')
      .option('--backend <name>', 'native | reference (default: $OLMOE_BACKEND, else native when built)')
      .option('--threads <n>', 'native backend threads (default: all cores)', parsePositiveInteger('--threads'))
      .option('--log-every <n>', 'print a progress line every n steps', parsePositiveInteger('--log-every'), 10)
      .option('-q, --quiet', 'no progress lines');
    if (kind === 'sft') command.option('--show-mask [n]', 'print n samples (default 1) with the trained spans marked, then stop', parsePositiveInteger('--show-mask'));
    command.action((configPath: string, flags: AdaptFlags) => runAdapt(kind, configPath, flags));
  }
}

async function runAdapt(kind: AdaptKind, configPath: string, flags: AdaptFlags): Promise<void> {
  const config = readAdaptConfig(kind, configPath);
  if (flags.showMask) return printMasks(config as SftConfig, flags.showMask === true ? 1 : flags.showMask);
  const backend = createBackend(flags.backend, { threads: flags.threads });
  const say = (line: string) => !flags.quiet && process.stderr.write(line + '\n');
  const started = { at: performance.now(), step: -1 };
  const summary = await adapt({
    kind, config, backend, resume: flags.resume, say,
    onStep: (r, total) => {
      if (started.step < 0) Object.assign(started, { at: performance.now(), step: r.step }); // the ETA counts steps after the first (not the reference pass)
      if (r.step % flags.logEvery === 0 || r.step === total || r.step === 1) say(stepLine(r, total, started));
    },
  }, PREPARE[kind]);
  say(`done: ${summary.steps} steps in ${summary.seconds.toFixed(1)} s, last loss ${summary.lastLoss.toFixed(4)}; checkpoint ${summary.checkpoint}; final ${config.lora ? 'adapter' : 'model'} in ${summary.out}`);
}

async function printMasks(config: SftConfig, count: number): Promise<void> {
  const tokenizer = await loadTokenizer(config.model);
  const data = await loadSftData(config.data.train, tokenizer, { maxLength: config.data.max_length, policy: config.data.overflow });
  const color = Boolean(process.stdout.isTTY);
  for (const { sequence, index } of data.sequences.slice(0, count)) {
    const { source } = data.records[index]!;
    process.stdout.write(`== ${source.file}: line ${source.line}\n${showMask(tokenizer, sequence, { color })}\n`);
  }
}

/** The method's headline metrics after the loss: reward accuracy and margins (DPO/KTO), expert load spread. */
function stepLine(r: AdaptLogRecord, steps: number, started: { at: number; step: number }): string {
  const elapsed = (performance.now() - started.at) / 1000;
  const eta = r.step === started.step ? NaN : (elapsed / (r.step - started.step)) * (steps - r.step);
  const metric = (key: string, digits = 3) => (typeof r[key] === 'number' ? `  ${key.replace('rewards/', '')} ${(r[key] as number).toFixed(digits)}` : '');
  const extra = metric('rewards/accuracies', 2) + metric('rewards/margins', 4) + metric('kl', 4) + (r.lbl ? `  lbl ${r.lbl.toFixed(4)}` : '');
  const load = r.expertLoad?.length ? `  max expert load ${Math.max(...r.expertLoad.flat()).toFixed(3)}` : '';
  return `${r.method} step ${r.step}/${steps}  loss ${r.loss.toFixed(4)}${extra}  lr ${r.lr.toExponential(2)}  |g| ${r.gradNorm.toFixed(2)}${load}  ${r.tokensPerSecond.toFixed(0)} tok/s  eta ${formatSeconds(eta)}`;
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  return seconds >= 3600 ? `${(seconds / 3600).toFixed(1)} h` : seconds >= 60 ? `${(seconds / 60).toFixed(1)} min` : `${seconds.toFixed(0)} s`;
}

/** Options, argument parsing and model loading shared by the CLI verbs. */
import { Option, type Command } from 'commander';
import {
  adapterPatch,
  createBackend,
  InputError,
  loadPretrained,
  processEscapes,
  readPeftAdapter,
  resolveModelPath,
  type GenerateOptions,
  type HubOptions,
  type Pretrained,
} from '../index.js';
import { createProgress } from './progress.js';

export interface ModelFlags {
  backend?: string;
  threads?: number;
  revision?: string;
  quiet?: boolean;
  checkTensors?: boolean;
  /** A LoRA adapter folder (PEFT layout) merged into the model at load. */
  adapter?: string;
}

/** Where a hub model comes from, and whether to show progress. */
export function addHubOptions(command: Command): Command {
  return command
    .option('--revision <rev>', 'hub branch, tag or commit (e.g. step1200000-tokens5033B)', 'main')
    .option('-q, --quiet', 'no progress output on stderr');
}

export function addModelOptions(command: Command): Command {
  return addHubOptions(command)
    .option('--backend <name>', 'native | reference (default: $OLMOE_BACKEND, else native when built)')
    .option('--threads <n>', 'native backend threads (default: $OLMOE_THREADS, else all cores)', parsePositiveInteger('--threads'))
    .option('--check-tensors', 'scan every weight for NaN/inf before loading (slower load)');
}

/** `--adapter DIR`: a LoRA adapter (PEFT layout) checked against the model and merged into it at load. */
export function addAdapterOption(command: Command): Command {
  return command.option('--adapter <dir>', 'LoRA adapter folder (adapter_config.json + adapter_model.safetensors), merged into the model at load');
}

export function hubOptions(flags: ModelFlags): HubOptions {
  const progress = new Map<string, ReturnType<typeof createProgress>>();
  return {
    revision: flags.revision,
    onProgress: ({ file, bytes, total }) => {
      if (!progress.has(file)) progress.set(file, createProgress(`download ${file}`, { bytes: true, quiet: flags.quiet }));
      const bar = progress.get(file)!;
      bar.update(bytes, total);
      if (total !== undefined && bytes >= total) {
        bar.finish();
        progress.delete(file);
      }
    },
  };
}

export async function modelDir(spec: string, flags: ModelFlags): Promise<string> {
  return resolveModelPath(spec, hubOptions(flags));
}

export async function loadModel(spec: string, flags: ModelFlags): Promise<Pretrained> {
  const backend = createBackend(flags.backend, { threads: flags.threads });
  const bar = createProgress('load', { bytes: true, quiet: flags.quiet });
  const pretrained = await loadPretrained(spec, {
    ...hubOptions(flags),
    backend,
    checkTensors: flags.checkTensors,
    onLoadProgress: (p) => bar.update(p.loadedBytes, p.totalBytes),
    patch: flags.adapter === undefined ? undefined : (config) => {
      const adapter = readPeftAdapter(flags.adapter!, config);
      if (!flags.quiet) process.stderr.write(`adapter ${flags.adapter}: LoRA r=${adapter.settings.r} on ${adapter.modules.size} modules, merged at load\n`);
      return adapterPatch(adapter);
    },
  });
  bar.finish();
  return pretrained;
}

export function parseIds(text: string, flag: string): number[] {
  const parts = text.split(/[\s,]+/).filter((p) => p.length > 0);
  if (parts.length === 0) throw new InputError(`${flag}: no token ids given`);
  return parts.map((part) => {
    const id = Number(part);
    if (!Number.isSafeInteger(id) || id < 0) throw new InputError(`${flag}: ${JSON.stringify(part)} is not a token id`);
    return id;
  });
}

export function parseNumber(flag: string, check: (n: number) => boolean = Number.isFinite) {
  return (text: string): number => {
    const value = Number(text);
    if (text.trim() === '' || !check(value)) throw new InputError(`${flag}: ${JSON.stringify(text)} is not a valid value`);
    return value;
  };
}

export const parseInteger = (flag: string) => parseNumber(flag, (n) => Number.isSafeInteger(n) && n >= 0);
export const parsePositiveInteger = (flag: string) => parseNumber(flag, (n) => Number.isSafeInteger(n) && n > 0);

export function addSamplingOptions(command: Command): Command {
  return command
    .option('-n, --max-tokens <n>', 'maximum new tokens (default: generation_config.json, else 128)', parseInteger('--max-tokens'))
    .option('--greedy', 'always take the most likely token (the default unless generation_config.json samples)')
    .option('--sample', 'sample (temperature 1, top-k 50, top-p 1 unless set); implied by any sampling flag')
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', parseNumber('--temperature'))
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', parseInteger('--top-k'))
    .option('--top-p <p>', 'nucleus sampling threshold in (0, 1]', parseNumber('--top-p'))
    .option('--min-p <p>', 'drop tokens below p × the top probability', parseNumber('--min-p'))
    .option('--repeat-penalty <r>', 'repetition penalty (1 = off)', parseNumber('--repeat-penalty'))
    .option('--seed <n>', 'random seed for sampling', parseInteger('--seed'))
    .addOption(new Option('--stop <text...>', 'stop when this text is generated (repeatable); \\n \\t \\r \\\\ \\" \\\' \\xHH are escapes, as in llama.cpp'))
    .option('--ignore-eos', 'keep generating past end-of-sequence tokens')
    .option('--no-cache', 'recompute the whole sequence every step (debugging)');
}

export interface SamplingFlags {
  maxTokens?: number;
  greedy?: boolean;
  sample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  seed?: number;
  stop?: string[];
  ignoreEos?: boolean;
  cache?: boolean;
}

/** Only what the user set; the rest comes from generation_config.json and transformers' defaults (generate/options.ts). */
export function generateOptions(flags: SamplingFlags): GenerateOptions {
  if (flags.greedy && flags.sample) throw new InputError('--greedy and --sample exclude each other');
  return {
    maxNewTokens: flags.maxTokens,
    greedy: flags.greedy ? true : flags.sample ? false : undefined,
    temperature: flags.temperature,
    topK: flags.topK,
    topP: flags.topP,
    minP: flags.minP,
    repetitionPenalty: flags.repeatPenalty,
    seed: flags.seed,
    stopStrings: flags.stop?.map((stop) => processEscapes(stop, '--stop')),
    ignoreEos: flags.ignoreEos,
    useCache: flags.cache !== false,
  };
}

/** The token's text for tables: JSON-quoted so spaces and newlines are visible. */
export function showToken(pretrained: Pretrained, id: number): string {
  return JSON.stringify(pretrained.tokenizer.decode([id]));
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

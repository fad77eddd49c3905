/**
 * `olmoe demo`: the main job on a fresh machine, offline: the bundled OLMoE-mini (trained by `olmoe train` on the
 * six-domain corpus, models/olmoe-mini) continues prompts from several domains and shows which experts each token
 * takes. `--random` uses a small random-weight OLMoE instead (the pipeline without a trained model).
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateText, writeRandomCheckpoint, type Pretrained } from '../../index.js';
import { loadModel } from '../common.js';
import { forwardWithRouting } from './route.js';
import { TINY_PRESET } from './create-random.js';

/** dist/src/cli/commands → the package root, where models/ holds the bundled models. */
const BUNDLED = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'models');
export const BUNDLED_MODEL = join(BUNDLED, 'olmoe-mini');
/** OLMoE-mini after SFT and DPO (olmoe sft / olmoe dpo, docs/instruct). */
const BUNDLED_INSTRUCT = join(BUNDLED, 'olmoe-mini-instruct');

const PROMPTS = [
  ['web', 'The President said that the people of the United States'],
  ['books', 'And it came to pass, when the men of the city'],
  ['code', 'def read_config(path):\n    """Read the configuration file'],
  ['encyclopedic', 'France, officially the French Republic, is a country'],
  ['math', 'Theorem. For every natural number n, the sum'],
] as const;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('offline demo: the bundled OLMoE-mini continues prompts from several domains and shows its routing')
    .option('--model <dir>', 'model folder to demo', BUNDLED_MODEL)
    .option('--random', 'use a small random-weight OLMoE (written once to .olmoe/random-demo) instead')
    .action(async (flags: { model: string; random?: boolean }) => runDemo(flags.random ? randomModel() : flags.model, flags.random ?? false));
}

function randomModel(): string {
  const dir = join('.olmoe', 'random-demo');
  if (!existsSync(join(dir, 'config.json'))) writeRandomCheckpoint(dir, { ...TINY_PRESET, dtype: 'bf16', seed: 42, std: 0.2 });
  return dir;
}

async function runDemo(path: string, random: boolean): Promise<void> {
  const near = relative(process.cwd(), path);
  const dir = near && !near.startsWith('..') && !isAbsolute(near) ? near : path; // show models/olmoe-mini, not /home/…/models/olmoe-mini
  const say = (text: string) => process.stderr.write(text + '\n');
  if (random) say('NOTE: this model has RANDOM weights — its text is noise; it shows the pipeline end to end.\n');
  const pretrained = await loadModel(dir, { quiet: true });
  const { numExperts, numExpertsPerTok, numLayers } = pretrained.model.config;
  say(`${dir}: ${numLayers} layers, ${numExperts} experts, top-${numExpertsPerTok} (load → tokenize → prefill → decode with KV cache → sampling → streaming detokenizer → routing)\n`);
  for (const [domain, prompt] of random ? PROMPTS.slice(0, 1) : PROMPTS) {
    process.stdout.write(`[${domain}] ${prompt}`);
    const result = await generateText(pretrained, pretrained.tokenizer.encode(prompt), {
      seed: 1, temperature: 0.7, topP: 0.9, maxNewTokens: 40, onToken: (e) => process.stdout.write(e.text),
    });
    process.stdout.write(`\n  (${result.ids.length} tokens, ${((result.ids.length / (result.prefillMs + result.decodeMs)) * 1000).toFixed(0)} tok/s)\n\n`);
  }
  showRouting(pretrained, 'def add(a, b):\n    return a + b  # The sum of two numbers.');
  if (!random && path === BUNDLED_MODEL && existsSync(join(BUNDLED_INSTRUCT, 'config.json'))) await showInstruct();
  process.stdout.write(`\nnext: olmoe generate ${dir} "your prompt"; olmoe route ${dir} "your text"; olmoe serve ${dir}\n`);
}

/** The instruct model answering a chat question it never saw (greedy): the chat format, not facts (its model card). */
async function showInstruct(): Promise<void> {
  const instruct = await loadModel(BUNDLED_INSTRUCT, { quiet: true });
  const question = 'What is the ISO 639-1 code for German?';
  process.stdout.write(`\nmodels/olmoe-mini-instruct (OLMoE-mini after olmoe sft and olmoe dpo), asked in its chat template:\n> ${question}\n`);
  const result = await generateText(instruct, instruct.tokenizer.encodeChat([{ role: 'user', content: question }]), { greedy: true, maxNewTokens: 40, onToken: (e) => process.stdout.write(e.text) });
  process.stdout.write(`\n  (${result.finishReason === 'eos' ? 'ended its turn' : 'cut at 40 tokens'}; the form is learned, the fact is not: see its model card)\n`);
}

/** Per token, the top expert of every layer: tokens of one kind (code symbols, English words) share experts. */
function showRouting(pretrained: Pretrained, text: string): void {
  const ids = pretrained.tokenizer.encode(text);
  const { routing } = forwardWithRouting(pretrained, ids);
  process.stdout.write(`routing of ${JSON.stringify(text)} — top expert (weight) per layer:\n`);
  ids.forEach((id, t) => {
    const layers = routing.map((r) => `${String(r.experts[t]![0]).padStart(2)} (${r.weights[t]![0]!.toFixed(2)})`);
    process.stdout.write(`  ${JSON.stringify(pretrained.tokenizer.decode([id])).padEnd(12)} ${layers.join('  ')}\n`);
  });
}

/**
 * `olmoe demo`: the main job on a fresh machine, offline. Until a trained model is bundled, it writes a
 * small random OLMoE (once), then generates from it and shows its routing — and says the text is noise.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { generateText, writeRandomCheckpoint } from '../../index.js';
import { loadModel } from '../common.js';
import { forwardWithRouting } from './route.js';
import { TINY_PRESET } from './create-random.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('offline demo: create a small random OLMoE, generate from it and show its routing')
    .option('--dir <dir>', 'where the demo model lives', join('.olmoe', 'random-demo'))
    .action(async (flags: { dir: string }) => runDemo(flags.dir));
}

async function runDemo(dir: string): Promise<void> {
  const say = (text: string) => process.stderr.write(text + '\n');
  if (!existsSync(join(dir, 'config.json'))) {
    say(`creating a random OLMoE in ${dir} (${TINY_PRESET.layers} layers, ${TINY_PRESET.experts} experts, top-${TINY_PRESET.topK}) …`);
    writeRandomCheckpoint(dir, { ...TINY_PRESET, dtype: 'bf16', seed: 42, std: 0.2 }); // wider than 0.02 so routing is visibly peaked
  }
  say('NOTE: this model has RANDOM weights — the text below is noise. It shows the pipeline end to end:');
  say('load → tokenize → prefill → decode with KV cache → sampling → streaming detokenizer → routing.\n');
  const pretrained = await loadModel(dir, { quiet: true });
  const prompt = 'The experts of a sparse model';
  const promptIds = pretrained.tokenizer.encode(prompt);
  process.stdout.write(`generate (greedy, 24 tokens): ${JSON.stringify(prompt)} →\n`);
  const result = await generateText(pretrained, promptIds, {
    greedy: true,
    maxNewTokens: 24,
    onToken: (e) => process.stdout.write(JSON.stringify(e.text).slice(1, -1)),
  });
  process.stdout.write(`\n[${result.ids.length} tokens, ${((result.ids.length / (result.prefillMs + result.decodeMs)) * 1000).toFixed(1)} tok/s, finish: ${result.finishReason}]\n\n`);
  const { routing } = forwardWithRouting(pretrained, promptIds.slice(0, 6));
  process.stdout.write('routing of the first prompt tokens (expert:weight, top-k per layer):\n');
  promptIds.slice(0, 6).forEach((id, t) => {
    const layers = routing.map((r) => `L${r.layer} ${r.experts[t]!.map((e, k) => `${e}:${r.weights[t]![k]!.toFixed(2)}`).join(' ')}`);
    process.stdout.write(`  ${JSON.stringify(pretrained.tokenizer.decode([id])).padEnd(6)} ${layers.join(' | ')}\n`);
  });
  process.stdout.write(`\nnext: olmoe info ${dir}; olmoe route ${dir} "your text"; olmoe generate allenai/OLMoE-1B-7B-0924 "Bitcoin is"\n`);
}

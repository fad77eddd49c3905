/** `olmoe create-random DIR`: write a random-weight OLMoE checkpoint (any shape, up to full OLMoE-1B-7B). */
import type { Command } from 'commander';
import { existsSync, readdirSync } from 'node:fs';
import { InputError, OLMOE_1B_7B, writeRandomCheckpoint, type FloatDType, type RandomCheckpointOptions } from '../../index.js';
import { parseInteger, parseNumber, parsePositiveInteger } from '../common.js';
import { createProgress } from '../progress.js';

/** A small shape that runs quickly on the reference backend. */
export const TINY_PRESET = { layers: 4, experts: 16, topK: 4, hidden: 128, heads: 4, intermediate: 64, vocab: 258, context: 1024 }; // vocab = the byte-level tokenizer's ids

const PRESETS: Record<string, typeof TINY_PRESET> = { tiny: TINY_PRESET, 'olmoe-1b-7b': OLMOE_1B_7B };

interface CreateFlags {
  preset: string;
  layers?: number;
  experts?: number;
  topK?: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  intermediate?: number;
  vocab?: number;
  context?: number;
  dtype: string;
  seed: number;
  shards: number;
  std?: number;
  force?: boolean;
  quiet?: boolean;
}

export function registerCreateRandom(program: Command): void {
  program
    .command('create-random')
    .description('write a random-weight OLMoE checkpoint in HF layout (weights are noise: for tests and benchmarks)')
    .argument('<dir>', 'output folder')
    .option('--preset <name>', `starting shape: ${Object.keys(PRESETS).join(' | ')}`, 'tiny')
    .option('--layers <n>', 'decoder layers', parsePositiveInteger('--layers'))
    .option('--experts <n>', 'experts per layer', parsePositiveInteger('--experts'))
    .option('--top-k <n>', 'experts per token', parsePositiveInteger('--top-k'))
    .option('--hidden <n>', 'hidden size', parsePositiveInteger('--hidden'))
    .option('--heads <n>', 'attention heads', parsePositiveInteger('--heads'))
    .option('--kv-heads <n>', 'key/value heads (default: heads)', parsePositiveInteger('--kv-heads'))
    .option('--intermediate <n>', 'per-expert FFN width', parsePositiveInteger('--intermediate'))
    .option('--vocab <n>', 'vocabulary (embedding rows)', parsePositiveInteger('--vocab'))
    .option('--context <n>', 'max_position_embeddings', parsePositiveInteger('--context'))
    .option('--dtype <dtype>', 'f32 | bf16 | f16', 'bf16')
    .option('--seed <n>', 'random seed', parseInteger('--seed'), 0)
    .option('--shards <n>', 'number of safetensors shards (>1 writes model.safetensors.index.json)', parsePositiveInteger('--shards'), 1)
    .option('--std <σ>', 'weight standard deviation (default 0.02)', parseNumber('--std', (n) => n > 0))
    .option('--force', 'write into a folder that already holds a model')
    .option('-q, --quiet', 'no progress output')
    .action(runCreateRandom);
}

async function runCreateRandom(dir: string, flags: CreateFlags): Promise<void> {
  const options = randomOptions(flags);
  if (existsSync(dir) && readdirSync(dir).length > 0 && !flags.force) throw new InputError(`${dir} is not empty; use --force to overwrite`);
  const bar = createProgress('write', { bytes: true, quiet: flags.quiet });
  const config = writeRandomCheckpoint(dir, { ...options, onProgress: (done, total) => bar.update(done, total) });
  bar.finish();
  if (!flags.quiet) {
    process.stderr.write(`wrote a random OLMoE (${config.numLayers} layers, ${config.numExperts} experts, top-${config.numExpertsPerTok}, ${options.dtype}) to ${dir}\n`);
  }
}

export function randomOptions(flags: CreateFlags): RandomCheckpointOptions {
  const preset = PRESETS[flags.preset];
  if (!preset) throw new InputError(`--preset: unknown ${JSON.stringify(flags.preset)} (choose ${Object.keys(PRESETS).join(', ')})`);
  if (!['f32', 'bf16', 'f16'].includes(flags.dtype)) throw new InputError(`--dtype: ${JSON.stringify(flags.dtype)} is not f32, bf16 or f16`);
  return {
    layers: flags.layers ?? preset.layers,
    experts: flags.experts ?? preset.experts,
    topK: flags.topK ?? preset.topK,
    hidden: flags.hidden ?? preset.hidden,
    heads: flags.heads ?? preset.heads,
    kvHeads: flags.kvHeads,
    intermediate: flags.intermediate ?? preset.intermediate,
    vocab: flags.vocab ?? preset.vocab,
    context: flags.context ?? preset.context,
    dtype: flags.dtype as FloatDType,
    seed: flags.seed,
    shards: flags.shards,
    std: flags.std,
  };
}

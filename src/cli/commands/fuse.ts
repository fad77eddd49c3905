/**
 * `olmoe fuse BASE ADAPTER OUT`: merge a LoRA adapter into its base model and write the result as an HF checkpoint;
 * `olmoe cast MODEL OUT --dtype T`: the same checkpoint with every tensor in another float dtype.
 */
import type { Command } from 'commander';
import { castCheckpoint, fuseAdapter, InputError, type FuseOptions } from '../../index.js';
import { addHubOptions, modelDir, type ModelFlags } from '../common.js';
import { createProgress } from '../progress.js';

interface FuseFlags extends ModelFlags {
  dtype?: string;
}

const DTYPES = ['f32', 'bf16', 'f16'] as const;

export function registerFuse(program: Command): void {
  const command = program
    .command('fuse')
    .description('merge a LoRA adapter (PEFT layout) into its base: W + s·B·A for every adapted module, written as an HF checkpoint with the base\'s config and tokenizer')
    .argument('<base>', 'base model: HF folder or hub id (a GGUF base is refused: load it with --adapter instead)')
    .argument('<adapter>', 'adapter folder (adapter_config.json + adapter_model.safetensors)')
    .argument('<out>', 'folder for the fused checkpoint')
    .option('--dtype <type>', `write every tensor as ${DTYPES.join(' | ')} (default: each tensor's stored dtype, merged ones rounded to it as PEFT does)`);
  addHubOptions(command).action(runFuse);
}

export function registerCast(program: Command): void {
  const command = program
    .command('cast')
    .description('rewrite an HF checkpoint with every tensor in another float dtype (e.g. a float32 training result as bf16), config and tokenizer copied')
    .argument('<model>', 'HF model folder or hub id')
    .argument('<out>', 'folder for the rewritten checkpoint')
    .requiredOption('--dtype <type>', DTYPES.join(' | '));
  addHubOptions(command).action(runCast);
}

async function runCast(model: string, out: string, flags: FuseFlags): Promise<void> {
  checkDtype(flags.dtype);
  const bar = createProgress('cast', { quiet: flags.quiet });
  const tensors = castCheckpoint(await modelDir(model, flags), out, flags.dtype as NonNullable<FuseOptions['dtype']>, (done, total) => bar.update(done, total));
  bar.finish();
  process.stdout.write(`wrote ${tensors} tensors as ${flags.dtype} to ${out}\n`);
}

function checkDtype(dtype: string | undefined): void {
  if (dtype !== undefined && !(DTYPES as readonly string[]).includes(dtype)) throw new InputError(`--dtype ${dtype}: expected one of ${DTYPES.join(', ')}`);
}

async function runFuse(base: string, adapter: string, out: string, flags: FuseFlags): Promise<void> {
  checkDtype(flags.dtype);
  const dir = await modelDir(base, flags);
  const bar = createProgress('fuse', { quiet: flags.quiet });
  const result = fuseAdapter(dir, adapter, out, { dtype: flags.dtype as FuseOptions['dtype'], onTensor: (done, total) => bar.update(done, total) });
  bar.finish();
  process.stdout.write(`fused ${result.modules.length} adapted modules into ${out} (${result.tensors} tensors):\n`);
  for (const name of result.modules) process.stdout.write(`  ${name}\n`);
}

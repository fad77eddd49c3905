/**
 * `olmoe fuse`: merge a LoRA adapter into its base and write an HF checkpoint (PEFT's merge_and_unload): every adapted
 * module's weight becomes W + s·B·A, everything else is copied as stored, with config, tokenizer and generation
 * files. Files are staged, then each moved into place by one rename (weights first), so the folder never lacks weights.
 * The base must be an HF folder: a GGUF file holds quantized inference weights, and re-quantizing merged weights would
 * change them twice; `--adapter` on a GGUF base merges at load instead (the adapted modules dequantized to float32).
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { encodeFloats, type DType, type FloatDType } from '../../core/dtype.js';
import { UnsupportedError, withIo } from '../../core/errors.js';
import { removeStaleStaging, stagingPath } from '../../io/atomic-file.js';
import { readTensorBytes, readTensorFloat32 } from '../../io/safetensors.js';
import { SafetensorsWriter } from '../../io/safetensors-writer.js';
import { matchCheckpoint, openCheckpoint, type WeightPatch } from '../../model/load.js';
import { adapterPatch, readPeftAdapter } from './peft.js';

const COPIED = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

export interface FuseOptions {
  /** The dtype of every written tensor; default: each tensor's stored dtype (merged ones rounded to it, as PEFT does). */
  readonly dtype?: FloatDType;
  readonly onTensor?: (done: number, total: number) => void;
}

export interface FuseResult {
  /** The adapted modules (HF names), in checkpoint order. */
  readonly modules: readonly string[];
  readonly tensors: number;
}

export function fuseAdapter(baseDir: string, adapterDir: string, outDir: string, opts: FuseOptions = {}): FuseResult {
  const checkpoint = openCheckpoint(baseDir);
  if (checkpoint.format !== 'hf') {
    throw new UnsupportedError(
      `${baseDir}: fuse writes an HF checkpoint from an HF base, and this is a GGUF file (quantized for inference). ` +
        'Load it with --adapter instead (the adapted modules are dequantized to float32 and merged at load), or fuse into the HF checkpoint and convert the result',
    );
  }
  const adapter = readPeftAdapter(adapterDir, checkpoint.config); // checks the adapter against this base
  return { modules: [...adapter.modules.keys()], tensors: rewriteCheckpoint(checkpoint, baseDir, outDir, adapterPatch(adapter), opts) };
}

/**
 * `olmoe cast`: an HF checkpoint with every tensor in `dtype` (e.g. a float32 training result as bf16 to ship it),
 * config, tokenizer and generation files copied; atomic like fuse.
 */
export function castCheckpoint(baseDir: string, outDir: string, dtype: FloatDType, onTensor?: FuseOptions['onTensor']): number {
  const checkpoint = openCheckpoint(baseDir);
  if (checkpoint.format !== 'hf') throw new UnsupportedError(`${baseDir}: cast rewrites an HF checkpoint, and this is a GGUF file (convert it with olmoe convert)`);
  return rewriteCheckpoint(checkpoint, baseDir, outDir, null, { dtype, onTensor });
}

/** Write the checkpoint's tensors (patched ones merged) into outDir, staged then moved into place; → tensor count. */
function rewriteCheckpoint(checkpoint: ReturnType<typeof openCheckpoint>, baseDir: string, outDir: string, patch: WeightPatch | null, opts: FuseOptions): number {
  const entries = matchCheckpoint(checkpoint.config, checkpoint.tensors);
  const specs = entries.map((entry) => ({ entry, name: entry.name, shape: entry.shape, dtype: (opts.dtype ?? entry.dtype) as DType }));
  const staging = stagingPath(outDir);
  removeStaleStaging(outDir);
  withIo(staging, 'create folder', () => mkdirSync(staging, { recursive: true }));
  try {
    const writer = new SafetensorsWriter(join(staging, 'model.safetensors'), specs);
    specs.forEach(({ entry, dtype }, i) => {
      const changed = patch?.names.has(entry.name) === true;
      writer.write(changed || dtype !== entry.dtype ? encodeFloats(dtype, changed ? patch!.apply(entry.name, readTensorFloat32(entry)) : readTensorFloat32(entry)) : readTensorBytes(entry));
      opts.onTensor?.(i + 1, specs.length);
    });
    writer.finish();
    for (const name of COPIED) if (existsSync(join(baseDir, name))) copyFileSync(join(baseDir, name), join(staging, name));
    withIo(outDir, 'create folder', () => mkdirSync(outDir, { recursive: true }));
    // Each file replaces its old version by one rename, weights first, so the folder always holds a whole model;
    // only then are weight files of an older layout (other shards, an index) removed.
    const written = readdirSync(staging).sort((a, b) => Number(b === 'model.safetensors') - Number(a === 'model.safetensors'));
    for (const name of written) withIo(join(outDir, name), 'write', () => renameSync(join(staging, name), join(outDir, name)));
    for (const name of readdirSync(outDir)) {
      if (/^model.*\.safetensors(\.index\.json)?$/.test(name) && !written.includes(name)) withIo(join(outDir, name), 'remove', () => rmSync(join(outDir, name)));
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return specs.length;
}

/**
 * The clean inputs every case starts from, built once per run into a temporary folder, deterministically:
 * a small random OLMoE in HF layout (bf16 safetensors, config.json) with the tiny fixture's BPE tokenizer, the
 * same in three shards with model.safetensors.index.json, and two GGUF conversions of it (f32, and q8_0 which mixes q8_0, f16 and f32 tensors). Small on purpose: a case
 * writes, loads and runs one of these, so their size sets the cases per second.
 */
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '../../src/model/load.js';
import { writeGguf } from '../../src/model/convert.js';
import { writeRandomCheckpoint } from '../../src/model/random-checkpoint.js';
import { tinyModelDir } from '../helpers.js';

/** The HF folder's files; a case replaces one of them and takes the rest from the seed. */
export const HF_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'] as const;
export type SeedName = 'hf' | 'hf-sharded' | 'gguf-f32' | 'gguf-q8_0';
export const SEED_NAMES: readonly SeedName[] = ['hf', 'hf-sharded', 'gguf-f32', 'gguf-q8_0'];
/** The HF seeds are folders; a case replaces one file of the folder. */
export const isFolderSeed = (name: SeedName) => name === 'hf' || name === 'hf-sharded';

export interface Seeds {
  readonly dir: string;
  /** Path of a seed: the HF folder, or a .gguf file. */
  path(name: SeedName): string;
  /** Bytes of a seed file: `file` inside the HF folder, or the whole GGUF. */
  bytes(name: SeedName, file?: string): Buffer;
}

export function buildSeeds(dir: string): Seeds {
  const hf = join(dir, 'hf');
  mkdirSync(dir, { recursive: true });
  // 2 layers, 4 experts top-2, GQA (2 heads, 1 kv head), D=32 so that q8_0 blocks fit the rows; vocab of the tiny fixture.
  const shape = { layers: 2, experts: 4, topK: 2, hidden: 32, heads: 2, kvHeads: 1, intermediate: 16, vocab: 600, context: 64, dtype: 'bf16', seed: 1234, std: 0.5 } as const;
  for (const [name, shards] of [['hf', 1], ['hf-sharded', 3]] as const) {
    rmSync(join(dir, name), { recursive: true, force: true });
    writeRandomCheckpoint(join(dir, name), { ...shape, shards });
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tinyModelDir, file), join(dir, name, file));
  }
  const checkpoint = openCheckpoint(hf);
  writeGguf(checkpoint, join(dir, 'gguf-f32.gguf'), { target: 'f32' });
  writeGguf(checkpoint, join(dir, 'gguf-q8_0.gguf'), { target: 'q8_0' });
  const cache = new Map<string, Buffer>();
  const path = (name: SeedName) => (isFolderSeed(name) ? join(dir, name) : join(dir, `${name}.gguf`));
  return {
    dir,
    path,
    bytes(name, file) {
      const at = file === undefined ? path(name) : join(path(name), file);
      let bytes = cache.get(at);
      if (!bytes) cache.set(at, (bytes = readFileSync(at)));
      return bytes;
    },
  };
}

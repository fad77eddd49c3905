/** Build, read back and edit small checkpoints in temp folders (shared by the loading and model-law tests). */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DType } from '../src/core/dtype.js';
import { readSafetensorsHeader, readTensorBytes } from '../src/io/safetensors.js';
import { writeSafetensors } from '../src/io/safetensors-writer.js';
import type { OlmoeConfig } from '../src/model/config.js';
import type { OlmoeModel } from '../src/model/olmoe.js';
import { writeRandomCheckpoint, type RandomCheckpointOptions } from '../src/model/random-checkpoint.js';
import { tempDir } from './helpers.js';

export const SMALL: RandomCheckpointOptions = { layers: 2, experts: 4, topK: 2, hidden: 32, heads: 2, intermediate: 16, vocab: 300, context: 64, dtype: 'f32', seed: 7 };

export interface StoredTensor {
  name: string;
  dtype: DType;
  shape: readonly number[];
  bytes: Uint8Array;
}

/** A fresh random checkpoint in its own temp dir. */
export function randomCheckpoint(overrides: Partial<RandomCheckpointOptions> = {}): { dir: string; config: OlmoeConfig } {
  const dir = tempDir('olmoe-ckpt-');
  const config = writeRandomCheckpoint(dir, { ...SMALL, ...overrides });
  return { dir, config };
}

/** Every tensor of a single-file checkpoint, in file order. */
export function readAll(dir: string): StoredTensor[] {
  const entries = [...readSafetensorsHeader(join(dir, 'model.safetensors')).tensors.values()].sort((a, b) => a.offset - b.offset);
  return entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, bytes: readTensorBytes(e) }));
}

/** Replace model.safetensors with `tensors`. */
export function rewrite(dir: string, tensors: StoredTensor[]): void {
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
}

export function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

export function editConfig(dir: string, edit: (json: Record<string, unknown>) => void): void {
  const path = join(dir, 'config.json');
  const json = readJson(path);
  edit(json);
  writeFileSync(path, JSON.stringify(json));
}

export function logitsOf(model: OlmoeModel, ids: Int32Array): Float32Array {
  return model.backend.toFloat32(model.forward(ids));
}

/** Greedy decoding over the KV cache, one token per forward after the prompt (argmax, first index on ties). */
export function greedyWithCache(model: OlmoeModel, prompt: readonly number[], count: number): number[] {
  const cache = model.createCache();
  let next = Int32Array.from(prompt);
  const generated: number[] = [];
  for (let i = 0; i < count; i++) {
    const logits = model.backend.toFloat32(model.forward(next, { cache, logits: 'last' }));
    const id = logits.indexOf(Math.max(...logits));
    generated.push(id);
    next = Int32Array.of(id);
  }
  return generated;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

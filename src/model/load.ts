/**
 * Load an OLMoE checkpoint (HF folder or GGUF file) onto a backend, strictly: every tensor the config requires must be there
 * with its exact shape, and nothing else may be. Tensors are read one at a time, keeping their stored dtype.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { weightFromBytes, type Backend, type KVCacheType, type Tensor, type WeightSource } from '../core/backend.js';
import { WeightError } from '../core/errors.js';
import { listCheckpointTensors, weightSources } from '../io/checkpoint.js';
import { readGguf, type GgufFile } from '../io/gguf.js';
import { readTensorFloat32, type TensorEntry } from '../io/safetensors.js';
import { ggufConfig, ggufTensorsByHfName } from './gguf-checkpoint.js';
import { readConfigFile, type OlmoeConfig } from './config.js';
import { firstNonFinite, OlmoeModel } from './olmoe.js';
import { assembleWeights, weightCount, weightTable, type WeightSpec } from './weights.js';

export interface LoadProgress {
  loadedBytes: number;
  totalBytes: number;
  tensors: number;
  totalTensors: number;
}

/**
 * A change to some weights at load: a LoRA adapter merged into its base (train/adapt/peft.ts adapterPatch). The
 * tensors it names are read as float32 (bf16 widened, quantized blocks dequantized), passed through `apply`, and
 * handed to the backend as float32; every other tensor loads as stored.
 */
export interface WeightPatch {
  /** HF tensor names it changes. */
  readonly names: ReadonlySet<string>;
  apply(name: string, values: Float32Array): Float32Array;
}

export interface LoadModelOptions {
  backend: Backend;
  patch?: WeightPatch;
  onProgress?: (progress: LoadProgress) => void;
  /** Scan every weight for NaN/inf before loading (llama.cpp's --check-tensors); an error names the first. */
  checkTensors?: boolean;
  /** How the model's KV caches store keys and values (default f16; 'f32' exact, 'q8_0' half of f16's memory). */
  kvCache?: KVCacheType;
}

/** A checkpoint located on disk: an HF folder or a GGUF file, with its tensors under HF names. */
export interface Checkpoint {
  readonly path: string;
  readonly format: 'hf' | 'gguf';
  readonly config: OlmoeConfig;
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  readonly gguf?: GgufFile;
}

/** Read the headers (config, tensor locations) of an HF folder or a GGUF file; no tensor data is read. */
export function openCheckpoint(path: string): Checkpoint {
  if (!statSync(path, { throwIfNoEntry: false })?.isFile()) {
    const config = readConfigFile(join(path, 'config.json'));
    const tensors = listCheckpointTensors(path);
    checkTensorCount(config, 'hf', tensors.size, join(path, 'config.json'));
    return { path, format: 'hf', config, tensors };
  }
  const gguf = readGguf(path);
  const config = ggufConfig(gguf);
  checkTensorCount(config, 'gguf', gguf.tensors.size, path);
  return { path, format: 'gguf', config, tensors: ggufTensorsByHfName(config, gguf), gguf };
}

/**
 * The config's layer and expert counts must roughly fit the tensors the file holds, checked before the weight
 * table is built (a count of 2³¹ would otherwise allocate for minutes and abort). Near misses pass here so that
 * matchCheckpoint can name the missing tensors.
 */
function checkTensorCount(config: OlmoeConfig, format: 'hf' | 'gguf', found: number, file: string): void {
  const expected = weightCount(config, format);
  if (expected <= 2 * found + 16) return;
  const counts = `${config.numLayers} layers × ${config.numExperts} experts${config.tieWordEmbeddings ? ', tied head' : ''}`;
  throw new WeightError(`${file}: the config (${counts}) needs ${expected} tensors in ${format === 'gguf' ? 'a GGUF' : 'an HF'} checkpoint, the checkpoint has ${found}`);
}

/** Load an OLMoE checkpoint (HF folder or GGUF file) onto a backend. */
export async function loadModel(path: string, opts: LoadModelOptions): Promise<OlmoeModel> {
  return loadCheckpoint(openCheckpoint(path), opts);
}

export async function loadCheckpoint(checkpoint: Checkpoint, opts: LoadModelOptions): Promise<OlmoeModel> {
  const { config } = checkpoint;
  const entries = matchCheckpoint(config, checkpoint.tensors);
  if (opts.checkTensors) checkTensorsFinite(entries);
  const totalBytes = entries.reduce((sum, e) => sum + e.byteLength, 0);
  const progress: LoadProgress = { loadedBytes: 0, totalBytes, tensors: 0, totalTensors: entries.length };
  const tensors = new Map<string, Tensor>();
  const byName = new Map(entries.map((e) => [e.name, e]));
  for await (const stored of weightSources(entries)) {
    const source = opts.patch?.names.has(stored.name) ? patched(byName.get(stored.name)!, opts.patch) : stored;
    tensors.set(source.name, await opts.backend.weight(source));
    progress.loadedBytes += stored.byteLength; // the file's bytes: a patched tensor is f32 in memory, not on disk
    progress.tensors++;
    opts.onProgress?.(progress);
  }
  const model = new OlmoeModel(config, assembleWeights(config, tensors), opts.backend);
  if (opts.kvCache !== undefined) model.kvCacheType = opts.kvCache;
  return model;
}

function patched(entry: TensorEntry, patch: WeightPatch): WeightSource {
  const values = patch.apply(entry.name, readTensorFloat32(entry));
  return weightFromBytes(entry.name, 'f32', entry.shape, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}

/** Every value of every tensor finite (quantized blocks dequantized), else an error naming the tensor and index. */
export function checkTensorsFinite(entries: readonly TensorEntry[]): void {
  for (const entry of entries) {
    const values = readTensorFloat32(entry);
    const i = firstNonFinite(values);
    if (i >= 0) throw new WeightError(`${entry.file}: tensor ${entry.name} [${entry.shape.join(', ')}] ${entry.dtype} holds ${values[i]} at element ${i}`);
  }
}

/** Check the checkpoint against the weight table; returns the entries to load, in table order. */
export function matchCheckpoint(config: OlmoeConfig, found: ReadonlyMap<string, TensorEntry>): TensorEntry[] {
  const table = weightTable(config);
  const expected = new Set(table.map((spec) => spec.hf));
  // A tied head may still be saved; it is the embedding, so it is not read.
  const ignorable = config.tieWordEmbeddings ? new Set(['lm_head.weight']) : new Set<string>();
  const missing = table.filter((spec) => !found.has(spec.hf)).map((spec) => spec.hf);
  const extra = [...found.keys()].filter((name) => !expected.has(name) && !ignorable.has(name));
  const misshaped = table.filter((spec) => found.has(spec.hf) && !sameShape(found.get(spec.hf)!.shape, spec.shape));
  const where = checkpointFiles(found);
  if (missing.length) throw new WeightError(`${where} is missing ${missing.length} tensor(s) the config requires: ${listSome(missing)}`);
  if (extra.length) throw new WeightError(`${where} has ${extra.length} tensor(s) an OLMoE with this config does not use: ${listSome(extra)}`);
  if (misshaped.length) throw new WeightError(`tensor shape mismatch: ${listSome(misshaped.map((spec) => describeMismatch(spec, found.get(spec.hf)!)))}`);
  return table.map((spec) => found.get(spec.hf)!);
}

/** The file(s) the tensors were found in, for messages about the checkpoint as a whole. */
function checkpointFiles(found: ReadonlyMap<string, TensorEntry>): string {
  const files = [...new Set([...found.values()].map((entry) => entry.file))];
  if (files.length === 0) return 'the checkpoint (no tensors)';
  return files.length === 1 ? files[0]! : `the checkpoint (${listSome(files, 3)})`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function describeMismatch(spec: WeightSpec, entry: TensorEntry): string {
  return `${spec.hf} is [${entry.shape.join(', ')}] in ${entry.file}, config requires [${spec.shape.join(', ')}]`;
}

function listSome(items: readonly string[], limit = 5): string {
  const shown = items.slice(0, limit).join('; ');
  return items.length > limit ? `${shown}; … and ${items.length - limit} more` : shown;
}

/**
 * Training checkpoints: an HF folder (config.json, model.safetensors, tokenizer files: loadable by
 * `olmoe generate` and by transformers) plus optimizer.safetensors (AdamW m and v) and trainer_state.json
 * (step, data position, RNG, config fingerprint) for exact resume. A checkpoint is staged in a temporary
 * folder and renamed into place, then `latest.json` is replaced atomically, so a failure at any point (disk
 * full included) leaves the previous checkpoint and pointer intact.
 */
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeFloats, SAFETENSORS_DTYPES, type FloatDType } from '../core/dtype.js';
import { FormatError, IoError, withIo } from '../core/errors.js';
import { AtomicFile, removeStaleStaging, stagingPath, writeStep } from '../io/atomic-file.js';
import { readJsonObject } from '../io/json.js';
import { readSafetensorsHeader, readTensorFloat32 } from '../io/safetensors.js';
import { SafetensorsWriter } from '../io/safetensors-writer.js';
import { listCheckpointTensors } from '../io/checkpoint.js';
import { parseConfig, toHfConfigJson } from '../model/config.js';
import { matchCheckpoint } from '../model/load.js';
import type { TrainArchitecture, TrainModel, TrainParam } from './model.js';

export const TRAINER_STATE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const LATEST = 'latest.json';
/** An adapter checkpoint's trainable tensors under their TrainParam names (for an exact resume). */
export const TRAINABLE_FILE = 'trainable.safetensors';
/** The PEFT adapter folder inside an adapter checkpoint. */
export const ADAPTER_DIR = 'adapter';

export interface TrainerState {
  readonly step: number;
  readonly tokens: number;
  /** The data loader's position (its own JSON). */
  readonly data: unknown;
  readonly rng: string;
  /** Fingerprint of the settings a resume must share with the run (model, data, optimizer, schedule). */
  readonly configHash: string;
}

export interface OptimizerTensors {
  readonly step: number;
  readonly m: readonly Float32Array[];
  readonly v: readonly Float32Array[];
}

export interface SaveOptions {
  readonly model: TrainModel;
  readonly tokenizerJson: string;
  readonly configExtra?: Record<string, unknown>;
  readonly dtype?: FloatDType;
  readonly optimizer?: OptimizerTensors;
  readonly state?: TrainerState;
  /** The starting checkpoint's chat template, kept in tokenizer_config.json (adapted chat models). */
  readonly chatTemplate?: string;
  /**
   * Train only these (LoRA): the checkpoint holds them (TRAINABLE_FILE, and `save` writes the PEFT adapter into
   * ADAPTER_DIR) and their optimizer state instead of the whole model.
   */
  readonly adapter?: { readonly params: readonly TrainParam[]; save(dir: string): void };
  /** Tests: fail like a full disk once this many bytes have been written. */
  readonly failAfterBytes?: number;
}

/** Write checkpoint folder `dir` atomically (staged next to it, renamed into place). */
export function saveCheckpoint(dir: string, opts: SaveOptions): void {
  const staging = stagingPath(dir);
  removeStaleStaging(dir); // what a killed writer of this folder left
  rmSync(staging, { recursive: true, force: true });
  withIo(staging, 'create folder', () => mkdirSync(staging, { recursive: true }));
  const budget = { left: opts.failAfterBytes ?? Infinity };
  try {
    const { model } = opts;
    const config = model.arch.config;
    const dtype = opts.dtype ?? 'f32';
    if (opts.adapter) {
      opts.adapter.save(join(staging, ADAPTER_DIR));
      writeTensors(join(staging, TRAINABLE_FILE), opts.adapter.params.map((p) => ({ name: p.name, shape: p.shape, values: model.read(p) })), 'f32', budget);
    } else {
      writeText(join(staging, 'config.json'), JSON.stringify(toHfConfigJson({ ...config, torchDtype: { f32: 'float32', bf16: 'bfloat16', f16: 'float16' }[dtype] }, trainingKeys(model, opts.configExtra)), null, 2) + '\n', budget);
      writeText(join(staging, 'generation_config.json'), JSON.stringify({ eos_token_id: config.eosTokenIds[0], pad_token_id: config.padTokenId }) + '\n', budget);
      writeText(join(staging, 'tokenizer.json'), opts.tokenizerJson, budget); // byte for byte: shards name it by its sha256
      const chat = opts.chatTemplate === undefined ? {} : { chat_template: opts.chatTemplate };
      writeText(join(staging, 'tokenizer_config.json'), JSON.stringify({ ...tokenizerConfig(opts.tokenizerJson, config.maxPositionEmbeddings), ...chat }) + '\n', budget);
      writeTensors(join(staging, 'model.safetensors'), model.params.map((p) => ({ name: p.name, shape: p.shape, values: model.read(p) })), dtype, budget);
    }
    if (opts.optimizer) {
      const { m, v, step } = opts.optimizer;
      const tensors = (opts.adapter?.params ?? model.params).flatMap((p, i) => [{ name: `m.${p.name}`, shape: p.shape, values: m[i]! }, { name: `v.${p.name}`, shape: p.shape, values: v[i]! }]);
      writeTensors(join(staging, OPTIMIZER_FILE), tensors, 'f32', budget, { step: String(step) });
    }
    if (opts.state) writeText(join(staging, TRAINER_STATE), JSON.stringify({ format: 'olmoe-trainer-state', version: 1, ...opts.state }, null, 2) + '\n', budget);
    writeStep();
    if (existsSync(dir)) withIo(dir, 'replace', () => rmSync(dir, { recursive: true }));
    writeStep(); // a kill here leaves no folder, only complete staging: the next save of `dir` redoes it
    withIo(dir, 'move into place', () => renameSync(staging, dir));
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** Config keys transformers ignores but this project reads back (routing variant of the run): see `readArchitecture`. */
function trainingKeys(model: TrainModel, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const note = model.arch.routing === 'expert_choice' ? { olmoe_routing: 'expert_choice', olmoe_capacity_factor: model.arch.capacityFactor } : {};
  return { ...note, ...extra };
}

/** The architecture a checkpoint folder was trained with: its config plus the routing keys `trainingKeys` wrote. */
export function readArchitecture(dir: string): TrainArchitecture {
  const raw = readJsonObject(join(dir, 'config.json'));
  const routing = raw.olmoe_routing === 'expert_choice' ? 'expert_choice' : 'token_choice';
  return { config: parseConfig(raw), routing, capacityFactor: Number(raw.olmoe_capacity_factor ?? 1) };
}

/** The tokenizer_config.json a checkpoint gets: what `olmoe generate` and transformers read beside tokenizer.json. */
export function tokenizerConfig(tokenizerJson: string, context: number): Record<string, unknown> {
  const added = (JSON.parse(tokenizerJson) as { added_tokens?: { content: string }[] }).added_tokens ?? [];
  const has = (token: string) => added.some((t) => t.content === token);
  return {
    add_bos_token: false, add_eos_token: false, bos_token: null, clean_up_tokenization_spaces: false, model_max_length: context,
    eos_token: has('<|endoftext|>') ? '<|endoftext|>' : null, pad_token: has('<|padding|>') ? '<|padding|>' : null,
  };
}

interface Budget {
  left: number;
}

function spend(path: string, budget: Budget, bytes: number): void {
  budget.left -= bytes;
  if (budget.left < 0) throw new IoError(path, 'write', Object.assign(new Error('ENOSPC: no space left on device (simulated)'), { code: 'ENOSPC' }));
}

function writeText(path: string, text: string, budget: Budget): void {
  spend(path, budget, Buffer.byteLength(text));
  writeStep();
  withIo(path, 'write', () => writeFileSync(path, text));
}

function writeTensors(path: string, tensors: { name: string; shape: readonly number[]; values: Float32Array }[], dtype: FloatDType, budget: Budget, metadata: Record<string, string> = {}): void {
  const writer = new SafetensorsWriter(path, tensors.map((t) => ({ name: t.name, dtype, shape: t.shape })), { format: 'pt', ...metadata });
  try {
    for (const t of tensors) {
      const bytes = encodeFloats(dtype, t.values);
      spend(path, budget, bytes.byteLength);
      writer.write(bytes);
    }
    writer.finish();
  } catch (error) {
    writer.abort();
    throw error;
  }
}

/** What `latest.json` records: the newest complete checkpoint, and the dtype of `export/` once that is written from it. */
export interface LatestPointer {
  readonly step: number;
  readonly checkpoint: string;
  readonly exported?: FloatDType;
}

/** Replace `<run>/latest.json` so it names `checkpoint` (a folder name under the run). */
export function pointLatest(runDir: string, latest: LatestPointer): void {
  const file = new AtomicFile(join(runDir, LATEST));
  file.write(Buffer.from(JSON.stringify(latest) + '\n'));
  file.finish();
}

/** The run's `latest.json`, or null when the run has no checkpoint yet. */
export function readLatest(runDir: string): LatestPointer | null {
  const path = join(runDir, LATEST);
  if (!existsSync(path)) return null;
  const json = readJsonObject(path);
  if (typeof json.checkpoint !== 'string') throw new FormatError(path, 'has no "checkpoint" string');
  if (!Number.isSafeInteger(json.step)) throw new FormatError(path, '"step" is not an integer');
  const exported = typeof json.exported === 'string' ? (json.exported as FloatDType) : undefined;
  return { step: json.step as number, checkpoint: json.checkpoint, ...(exported && { exported }) };
}

/** The checkpoint folder `latest.json` names, or null when the run has none yet. */
export function latestCheckpoint(runDir: string): string | null {
  const latest = readLatest(runDir);
  if (!latest) return null;
  const dir = join(runDir, latest.checkpoint);
  if (!existsSync(join(dir, TRAINER_STATE))) throw new FormatError(join(runDir, LATEST), `names ${latest.checkpoint}, which has no ${TRAINER_STATE}`);
  return dir;
}

/** Read a checkpoint's weights into `model` (any float dtype; shapes checked against the model's config). */
export function loadParams(model: TrainModel, dir: string): void {
  const entries = matchCheckpoint(model.arch.config, listCheckpointTensors(dir));
  entries.forEach((entry, i) => model.backend.write(model.params[i]!.value, readTensorFloat32(entry)));
}


/** Read an adapter checkpoint's trainable tensors (TRAINABLE_FILE) into `params`, by name and shape. */
export function loadTrainable(dir: string, params: readonly TrainParam[], backend: TrainModel['backend']): void {
  const path = join(dir, TRAINABLE_FILE);
  if (!existsSync(path)) throw new FormatError(path, 'missing: this is not an adapter checkpoint');
  const header = readSafetensorsHeader(path);
  for (const p of params) {
    const entry = header.tensors.get(p.name);
    if (!entry || entry.shape.join() !== p.shape.join()) throw new FormatError(path, `tensor ${p.name} is missing or not [${p.shape.join(', ')}]`);
    backend.write(p.value, readTensorFloat32(entry));
  }
}

export function loadOptimizer(dir: string, params: readonly TrainParam[]): OptimizerTensors {
  const path = join(dir, OPTIMIZER_FILE);
  if (!existsSync(path)) throw new FormatError(path, 'missing: this checkpoint cannot resume training (intermediate checkpoints keep weights only)');
  const header = readSafetensorsHeader(path);
  const tensor = (name: string, p: TrainParam): Float32Array => {
    const entry = header.tensors.get(name);
    if (!entry || entry.dtype !== SAFETENSORS_DTYPES.F32 || entry.shape.join() !== p.shape.join()) throw new FormatError(path, `tensor ${name} is missing or not f32 [${p.shape.join(', ')}]`);
    return readTensorFloat32(entry);
  };
  const step = Number(header.metadata?.step);
  if (!Number.isSafeInteger(step) || step < 0) throw new FormatError(path, `metadata "step" is ${JSON.stringify(header.metadata?.step)}`);
  return { step, m: params.map((p) => tensor(`m.${p.name}`, p)), v: params.map((p) => tensor(`v.${p.name}`, p)) };
}

export function loadTrainerState(dir: string): TrainerState {
  const path = join(dir, TRAINER_STATE);
  const json = readJsonObject(path);
  if (json.format !== 'olmoe-trainer-state' || json.version !== 1) throw new FormatError(path, 'is not an olmoe trainer state (version 1)');
  for (const key of ['step', 'tokens'] as const) if (!Number.isSafeInteger(json[key])) throw new FormatError(path, `"${key}" is not an integer`);
  if (typeof json.rng !== 'string' || typeof json.configHash !== 'string') throw new FormatError(path, '"rng" and "configHash" must be strings');
  return json as unknown as TrainerState;
}

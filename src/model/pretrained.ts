/**
 * A pretrained model as a user names it: a local folder or a hub id. Loads config, weights, tokenizer and
 * generation_config.json together.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type { Backend } from '../core/backend.js';
import { HubError, InputError } from '../core/errors.js';
import { hubDownloadFile, hubSnapshotModel, isHubRepoId, type HubOptions } from '../io/hub.js';
import { readGguf } from '../io/gguf.js';
import { readJsonObjectIfExists } from '../io/json.js';
import { tokenizerFromGguf } from '../tokenizer/gguf.js';
import { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import { tokenIds, type OlmoeConfig } from './config.js';
import { loadCheckpoint, openCheckpoint, type Checkpoint, type LoadProgress, type WeightPatch } from './load.js';
import type { OlmoeModel } from './olmoe.js';

/** Sampling defaults and stop ids from generation_config.json; only keys present there are set. */
export interface GenerationDefaults {
  eosTokenIds: number[];
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  maxNewTokens?: number;
}

export interface Pretrained {
  /** The model folder or GGUF file. */
  dir: string;
  model: OlmoeModel;
  tokenizer: OlmoeTokenizer;
  generation: GenerationDefaults;
}

export interface PretrainedOptions extends HubOptions {
  backend: Backend;
  onLoadProgress?: (progress: LoadProgress) => void;
  /** Scan the weights for NaN/inf before loading. */
  checkTensors?: boolean;
  /** Changes to the weights made from the checkpoint's config (a LoRA adapter checked against it and merged). */
  patch?: (config: OlmoeConfig) => WeightPatch;
}

/**
 * A local folder or GGUF file, or a hub repo id downloaded into the HF cache: the whole model, or with
 * `tokenizerOnly` just its tokenizer files.
 */
export async function resolveModelPath(spec: string, opts: HubOptions & { tokenizerOnly?: boolean } = {}): Promise<string> {
  if (existsSync(spec)) return spec;
  // transformers' order: an existing folder, else a repo id if the name can be one (huggingface_hub's
  // validate_repo_id); anything else (./x, /x, ~/x, a/b/c) can only have been meant as a path.
  if (!isHubRepoId(spec)) throw new InputError(`${noSuchPath(spec)} (and not a hub id: those are org/name)`);
  const [owner] = spec.split('/');
  if (!isFolder(owner!)) return fromHub(spec, opts);
  // `models/olmoe-min` with a local models/ folder is most likely a mistyped path, but may still be a hub id
  // (as transformers would take it): try the hub, and if it has no such repo either, say the path first.
  try {
    return await fromHub(spec, opts);
  } catch (error) {
    if (!(error instanceof HubError)) throw error;
    throw new InputError(`${noSuchPath(spec)}; as a hub id: ${error.message}`);
  }
}

function isFolder(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** "no such folder or file", with the closest name in the nearest folder that exists (a typo's likely target). */
function noSuchPath(spec: string): string {
  if (spec.startsWith('~')) return `${spec}: no such folder or file (the shell expands ~ only outside quotes)`;
  let missing = resolve(spec);
  while (!existsSync(dirname(missing)) && dirname(missing) !== missing) missing = dirname(missing);
  let names: string[] = [];
  try {
    names = readdirSync(dirname(missing));
  } catch {
    // not a readable folder: no suggestion
  }
  const wanted = basename(missing);
  const best = names.map((name) => ({ name, distance: editDistance(name, wanted) })).sort((a, b) => a.distance - b.distance)[0];
  if (!best || best.distance > Math.max(2, wanted.length / 4)) return `${spec}: no such folder or file`;
  const suggestion = join(dirname(missing), best.name);
  return `${spec}: no such folder or file; did you mean ${isAbsolute(spec) ? suggestion : relative(process.cwd(), suggestion)}?`;
}

/** Levenshtein distance (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length]!;
}

async function fromHub(spec: string, opts: HubOptions & { tokenizerOnly?: boolean }): Promise<string> {
  if (!opts.tokenizerOnly) return hubSnapshotModel(spec, opts);
  const path = (await hubDownloadFile(spec, 'tokenizer.json', opts))!;
  const pinned = { ...opts, revision: basename(dirname(path)), optional: true }; // same commit as tokenizer.json
  for (const name of ['tokenizer_config.json', 'special_tokens_map.json']) await hubDownloadFile(spec, name, pinned);
  return dirname(path);
}

/** The tokenizer of a checkpoint: its tokenizer files, or the tokenizer.ggml.* metadata of a GGUF. */
export function checkpointTokenizer(checkpoint: Checkpoint): OlmoeTokenizer {
  return checkpoint.gguf ? tokenizerFromGguf(checkpoint.gguf) : OlmoeTokenizer.fromFolder(checkpoint.path);
}

/** Just the tokenizer of a folder, GGUF file or hub repo (no weights are read or downloaded). */
export async function loadTokenizer(spec: string, opts: HubOptions = {}): Promise<OlmoeTokenizer> {
  const path = await resolveModelPath(spec, { ...opts, tokenizerOnly: true });
  return statSync(path).isFile() ? tokenizerFromGguf(readGguf(path)) : OlmoeTokenizer.fromFolder(path);
}

export async function loadPretrained(spec: string, opts: PretrainedOptions): Promise<Pretrained> {
  const path = await resolveModelPath(spec, opts);
  const checkpoint = openCheckpoint(path);
  const tokenizer = checkpointTokenizer(checkpoint);
  const patch = opts.patch?.(checkpoint.config);
  const model = await loadCheckpoint(checkpoint, { backend: opts.backend, onProgress: opts.onLoadProgress, checkTensors: opts.checkTensors, patch });
  // The tokenizer's eos also stops generation: 0125-Instruct's is |||IP_ADDRESS||| (id 0), config says 50279 (spec §4.2).
  const tokenizerEos = tokenizer.tokenId(tokenizer.eosToken);
  const configEos = [...model.config.eosTokenIds, ...(tokenizerEos === undefined ? [] : [tokenizerEos])];
  const generation = checkpoint.format === 'hf' ? readGenerationDefaults(path, configEos) : { eosTokenIds: [...new Set(configEos)] };
  return { dir: path, model, tokenizer, generation };
}

/** Stop ids are the union of config.json's and generation_config.json's eos ids (spec §7). */
export function readGenerationDefaults(dir: string, configEos: readonly number[]): GenerationDefaults {
  const json = readJsonObjectIfExists(join(dir, 'generation_config.json')) ?? {};
  const eosTokenIds = [...new Set([...configEos, ...tokenIds(json, 'eos_token_id', 'generation_config.json')])];
  const defaults: GenerationDefaults = { eosTokenIds };
  const number = (key: string) => (typeof json[key] === 'number' ? (json[key] as number) : undefined);
  if (typeof json.do_sample === 'boolean') defaults.greedy = !json.do_sample;
  assignDefined(defaults, {
    temperature: number('temperature'),
    topK: number('top_k'),
    topP: number('top_p'),
    minP: number('min_p'),
    repetitionPenalty: number('repetition_penalty'),
    maxNewTokens: number('max_new_tokens'),
  });
  return defaults;
}

function assignDefined<T extends object>(target: T, values: Partial<T>): void {
  for (const [key, value] of Object.entries(values)) if (value !== undefined) (target as Record<string, unknown>)[key] = value;
}

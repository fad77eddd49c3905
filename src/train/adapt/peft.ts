/**
 * LoRA adapters in PEFT's layout, so PEFT loads what olmoe trains and olmoe loads what PEFT trained:
 *   adapter_config.json        {"peft_type": "LORA", "r", "lora_alpha", "target_modules", ...}
 *   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in], ….lora_B.weight [out, r]
 * where <module> is the HF module name of OLMoE (`model.layers.N.self_attn.q_proj`,
 * `model.layers.N.mlp.experts.E.gate_proj`, the router `model.layers.N.mlp.gate`, ...). Target matching follows
 * PEFT's check_target_module_exists (peft/tuners/tuners_utils.py): a string is a regular expression matched against
 * the whole module name; a list entry matches a module with that name or ending in "." + entry, and then
 * layers_to_transform keeps the modules of those layer indices. rank_pattern / alpha_pattern keys match as PEFT's get_pattern_key:
 * the module name ends with the key after a dot (or is the key).
 *
 * Reading is strict: a missing or extra tensor, a rank other than the config's, a shape that is not the base
 * model's (an adapter for another model), a target that names no OLMoE module, or a PEFT feature this version does
 * not apply (DoRA, bias, modules_to_save) is an error naming it.
 *
 * Training hook needed from the training model (not wired here: src/train/model.ts belongs to the engine rework):
 * for every module in `targetedModules`, the linear y = x·Wᵀ must become y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ with A
 * and B trainable parameters (W frozen) — per expert for the experts' gate/up/down projections, which the grouped
 * expert kernel applies to only the tokens routed to that expert. Then `LoraModule.a/b` are those parameters.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FloatDType } from '../../core/dtype.js';
import { encodeFloats } from '../../core/dtype.js';
import { FormatError, preview, UnsupportedError, WeightError } from '../../core/errors.js';
import { AtomicFile } from '../../io/atomic-file.js';
import { readJsonObject, type JsonObject } from '../../io/json.js';
import { readSafetensorsHeader, readTensorFloat32, type TensorEntry } from '../../io/safetensors.js';
import { writeSafetensors } from '../../io/safetensors-writer.js';
import type { OlmoeConfig } from '../../model/config.js';
import type { WeightPatch } from '../../model/load.js';
import { weightTable } from '../../model/weights.js';
import { loraScaling, mergeLora, type LoraModule } from './lora.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

export interface LoraSettings {
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  /** PEFT target_modules: module names / name suffixes, or one regular expression over whole names. */
  readonly targetModules: readonly string[] | string;
  readonly useRslora: boolean;
  /** Only these layer indices (PEFT layers_to_transform); undefined: all. */
  readonly layersToTransform?: readonly number[];
  /** Per-module rank / alpha by PEFT pattern key. */
  readonly rankPattern?: ReadonlyMap<string, number>;
  readonly alphaPattern?: ReadonlyMap<string, number>;
  readonly baseModelNameOrPath?: string | null;
}

export interface LoraAdapter {
  readonly settings: LoraSettings;
  /** By module name, in the order of the model's weight table. */
  readonly modules: ReadonlyMap<string, LoraModule>;
}

export interface ModuleShape {
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
}

/** Every linear module of the model (2-D weights but the embedding), by HF module name, in checkpoint order. */
export function linearModules(config: OlmoeConfig): ModuleShape[] {
  return weightTable(config)
    .filter((spec) => spec.shape.length === 2 && spec.hf !== 'model.embed_tokens.weight')
    .map((spec) => ({ name: spec.hf.slice(0, -'.weight'.length), outFeatures: spec.shape[0]!, inFeatures: spec.shape[1]! }));
}

/** PEFT's layer index of a module name (`….layers.N.…`), or undefined. */
function layerIndex(name: string): number | undefined {
  const match = /(?:^|\.)layers\.(\d+)\./.exec(name);
  return match ? Number(match[1]) : undefined;
}

/** The modules `settings` adapts; a list entry that matches no module is an error (an unknown target). */
export function targetedModules(settings: LoraSettings, config: OlmoeConfig, source = ADAPTER_CONFIG): ModuleShape[] {
  const modules = linearModules(config);
  let matches: (name: string) => boolean;
  const targets = settings.targetModules;
  if (typeof targets === 'string') {
    let regex: RegExp;
    try {
      regex = new RegExp(`^(?:${targets})$`);
    } catch (error) {
      throw new FormatError(source, `target_modules ${preview(targets)} is not a regular expression: ${(error as Error).message}`);
    }
    matches = (name) => regex.test(name);
  } else {
    const entryMatches = (entry: string, name: string) => name === entry || name.endsWith(`.${entry}`);
    for (const entry of targets) {
      if (!modules.some((m) => entryMatches(entry, m.name))) {
        const known = [...new Set(modules.map((m) => m.name.split('.').slice(-1)[0]!))].join(', ');
        throw new FormatError(source, `target_modules: unknown target ${preview(entry)}: no module of OLMoE is named so (its linear modules end in ${known})`);
      }
    }
    matches = (name) => targets.some((entry) => entryMatches(entry, name));
  }
  const layers = typeof targets === 'string' ? undefined : settings.layersToTransform; // PEFT applies it to list targets only
  const selected = modules.filter((m) => matches(m.name) && (layers === undefined || layers.includes(layerIndex(m.name) ?? -1)));
  if (selected.length === 0) throw new FormatError(source, `target_modules ${preview(targets)}${layers ? ` in layers ${preview(layers)}` : ''} selects no module of this model`);
  return selected;
}

/** PEFT's get_pattern_key: the first key the module name ends with (after a dot), or the name itself. */
function patternValue(pattern: ReadonlyMap<string, number> | undefined, name: string): number | undefined {
  if (!pattern) return undefined;
  for (const [key, value] of pattern) if (patternRegex(key).test(name)) return value;
  return undefined;
}

function patternRegex(key: string): RegExp {
  return new RegExp(`^(?:.*\\.)?(?:${key})$`);
}

/** Rank and scaling of one module under `settings`. */
export function moduleRank(settings: LoraSettings, name: string): { rank: number; scaling: number } {
  const rank = patternValue(settings.rankPattern, name) ?? settings.r;
  const alpha = patternValue(settings.alphaPattern, name) ?? settings.alpha;
  return { rank, scaling: loraScaling(alpha, rank, settings.useRslora) };
}

export function peftTensorName(module: string, which: 'A' | 'B'): string {
  return `base_model.model.${module}.lora_${which}.weight`;
}

/** adapter_config.json as PEFT's LoraConfig writes it (the keys every PEFT version reads). */
export function adapterConfigJson(settings: LoraSettings): JsonObject {
  const pattern = (map: ReadonlyMap<string, number> | undefined) => Object.fromEntries(map ?? []);
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: settings.baseModelNameOrPath ?? null,
    revision: null,
    r: settings.r,
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout,
    target_modules: typeof settings.targetModules === 'string' ? settings.targetModules : [...settings.targetModules],
    layers_to_transform: settings.layersToTransform ? [...settings.layersToTransform] : null,
    layers_pattern: null,
    rank_pattern: pattern(settings.rankPattern),
    alpha_pattern: pattern(settings.alphaPattern),
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: settings.useRslora,
    use_dora: false,
    modules_to_save: null,
    init_lora_weights: true,
    inference_mode: true,
  };
}

/** Write an adapter folder: the weights first, then the config (each atomic); a folder with a config is complete. */
export function writePeftAdapter(dir: string, adapter: LoraAdapter, dtype: FloatDType = 'f32'): void {
  const tensors = [...adapter.modules.values()].flatMap((m) => [
    { name: peftTensorName(m.name, 'A'), dtype, shape: [m.rank, m.inFeatures], bytes: encodeFloats(dtype, m.a) },
    { name: peftTensorName(m.name, 'B'), dtype, shape: [m.outFeatures, m.rank], bytes: encodeFloats(dtype, m.b) },
  ]);
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
  const file = new AtomicFile(join(dir, ADAPTER_CONFIG));
  file.write(Buffer.from(`${JSON.stringify(adapterConfigJson(adapter.settings), null, 2)}\n`));
  file.finish();
}

function positiveInteger(json: JsonObject, key: string, file: string): number {
  const value = json[key];
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw new FormatError(file, `${key} must be a positive integer, not ${preview(value)}`);
  return value as number;
}

function patternMap(json: JsonObject, key: string, file: string, integer: boolean): Map<string, number> | undefined {
  const value = json[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw new FormatError(file, `${key} must be an object of pattern → number, not ${preview(value)}`);
  const map = new Map<string, number>();
  for (const [pattern, n] of Object.entries(value as JsonObject)) {
    if (typeof n !== 'number' || !(n > 0) || (integer && !Number.isSafeInteger(n))) throw new FormatError(file, `${key}[${preview(pattern)}] must be a positive ${integer ? 'integer' : 'number'}, not ${preview(n)}`);
    try {
      patternRegex(pattern);
    } catch (error) {
      throw new FormatError(file, `${key}: ${preview(pattern)} is not a regular expression: ${(error as Error).message}`);
    }
    map.set(pattern, n);
  }
  return map.size > 0 ? map : undefined;
}

/** Refuse what PEFT can express but this version does not apply, naming the key. */
function checkSupported(json: JsonObject, file: string): void {
  if (json.peft_type !== 'LORA') throw new UnsupportedError(`${file}: peft_type is ${preview(json.peft_type)}; only LoRA adapters ("LORA") are supported`);
  if (json.use_dora === true) throw new UnsupportedError(`${file}: use_dora is true; DoRA adapters are not supported`);
  if (json.bias !== undefined && json.bias !== 'none') throw new UnsupportedError(`${file}: bias is ${preview(json.bias)}; only "none" is supported (OLMoE's linear layers have no bias)`);
  if (Array.isArray(json.modules_to_save) && json.modules_to_save.length > 0) throw new UnsupportedError(`${file}: modules_to_save ${preview(json.modules_to_save)} is not supported`);
  if (json.fan_in_fan_out === true) throw new UnsupportedError(`${file}: fan_in_fan_out is true, which is for GPT-2's Conv1D layers; OLMoE's are Linear`);
  const pattern = json.layers_pattern;
  if (pattern !== undefined && pattern !== null && pattern !== 'layers' && !(Array.isArray(pattern) && pattern.length === 1 && pattern[0] === 'layers')) {
    throw new UnsupportedError(`${file}: layers_pattern ${preview(pattern)}; OLMoE's layers are "layers"`);
  }
}

/** Parse adapter_config.json into settings. */
export function parseAdapterConfig(json: JsonObject, file = ADAPTER_CONFIG): LoraSettings {
  checkSupported(json, file);
  const r = positiveInteger(json, 'r', file);
  const alpha = json.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !(alpha > 0)) throw new FormatError(file, `lora_alpha must be a positive number, not ${preview(alpha)}`);
  const dropout = json.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new FormatError(file, `lora_dropout must be in [0, 1), not ${preview(dropout)}`);
  const targets = json.target_modules;
  const validList = Array.isArray(targets) && targets.length > 0 && targets.every((t) => typeof t === 'string' && t !== '');
  if (typeof targets !== 'string' && !validList) throw new FormatError(file, `target_modules must be a non-empty list of module names or a regular expression, not ${preview(targets)}`);
  let layers = json.layers_to_transform;
  if (typeof layers === 'number') layers = [layers];
  if (layers !== undefined && layers !== null && !(Array.isArray(layers) && layers.every((l) => Number.isSafeInteger(l) && l >= 0))) {
    throw new FormatError(file, `layers_to_transform must be a layer index or a list of them, not ${preview(layers)}`);
  }
  return {
    r,
    alpha,
    dropout,
    targetModules: typeof targets === 'string' ? targets : (targets as string[]),
    useRslora: json.use_rslora === true,
    layersToTransform: (layers as number[] | null | undefined) ?? undefined,
    rankPattern: patternMap(json, 'rank_pattern', file, true),
    alphaPattern: patternMap(json, 'alpha_pattern', file, false),
    baseModelNameOrPath: typeof json.base_model_name_or_path === 'string' ? json.base_model_name_or_path : null,
  };
}

function checkShape(entry: TensorEntry, expected: readonly number[], what: string, file: string): void {
  if (entry.shape.length === 2 && entry.shape[0] === expected[0] && entry.shape[1] === expected[1]) return;
  throw new WeightError(`${file}: ${entry.name} has shape [${entry.shape.join(', ')}], expected [${expected.join(', ')}] (${what})`);
}

/** One module's A and B from the file, checked against the base model's shape and the config's rank. */
function readModule(shape: ModuleShape, settings: LoraSettings, tensors: ReadonlyMap<string, TensorEntry>, file: string): LoraModule {
  const { rank, scaling } = moduleRank(settings, shape.name);
  const [a, b] = (['A', 'B'] as const).map((which) => {
    const entry = tensors.get(peftTensorName(shape.name, which));
    if (!entry) throw new WeightError(`${file}: missing tensor ${peftTensorName(shape.name, which)} (target_modules selects ${shape.name})`);
    return entry;
  }) as [TensorEntry, TensorEntry];
  const base = `${shape.name} is [${shape.outFeatures}, ${shape.inFeatures}] in this model`;
  if (a.shape.length === 2 && b.shape.length === 2 && (a.shape[0] !== rank || b.shape[1] !== rank)) {
    throw new WeightError(`${file}: rank mismatch for ${shape.name}: lora_A has ${a.shape[0]} rows and lora_B ${b.shape[1]} columns, the config's rank is ${rank}`);
  }
  if (a.shape[1] !== shape.inFeatures || b.shape[0] !== shape.outFeatures) {
    throw new WeightError(`${file}: ${shape.name}: lora_A is [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] but ${base}: an adapter for another base model?`);
  }
  checkShape(a, [rank, shape.inFeatures], 'rank × in', file);
  checkShape(b, [shape.outFeatures, rank], 'out × rank', file);
  return { ...shape, rank, scaling, a: readTensorFloat32(a), b: readTensorFloat32(b) };
}

/** Read and validate an adapter folder against the base model's config. */
export function readPeftAdapter(dir: string, config: OlmoeConfig): LoraAdapter {
  const configFile = join(dir, ADAPTER_CONFIG);
  const weightsFile = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(configFile)) throw new FormatError(configFile, 'not found: an adapter folder holds adapter_config.json and adapter_model.safetensors');
  if (!existsSync(weightsFile)) throw new FormatError(weightsFile, 'not found: an adapter folder holds adapter_config.json and adapter_model.safetensors');
  const settings = parseAdapterConfig(readJsonObject(configFile), configFile);
  const shapes = targetedModules(settings, config, configFile);
  const { tensors } = readSafetensorsHeader(weightsFile);
  const expected = new Set(shapes.flatMap((s) => [peftTensorName(s.name, 'A'), peftTensorName(s.name, 'B')]));
  const known = new Set(linearModules(config).map((m) => m.name));
  for (const name of tensors.keys()) {
    if (expected.has(name)) continue;
    const module = /^base_model\.model\.(.+)\.lora_[AB]\.weight$/.exec(name)?.[1];
    if (module !== undefined && !known.has(module)) {
      const shape = `${config.numLayers} layers of ${config.numExperts} experts`;
      throw new WeightError(`${weightsFile}: tensor ${preview(name)} adapts ${module}, which this model (${shape}) does not have: an adapter for another base model?`);
    }
    throw new WeightError(`${weightsFile}: unexpected tensor ${preview(name)}: not the lora_A/lora_B of a module that target_modules selects in this model`);
  }
  const modules = new Map(shapes.map((shape) => [shape.name, readModule(shape, settings, tensors, weightsFile)]));
  return { settings, modules };
}

/**
 * The adapter as a change to its base's weights at load (model/load.ts WeightPatch): each adapted module's weight
 * becomes W + s·B·A (mergeLora), held in float32 — a bf16 or quantized base is widened/dequantized for those modules
 * only, never re-rounded, so the merged model computes base + adapter to float32 rounding.
 */
export function adapterPatch(adapter: LoraAdapter): WeightPatch {
  const byWeight = new Map([...adapter.modules.values()].map((m) => [`${m.name}.weight`, m]));
  return { names: new Set(byWeight.keys()), apply: (name, values) => mergeLora(values, byWeight.get(name)!) };
}

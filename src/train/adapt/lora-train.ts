/**
 * LoRA on the training model — the contract between the adaptation commands (sft/dpo/kto) and the adapter's
 * place in the one forward definition. attachLora freezes the base, adds A and B of every targeted module as
 * trainable parameters, and makes TrainModel.forward compute (model/forward.ts, model/weights.ts):
 * - attention q/k/v/o and the router (mlp.gate, only when targeted): y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ, PEFT's
 *   lora.Linear, dropout on the adapter's input only, one mask per module and pass;
 * - experts' (and a shared expert's) gate/up/down: the weight W + s·B·A formed on the tape each pass, so the grouped
 *   expert op, which sees only the tokens routed to each expert, runs unchanged. This is exactly LoRA when dropout
 *   is 0; per-token input dropout cannot be applied to a weight, so expert targets with dropout > 0 are refused.
 *   Their A is held transposed ([in, r]) so B·A is one matmul; save/load transpose it back to PEFT's [r, in].
 * The base weights enter each pass as tape constants: no weight gradient is computed or stored for them.
 *
 * Dropout is deterministic: the mask of module m in training pass n comes from (seed, n, m), the seed drawn from the
 * `rng` given to attachLora after A's initialisation. A resumed run attaches with the same seeded rng (same seed),
 * loads its adapter (`load`) and sets `dropoutPasses` back to the value saved with its checkpoint, so it draws the
 * masks an unbroken run would have drawn. Passes count only on a recording tape (evaluation has no dropout).
 * Legend: r rank, in / out a module's input / output features.
 */
import { mkdirSync } from 'node:fs';
import type { Tensor } from '../../core/backend.js';
import { InputError, UnsupportedError, WeightError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import type { TrainingBackend } from '../../core/training.js';
import { Tape } from '../../autograd/tape.js';
import type { LayerLora, LoraDelta, LoraLinear } from '../../model/weights.js';
import type { TrainModel, TrainParam } from '../model.js';
import { initLoraModule, type LoraModule } from './lora.js';
import { moduleRank, peftTensorName, readPeftAdapter, targetedModules, writePeftAdapter, type LoraAdapter, type LoraSettings, type ModuleShape } from './peft.js';

export interface LoraTraining {
  /** A and B of every adapted module (PEFT's order); the only parameters the optimizer updates. */
  readonly params: readonly TrainParam[];
  /** The adapted modules' HF names. */
  readonly modules: readonly string[];
  /** Trainable values / all values of base + adapter. */
  readonly trainableCount: number;
  readonly totalCount: number;
  /** Write the adapter in PEFT's layout (adapter_config.json + adapter_model.safetensors), atomically. */
  save(dir: string): void;
  /** Set A and B from an adapter folder written by `save` or PEFT (resume); it must have these modules and ranks. */
  load(dir: string): void;
  /** The adapter's current values on the host (PEFT's layouts: A [r, in], B [out, r]). */
  adapter(): LoraAdapter;
  /**
   * Training passes run so far (each draws fresh dropout masks). Save it with a checkpoint and set it back on resume
   * so the masks continue as in an unbroken run.
   */
  dropoutPasses: number;
}

type LinearSlot = 'q' | 'k' | 'v' | 'o' | 'router';
type ExpertSlot = 'gate' | 'up' | 'down';

/** Where a module's adapter goes in a layer: a LoraLinear slot, or a LoraDelta on expert e (or the shared expert). */
type Placement =
  | { readonly kind: 'linear'; readonly layer: number; readonly slot: LinearSlot }
  | { readonly kind: 'delta'; readonly layer: number; readonly slot: ExpertSlot; readonly expert: number | 'shared' };

interface AdaptedModule {
  readonly module: LoraModule;
  readonly place: Placement;
  readonly a: TrainParam;
  readonly b: TrainParam;
}

function placement(name: string): Placement {
  const attention = /^model\.layers\.(\d+)\.self_attn\.([qkvo])_proj$/.exec(name);
  if (attention) return { kind: 'linear', layer: Number(attention[1]), slot: attention[2] as LinearSlot };
  const router = /^model\.layers\.(\d+)\.mlp\.gate$/.exec(name);
  if (router) return { kind: 'linear', layer: Number(router[1]), slot: 'router' };
  const expert = /^model\.layers\.(\d+)\.mlp\.(?:experts\.(\d+)|shared_expert)\.(gate|up|down)_proj$/.exec(name);
  if (expert) return { kind: 'delta', layer: Number(expert[1]), slot: expert[3] as ExpertSlot, expert: expert[2] === undefined ? 'shared' : Number(expert[2]) };
  throw new UnsupportedError(`LoRA on ${name} is not supported: adapt attention projections, the router (mlp.gate) or experts' gate/up/down_proj`);
}

/** Freeze `model`'s base and train LoRA adapters on the modules `settings` targets (PEFT's initialisation: B = 0). */
export function attachLora(model: TrainModel, settings: LoraSettings, rng: Rng): LoraTraining {
  const shapes = targetedModules(settings, model.arch.config);
  const places = shapes.map((shape) => placement(shape.name));
  const expertTarget = shapes.find((_, i) => places[i]!.kind === 'delta');
  if (expertTarget && settings.dropout > 0) {
    throw new UnsupportedError(
      `LoRA dropout ${settings.dropout} with expert targets (${expertTarget.name}, ...) is not supported: expert adapters are applied to the ` +
        'weight (W + s·B·A), where per-token input dropout cannot act; set the LoRA dropout to 0 or adapt attention only',
    );
  }
  const backend = model.backend;
  const adapted = shapes.map((shape, i) => makeParams(backend, shape, places[i]!, settings, rng));
  const dropoutSeed = Math.floor(rng() * 2 ** 32);
  const params = adapted.flatMap((m) => [m.a, m.b]);
  const state = { passes: 0 };
  model.attachAdapter({ params, layers: (executor, tensor) => layerParts(model, adapted, executor, tensor, { ...settings, seed: dropoutSeed, state }) });
  const trainableCount = params.reduce((sum, p) => sum + size(p.shape), 0);
  const adapter = (): LoraAdapter => ({ settings, modules: new Map(adapted.map((m) => [m.module.name, hostModule(backend, m)])) });
  return {
    params,
    modules: shapes.map((s) => s.name),
    trainableCount,
    totalCount: model.params.reduce((sum, p) => sum + size(p.shape), 0) + trainableCount,
    save: (dir) => {
      mkdirSync(dir, { recursive: true });
      writePeftAdapter(dir, adapter());
    },
    load: (dir) => loadInto(backend, adapted, readPeftAdapter(dir, model.arch.config), dir),
    adapter,
    get dropoutPasses() {
      return state.passes;
    },
    set dropoutPasses(passes: number) {
      if (!Number.isSafeInteger(passes) || passes < 0) throw new InputError(`dropoutPasses must be a count, not ${passes}`);
      state.passes = passes;
    },
  };
}

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function makeParams(backend: TrainingBackend, shape: ModuleShape, place: Placement, settings: LoraSettings, rng: Rng): AdaptedModule {
  const { rank, scaling } = moduleRank(settings, shape.name);
  const module = initLoraModule(shape, rank, scaling, rng);
  const param = (name: string, dims: readonly number[], values: Float32Array): TrainParam => {
    const value = backend.zeros(dims);
    backend.write(value, values);
    return { name, shape: dims, value, grad: backend.zeros(dims), decay: true };
  };
  const transposed = place.kind === 'delta';
  const aShape = transposed ? [shape.inFeatures, rank] : [rank, shape.inFeatures];
  const aValues = transposed ? transpose(module.a, rank, shape.inFeatures) : module.a;
  return {
    module, place,
    a: param(peftTensorName(shape.name, 'A'), aShape, aValues),
    b: param(peftTensorName(shape.name, 'B'), [shape.outFeatures, rank], module.b),
  };
}

/** [rows, cols] row-major → [cols, rows]. */
function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

function hostModule(backend: TrainingBackend, m: AdaptedModule): LoraModule {
  const { rank, inFeatures } = m.module;
  const a = backend.toFloat32(m.a.value);
  return { ...m.module, a: m.place.kind === 'delta' ? transpose(a, inFeatures, rank) : a, b: backend.toFloat32(m.b.value) };
}

function loadInto(backend: TrainingBackend, adapted: readonly AdaptedModule[], adapter: LoraAdapter, dir: string): void {
  const names = adapted.map((m) => m.module.name);
  const extra = [...adapter.modules.keys()].filter((name) => !names.includes(name));
  if (extra.length > 0 || adapter.modules.size !== adapted.length) {
    throw new WeightError(`${dir}: the adapter adapts ${adapter.modules.size} modules, this run ${adapted.length}${extra.length ? ` (not here: ${extra.slice(0, 3).join(', ')})` : ''}`);
  }
  for (const m of adapted) {
    const found = adapter.modules.get(m.module.name)!;
    if (found.rank !== m.module.rank || found.scaling !== m.module.scaling) {
      throw new WeightError(`${dir}: ${m.module.name} has rank ${found.rank}, scaling ${found.scaling}; this run's is rank ${m.module.rank}, scaling ${m.module.scaling}`);
    }
    backend.write(m.a.value, m.place.kind === 'delta' ? transpose(found.a, found.rank, found.inFeatures) : found.a);
    backend.write(m.b.value, found.b);
  }
}

interface DropoutPlan {
  readonly dropout: number;
  readonly seed: number;
  readonly state: { passes: number };
}

/** Each layer's LoRA parts for one pass; a recording tape with dropout > 0 counts a pass and draws its masks. */
function layerParts(model: TrainModel, adapted: readonly AdaptedModule[], executor: Tape | TrainingBackend, tensor: (p: TrainParam) => Tensor, plan: DropoutPlan): (LayerLora | undefined)[] {
  const training = executor instanceof Tape && executor.recording && plan.dropout > 0;
  const pass = training ? plan.state.passes++ : 0;
  const layers: Record<string, unknown>[] = Array.from({ length: model.arch.config.numLayers }, () => ({}));
  const { numExperts } = model.arch.config;
  adapted.forEach((m, index) => {
    const { place } = m;
    const parts = layers[place.layer]!;
    if (place.kind === 'linear') {
      const dropout = training ? (x: Tensor) => (executor as Tape).dropout(x, dropoutMask(plan, pass, index, size(x.shape)), plan.dropout) : undefined;
      const lora: LoraLinear = { a: tensor(m.a), b: tensor(m.b), scaling: m.module.scaling, ...(dropout ? { dropout } : {}) };
      parts[place.slot] = lora;
      return;
    }
    const delta: LoraDelta = { aT: tensor(m.a), b: tensor(m.b), scaling: m.module.scaling };
    if (place.expert === 'shared') {
      const shared = (parts.sharedExpert ??= {}) as Record<ExpertSlot, LoraDelta>;
      shared[place.slot] = delta;
    } else {
      const experts = (parts.experts ??= { gate: new Array(numExperts), up: new Array(numExperts), down: new Array(numExperts) }) as Record<ExpertSlot, (LoraDelta | undefined)[]>;
      experts[place.slot][place.expert] = delta;
    }
  });
  return layers.map((parts) => (Object.keys(parts).length > 0 ? (parts as LayerLora) : undefined));
}

/**
 * Keep-mask of module `index` in pass `pass`: from the seed alone, so a resumed run draws the same one. Element i is
 * kept when the i-th draw of mulberry32 (core/rng.ts, inlined: a mask has T·D elements) is at least p.
 */
function dropoutMask(plan: DropoutPlan, pass: number, index: number, count: number): Uint8Array {
  let state = mix(mix(plan.seed, pass), index);
  const threshold = plan.dropout * 4294967296;
  const keep = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    keep[i] = ((t ^ (t >>> 14)) >>> 0) >= threshold ? 1 : 0;
  }
  return keep;
}

/** A 32-bit hash of (a, b) (murmur3's finaliser over a·φ ⊕ b), so nearby passes and modules get unrelated streams. */
function mix(a: number, b: number): number {
  let h = (Math.imul(a >>> 0, 0x9e3779b1) ^ (b >>> 0)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

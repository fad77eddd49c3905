/**
 * Cases: a seed, the file of it that is replaced, and one or two mutations (each with its own random seed,
 * so any subset can be re-applied when a failure is minimized). Fully determined by (run seed, case index).
 */
import { combinedOracle, type Oracle, type Target } from './mutator.js';
import { mutatorByName, mutatorsFor } from './mutators.js';
import { caseSeed, Random } from './random.js';
import { isFolderSeed, type SeedName, type Seeds } from './seeds.js';

export interface Step {
  mutator: string;
  seed: number;
}

export interface FuzzCase {
  /** `run seed:index`, or a regression file's name. */
  id: string;
  seed: SeedName;
  /** The file replaced: a name inside the HF seed folder, or model.gguf for a GGUF seed. */
  file: string;
  steps: Step[];
  oracle: Oracle;
  bytes: Buffer;
}

/** How often each target is drawn: the binary formats carry the most structure. */
const TARGET_WEIGHTS: [Target, number][] = [
  ['gguf', 35], ['safetensors', 24], ['config', 15], ['tokenizer', 12], ['tokenizer_config', 5], ['generation_config', 4], ['index', 5],
];

const FILE_OF: Record<Exclude<Target, 'gguf'>, string> = {
  index: 'model.safetensors.index.json', safetensors: 'model.safetensors', config: 'config.json', tokenizer: 'tokenizer.json', tokenizer_config: 'tokenizer_config.json', generation_config: 'generation_config.json',
};

function pickTarget(random: Random, only?: RegExp): Target {
  const weights = TARGET_WEIGHTS.filter(([target]) => !only || mutatorsFor(target).some((m) => only.test(m.name)));
  if (weights.length === 0) throw new Error(`no mutator matches ${only}`);
  let roll = random.int(weights.reduce((sum, [, w]) => sum + w, 0));
  for (const [target, weight] of weights) if ((roll -= weight) < 0) return target;
  return weights[0]![0];
}

export function generateCase(seeds: Seeds, runSeed: number, index: number, only?: RegExp): FuzzCase {
  const random = new Random(caseSeed(runSeed, index));
  const id = `${runSeed}:${index}`;
  for (let attempt = 0; ; attempt++) {
    const target = pickTarget(random, only);
    const candidates = mutatorsFor(target).filter((m) => !only || only.test(m.name));
    const seed: SeedName = target === 'gguf' ? random.pick(['gguf-f32', 'gguf-q8_0'] as const) : target === 'index' ? 'hf-sharded' : 'hf';
    const steps = Array.from({ length: random.chance(0.25) ? 2 : 1 }, (_, k): Step => ({ mutator: random.pick(candidates).name, seed: caseSeed(runSeed, index, attempt * 8 + k + 1) }));
    const built = buildCase(seeds, { id, seed, file: target === 'gguf' ? 'model.gguf' : FILE_OF[target] }, steps);
    if (built) return built;
  }
}

/** Mutators that threw (the fuzzer's own bugs), with the last stack; reported by the runner. */
export const mutatorErrors = new Map<string, string>();

/** Apply the steps in order to the seed file; undefined when a step does not apply. */
export function buildCase(seeds: Seeds, where: { id: string; seed: SeedName; file: string }, steps: readonly Step[]): FuzzCase | undefined {
  let bytes = isFolderSeed(where.seed) ? seeds.bytes(where.seed, where.file) : seeds.bytes(where.seed);
  for (const step of steps) {
    let next: Buffer | undefined;
    try {
      next = mutatorByName(step.mutator).apply(bytes, new Random(step.seed));
    } catch (error) {
      // A fuzzer bug, not a finding: counted and shown in the summary, the case is drawn again.
      mutatorErrors.set(step.mutator, `${(error as Error).stack ?? error}`);
      return undefined;
    }
    if (!next) return undefined;
    bytes = next;
  }
  return { ...where, steps: [...steps], oracle: combinedOracle(steps.map((s) => mutatorByName(s.mutator).oracle)), bytes };
}

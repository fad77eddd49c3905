/** Every mutator, by target, plus byte-level breadth (flips, splices) for each file kind. */
import { jsonMutators } from './mutators-json.js';
import { ggufMutators } from './mutators-gguf.js';
import { safetensorsMutators } from './mutators-safetensors.js';
import { mutator, type Mutator, type Target } from './mutator.js';
import type { Random } from './random.js';

function flip(bytes: Buffer, random: Random): Buffer {
  const out = Buffer.from(bytes);
  // Mostly near the start, where headers live; sometimes anywhere.
  const span = random.chance(0.7) ? Math.min(out.length, 4096) : out.length;
  for (let i = 0, n = random.range(1, 8); i < n && span > 0; i++) out[random.int(span)] ^= 1 << random.int(8);
  return out;
}

function splice(bytes: Buffer, random: Random): Buffer {
  const at = random.int(bytes.length + 1);
  const cut = random.chance(0.5) ? random.int(Math.min(64, bytes.length - at) + 1) : 0;
  return Buffer.concat([bytes.subarray(0, at), random.bytes(random.int(16)), bytes.subarray(at + cut)]);
}

const TARGETS: readonly Target[] = ['gguf', 'safetensors', 'index', 'config', 'tokenizer', 'tokenizer_config', 'generation_config'];
/** Changing tokenizer files cannot change logits, so a loaded model must still match the clean one. */
const byteOracle = (target: Target) => (target.startsWith('tokenizer') || target === 'generation_config' ? 'identical-or-error' : 'finite-or-error');

const byteMutators: Mutator[] = TARGETS.flatMap((target) => [mutator(target, 'flip', byteOracle(target), flip), mutator(target, 'splice', byteOracle(target), splice)]);

export const ALL_MUTATORS: readonly Mutator[] = [...ggufMutators, ...safetensorsMutators, ...jsonMutators, ...byteMutators];

export function mutatorsFor(target: Target): Mutator[] {
  return ALL_MUTATORS.filter((m) => m.target === target);
}

export function mutatorByName(name: string): Mutator {
  const found = ALL_MUTATORS.find((m) => m.name === name);
  if (!found) throw new Error(`no mutator ${name}`);
  return found;
}

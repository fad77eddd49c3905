/** Backend selection: `--backend`, else $OLMOE_BACKEND, else native when built, else reference (with one warning). */
import type { TrainingBackend } from '../core/training.js';
import { InputError, OlmoeError } from '../core/errors.js';
import { QUANT_BLOCKS, setQuantizeAccelerator, type QuantDType } from '../core/quant.js';
import { loadAddon } from './native/addon.js';
import { NativeBackend, type NativeOptions } from './native/index.js';
import { ReferenceBackend } from './reference/index.js';

export const BACKEND_NAMES = ['native', 'reference'] as const;

const K_QUANT_KINDS: Partial<Record<QuantDType, number>> = { q4_k: 0, q5_k: 1, q6_k: 2 };

/**
 * Write q4_k, q5_k and q6_k blocks with the native addon (on its thread pool; the same bytes as the TypeScript
 * writer) wherever `quantize` runs from now on. Returns whether the addon is there; without it nothing changes.
 */
export function useNativeQuantizer(): boolean {
  const { addon } = loadAddon();
  if (!addon) return false;
  setQuantizeAccelerator((dtype, values) => {
    const kind = K_QUANT_KINDS[dtype];
    if (kind === undefined) return undefined;
    const blocks = values.length / 256;
    const out = new Uint8Array(blocks * QUANT_BLOCKS[dtype].bytes);
    addon.quantizeK(kind, values, blocks, out);
    return out;
  });
  return true;
}

let warned = false;

/** Whether the native addon loads here, and if not, why. */
export function nativeAvailability(): { available: boolean; problem?: string } {
  const { addon, problem } = loadAddon();
  return addon ? { available: true } : { available: false, problem };
}

export function createBackend(name: string | undefined = process.env.OLMOE_BACKEND, options: NativeOptions = {}): TrainingBackend {
  const chosen = name && name.length > 0 ? name : 'auto';
  if (chosen === 'reference') return new ReferenceBackend();
  if (chosen !== 'native' && chosen !== 'auto') throw new InputError(`unknown backend ${JSON.stringify(chosen)} (available: ${BACKEND_NAMES.join(', ')})`);
  const { addon, problem } = loadAddon();
  if (addon) return new NativeBackend(addon, options);
  if (chosen === 'native') throw new OlmoeError('unsupported', `the native backend is not available: ${problem}; run \`npm rebuild olmoe\` or use --backend reference`);
  if (!warned) process.stderr.write(`olmoe: warning: native backend not built (${problem}); using the slow reference backend. Run \`npm rebuild olmoe\` to build it.\n`);
  warned = true;
  return new ReferenceBackend();
}

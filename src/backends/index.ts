/** Backend selection: `--backend`, else $OLMOE_BACKEND, else native when built, else reference (with one warning). */
import type { TrainingBackend } from '../core/training.js';
import { InputError, OlmoeError } from '../core/errors.js';
import { loadAddon } from './native/addon.js';
import { NativeBackend, type NativeOptions } from './native/index.js';
import { ReferenceBackend } from './reference/index.js';

export const BACKEND_NAMES = ['native', 'reference'] as const;

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

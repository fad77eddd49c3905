/** Backend selection: `--backend`, else $OLMOE_BACKEND, else the best available. */
import type { Backend } from '../core/backend.js';
import { InputError } from '../core/errors.js';
import { ReferenceBackend } from './reference/index.js';

export const BACKEND_NAMES = ['reference'] as const;

export function createBackend(name: string | undefined = process.env.OLMOE_BACKEND): Backend {
  const chosen = name && name.length > 0 ? name : 'reference';
  if (chosen === 'reference') return new ReferenceBackend();
  if (chosen === 'native') throw new InputError('backend "native" is not built in this version; use --backend reference');
  throw new InputError(`unknown backend ${JSON.stringify(chosen)} (available: ${BACKEND_NAMES.join(', ')})`);
}

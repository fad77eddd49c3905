/** The backends a test runs on: reference always, native when its addon is built here (else a visible skip). */
import type { TrainingBackend } from '../src/core/training.js';
import { createBackend, nativeAvailability } from '../src/backends/index.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';

export interface BackendCase {
  name: string;
  create: () => TrainingBackend;
  skip: string | false;
}

const native = nativeAvailability();

export const nativeSkip: string | false = native.available ? false : `native backend not built: ${native.problem}`;

export const backendCases: BackendCase[] = [
  { name: 'reference', create: () => new ReferenceBackend(), skip: false },
  { name: 'native', create: () => createBackend('native'), skip: nativeSkip },
];

export function announceSkip(reason: string | false): string | false {
  if (reason) console.log(`# SKIP: ${reason}`);
  return reason;
}

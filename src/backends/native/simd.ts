/**
 * OLMOE_PREFETCH=0 or 1 turns the decode kernels' software prefetch off or on (native/src/simd.h stream_prefetch);
 * OLMOE_HUGE_PAGES=1 puts the packed weights and large KV caches on transparent huge pages while the machine has
 * free 2 MiB blocks for them, and 0 (the default) does not (native/src/mapping.h). Other values of either are an error.
 *
 * OLMOE_SIMD forces the native kernels' instruction set (read once, when the addon first computes): avx512, avx2 or
 * scalar, at or below what the CPU has, so that one machine can run every kernel path (the tests do). Other values
 * are an error here rather than a silent default; a level above the CPU's runs at the CPU's, said once.
 */
import { OlmoeError } from '../../core/errors.js';
import type { NativeAddon } from './addon.js';

export const SIMD_LEVELS = ['avx512', 'avx2', 'scalar'] as const;

let noted = false;

export function checkSimdEnv(addon: NativeAddon): void {
  for (const name of ['OLMOE_PREFETCH', 'OLMOE_HUGE_PAGES']) {
    const value = process.env[name];
    if (value !== undefined && value !== '0' && value !== '1') throw new OlmoeError('input', `${name}=${value}: expected 0 or 1`);
  }
  const wanted = process.env.OLMOE_SIMD;
  if (!wanted) return;
  if (!(SIMD_LEVELS as readonly string[]).includes(wanted)) throw new OlmoeError('input', `OLMOE_SIMD=${wanted}: expected one of ${SIMD_LEVELS.join(', ')}`);
  const actual = addon.simdLevel();
  if (actual !== wanted && !noted) {
    noted = true;
    process.stderr.write(`olmoe: OLMOE_SIMD=${wanted}: this CPU lacks it; the native kernels use ${actual}\n`);
  }
}

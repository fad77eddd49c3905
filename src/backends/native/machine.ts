/**
 * The machine's limits as the native kernels meet them (native/src/measure.h): memory read bandwidth, which bounds
 * decode (every weight a token uses is read once), and the FP32 FMA peak, which bounds prefill. `olmoe bench`
 * prints decode speed as a fraction of bandwidth ÷ bytes read per token.
 */
import type { NativeAddon } from './addon.js';

export interface MachineLimits {
  /** Bytes per second read from memory by the backend's threads (a buffer far beyond the caches). */
  readBytesPerSecond: number;
  /** FP32 FLOP/s (a multiply-add counts 2) by the backend's threads at its SIMD level. */
  fp32FlopsPerSecond: number;
}

/** 2 GiB: beyond the last-level cache of any machine this runs on (STREAM's rule: 4× the cache or more). */
const BANDWIDTH_BYTES = 2 ** 31;

export function measureMachine(addon: NativeAddon, repeats = 5): MachineLimits {
  return { readBytesPerSecond: addon.measureReadBandwidth(BANDWIDTH_BYTES, repeats), fp32FlopsPerSecond: addon.measureFp32Peak(repeats) };
}

/**
 * One sample of the read bandwidth (best of `repeats` passes), for pairing with a decode run measured beside it: on
 * a shared machine the bandwidth moves by tens of % within minutes. With `keep` the buffer stays mapped for the next
 * sample; the last one unmaps it (a kept buffer is 2 GiB of resident memory).
 */
export function sampleReadBandwidth(addon: NativeAddon, keep: boolean, repeats = 3): number {
  return addon.measureReadBandwidth(BANDWIDTH_BYTES, repeats, keep);
}

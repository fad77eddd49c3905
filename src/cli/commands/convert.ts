/**
 * `olmoe convert IN OUT.gguf` (HF folder → GGUF, f16/bf16/f32) and `olmoe quantize IN OUT.gguf --type ...`
 * (q8_0, q4_0, q4_k_m from an HF folder or a GGUF). Files llama.cpp loads as they are.
 */
import type { Command } from 'commander';
import { GGUF_TARGETS, InputError, openCheckpoint, useNativeQuantizer, writeGguf, type GgufTarget } from '../../index.js';
import { createProgress } from '../progress.js';

const CONVERT_TYPES: GgufTarget[] = ['f16', 'bf16', 'f32'];
const QUANT_TYPES: GgufTarget[] = ['q8_0', 'q4_0', 'q4_k_m'];

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description('write a GGUF (arch olmoe) from an HF folder or GGUF, for llama.cpp and this project')
    .argument('<in>', 'HF model folder or GGUF file')
    .argument('<out>', 'output .gguf file')
    .option('--type <type>', CONVERT_TYPES.join(' | '), 'f16')
    .option('-q, --quiet', 'no progress output')
    .action((input: string, out: string, flags: { type: string; quiet?: boolean }) => run(input, out, flags, CONVERT_TYPES));
  program
    .command('quantize')
    .description('write a quantized GGUF: q8_0, q4_0, or q4_k_m (q4_k with q6_k for the output head and some attn_v/ffn_down)')
    .argument('<in>', 'HF model folder or GGUF file')
    .argument('<out>', 'output .gguf file')
    .requiredOption('--type <type>', QUANT_TYPES.join(' | '))
    .option('-q, --quiet', 'no progress output')
    .action((input: string, out: string, flags: { type: string; quiet?: boolean }) => run(input, out, flags, QUANT_TYPES));
}

function run(input: string, out: string, flags: { type: string; quiet?: boolean }, allowed: GgufTarget[]): void {
  const type = flags.type.toLowerCase() as GgufTarget;
  if (!allowed.includes(type) || !GGUF_TARGETS.includes(type)) throw new InputError(`--type: ${JSON.stringify(flags.type)} is not one of ${allowed.join(', ')}`);
  if (process.env.OLMOE_BACKEND !== 'reference') useNativeQuantizer(); // k-quants on the thread pool, same bytes
  const checkpoint = openCheckpoint(input);
  const bar = createProgress(`write ${type}`, { bytes: true, quiet: flags.quiet });
  writeGguf(checkpoint, out, {
    target: type,
    onProgress: (done, total) => bar.update(done, total),
    onFallback: (message) => process.stderr.write(`fallback: ${message}\n`),
  });
  bar.finish();
}

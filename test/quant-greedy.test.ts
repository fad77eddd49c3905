/**
 * Model level: OLMoE-mini (models/olmoe-mini, the bundled trained model) quantized to q8_0, q4_0 and q4_k_m GGUFs
 * decodes the same greedy continuation on the native backend as on the reference backend — both round the
 * activations of every quantized matmul to 8-bit blocks the same way (quant-matmul.test.ts), so the logits agree to
 * float32 accumulation error and the argmax with them.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { writeGguf } from '../src/model/convert.js';
import { loadModel, openCheckpoint } from '../src/model/load.js';
import { announceSkip, backendCases } from './backends.js';
import { greedyWithCache } from './checkpoints.js';
import { repoRoot, tempDir } from './helpers.js';

const native = backendCases.find((b) => b.name === 'native')!;
const PROMPT = [12, 907, 33, 1500, 4, 271, 88, 3021];

describe('OLMoE-mini quantized: native and reference decode the same greedy tokens', { skip: announceSkip(native.skip) }, () => {
  const dir = tempDir('olmoe-mini-quant-');
  for (const target of ['q8_0', 'q4_0', 'q4_k_m'] as const) {
    it(target, async () => {
      const path = join(dir, `olmoe-mini-${target}.gguf`);
      writeGguf(openCheckpoint(join(repoRoot, 'models', 'olmoe-mini')), path, { target });
      const [ours, reference] = [await loadModel(path, { backend: native.create() }), await loadModel(path, { backend: new ReferenceBackend() })];
      const continuation = greedyWithCache(reference, PROMPT, 12);
      assert.deepEqual(greedyWithCache(ours, PROMPT, 12), continuation);
      assert.ok(new Set(continuation).size > 1, 'the continuation is not one token repeated');
    });
  }
});

/**
 * q4_k_m on rows shorter than a K-quant block (256 values): the tensors that fall back are reported by name with
 * the reason, as llama-quantize reports them; those that fit are not.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { readGguf } from '../src/io/gguf.js';
import { writeGguf } from '../src/model/convert.js';
import { openCheckpoint } from '../src/model/load.js';
import { randomCheckpoint } from './checkpoints.js';

const K_TYPES = new Set(['q4_k', 'q6_k']);
const { dir } = randomCheckpoint({ layers: 2, experts: 2, topK: 1, hidden: 256, heads: 2, intermediate: 64 });
after(() => rmSync(dir, { recursive: true, force: true }));

it('q4_k_m names each tensor whose rows are not a multiple of 256, and only those', () => {
  const out = join(dir, 'q4_k_m.gguf');
  const messages: string[] = [];
  writeGguf(openCheckpoint(dir), out, { target: 'q4_k_m', onFallback: (message) => messages.push(message) });
  const tensors = [...readGguf(out).tensors.values()];
  const matrices = tensors.filter((t) => t.shape.length > 1 && !t.name.endsWith('ffn_gate_inp.weight'));
  // Independently of the code's choice: a matrix falls back exactly when its row length is not a multiple of 256.
  const shortRows = matrices.filter((t) => t.shape[t.shape.length - 1]! % 256 !== 0);
  assert.ok(shortRows.length > 0 && shortRows.length < matrices.length, 'the model has both kinds of rows');
  for (const t of matrices) assert.equal(K_TYPES.has(t.dtype), !shortRows.includes(t), `${t.name} is ${t.dtype}`);
  for (const t of shortRows) {
    const line = messages.find((m) => m.startsWith(`${t.name}:`));
    assert.ok(line, `${t.name} is reported`);
    assert.match(line, new RegExp(`rows of ${t.shape[t.shape.length - 1]} values are not a multiple of 256 .*written as ${t.dtype}`));
  }
  assert.equal(messages.length, shortRows.length + 1, messages.join('\n'));
  assert.match(messages.at(-1)!, new RegExp(`^${shortRows.length} of ${tensors.length} tensors fell back`));
});

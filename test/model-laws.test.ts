/**
 * Laws the forward pass must obey where no golden file exists: grouped-query attention equals multi-head
 * attention with duplicated key/value heads; norm_topk_prob renormalizes exactly the chosen probabilities;
 * clip_qkv changes nothing when loose and something when tight; the observer sees every layer.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { loadModel } from '../src/model/load.js';
import type { OlmoeModel, RoutingEvent } from '../src/model/olmoe.js';
import { editConfig, logitsOf, maxAbsDiff, randomCheckpoint, readAll, rewrite, type StoredTensor } from './checkpoints.js';

const IDS = Int32Array.from([5, 80, 17, 200, 33, 9, 120]);
const load = (dir: string): Promise<OlmoeModel> => loadModel(dir, { backend: new ReferenceBackend() });

/** Rows [Hkv·Hd, …] → [H·Hd, …]: kv head j is repeated for query heads j·g … j·g+g−1 (HF repeat_kv). */
function repeatHeads(tensor: StoredTensor, kvHeads: number, group: number): StoredTensor {
  const values = new Float32Array(tensor.bytes.buffer, tensor.bytes.byteOffset, tensor.bytes.byteLength / 4);
  const headSize = values.length / kvHeads;
  const out = new Float32Array(values.length * group);
  for (let h = 0; h < kvHeads * group; h++) out.set(values.subarray(Math.floor(h / group) * headSize, (Math.floor(h / group) + 1) * headSize), h * headSize);
  const shape = [tensor.shape[0]! * group, ...tensor.shape.slice(1)];
  return { ...tensor, shape, bytes: new Uint8Array(out.buffer) };
}

describe('forward-pass laws', () => {
  it('grouped-query attention equals multi-head attention with repeated kv heads', async () => {
    const gqa = randomCheckpoint({ hidden: 32, heads: 4, kvHeads: 2, std: 0.3, seed: 3 });
    const mha = randomCheckpoint({ hidden: 32, heads: 4, kvHeads: 2, std: 0.3, seed: 3 });
    const isKv = (name: string) => /self_attn\.(k_proj|v_proj|k_norm)\.weight$/.test(name);
    rewrite(mha.dir, readAll(mha.dir).map((t) => (isKv(t.name) ? repeatHeads(t, 2, 2) : t)));
    editConfig(mha.dir, (json) => (json.num_key_value_heads = 4));
    const difference = maxAbsDiff(logitsOf(await load(gqa.dir), IDS), logitsOf(await load(mha.dir), IDS));
    assert.ok(difference < 1e-5, `GQA vs MHA logits differ by ${difference}`);
  });

  it('routing weights are the chosen softmax probabilities, renormalized only with norm_topk_prob', async () => {
    const { dir } = randomCheckpoint({ std: 0.3 });
    for (const normalize of [false, true]) {
      editConfig(dir, (json) => (json.norm_topk_prob = normalize));
      const events: RoutingEvent[] = [];
      (await load(dir)).forward(IDS, { observer: (e) => events.push(e) });
      assert.equal(events.length, 2, 'one event per layer');
      for (const e of events) {
        for (let t = 0; t < e.tokens; t++) {
          const chosen = Array.from(e.expertIds.subarray(t * e.topK, (t + 1) * e.topK), (id) => e.probs[t * e.numExperts + id]!);
          const total = chosen.reduce((a, b) => a + b, 0);
          const probsSum = e.probs.subarray(t * e.numExperts, (t + 1) * e.numExperts).reduce((a, b) => a + b, 0);
          assert.ok(Math.abs(probsSum - 1) < 1e-5, 'router probabilities sum to one');
          assert.ok(chosen.every((p, k) => k === 0 || p <= chosen[k - 1]!), 'sorted descending');
          chosen.forEach((p, k) => assert.ok(Math.abs(e.weights[t * e.topK + k]! - (normalize ? p / total : p)) < 1e-6));
          assert.ok(Math.max(...e.probs.subarray(t * e.numExperts, (t + 1) * e.numExperts)) === chosen[0], 'top-1 is the argmax');
        }
      }
    }
  });

  it('clip_qkv: a loose clip changes nothing, a tight one changes the logits', async () => {
    const { dir } = randomCheckpoint({ std: 0.3 });
    const plain = logitsOf(await load(dir), IDS);
    editConfig(dir, (json) => (json.clip_qkv = 1e6));
    assert.equal(maxAbsDiff(plain, logitsOf(await load(dir), IDS)), 0);
    editConfig(dir, (json) => (json.clip_qkv = 0.05));
    assert.ok(maxAbsDiff(plain, logitsOf(await load(dir), IDS)) > 1e-3);
  });

  it('a one-shot forward longer than max_position_embeddings is refused', async () => {
    const model = await load(randomCheckpoint({ context: 16 }).dir);
    assert.throws(() => model.forward(new Int32Array(17).fill(3)), /17 tokens exceeds the context of 16 positions \(max_position_embeddings\)/);
    assert.doesNotThrow(() => model.forward(new Int32Array(16).fill(3)));
  });

  it('prefill in one pass equals feeding tokens one at a time through the cache', async () => {
    const model = await load(randomCheckpoint({ std: 0.3 }).dir);
    const all = logitsOf(model, IDS);
    const cache = model.createCache();
    const vocab = model.config.vocabSize;
    IDS.forEach((id, t) => {
      const step = model.backend.toFloat32(model.forward(Int32Array.of(id), { cache }));
      assert.ok(maxAbsDiff(step, all.subarray(t * vocab, (t + 1) * vocab)) < 1e-5, `position ${t}`);
    });
    assert.equal(cache.length, IDS.length);
  });
});

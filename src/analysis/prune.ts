/**
 * Domain pruning (the paper's remark in §5.3 that experts a domain rarely uses "can be removed without affecting
 * performance", made a tool): keep, in every layer, the N experts that a domain's tokens use most, and write the
 * smaller checkpoint. Perplexity on held-out text of the domain measures what it costs.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DType } from '../core/dtype.js';
import { InputError, UnsupportedError, withIo } from '../core/errors.js';
import { removeStaleStaging, stagingPath } from '../io/atomic-file.js';
import { readTensorBytes } from '../io/safetensors.js';
import { SafetensorsWriter } from '../io/safetensors-writer.js';
import { openCheckpoint } from '../model/load.js';
import type { OlmoeModel } from '../model/olmoe.js';
import { weightTable } from '../model/weights.js';
import { domainSpecialization } from './metrics.js';
import type { Trace } from './trace.js';

/**
 * Per layer, the `keep` experts with the highest domain specialization (share of the domain's tokens routed to them
 * among their top-k), ascending by id. Ties go to the lower id.
 */
export function expertsForDomain(trace: Trace, domain: string, keep: number): number[][] {
  const { experts: E, topK: K, layers: L } = trace.header.model;
  if (!Number.isInteger(keep) || keep < K || keep > E) throw new InputError(`--keep ${keep}: must be between top-k (${K}) and the number of experts (${E})`);
  const result = domainSpecialization(trace, { k: K });
  const d = result.domains.indexOf(domain);
  if (d < 0) throw new InputError(`the trace has no domain "${domain}" (it has: ${result.domains.join(', ')})`);
  return Array.from({ length: L }, (_, layer) => {
    const values = result.perDomain[d]![layer]!;
    const order = values.map((v, e) => [v, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    return order.slice(0, keep).map(([, e]) => e).sort((a, b) => a - b);
  });
}

const COPIED = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/**
 * Write `src` (an HF folder) to `dst` with only the experts in keep[layer] (the same number in every layer): the
 * router's rows and the experts' weights of the kept experts, renumbered 0..N−1; everything else as it is.
 */
export function writePrunedCheckpoint(src: string, dst: string, keep: readonly (readonly number[])[]): void {
  const checkpoint = openCheckpoint(src);
  if (checkpoint.format !== 'hf') throw new UnsupportedError(`${src}: pruning reads HF folders (safetensors); this is a GGUF file`);
  const config = checkpoint.config;
  const n = keep[0]?.length ?? 0;
  if (keep.length !== config.numLayers || keep.some((layer) => layer.length !== n)) throw new InputError(`keep ${n} experts in each of the ${config.numLayers} layers`);
  const specs: { name: string; dtype: DType; shape: number[]; read: () => Uint8Array }[] = [];
  for (const spec of weightTable(config)) {
    const entry = checkpoint.tensors.get(spec.hf);
    if (!entry) continue; // e.g. a tied lm_head
    const layerMatch = /^model\.layers\.(\d+)\.mlp\.(gate|experts\.(\d+)\.)/.exec(spec.hf);
    const read = () => readTensorBytes(entry);
    if (!layerMatch) {
      specs.push({ name: spec.hf, dtype: entry.dtype, shape: [...entry.shape], read });
      continue;
    }
    const layer = Number(layerMatch[1]);
    const kept = keep[layer]!;
    if (layerMatch[2] === 'gate') {
      const rowBytes = entry.byteLength / entry.shape[0]!;
      specs.push({
        name: spec.hf, dtype: entry.dtype, shape: [n, entry.shape[1]!],
        read: () => {
          const rows = read();
          return concat(kept.map((e) => rows.subarray(e * rowBytes, (e + 1) * rowBytes)));
        },
      });
    } else {
      const expert = Number(layerMatch[3]);
      const at = kept.indexOf(expert);
      if (at >= 0) specs.push({ name: spec.hf.replace(`experts.${expert}.`, `experts.${at}.`), dtype: entry.dtype, shape: [...entry.shape], read });
    }
  }
  const staging = stagingPath(dst);
  removeStaleStaging(dst); // what a killed earlier run left
  withIo(staging, 'create folder', () => mkdirSync(staging, { recursive: true }));
  try {
    const writer = new SafetensorsWriter(join(staging, 'model.safetensors'), specs);
    for (const spec of specs) writer.write(spec.read());
    writer.finish();
    const raw = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(staging, 'config.json'), JSON.stringify({ ...raw, num_experts: n }, null, 2));
    for (const name of COPIED) if (existsSync(join(src, name))) copyFileSync(join(src, name), join(staging, name));
    withIo(dst, 'create folder', () => mkdirSync(dst, { recursive: true }));
    for (const name of readdirSync(dst)) if (/^model.*\.safetensors(\.index\.json)?$/.test(name)) rmSync(join(dst, name));
    for (const name of readdirSync(staging)) withIo(join(dst, name), 'write', () => renameSync(join(staging, name), join(dst, name)));
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Mean negative log-likelihood of each next token, teacher-forced, in windows of `maxLength` tokens. */
export function perplexity(model: OlmoeModel, documents: readonly (readonly number[])[], maxLength = 512): { tokens: number; nll: number; perplexity: number } {
  const V = model.config.vocabSize;
  let nll = 0;
  let tokens = 0;
  for (const ids of documents) {
    for (let start = 0; start + 1 < ids.length; start += maxLength) {
      const window = ids.slice(start, Math.min(ids.length, start + maxLength + 1)); // one more: the last target
      const logits = model.backend.toFloat32(model.forward(Int32Array.from(window.slice(0, -1))));
      for (let t = 0; t + 1 < window.length; t++) {
        const row = logits.subarray(t * V, (t + 1) * V);
        let max = -Infinity;
        for (let v = 0; v < V; v++) if (row[v]! > max) max = row[v]!;
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max);
        nll += Math.log(sum) + max - row[window[t + 1]!]!;
        tokens++;
      }
    }
  }
  if (tokens === 0) throw new InputError('no tokens to evaluate: the held-out documents are empty or one token long');
  return { tokens, nll: nll / tokens, perplexity: Math.exp(nll / tokens) };
}

/**
 * Sparse upcycling (Komatsuzaki et al. 2023; OLMoE paper §4.1.8): start an MoE from a dense checkpoint by copying
 * its MLP into every expert; attention, norms and embeddings are copied; the router keeps its fresh init.
 * A dense model here is an OLMoE with one expert and top-1 (the softmax over one expert is exactly 1).
 */
import { ConfigError } from '../core/errors.js';
import { readTensorFloat32 } from '../io/safetensors.js';
import { openCheckpoint, matchCheckpoint } from '../model/load.js';
import type { TrainModel } from './model.js';

export function upcycleFrom(model: TrainModel, denseDir: string, say?: (line: string) => void): void {
  const dense = openCheckpoint(denseDir);
  const d = dense.config;
  const c = model.arch.config;
  if (d.numExperts !== 1) throw new ConfigError('model.upcycle_from', `${denseDir} has ${d.numExperts} experts; upcycling starts from a dense (1-expert) checkpoint`);
  for (const key of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKVHeads', 'sharedExpertSize'] as const) {
    if (d[key] !== c[key]) throw new ConfigError('model.upcycle_from', `${denseDir} has ${key} ${d[key]}, the model to train has ${c[key]}`);
  }
  const entries = new Map(matchCheckpoint(d, dense.tensors).map((entry) => [entry.name, entry]));
  for (const param of model.params) {
    if (/\.mlp\.gate\.weight$/.test(param.name)) continue; // the router: fresh
    const source = entries.get(param.name.replace(/\.mlp\.experts\.\d+\./, '.mlp.experts.0.'))!;
    model.backend.write(param.value, readTensorFloat32(source));
  }
  say?.(`upcycled ${c.numExperts} experts from the dense checkpoint ${denseDir}`);
}

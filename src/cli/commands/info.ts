/** `olmoe info MODEL`: architecture, parameter counts, dtypes, bytes and tokenizer of a checkpoint. */
import type { Command } from 'commander';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { checkpointTokenizer, openCheckpoint, parameterCounts, type OlmoeConfig } from '../../index.js';
import { addModelOptions, modelDir, printJson, type ModelFlags } from '../common.js';
import { formatBytes } from '../progress.js';

export function registerInfo(program: Command): void {
  addModelOptions(
    program
      .command('info')
      .description('show architecture, total and active parameters, dtypes, bytes and tokenizer (reads headers only)')
      .argument('<model>', 'model folder, GGUF file or hub id (org/name)')
      .option('--json', 'print JSON'),
  ).action(async (spec: string, flags: ModelFlags & { json?: boolean }) => {
    const dir = await modelDir(spec, flags);
    const info = describeModel(dir);
    if (flags.json) printJson(info);
    else printInfo(info);
  });
}

function describeModel(dir: string) {
  const checkpoint = openCheckpoint(dir);
  const config = checkpoint.config;
  const tensors = [...checkpoint.tensors.values()];
  const dtypes: Record<string, number> = {};
  for (const t of tensors) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
  const { total, active } = parameterCounts(config);
  const tokenizer = checkpoint.gguf || existsSync(join(dir, 'tokenizer.json')) ? checkpointTokenizer(checkpoint) : undefined;
  return {
    dir,
    format: checkpoint.format,
    architecture: architecture(config),
    parameters: { total, active },
    tensors: tensors.length,
    dtypes,
    bytes: tensors.reduce((sum, t) => sum + t.byteLength, 0),
    files: [...new Set(tensors.map((t) => t.file))].length,
    tokenizer: tokenizer && {
      vocabSize: tokenizer.vocabSize,
      eosToken: tokenizer.eosToken,
      bosToken: tokenizer.bosToken,
      chatTemplate: tokenizer.chatTemplate ? 'from tokenizer_config.json' : 'OLMoE default (<|user|>/<|assistant|>)',
    },
  };
}

function architecture(c: OlmoeConfig) {
  return {
    layers: c.numLayers, hidden: c.hiddenSize, heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim,
    experts: c.numExperts, expertsPerToken: c.numExpertsPerTok, expertWidth: c.intermediateSize, sharedExpertWidth: c.sharedExpertSize, vocab: c.vocabSize,
    context: c.maxPositionEmbeddings, normTopKProb: c.normTopKProb, tiedEmbeddings: c.tieWordEmbeddings,
    ropeTheta: c.ropeTheta, rmsNormEps: c.rmsNormEps, eosTokenIds: c.eosTokenIds,
  };
}

function printInfo(info: ReturnType<typeof describeModel>): void {
  const a = info.architecture;
  const billions = (n: number) => `${(n / 1e9).toFixed(3)}B (${n.toLocaleString('en-US')})`;
  const lines = [
    `model        ${info.dir} (${info.format === 'gguf' ? 'GGUF' : 'HF safetensors'})`,
    `layers       ${a.layers} × [attention ${a.heads} heads (${a.kvHeads} kv) × ${a.headDim}, QK-norm, RoPE θ=${a.ropeTheta}; MoE ${a.experts} experts, top-${a.expertsPerToken}, width ${a.expertWidth}${a.sharedExpertWidth ? ` + a shared expert of width ${a.sharedExpertWidth}` : ''}]`,
    `hidden       ${a.hidden}; vocab ${a.vocab}; context ${a.context}; norm_topk_prob ${a.normTopKProb}; tied embeddings ${a.tiedEmbeddings}`,
    `parameters   ${billions(info.parameters.total)} total, ${billions(info.parameters.active)} active per token`,
    `weights      ${info.tensors} tensors in ${info.files} file(s), ${formatBytes(info.bytes)}; dtypes ${Object.entries(info.dtypes).map(([d, n]) => `${d}×${n}`).join(', ')}`,
    `tokenizer    ${info.tokenizer ? `${info.tokenizer.vocabSize} ids; eos ${JSON.stringify(info.tokenizer.eosToken)}; bos ${JSON.stringify(info.tokenizer.bosToken)}; chat template: ${info.tokenizer.chatTemplate}` : 'none (no tokenizer.json)'}`,
    `eos ids      ${a.eosTokenIds.join(', ') || 'none'}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

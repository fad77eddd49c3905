/**
 * `olmoe route MODEL "prompt"` and `olmoe logits MODEL --ids ...`: one forward pass over the prompt, showing
 * which experts each token was routed to in each layer (and, for logits, the next-token scores).
 */
import type { Command } from 'commander';
import { indicesByValueDescending, InputError, parseKVCacheType, type Pretrained, type RoutingObserver } from '../../index.js';
import { addModelOptions, loadModel, parseIds, printJson, showToken, type ModelFlags } from '../common.js';

interface RouteFlags extends ModelFlags {
  promptIds?: string;
  layers?: string;
  json?: boolean;
}

/** Routing per layer as plain arrays: experts[T][K] and weights[T][K]. */
export interface LayerRouting {
  layer: number;
  experts: number[][];
  weights: number[][];
}

export function registerRoute(program: Command): void {
  addModelOptions(
    program
      .command('route')
      .description('show the top-k experts and weights of every token in every layer')
      .argument('<model>', 'model folder or hub id (org/name)')
      .argument('[prompt]', 'prompt text')
      .option('--prompt-ids <ids>', 'prompt as comma-separated token ids instead of text')
      .option('--layers <list>', 'only these layers, e.g. 0,7,15')
      .option('--json', 'print {"tokens": [...], "routing": [{layer, experts, weights}]}'),
  ).action(runRoute);
}

export function registerLogits(program: Command): void {
  // The exact f32 KV cache unless asked: these logits are what one compares with other implementations.
  addModelOptions(
    program
      .command('logits')
      .description('logits at every position and the routing, for token ids')
      .argument('<model>', 'model folder or hub id (org/name)')
      .requiredOption('--ids <ids>', 'comma-separated token ids')
      .option('--top <n>', 'without --json: show the n most likely next tokens per position', '5')
      .option('--json', 'print {"logits": number[T][V], "routing": [{layer, experts, weights}]}')
      .option('--kv-cache <type>', 'KV cache storage: f32 (default here: exact), f16 or q8_0', (text: string) => parseKVCacheType(text, '--kv-cache'), 'f32'),
  ).action(runLogits);
}

/** Forward over `ids`, collecting the logits [T][V] and each layer's routing (copied: observer arrays are borrowed). */
export function forwardWithRouting(pretrained: Pretrained, ids: number[]): { logits: Float32Array; routing: LayerRouting[] } {
  const routing: LayerRouting[] = [];
  const { model } = pretrained;
  const logits = model.backend.toFloat32(model.forward(Int32Array.from(ids), { observer: (e) => routing.push(toLayerRouting(e)) }));
  return { logits, routing };
}

function toLayerRouting(event: Parameters<RoutingObserver>[0]): LayerRouting {
  const rows = (values: ArrayLike<number>) =>
    Array.from({ length: event.tokens }, (_, t) => Array.from({ length: event.topK }, (_, k) => values[t * event.topK + k]!));
  return { layer: event.layer, experts: rows(event.expertIds), weights: rows(event.weights) };
}

async function runRoute(spec: string, prompt: string | undefined, flags: RouteFlags): Promise<void> {
  if ((prompt === undefined) === (flags.promptIds === undefined)) throw new InputError('give either a prompt or --prompt-ids (exactly one)');
  const pretrained = await loadModel(spec, flags);
  const ids = flags.promptIds !== undefined ? parseIds(flags.promptIds, '--prompt-ids') : pretrained.tokenizer.encode(prompt!);
  const wanted = flags.layers === undefined ? undefined : new Set(parseIds(flags.layers, '--layers'));
  const routing = forwardWithRouting(pretrained, ids).routing.filter((r) => !wanted || wanted.has(r.layer));
  if (wanted && routing.length < wanted.size) throw new InputError(`--layers: the model has layers 0..${pretrained.model.config.numLayers - 1}`);
  if (flags.json) printJson({ tokens: ids, routing });
  else printRoutingTable(pretrained, ids, routing);
}

function printRoutingTable(pretrained: Pretrained, ids: number[], routing: LayerRouting[]): void {
  const labels = ids.map((id) => showToken(pretrained, id));
  const width = Math.max(8, ...labels.map((l) => l.length));
  const lines = [`${'token'.padEnd(width)}  layer  experts (routing weight), highest first`];
  ids.forEach((_, t) => {
    routing.forEach((layer, i) => {
      const cells = layer.experts[t]!.map((e, k) => `${String(e).padStart(3)} ${layer.weights[t]![k]!.toFixed(3)}`);
      lines.push(`${(i === 0 ? labels[t]! : '').padEnd(width)}  L${String(layer.layer).padEnd(4)}  ${cells.join('  ')}`);
    });
  });
  process.stdout.write(lines.join('\n') + '\n');
}

async function runLogits(spec: string, flags: ModelFlags & { ids: string; top: string; json?: boolean }): Promise<void> {
  const ids = parseIds(flags.ids, '--ids');
  const pretrained = await loadModel(spec, flags);
  const { logits, routing } = forwardWithRouting(pretrained, ids);
  const vocab = pretrained.model.config.vocabSize;
  const rows = ids.map((_, t) => logits.subarray(t * vocab, (t + 1) * vocab));
  if (flags.json) {
    printJson({ logits: rows.map((row) => Array.from(row)), routing });
    return;
  }
  const top = parseIds(flags.top, '--top')[0]!;
  ids.forEach((id, t) => {
    const best = indicesByValueDescending(rows[t]!).slice(0, top);
    const shown = best.map((b) => `${b} ${showToken(pretrained, b)} ${rows[t]![b]!.toFixed(3)}`).join(', ');
    process.stdout.write(`${t} ${id} ${showToken(pretrained, id)} → ${shown}\n`);
  });
}

/**
 * `olmoe analyze`: the paper's routing analyses over one or more traces, written as figures (SVG and PNG), one
 * self-contained HTML report, and the numbers as JSON and CSV. With several traces of the same tokens (checkpoints
 * of one training run, in training order), router saturation is computed against the last; every other analysis
 * describes the last trace.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { coActivation, domainSpecialization, loadBalance, routerSaturation, topCoActivated, vocabularySpecialization, type VocabularyTokenKind } from './metrics.js';
import { renderPng, renderSvg, type Spec } from '../plot/figures.js';
import { coActivationSpec, domainSpec, loadSpec, saturationSpec, vocabularySpec } from './figures.js';
import { memoryTrace, type Trace, type TraceChunk } from './trace.js';

export interface AnalyzeOptions {
  /** Layers for the per-layer figures (default: first, middle, last, as the paper shows 0, 7, 15). */
  layers?: number[];
  /** Tokens seen fewer times are left out of vocabulary specialization (default 1; the paper's Table 4 uses 10). */
  minCount?: number;
  /** Tokens listed per expert in the top-tokens table (default 8). */
  topTokens?: number;
  /** Names of the traces (checkpoints) in the figures; default: the model names in their headers. */
  names?: string[];
  /** Token text for tables. */
  decode?: (id: number) => string;
  onProgress?: (step: string) => void;
}

export interface AnalysisResult {
  files: string[];
  summary: Record<string, unknown>;
}

const KINDS: VocabularyTokenKind[] = ['input', 'predicted', 'target'];
/** Traces whose routing fits in this many bytes are read once into memory (the analyses make many passes). */
const CACHE_BYTES = 1.5e9;

export async function analyzeTraces(traces: readonly Trace[], outDir: string, opts: AnalyzeOptions = {}): Promise<AnalysisResult> {
  if (traces.length === 0) throw new InputError('give at least one trace');
  const final = cached(traces.at(-1)!);
  const model = final.header.model;
  const { layers: L, experts: E, topK: K } = model;
  const layers = opts.layers ?? [...new Set([0, Math.floor((L - 1) / 2), L - 1])];
  for (const layer of layers) if (!Number.isInteger(layer) || layer < 0 || layer >= L) throw new InputError(`layer ${layer} is out of range: the model has layers 0..${L - 1}`);
  const progress = opts.onProgress ?? (() => {});
  const figures = join(outDir, 'figures');
  mkdirSync(figures, { recursive: true });
  const files: string[] = [];
  const sections: string[] = [];
  const write = (name: string, content: string | Uint8Array) => {
    writeFileSync(join(outDir, name), content);
    files.push(name);
  };
  const figure = async (name: string, spec: Spec, caption: string) => {
    const svg = await renderSvg(spec);
    write(`figures/${name}.svg`, svg);
    write(`figures/${name}.png`, renderPng(svg));
    write(`figures/${name}.vl.json`, JSON.stringify(spec));
    sections.push(`<figure>${svg}<figcaption>${escapeHtml(caption)}</figcaption></figure>`);
  };
  const summary: Record<string, unknown> = { model, layers };

  progress('load balance');
  const load = loadBalance(final);
  summary.tokens = load.tokens;
  summary.load = load.layers.map((l, layer) => ({ layer, normalizedEntropy: l.normalizedEntropy, maxShare: l.maxShare, minShare: l.minShare }));
  write('load.csv', csv(['layer', 'expert', 'share'], load.layers.flatMap((l, layer) => l.shares.map((share, expert) => [layer, expert, share]))));
  sections.push(`<h2>Expert load</h2>`);
  await figure('load', loadSpec(load.layers.flatMap((l, layer) => l.shares.map((share, expert) => ({ layer, expert, share }))), E),
    `Share of routed slots (top-${K}) per layer and expert over ${load.tokens} tokens. Normalized entropy per layer: ${load.layers.map((l) => l.normalizedEntropy.toFixed(3)).join(', ')}.`);

  if (traces.length > 1) {
    progress('router saturation');
    const names = opts.names ?? traces.map((t, i) => `${i}: ${t.header.model.name}`);
    const rows: { checkpoint: string; order: number; layer: number; k: string; saturation: number }[] = [];
    for (const [order, trace] of traces.entries()) {
      const intermediate = order === traces.length - 1 ? undefined : cached(trace); // read once for both k
      for (const k of [1, K]) {
        const values = intermediate ? routerSaturation(intermediate, final, { k }) : Array(L).fill(1);
        values.forEach((saturation, layer) => rows.push({ checkpoint: names[order]!, order, layer, k: `k = ${k}`, saturation }));
      }
    }
    summary.saturation = rows;
    write('saturation.csv', csv(['checkpoint', 'layer', 'k', 'saturation'], rows.map((r) => [r.checkpoint, r.layer, r.k, r.saturation])));
    sections.push(`<h2>Router saturation</h2>`);
    await figure('saturation', saturationSpec(rows), `Router saturation of each trace against the last (${names.at(-1)}), per layer, for the top-1 expert and the top-${K}.`);
  }

  progress('domain specialization');
  sections.push(`<h2>Domain specialization</h2>`);
  const domainRows: (string | number)[][] = [];
  const domainSummary: Record<string, unknown>[] = [];
  for (const k of [1, K]) {
    const result = domainSpecialization(final, { k });
    for (const [d, domain] of result.domains.entries()) {
      for (let layer = 0; layer < L; layer++) {
        const values = result.perDomain[d]![layer]!;
        values.forEach((value, expert) => domainRows.push([k, domain, layer, expert, value]));
        const best = values.indexOf(Math.max(...values));
        domainSummary.push({ k, domain, layer, tokens: result.tokens[d], topExpert: best, topValue: values[best], uniform: result.uniform });
      }
    }
    for (const layer of layers) {
      const rows = result.domains.flatMap((domain, d) => result.perDomain[d]![layer]!.map((value, expert) => ({ domain, expert, value })));
      await figure(`domain-k${k}-layer${layer}`, domainSpec(rows, result.uniform, `Domain specialization, layer ${layer}, k = ${k}`),
        `Share of each domain's tokens routed to each expert (k = ${k}) in layer ${layer}; the dashed line is uniform routing, k/E = ${result.uniform.toFixed(3)}.`);
    }
  }
  summary.domain = domainSummary;
  write('domain-specialization.csv', csv(['k', 'domain', 'layer', 'expert', 'specialization'], domainRows));

  progress('vocabulary specialization');
  const vocabRows: { layer: number; kind: string; k: string; value: number }[] = [];
  const tableRows: (string | number)[][] = [];
  const tables: string[] = [];
  const minCount = opts.minCount ?? 1;
  for (let layer = 0; layer < L; layer++) {
    for (const of of KINDS) {
      for (const k of [1, K]) {
        const result = vocabularySpecialization(final, { of, layer, k, minCount });
        vocabRows.push({ layer, kind: of, k: `k = ${k}`, value: result.mean });
        if (of !== 'input' || k !== 1 || !layers.includes(layer)) continue;
        // the paper's Table 4: per expert, the input tokens most specialized to it (top-1 routing)
        const experts = result.perExpert.map((e, expert) => ({ expert, ...e })).filter((e) => e.tokens > 0).sort((a, b) => b.mean - a.mean).slice(0, 8);
        const show = opts.decode ?? ((id: number) => `#${id}`);
        const body = experts.map(({ expert, mean, tokens }) => {
          const top = result.topTokens(expert, opts.topTokens ?? 8);
          top.forEach((t) => tableRows.push([layer, expert, t.token, show(t.token), t.count, t.specialization]));
          const cells = top.map((t) => `<span class="tok" title="${t.routed}/${t.count}">${escapeHtml(JSON.stringify(show(t.token)))} ${(t.specialization * 100).toFixed(0)}%</span>`).join(' ');
          return `<tr><td>E${expert}</td><td>${tokens}</td><td>${(mean * 100).toFixed(1)}%</td><td>${cells}</td></tr>`;
        });
        tables.push(`<h3>Layer ${layer}: experts with the most specialized input tokens (top-1)</h3><table><thead><tr><th>expert</th><th>tokens assigned</th><th>mean specialization</th><th>top tokens (share of the token's occurrences routed here)</th></tr></thead><tbody>${body.join('')}</tbody></table>`);
      }
    }
  }
  summary.vocabulary = vocabRows;
  write('vocabulary-specialization.csv', csv(['layer', 'token', 'k', 'specialization'], vocabRows.map((r) => [r.layer, r.kind, r.k, r.value])));
  write('top-tokens.csv', csv(['layer', 'expert', 'token_id', 'token', 'count', 'specialization'], tableRows));
  sections.push(`<h2>Vocabulary specialization</h2>`);
  await figure('vocabulary', vocabularySpec(vocabRows), `Vocabulary specialization per layer for input, predicted and ground-truth next tokens (tokens seen at least ${minCount} times).`);
  sections.push(...tables);

  progress('co-activation');
  sections.push(`<h2>Expert co-activation</h2>`);
  const co: Record<string, unknown>[] = [];
  for (const layer of layers) {
    const result = coActivation(final, { layer });
    const top = topCoActivated(result, Math.min(E, 32));
    co.push({ layer, experts: top.experts, matrix: top.matrix });
    await figure(`co-activation-layer${layer}`, coActivationSpec(top.experts, top.matrix, layer), `Co-activation among the ${top.experts.length} most co-activated experts of layer ${layer} (top-${K}).`);
  }
  summary.coActivation = co;

  write('metrics.json', JSON.stringify(summary, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1));
  write('report.html', html(model.name, load.tokens, final.header.domains, traces.length, sections));
  return { files, summary };
}

/** The trace in memory when its routing is small enough, so the many passes do not re-read the files. */
function cached(trace: Trace): Trace {
  const header = trace.header as Trace['header'] & { parts?: { tokens: number }[] };
  const tokens = header.parts?.reduce((sum, p) => sum + p.tokens, 0);
  const { layers, topK, experts } = header.model;
  const bytes = (tokens ?? Infinity) * layers * (topK * 6 + (header.withProbs ? experts * 4 : 0));
  if (bytes > CACHE_BYTES) return trace;
  const chunks: TraceChunk[] = [...trace.chunks()];
  return memoryTrace(trace.header, chunks);
}

function csv(header: string[], rows: (string | number)[][]): string {
  const cell = (v: string | number) => (typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
  return [header.join(','), ...rows.map((r) => r.map(cell).join(','))].join('\n') + '\n';
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

function html(model: string, tokens: number, domains: string[], traces: number, sections: string[]): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Routing analysis: ${escapeHtml(model)}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 24px auto; padding: 0 16px; color: #1d1d1f; }
figure { margin: 16px 0 28px; } figcaption { color: #555; font-size: 13px; } svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 20px; } td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
.tok { display: inline-block; font-family: ui-monospace, monospace; background: #f1efe9; border-radius: 4px; padding: 0 4px; margin: 1px; }
</style></head><body>
<h1>Routing analysis</h1>
<p>Model <b>${escapeHtml(model)}</b> · ${tokens} tokens · domains: ${domains.map(escapeHtml).join(', ') || '(none)'}${traces > 1 ? ` · ${traces} traces (checkpoints)` : ''}.
Definitions follow the OLMoE paper (arXiv 2409.02060, section 5); numbers are in metrics.json and the CSV files beside this report.</p>
${sections.join('\n')}
</body></html>
`;
}

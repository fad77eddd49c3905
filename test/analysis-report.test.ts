/**
 * `olmoe analyze` and the trace → analyze pipeline: the report's numbers, figures and tables follow from the
 * traces (a domain routed only to expert 3 shows 100% there; identical checkpoints saturate at 100%), figures
 * render headlessly to SVG and PNG, and the CLI runs end to end with clear errors on bad traces.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { analyzeTraces } from '../src/analysis/report.js';
import { memoryTrace, TRACE_VERSION, type TraceChunk } from '../src/analysis/trace.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

const L = 2;
const E = 8;
const K = 2;

/** 200 tokens: domain "a" always routes to experts [3, 5]; domain "b" spreads over the others; input id = t % 20. */
function handTrace(name = 'm') {
  const n = 200;
  const chunk: TraceChunk = {
    size: n,
    document: Int32Array.from({ length: n }, (_, t) => Math.floor(t / 50)),
    position: Int32Array.from({ length: n }, (_, t) => t % 50),
    domain: Int32Array.from({ length: n }, (_, t) => (t < 100 ? 0 : 1)),
    input: Int32Array.from({ length: n }, (_, t) => t % 20),
    target: Int32Array.from({ length: n }, (_, t) => (t % 50 === 49 ? -1 : (t + 1) % 20)),
    predicted: Int32Array.from({ length: n }, (_, t) => (t * 3) % 20),
    experts: new Uint16Array(n * L * K),
    weights: new Float32Array(n * L * K).fill(0.5),
  };
  for (let t = 0; t < n; t++) {
    for (let l = 0; l < L; l++) {
      const pair = t < 100 ? [3, 5] : [[0, 1], [2, 4], [6, 7]][t % 3]!;
      chunk.experts.set(pair, (t * L + l) * K);
    }
  }
  return memoryTrace({ version: TRACE_VERSION, model: { name, layers: L, experts: E, topK: K, vocabSize: 20, fingerprint: name }, domains: ['a', 'b'], withProbs: false }, [chunk]);
}

describe('olmoe analyze', () => {
  it('reports what the traces hold: figures (SVG, PNG), report.html, metrics.json, CSV', async () => {
    const out = tempDir();
    const { files, summary } = await analyzeTraces([handTrace('step-1'), handTrace('final')], out, { decode: (id) => `t${id}` });
    for (const name of ['report.html', 'metrics.json', 'load.csv', 'saturation.csv', 'domain-specialization.csv', 'vocabulary-specialization.csv', 'top-tokens.csv',
      'figures/load.svg', 'figures/saturation.png', 'figures/domain-k1-layer0.svg', 'figures/vocabulary.svg', 'figures/co-activation-layer1.png']) {
      assert.ok(files.includes(name), name);
    }
    assert.match(readFileSync(join(out, 'figures/load.svg'), 'utf8'), /^<svg/);
    assert.deepEqual([...readFileSync(join(out, 'figures/saturation.png')).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    // domain "a" goes only to experts 3 and 5: 100% at k=1 for expert 3 (the top-1), 100% at k=2 for both
    const domain = summary.domain as { k: number; domain: string; layer: number; topExpert: number; topValue: number; uniform: number }[];
    const a = domain.filter((d) => d.domain === 'a');
    assert.deepEqual(a.map((d) => [d.k, d.layer, d.topExpert, d.topValue]), [[1, 0, 3, 1], [1, 1, 3, 1], [2, 0, 3, 1], [2, 1, 3, 1]]);
    assert.equal(domain.find((d) => d.k === 2)!.uniform, K / E);
    // identical checkpoints: saturation 100% in every layer
    const saturation = summary.saturation as { saturation: number }[];
    assert.ok(saturation.length === 2 * 2 * L && saturation.every((r) => r.saturation === 1));
    // co-activation: 3 and 5 always fire together
    const co = summary.coActivation as { layer: number; experts: number[]; matrix: number[][] }[];
    const i3 = co[0]!.experts.indexOf(3);
    assert.equal(co[0]!.matrix[i3]![co[0]!.experts.indexOf(5)], 1);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.equal((html.match(/<svg/g) ?? []).length, files.filter((f) => f.endsWith('.svg')).length);
    assert.match(html, /&quot;t\d+&quot; \d+%/); // token text from `decode` in the top-tokens tables
    assert.match(readFileSync(join(out, 'domain-specialization.csv'), 'utf8'), /^k,domain,layer,expert,specialization\n1,a,0,0,0\n/);
  });

  it('the CLI records a trace and analyses it; a folder that is not a trace is a clear error', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'prose.txt'), 'the cat sat on the mat\n\nthe dog sat on the log\n\na bird in the hand\n');
    writeFileSync(join(dir, 'code.jsonl'), '{"text": "function f(x) { return x + 1; }"}\n{"text": "let y = f(2);"}\n');
    const run = (args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
    const trace = run(['trace', tinyModelDir, '--data', join(dir, 'prose.txt'), join(dir, 'code.jsonl'), '--out', join(dir, 'trace'), '-q', '--backend', 'reference']);
    assert.equal(trace.status, 0, trace.stderr);
    assert.match(trace.stderr, /recorded 5 documents, \d+ tokens .* domains: prose, code/);
    const again = run(['trace', tinyModelDir, '--data', join(dir, 'prose.txt'), '--out', join(dir, 'trace'), '-q']);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already holds a trace: pass --resume/);
    const analyze = run(['analyze', join(dir, 'trace'), '--out', join(dir, 'report'), '-q']);
    assert.equal(analyze.status, 0, analyze.stderr);
    assert.match(readFileSync(join(dir, 'report', 'report.html'), 'utf8'), /domains: prose, code/);
    const bad = run(['analyze', dir, '--out', join(dir, 'r2')]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /not a trace \(no trace\.json\)/);
  });
});

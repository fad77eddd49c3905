#!/usr/bin/env node
// Serving benchmark: starts `olmoe serve MODEL` (the real CLI, its own process), then for 1, 4 and 8 concurrent
// streaming chat clients measures time to first token (TTFT: request sent → first content chunk), each client's
// decode speed, and the server's total generated tokens per second. Prompts differ per client; greedy decoding, or
// sampling at --temperature T (seed 1; the other knobs at their defaults, top-k 50 among them). Before and after each
// round, with the server idle, the machine's read bandwidth is sampled here (the native backend's meter): it moves by
// tens of % within minutes on shared machines, and one stream's decode follows it more closely than 8 streams' do.
// The server warms up before its first request (olmoe serve; --no-warmup here passes --no-warmup to it).
//   node bench/serve.mjs MODEL [--clients 1,4,8] [--tokens 64] [--parallel 8] [--threads N] [--temperature T] [--no-warmup] [--json]
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const levels = flag('--clients', '1,4,8').split(',').map(Number);
const tokens = Number(flag('--tokens', '64'));
const parallel = flag('--parallel', String(Math.max(...levels)));
const threads = flag('--threads', undefined);
const temperature = Number(flag('--temperature', '0'));
const json = args.includes('--json') ? (args.splice(args.indexOf('--json'), 1), true) : false;
const noWarmup = args.includes('--no-warmup') ? (args.splice(args.indexOf('--no-warmup'), 1), true) : false;
const model = args[0];
if (!model) {
  console.error('usage: node bench/serve.mjs MODEL [--clients 1,4,8] [--tokens 64] [--parallel 8] [--threads N] [--temperature T] [--no-warmup] [--json]');
  process.exit(1);
}

const cli = join(here, '..', 'dist', 'src', 'cli', 'main.js');
const { createBackend } = await import(join(here, '..', 'dist', 'src', 'index.js'));
let meter;
try {
  meter = createBackend('native', { threads: threads ? Number(threads) : undefined });
} catch {
  console.error('(no native backend here: rounds are not paired with bandwidth samples)');
}
const bandwidth = (keep) => (meter ? meter.sampleReadBandwidth(keep) / 1e9 : NaN);
const serverArgs = ['serve', model, '--port', '0', '--model-id', 'bench', '--parallel', parallel, '--queue', '64', '-q', ...(threads ? ['--threads', threads] : []), ...(noWarmup ? ['--no-warmup'] : [])];
const server = spawn(process.execPath, [cli, ...serverArgs], { stdio: ['ignore', 'inherit', 'pipe'] });
const url = await new Promise((resolve, reject) => {
  let text = '';
  server.stderr.on('data', (chunk) => {
    text += chunk;
    const ready = /ready at (http:\/\/\S+)/.exec(text);
    if (ready) resolve(ready[1]);
  });
  server.on('exit', (code) => reject(new Error(`olmoe serve exited (${code}):\n${text}`)));
});

const topics = ['the sea', 'mountains', 'a library', 'trains', 'bread', 'rain', 'chess', 'a garden', 'bridges', 'owls', 'salt', 'music'];

async function client(i) {
  const sent = performance.now();
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      model: 'bench', messages: [{ role: 'user', content: `Write a long story about ${topics[i % topics.length]}.` }],
      max_tokens: tokens, temperature, ...(temperature > 0 ? { seed: 1 } : {}), ignore_eos: true, stream: true, stream_options: { include_usage: true },
      routing: true, // every token then comes as a chunk, even one whose text is held back (random models emit many)
    }),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  let first;
  let usage;
  let buffer = '';
  for await (const chunk of response.body.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const data = buffer.slice(6, end);
      buffer = buffer.slice(end + 2);
      if (data === '[DONE]') continue;
      const event = JSON.parse(data);
      if (event.choices?.[0]?.routing) first ??= performance.now();
      if (event.usage) usage = event.usage;
    }
  }
  const finished = performance.now();
  return { ttft: (first - sent) / 1000, seconds: (finished - sent) / 1000, decode: (usage.completion_tokens - 1) / ((finished - first) / 1000), generated: usage.completion_tokens };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const rows = [];
try {
  await client(0); // warm-up
  for (const [round, n] of levels.entries()) {
    const before = bandwidth(true);
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: n }, (_, i) => client(i)));
    const wall = (performance.now() - started) / 1000;
    const total = results.reduce((sum, r) => sum + r.generated, 0);
    const after = bandwidth(round < levels.length - 1); // the last sample unmaps the meter's buffer
    rows.push({
      clients: n,
      ttft_median_s: median(results.map((r) => r.ttft)),
      ttft_max_s: Math.max(...results.map((r) => r.ttft)),
      client_decode_tok_s: median(results.map((r) => r.decode)),
      total_tok_s: total / wall,
      wall_s: wall,
      read_gb_s: [before, after],
    });
    if (!json) console.error(`${n} client(s) done in ${wall.toFixed(1)} s`);
  }
} finally {
  server.kill('SIGINT');
}

if (json) console.log(JSON.stringify({ model, tokens, parallel: Number(parallel), temperature, rows }));
else {
  const f = (x, d = 2) => x.toFixed(d);
  console.log(`\nolmoe serve ${model}: ${tokens} tokens per client, ${temperature > 0 ? `temperature ${temperature}` : 'greedy'}, --parallel ${parallel}\n`);
  console.log('| clients | TTFT median (s) | TTFT max (s) | per-client decode tok/s | total tok/s | read GB/s before, after |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.clients} | ${f(r.ttft_median_s)} | ${f(r.ttft_max_s)} | ${f(r.client_decode_tok_s)} | ${f(r.total_tok_s)} | ${r.read_gb_s.map((x) => f(x, 1)).join(', ')} |`);
  // Each round of more clients against the one-client round just before it, with the bandwidth range of the two:
  // a pair whose samples differ widely ran across a change of phase.
  const pairs = rows.flatMap((r, i) => (i > 0 && r.clients > 1 && rows[i - 1].clients === 1 ? [[rows[i - 1], r]] : []));
  if (pairs.length > 0) console.log();
  for (const [one, many] of pairs) {
    const samples = [...one.read_gb_s, ...many.read_gb_s];
    const range = samples.some(Number.isNaN) ? '' : ` (read ${f(Math.min(...samples), 1)}–${f(Math.max(...samples), 1)} GB/s)`;
    console.log(`${many.clients} clients ÷ 1, total tok/s: ${f(many.total_tok_s / one.total_tok_s)}×${range}`);
  }
}

// Fault injection: the real CLI is SIGKILLed in the middle of every kind of atomic write (training checkpoints and
// export, GGUF convert and quantize, hub download), then the same command is run again. It must complete, leave no
// staging behind, and produce exactly the bytes of an uninterrupted run. Kill points are the CLI's own write steps
// (OLMOE_TEST_KILL_AT=n makes it SIGKILL itself at its n-th chunk, rename or removal), drawn at random from a
// seed printed as a diagnostic (set OLMOE_FAULT_SEED to replay one), plus the points named in each test.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { cliPath, repoRoot, tempDir } from './helpers.js';

const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
const scratch = () => {
  const dir = tempDir('olmoe-fault-');
  dirs.push(dir);
  return dir;
};

const seed = Number(process.env.OLMOE_FAULT_SEED ?? Date.now() % 2 ** 31);
let rngState = seed;
/** Uniform integer in [lo, hi] (mulberry32, so a seed replays the same kill points). */
function randomInt(lo: number, hi: number): number {
  rngState = (rngState + 0x6d2b79f5) | 0;
  let t = Math.imul(rngState ^ (rngState >>> 15), 1 | rngState);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return lo + Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * (hi - lo + 1));
}

interface Result {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
}

/** Run the CLI; `killAt` = n SIGKILLs it at its n-th write step, 'count' reports the number of steps. */
function olmoe(args: string[], opts: { env?: NodeJS.ProcessEnv; killAt?: number | 'count'; started?: (child: ChildProcess) => void } = {}): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env, OLMOE_BACKEND: 'reference' };
  if (opts.killAt !== undefined) env.OLMOE_TEST_KILL_AT = String(opts.killAt);
  else delete env.OLMOE_TEST_KILL_AT;
  const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  opts.started?.(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((ok) => child.on('close', (code, signal) => ok({ pid: child.pid!, code, signal, stdout, stderr })));
}

async function succeed(args: string[], opts: Parameters<typeof olmoe>[1] = {}): Promise<Result> {
  const result = await olmoe(args, opts);
  assert.equal(result.code, 0, `olmoe ${args.join(' ')}: ${result.signal ?? ''} ${result.stderr}`);
  return result;
}

/** An uninterrupted run, and how many write steps it took. */
async function reference(args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const { stderr } = await succeed(args, { env, killAt: 'count' });
  const steps = Number(/olmoe-test: (\d+) write steps/.exec(stderr)?.[1]);
  assert.ok(steps > 0, stderr);
  return steps;
}

async function killedAt(step: number, args: string[], env?: NodeJS.ProcessEnv): Promise<Result> {
  const result = await olmoe(args, { env, killAt: step });
  assert.equal(result.signal, 'SIGKILL', `olmoe ${args.join(' ')} was not killed at write step ${step} (seed ${seed}): ${result.stderr}`);
  return result;
}

/** Every file under `dir` (symlinks followed), by relative path. */
function files(dir: string, keep: (path: string) => boolean = () => true): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (at: string) => {
    for (const name of readdirSync(at).sort()) {
      const path = join(at, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (keep(relative(dir, path))) out.set(relative(dir, path), readFileSync(path));
    }
  };
  walk(dir);
  return out;
}

function assertSameFiles(actual: Map<string, Buffer>, expected: Map<string, Buffer>, what: string): void {
  assert.deepEqual([...actual.keys()], [...expected.keys()], `${what}: file list (seed ${seed})`);
  for (const [path, bytes] of expected) assert.ok(actual.get(path)!.equals(bytes), `${what}: ${path} differs from the uninterrupted run (seed ${seed})`);
}

/** Staging and partial files anywhere under `dir`. */
function leftovers(dir: string): string[] {
  const found: string[] = [];
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      const path = join(at, name);
      if (/\.tmp-\d+$|\.incomplete$|\.lock$|\.tmp$/.test(name)) found.push(relative(dir, path));
      if (lstatSync(path).isDirectory()) walk(path);
    }
  };
  walk(dir);
  return found;
}

describe('fault injection: SIGKILL during a write, then the same command again', () => {
  it('olmoe convert and quantize: no file at the output path after a kill; the rerun removes the dead staging and writes the same bytes', async (t: TestContext) => {
    const model = join(repoRoot, 'models', 'olmoe-mini');
    for (const [verb, type] of [['convert', 'f16'], ['quantize', 'q8_0']] as const) {
      const dir = scratch();
      const args = (out: string) => [verb, model, join(dir, out), '--type', type, '-q'];
      const steps = await reference(args('reference.gguf'));
      const expected = readFileSync(join(dir, 'reference.gguf'));
      // Kills in a row (a random step, then the last one: just before the rename), then a run that completes.
      const kills = verb === 'convert' ? [randomInt(1, steps - 1), steps] : [randomInt(1, steps)];
      t.diagnostic(`seed ${seed}: ${verb} ${steps} write steps; kill points ${kills.join(', ')}`);
      for (const step of kills) {
        const result = await killedAt(step, args('out.gguf'));
        assert.equal(existsSync(join(dir, 'out.gguf')), false, `${verb}: a partial file at the output path after a kill at step ${step}`);
        // Only the staging of the run just killed: each run removed what the one before it left.
        assert.deepEqual(leftovers(dir), [`out.gguf.tmp-${result.pid}`], `${verb}: staging after a kill at step ${step}`);
      }
      if (verb === 'convert') {
        // And once killed from outside at a random moment, wherever that falls (or after it finished).
        const delay = randomInt(100, 1500);
        t.diagnostic(`seed ${seed}: convert SIGKILL from outside after ${delay} ms`);
        await olmoe(args('out.gguf'), { started: (child) => setTimeout(() => child.kill('SIGKILL'), delay) });
      }
      await succeed(args('out.gguf'));
      assert.ok(readFileSync(join(dir, 'out.gguf')).equals(expected), `${verb} --type ${type}: output differs from the uninterrupted run (seed ${seed})`);
      assert.deepEqual(leftovers(dir), [], `${verb}: staging left behind`);
    }
  });

  it('olmoe train: killed in a checkpoint, between checkpoint and latest.json, or in the final export; the resume ends with the same checkpoints and export', async (t: TestContext) => {
    const dir = trainFixture();
    const configFor = (name: string) => {
      const path = join(dir, `${name}.json`);
      writeFileSync(path, JSON.stringify({ ...TRAIN_CONFIG, out: name }));
      return path;
    };
    const steps = await reference(['train', configFor('reference'), '-q']);
    const expected = runFiles(join(dir, 'reference'));
    // The last write steps are: export model.safetensors rename (N-4), export folder removal and rename (N-3, N-2),
    // latest.json write and rename recording the export (N-1, N). Kills there once left a run that --resume called done.
    const points: number[][] = [[steps - 4], [steps - 2], [steps], [randomInt(1, steps), randomInt(1, steps)]];
    t.diagnostic(`seed ${seed}: ${steps} write steps; kill points ${JSON.stringify(points)}`);
    for (const [trial, kills] of points.entries()) {
      const config = configFor(`run-${trial}`);
      const out = join(dir, `run-${trial}`);
      const again = () => ['train', config, '-q', ...(existsSync(join(out, 'latest.json')) ? ['--resume'] : [])];
      for (const step of kills) {
        const result = await olmoe(again(), { killAt: step });
        if (result.signal !== 'SIGKILL') assert.equal(result.code, 0, result.stderr); // a resumed run writes less: it may finish first
      }
      if (trial < 2) assert.equal(existsSync(join(out, 'export')), false, 'killed before export/ was in place');
      await succeed(again());
      assertSameFiles(runFiles(out), expected, `run-${trial} killed at ${kills.join(', ')}`);
      assert.deepEqual(leftovers(out), [], `run-${trial}: staging left behind`);
    }
  });

  it('olmoe download: killed mid-file (the hub paused there) or at a random write step; the rerun resumes and caches the same bytes', async (t: TestContext) => {
    const hub = await new PausingHub().start();
    try {
      const env = (cache: string) => ({ HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_HOME: cache, HF_TOKEN: '', HF_HUB_OFFLINE: '' });
      const referenceCache = scratch();
      const steps = await reference(['download', 'org/model', '-q'], env(referenceCache));
      const expected = files(referenceCache);

      // Kill while the CDN holds the weights half sent: deterministic, and the rerun must ask for the rest only.
      const cache = scratch();
      hub.pauseAfter = 100_000;
      const paused = hub.paused();
      const run = olmoe(['download', 'org/model', '-q'], { env: env(cache), started: (child) => void paused.then(() => waitForPartial(cache, 100_000).then(() => child.kill('SIGKILL'))) });
      assert.equal((await run).signal, 'SIGKILL');
      hub.pauseAfter = undefined;
      hub.release();
      await succeed(['download', 'org/model', '-q'], { env: env(cache) });
      assert.equal(hub.ranges.at(-1), 'bytes=100000-');
      assertSameFiles(files(cache), expected, 'download killed mid-file');
      assert.deepEqual(leftovers(cache), []);

      const kills = [randomInt(1, steps), randomInt(1, steps)];
      t.diagnostic(`seed ${seed}: ${steps} write steps; kill points ${kills.join(', ')}`);
      const other = scratch();
      for (const step of kills) {
        // How many chunks a body arrives in varies, and a resumed download writes less: a run may finish first.
        const result = await olmoe(['download', 'org/model', '-q'], { env: env(other), killAt: step });
        if (result.signal !== 'SIGKILL') assert.equal(result.code, 0, result.stderr);
      }
      await succeed(['download', 'org/model', '-q'], { env: env(other) });
      assertSameFiles(files(other), expected, `download killed at write steps ${kills.join(', ')}`);
      assert.deepEqual(leftovers(other), []);
    } finally {
      await hub.close();
    }
  });
});

const TRAIN_CONFIG = {
  tokenizer: 'tokenizer.json', seed: 5, steps: 4, checkpoint_every: 2, eval_every: 2, eval_batches: 1, export_dtype: 'bf16',
  model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8 },
  data: { train: ['train.shard'], valid: ['train.shard'], sequence_length: 16, batch_size: 2 },
  optimizer: { warmup_steps: 1 },
};

function trainFixture(): string {
  const dir = scratch();
  const { json, eosId, size } = byteLevelTokenizerJson();
  const tokenizerText = JSON.stringify(json);
  writeFileSync(join(dir, 'tokenizer.json'), tokenizerText);
  const builder = new TokenShardBuilder({ vocabSize: size, eosId, domains: ['prose', 'code'], tokenizer: tokenizerFingerprint(tokenizerText) });
  builder.add([...Buffer.from('Each expert learns a part of the language. '.repeat(20))], 0);
  builder.add([...Buffer.from('def route(x):\n    return top_k(x)\n'.repeat(20))], 1);
  builder.write(join(dir, 'train.shard'));
  return dir;
}

/** A run folder's files, except the wall-clock figures in metrics.jsonl (tokens/s), which no two runs share. */
function runFiles(out: string): Map<string, Buffer> {
  const all = files(out, (path) => path !== 'train-config.json'); // it holds the run's own folder name
  const metrics = all.get('metrics.jsonl')!.toString('utf8').trim().split('\n').map((line) => JSON.stringify({ ...JSON.parse(line), tokensPerSecond: 0 }));
  all.set('metrics.jsonl', Buffer.from(metrics.join('\n')));
  return all;
}

async function waitForPartial(cache: string, bytes: number): Promise<void> {
  const blobs = join(cache, 'models--org--model', 'blobs');
  for (;;) {
    const partial = existsSync(blobs) ? readdirSync(blobs).find((name) => name.endsWith('.incomplete')) : undefined;
    if (partial && statSync(join(blobs, partial)).size >= bytes) return;
    await new Promise((ok) => setTimeout(ok, 10));
  }
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A hub with one repo (two small files and LFS weights behind a redirect), whose CDN can hold a file half sent. */
class PausingHub {
  readonly files = new Map<string, Buffer>([
    ['config.json', Buffer.from(JSON.stringify({ model_type: 'olmoe' }))],
    ['tokenizer.json', Buffer.from(JSON.stringify({ model: { type: 'BPE' } }))],
    ['model.safetensors', randomBytes(300_000)],
  ]);
  readonly ranges: (string | undefined)[] = [];
  pauseAfter: number | undefined;
  private releaseHeld: (() => void)[] = [];
  private onPause: (() => void) | undefined;
  // Two servers, as the hub sends LFS files to a CDN on another origin (where its metadata stops).
  private readonly servers = [0, 1].map(() => http.createServer((req, res) => this.serve(req, res)));

  get endpoint(): string {
    return `http://127.0.0.1:${(this.servers[0]!.address() as AddressInfo).port}`;
  }

  private get cdn(): string {
    return `http://127.0.0.1:${(this.servers[1]!.address() as AddressInfo).port}`;
  }

  async start(): Promise<this> {
    await Promise.all(this.servers.map((server) => new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))));
    return this;
  }

  async close(): Promise<void> {
    this.release();
    for (const server of this.servers) server.closeAllConnections();
    await Promise.all(this.servers.map((server) => new Promise((ok) => server.close(ok))));
  }

  /** Resolves when the CDN has sent `pauseAfter` bytes of a file and holds the rest. */
  paused(): Promise<void> {
    return new Promise((ok) => (this.onPause = ok));
  }

  release(): void {
    this.releaseHeld.splice(0).forEach((go) => go());
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const commit = 'c'.repeat(40);
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(req.url ?? '');
    if (cdn) return this.sendBlob(req, res, [...this.files.values()].find((b) => sha256(b) === cdn[1])!);
    const name = /^\/org\/model\/resolve\/[^/]+\/(.+)$/.exec(req.url ?? '')?.[1];
    const content = name === undefined ? undefined : this.files.get(name);
    if (!content) return void res.writeHead(404, { 'X-Repo-Commit': commit }).end();
    const etag = `"${createHash('sha1').update(content).digest('hex')}"`;
    if (!name!.endsWith('.safetensors')) return void res.writeHead(200, { 'X-Repo-Commit': commit, ETag: etag, 'Content-Length': content.length }).end(req.method === 'HEAD' ? undefined : content);
    res.writeHead(302, { 'X-Repo-Commit': commit, ETag: etag, 'X-Linked-Etag': `"${sha256(content)}"`, 'X-Linked-Size': content.length, Location: `${this.cdn}/cdn/${sha256(content)}` }).end();
  }

  private sendBlob(req: http.IncomingMessage, res: http.ServerResponse, content: Buffer): void {
    this.ranges.push(req.headers.range);
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const headers: http.OutgoingHttpHeaders = { 'Content-Length': content.length - start };
    if (start > 0) headers['Content-Range'] = `bytes ${start}-${content.length - 1}/${content.length}`;
    res.writeHead(start > 0 ? 206 : 200, headers);
    const hold = this.pauseAfter;
    if (hold === undefined || start >= hold) return void res.end(content.subarray(start));
    res.on('error', () => {}); // the client may be killed while the rest is held
    res.write(content.subarray(start, hold), () => this.onPause?.());
    this.releaseHeld.push(() => void (res.destroyed || res.end(content.subarray(hold))));
  }
}

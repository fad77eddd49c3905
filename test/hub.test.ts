import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { AbortError, HubError, InputError } from '../src/core/errors.js';
import { hubCacheDir, hubDownloadFile, hubSnapshotModel, isHubRepoId, type DownloadProgress } from '../src/io/hub.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { loadPretrained, resolveModelPath } from '../src/model/pretrained.js';
import { cliPath, tinyExpectedPath, tinyModelDir } from './helpers.js';

// Keep the developer's own token, cache and endpoint out of these tests.
for (const name of ['HF_TOKEN', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME']) delete process.env[name];

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const gitBlobSha = (data: Buffer) => createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
const commitHash = (label: string) => createHash('sha1').update(label).digest('hex');
const tempDirs: string[] = [];
after(() => tempDirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

const tempCache = () => tempDir('olmoe-hub-cache-');
process.env.HF_HOME = tempDir('olmoe-hf-home-'); // no token file unless a test writes one
const isLfs = (file: string) => file.endsWith('.safetensors');

interface FakeRepo {
  commits: Record<string, Record<string, Buffer>>;
  refs: Record<string, string>;
  token?: string;
}

interface LoggedRequest {
  server: 'hub' | 'cdn';
  method: string;
  url: string;
  range: string | undefined;
  authorization: string | undefined;
}

const MAIN = commitHash('main');
const V1 = commitHash('v1');
const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';

function makeRepos(): Record<string, FakeRepo> {
  const mainFiles = {
    'config.json': json({ model_type: 'olmoe', hidden_size: 64 }),
    'tokenizer.json': json({ model: { type: 'BPE' } }),
    'tokenizer_config.json': json({ eos_token: '<|endoftext|>' }),
    'special_tokens_map.json': json({ eos_token: '<|endoftext|>' }),
    'model.safetensors.index.json': json({ weight_map: { a: SHARD1, b: SHARD2, c: SHARD1 } }),
    [SHARD1]: randomBytes(96 * 1024),
    [SHARD2]: randomBytes(64 * 1024),
    'nested/dir/extra.json': json({ nested: true }),
  };
  const v1Files = { 'config.json': json({ model_type: 'olmoe', hidden_size: 32 }), 'model.safetensors': randomBytes(8 * 1024) };
  const gated = { 'config.json': json({ gated: true }), 'model.safetensors': randomBytes(4 * 1024) };
  const tinyOlmoe = Object.fromEntries(fs.readdirSync(tinyModelDir).map((name) => [name, fs.readFileSync(path.join(tinyModelDir, name))]));
  return {
    'org/model': { commits: { [MAIN]: mainFiles, [V1]: v1Files }, refs: { main: MAIN, v1: V1 } },
    'allenai/tiny-olmoe': { commits: { [MAIN]: tinyOlmoe }, refs: { main: MAIN } },
    'org/gated': { commits: { [MAIN]: gated }, refs: { main: MAIN }, token: 'hf_secret' },
  };
}

/** Serves bytes from `start` on, honouring a drop rule that cuts the socket after some bytes, or a stall rule that stops sending. */
function sendBody(res: http.ServerResponse, content: Buffer, range: string | undefined, dropAfter: number | undefined, stallAfter?: number): void {
  const start = Number(/^bytes=(\d+)-$/.exec(range ?? '')?.[1] ?? 0);
  const headers: http.OutgoingHttpHeaders = { 'Content-Length': content.length - start, 'Accept-Ranges': 'bytes' };
  if (start > 0) headers['Content-Range'] = `bytes ${start}-${content.length - 1}/${content.length}`;
  res.writeHead(start > 0 ? 206 : 200, headers);
  if (stallAfter !== undefined) return void res.write(content.subarray(start, start + stallAfter)); // and then nothing, socket open
  if (dropAfter === undefined) return void res.end(content.subarray(start));
  // The pause lets the client read the bytes first: a fetch body stream that errors drops chunks still queued.
  res.write(content.subarray(start, start + dropAfter), () => setTimeout(() => res.socket?.destroy(), 20));
}

class FakeHub {
  readonly log: LoggedRequest[] = [];
  readonly repos = makeRepos();
  /** sha256 → how many more GETs of that blob get cut, and after how many bytes. */
  readonly drops = new Map<string, { times: number; afterBytes: number }>();
  /** sha256 → the CDN sends this many bytes of that blob, then nothing (the connection stays open). */
  readonly stalls = new Map<string, number>();
  /** sha256s the CDN serves with one byte flipped. */
  readonly corrupt = new Set<string>();
  /** The CDN accepts connections but never answers. */
  cdnSilent = false;
  private readonly hub = http.createServer((req, res) => this.serveHub(req, res));
  private readonly cdn = http.createServer((req, res) => this.serveCdn(req, res));

  get endpoint(): string {
    return `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
  }

  async start(): Promise<this> {
    await Promise.all([this.hub, this.cdn].map((s) => new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok))));
    return this;
  }

  async close(): Promise<void> {
    for (const server of [this.hub, this.cdn]) server.closeAllConnections();
    await Promise.all([this.hub, this.cdn].map((s) => new Promise((ok) => s.close(ok))));
  }

  requests(server: 'hub' | 'cdn', method = 'GET'): LoggedRequest[] {
    return this.log.filter((r) => r.server === server && r.method === method);
  }

  private record(server: 'hub' | 'cdn', req: http.IncomingMessage): void {
    const { method = '', url = '', headers } = req;
    this.log.push({ server, method, url, range: headers.range, authorization: headers.authorization });
  }

  private serveHub(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.record('hub', req);
    const match = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(req.url ?? '');
    const repo = match ? this.repos[match[1]!] : undefined;
    if (!match || !repo) return void res.writeHead(404, { 'X-Error-Code': 'RepoNotFound' }).end();
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      return void res.writeHead(401, { 'X-Error-Code': 'GatedRepo' }).end();
    }
    const revision = decodeURIComponent(match[2]!);
    const commit = repo.refs[revision] ?? (repo.commits[revision] ? revision : undefined);
    if (!commit) return void res.writeHead(404, { 'X-Error-Code': 'RevisionNotFound' }).end();
    const file = match[3]!.split('/').map(decodeURIComponent).join('/');
    const content = repo.commits[commit]![file];
    if (!content) return void res.writeHead(404, { 'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': commit }).end();
    const headers = { 'X-Repo-Commit': commit, ETag: `"${gitBlobSha(content)}"` };
    if (!isLfs(file)) {
      if (req.method === 'HEAD') return void res.writeHead(200, { ...headers, 'Content-Length': content.length }).end();
      res.setHeader('X-Repo-Commit', commit).setHeader('ETag', headers.ETag);
      return sendBody(res, content, req.headers.range, undefined);
    }
    const cdnPort = (this.cdn.address() as AddressInfo).port;
    res.writeHead(302, {
      ...headers,
      'X-Linked-Etag': `"${sha256(content)}"`,
      'X-Linked-Size': content.length,
      Location: `http://127.0.0.1:${cdnPort}/cdn/${sha256(content)}`,
    });
    res.end();
  }

  private serveCdn(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.record('cdn', req);
    if (this.cdnSilent) return;
    const sha = (req.url ?? '').replace('/cdn/', '');
    let content = this.findBlob(sha);
    if (!content) return void res.writeHead(404).end();
    if (this.corrupt.has(sha)) {
      content = Buffer.from(content);
      content[content.length >> 1] ^= 0x01;
    }
    if (this.stalls.has(sha)) return sendBody(res, content, req.headers.range, undefined, this.stalls.get(sha));
    const drop = this.drops.get(sha);
    const cut = drop !== undefined && drop.times > 0;
    if (cut) drop.times--;
    sendBody(res, content, req.headers.range, cut ? drop.afterBytes : undefined);
  }

  private findBlob(sha: string): Buffer | undefined {
    for (const repo of Object.values(this.repos)) {
      for (const files of Object.values(repo.commits)) {
        for (const content of Object.values(files)) if (sha256(content) === sha) return content;
      }
    }
    return undefined;
  }
}

async function withHub(fn: (hub: FakeHub) => Promise<void>): Promise<void> {
  const hub = await new FakeHub().start();
  try {
    await fn(hub);
  } finally {
    await hub.close();
  }
}

const repoDir = (cacheDir: string, repoId = 'org/model') => path.join(cacheDir, `models--${repoId.replace('/', '--')}`);
const mainFile = (hub: FakeHub, name: string) => hub.repos['org/model']!.commits[MAIN]![name]!;
const blobName = (name: string, content: Buffer) => (isLfs(name) ? sha256(content) : gitBlobSha(content));

test('isHubRepoId accepts org/name and refuses paths', () => {
  for (const ok of ['allenai/OLMoE-1B-7B-0924', 'a_b/c.d-e']) assert.equal(isHubRepoId(ok), true, ok);
  for (const bad of ['./models/x', '/abs/path', 'a/../b', 'noslash', 'a/b/c', '.hidden/x', 'a/', 'a b/c', '~/x', 'a/b-', '-a/b', 'a--b/c', 'a/b.git', `a/${'n'.repeat(97)}`]) {
    assert.equal(isHubRepoId(bad), false, bad);
  }
});

test('hubCacheDir follows the HF environment variables in order', () => {
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' }), '/c');
  assert.equal(hubCacheDir({ HF_HOME: '/h', XDG_CACHE_HOME: '/x' }), path.join('/h', 'hub'));
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/x' }), path.join('/x', 'huggingface', 'hub'));
  assert.equal(hubCacheDir({}), path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
});

test('snapshot of a sharded model writes the huggingface_hub cache layout', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const snapshot = await hubSnapshotModel('org/model', { cacheDir, endpoint: `${hub.endpoint}/` });
    const root = repoDir(cacheDir);
    assert.equal(snapshot, path.join(root, 'snapshots', MAIN));
    assert.equal(fs.readFileSync(path.join(root, 'refs', 'main'), 'utf8'), MAIN);
    const expected = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
    for (const name of [...expected, 'model.safetensors.index.json', SHARD1, SHARD2]) {
      const file = path.join(snapshot, name);
      const content = mainFile(hub, name);
      assert.ok(fs.lstatSync(file).isSymbolicLink(), name);
      assert.equal(fs.readlinkSync(file), `../../blobs/${blobName(name, content)}`);
      assert.deepEqual(fs.readFileSync(file), content, name);
    }
    assert.equal(fs.existsSync(path.join(snapshot, 'generation_config.json')), false);
    assert.ok(fs.existsSync(path.join(root, '.no_exist', MAIN, 'generation_config.json')));
    assert.deepEqual(fs.readdirSync(path.join(root, 'blobs')).filter((f) => f.endsWith('.incomplete')), []);
    assert.equal(hub.requests('cdn').filter((r) => r.url.endsWith(sha256(mainFile(hub, SHARD1)))).length, 1);
  }));

test('a file in a subfolder links back with extra ../ segments', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const file = await hubDownloadFile('org/model', 'nested/dir/extra.json', { cacheDir, endpoint: hub.endpoint });
    const content = mainFile(hub, 'nested/dir/extra.json');
    assert.equal(file, path.join(repoDir(cacheDir), 'snapshots', MAIN, 'nested', 'dir', 'extra.json'));
    assert.equal(fs.readlinkSync(file!), `../../../../blobs/${gitBlobSha(content)}`);
    assert.deepEqual(fs.readFileSync(file!), content);
  }));

test('offline mode serves the cached snapshot with the server gone, and refuses what was never downloaded', async () => {
  const cacheDir = tempCache();
  let online = '';
  let endpoint = '';
  await withHub(async (hub) => {
    endpoint = hub.endpoint;
    online = await hubSnapshotModel('org/model', { cacheDir, endpoint });
  });
  assert.equal(await hubSnapshotModel('org/model', { cacheDir, endpoint, offline: true }), online);
  await assert.rejects(hubDownloadFile('org/model', 'nested/dir/extra.json', { cacheDir, endpoint, offline: true }), (err) => {
    assert.ok(err instanceof HubError);
    assert.match(err.message, /not in the cache \(offline mode\).*nested\/dir\/extra\.json/);
    return true;
  });
  assert.equal(await hubDownloadFile('org/model', 'absent.json', { cacheDir, endpoint, offline: true, optional: true }), null);
  // Without HF_HUB_OFFLINE an unreachable hub falls back to the cache, like huggingface_hub.
  assert.equal(await hubSnapshotModel('org/model', { cacheDir, endpoint }), online);
});

test('a tag or a commit hash as revision gives that commit and records refs/<tag>', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const byTag = await hubSnapshotModel('org/model', { cacheDir, endpoint: hub.endpoint, revision: 'v1' });
    const v1Files = hub.repos['org/model']!.commits[V1]!;
    assert.equal(byTag, path.join(repoDir(cacheDir), 'snapshots', V1));
    assert.equal(fs.readFileSync(path.join(repoDir(cacheDir), 'refs', 'v1'), 'utf8'), V1);
    assert.deepEqual(fs.readFileSync(path.join(byTag, 'config.json')), v1Files['config.json']);
    assert.deepEqual(fs.readFileSync(path.join(byTag, 'model.safetensors')), v1Files['model.safetensors']);

    const otherCache = tempCache();
    const byHash = await hubSnapshotModel('org/model', { cacheDir: otherCache, endpoint: hub.endpoint, revision: V1 });
    assert.equal(byHash, path.join(repoDir(otherCache), 'snapshots', V1));
    assert.deepEqual(fs.readFileSync(path.join(byHash, 'config.json')), v1Files['config.json']);
    assert.equal(fs.existsSync(path.join(repoDir(otherCache), 'refs')), false);
  }));

test('unknown repo gives a 404 HubError; a gated repo needs the right token', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const endpoint = hub.endpoint;
    await assert.rejects(hubSnapshotModel('org/missing', { cacheDir, endpoint }), (err) => {
      assert.ok(err instanceof HubError);
      assert.equal(err.status, 404);
      assert.match(err.message, /org\/missing/);
      return true;
    });
    await assert.rejects(hubSnapshotModel('org/gated', { cacheDir, endpoint }), (err) => {
      assert.ok(err instanceof HubError);
      assert.equal(err.status, 401);
      assert.match(err.message, /gated.*no token was sent.*HF_TOKEN/s);
      return true;
    });
    const snapshot = await hubSnapshotModel('org/gated', { cacheDir, endpoint, token: 'hf_secret' });
    const gated = hub.repos['org/gated']!.commits[MAIN]!;
    assert.deepEqual(fs.readFileSync(path.join(snapshot, 'model.safetensors')), gated['model.safetensors']);
    assert.ok(hub.requests('hub').some((r) => r.authorization === 'Bearer hf_secret'));
    assert.ok(hub.requests('cdn').length > 0);
    assert.ok(hub.requests('cdn').every((r) => r.authorization === undefined), 'token leaked to the CDN host');
  }));

test('the token is read from $HF_HOME/token when none is given', () =>
  withHub(async (hub) => {
    const home = process.env.HF_HOME!;
    fs.writeFileSync(path.join(home, 'token'), 'hf_secret\n');
    try {
      const file = await hubDownloadFile('org/gated', 'config.json', { cacheDir: tempCache(), endpoint: hub.endpoint });
      assert.deepEqual(fs.readFileSync(file!), hub.repos['org/gated']!.commits[MAIN]!['config.json']);
    } finally {
      fs.rmSync(path.join(home, 'token'));
    }
  }));

test('a connection dropped mid-file is resumed with a Range request inside one call', () =>
  withHub(async (hub) => {
    const shard = mainFile(hub, SHARD1);
    hub.drops.set(sha256(shard), { times: 1, afterBytes: 10_000 });
    const snapshot = await hubSnapshotModel('org/model', { cacheDir: tempCache(), endpoint: hub.endpoint });
    const ranges = hub.requests('cdn').map((r) => r.range).filter((r) => r !== undefined);
    assert.equal(ranges.length, 1);
    assert.ok(Number(/^bytes=(\d+)-$/.exec(ranges[0]!)?.[1]) > 0, ranges[0]);
    assert.equal(sha256(fs.readFileSync(path.join(snapshot, SHARD1))), sha256(shard));
  }));

test('a download that keeps failing leaves .incomplete and the next call resumes it', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const endpoint = hub.endpoint;
    const shard = mainFile(hub, SHARD2);
    const blob = path.join(repoDir(cacheDir), 'blobs', sha256(shard));
    hub.drops.set(sha256(shard), { times: Infinity, afterBytes: 5_000 });
    await assert.rejects(hubDownloadFile('org/model', SHARD2, { cacheDir, endpoint, retries: 2 }), (err) => {
      assert.ok(err instanceof HubError);
      assert.match(err.message, /org\/model\/model-00002-of-00002\.safetensors.*run the same command again to resume/);
      return true;
    });
    const partial = fs.statSync(`${blob}.incomplete`).size;
    assert.ok(partial > 0 && partial < shard.length, `partial size ${partial}`);
    assert.equal(fs.existsSync(path.join(repoDir(cacheDir), 'snapshots', MAIN, SHARD2)), false);
    assert.equal(fs.existsSync(blob), false);

    hub.drops.delete(sha256(shard));
    const file = await hubDownloadFile('org/model', SHARD2, { cacheDir, endpoint });
    assert.equal(hub.requests('cdn').at(-1)!.range, `bytes=${partial}-`);
    assert.deepEqual(fs.readFileSync(file!), shard);
    assert.equal(fs.existsSync(`${blob}.incomplete`), false);
  }));

test('progress reports non-decreasing bytes per file and ends at the total', () =>
  withHub(async (hub) => {
    const events: DownloadProgress[] = [];
    await hubSnapshotModel('org/model', { cacheDir: tempCache(), endpoint: hub.endpoint, onProgress: (p) => events.push(p) });
    for (const name of ['config.json', SHARD1, SHARD2]) {
      const mine = events.filter((e) => e.file === name);
      assert.ok(mine.length > 0, name);
      for (let i = 1; i < mine.length; i++) assert.ok(mine[i]!.bytes >= mine[i - 1]!.bytes, name);
      assert.equal(mine.at(-1)!.bytes, mainFile(hub, name).length);
      assert.equal(mine.at(-1)!.total, mainFile(hub, name).length);
    }
  }));

test('an abort signal stops the download with AbortError and keeps the partial file', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const endpoint = hub.endpoint;
    await assert.rejects(hubSnapshotModel('org/model', { cacheDir, endpoint, signal: AbortSignal.abort() }), AbortError);
    const controller = new AbortController();
    const abortMidway = (p: DownloadProgress) => p.bytes > 0 && controller.abort();
    const options = { cacheDir, endpoint, signal: controller.signal, onProgress: abortMidway };
    await assert.rejects(hubDownloadFile('org/model', SHARD1, options), AbortError);
    const incomplete = path.join(repoDir(cacheDir), 'blobs', `${sha256(mainFile(hub, SHARD1))}.incomplete`);
    assert.ok(fs.existsSync(incomplete));
  }));

test('an unreachable endpoint gives a HubError naming it', async () => {
  const closed = http.createServer();
  await new Promise<void>((ok) => closed.listen(0, '127.0.0.1', ok));
  const endpoint = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise((ok) => closed.close(ok));
  await assert.rejects(hubDownloadFile('org/model', 'config.json', { cacheDir: tempCache(), endpoint }), (err) => {
    assert.ok(err instanceof HubError);
    assert.ok(err.message.includes(`cannot reach ${endpoint}`), err.message);
    assert.match(err.message, /HF_HUB_OFFLINE=1/);
    return true;
  });
});

test('HF_ENDPOINT and HF_HUB_CACHE are used when no options are given', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    process.env.HF_ENDPOINT = hub.endpoint;
    process.env.HF_HUB_CACHE = cacheDir;
    try {
      const file = await hubDownloadFile('org/model', 'config.json');
      assert.equal(file, path.join(repoDir(cacheDir), 'snapshots', MAIN, 'config.json'));
    } finally {
      delete process.env.HF_ENDPOINT;
      delete process.env.HF_HUB_CACHE;
    }
  }));

test('malformed names and a malformed shard index are refused', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const endpoint = hub.endpoint;
    await assert.rejects(hubDownloadFile('org/model', '../escape.json', { cacheDir, endpoint }), HubError);
    await assert.rejects(hubDownloadFile('../x', 'config.json', { cacheDir, endpoint }), HubError);
    hub.repos['org/model']!.commits[MAIN]!['model.safetensors.index.json'] = json({ weight_map: { a: 3 } });
    await assert.rejects(hubSnapshotModel('org/model', { cacheDir, endpoint }), /weight_map/);
  }));

test('a model named by hub id downloads, loads and gives the reference logits (library and CLI)', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const expected = JSON.parse(fs.readFileSync(tinyExpectedPath, 'utf8')).cases[0] as { ids: number[]; logits: number[][]; greedy_continuation: number[] };
    // The exact (f32) KV cache: the fixture's logits and continuation are numpy's float computation.
    const { model } = await loadPretrained('allenai/tiny-olmoe', { backend: new ReferenceBackend(), cacheDir, endpoint: hub.endpoint, kvCache: 'f32' });
    const logits = model.backend.toFloat32(model.forward(Int32Array.from(expected.ids)));
    expected.logits.forEach((row, t) => row.forEach((v, i) => assert.ok(Math.abs(v - logits[t * 600 + i]!) < 1e-4)));
    // The CLI in a child process, told where the hub is by the environment; then again offline from the cache.
    const env = { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: tempCache() };
    const args = [cliPath, 'generate', 'allenai/tiny-olmoe', '--prompt-ids', expected.ids.join(','), '--greedy', '--ignore-eos', '-n', '10', '--json', '--kv-cache', 'f32'];
    for (const extra of [{}, { HF_HUB_OFFLINE: '1' }]) {
      const { stdout } = await promisify(execFile)(process.execPath, args, { env: { ...env, ...extra } });
      assert.deepEqual(JSON.parse(stdout).ids, expected.greedy_continuation);
    }
  }));

const cdnUrl = (hub: FakeHub, content: Buffer) => hub.requests('cdn').find((r) => r.url.endsWith(sha256(content)))!;

test('a CDN that stalls mid-file: a HubError naming the URL after the timeout, the partial file kept, the next call resumes', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const endpoint = hub.endpoint;
    const shard = mainFile(hub, SHARD1);
    hub.stalls.set(sha256(shard), 10_000);
    const started = performance.now();
    await assert.rejects(hubDownloadFile('org/model', SHARD1, { cacheDir, endpoint, timeoutMs: 300, retries: 1 }), (err) => {
      assert.ok(err instanceof HubError);
      assert.ok(err.message.includes(`/cdn/${sha256(shard)} stalled: no data for 0.3 s`), err.message);
      assert.match(err.message, /org\/model\/model-00001-of-00002\.safetensors.*run the same command again to resume/);
      return true;
    });
    assert.ok(performance.now() - started < 5000, 'gave up within the timeouts');
    assert.ok(cdnUrl(hub, shard));
    const incomplete = path.join(repoDir(cacheDir), 'blobs', `${sha256(shard)}.incomplete`);
    assert.equal(fs.statSync(incomplete).size, 20_000); // two attempts, the second resumed from the first's 10 000 bytes
    hub.stalls.clear();
    const file = await hubDownloadFile('org/model', SHARD1, { cacheDir, endpoint, timeoutMs: 300 });
    assert.equal(hub.requests('cdn').at(-1)!.range, 'bytes=20000-');
    assert.deepEqual(fs.readFileSync(file!), shard);
  }));

test('a hub that never answers, and a CDN that never answers: HubErrors naming the URL that stalled', async () => {
  const silent = http.createServer(() => {}); // accepts, reads the request, never answers
  await new Promise<void>((ok) => silent.listen(0, '127.0.0.1', ok));
  const endpoint = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  try {
    await assert.rejects(hubDownloadFile('org/model', 'config.json', { cacheDir: tempCache(), endpoint, timeoutMs: 300 }), (err) => {
      assert.ok(err instanceof HubError);
      assert.ok(err.message.includes(`${endpoint}/org/model/resolve/main/config.json stalled: no answer within 0.3 s`), err.message);
      return true;
    });
    const env = { ...process.env, HF_ENDPOINT: endpoint, HF_HUB_CACHE: tempCache() };
    const cli = await promisify(execFile)(process.execPath, [cliPath, 'download', 'org/model', '--timeout', '0.3'], { env }).catch((err) => err);
    assert.equal(cli.code, 1);
    assert.ok(cli.stderr.includes(`${endpoint}/org/model/resolve/main/config.json stalled: no answer within 0.3 s`), cli.stderr);
  } finally {
    silent.closeAllConnections();
    await new Promise((ok) => silent.close(ok));
  }
  await withHub(async (hub) => {
    hub.cdnSilent = true;
    const shard = mainFile(hub, SHARD2);
    await assert.rejects(hubDownloadFile('org/model', SHARD2, { cacheDir: tempCache(), endpoint: hub.endpoint, timeoutMs: 300, retries: 0 }), (err) => {
      assert.ok(err instanceof HubError);
      assert.ok(err.message.includes(`/cdn/${sha256(shard)} stalled: no answer within 0.3 s`), err.message);
      return true;
    });
  });
});

test('an LFS file whose bytes do not hash to X-Linked-Etag is refused, removed, and downloaded afresh next time', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const endpoint = hub.endpoint;
    const shard = mainFile(hub, SHARD2);
    hub.corrupt.add(sha256(shard));
    let got = '';
    await assert.rejects(hubDownloadFile('org/model', SHARD2, { cacheDir, endpoint }), (err) => {
      assert.ok(err instanceof HubError);
      got = /its sha256 is ([0-9a-f]{64})/.exec(err.message)?.[1] ?? '';
      assert.ok(err.message.includes(`org/model/${SHARD2}`), err.message);
      assert.ok(err.message.includes(`the hub says ${sha256(shard)}`), err.message);
      return true;
    });
    const flipped = Buffer.from(shard);
    flipped[flipped.length >> 1] ^= 0x01;
    assert.equal(got, sha256(flipped));
    const blobs = path.join(repoDir(cacheDir), 'blobs');
    assert.deepEqual(fs.readdirSync(blobs), [], 'neither the bad blob nor its .incomplete is kept');
    assert.equal(fs.existsSync(path.join(repoDir(cacheDir), 'snapshots', MAIN, SHARD2)), false);
    hub.corrupt.clear();
    const file = await hubDownloadFile('org/model', SHARD2, { cacheDir, endpoint });
    assert.deepEqual(fs.readFileSync(file!), shard);
  }));

test('olmoe download names each downloaded file once on stderr and prints the snapshot folder', () =>
  withHub(async (hub) => {
    const cacheDir = tempCache();
    const env = { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cacheDir };
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [cliPath, 'download', 'org/model'], { env });
    assert.equal(stdout, path.join(repoDir(cacheDir), 'snapshots', MAIN) + '\n');
    for (const name of ['config.json', 'tokenizer.json', 'model.safetensors.index.json', SHARD1, SHARD2]) {
      const lines = stderr.split('\n').filter((line) => line.startsWith(`download ${name} `));
      assert.equal(lines.length, 1, `${name}:\n${stderr}`);
    }
  }));

test('a mistyped local path is named as "no such folder or file" first; an org/name that is not a local path goes to the hub', () =>
  withHub(async (hub) => {
    const cwd = tempDir('olmoe-cwd-');
    fs.mkdirSync(path.join(cwd, 'models', 'olmoe-mini'), { recursive: true });
    fs.mkdirSync(path.join(cwd, 'allenai', 'another-model'), { recursive: true });
    const opts = { cacheDir: tempCache(), endpoint: hub.endpoint };
    const failure = (spec: string) => resolveModelPath(spec, opts).then(() => assert.fail(`${spec} resolved`), (err: Error) => err);
    const home = process.cwd();
    process.chdir(cwd);
    try {
      // models/ is a folder here, so this was meant as a path; the hub (asked as transformers would) has no such repo either
      const typo = await failure('models/olmoe-min');
      assert.ok(typo instanceof InputError);
      assert.match(typo.message, /^models\/olmoe-min: no such folder or file; did you mean models\/olmoe-mini\?; as a hub id: repository or file not found/);
      // what cannot be a hub id is never sent to the hub
      const asked = hub.log.length;
      const cases: [string, string][] = [
        ['./models/olmoe-min', './models/olmoe-min: no such folder or file; did you mean models/olmoe-mini?'],
        ['models/olmoe-mini/x/y', 'models/olmoe-mini/x/y: no such folder or file'],
        ['~/models/x', '~/models/x: no such folder or file (the shell expands ~ only outside quotes)'],
        [path.join(cwd, 'modles', 'olmoe-mini'), `${path.join(cwd, 'modles', 'olmoe-mini')}: no such folder or file; did you mean ${path.join(cwd, 'models')}?`],
        ['olmoe-mini', 'olmoe-mini: no such folder or file'],
      ];
      for (const [spec, message] of cases) {
        const err = await failure(spec);
        assert.ok(err instanceof InputError, spec);
        assert.ok(err.message.startsWith(message), err.message);
      }
      assert.equal(hub.log.length, asked, 'no request reached the hub');
      // an org that is also a local folder does not hide the hub: allenai/tiny-olmoe still downloads
      const snapshot = await resolveModelPath('allenai/tiny-olmoe', opts);
      assert.ok(fs.existsSync(path.join(snapshot, 'model.safetensors')));
    } finally {
      process.chdir(home);
    }
  }));

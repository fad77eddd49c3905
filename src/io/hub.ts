/**
 * Hugging Face Hub downloader that writes the same cache layout as python's `huggingface_hub`
 * (`models--org--name/{blobs,snapshots,refs,.no_exist}`), so both tools share one cache.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { AbortError, HubError, OlmoeError } from '../core/errors.js';
import { AtomicFile, processAlive, writeStep } from './atomic-file.js';
import { readWeightMap } from './checkpoint.js';
import { RunningHash, StalledError, StallWatch } from './transfer.js';

export interface DownloadProgress {
  file: string;
  bytes: number;
  total: number | undefined;
}

export interface HubOptions {
  revision?: string;
  cacheDir?: string;
  endpoint?: string;
  token?: string;
  offline?: boolean;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
  retries?: number;
  /**
   * How long to wait for the hub or CDN to connect, answer, or send the next bytes, in ms (default:
   * $HF_HUB_DOWNLOAD_TIMEOUT seconds for downloads and $HF_HUB_ETAG_TIMEOUT for metadata, as huggingface_hub; else 10 s).
   */
  timeoutMs?: number;
  /** 'dataset' for a dataset repository (URLs under /datasets/, cache folder datasets--org--name); default 'model'. */
  repoType?: 'model' | 'dataset';
}

const COMMIT_HASH = /^[0-9a-f]{40}$/;
const SAFE_SEGMENT = /^[A-Za-z0-9._-]+$/;
const MAX_REDIRECTS = 10;
const DEFAULT_TIMEOUT_S = 10;
const SHA256_HEX = /^[0-9a-f]{64}$/;

interface FileRequest {
  repoId: string;
  filename: string;
  revision: string;
  endpoint: string;
  token: string | undefined;
  offline: boolean;
  retries: number;
  repoDir: string;
  url: string;
  optional: boolean;
  onProgress: ((p: DownloadProgress) => void) | undefined;
  signal: AbortSignal | undefined;
  metadataTimeoutMs: number;
  downloadTimeoutMs: number;
}

interface FileMetadata {
  commit: string;
  etag: string;
  size: number | undefined;
  /** The LFS object's sha256 (X-Linked-Etag), which the downloaded bytes must have. */
  sha256: string | undefined;
}

/** `org/name` as huggingface_hub's validate_repo_id allows it: parts start and end with [A-Za-z0-9_], no `--` or `..`, name ≤ 96. */
export function isHubRepoId(spec: string): boolean {
  const part = '[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?';
  const match = new RegExp(`^${part}/(${part})$`).exec(spec);
  return match !== null && match[1]!.length <= 96 && !spec.includes('--') && !spec.includes('..') && !spec.endsWith('.git');
}

function hfHome(env: NodeJS.ProcessEnv): string {
  if (env.HF_HOME) return env.HF_HOME;
  const cacheRoot = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cacheRoot, 'huggingface');
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.HF_HUB_CACHE || path.join(hfHome(env), 'hub');
}

function defaultToken(env: NodeJS.ProcessEnv): string | undefined {
  if (env.HF_TOKEN) return env.HF_TOKEN;
  try {
    return fs.readFileSync(path.join(hfHome(env), 'token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function timeoutMs(option: number | undefined, envSeconds: string | undefined): number {
  if (option !== undefined) return option;
  const seconds = Number(envSeconds);
  return (envSeconds && Number.isFinite(seconds) && seconds > 0 ? seconds : DEFAULT_TIMEOUT_S) * 1000;
}

function envFlag(value: string | undefined): boolean {
  return ['1', 'true', 'yes', 'on'].includes((value ?? '').trim().toLowerCase());
}

/** Splits a repo file name into path segments, refusing anything that could escape the snapshot folder. */
function filenameSegments(filename: string): string[] {
  const segments = filename.split('/');
  const unsafe = segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('\\'));
  if (unsafe) throw new HubError(`invalid file name in repository: ${JSON.stringify(filename)}`);
  return segments;
}

function buildRequest(repoId: string, filename: string, opts: HubOptions & { optional?: boolean }): FileRequest {
  if (!isHubRepoId(repoId)) throw new HubError(`invalid Hugging Face repo id: ${JSON.stringify(repoId)} (expected "org/name")`);
  const segments = filenameSegments(filename);
  const revision = opts.revision ?? 'main';
  if (revision.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new HubError(`invalid revision: ${JSON.stringify(revision)}`);
  }
  const endpoint = (opts.endpoint ?? (process.env.HF_ENDPOINT || 'https://huggingface.co')).replace(/\/+$/, '');
  const encodedFile = segments.map(encodeURIComponent).join('/');
  const kind = opts.repoType ?? 'model';
  return {
    repoId,
    filename,
    revision,
    endpoint,
    token: opts.token ?? defaultToken(process.env),
    offline: opts.offline ?? envFlag(process.env.HF_HUB_OFFLINE),
    retries: opts.retries ?? 3,
    repoDir: path.join(opts.cacheDir ?? hubCacheDir(), `${kind}s--${repoId.replace('/', '--')}`),
    url: `${endpoint}/${kind === 'dataset' ? 'datasets/' : ''}${repoId}/resolve/${encodeURIComponent(revision)}/${encodedFile}`,
    optional: opts.optional ?? false,
    onProgress: distinctProgress(opts.onProgress),
    signal: opts.signal,
    metadataTimeoutMs: timeoutMs(opts.timeoutMs, process.env.HF_HUB_ETAG_TIMEOUT),
    downloadTimeoutMs: timeoutMs(opts.timeoutMs, process.env.HF_HUB_DOWNLOAD_TIMEOUT),
  };
}

/** Drops a report equal to the one before (the last chunk and the completed file both say bytes = total). */
function distinctProgress(onProgress: ((p: DownloadProgress) => void) | undefined): ((p: DownloadProgress) => void) | undefined {
  if (!onProgress) return undefined;
  let last: DownloadProgress | undefined;
  return (p) => {
    if (last && last.bytes === p.bytes && last.total === p.total) return;
    last = p;
    onProgress(p);
  };
}

const snapshotPath = (req: FileRequest, commit: string) => path.join(req.repoDir, 'snapshots', commit, req.filename);
const noExistPath = (req: FileRequest, commit: string) => path.join(req.repoDir, '.no_exist', commit, req.filename);
const refPath = (req: FileRequest) => path.join(req.repoDir, 'refs', req.revision);

function cachedCommit(req: FileRequest): string | undefined {
  if (COMMIT_HASH.test(req.revision)) return req.revision;
  try {
    return fs.readFileSync(refPath(req), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The cached answer for this file: its path, null for a remembered 404, undefined when the cache does not know. */
function lookupCache(req: FileRequest): string | null | undefined {
  const commit = cachedCommit(req);
  if (commit === undefined) return undefined;
  if (fs.existsSync(snapshotPath(req, commit))) return snapshotPath(req, commit);
  if (fs.existsSync(noExistPath(req, commit))) return null;
  return undefined;
}

function fromCacheOrThrow(req: FileRequest, makeError: () => HubError): string | null {
  const cached = lookupCache(req);
  if (typeof cached === 'string') return cached;
  if (req.optional && (cached === null || req.offline)) return null;
  throw makeError();
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError('download aborted');
}

/**
 * fetch with redirects followed by hand so the token never reaches another origin (HF sends LFS files to a CDN).
 * With `stopAtCrossOrigin` the first cross-origin redirect is returned as is: that is where the hub puts its metadata.
 */
async function fetchWithRedirects(
  req: FileRequest,
  method: 'HEAD' | 'GET',
  extra: { range?: string; watch: StallWatch; stopAtCrossOrigin?: boolean },
): Promise<Response> {
  let url = req.url;
  let sendToken = req.token !== undefined;
  const startOrigin = new URL(url).origin;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    extra.watch.waitFor(url);
    const headers: Record<string, string> = { 'Accept-Encoding': 'identity', 'User-Agent': 'olmoe-ts' };
    if (sendToken) headers.Authorization = `Bearer ${req.token}`;
    if (extra.range) headers.Range = extra.range;
    const res = await fetch(url, { method, headers, redirect: 'manual', signal: extra.watch.signal });
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) return res;
    const next = new URL(location, url);
    if (next.origin !== startOrigin && extra.stopAtCrossOrigin) return res;
    await res.body?.cancel();
    if (next.origin !== startOrigin) sendToken = false;
    url = next.href;
  }
  throw new HubError(`too many redirects (> ${MAX_REDIRECTS}) for ${req.url}`, { url: req.url });
}

function httpError(req: FileRequest, res: Response): HubError {
  const where = `${req.repoId}/${req.filename} at revision ${req.revision}`;
  const hubMessage = res.headers.get('x-error-message');
  const detail = hubMessage ? `: ${hubMessage}` : '';
  const opts = { status: res.status, url: req.url };
  if (res.status === 404) return new HubError(`repository or file not found: ${where} (${req.url})`, opts);
  if (res.status === 401 || res.status === 403) {
    const tokenNote = req.token ? 'a token was sent but is not allowed access' : 'no token was sent';
    return new HubError(
      `access denied (${res.status}) to ${where}: the repository may be gated or private; ${tokenNote}. ` +
        `Accept its terms on the Hub if gated and set HF_TOKEN to an access token${detail}`,
      opts,
    );
  }
  return new HubError(`${res.status} ${res.statusText} from ${req.url} for ${where}${detail}`, opts);
}

/** The hub did not answer at all (as opposed to answering with an error), so the cache may stand in for it. */
class HubUnreachableError extends HubError {}

function unreachableError(req: FileRequest, err: unknown): HubError {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new HubUnreachableError(`cannot reach ${req.endpoint}: ${reason} (set HF_HUB_OFFLINE=1 to use the cache only)`, {
    url: req.url,
    cause: err,
  });
}

function cleanEtag(raw: string | null): string | undefined {
  if (!raw) return undefined;
  return raw.replace(/^W\//, '').replace(/^"(.*)"$/, '$1') || undefined;
}

function parseMetadata(req: FileRequest, res: Response): FileMetadata {
  const commit = res.headers.get('x-repo-commit') ?? undefined;
  const linkedEtag = cleanEtag(res.headers.get('x-linked-etag'));
  const etag = linkedEtag ?? cleanEtag(res.headers.get('etag'));
  if (!commit || !etag) {
    throw new HubError(`${req.endpoint} is not a Hugging Face Hub endpoint: no commit hash or ETag in its answer for ${req.url}`, {
      status: res.status,
      url: req.url,
    });
  }
  // Both end up as path components in the cache, so a hostile server must not be able to pick `..`.
  if (!SAFE_SEGMENT.test(commit) || !SAFE_SEGMENT.test(etag) || commit.startsWith('.') || etag.startsWith('.')) {
    throw new HubError(`unexpected commit hash or ETag from ${req.url}: ${commit} ${etag}`, { url: req.url });
  }
  const sizeHeader = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
  const size = sizeHeader !== null && /^\d+$/.test(sizeHeader) ? Number(sizeHeader) : undefined;
  return { commit, etag, size, sha256: linkedEtag !== undefined && SHA256_HEX.test(linkedEtag) ? linkedEtag : undefined };
}

async function writeFileAtomic(file: string, content: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const out = new AtomicFile(file);
  out.write(Buffer.from(content));
  out.finish();
}

async function rememberRevision(req: FileRequest, commit: string): Promise<void> {
  if (req.revision === commit || cachedCommit(req) === commit) return;
  await writeFileAtomic(refPath(req), commit);
}

/** Remembers a 404 the way huggingface_hub does, so offline runs know the file is absent rather than uncached. */
async function rememberMissing(req: FileRequest, res: Response): Promise<void> {
  const commit = res.headers.get('x-repo-commit');
  if (!commit || !SAFE_SEGMENT.test(commit) || commit.startsWith('.')) return;
  await rememberRevision(req, commit);
  const marker = noExistPath(req, commit);
  await fsp.mkdir(path.dirname(marker), { recursive: true });
  await fsp.writeFile(marker, '');
}

/** HEAD the file; null means a tolerated 404 for an optional file. */
async function fetchMetadata(req: FileRequest): Promise<FileMetadata | null> {
  const watch = new StallWatch(req.metadataTimeoutMs, req.signal);
  let res: Response;
  try {
    res = await fetchWithRedirects(req, 'HEAD', { watch, stopAtCrossOrigin: true });
  } catch (err) {
    throwIfAborted(req.signal);
    if (err instanceof HubError) throw err;
    throw unreachableError(req, watch.stalled ? new StalledError(watch.reason) : err);
  } finally {
    watch.stop();
  }
  if (res.status === 404) await rememberMissing(req, res);
  if (res.status === 404 && req.optional) return null;
  if (res.status >= 400) throw httpError(req, res);
  return parseMetadata(req, res);
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

function rangeStart(res: Response): number | undefined {
  const match = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
  return match ? Number(match[1]) : undefined;
}

/** One file's way from the hub into `.incomplete`, across the attempts of one call. */
interface Transfer {
  req: FileRequest;
  meta: FileMetadata;
  incomplete: string;
  /** sha256 of the bytes in `.incomplete` so far, fed chunk by chunk, so an LFS file is not read back to check it. */
  hash: RunningHash;
}

async function streamToFile(t: Transfer, res: Response, offset: number, watch: StallWatch): Promise<void> {
  const { req } = t;
  await t.hash.resumeAt(t.incomplete, offset);
  const handle = await fsp.open(t.incomplete, offset > 0 ? 'a' : 'w');
  let bytes = offset;
  try {
    for await (const chunk of res.body ?? []) {
      watch.progress();
      writeStep();
      await handle.write(chunk);
      t.hash.update(chunk);
      watch.progress(); // a slow disk is not a stalled server
      bytes += chunk.byteLength;
      req.onProgress?.({ file: req.filename, bytes, total: t.meta.size });
      throwIfAborted(req.signal);
    }
  } finally {
    await handle.close();
  }
}

/** One GET that appends to the `.incomplete` file, resuming from its current size when the server allows it. */
async function downloadAttempt(t: Transfer): Promise<void> {
  const { req, meta } = t;
  let offset = await fileSize(t.incomplete);
  if (meta.size !== undefined && offset > meta.size) offset = 0;
  if (meta.size !== undefined && offset === meta.size && offset > 0) return;
  const range = offset > 0 ? `bytes=${offset}-` : undefined;
  const watch = new StallWatch(req.downloadTimeoutMs, req.signal);
  try {
    const res = await fetchWithRedirects(req, 'GET', { range, watch });
    watch.progress();
    await receive(t, res, offset, watch);
  } catch (err) {
    if (watch.stalled && !req.signal?.aborted) throw new StalledError(watch.reason, { cause: err });
    throw err;
  } finally {
    watch.stop();
  }
}

async function receive(t: Transfer, res: Response, offset: number, watch: StallWatch): Promise<void> {
  const { req } = t;
  if (res.status >= 400) {
    await res.body?.cancel();
    throw httpError(req, res);
  }
  if (res.status === 206 && rangeStart(res) !== offset) {
    await res.body?.cancel();
    throw new HubError(`${req.url} answered a range request for byte ${offset} with ${res.headers.get('content-range')}`, {
      status: res.status,
      url: req.url,
    });
  }
  await streamToFile(t, res, res.status === 206 ? offset : 0, watch);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function downloadWithRetries(t: Transfer): Promise<void> {
  const { req, incomplete } = t;
  for (let attempt = 0; ; attempt++) {
    try {
      return await downloadAttempt(t);
    } catch (err) {
      throwIfAborted(req.signal);
      if (err instanceof HubError) throw err;
      if (attempt >= req.retries) {
        const received = await fileSize(incomplete);
        const reason = err instanceof Error ? err.message : String(err);
        throw new HubError(
          `download of ${req.repoId}/${req.filename} failed after ${received} bytes (${reason}); ` +
            `the partial file is kept: run the same command again to resume`,
          { url: req.url, cause: err },
        );
      }
      await sleep(100 * (attempt + 1));
    }
  }
}

async function downloadBlob(req: FileRequest, meta: FileMetadata, blob: string): Promise<void> {
  await fsp.mkdir(path.dirname(blob), { recursive: true });
  const release = await lockBlob(req, blob);
  try {
    if (!fs.existsSync(blob)) await downloadUnlocked(req, meta, blob);
  } finally {
    await release();
  }
}

const LOCK_POLL_MS = 250;

/**
 * One writer per blob across processes (as huggingface_hub's file lock): `{blob}.lock` holds the owner's pid;
 * a lock whose process is gone is taken over, a live one is waited for.
 */
async function lockBlob(req: FileRequest, blob: string): Promise<() => Promise<void>> {
  const lock = `${blob}.lock`;
  for (;;) {
    try {
      await fsp.writeFile(lock, String(process.pid), { flag: 'wx' });
      return () => fsp.rm(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (!lockOwnerAlive(lock)) await fsp.rm(lock, { force: true });
    else await sleep(LOCK_POLL_MS);
    throwIfAborted(req.signal);
  }
}

function lockOwnerAlive(lock: string): boolean {
  try {
    return processAlive(Number(fs.readFileSync(lock, 'utf8')));
  } catch {
    return false; // removed meanwhile
  }
}

async function downloadUnlocked(req: FileRequest, meta: FileMetadata, blob: string): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  const transfer: Transfer = { req, meta, incomplete, hash: new RunningHash() };
  await downloadWithRetries(transfer);
  const received = await fileSize(incomplete);
  if (meta.size !== undefined && received !== meta.size) {
    throw new HubError(
      `download of ${req.repoId}/${req.filename} has ${received} bytes, expected ${meta.size}; ` +
        `run the same command again to resume`,
      { url: req.url },
    );
  }
  if (meta.sha256 !== undefined) await verifySha256(req, incomplete, meta.sha256, await transfer.hash.digest(incomplete, received));
  req.onProgress?.({ file: req.filename, bytes: received, total: meta.size ?? received });
  writeStep();
  await fsp.rename(incomplete, blob);
}

/** An LFS file must hash to the sha256 the hub announced, or a flipped byte would be cached as the blob of that hash. */
async function verifySha256(req: FileRequest, file: string, expected: string, actual: string): Promise<void> {
  if (actual === expected) return;
  await fsp.rm(file, { force: true });
  throw new HubError(
    `download of ${req.repoId}/${req.filename} from ${req.url} is corrupt: its sha256 is ${actual}, the hub says ${expected} ` +
      `(X-Linked-Etag); the bad file was removed: run the same command again to download it afresh`,
    { url: req.url },
  );
}

async function linkSnapshot(blob: string, pointer: string): Promise<void> {
  await fsp.mkdir(path.dirname(pointer), { recursive: true });
  writeStep();
  await fsp.rm(pointer, { force: true });
  try {
    await fsp.symlink(path.relative(path.dirname(pointer), blob), pointer);
  } catch (err) {
    // Like huggingface_hub on systems without symlink rights (Windows without developer mode): copy instead.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    await fsp.copyFile(blob, pointer);
  }
}

async function downloadOnline(req: FileRequest): Promise<string | null> {
  const meta = await fetchMetadata(req);
  if (meta === null) return null;
  await rememberRevision(req, meta.commit);
  const pointer = snapshotPath(req, meta.commit);
  if (fs.existsSync(pointer)) return pointer;
  const blob = path.join(req.repoDir, 'blobs', meta.etag);
  if (!fs.existsSync(blob)) await downloadBlob(req, meta, blob);
  await linkSnapshot(blob, pointer);
  return pointer;
}

/** Download one file into the cache; returns the path under snapshots/<commit>/; returns null for a 404 when optional. */
export async function hubDownloadFile(
  repoId: string,
  filename: string,
  opts: HubOptions & { optional?: boolean } = {},
): Promise<string | null> {
  const req = buildRequest(repoId, filename, opts);
  throwIfAborted(req.signal);
  const notCached = () =>
    new HubError(`not in the cache (offline mode): ${repoId}/${filename} at revision ${req.revision} in ${req.repoDir}`, {
      url: req.url,
    });
  if (req.offline) return fromCacheOrThrow(req, notCached);
  // A commit hash names immutable content, so a cached copy needs no network at all.
  const cached = COMMIT_HASH.test(req.revision) ? lookupCache(req) : undefined;
  if (typeof cached === 'string') return cached;
  try {
    return await downloadOnline(req);
  } catch (err) {
    // Like huggingface_hub: when the hub cannot be reached, fall back to what the cache already has.
    if (err instanceof HubUnreachableError) return fromCacheOrThrow(req, () => err);
    throw asHubError(err, req);
  }
}

/** File-system failures in the cache (permissions, disk full) become errors that name the path. */
function asHubError(err: unknown, req: FileRequest): unknown {
  const fsError = err as NodeJS.ErrnoException;
  if (err instanceof OlmoeError || typeof fsError?.code !== 'string') return err;
  return new HubError(`cannot write ${req.repoId}/${req.filename} into the cache ${req.repoDir}: ${fsError.message}`, { cause: err });
}

const OPTIONAL_MODEL_FILES = ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

function readShardNames(indexPath: string): string[] {
  return [...new Set(readWeightMap(indexPath).values())];
}

/** Download what an OLMoE model folder needs and return the snapshot folder path. */
export async function hubSnapshotModel(repoId: string, opts: HubOptions = {}): Promise<string> {
  const required = { ...opts, optional: false };
  const configPath = (await hubDownloadFile(repoId, 'config.json', required)) as string;
  const snapshotDir = path.dirname(configPath);
  // Pin every later file to config.json's commit, so a branch that moves mid-download cannot mix two commits.
  const pinned = { ...required, revision: path.basename(snapshotDir) };
  for (const name of OPTIONAL_MODEL_FILES) await hubDownloadFile(repoId, name, { ...pinned, optional: true });
  const indexPath = await hubDownloadFile(repoId, 'model.safetensors.index.json', { ...pinned, optional: true });
  const weightFiles = indexPath === null ? ['model.safetensors'] : readShardNames(indexPath);
  for (const name of weightFiles) await hubDownloadFile(repoId, name, pinned);
  return snapshotDir;
}

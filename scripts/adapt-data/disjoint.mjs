/**
 * Disjointness of the adaptation data from the evaluation benchmarks (benchmarks/*.jsonl, few-shot files
 * included). An adaptation example is left out when, in its normalised text (every message, lower case, letters
 * and digits only):
 *   question  a benchmark question (or a cloze sentence with its blank filled) of four words or more appears;
 *   fact      a benchmark item's correct answer (three characters or more) appears together with every content
 *             word of its question (the item's fact is stated, whatever the wording);
 *   answer    a benchmark answer of two words or more and twelve characters or more appears (a definition, a
 *             line of verse; a single long word is covered by the fact rule).
 * WordNet synsets are also refused at the source when a lemma is a word of any benchmark item, or the definition
 * is one of its texts (a question, a choice, a quoted phrase) (`wordnetOverlap`), so no definition the benchmarks
 * ask about, or offer as a distractor, is taught. The rules over-exclude on purpose: a short common answer with
 * common content words also removes an unrelated example; that costs a few examples and leaks nothing.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const normalise = (text) =>
  ` ${text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim()} `;

/** Question words that say what is asked, not about what: left out of an item's content words. */
const FUNCTION_WORDS = new Set(
  'what which does mean means word words called comes come follows follow next number replaces replace this that these with from have into many much after before there their about noun verb adjective adverb completes complete saying positive negative capital city command line sequence year group young counterpart opposite character says said killed shakespeare language flowers latin morse code section uniform commercial state ruler succeeded sovereign english president vice under zodiac chinese steam locomotive middle earth chief star trek where first officer'.split(' '),
);

/** Every benchmark item: {task, id, question, answer, texts (question, answer and choices)}. */
export function readBenchmarkItems(dir) {
  const files = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort();
  if (files.length === 0) throw new Error(`${dir}: no benchmark .jsonl files`);
  const items = [];
  for (const file of files) {
    readFileSync(join(dir, file), 'utf8').split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      const row = JSON.parse(line);
      if (typeof row.sentence === 'string') {
        const answer = row.answer === '1' ? row.option1 : row.option2;
        items.push({ file, line: i + 1, question: row.sentence.replace('_', answer), answer, texts: [row.sentence, row.option1, row.option2] });
      } else if (typeof row.question === 'string' && Array.isArray(row.choices)) {
        items.push({ file, line: i + 1, question: row.question, answer: String(row.choices[row.answer]), texts: [row.question, ...row.choices.map(String)] });
      } else throw new Error(`${join(dir, file)}: line ${i + 1} is neither a multiple-choice nor a cloze item`);
    });
  }
  return { files, items };
}

export class BenchmarkIndex {
  constructor({ items }) {
    this.questions = new Set();
    this.longAnswers = new Set();
    this.facts = [];
    this.texts = new Set(); // every question, choice and quoted phrase, normalised
    this.words = new Set();
    for (const item of items) {
      const question = normalise(item.question);
      const answer = normalise(item.answer);
      if (question.trim().split(' ').length >= 4) this.questions.add(question);
      if (answer.trim().length >= 12 && answer.trim().includes(' ')) this.longAnswers.add(answer);
      const content = question.trim().split(' ').filter((w) => w.length >= 4 && !FUNCTION_WORDS.has(w));
      if (answer.trim().length >= 3 && content.length > 0) this.facts.push({ answer, content: content.map((w) => ` ${w} `) });
      for (const text of item.texts) {
        for (const part of [text, ...[...text.matchAll(/"([^"]+)"/g)].map((m) => m[1])]) this.texts.add(normalise(part));
        for (const word of normalise(text).trim().split(' ')) this.words.add(word);
      }
    }
  }

  /** Why `text` (an example's messages) must be left out, or undefined. */
  conflict(text) {
    const normal = normalise(text);
    for (const question of this.questions) if (normal.includes(question)) return 'question';
    for (const answer of this.longAnswers) if (normal.includes(answer)) return 'answer';
    for (const fact of this.facts) if (normal.includes(fact.answer) && fact.content.every((w) => normal.includes(w))) return 'fact';
    return undefined;
  }

  /** A WordNet synset any of whose lemmas is a word of a benchmark item, or whose definition is one of its texts. */
  wordnetOverlap(synset) {
    if (this.texts.has(normalise(synset.definition))) return true;
    return synset.lemmas.some((lemma) => normalise(lemma).trim().split(' ').some((word) => this.words.has(word)));
  }
}

/**
 * Dataset rows → prompts, in OLMES's exact layouts (docs/eval/olmes-formats.md, checked there against
 * OLMES-generated requests). Each format reads one Hugging Face dataset's row schema and gives the cloze query
 * with its continuations (" " + answer), or WinoGrande's partial scoring (one context per option, one shared
 * continuation); the lettered ("multiple-choice") query answered by " A", " B", …; and how the row reads as a
 * few-shot example in each formulation.
 */
import { FormatError, preview } from '../core/errors.js';

export interface PromptDoc {
  readonly id: string;
  readonly gold: number;
  /** Cloze: a query continued by each answer, or partial scoring: a context per option and one continuation. */
  readonly cloze: { readonly query: string; readonly continuations: readonly string[] } | { readonly contexts: readonly string[]; readonly continuation: string };
  /** The question with its lettered choices, ending in "Answer:". */
  readonly lettered: string;
  readonly choiceCount: number;
  /** The row as a few-shot example, gold answer included. */
  readonly clozeShot: string;
  readonly letteredShot: string;
}

export const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** A row field read with errors that name the file, row and field. */
export class RowReader {
  constructor(
    private readonly file: string,
    private readonly row: Record<string, unknown>,
    readonly index: number,
  ) {}

  fail(field: string, message: string): never {
    throw new FormatError(this.file, `row ${this.index + 1}: "${field}" ${message}`);
  }

  text(field: string): string {
    const value = this.value(field);
    if (typeof value !== 'string') this.fail(field, `must be a string, got ${preview(value)}`);
    return value as string;
  }

  texts(field: string, min = 2): string[] {
    const value = this.value(field);
    if (!Array.isArray(value) || value.length < min || value.length > LETTERS.length || !value.every((v) => typeof v === 'string')) {
      this.fail(field, `must be a list of ${min} to ${LETTERS.length} strings, got ${preview(value)}`);
    }
    return value as string[];
  }

  integer(field: string): number {
    const value = this.value(field);
    const number = typeof value === 'bigint' ? Number(value) : value;
    if (!Number.isSafeInteger(number)) this.fail(field, `must be an integer, got ${preview(value)}`);
    return number as number;
  }

  /** An answer index checked against the number of choices. */
  gold(field: string, index: number, count: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= count) this.fail(field, `gives answer ${index}, not one of the ${count} choices`);
    return index;
  }

  /** The row's "id" (string or number), or its position when it has none. */
  optionalId(): string {
    if (!Object.hasOwn(this.row, 'id')) return String(this.index);
    const id = this.row.id;
    if (typeof id !== 'string' && typeof id !== 'number') this.fail('id', `must be a string or number, got ${preview(id)}`);
    return String(id);
  }

  value(field: string): unknown {
    const path = field.split('.');
    let value: unknown = this.row;
    for (const key of path) {
      if (typeof value !== 'object' || value === null || !Object.hasOwn(value, key)) this.fail(field, 'is missing');
      value = (value as Record<string, unknown>)[key];
    }
    return value;
  }
}

const cloze = (question: string, prefix = 'Question: ') => `${prefix}${question}\nAnswer:`;
const lettered = (question: string, choices: readonly string[], prefix = 'Question: ', choicesHeader = '') =>
  `${prefix}${question}\n${choicesHeader}${choices.map((choice, k) => ` ${LETTERS[k]}. ${choice}`).join('\n')}\nAnswer:`;

/** A row whose cloze continuations are " {answer}" and whose lettered form is answered " {letter}". */
function choiceDoc(id: string, gold: number, query: string, choices: readonly string[], letters: string): PromptDoc {
  return {
    id, gold, choiceCount: choices.length,
    cloze: { query, continuations: choices.map((choice) => ` ${choice}`) },
    lettered: letters,
    clozeShot: `${query} ${choices[gold]}`,
    letteredShot: `${letters} ${LETTERS[gold]}`,
  };
}

/** The usual shape: "{prefix}{question}\nAnswer:" and the same question over a lettered list. */
function questionDoc(id: string, question: string, choices: readonly string[], gold: number, prefix = 'Question: '): PromptDoc {
  return choiceDoc(id, gold, cloze(question, prefix), choices, lettered(question, choices, prefix));
}

/** ARC: answerKey is a letter or a digit "1".."5" (positional, as OLMES reads it). */
function arc(r: RowReader): PromptDoc {
  const choices = r.texts('choices.text');
  const key = r.text('answerKey').trim();
  const letter = /^[1-5]$/.test(key) ? LETTERS[Number(key) - 1]! : key;
  return questionDoc(r.text('id'), r.text('question'), choices, r.gold('answerKey', LETTERS.indexOf(letter), choices.length));
}

/** SuperGLUE BoolQ: the passage (with its "Title -- " start), the question with "?", yes/no; label 1 is yes. */
function boolq(r: RowReader): PromptDoc {
  const label = r.integer('label');
  if (label !== 0 && label !== 1) r.fail('label', `must be 0 or 1, got ${label}`);
  const question = `${r.text('passage')}\nQuestion: ${r.text('question')}?`;
  return questionDoc(String(r.integer('idx')), question, ['yes', 'no'], 1 - label, '');
}

function csqa(r: RowReader): PromptDoc {
  const choices = r.texts('choices.text');
  return questionDoc(r.text('id'), r.text('question'), choices, r.gold('answerKey', LETTERS.indexOf(r.text('answerKey').trim()), choices.length));
}

function openbookqa(r: RowReader): PromptDoc {
  const choices = r.texts('choices.text');
  return questionDoc(r.text('id'), r.text('question_stem'), choices, r.gold('answerKey', LETTERS.indexOf(r.text('answerKey').trim()), choices.length));
}

function piqa(r: RowReader): PromptDoc {
  const choices = [r.text('sol1'), r.text('sol2')];
  return questionDoc(String(r.index), r.text('goal'), choices, r.gold('label', r.integer('label'), 2), 'Goal: ');
}

function siqa(r: RowReader): PromptDoc {
  const choices = [r.text('answerA'), r.text('answerB'), r.text('answerC')];
  const question = `${r.text('context')} ${r.text('question')}`;
  return questionDoc(String(r.index), question, choices, r.gold('label', Number(r.text('label')) - 1, 3));
}

/** MMLU (cais/mmlu): question stripped, four choices, integer answer; the subject goes in the task's preamble. */
function mmlu(r: RowReader): PromptDoc {
  const choices = r.texts('choices');
  return questionDoc(String(r.index), r.text('question').trim(), choices, r.gold('answer', r.integer('answer'), choices.length));
}

/** HellaSwag's text cleanup as OLMES does it (differs from lm-eval's): strip, then [title] to ". ", drop tags, halve double spaces once. */
export function hellaswagClean(text: string): string {
  return text.trim().replace(/\.? \[title\]/g, '. ').replace(/\[.*?\]/g, '').replaceAll('  ', ' ');
}

/** Python's str.capitalize: the first character upper-cased, every other lower-cased. */
function capitalize(text: string): string {
  return text.length === 0 ? text : text[0]!.toUpperCase() + text.slice(1).toLowerCase();
}

/**
 * HellaSwag: no "Question:" wrapper; the lettered form is cleaned as a whole after it is built. The id is the row's
 * position: "ind" is not unique within a split (OLMES's curated train shots hold two rows with ind 38).
 */
function hellaswag(r: RowReader): PromptDoc {
  const endings = r.texts('endings', 4);
  const gold = r.gold('label', Number(r.text('label')), endings.length);
  const context = `${r.text('activity_label')}: ${r.text('ctx_a')} ${capitalize(r.text('ctx_b'))}`;
  const query = hellaswagClean(context);
  const choices = endings.map(hellaswagClean);
  const letters = hellaswagClean(lettered(context, endings, '', 'Choose the best continuation:\n'));
  return choiceDoc(String(r.index), gold, query, choices, letters);
}

/** WinoGrande: partial scoring — the sentence up to "_" with each option, then the rest as the shared continuation. */
function winogrande(r: RowReader): PromptDoc {
  const sentence = r.text('sentence');
  const blank = sentence.indexOf('_');
  if (blank < 0) r.fail('sentence', 'has no "_" to fill in');
  const options = [r.text('option1'), r.text('option2')];
  const gold = r.gold('answer', Number(r.text('answer')) - 1, 2);
  const rest = sentence.slice(blank + 1).trim();
  const letters = lettered(sentence.replaceAll('_', '___'), options, 'Fill in the blank: ');
  return {
    id: String(r.index), gold, choiceCount: 2,
    cloze: { contexts: options.map((option) => sentence.slice(0, blank) + option), continuation: ` ${rest}` },
    lettered: letters,
    clozeShot: `${sentence.slice(0, blank)}${options[gold]} ${rest}`,
    letteredShot: `${letters} ${LETTERS[gold]}`,
  };
}

/** The generic JSONL schema {id?, question, choices, answer} with OLMES's default layout. */
function generic(r: RowReader): PromptDoc {
  const choices = r.texts('choices');
  return questionDoc(r.optionalId(), r.text('question'), choices, r.gold('answer', r.integer('answer'), choices.length));
}

/**
 * Preference pairs {id?, prompt, chosen, rejected} (the DPO data format, prompt and answers as strings) as a
 * two-choice task whose gold is `chosen`: scored by log-likelihood, its accuracy is how often the model prefers the
 * chosen answer. The lettered form would always answer "A": task files give it the cloze formulation only.
 */
function preference(r: RowReader): PromptDoc {
  return choiceDoc(r.optionalId(), 0, r.text('prompt'), [r.text('chosen'), r.text('rejected')], lettered(r.text('prompt'), [r.text('chosen'), r.text('rejected')], ''));
}

export const FORMATS = { generic, arc, boolq, csqa, openbookqa, piqa, siqa, mmlu, hellaswag, winogrande, preference } as const;
export type FormatName = keyof typeof FORMATS;

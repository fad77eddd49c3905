/**
 * The OLMES task layouts, row by row, against prompts written out by hand from docs/eval/olmes-formats.md (which
 * was checked against OLMES-generated requests): queries, continuations, gold index, few-shot renderings of each
 * dataset's schema; HellaSwag's cleanup; WinoGrande's partial scoring; rows read from Parquet as the hub publishes
 * them; schema errors named by file, row and field.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { FormatError } from '../src/core/errors.js';
import { FORMATS, hellaswagClean, RowReader, type FormatName, type PromptDoc } from '../src/eval/formats.js';
import { readTask, taskInstances } from '../src/eval/task.js';
import { tempDir } from './helpers.js';

const doc = (format: FormatName, row: Record<string, unknown>, index = 0): PromptDoc => FORMATS[format](new RowReader('rows.jsonl', row, index));
const clozeOf = (d: PromptDoc) => d.cloze as { query: string; continuations: string[] };

describe('OLMES layouts per dataset', () => {
  it('ARC: "Question: …\\nAnswer:", " {text}" continuations, numeric answer keys positional', () => {
    const arc = doc('arc', { id: 'NYSEDREGENTS_2006_8_10', question: 'Which is a gas?', choices: { text: ['ice', 'steam', 'wood', 'iron'], label: ['1', '2', '3', '4'] }, answerKey: '2' });
    assert.equal(arc.gold, 1);
    assert.equal(clozeOf(arc).query, 'Question: Which is a gas?\nAnswer:');
    assert.deepEqual(clozeOf(arc).continuations, [' ice', ' steam', ' wood', ' iron']);
    assert.equal(arc.lettered, 'Question: Which is a gas?\n A. ice\n B. steam\n C. wood\n D. iron\nAnswer:');
    assert.equal(arc.clozeShot, 'Question: Which is a gas?\nAnswer: steam');
    assert.equal(arc.letteredShot, 'Question: Which is a gas?\n A. ice\n B. steam\n C. wood\n D. iron\nAnswer: B');
  });

  it('BoolQ (SuperGLUE): passage, "Question: …?", yes/no; label 1 is yes', () => {
    const boolq = doc('boolq', { idx: 7, question: 'is a turkey vulture a bird', passage: 'Turkey vulture -- The turkey vulture is a bird.', label: 1 });
    assert.equal(boolq.gold, 0);
    assert.equal(clozeOf(boolq).query, 'Turkey vulture -- The turkey vulture is a bird.\nQuestion: is a turkey vulture a bird?\nAnswer:');
    assert.deepEqual(clozeOf(boolq).continuations, [' yes', ' no']);
    assert.equal(boolq.lettered, 'Turkey vulture -- The turkey vulture is a bird.\nQuestion: is a turkey vulture a bird?\n A. yes\n B. no\nAnswer:');
    assert.equal(boolq.id, '7');
  });

  it('PIQA "Goal:", SIQA context + question with label "1".."3", OpenBookQA question_stem, CSQA five letters', () => {
    const piqa = doc('piqa', { goal: 'Clean tires', sol1: 'Use soap.', sol2: 'Use sand.', label: 1 }, 4);
    assert.equal(clozeOf(piqa).query, 'Goal: Clean tires\nAnswer:');
    assert.equal(piqa.lettered, 'Goal: Clean tires\n A. Use soap.\n B. Use sand.\nAnswer:');
    assert.equal(piqa.gold, 1);
    assert.equal(piqa.id, '4');
    const siqa = doc('siqa', { context: 'Remy went fishing.', question: 'What will Remy want to do next?', answerA: 'eat', answerB: 'sleep', answerC: 'swim', label: '2' });
    assert.equal(clozeOf(siqa).query, 'Question: Remy went fishing. What will Remy want to do next?\nAnswer:');
    assert.equal(siqa.gold, 1);
    const obqa = doc('openbookqa', { id: '7-584', question_stem: 'The sun is', choices: { text: ['a star', 'a moon', 'a planet', 'a comet'], label: ['A', 'B', 'C', 'D'] }, answerKey: 'A ' });
    assert.equal(clozeOf(obqa).query, 'Question: The sun is\nAnswer:');
    assert.equal(obqa.gold, 0);
    const csqa = doc('csqa', { id: 'x', question: 'Where  is it?', choices: { text: ['a', 'b', 'c', 'd', 'e'], label: ['A', 'B', 'C', 'D', 'E'] }, answerKey: 'E' });
    assert.equal(csqa.gold, 4);
    assert.equal(csqa.lettered, 'Question: Where  is it?\n A. a\n B. b\n C. c\n D. d\n E. e\nAnswer:', 'double spaces kept');
  });

  it('MMLU: the question stripped, integer answers', () => {
    const mmlu = doc('mmlu', { question: ' What is 2+2? ', subject: 'elementary_mathematics', choices: ['3', '4', '5', '6'], answer: 1 });
    assert.equal(clozeOf(mmlu).query, 'Question: What is 2+2?\nAnswer:');
    assert.equal(mmlu.letteredShot, 'Question: What is 2+2?\n A. 3\n B. 4\n C. 5\n D. 6\nAnswer: B');
  });

  it('HellaSwag: OLMES\'s cleanup and layout, no Question/Answer wrapper in the cloze form', () => {
    assert.equal(hellaswagClean('Put it in the home refrigerator. [title] Leave the water'), 'Put it in the home refrigerator. Leave the water');
    assert.equal(hellaswagClean('Stir it [title] Wait'), 'Stir it. Wait');
    assert.equal(hellaswagClean('[step] Water changes state'), ' Water changes state', 'stripped before the tag goes: the space stays');
    assert.equal(hellaswagClean('a   b'), 'a  b', 'one pass of double-space halving');
    const row = { ind: 12, activity_label: 'Finance and Business', ctx_a: 'How to apply for a license. Call your local courthouse.', ctx_b: '', endings: ['[step] Ask them.', 'Go home.', 'Sleep.', 'Run [title] Fast'], label: '0' };
    const hs = doc('hellaswag', row);
    assert.equal(clozeOf(hs).query, 'Finance and Business: How to apply for a license. Call your local courthouse.');
    assert.deepEqual(clozeOf(hs).continuations, ['  Ask them.', ' Go home.', ' Sleep.', ' Run. Fast']);
    // The lettered form is built first and cleaned whole: " A. [step] Ask them." loses the tag, then its double space.
    assert.equal(hs.lettered, 'Finance and Business: How to apply for a license. Call your local courthouse. \nChoose the best continuation:\n A. Ask them.\n B. Go home.\n C. Sleep.\n D. Run. Fast\nAnswer:');
    assert.equal(hs.clozeShot, 'Finance and Business: How to apply for a license. Call your local courthouse.  Ask them.');
    const capitalized = doc('hellaswag', { ...row, ctx_a: 'A man sits.', ctx_b: 'then HE stands' });
    assert.equal(clozeOf(capitalized).query, 'Finance and Business: A man sits. Then he stands', 'ctx_b as Python capitalize()');
  });

  it('WinoGrande: partial scoring, one context per option and the rest as the shared continuation', () => {
    const wg = doc('winogrande', { sentence: 'Sarah was a much better surgeon than Maria so _ always got the easier cases.', option1: 'Sarah', option2: 'Maria', answer: '2' });
    assert.equal(wg.gold, 1);
    assert.deepEqual(wg.cloze, { contexts: ['Sarah was a much better surgeon than Maria so Sarah', 'Sarah was a much better surgeon than Maria so Maria'], continuation: ' always got the easier cases.' });
    assert.equal(wg.lettered, 'Fill in the blank: Sarah was a much better surgeon than Maria so ___ always got the easier cases.\n A. Sarah\n B. Maria\nAnswer:');
    assert.equal(wg.clozeShot, 'Sarah was a much better surgeon than Maria so Maria always got the easier cases.');
  });

  it('schema errors name the file, row and field', () => {
    assert.throws(() => doc('arc', { id: 'a', question: 'q', choices: { text: ['x', 'y'] }, answerKey: 'C' }, 2), (e: Error) => e instanceof FormatError && /rows\.jsonl: row 3: "answerKey" gives answer 2, not one of the 2 choices/.test(e.message));
    assert.throws(() => doc('boolq', { idx: 1, question: 'q', passage: 'p', label: 2 }), /row 1: "label" must be 0 or 1, got 2/);
    assert.throws(() => doc('winogrande', { sentence: 'no blank', option1: 'a', option2: 'b', answer: '1' }), /"sentence" has no "_" to fill in/);
    assert.throws(() => doc('hellaswag', { ind: 1, activity_label: 'x', ctx_a: 'a', ctx_b: 'b', endings: 'abc', label: '0' }), /"endings" must be a list of 4 to 26 strings, got "abc"/);
    assert.throws(() => doc('arc', { id: 'a', question: 'q', answerKey: 'A' }), /"choices\.text" is missing/);
  });
});

describe('tasks over Hugging Face Parquet files', () => {
  const dir = tempDir('olmoe-eval-parquet-');
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('an ARC task from Parquet rows: 5-shot cloze prompt exactly, shots from their own file', async () => {
    const rows = (ids: string[], offset: number) => [
      { name: 'id', data: ids, type: 'STRING' as const },
      { name: 'question', data: ids.map((id) => `Question ${id}?`), type: 'STRING' as const },
      { name: 'choices', data: ids.map((_, i) => ({ text: [`a${i + offset}`, `b${i + offset}`, `c${i + offset}`], label: ['A', 'B', 'C'] })) },
      { name: 'answerKey', data: ids.map((_, i) => 'ABC'[(i + offset) % 3]!), type: 'STRING' as const },
    ];
    writeFileSync(join(dir, 'test-00000-of-00001.parquet'), new Uint8Array(parquetWriteBuffer({ columnData: rows(['t1', 't2', 't3'], 0) })));
    writeFileSync(join(dir, 'train-00000-of-00001.parquet'), new Uint8Array(parquetWriteBuffer({ columnData: rows(['s1', 's2', 's3', 's4', 's5', 's6'], 1) })));
    writeFileSync(join(dir, 'arc.json'), JSON.stringify({ name: 'arc_challenge', format: 'arc', documents: 'test-00000-of-00001.parquet', fewshot: 'train-00000-of-00001.parquet', shots: 5, normalizations: ['pmi', 'per_char', 'none'] }));
    const task = await readTask(join(dir, 'arc.json'));
    assert.equal(task.documents.length, 3);
    assert.equal(task.fewshot.length, 5);
    const [first] = taskInstances(task, 'cf');
    const shots = ['s1', 's2', 's3', 's4', 's5'].map((id, i) => `Question: Question ${id}?\nAnswer: ${['a', 'b', 'c'][(i + 1) % 3]}${i + 1}\n\n`).join('');
    assert.equal(first!.context, `${shots}Question: Question t1?\nAnswer:`);
    assert.deepEqual(first!.choices, [' a0', ' b0', ' c0']);
    assert.equal(first!.gold, 0);
    const [, second] = taskInstances(task, 'mcf');
    assert.ok(second!.context.endsWith('Question: Question t2?\n A. a1\n B. b1\n C. c1\nAnswer:'));
    assert.ok(second!.context.startsWith('Question: Question s1?\n A. a1\n B. b1\n C. c1\nAnswer: B\n\n'));
    assert.deepEqual(second!.choices, [' A', ' B', ' C']);
  });

  it('WinoGrande instances carry one context per option', async () => {
    const sentences = ['Tom lent Bob money because _ was rich.', 'The cup fell off the table because _ was slippery.'];
    writeFileSync(join(dir, 'wg.jsonl'), sentences.map((sentence, i) => JSON.stringify({ sentence, option1: i ? 'cup' : 'Tom', option2: i ? 'table' : 'Bob', answer: '1' })).join('\n'));
    writeFileSync(join(dir, 'wg.json'), JSON.stringify({ name: 'winogrande', format: 'winogrande', documents: 'wg.jsonl', fewshot: 'wg.jsonl', shots: 1, normalizations: ['none'] }));
    const [, second] = taskInstances(await readTask(join(dir, 'wg.json')), 'cf');
    assert.deepEqual(second!.contexts, ['Tom lent Bob money because Tom was rich.\n\nThe cup fell off the table because cup', 'Tom lent Bob money because Tom was rich.\n\nThe cup fell off the table because table']);
    assert.deepEqual(second!.choices, [' was slippery.', ' was slippery.']);
  });

  it('a file that is not Parquet, or the wrong schema, is named', async () => {
    writeFileSync(join(dir, 'bad.parquet'), 'not parquet at all');
    await assert.rejects(readTask(writeSpec('bad', 'bad.parquet', 'arc')), (e: Error) => e instanceof FormatError && /bad\.parquet: cannot read as Parquet/.test(e.message));
    writeFileSync(join(dir, 'piqa.parquet'), new Uint8Array(parquetWriteBuffer({ columnData: [{ name: 'goal', data: ['g'], type: 'STRING' }, { name: 'label', data: [0], type: 'INT32' }] })));
    await assert.rejects(readTask(writeSpec('piqa', 'piqa.parquet', 'piqa')), /piqa\.parquet: row 1: "sol1" is missing/);
    await assert.rejects(readTask(writeSpec('fmt', 'piqa.parquet', 'nope')), /"format" "nope" is not one of generic, arc/);
  });

  it('documents from hf://datasets/ORG/NAME@REV/PATH download once into the HF cache layout (a local hub in the test)', async () => {
    const parquet = new Uint8Array(parquetWriteBuffer({ columnData: [
      { name: 'goal', data: ['Open a jar', 'Boil water'], type: 'STRING' }, { name: 'sol1', data: ['Twist the lid.', 'Use a kettle.'], type: 'STRING' },
      { name: 'sol2', data: ['Freeze it.', 'Use a fridge.'], type: 'STRING' }, { name: 'label', data: [0, 0], type: 'INT32' },
    ] }));
    const commit = 'c'.repeat(40);
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.url !== `/datasets/org/piqa/resolve/${commit}/data/validation-00000-of-00001.parquet`) return void res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end();
      res.writeHead(200, { 'X-Repo-Commit': commit, ETag: '"0123456789abcdef0123456789abcdef01234567"', 'Content-Length': parquet.length });
      res.end(req.method === 'HEAD' ? undefined : parquet);
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const cacheDir = join(dir, 'hf-cache');
      const spec = join(dir, 'piqa-hub.json');
      writeFileSync(spec, JSON.stringify({ name: 'piqa', format: 'piqa', documents: `hf://datasets/org/piqa@${commit}/data/validation-00000-of-00001.parquet` }));
      const hub = { cacheDir, endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
      const task = await readTask(spec, { hub });
      assert.equal(task.documents.length, 2);
      assert.equal((task.documents[1]!.cloze as { query: string }).query, 'Goal: Boil water\nAnswer:');
      const cached = join(cacheDir, 'datasets--org--piqa', 'snapshots', commit, 'data', 'validation-00000-of-00001.parquet');
      assert.deepEqual(new Uint8Array(readFileSync(cached)), parquet);
      const requests = seen.length;
      await readTask(spec, { hub }); // a commit is immutable: the cached copy needs no request
      assert.equal(seen.length, requests);
      writeFileSync(spec, JSON.stringify({ name: 'piqa', format: 'piqa', documents: 'hf://datasets/org/piqa' }));
      await assert.rejects(readTask(spec, { hub }), /is not hf:\/\/datasets\/ORG\/NAME\[@REVISION\]\/PATH/);
    } finally {
      server.closeAllConnections();
      await new Promise((ok) => server.close(ok));
    }
  });

  function writeSpec(name: string, documents: string, format: string): string {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, JSON.stringify({ name, format, documents }));
    return path;
  }
});

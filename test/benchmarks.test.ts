/**
 * The offline benchmarks (benchmarks/, built by scripts/build-benchmarks.mjs): every committed task loads with
 * readTask and has the items, chance and formulations its manifest and the README state; the rows obey the
 * builder's laws (distinct choices, gold positions uniform, sentiment balanced, few-shot examples disjoint from the
 * documents); the quiz-pattern and item helpers give hand-worked answers; rebuilding from the cached sources gives
 * the committed bytes. Also the harness's generative formulation ('gen'): its prompt, and exact match against an
 * independent greedy generation.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { FormatError } from '../src/core/errors.js';
import { generateText } from '../src/generate/generate.js';
import { runTask } from '../src/eval/run.js';
import { readSuite } from '../src/eval/suite.js';
import { generationInstances, readTask, taskInstances } from '../src/eval/task.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { announceSkip, backendCases } from './backends.js';
import { repoRoot, tempDir, tinyModelDir } from './helpers.js';

const benchmarks = join(repoRoot, 'benchmarks');
interface ManifestTask { name: string; items: number; chance: number; choices: number; formulations: string[]; format: string }
const manifest = JSON.parse(readFileSync(join(benchmarks, 'manifest.json'), 'utf8')) as { shots: number; tasks: ManifestTask[] };
const jsonlRows = (file: string) => readFileSync(join(benchmarks, file), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);

describe('committed benchmark tasks', () => {
  it('the suite names every task of the manifest, each loads with its stated items, shots, formulations and chance', async () => {
    const suite = await readSuite(join(benchmarks, 'offline.json'));
    assert.deepEqual(suite.tasks.map((t) => t.name), manifest.tasks.map((t) => t.name));
    for (const [i, task] of suite.tasks.entries()) {
      const stated = manifest.tasks[i]!;
      assert.equal(task.documents.length, stated.items, task.name);
      assert.ok(stated.items >= 200, `${task.name}: hundreds of items at least`);
      assert.equal(task.fewshot.length, manifest.shots, task.name);
      assert.deepEqual(task.formulations, stated.formulations, task.name);
      const chance = task.documents.reduce((sum, doc) => sum + 1 / doc.choiceCount, 0) / task.documents.length;
      assert.ok(Math.abs(chance - stated.chance) < 1e-6, `${task.name}: chance ${chance} vs ${stated.chance}`);
      const shotIds = new Set(jsonlRows(`${task.name}-shots.jsonl`).map((row) => JSON.stringify(row)));
      assert.ok(jsonlRows(`${task.name}.jsonl`).every((row) => !shotIds.has(JSON.stringify(row))), `${task.name}: a few-shot example is also a document`);
    }
  });

  it('choices are distinct and the gold position is uniform (each within 5 standard deviations of n/k)', () => {
    for (const task of manifest.tasks.filter((t) => t.format === 'generic' && t.name !== 'sentiment')) {
      const rows = jsonlRows(`${task.name}.jsonl`) as { choices: string[]; answer: number }[];
      const counts = new Array<number>(task.choices).fill(0);
      for (const row of rows) {
        assert.equal(new Set(row.choices).size, row.choices.length, `${task.name}: repeated choice in ${JSON.stringify(row)}`);
        counts[row.answer]!++;
      }
      const p = 1 / task.choices;
      const sd = Math.sqrt(rows.length * p * (1 - p));
      for (const count of counts) assert.ok(Math.abs(count - rows.length * p) < 5 * sd, `${task.name}: gold positions ${counts}`);
    }
  });

  it('sentiment has as many positive as negative words; the cloze sentences have one blank with text after it', () => {
    const sentiment = jsonlRows('sentiment.jsonl') as { answer: number }[];
    assert.equal(sentiment.filter((row) => row.answer === 0).length, sentiment.length / 2);
    for (const row of jsonlRows('wordnet-cloze.jsonl') as { sentence: string; option1: string; option2: string }[]) {
      assert.equal(row.sentence.split('_').length, 2, row.sentence);
      assert.match(row.sentence.slice(row.sentence.indexOf('_') + 1), /\w+\W+\w+\W+\w+/, row.sentence);
      assert.notEqual(row.option1, row.option2);
    }
  });

  it('the README table states each task\'s items and chance', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    for (const task of manifest.tasks) {
      const row = readme.split('\n').find((line) => line.startsWith(`| ${task.name} |`));
      assert.ok(row, `README has no row for ${task.name}`);
      const cells = row.split('|').map((cell) => cell.trim());
      assert.equal(cells[3], task.items.toLocaleString('en-US'), `${task.name} items`);
      assert.equal(cells[4], `${(100 * task.chance).toFixed(0)} %`, `${task.name} chance`);
    }
  });
});

describe('builder helpers (hand-worked)', async () => {
  const sources = await import(pathToFileURL(join(repoRoot, 'scripts/benchmarks/sources.mjs')).href);
  const tasks = await import(pathToFileURL(join(repoRoot, 'scripts/benchmarks/tasks.mjs')).href);

  it('quiz patterns: canonical answer is the first alternative with its optional parts; the RegExp accepts every form', () => {
    assert.equal(sources.canonical('{G{eorge} }Washington'), 'George Washington');
    assert.equal(sources.canonical('W[illia|]m [I|1|the Conqueror]'), 'William I');
    assert.equal(sources.canonical('Alabama|Ala|AL'), 'Alabama');
    assert.equal(sources.canonical('7{(integers)}', (o: string) => o.startsWith('(')), '7');
    const washington = sources.patternRegExp('{G{eorge} }Washington');
    for (const form of ['Washington', 'G Washington', 'george washington']) assert.ok(washington.test(form), form);
    for (const form of ['George', 'Washington DC', 'GWashington']) assert.ok(!washington.test(form), form);
    assert.ok(sources.patternRegExp('W[illia|]m [I|1|the Conqueror]').test('Wm the Conqueror'));
    assert.deepEqual(sources.quizRecords('a:\\\nb:c\n\nd:e\n'), [['a', 'b', 'c'], ['d', 'e']]);
  });

  it('WordNet glosses split into a definition and quoted examples', () => {
    assert.deepEqual(sources.splitGloss('a tangible and visible entity; an entity that can cast a shadow; "it was full of rackets, balls and other objects"'), {
      definition: 'a tangible and visible entity; an entity that can cast a shadow',
      examples: ['it was full of rackets, balls and other objects'],
    });
  });

  it('capitals match across spellings of the two sources, and only then', () => {
    assert.ok(tasks.sameCapital('Porto-Novo', 'Porto-Novo (official capital), Cotonou (seat of government)'));
    assert.ok(tasks.sameCapital('Brasília', 'Brasilia'));
    assert.ok(tasks.sameCapital('Guatemala City', 'Guatemala'));
    assert.ok(tasks.sameCapital("Saint John's", "St. John's"));
    assert.ok(!tasks.sameCapital('Gitega', 'Bujumbura'));
    assert.ok(!tasks.sameCapital('Naypyidaw', 'Rangoon'));
  });

  it('a cloze blank is the single whole-word occurrence with three words after it', () => {
    assert.deepEqual(tasks.blankOut('Dogs bark at the mailman', 'dog'), undefined, '"Dogs" is not the word "dog"');
    assert.deepEqual(tasks.blankOut('Dogs bark at the mailman', 'dogs'), { sentence: '_ bark at the mailman', written: 'Dogs' });
    assert.deepEqual(tasks.blankOut('The dog barks at the mailman', 'dog'), { sentence: 'The _ barks at the mailman', written: 'dog' });
    assert.deepEqual(tasks.blankOut('Dog eats dog world here', 'dog'), undefined, 'two occurrences');
    assert.deepEqual(tasks.blankOut('he walked the dog', 'dog'), undefined, 'nothing after it');
  });

  it('mulberry32 gives floats in [0, 1) that depend on the seed only', () => {
    const a = tasks.mulberry32(1234);
    const b = tasks.mulberry32(1234);
    const values = Array.from({ length: 1000 }, () => a() as number);
    assert.deepEqual(values.slice(0, 5), Array.from({ length: 5 }, () => b() as number));
    assert.ok(values.every((v) => v >= 0 && v < 1));
    assert.ok(Math.abs(values.reduce((s, v) => s + v, 0) / values.length - 0.5) < 0.05);
    assert.notEqual(tasks.mulberry32(1235)(), values[0]);
  });
});

describe('rebuilding the benchmarks', () => {
  const cache = join(repoRoot, '.olmoe', 'benchmark-sources');
  const skip = existsSync(cache) ? false : `no cached sources at ${cache} (node scripts/build-benchmarks.mjs fetches them)`;
  it('gives the committed bytes (same sources, same recorded exclusions)', { skip: announceSkip(skip) }, () => {
    const out = tempDir('olmoe-benchmarks-');
    const result = spawnSync(process.execPath, [join(repoRoot, 'scripts/build-benchmarks.mjs'), '--offline', '--cache', cache, '--out', out, '--disjointness', join(benchmarks, 'disjointness.json')], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(result.status, 0, result.stderr);
    const files = (dir: string) => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name).slice(dir.length + 1)).sort();
    assert.deepEqual(files(out), files(benchmarks).filter((f) => f !== 'disjointness.json'));
    for (const file of files(out)) assert.ok(readFileSync(join(out, file)).equals(readFileSync(join(benchmarks, file))), `${file} differs`);
    rmSync(out, { recursive: true, force: true });
  });
});

describe("the generative formulation ('gen')", () => {
  const dir = tempDir('olmoe-gen-task-');
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, spec: Record<string, unknown>, rows: unknown[], shots: unknown[] = []) => {
    writeFileSync(join(dir, `${name}.jsonl`), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    writeFileSync(join(dir, `${name}-shots.jsonl`), (shots.length ? shots : rows).map((r) => JSON.stringify(r)).join('\n') + '\n');
    writeFileSync(join(dir, `${name}.json`), JSON.stringify({ name, documents: `${name}.jsonl`, fewshot: `${name}-shots.jsonl`, ...spec }));
    return join(dir, `${name}.json`);
  };

  it('asks the cloze prompt after cloze shots; the gold is the answer text', async () => {
    const task = await readTask(write('prompt', { shots: 1, formulations: ['gen'] }, [{ question: 'What is the capital of Peru?', choices: ['Quito', 'Lima'], answer: 1 }], [{ question: 'What is the capital of Japan?', choices: ['Tokyo', 'Seoul'], answer: 0 }]));
    assert.deepEqual(generationInstances(task), [{ id: '0', context: 'Question: What is the capital of Japan?\nAnswer: Tokyo\n\nQuestion: What is the capital of Peru?\nAnswer:', gold: 'Lima' }]);
    assert.equal(taskInstances(task, 'cf')[0]!.context, generationInstances(task)[0]!.context);
  });

  it('is refused for partial-scoring formats', async () => {
    const path = write('wino', { format: 'winogrande', formulations: ['gen'] }, [{ sentence: 'The _ sat on the mat today.', option1: 'cat', option2: 'idea', answer: '1' }]);
    await assert.rejects(readTask(path), (e: Error) => e instanceof FormatError && /"gen" needs a question to answer/.test(e.message));
  });

  it('scores exact match against the greedy answer up to the first newline (1 of 2 here, by construction)', async () => {
    const lm = await loadPretrained(tinyModelDir, { backend: backendCases[0]!.create() });
    const prompt = 'Question: What is two and two?\nAnswer:';
    const greedy = await generateText(lm, lm.tokenizer.encode(prompt, { addSpecialTokens: false }), { maxNewTokens: 32, temperature: 0 });
    const answer = greedy.text.split('\n')[0]!.trim();
    const rows = [
      { id: 'hit', question: 'What is two and two?', choices: [answer, `${answer} not`], answer: 0 },
      { id: 'miss', question: 'What is two and two?', choices: [`${answer} not`, answer], answer: 0 },
    ];
    const result = await runTask(lm, await readTask(write('em', { formulations: ['gen'] }, rows)), { prefixToken: 556 });
    const [gen] = result.formulations;
    assert.equal(gen!.primary, 'exact_match');
    assert.deepEqual(gen!.accuracy.exact_match, { value: 0.5, stderr: 0.5, n: 2 });
    assert.equal(gen!.chance, 0);
    assert.equal(result.best.formulation, 'gen');
  });
});

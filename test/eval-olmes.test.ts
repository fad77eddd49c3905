/**
 * The OLMES presets over a local hub serving small Parquet files in each dataset's own schema (column names and
 * types as on the Hugging Face hub), at the paths and commits the presets name: for each of the nine tasks the cloze
 * and lettered prompts of one instance, with shots picked out of the train split by id and fingerprint, match
 * prompts written by hand from OLMES's templates (docs/eval/olmes-formats.md §2) byte for byte, with the
 * continuations and the cloze normalization OLMES scores by; ARC-Easy's 1000 instances are the ones CPython's
 * Random(1234).sample picks; the ten-task suite averages each task's better formulation; bad files and missing shots
 * are errors naming file, column or shot; `olmoe eval --tasks …` and `--list-tasks` run end to end.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { OLMES_TASKS, olmesTaskSpec, readPreset, MMLU_REVISION } from '../src/eval/presets.js';
import { readEvalReport } from '../src/eval/plot.js';
import { combineSuite, type SuiteResult } from '../src/eval/suite.js';
import type { TaskResult } from '../src/eval/run.js';
import { taskFromSpec, taskInstances, type Task } from '../src/eval/task.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';
import { localHub } from './hub-helpers.js';

// ---- Parquet in the hub's schemas (strings optional UTF8, Sequence(string) as a LIST, ClassLabel as INT64) ----
type Element = Record<string, unknown>;
const str = (name: string): Element[] => [{ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' }];
const int = (name: string, type: 'INT32' | 'INT64'): Element[] => [{ name, type, repetition_type: 'OPTIONAL' }];
const strList = (name: string): Element[] => [
  { name, repetition_type: 'OPTIONAL', num_children: 1, converted_type: 'LIST' },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
];
const choicesStruct = (first: 'text' | 'label'): Element[] => [
  { name: 'choices', repetition_type: 'OPTIONAL', num_children: 2 },
  ...strList(first), ...strList(first === 'text' ? 'label' : 'text'),
];
type Column = { schema: Element[]; name: string; kind?: 'bigint' };

/** Dataset schemas, column order as the hub's Parquet files have them. */
const SCHEMA = {
  arc: [{ name: 'id', schema: str('id') }, { name: 'question', schema: str('question') }, { name: 'choices', schema: choicesStruct('text') }, { name: 'answerKey', schema: str('answerKey') }],
  boolq: [{ name: 'question', schema: str('question') }, { name: 'passage', schema: str('passage') }, { name: 'idx', schema: int('idx', 'INT32') }, { name: 'label', schema: int('label', 'INT64'), kind: 'bigint' }],
  csqa: [{ name: 'id', schema: str('id') }, { name: 'question', schema: str('question') }, { name: 'question_concept', schema: str('question_concept') }, { name: 'choices', schema: choicesStruct('label') }, { name: 'answerKey', schema: str('answerKey') }],
  hellaswag: [
    { name: 'ind', schema: int('ind', 'INT32') }, ...['activity_label', 'ctx_a', 'ctx_b', 'ctx'].map((name) => ({ name, schema: str(name) })),
    { name: 'endings', schema: strList('endings') }, ...['source_id', 'split', 'split_type', 'label'].map((name) => ({ name, schema: str(name) })),
  ],
  openbookqa: [{ name: 'id', schema: str('id') }, { name: 'question_stem', schema: str('question_stem') }, { name: 'choices', schema: choicesStruct('text') }, { name: 'answerKey', schema: str('answerKey') }],
  piqa: [{ name: 'goal', schema: str('goal') }, { name: 'sol1', schema: str('sol1') }, { name: 'sol2', schema: str('sol2') }, { name: 'label', schema: int('label', 'INT64'), kind: 'bigint' }],
  siqa: ['context', 'question', 'answerA', 'answerB', 'answerC', 'label'].map((name) => ({ name, schema: str(name) })),
  winogrande: ['sentence', 'option1', 'option2', 'answer'].map((name) => ({ name, schema: str(name) })),
  mmlu: [{ name: 'question', schema: str('question') }, { name: 'subject', schema: str('subject') }, { name: 'choices', schema: strList('choices') }, { name: 'answer', schema: int('answer', 'INT64'), kind: 'bigint' }],
} satisfies Record<string, Column[]>;

function parquet(columns: readonly Column[], rows: readonly Record<string, unknown>[]): Uint8Array {
  const value = (column: Column, row: Record<string, unknown>) => (column.kind === 'bigint' ? BigInt(row[column.name] as number) : row[column.name]);
  return new Uint8Array(parquetWriteBuffer({
    columnData: columns.map((c) => ({ name: c.name, data: rows.map((row) => value(c, row)) })),
    schema: [{ name: 'schema', num_children: columns.length }, ...columns.flatMap((c) => c.schema)] as never,
  }));
}

const arcRow = (id: string, question: string, text: string[], answerKey: string, label = [...'ABCDE'].slice(0, text.length)) => ({ id, question, choices: { text, label }, answerKey });
const obqaRow = (id: string, question_stem: string, text: string[], answerKey: string) => ({ id, question_stem, choices: { text, label: ['A', 'B', 'C', 'D'] }, answerKey });
const csqaRow = (id: string, question: string, text: string[], answerKey: string) => ({ id, question, question_concept: 'x', choices: { label: ['A', 'B', 'C', 'D', 'E'], text }, answerKey });
const hsRow = (ind: number, activity_label: string, ctx_a: string, ctx_b: string, endings: string[], label: string, source_id = 'activitynet~v_x') =>
  ({ ind, activity_label, ctx_a, ctx_b, ctx: `${ctx_a} ${ctx_b}`, endings, source_id, split: 'train', split_type: 'indomain', label });

/** A shot reference as a preset writes it: the fingerprint of the hand-written CF and MCF shot text. */
const ref = (id: string | number | undefined, cf: string, mcf: string) => ({ ...(id === undefined ? {} : { id }), sha256: createHash('sha256').update(`${cf}\n\n${mcf}`).digest('hex').slice(0, 16) });

interface Case {
  repo: string; revision: string; documents: string; train: string; schema: Column[];
  docs: Record<string, unknown>[]; trainRows: Record<string, unknown>[];
  /** Hand-written shot texts (CF, MCF), in the order the references give them. */
  shots: { id?: string | number; cf: string; mcf: string }[];
  /** The instance checked, its prompts and continuations. */
  instance: number; cf: string; mcf: string; continuations: string[]; gold: number;
  /** WinoGrande: the cloze contexts (after the shots) and their shared continuation. */
  partial?: { contexts: string[]; continuation: string };
  normalizations: string[];
}

const CASES: Record<string, Case> = {
  arc_challenge: {
    repo: 'allenai/ai2_arc', revision: '210d026faf9955653af8916fad021475a3f00453', documents: 'ARC-Challenge/test-00000-of-00001.parquet', train: 'ARC-Challenge/train-00000-of-00001.parquet', schema: SCHEMA.arc,
    trainRows: [
      arcRow('tr1', 'Which gas do plants take in?', ['oxygen', 'carbon dioxide', 'helium', 'neon'], 'B'),
      arcRow('tr2', 'What melts ice fastest?', ['salt', 'sand', 'stones'], '1', ['1', '2', '3']),
      arcRow('tr3', 'Not a shot?', ['a', 'b'], 'A'),
    ],
    shots: [
      { id: 'tr2', cf: 'Question: What melts ice fastest?\nAnswer: salt', mcf: 'Question: What melts ice fastest?\n A. salt\n B. sand\n C. stones\nAnswer: A' },
      { id: 'tr1', cf: 'Question: Which gas do plants take in?\nAnswer: carbon dioxide', mcf: 'Question: Which gas do plants take in?\n A. oxygen\n B. carbon dioxide\n C. helium\n D. neon\nAnswer: B' },
    ],
    docs: [arcRow('te0', 'Zero?', ['a', 'b', 'c'], 'C'), arcRow('te1', 'Where does the Sun rise?', ['north', 'east', 'south', 'west', 'up'], 'B')],
    instance: 1, gold: 1,
    cf: 'Question: Where does the Sun rise?\nAnswer:', continuations: [' north', ' east', ' south', ' west', ' up'],
    mcf: 'Question: Where does the Sun rise?\n A. north\n B. east\n C. south\n D. west\n E. up\nAnswer:',
    normalizations: ['pmi', 'none', 'per_token', 'per_char'],
  },
  arc_easy: {
    repo: 'allenai/ai2_arc', revision: '210d026faf9955653af8916fad021475a3f00453', documents: 'ARC-Easy/test-00000-of-00001.parquet', train: 'ARC-Easy/train-00000-of-00001.parquet', schema: SCHEMA.arc,
    trainRows: [arcRow('e1', 'What do bees make?', ['honey', 'milk'], 'A'), arcRow('e2', 'What is frozen water?', ['steam', 'ice', 'fog', 'dew'], '2', ['1', '2', '3', '4'])],
    shots: [
      { id: 'e1', cf: 'Question: What do bees make?\nAnswer: honey', mcf: 'Question: What do bees make?\n A. honey\n B. milk\nAnswer: A' },
      { id: 'e2', cf: 'Question: What is frozen water?\nAnswer: ice', mcf: 'Question: What is frozen water?\n A. steam\n B. ice\n C. fog\n D. dew\nAnswer: B' },
    ],
    // 2376 rows as in ARC-Easy's test split: OLMES evaluates the 1000 that Random(1234).sample draws, the first of them row 1805.
    docs: Array.from({ length: 2376 }, (_, i) => arcRow(`q${i}`, `Is ${i} even?`, ['yes', 'no'], i % 2 === 0 ? 'A' : 'B')),
    instance: 0, gold: 1,
    cf: 'Question: Is 1805 even?\nAnswer:', continuations: [' yes', ' no'], mcf: 'Question: Is 1805 even?\n A. yes\n B. no\nAnswer:',
    normalizations: ['per_char', 'none', 'per_token', 'pmi'],
  },
  boolq: {
    repo: 'aps/super_glue', revision: '3de24cf8022e94f4ee4b9d55a6f539891524d646', documents: 'boolq/validation-00000-of-00001.parquet', train: 'boolq/train-00000-of-00001.parquet', schema: SCHEMA.boolq,
    trainRows: [
      { question: 'is the sky blue', passage: 'Sky -- The sky looks blue by day.', idx: 0, label: 1 },
      { question: 'can fish fly', passage: 'Fish -- Most fish swim.', idx: 1, label: 0 },
      { question: 'is this a shot', passage: 'No -- no.', idx: 2, label: 0 },
    ],
    shots: [
      { id: 1, cf: 'Fish -- Most fish swim.\nQuestion: can fish fly?\nAnswer: no', mcf: 'Fish -- Most fish swim.\nQuestion: can fish fly?\n A. yes\n B. no\nAnswer: B' },
      { id: 0, cf: 'Sky -- The sky looks blue by day.\nQuestion: is the sky blue?\nAnswer: yes', mcf: 'Sky -- The sky looks blue by day.\nQuestion: is the sky blue?\n A. yes\n B. no\nAnswer: A' },
    ],
    docs: [{ question: 'does ice float on water', passage: 'Ice -- Ice is less dense than water.', idx: 0, label: 1 }],
    instance: 0, gold: 0,
    cf: 'Ice -- Ice is less dense than water.\nQuestion: does ice float on water?\nAnswer:', continuations: [' yes', ' no'],
    mcf: 'Ice -- Ice is less dense than water.\nQuestion: does ice float on water?\n A. yes\n B. no\nAnswer:',
    normalizations: ['none', 'per_token', 'per_char'],
  },
  csqa: {
    repo: 'tau/commonsense_qa', revision: '94630fe30dad47192a8546eb75f094926d47e155', documents: 'data/validation-00000-of-00001.parquet', train: 'data/train-00000-of-00001.parquet', schema: SCHEMA.csqa,
    trainRows: [
      csqaRow('c1', 'Where do you keep milk?', ['fridge', 'oven', 'sink', 'car', 'roof'], 'A'),
      csqaRow('c2', 'What goes on feet?  Pick one.', ['hat', 'glove', 'scarf', 'belt', 'shoe'], 'E'),
    ],
    shots: [
      { id: 'c1', cf: 'Question: Where do you keep milk?\nAnswer: fridge', mcf: 'Question: Where do you keep milk?\n A. fridge\n B. oven\n C. sink\n D. car\n E. roof\nAnswer: A' },
      { id: 'c2', cf: 'Question: What goes on feet?  Pick one.\nAnswer: shoe', mcf: 'Question: What goes on feet?  Pick one.\n A. hat\n B. glove\n C. scarf\n D. belt\n E. shoe\nAnswer: E' },
    ],
    docs: [csqaRow('v1', 'Where can you buy bread?', ['garage', 'lake', 'bakery', 'cloud', 'tree'], 'C')],
    instance: 0, gold: 2,
    cf: 'Question: Where can you buy bread?\nAnswer:', continuations: [' garage', ' lake', ' bakery', ' cloud', ' tree'],
    mcf: 'Question: Where can you buy bread?\n A. garage\n B. lake\n C. bakery\n D. cloud\n E. tree\nAnswer:',
    normalizations: ['pmi', 'none', 'per_token', 'per_char'],
  },
  hellaswag: {
    repo: 'Rowan/hellaswag', revision: '218ec52e09a7e7462a5400043bb9a69a41d06b76', documents: 'data/validation-00000-of-00001.parquet', train: 'data/train-00000-of-00001.parquet', schema: SCHEMA.hellaswag,
    // Two train rows share ind 38, as two of OLMES's curated ones do: the fingerprint tells them apart.
    trainRows: [
      hsRow(38, 'Painting', 'A man holds a brush.', 'he', ['paints the wall.', 'eats the brush.', 'flies away.', 'sings loudly.'], '0'),
      hsRow(38, 'Home and Garden', '[header] How to water plants [title] Fill a can. [step] Use cool water.', '', ['[step] Pour it slowly. [substeps] Wait.', 'Throw the can [title] Run.', 'Sleep.', 'Eat.'], '0', 'wikihow~1'),
      hsRow(5, 'Other', 'Not a shot.', 'it', ['a', 'b', 'c', 'd'], '1'),
    ],
    shots: [
      { id: 38,
        cf: 'Home and Garden: How to water plants. Fill a can. Use cool water.  Pour it slowly. Wait.',
        mcf: 'Home and Garden: How to water plants. Fill a can. Use cool water. \nChoose the best continuation:\n A. Pour it slowly. Wait.\n B. Throw the can. Run.\n C. Sleep.\n D. Eat.\nAnswer: A' },
      { id: 38,
        cf: 'Painting: A man holds a brush. He paints the wall.',
        mcf: 'Painting: A man holds a brush. He\nChoose the best continuation:\n A. paints the wall.\n B. eats the brush.\n C. flies away.\n D. sings loudly.\nAnswer: A' },
    ],
    // ind repeats in the validation split too; documents are told apart by position.
    docs: [
      hsRow(7, 'Cooking', 'She cracks an egg.', 'SHE whisks', ['it.', 'the pan.', 'fast.', 'slowly.'], '2'),
      hsRow(7, 'Running', 'A woman ties her shoes. [title] She stretches.', 'then she', ['[step] jogs away.', 'sits down.', 'runs a marathon [title] fast.', 'naps.'], '0'),
    ],
    instance: 1, gold: 0,
    cf: 'Running: A woman ties her shoes. She stretches. Then she', continuations: ['  jogs away.', ' sits down.', ' runs a marathon. fast.', ' naps.'],
    mcf: 'Running: A woman ties her shoes. She stretches. Then she\nChoose the best continuation:\n A. jogs away.\n B. sits down.\n C. runs a marathon. fast.\n D. naps.\nAnswer:',
    normalizations: ['per_char', 'none', 'per_token', 'pmi'],
  },
  openbookqa: {
    repo: 'allenai/openbookqa', revision: '388097ea7776314e93a529163e0fea805b8a6454', documents: 'main/test-00000-of-00001.parquet', train: 'main/train-00000-of-00001.parquet', schema: SCHEMA.openbookqa,
    trainRows: [obqaRow('7-1', 'The moon orbits', ['the Earth', 'a comet', 'the Sun only', 'nothing'], 'A'), obqaRow('8-2', 'Plants need', ['darkness', 'plastic', 'light', 'noise'], 'C')],
    shots: [
      { id: '7-1', cf: 'Question: The moon orbits\nAnswer: the Earth', mcf: 'Question: The moon orbits\n A. the Earth\n B. a comet\n C. the Sun only\n D. nothing\nAnswer: A' },
      { id: '8-2', cf: 'Question: Plants need\nAnswer: light', mcf: 'Question: Plants need\n A. darkness\n B. plastic\n C. light\n D. noise\nAnswer: C' },
    ],
    docs: [obqaRow('9-9', 'A magnet attracts', ['wood', 'iron', 'glass', 'paper'], 'B')],
    instance: 0, gold: 1,
    cf: 'Question: A magnet attracts\nAnswer:', continuations: [' wood', ' iron', ' glass', ' paper'],
    mcf: 'Question: A magnet attracts\n A. wood\n B. iron\n C. glass\n D. paper\nAnswer:',
    normalizations: ['pmi', 'none', 'per_token', 'per_char'],
  },
  piqa: {
    repo: 'ybisk/piqa', revision: '078a131412f46a38025a762322c174a8bae2610c', documents: 'plain_text/piqa-validation.parquet', train: 'plain_text/piqa-train.parquet', schema: SCHEMA.piqa,
    trainRows: [
      { goal: 'Open a jar', sol1: 'Twist the lid.', sol2: 'Paint the lid.', label: 0 },
      { goal: 'Not a shot', sol1: 'a', sol2: 'b', label: 1 },
      { goal: 'Dry wet hands', sol1: 'Use a spoon.', sol2: 'Use a towel.', label: 1 },
    ],
    shots: [
      { cf: 'Goal: Dry wet hands\nAnswer: Use a towel.', mcf: 'Goal: Dry wet hands\n A. Use a spoon.\n B. Use a towel.\nAnswer: B' },
      { cf: 'Goal: Open a jar\nAnswer: Twist the lid.', mcf: 'Goal: Open a jar\n A. Twist the lid.\n B. Paint the lid.\nAnswer: A' },
    ],
    docs: [{ goal: 'Cool hot soup', sol1: 'Blow on it.', sol2: 'Heat it more.', label: 0 }],
    instance: 0, gold: 0,
    cf: 'Goal: Cool hot soup\nAnswer:', continuations: [' Blow on it.', ' Heat it more.'], mcf: 'Goal: Cool hot soup\n A. Blow on it.\n B. Heat it more.\nAnswer:',
    normalizations: ['per_char', 'none', 'per_token', 'pmi'],
  },
  socialiqa: {
    repo: 'allenai/social_i_qa', revision: '6db3dcea20d5430c3dd74bf85fe9ca87268ea91b', documents: 'data/validation-00000-of-00001.parquet', train: 'data/train-00000-of-00001.parquet', schema: SCHEMA.siqa,
    trainRows: [
      { context: 'Kai lent Sam a pen.', question: 'How would Sam feel?', answerA: 'grateful', answerB: 'angry', answerC: 'sleepy', label: '1' },
      { context: 'Lee lost the keys.', question: 'What will Lee do next?', answerA: 'sing', answerB: 'sleep', answerC: 'look for them', label: '3' },
    ],
    shots: [
      { cf: 'Question: Kai lent Sam a pen. How would Sam feel?\nAnswer: grateful', mcf: 'Question: Kai lent Sam a pen. How would Sam feel?\n A. grateful\n B. angry\n C. sleepy\nAnswer: A' },
      { cf: 'Question: Lee lost the keys. What will Lee do next?\nAnswer: look for them', mcf: 'Question: Lee lost the keys. What will Lee do next?\n A. sing\n B. sleep\n C. look for them\nAnswer: C' },
    ],
    docs: [{ context: 'Ash won the race.', question: 'How does Ash feel?', answerA: 'sad', answerB: 'bored', answerC: 'proud', label: '3' }],
    instance: 0, gold: 2,
    cf: 'Question: Ash won the race. How does Ash feel?\nAnswer:', continuations: [' sad', ' bored', ' proud'],
    mcf: 'Question: Ash won the race. How does Ash feel?\n A. sad\n B. bored\n C. proud\nAnswer:',
    normalizations: ['per_char', 'none', 'per_token', 'pmi'],
  },
  winogrande: {
    repo: 'allenai/winogrande', revision: '01e74176c63542e6b0bcb004dcdea22d94fb67b5', documents: 'winogrande_xl/validation-00000-of-00001.parquet', train: 'winogrande_xl/train-00000-of-00001.parquet', schema: SCHEMA.winogrande,
    trainRows: [
      { sentence: 'The cup fell off the table because _ was tilted.', option1: 'the cup', option2: 'the table', answer: '2' },
      { sentence: 'Tom helped Ben because _ was strong.', option1: 'Tom', option2: 'Ben', answer: '1' },
    ],
    shots: [
      { cf: 'The cup fell off the table because the table was tilted.', mcf: 'Fill in the blank: The cup fell off the table because ___ was tilted.\n A. the cup\n B. the table\nAnswer: B' },
      { cf: 'Tom helped Ben because Tom was strong.', mcf: 'Fill in the blank: Tom helped Ben because ___ was strong.\n A. Tom\n B. Ben\nAnswer: A' },
    ],
    docs: [{ sentence: 'Anna gave Beth a gift because _ was kind.', option1: 'Anna', option2: 'Beth', answer: '1' }],
    instance: 0, gold: 0,
    cf: '', continuations: [' was kind.', ' was kind.'], partial: { contexts: ['Anna gave Beth a gift because Anna', 'Anna gave Beth a gift because Beth'], continuation: ' was kind.' },
    mcf: 'Fill in the blank: Anna gave Beth a gift because ___ was kind.\n A. Anna\n B. Beth\nAnswer:',
    normalizations: ['none', 'per_token', 'per_char'],
  },
};

// ---- A local hub: each case's files at its repository, commit and path (anything else is a 404) ----
const files = new Map<string, Uint8Array>();
const serve = (repo: string, revision: string, path: string, body: Uint8Array) => files.set(`/datasets/${repo}/resolve/${revision}/${path}`, body);
for (const c of Object.values(CASES)) {
  serve(c.repo, c.revision, c.documents, parquet(c.schema, c.docs));
  serve(c.repo, c.revision, c.train, parquet(c.schema, c.trainRows));
}

const dir = tempDir('olmoe-eval-olmes-');
const hubServer = localHub((path) => {
  const mmlu = new RegExp(`^/datasets/cais/mmlu/resolve/${MMLU_REVISION}/([a-z_]+)/(test|dev)-00000-of-00001\\.parquet$`).exec(path);
  const body = files.get(path) ?? (mmlu ? parquet(SCHEMA.mmlu, [{ question: `${mmlu[1]}?`, subject: mmlu[1], choices: ['w', 'x', 'y', 'z'], answer: 1 }]) : undefined);
  return body && { body, commit: path.split('/')[5]!, etag: `"${createHash('sha256').update(body).digest('hex')}"` };
});
after(() => rmSync(dir, { recursive: true, force: true }));

const hub = () => ({ hub: { endpoint: hubServer.endpoint, cacheDir: join(dir, 'cache') } });
const preset = (name: string) => OLMES_TASKS.find((t) => t.name === name)!;
/** A preset's task with the case's shot references in place of OLMES's (whose rows these files do not hold). */
async function caseTask(name: string, spec: Record<string, unknown> = {}, shots = 2): Promise<Task> {
  const c = CASES[name]!;
  const fewshotRows = c.shots.map((s) => ref(s.id, s.cf, s.mcf));
  return taskFromSpec({ ...olmesTaskSpec(preset(name)), fewshotRows, ...spec }, `preset ${name}`, { ...hub(), shots });
}

describe('OLMES presets: prompts over each dataset\'s schema', () => {
  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: shots from the train split, CF and MCF prompts, continuations, normalization`, async () => {
      const task = await caseTask(name);
      const cfShots = c.shots.map((s) => `${s.cf}\n\n`).join('');
      const mcfShots = c.shots.map((s) => `${s.mcf}\n\n`).join('');
      const cf = taskInstances(task, 'cf')[c.instance]!;
      if (c.partial) {
        assert.equal(cf.context, cfShots);
        assert.deepEqual(cf.contexts, c.partial.contexts.map((context) => cfShots + context));
        assert.deepEqual(cf.choices, [c.partial.continuation, c.partial.continuation]);
      } else {
        assert.equal(cf.context, cfShots + c.cf);
        assert.deepEqual(cf.choices, c.continuations);
      }
      assert.equal(cf.gold, c.gold);
      assert.equal(cf.unconditionedContext, 'Answer:');
      const mcf = taskInstances(task, 'mcf')[c.instance]!;
      assert.equal(mcf.context, mcfShots + c.mcf);
      assert.deepEqual(mcf.choices, [...'ABCDE'].slice(0, c.continuations.length).map((letter) => ` ${letter}`));
      assert.equal(mcf.gold, c.gold);
      assert.deepEqual(task.normalizations, c.normalizations);
      assert.deepEqual(task.formulations, ['cf', 'mcf']);
    });
  }

  it('HellaSwag: Python\'s capitalize lowers the rest of ctx_b; documents with the same ind are both kept', async () => {
    const task = await caseTask('hellaswag', {}, 0);
    assert.equal(task.documents.length, 2);
    assert.equal(taskInstances(task, 'cf')[0]!.context, 'Cooking: She cracks an egg. She whisks');
  });

  it('ARC-Easy: 1000 of its 2376 test rows, in the order CPython\'s Random(1234).sample draws them', async () => {
    const task = await caseTask('arc_easy');
    assert.equal(task.documents.length, 1000);
    // CPython 3.11: random.Random(1234).sample(range(2376), 1000)[:12] and [-3:]
    const first = [1805, 478, 30, 371, 143, 343, 403, 1452, 969, 71, 126, 64];
    assert.deepEqual(task.documents.slice(0, 12).map((d) => d.id), first.map((i) => `q${i}`));
    assert.deepEqual(task.documents.slice(-3).map((d) => d.id), ['q930', 'q1163', 'q735']);
  });

  it('the presets follow OLMES\'s rules: 1000 instances where a split has more than 1500, 5 shots each, pinned commits', () => {
    assert.deepEqual(OLMES_TASKS.map((t) => t.name), ['arc_challenge', 'arc_easy', 'boolq', 'csqa', 'hellaswag', 'openbookqa', 'piqa', 'socialiqa', 'winogrande']);
    for (const t of OLMES_TASKS) {
      assert.equal(t.limit, t.rows > 1500 ? 1000 : undefined, t.name);
      assert.equal(t.shots.length, 5, t.name);
      assert.equal(new Set(t.shots.map((s) => s.sha256)).size, 5, t.name);
      assert.match(t.revision, /^[0-9a-f]{40}$/, t.name);
      const c = CASES[t.name]!;
      assert.deepEqual([t.repo, t.revision, t.documents, t.train], [c.repo, c.revision, c.documents, c.train], t.name);
    }
  });
});

describe('the olmes suite', () => {
  it('all ten tasks: nine, and MMLU\'s 57 subjects as one member; scored by each task\'s better formulation', async () => {
    const found = await readPreset('olmes', { ...hub(), shots: 0 });
    const suite = found!.suite!;
    assert.equal(suite.combine, 'member');
    assert.deepEqual(suite.tasks.map((t) => t.name), OLMES_TASKS.map((t) => t.name));
    assert.equal(suite.suites!.length, 1);
    assert.equal(suite.suites![0]!.name, 'mmlu');
    assert.equal(suite.suites![0]!.tasks.length, 57);
    assert.equal(suite.tasks[1]!.documents.length, 1000, 'arc_easy keeps its limit inside the suite');
  });

  it('the number is the mean of the members\' better formulations (MMLU\'s the better of its two averages)', () => {
    const est = (value: number) => ({ value, stderr: 0.01, n: 100 });
    const task = (name: string, cf: number, mcf: number): TaskResult => ({
      task: name, version: 1, instances: 100, shots: 5,
      formulations: [
        { formulation: 'cf', accuracy: { pmi: est(cf), none: est(0) }, primary: 'pmi', bitsPerByte: est(1), chance: 0.25, promptHash: 'x', truncated: 0 },
        { formulation: 'mcf', accuracy: { none: est(mcf) }, primary: 'none', bitsPerByte: est(1), chance: 0.25, promptHash: 'y', truncated: 0 },
      ],
      best: cf >= mcf ? { formulation: 'cf', accuracy: est(cf) } : { formulation: 'mcf', accuracy: est(mcf) },
    });
    // MMLU: cf averages (0.4 + 0.6) / 2 = 0.5, mcf (0.7 + 0.1) / 2 = 0.4: cf's 0.5, although each subject's best averages 0.65.
    const mmlu = combineSuite('mmlu', 'formulation', [task('a', 0.4, 0.7), task('b', 0.6, 0.1)], []);
    assert.equal(mmlu.best.formulation, 'cf');
    assert.ok(Math.abs(mmlu.best.accuracy.value - 0.5) < 1e-12);
    const olmes = combineSuite('olmes', 'member', [task('arc', 0.3, 0.8), task('piqa', 0.6, 0.5)], [mmlu]);
    assert.deepEqual(olmes.members.map((m) => [m.name, m.formulation]), [['arc', 'mcf'], ['piqa', 'cf'], ['mmlu', 'cf']]);
    assert.ok(Math.abs(olmes.best.accuracy.value - (0.8 + 0.6 + 0.5) / 3) < 1e-12);
    assert.equal(olmes.best.formulation, 'per-member');
    // One formulation throughout, for comparison: cf (0.3 + 0.6 + 0.5) / 3, mcf (0.8 + 0.5 + 0.4) / 3.
    assert.deepEqual(olmes.average.map((a) => [a.formulation, a.accuracy.value.toFixed(6)]), [['cf', (1.4 / 3).toFixed(6)], ['mcf', (1.7 / 3).toFixed(6)]]);
  });
});

describe('OLMES presets: bad input', () => {
  const withFiles = async (name: string, replace: Record<string, Uint8Array>, run: () => Promise<unknown>) => {
    const c = CASES[name]!;
    const saved = new Map(files);
    for (const [which, body] of Object.entries(replace)) serve(c.repo, c.revision, which === 'train' ? c.train : c.documents, body);
    try {
      return await run();
    } finally {
      files.clear();
      for (const [k, v] of saved) files.set(k, v);
    }
  };
  const fresh = () => ({ hub: { endpoint: hubServer.endpoint, cacheDir: join(dir, `cache-${Math.random().toString(36).slice(2)}`) } });

  it('a documents file without a column the format reads: the file and the column', async () => {
    const schema = SCHEMA.piqa.filter((col) => col.name !== 'sol2');
    await withFiles('piqa', { documents: parquet(schema, CASES.piqa!.docs) }, async () => {
      await assert.rejects(taskFromSpec(olmesTaskSpec(preset('piqa')), 'preset piqa', { ...fresh(), shots: 0 }), /piqa-validation\.parquet: row 1: "sol2" is missing/);
    });
  });

  it('a column of the wrong type (SIQA\'s label as an integer): the file, row and column', async () => {
    const schema = SCHEMA.siqa.map((col) => (col.name === 'label' ? { name: 'label', schema: int('label', 'INT64'), kind: 'bigint' as const } : col));
    await withFiles('socialiqa', { documents: parquet(schema, [{ ...CASES.socialiqa!.docs[0], label: 3 }]) }, async () => {
      await assert.rejects(taskFromSpec(olmesTaskSpec(preset('socialiqa')), 'preset socialiqa', { ...fresh(), shots: 0 }), /validation-00000-of-00001\.parquet: row 1: "label" must be a string, got 3/);
    });
  });

  it('a shot whose id is not in the train split: the shot, its id and the file', async () => {
    // OLMES's own references against this train file, which holds none of OLMES's rows.
    await assert.rejects(taskFromSpec(olmesTaskSpec(preset('arc_challenge')), 'preset arc_challenge', hub()),
      /ARC-Challenge\/train-00000-of-00001\.parquet: few-shot example 1 \(id "Mercury_SC_415702", fingerprint d37e6c309cb1370e\): no row has id "Mercury_SC_415702"/);
  });

  it('a shot without an id found in no row, and a row with the id that renders otherwise: each named', async () => {
    await assert.rejects(taskFromSpec(olmesTaskSpec(preset('winogrande')), 'preset winogrande', hub()),
      /winogrande_xl\/train-00000-of-00001\.parquet: few-shot example 1 \(fingerprint 77703ef6237f52e4\) is none of its 2 rows/);
    const c = CASES.openbookqa!;
    const wrong = [{ id: '7-1', sha256: '0123456789abcdef' }];
    await assert.rejects(caseTask('openbookqa', { fewshotRows: wrong }), new RegExp(`main/train-00000-of-00001\\.parquet: few-shot example 1 \\(id "7-1", fingerprint 0123456789abcdef\\): the row with id "7-1" \\(row 1\\) renders otherwise \\(fingerprint ${ref('7-1', c.shots[0]!.cf, c.shots[0]!.mcf).sha256}\\)`));
  });

  it('an unreadable train row does not hide the shots; a train file with no readable row names its column', async () => {
    const odd = { goal: 'Odd', sol1: 'a', sol2: 'b', label: 7 }; // answer 7 of 2 choices
    await withFiles('piqa', { train: parquet(SCHEMA.piqa, [odd, ...CASES.piqa!.trainRows]) }, async () => {
      const task = await taskFromSpec({ ...olmesTaskSpec(preset('piqa')), fewshotRows: CASES.piqa!.shots.map((x) => ref(x.id, x.cf, x.mcf)) }, 'preset piqa', { ...fresh(), shots: 2 });
      assert.deepEqual(task.fewshot.map((d) => d.clozeShot), CASES.piqa!.shots.map((x) => x.cf));
      await assert.rejects(taskFromSpec(olmesTaskSpec(preset('piqa')), 'preset piqa', fresh()),
        /piqa-train\.parquet: few-shot example 1 \(fingerprint 2f3fee0981fd3e82\) is none of its 4 rows \(1 of them unreadable, the first: .*piqa-train\.parquet: row 1: "label" gives answer 7, not one of the 2 choices\)/);
    });
    const schema = SCHEMA.winogrande.filter((col) => col.name !== 'option2');
    await withFiles('winogrande', { train: parquet(schema, CASES.winogrande!.trainRows) }, async () => {
      await assert.rejects(taskFromSpec(olmesTaskSpec(preset('winogrande')), 'preset winogrande', fresh()), /winogrande_xl\/train-00000-of-00001\.parquet: row 1: "option2" is missing/);
    });
  });

  it('malformed shot references in a task spec: the key and the problem', async () => {
    const spec = (fewshotRows: unknown, extra = {}) => caseTask('boolq', { fewshotRows, ...extra });
    await assert.rejects(spec([{ id: 1, sha256: 'XYZ' }]), /preset boolq: "fewshotRows"\[0\]: "sha256" must be 16 lowercase hex digits, got "XYZ"/);
    await assert.rejects(spec([{ sha256: '0123456789abcdef', row: 3 }]), /"fewshotRows"\[0\]: unknown key "row"/);
    await assert.rejects(spec([{ id: 1, sha256: '0123456789abcdef' }], { fewshotKey: undefined }), /"fewshotRows"\[0\] has an "id" but the task names no "fewshotKey"/);
    await assert.rejects(spec([]), /"fewshotRows" must be a non-empty list/);
    await assert.rejects(caseTask('boolq', { fewshot: undefined }), /preset boolq: "fewshotRows" picks rows of a "fewshot" file, and there is none/);
    await assert.rejects(caseTask('boolq', { fewshotRows: [ref(1, CASES.boolq!.shots[0]!.cf, CASES.boolq!.shots[0]!.mcf)] }), /2 shots asked for, the few-shot "fewshotRows" list has 1 examples/);
  });
});

describe('olmoe eval with the presets', () => {
  const env = () => ({ ...process.env, HF_ENDPOINT: hubServer.endpoint, HF_HUB_CACHE: join(dir, 'cli-cache') });

  it('--list-tasks: every preset with its dataset, split, instances, shots, cloze normalization and chance', () => {
    const result = spawnSync(process.execPath, [cliPath, 'eval', '--list-tasks'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    for (const line of [
      '| olmes | the ten below |  | 23202 of 37682 |',
      '| arc_challenge | allenai/ai2_arc@210d026 | test | 1172 | 5 (OLMES:ARC-Challenge) | pmi | 25.0 |',
      '| arc_easy | allenai/ai2_arc@210d026 | test | 1000 of 2376 | 5 (OLMES:ARC-Easy) | per_char | 25.0 |',
      '| boolq | aps/super_glue@3de24cf | validation | 1000 of 3270 | 5 (OLMES:BoolQ) | none | 50.0 |',
      '| csqa | tau/commonsense_qa@94630fe | validation | 1221 | 5 (OLMES:commonsense_qa) | pmi | 20.0 |',
      '| hellaswag | Rowan/hellaswag@218ec52 | validation | 1000 of 10042 | 5 (OLMES:hellaswag) | per_char | 25.0 |',
      '| mmlu | cais/mmlu@c30699e | test | 14042 | 5 (first 5 dev rows of each subject) | per_char | 25.0 |',
      '| openbookqa | allenai/openbookqa@388097e | test | 500 | 5 (OLMES:openbookqa) | pmi | 25.0 |',
      '| piqa | ybisk/piqa@078a131 | validation | 1000 of 1838 | 5 (OLMES:piqa) | per_char | 50.0 |',
      '| socialiqa | allenai/social_i_qa@6db3dce | validation | 1000 of 1954 | 5 (OLMES:social_i_qa) | per_char | 33.3 |',
      '| winogrande | allenai/winogrande@01e7417 | validation | 1267 | 5 (OLMES:winogrande) | none | 50.0 |',
    ]) assert.ok(result.stdout.includes(line), `missing ${line}\n${result.stdout}`);
    const json = JSON.parse(spawnSync(process.execPath, [cliPath, 'eval', '--list-tasks', '--json'], { encoding: 'utf8' }).stdout) as { presets: { name: string }[] };
    assert.equal(json.presets.length, 11);
    const none = spawnSync(process.execPath, [cliPath, 'eval', tinyModelDir, '-q'], { encoding: 'utf8' });
    assert.notEqual(none.status, 0);
    assert.match(none.stderr, /--tasks is needed/);
  });

  it('--tasks boolq winogrande runs the presets from the hub end to end', async () => {
    const result = await promisify(execFile)(process.execPath, [cliPath, 'eval', tinyModelDir, '--tasks', 'boolq', 'winogrande', '--shots', '0', '--json', '-q', '--backend', 'reference'], {
      encoding: 'utf8', timeout: 300_000, maxBuffer: 1 << 26, env: env(),
    });
    const report = JSON.parse(result.stdout) as { results: TaskResult[] };
    assert.deepEqual(report.results.map((r) => [r.task, r.instances, r.shots]), [['boolq', 1, 0], ['winogrande', 1, 0]]);
    assert.deepEqual(report.results.map((r) => r.formulations.map((f) => f.primary)), [['none', 'none'], ['none', 'none']]);
    assert.deepEqual(Object.keys(report.results[0]!.formulations[0]!.accuracy), ['none', 'per_token', 'per_char']);
    assert.equal(report.results[1]!.formulations[0]!.chance, 0.5);
  });

  it('--tasks olmes: the ten tasks (MMLU\'s 57 subjects inside), each one\'s better formulation and their mean', async () => {
    const output = join(dir, 'olmes.json');
    const result = await promisify(execFile)(process.execPath, [cliPath, 'eval', tinyModelDir, '--tasks', 'olmes', '--shots', '0', '--limit', '1', '--output', output, '-q', '--backend', 'reference'], {
      encoding: 'utf8', timeout: 300_000, maxBuffer: 1 << 26, env: env(),
    });
    const report = JSON.parse(readFileSync(output, 'utf8')) as { suites: SuiteResult[] };
    const [olmes] = report.suites;
    assert.deepEqual([olmes!.suite, olmes!.combine, olmes!.tasks.length, olmes!.suites.map((s) => [s.suite, s.tasks.length])], ['olmes', 'member', 9, [['mmlu', 57]]]);
    assert.deepEqual(olmes!.members.map((m) => m.name), [...OLMES_TASKS.map((t) => t.name), 'mmlu']);
    const mean = olmes!.members.reduce((sum, m) => sum + m.accuracy.value, 0) / 10;
    assert.ok(Math.abs(olmes!.best.accuracy.value - mean) < 1e-12);
    const line = result.stdout.split('\n').find((l) => l.startsWith('olmes ('))!;
    // One instance per task: standard errors are NaN (a sample variance needs two).
    assert.match(line, /^olmes \(mean over 10 tasks of each one's better formulation\): \*\*\d+\.\d ± NaN\*\* — arc_challenge (cf|mcf) \d+\.\d, .*, mmlu (cf|mcf) \d+\.\d; one formulation throughout: cf \d+\.\d ± NaN, mcf /);
    assert.equal(line.split(' — ')[1]!.split('; ')[0], olmes!.members.map((m) => `${m.name} ${m.formulation} ${(100 * m.accuracy.value).toFixed(1)}`).join(', '));
    assert.match(result.stdout, /\nmmlu \(macro average of 57 tasks\): cf /);
    assert.match(result.stdout, /\| mmlu_world_religions \| 1 \| 0 \| mcf \| none\* \|/);
    // olmoe eval-plot reads the nested suite: MMLU's subjects and average, the nine tasks, then the ten-task number.
    const points = readEvalReport(output).points;
    assert.deepEqual([points.length, points[56]!.task, points[57]!.task, points[58]!.task, points[67]!.task], [68, 'mmlu_world_religions', 'mmlu (average)', 'arc_challenge', 'olmes (average)']);
    assert.equal(points[67]!.formulation, 'per-member');
    assert.ok(Math.abs(points[67]!.accuracy - olmes!.best.accuracy.value) < 1e-12);
  });
});

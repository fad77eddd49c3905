/**
 * Built-in tasks and suites that read the public datasets from the Hugging Face hub (hf://datasets/…@commit, into the
 * HF cache): OLMES's ten tasks as the OLMoE paper reports them (Table 2 / F1).
 * - `mmlu`: the 57 subjects of cais/mmlu, test split, the first 5 rows of each subject's dev split as the fixed shots
 *   after the line "The following are multiple choice questions (with answers) about {subject}.", cloze scored per
 *   character, each formulation macro-averaged over the subjects and the better average kept (olmes-formats.md §2.9).
 * - `arc_challenge`, `arc_easy`, `boolq`, `csqa`, `hellaswag`, `openbookqa`, `piqa`, `socialiqa`, `winogrande`:
 *   src/eval/presets/olmes.ts.
 * - `olmes`: all ten; its number is the mean over the ten of each task's better formulation (MMLU's being the better
 *   of its two macro averages), as OLMES reports a task set.
 */
import type { ReadTaskOptions, Task } from './task.js';
import { taskFromSpec } from './task.js';
import type { Suite } from './suite.js';
import { OLMES_TASKS, olmesTaskSpec } from './presets/olmes.js';
import type { Normalization } from './multiple-choice.js';

export { OLMES_TASKS, olmesTaskSpec, type OlmesTask } from './presets/olmes.js';

/** cais/mmlu's configurations, in the benchmark's order. */
export const MMLU_SUBJECTS = [
  'abstract_algebra', 'anatomy', 'astronomy', 'business_ethics', 'clinical_knowledge', 'college_biology', 'college_chemistry',
  'college_computer_science', 'college_mathematics', 'college_medicine', 'college_physics', 'computer_security', 'conceptual_physics',
  'econometrics', 'electrical_engineering', 'elementary_mathematics', 'formal_logic', 'global_facts', 'high_school_biology',
  'high_school_chemistry', 'high_school_computer_science', 'high_school_european_history', 'high_school_geography',
  'high_school_government_and_politics', 'high_school_macroeconomics', 'high_school_mathematics', 'high_school_microeconomics',
  'high_school_physics', 'high_school_psychology', 'high_school_statistics', 'high_school_us_history', 'high_school_world_history',
  'human_aging', 'human_sexuality', 'international_law', 'jurisprudence', 'logical_fallacies', 'machine_learning', 'management',
  'marketing', 'medical_genetics', 'miscellaneous', 'moral_disputes', 'moral_scenarios', 'nutrition', 'philosophy', 'prehistory',
  'professional_accounting', 'professional_law', 'professional_medicine', 'professional_psychology', 'public_relations',
  'security_studies', 'sociology', 'us_foreign_policy', 'virology', 'world_religions',
] as const;

/** cais/mmlu's Parquet commit (per-subject folders; the commit lm-evaluation-harness users pin). */
export const MMLU_REVISION = 'c30699e8356da336a370243923dbaf21066bb9fe';
const MMLU_REPO = `hf://datasets/cais/mmlu@${MMLU_REVISION}`;
const MMLU_NORMALIZATIONS: Normalization[] = ['per_char', 'none', 'per_token'];

export function mmluTaskSpec(subject: string): Record<string, unknown> {
  return {
    name: `mmlu_${subject}`,
    format: 'mmlu',
    documents: `${MMLU_REPO}/${subject}/test-00000-of-00001.parquet`,
    fewshot: `${MMLU_REPO}/${subject}/dev-00000-of-00001.parquet`,
    shots: 5,
    normalizations: MMLU_NORMALIZATIONS,
    preamble: `The following are multiple choice questions (with answers) about ${subject.replaceAll('_', ' ')}.\n\n`,
  };
}

export const PRESETS = ['olmes', 'mmlu', ...OLMES_TASKS.map((t) => t.name)] as const;

/** What `olmoe eval --list-tasks` shows of a preset. */
export interface PresetInfo {
  readonly name: string;
  readonly kind: 'suite' | 'task';
  readonly dataset: string;
  readonly revision: string;
  readonly split: string;
  /** Instances evaluated (after OLMES's limit). */
  readonly instances: number;
  readonly rows: number;
  readonly shots: number;
  readonly shotSource: string;
  /** The cloze formulation's primary normalization. */
  readonly normalization: Normalization | 'per task';
  /** 1 / choices (ARC: most questions have 4, a few 3 or 5). */
  readonly chance: number;
}

const MMLU_TEST_ROWS = 14042;

export function presetInfo(): PresetInfo[] {
  const tasks = OLMES_TASKS.map((t): PresetInfo => ({
    name: t.name, kind: 'task', dataset: t.repo, revision: t.revision, split: t.split, rows: t.rows, instances: Math.min(t.rows, t.limit ?? Infinity),
    shots: t.shots.length, shotSource: t.fewshotSource, normalization: t.normalizations[0]!, chance: 1 / t.choices,
  }));
  const mmlu: PresetInfo = {
    name: 'mmlu', kind: 'suite', dataset: 'cais/mmlu', revision: MMLU_REVISION, split: 'test', rows: MMLU_TEST_ROWS, instances: MMLU_TEST_ROWS,
    shots: 5, shotSource: 'first 5 dev rows of each subject', normalization: MMLU_NORMALIZATIONS[0]!, chance: 1 / 4,
  };
  const all = [...tasks.slice(0, 5), mmlu, ...tasks.slice(5)]; // the paper's order
  const olmes: PresetInfo = {
    name: 'olmes', kind: 'suite', dataset: 'the ten below', revision: '', split: '', rows: all.reduce((s, p) => s + p.rows, 0),
    instances: all.reduce((s, p) => s + p.instances, 0), shots: 5, shotSource: 'per task', normalization: 'per task', chance: all.reduce((s, p) => s + p.chance, 0) / all.length,
  };
  return [olmes, ...all];
}

/** A built-in preset by name: a suite (olmes, mmlu) or one task; undefined when `name` is none. */
export async function readPreset(name: string, opts: ReadTaskOptions = {}): Promise<{ suite: Suite; task?: undefined } | { task: Task; suite?: undefined } | undefined> {
  const suite = await presetSuite(name, opts);
  if (suite) return { suite };
  const task = OLMES_TASKS.find((t) => t.name === name);
  return task ? { task: await taskFromSpec(olmesTaskSpec(task), `preset ${name}`, opts) } : undefined;
}

/** A built-in suite by name (olmes, mmlu), or undefined when `name` is none. */
export async function presetSuite(name: string, opts: ReadTaskOptions = {}): Promise<Suite | undefined> {
  if (name === 'mmlu') return mmluSuite(opts);
  if (name !== 'olmes') return undefined;
  const tasks: Task[] = [];
  for (const task of OLMES_TASKS) tasks.push(await taskFromSpec(olmesTaskSpec(task), `preset olmes (${task.name})`, opts));
  return { name: 'olmes', tasks, suites: [await mmluSuite(opts)], combine: 'member' };
}

async function mmluSuite(opts: ReadTaskOptions): Promise<Suite> {
  const tasks = [];
  for (const subject of MMLU_SUBJECTS) tasks.push(await taskFromSpec(mmluTaskSpec(subject), `preset mmlu (${subject})`, opts));
  return { name: 'mmlu', tasks };
}

/**
 * Built-in task sets that read the public datasets from the Hugging Face hub (hf://datasets/…, into the HF cache):
 * `mmlu` is OLMES's MMLU — the 57 subjects of cais/mmlu, test split, the first 5 rows of each subject's dev split as
 * the fixed shots after the line "The following are multiple choice questions (with answers) about {subject}.",
 * cloze scored per character, the two formulations macro-averaged over the subjects (docs/eval/olmes-formats.md §2.9).
 */
import type { ReadTaskOptions } from './task.js';
import { taskFromSpec } from './task.js';
import type { Suite } from './suite.js';

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

const MMLU_REPO = 'hf://datasets/cais/mmlu';

export function mmluTaskSpec(subject: string): Record<string, unknown> {
  return {
    name: `mmlu_${subject}`,
    format: 'mmlu',
    documents: `${MMLU_REPO}/${subject}/test-00000-of-00001.parquet`,
    fewshot: `${MMLU_REPO}/${subject}/dev-00000-of-00001.parquet`,
    shots: 5,
    normalizations: ['per_char', 'none', 'per_token'],
    preamble: `The following are multiple choice questions (with answers) about ${subject.replaceAll('_', ' ')}.\n\n`,
  };
}

export const PRESETS = ['mmlu'] as const;

/** A built-in suite by name, or undefined when `name` is none. */
export async function presetSuite(name: string, opts: ReadTaskOptions = {}): Promise<Suite | undefined> {
  if (name !== 'mmlu') return undefined;
  const tasks = [];
  for (const subject of MMLU_SUBJECTS) tasks.push(await taskFromSpec(mmluTaskSpec(subject), `preset mmlu (${subject})`, opts));
  return { name: 'mmlu', tasks };
}

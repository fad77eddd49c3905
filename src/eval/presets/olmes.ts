/**
 * The paper's OLMES tasks (OLMoE Table 2 / F1; OLMES, arXiv 2406.08446) besides MMLU, as task specs over the Hugging
 * Face datasets at pinned revisions — each as OLMES's "{task}:rc::olmes" / "{task}:mc::olmes" configs define it
 * (allenai/olmes oe_eval/configs/tasks.py): the split (test where labelled, else validation), 1000 instances drawn
 * with Random(1234).sample where the split has more than 1500, the cloze normalization, and the first 5 of OLMES's
 * curated shots (oe_eval/tasks/fewshot_sources.py "OLMES:…"), named by id and fingerprint in the train split.
 * Sources and checks: docs/eval/olmes-formats.md.
 */
import type { ShotRef } from '../fewshot.js';
import type { FormatName } from '../formats.js';
import type { Normalization } from '../multiple-choice.js';

export interface OlmesTask {
  /** OLMES's task name. */
  readonly name: string;
  readonly format: FormatName;
  /** Hugging Face dataset repository and the commit read. */
  readonly repo: string;
  readonly revision: string;
  readonly split: 'test' | 'validation';
  /** Parquet files (in the repository) of the evaluated split and of the train split the shots come from. */
  readonly documents: string;
  readonly train: string;
  /** Rows of the evaluated split. */
  readonly rows: number;
  /** OLMES's limit: 1000 sampled instances where the split has more than 1500 rows. */
  readonly limit?: number;
  /** Cloze normalizations, OLMES's primary first (multiple-choice letters are always scored raw). */
  readonly normalizations: readonly Normalization[];
  /** Answer choices per question, for the chance level shown before a run (ARC mixes 3, 4 and 5). */
  readonly choices: number;
  /** The column the shots' ids are found in, when the dataset has one. */
  readonly fewshotKey?: string;
  /** The first 5 of OLMES's curated shots ("OLMES:…" in fewshot_sources.py), in OLMES's order. */
  readonly fewshotSource: string;
  readonly shots: readonly ShotRef[];
}

/** Rendered per OLMES's CF and MCF shot text; fingerprints computed from OLMES-generated requests (the docs say how). */
const refs = (...shots: [string | number | undefined, string][]): ShotRef[] => shots.map(([id, sha256]) => (id === undefined ? { sha256 } : { id, sha256 }));

/** Cloze normalizations: OLMES scores pmi (`acc_uncond`) for every task with unconditioned requests, per-character otherwise. */
const PMI_FIRST: Normalization[] = ['pmi', 'none', 'per_token', 'per_char'];
const PER_CHAR_FIRST: Normalization[] = ['per_char', 'none', 'per_token', 'pmi'];
/** BoolQ and WinoGrande: no unconditioned requests in OLMES (WinoGrande's continuation is shared by both options). */
const RAW_FIRST: Normalization[] = ['none', 'per_token', 'per_char'];

const ARC = { repo: 'allenai/ai2_arc', revision: '210d026faf9955653af8916fad021475a3f00453', format: 'arc', split: 'test', choices: 4, fewshotKey: 'id' } as const;

export const OLMES_TASKS: readonly OlmesTask[] = [
  {
    ...ARC, name: 'arc_challenge', documents: 'ARC-Challenge/test-00000-of-00001.parquet', train: 'ARC-Challenge/train-00000-of-00001.parquet',
    rows: 1172, normalizations: PMI_FIRST, fewshotSource: 'OLMES:ARC-Challenge',
    shots: refs(['Mercury_SC_415702', 'd37e6c309cb1370e'], ['MCAS_2009_5_6516', '4bf800c980174813'], ['Mercury_7233695', '23554796c0cc2a9d'], ['Mercury_7041615', '7a7d636481d2ad9f'], ['MCAS_1998_4_3', 'fdf3c013b7daa4a7']),
  },
  {
    ...ARC, name: 'arc_easy', documents: 'ARC-Easy/test-00000-of-00001.parquet', train: 'ARC-Easy/train-00000-of-00001.parquet',
    rows: 2376, limit: 1000, normalizations: PER_CHAR_FIRST, fewshotSource: 'OLMES:ARC-Easy',
    shots: refs(['MCAS_2007_8_5189', 'e7d5839cc27e532f'], ['Mercury_SC_401169', 'ea2196df411fb79f'], ['MCAS_2004_8_27', 'ed99ee7eb79b844b'], ['NYSEDREGENTS_2006_8_10', '0df20145171136e4'], ['Mercury_7013388', '83e1f371ba6b8e38']),
  },
  {
    // SuperGLUE's BoolQ: its passages begin with the article title ("Title -- …"), which google/boolq's lack.
    name: 'boolq', format: 'boolq', repo: 'aps/super_glue', revision: '3de24cf8022e94f4ee4b9d55a6f539891524d646', split: 'validation',
    documents: 'boolq/validation-00000-of-00001.parquet', train: 'boolq/train-00000-of-00001.parquet',
    rows: 3270, limit: 1000, normalizations: RAW_FIRST, choices: 2, fewshotKey: 'idx', fewshotSource: 'OLMES:BoolQ',
    shots: refs([0, '4f16ee5f8143bfb1'], [1, 'a4425b5584c64fe6'], [7, '6fd3c562240ecd5f'], [11, 'a4a53d1a30380a75'], [3, '0c79bb5c05f94140']),
  },
  {
    name: 'csqa', format: 'csqa', repo: 'tau/commonsense_qa', revision: '94630fe30dad47192a8546eb75f094926d47e155', split: 'validation',
    documents: 'data/validation-00000-of-00001.parquet', train: 'data/train-00000-of-00001.parquet',
    rows: 1221, normalizations: PMI_FIRST, choices: 5, fewshotKey: 'id', fewshotSource: 'OLMES:commonsense_qa',
    shots: refs(
      ['61fe6e879ff18686d7552425a36344c8', '29c2ee6afeaa3173'], ['02e821a3e53cb320790950aab4489e85', '5c1fdfdda886aade'], ['23505889b94e880c3e89cff4ba119860', '67797bbed9dfc25b'],
      ['a76403b4921a9281b6ee2a7241a5ec9f', '3240cc65c26239ce'], ['6dc921840aa1e5dda3333b79007f630b', 'e0252f97ad81b077'],
    ),
  },
  {
    // "ind" repeats within the train split (two of OLMES's curated rows have ind 38); the fingerprint picks the row.
    name: 'hellaswag', format: 'hellaswag', repo: 'Rowan/hellaswag', revision: '218ec52e09a7e7462a5400043bb9a69a41d06b76', split: 'validation',
    documents: 'data/validation-00000-of-00001.parquet', train: 'data/train-00000-of-00001.parquet',
    rows: 10042, limit: 1000, normalizations: PER_CHAR_FIRST, choices: 4, fewshotKey: 'ind', fewshotSource: 'OLMES:hellaswag',
    shots: refs([12, '9e789a034b0d7da9'], [39, 'be4f129fae528368'], [9, '2abaea0b6d93ef9f'], [47, 'ac3a180485af4031'], [38, '2202143ca50c7000']),
  },
  {
    name: 'openbookqa', format: 'openbookqa', repo: 'allenai/openbookqa', revision: '388097ea7776314e93a529163e0fea805b8a6454', split: 'test',
    documents: 'main/test-00000-of-00001.parquet', train: 'main/train-00000-of-00001.parquet',
    rows: 500, normalizations: PMI_FIRST, choices: 4, fewshotKey: 'id', fewshotSource: 'OLMES:openbookqa',
    shots: refs(['7-584', 'dd6735102f2c4c7d'], ['7-870', '10e8e3f82ea852f7'], ['9-732', 'e8fd855a60940776'], ['9-782', '97a2e0c9a9e6e9a3'], ['8-72', '5aafd0220376e8b0']),
  },
  {
    // ybisk/piqa's main branch holds a loading script; this commit is the hub's Parquet export of it.
    name: 'piqa', format: 'piqa', repo: 'ybisk/piqa', revision: '078a131412f46a38025a762322c174a8bae2610c', split: 'validation',
    documents: 'plain_text/piqa-validation.parquet', train: 'plain_text/piqa-train.parquet',
    rows: 1838, limit: 1000, normalizations: PER_CHAR_FIRST, choices: 2, fewshotSource: 'OLMES:piqa',
    shots: refs([undefined, '2f3fee0981fd3e82'], [undefined, 'ed800dd4603450dc'], [undefined, 'e665cd963609eeda'], [undefined, 'e31d0cb27934ed0a'], [undefined, '7e42a440ff956f79']),
  },
  {
    // The Parquet conversion of allenai/social_i_qa's loading script (pull request 3 of the repository).
    name: 'socialiqa', format: 'siqa', repo: 'allenai/social_i_qa', revision: '6db3dcea20d5430c3dd74bf85fe9ca87268ea91b', split: 'validation',
    documents: 'data/validation-00000-of-00001.parquet', train: 'data/train-00000-of-00001.parquet',
    rows: 1954, limit: 1000, normalizations: PER_CHAR_FIRST, choices: 3, fewshotSource: 'OLMES:social_i_qa',
    shots: refs([undefined, '10382b176a31b306'], [undefined, '96aea24768ad3339'], [undefined, '1653b014abeacf5a'], [undefined, '230e9d56a1209d4b'], [undefined, '9a83edbc2f22a498']),
  },
  {
    name: 'winogrande', format: 'winogrande', repo: 'allenai/winogrande', revision: '01e74176c63542e6b0bcb004dcdea22d94fb67b5', split: 'validation',
    documents: 'winogrande_xl/validation-00000-of-00001.parquet', train: 'winogrande_xl/train-00000-of-00001.parquet',
    rows: 1267, normalizations: RAW_FIRST, choices: 2, fewshotSource: 'OLMES:winogrande',
    shots: refs([undefined, '77703ef6237f52e4'], [undefined, '9579a2d92da00cbb'], [undefined, 'd013158f2c79345e'], [undefined, '22c3dc465358928f'], [undefined, '58ea9c905dd80b42']),
  },
];

/** The task spec (a task file's JSON) of one OLMES task, read by taskFromSpec. */
export function olmesTaskSpec(task: OlmesTask): Record<string, unknown> {
  const repo = `hf://datasets/${task.repo}@${task.revision}`;
  return {
    name: task.name,
    format: task.format,
    documents: `${repo}/${task.documents}`,
    fewshot: `${repo}/${task.train}`,
    ...(task.fewshotKey === undefined ? {} : { fewshotKey: task.fewshotKey }),
    fewshotRows: task.shots,
    shots: 5,
    ...(task.limit === undefined ? {} : { limit: task.limit, seed: 1234 }),
    normalizations: task.normalizations,
  };
}

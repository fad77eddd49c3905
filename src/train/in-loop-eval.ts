/**
 * In-loop evaluation (paper §4 and appendix D: downstream accuracy curves during pretraining): every
 * `eval_tasks_every` steps the run's current weights are scored on its tasks by the same harness as `olmoe eval`
 * (src/eval/run.ts, suite.ts), and every normalization's accuracy with its standard error goes to metrics.jsonl.
 *
 * The weights are copied from the training model into an inference OlmoeModel on the given backend, exactly as a
 * float32 checkpoint of this step loads, so an in-loop number equals `olmoe eval` on the checkpoint of that step.
 * The tokenizer is built as a checkpoint's is (tokenizer.json and the tokenizer_config.json the trainer writes).
 */
import { weightFromBytes, type Backend, type Tensor } from '../core/backend.js';
import { readFileSync } from 'node:fs';
import { ConfigError, withIo } from '../core/errors.js';
import { runTask, type RunOptions, type TaskResult } from '../eval/run.js';
import { readTaskOrSuite, runSuite, type Suite, type SuiteResult } from '../eval/suite.js';
import type { Task } from '../eval/task.js';
import { OlmoeModel } from '../model/olmoe.js';
import { assembleWeights } from '../model/weights.js';
import { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import { tokenizerConfig } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import type { TaskLogRecord } from './metrics-log.js';
import type { TrainModel } from './model.js';

export interface InLoopEval {
  /** Whether the tasks are scored after optimizer step `step` (1-based). */
  due(step: number): boolean;
  /** Score the tasks with the model's current weights; one record per task, formulation and normalization. */
  run(model: TrainModel, step: number, tokens: number): Promise<TaskLogRecord[]>;
}

type Entry = { task: Task; suite?: undefined } | { suite: Suite; task?: undefined };

/**
 * Read the config's tasks and tokenizer (before the run starts, so a bad task file stops it at once); null when
 * the config names none. `backend` runs the inference model.
 */
export async function openInLoopEval(config: TrainConfig, backend: Backend, say?: (line: string) => void): Promise<InLoopEval | null> {
  const files = config.eval_tasks;
  if (!files?.length) return null;
  const every = config.eval_tasks_every!;
  const entries: Entry[] = [];
  for (const file of files) entries.push(await readTaskOrSuite(file, { limit: config.eval_tasks_limit }));
  const tokenizerJson = withIo(config.tokenizer, 'read', () => readFileSync(config.tokenizer, 'utf8'));
  const contextLength = config.model.max_position_embeddings ?? config.data.sequence_length;
  const tokenizer = new OlmoeTokenizer(JSON.parse(tokenizerJson) as Record<string, unknown>, tokenizerConfig(tokenizerJson, contextLength), config.tokenizer);
  return {
    due: (step) => step % every === 0,
    async run(model, step, tokens) {
      const lm = { model: await inferenceModel(model, backend), tokenizer };
      const prefixToken = tokenizer.tokenId(tokenizer.eosToken) ?? lm.model.config.eosTokenIds[0];
      if (prefixToken === undefined) throw new ConfigError('eval_tasks', 'the tokenizer names no end-of-text token to start an empty context with');
      const options: RunOptions = { prefixToken };
      const records: TaskLogRecord[] = [];
      for (const entry of entries) {
        if (entry.task) records.push(...taskRecords(await runTask(lm, entry.task, options), step, tokens));
        else records.push(...suiteRecords(await runSuite(lm, entry.suite, options), step, tokens));
      }
      say?.(`  tasks @${step}: ${summary(records)}`);
      return records;
    },
  };
}

/** The training weights as an inference model: float32 copies, as a float32 checkpoint of this step would load. */
export async function inferenceModel(model: TrainModel, backend: Backend): Promise<OlmoeModel> {
  const tensors = new Map<string, Tensor>();
  for (const p of model.params) {
    const values = Float32Array.from(backend.toFloat32(p.value)); // a copy: training goes on updating the parameter
    tensors.set(p.name, await backend.weight(weightFromBytes(p.name, 'f32', p.shape, new Uint8Array(values.buffer))));
  }
  const { config } = model.arch;
  return new OlmoeModel(config, assembleWeights(config, tensors), backend);
}

/** One record per formulation and normalization of a task result. */
export function taskRecords(result: TaskResult, step: number, tokens: number, suite?: string): TaskLogRecord[] {
  return result.formulations.flatMap((f) =>
    Object.entries(f.accuracy).map(([normalization, estimate]): TaskLogRecord => ({
      kind: 'task', step, tokens, task: result.task, ...(suite === undefined ? {} : { suite }), formulation: f.formulation, normalization,
      primary: normalization === f.primary, accuracy: estimate!.value, stderr: estimate!.stderr, n: estimate!.n, chance: f.chance, bitsPerByte: f.bitsPerByte.value,
    })),
  );
}

/** A suite's tasks, then its macro averages as a task named after the suite (normalization "primary"). */
function suiteRecords(result: SuiteResult, step: number, tokens: number): TaskLogRecord[] {
  const averages = result.average.map(({ formulation, accuracy }): TaskLogRecord => {
    const chances = result.tasks.map((t) => t.formulations.find((f) => f.formulation === formulation)!.chance);
    return {
      kind: 'task', step, tokens, task: result.suite, formulation, normalization: 'primary', primary: true,
      accuracy: accuracy.value, stderr: accuracy.stderr, n: accuracy.n, chance: chances.reduce((a, b) => a + b, 0) / chances.length, bitsPerByte: Number.NaN,
    };
  });
  return [...result.tasks.flatMap((t) => taskRecords(t, step, tokens, result.suite)), ...averages];
}

/** Per task, the best formulation's primary accuracy (OLMES's number), for the progress line. */
function summary(records: readonly TaskLogRecord[]): string {
  const best = new Map<string, TaskLogRecord>();
  for (const r of records) {
    const current = best.get(r.task);
    if (r.primary && (!current || r.accuracy > current.accuracy)) best.set(r.task, r);
  }
  return [...best.values()].map((r) => `${r.task} ${(100 * r.accuracy).toFixed(1)}% ± ${(100 * r.stderr).toFixed(1)} (${r.formulation})`).join(', ');
}

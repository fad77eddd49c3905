/** `olmoe eval MODEL --tasks FILE...`: multiple-choice accuracy (cloze and lettered formulations) with standard errors. */
import type { Command } from 'commander';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, InputError, isLoglikelihoodResult, modelFingerprint, presetInfo, readPreset, readTaskOrSuite, ResultCache, runSuite, runTask, type Suite, type SuiteResult, type ChatMessage, type Task, type TaskResult } from '../../index.js';
import { addAdapterOption, addModelOptions, hubOptions, loadModel, modelDir, parseInteger, printJson, type ModelFlags } from '../common.js';
import { createProgress } from '../progress.js';

interface EvalFlags extends ModelFlags {
  tasks?: string[];
  listTasks?: boolean;
  shots?: number;
  limit?: number;
  output?: string;
  logSamples?: string;
  cache?: string;
  noPrefixSharing?: boolean;
  prefixSharing?: boolean;
  chat?: boolean;
  json?: boolean;
}

export function registerEval(program: Command): void {
  const command = program
    .command('eval')
    .description('evaluate on multiple-choice and generative tasks (OLMES presets or task JSON files): accuracy ± standard error per formulation and normalization, OLMES-style best')
    .argument('[model]', 'model folder, GGUF file or hub id (org/name)')
    .option('--tasks <files...>', 'presets (olmes: the paper\'s ten OLMES tasks from the hub; or one of them; --list-tasks shows them) or task / suite files (a suite: {"name", "tasks": [files]}, macro-averaged; a task: JSON naming its documents — JSONL or Parquet, local or hf://datasets/ORG/NAME[@REV]/PATH — row format, shots, limit, normalizations)')
    .option('--list-tasks', 'list the built-in presets (dataset, split, instances, shots, cloze normalization, chance) and exit')
    .option('--shots <n>', 'few-shot examples (overrides the task file)', parseInteger('--shots'))
    .option('--limit <n>', 'at most this many instances per task, sampled with the task\'s seed', parseInteger('--limit'))
    .option('--output <file>', 'write the results (JSON) here')
    .option('--log-samples <dir>', 'write every instance\'s scores (JSONL per task and formulation) here')
    .option('--cache <dir>', 'keep scored requests here, per model: a re-run or a resumed run scores only what is new')
    .option('--chat', 'ask in the model\'s chat template (for instruction-tuned models): few-shot examples as user/assistant turns, the question as the last user turn, answers scored or generated as the assistant\'s reply')
    .option('--no-prefix-sharing', 'score every request from an empty KV cache (for measuring what sharing saves)')
    .option('--json', 'print the results as JSON instead of a table');
  addAdapterOption(addModelOptions(command)).action(runEval);
}

async function runEval(spec: string | undefined, flags: EvalFlags): Promise<void> {
  if (flags.listTasks) return listTasks(flags.json === true);
  if (spec === undefined) throw new InputError('olmoe eval: a model is needed (or --list-tasks)');
  if (!flags.tasks?.length) throw new InputError('olmoe eval: --tasks is needed (a preset such as olmes, or task files; --list-tasks shows the presets)');
  const readOptions = { shots: flags.shots, limit: flags.limit, hub: { ...hubOptions(flags), revision: undefined } };
  const entries: ({ suite: Suite; task?: undefined } | { task: Task; suite?: undefined })[] = [];
  for (const name of flags.tasks) {
    const entry = existsSync(name) ? await readTaskOrSuite(name, readOptions) : await readPreset(name, readOptions);
    if (!entry) throw new InputError(`--tasks ${name}: no such task file, and not a preset (olmoe eval --list-tasks shows them)`);
    entries.push(entry);
  }
  const dir = await modelDir(spec, flags);
  const lm = await loadModel(dir, flags);
  const prefixToken = lm.tokenizer.tokenId(lm.tokenizer.eosToken) ?? lm.model.config.eosTokenIds[0];
  if (prefixToken === undefined) throw new InputError(`${spec}: the model names no end-of-text token to start an empty context with`);
  const fingerprint = flags.adapter === undefined ? modelFingerprint(dir) : adaptedFingerprint(modelFingerprint(dir), flags.adapter);
  const cache = flags.cache ? ResultCache.open(flags.cache, fingerprint, isLoglikelihoodResult) : undefined;
  let bar: ReturnType<typeof createProgress> | undefined;
  let label = '';
  const options = {
    prefixToken,
    cache,
    prefixSharing: flags.prefixSharing !== false,
    chat: flags.chat ? (messages: readonly ChatMessage[]) => lm.tokenizer.renderChat(messages, { addGenerationPrompt: true }) : undefined,
    onProgress: (name: string, formulation: string, done: number, total: number) => {
      if (label !== `${name} ${formulation}`) {
        bar?.finish();
        label = `${name} ${formulation}`;
        bar = createProgress(`eval ${label}`, { quiet: flags.quiet });
      }
      bar!.update(done, total);
    },
    onScores: flags.logSamples ? (name: string, formulation: string, scores: readonly unknown[]) => writeSamples(flags.logSamples!, `${name}-${formulation}.jsonl`, scores) : undefined,
  };
  const results: TaskResult[] = [];
  const suites: SuiteResult[] = [];
  for (const entry of entries) {
    if (entry.task) results.push(await runTask(lm, entry.task, options));
    else suites.push(await runSuite(lm, entry.suite!, options));
  }
  bar?.finish();
  const plain = [...results, ...suites.flatMap(suiteTasks)].filter((r) => flags.chat && !r.chat).map((r) => r.task);
  if (plain.length) process.stderr.write(`note: ${plain.join(', ')} scored as plain text: partial scoring has no question to ask in a chat\n`);
  const report = { model: spec, ...(flags.adapter === undefined ? {} : { adapter: flags.adapter }), fingerprint, backend: lm.model.backend.name, results, suites };
  if (flags.output) writeFileSync(flags.output, `${JSON.stringify(report, null, 2)}\n`);
  if (flags.json) return printJson(report);
  process.stdout.write(table([...results, ...suites.flatMap(suiteTasks)]));
  for (const suite of suites) process.stdout.write(suiteSummary(suite));
}

const suiteTasks = (suite: SuiteResult): TaskResult[] => [...suite.tasks, ...suite.suites.flatMap(suiteTasks)];

/** A suite's lines under the table, its sub-suites' first. */
function suiteSummary(suite: SuiteResult): string {
  const estimate = (e: { value: number; stderr: number }) => `${percent(e.value)} ± ${percent(e.stderr)}`;
  const averages = suite.average.map((a) => `${a.formulation} ${estimate(a.accuracy)}`).join(', ');
  const own = suite.suites.map(suiteSummary).join('');
  if (suite.combine === 'formulation') {
    return `${own}\n${suite.suite} (macro average of ${suite.members.length} tasks): ${averages}; best ${suite.best.formulation} ${percent(suite.best.accuracy.value)}\n`;
  }
  const members = suite.members.map((m) => `${m.name} ${m.formulation} ${percent(m.accuracy.value)}`).join(', ');
  return `${own}\n${suite.suite} (mean over ${suite.members.length} tasks of each one's better formulation): **${estimate(suite.best.accuracy)}** — ${members}` +
    `${averages ? `; one formulation throughout: ${averages}` : ''}\n`;
}

function listTasks(json: boolean): void {
  const presets = presetInfo();
  if (json) return printJson({ presets });
  const lines = ['| preset | dataset | split | instances | shots | CF normalization | chance % |', '|---|---|---|---|---|---|---|'];
  for (const p of presets) {
    const dataset = p.revision ? `${p.dataset}@${p.revision.slice(0, 7)}` : p.dataset;
    const instances = p.instances < p.rows ? `${p.instances} of ${p.rows}` : `${p.instances}`;
    lines.push(`| ${p.name} | ${dataset} | ${p.split} | ${instances} | ${p.shots} (${p.shotSource}) | ${p.normalization} | ${percent(p.chance)} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

function writeSamples(dir: string, name: string, rows: readonly unknown[]): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, name), rows.map((row) => JSON.stringify(row)).join('\n') + '\n');
}

const percent = (x: number) => (100 * x).toFixed(1);

function table(results: readonly TaskResult[]): string {
  const lines = ['| task | n | shots | formulation | normalization | accuracy % | ± stderr | chance % | gold bits/byte |', '|---|---|---|---|---|---|---|---|---|'];
  for (const r of results) {
    for (const f of r.formulations) {
      for (const [normalization, estimate] of Object.entries(f.accuracy)) {
        const primary = normalization === f.primary ? '*' : '';
        lines.push(`| ${r.task}${r.chat ? ' (chat)' : ''} | ${r.instances} | ${r.shots} | ${f.formulation} | ${normalization}${primary} | ${percent(estimate!.value)} | ${percent(estimate!.stderr)} | ${percent(f.chance)} | ${Number.isNaN(f.bitsPerByte.value) ? '' : f.bitsPerByte.value.toFixed(3)} |`);
      }
    }
    lines.push(`| **${r.task}** | | | best (${r.best.formulation}) | | **${percent(r.best.accuracy.value)}** | ${percent(r.best.accuracy.stderr)} | | |`);
  }
  return `${lines.join('\n')}\n`;
}

/** Base + adapter is another model: cached scores are keyed by both (the adapter's files hashed whole; they are small). */
function adaptedFingerprint(base: string, adapterDir: string): string {
  const hash = createHash('sha256').update(base);
  for (const name of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) hash.update(readFileSync(join(adapterDir, name)));
  return hash.digest('hex').slice(0, 16); // as long as modelFingerprint's
}

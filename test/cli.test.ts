/** The `olmoe` command end to end, as a user runs it: JSON on stdout, messages on stderr, clear errors. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cliPath, repoRoot, tempDir, tinyExpectedPath, tinyModelDir } from './helpers.js';

function olmoe(args: string[], input?: string) {
  const result = spawnSync(process.execPath, [cliPath, ...args], { input, encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const expected = JSON.parse(readFileSync(tinyExpectedPath, 'utf8')) as {
  cases: { ids: number[]; logits: number[][]; greedy_continuation: number[]; router: { layer: number; experts: number[][] }[] }[];
};
const [shortCase] = expected.cases;

describe('olmoe CLI', () => {
  it('--help lists every verb, and every verb has --help', () => {
    const help = olmoe(['--help']);
    assert.equal(help.code, 0);
    const verbs = ['generate', 'chat', 'info', 'route', 'logits', 'tokenize', 'download', 'create-random', 'convert', 'quantize', 'bench', 'serve', 'trace', 'analyze', 'prune', 'demo',
      'train-tokenizer', 'shard', 'train', 'evaluate', 'plot-train', 'ablate', 'export-olmo', 'eval-plot', 'fuse', 'cast', 'sft', 'dpo', 'kto'];
    for (const verb of verbs) {
      assert.match(help.stdout, new RegExp(`\\b${verb}\\b`));
      const verbHelp = olmoe([verb, '--help']);
      assert.equal(verbHelp.code, 0, verb);
      assert.match(verbHelp.stdout, /Usage: olmoe/);
    }
  });

  it('generate --json --greedy gives the reference continuation', () => {
    const n = shortCase!.greedy_continuation.length;
    const run = olmoe(['generate', tinyModelDir, '--prompt-ids', shortCase!.ids.join(','), '--greedy', '--ignore-eos', '-n', String(n), '--json']);
    assert.equal(run.code, 0, run.stderr);
    const out = JSON.parse(run.stdout) as { ids: number[]; text: string };
    assert.deepEqual(out.ids, shortCase!.greedy_continuation);
    assert.equal(typeof out.text, 'string');
  });

  it('--stop reads escapes as llama.cpp does: "\\xHH" stops at that character', () => {
    const args = ['generate', tinyModelDir, 'hello', '--greedy', '--ignore-eos', '-n', '40', '--json'];
    const full = JSON.parse(olmoe(args).stdout).text as string;
    const stopChar = [...full].find((c, i) => i > 0 && /^[!-~]$/.test(c) && !/[0-9A-Za-z]/.test(c));
    assert.ok(stopChar, `no ASCII punctuation to stop at in ${JSON.stringify(full)}`);
    const escaped = `\\x${stopChar.charCodeAt(0).toString(16).padStart(2, '0')}`;
    const run = olmoe([...args, '--stop', escaped]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).text, full.slice(0, full.indexOf(stopChar)), `--stop ${escaped}`);
  });

  it('logits --json matches the reference logits and routing', () => {
    const run = olmoe(['logits', tinyModelDir, '--ids', shortCase!.ids.join(','), '--json']);
    assert.equal(run.code, 0, run.stderr);
    const out = JSON.parse(run.stdout) as { logits: number[][]; routing: { layer: number; experts: number[][]; weights: number[][] }[] };
    assert.equal(out.logits.length, shortCase!.ids.length);
    let maxError = 0;
    shortCase!.logits.forEach((row, t) => row.forEach((v, i) => (maxError = Math.max(maxError, Math.abs(v - out.logits[t]![i]!)))));
    assert.ok(maxError < 1e-4, `max error ${maxError}`);
    for (const layer of shortCase!.router) assert.deepEqual(out.routing[layer.layer]!.experts, layer.experts);
  });

  it('route prints a table, and --json the same routing', () => {
    const ids = shortCase!.ids.slice(0, 3).join(',');
    const table = olmoe(['route', tinyModelDir, '--prompt-ids', ids]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /L0 .*L1|L0[\s\S]*L2/);
    const json = JSON.parse(olmoe(['route', tinyModelDir, '--prompt-ids', ids, '--json', '--layers', '1']).stdout);
    assert.deepEqual(json.routing.map((r: { layer: number }) => r.layer), [1]);
    assert.deepEqual(json.routing[0].experts, shortCase!.router[1]!.experts.slice(0, 3));
  });

  it('tokenize round-trips through --decode with only tokenizer files in the folder', () => {
    const dir = tempDir();
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) cpSync(join(tinyModelDir, file), join(dir, file));
    const encoded = olmoe(['tokenize', dir, '--json'], 'Hello world');
    assert.equal(encoded.code, 0, encoded.stderr);
    const { ids } = JSON.parse(encoded.stdout) as { ids: number[] };
    assert.ok(ids.length > 0);
    const decoded = olmoe(['tokenize', dir, '--decode', '--json'], ids.join(','));
    assert.equal(JSON.parse(decoded.stdout).text, 'Hello world');
  });

  it('chat answers each line through the chat template, as generate --chat does for one message', () => {
    const flags = ['--greedy', '-n', '6', '--ignore-eos', '-q'];
    const single = olmoe(['generate', tinyModelDir, 'hello', '--chat', '--json', ...flags]);
    const expectedAnswer = (JSON.parse(single.stdout) as { text: string }).text;
    const chat = olmoe(['chat', tinyModelDir, ...flags], 'hello\nagain\n/exit\nnever read\n');
    assert.equal(chat.code, 0, chat.stderr);
    assert.ok(chat.stdout.startsWith(`${expectedAnswer}\n`), 'first answer');
    assert.ok(chat.stdout.length > expectedAnswer.length + 1, 'a second answer follows');
  });

  it('chat: /help lists the commands and an unknown /command is reported; neither reaches the model', () => {
    const flags = ['--greedy', '-n', '6', '--ignore-eos', '-q'];
    const chat = olmoe(['chat', tinyModelDir, ...flags], '/help\n/frobnicate now\n');
    assert.equal(chat.code, 0, chat.stderr);
    assert.equal(chat.stdout, '', 'no reply: nothing was sent to the model');
    for (const command of ['/help', '/reset', '/exit']) assert.match(chat.stderr, new RegExp(`^\\s*${command}\\s`, 'm'));
    assert.match(chat.stderr, /unknown command \/frobnicate/);
    // "//" sends a message starting with "/": the reply is generate --chat's for that text.
    const single = olmoe(['generate', tinyModelDir, '/etc', '--chat', '--json', ...flags]);
    const slashed = olmoe(['chat', tinyModelDir, ...flags], '//etc\n');
    assert.equal(slashed.stdout, `${(JSON.parse(single.stdout) as { text: string }).text}\n`);
  });

  it('bench clamps a prompt that does not fit the context with gen, and refuses a gen that cannot', () => {
    const context = (JSON.parse(readFileSync(join(tinyModelDir, 'config.json'), 'utf8')) as { max_position_embeddings: number }).max_position_embeddings;
    const run = olmoe(['bench', tinyModelDir, '--prompt', String(context + 44), '--gen', '2', '--runs', '1', '--json', '-q', '--no-machine']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { promptTokens: number; residentMiB: number; hugePageMiB: number | null; weightFileMiB: number; residentOverWeightFile: number };
    assert.equal(result.promptTokens, context - 2);
    const safetensors = readdirSync(tinyModelDir).filter((name) => name.endsWith('.safetensors')).reduce((sum, name) => sum + statSync(join(tinyModelDir, name)).size, 0);
    assert.equal(result.weightFileMiB, Math.round(safetensors / 2 ** 20));
    assert.ok(Math.abs(result.residentOverWeightFile - (result.residentMiB * 2 ** 20) / safetensors) < 0.01 * result.residentOverWeightFile, 'resident memory over the weights file');
    if (existsSync('/proc/self/smaps_rollup')) assert.ok(result.hugePageMiB !== null && result.hugePageMiB >= 0 && result.hugePageMiB <= result.residentMiB, `${result.hugePageMiB} MiB on huge pages of ${result.residentMiB}`);
    assert.match(run.stderr, new RegExp(`--prompt ${context + 44} \\+ --gen 2 exceed the model's context of ${context} positions`));
    const tooLong = olmoe(['bench', tinyModelDir, '--gen', String(context)]);
    assert.equal(tooLong.code, 1);
    assert.match(tooLong.stderr, new RegExp(`--gen ${context}: the model's context is ${context} positions`));
  });

  it('info reports the architecture and parameter counts', () => {
    const run = olmoe(['info', tinyModelDir, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const info = JSON.parse(run.stdout);
    assert.equal(info.architecture.experts, 16);
    assert.equal(info.architecture.expertsPerToken, 4);
    assert.equal(info.tensors, 174);
    assert.deepEqual(info.dtypes, { bf16: 174 });
  });

  it('create-random writes a model that generate can run, sharded', () => {
    const dir = join(tempDir(), 'm');
    const created = olmoe(['create-random', dir, '--layers', '2', '--experts', '4', '--top-k', '2', '--hidden', '32', '--heads', '2', '--intermediate', '16', '--shards', '2', '-q']);
    assert.equal(created.code, 0, created.stderr);
    const run = olmoe(['generate', dir, 'hello', '-n', '5', '--greedy', '--ignore-eos', '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).ids.length, 5);
    assert.equal(olmoe(['create-random', dir]).code, 1, 'refuses a non-empty folder without --force');
    // --force with one shard replaces the sharded weights: the new seed's model is what loads.
    const logits = () => JSON.parse(olmoe(['logits', dir, '--ids', '1,2', '--json']).stdout).logits;
    const before = logits();
    const small = ['--layers', '2', '--experts', '4', '--top-k', '2', '--hidden', '32', '--heads', '2', '--intermediate', '16', '-q'];
    assert.equal(olmoe(['create-random', dir, ...small, '--seed', '9', '--force']).code, 0);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('safetensors')), ['model.safetensors']);
    assert.notDeepEqual(logits(), before);
  });

  it('bad input gives a one-line error and exit code 1, never a stack trace', () => {
    const dir = tempDir();
    cpSync(tinyModelDir, dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), '{"model_type": "olmoe", "hidden_size": ');
    const cases: [string[], RegExp][] = [
      [['generate', '/no/such/folder', 'hi'], /no such folder/],
      [['generate', tinyModelDir, '--prompt-ids', '1,x,3'], /"x" is not a token id/],
      [['generate', tinyModelDir, '--prompt-ids', '1,600'], /token id 600 at position 1 is out of range/],
      [['generate', tinyModelDir, 'hi', '--temperature', '-1'], /temperature/],
      [['generate', tinyModelDir], /either a prompt or --prompt-ids/],
      [['generate', dir, 'hi'], /config\.json.*not valid JSON/],
      [['generate', tinyModelDir, 'hi', '--backend', 'gpu9000'], /unknown backend "gpu9000"/],
      [['generate', 'someorg/somemodel', 'hi'], /not in the cache \(offline mode\)/],
      [['create-random', join(tinyModelDir, 'config.json', 'sub')], /cannot create folder .*config\.json/],
      [['generate', tinyModelDir, 'hi', '--stop', ''], /stop strings must be non-empty/],
      [['generate', tinyModelDir, 'hi', '--greedy', '--sample'], /exclude each other/],
    ];
    for (const [args, message] of cases) {
      const run = olmoe(args);
      assert.equal(run.code, 1, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message);
      assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});

describe('without the native addon (a machine with no compiler)', () => {
  const missing = { OLMOE_NATIVE_ADDON: '/nonexistent/olmoe_native.node', OLMOE_BACKEND: '' };
  const run = (args: string[]) =>
    spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env: { ...process.env, ...missing, HF_HUB_OFFLINE: '1' } });

  it('falls back to the reference backend with one warning, and gives the same tokens', () => {
    const ids = shortCase!.ids.join(',');
    const result = run(['generate', tinyModelDir, '--prompt-ids', ids, '--greedy', '--ignore-eos', '-n', '10', '--json']);
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout).ids, shortCase!.greedy_continuation);
    assert.equal(result.stderr.match(/native backend not built/g)?.length, 1, result.stderr);
    assert.match(result.stderr, /backend reference/);
  });

  it('--backend native then fails with a clear message', () => {
    const result = run(['generate', tinyModelDir, 'hi', '--backend', 'native']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /native backend is not available: .*does not exist/);
  });

  it('the install hook still succeeds when the build fails, with one warning', () => {
    const root = tempDir();
    cpSync(join(repoRoot, 'scripts'), join(root, 'scripts'), { recursive: true });
    cpSync(join(repoRoot, 'native', 'src'), join(root, 'native', 'src'), { recursive: true });
    cpSync(join(repoRoot, 'native', 'binding.gyp'), join(root, 'native', 'binding.gyp'));
    // A user's install (CI itself must fail instead: test/build-native.test.ts).
    const env = { ...process.env, CXX: '/nonexistent/c++', CC: '/nonexistent/cc', OLMOE_SKIP_NATIVE: '', CI: '', OLMOE_REQUIRE_NATIVE: '' };
    const result = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs')], { encoding: 'utf8', env, cwd: root });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, /the native backend was not built/);
    assert.equal(existsSync(join(root, 'native', 'build', 'Release', 'olmoe_native.node')), false);
  });

  it('train-tokenizer → shard → train → generate, evaluate and plot-train on the checkpoint', () => {
    const dir = tempDir();
    const lines = ['The router sends each token to its experts.', 'def add(a, b):\n    return a + b', 'Theorem: the sum of two even numbers is even.'];
    writeFileSync(join(dir, 'corpus.jsonl'), Array.from({ length: 60 }, (_, i) => JSON.stringify({ text: `${lines[i % 3]} (${i})`, domain: ['prose', 'code', 'math'][i % 3] })).join('\n'));
    const ok = (args: string[]) => {
      const run = olmoe(args);
      assert.equal(run.code, 0, `${args.join(' ')}: ${run.stderr}`);
      return run;
    };
    ok(['train-tokenizer', join(dir, 'corpus.jsonl'), '--out', join(dir, 'tok'), '--vocab-size', '300', '-q']);
    ok(['shard', join(dir, 'corpus.jsonl'), '--tokenizer', join(dir, 'tok'), '--out', join(dir, 'shards'), '-q']);
    writeFileSync(join(dir, 'train.json'), JSON.stringify({
      out: 'run', tokenizer: 'tok/tokenizer.json', steps: 4, eval_every: 2, eval_batches: 1, checkpoint_every: 2,
      model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8 },
      data: { train: ['shards/train-00000.shard'], valid: ['shards/train-00000.shard'], sequence_length: 16, batch_size: 2 },
      optimizer: { warmup_steps: 1 },
    }));
    const trained = ok(['train', join(dir, 'train.json'), '--log-every', '1']);
    assert.match(trained.stderr, /step 4\/4 .*loss/);
    assert.match(trained.stderr, /valid @4: prose .*code .*math .*all/);
    const checkpoint = join(dir, 'run', 'checkpoints', 'step-000004');
    const generated = ok(['generate', checkpoint, 'The router', '-n', '5', '--greedy', '--json']);
    assert.equal(JSON.parse(generated.stdout).ids.length, 5);
    assert.match(ok(['evaluate', checkpoint, '--shards', join(dir, 'shards', 'train-00000.shard'), '--seq', '16', '--baseline', join(dir, 'shards', 'train-00000.shard')]).stdout, /\| all \| \d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/);
    ok(['plot-train', join(dir, 'run', 'metrics.jsonl'), '--out', join(dir, 'plots')]);
    assert.ok(existsSync(join(dir, 'plots', 'loss.svg')) && existsSync(join(dir, 'plots', 'expert-load.png')));
    assert.match(olmoe(['train', join(dir, 'train.json')]).stderr, /already holds a run; resume it/);
    assert.match(olmoe(['ablate', 'nope', '--tokenizer', 'x', '--train', 'x', '--valid', 'x']).stderr, /unknown ablation "nope"/);
  });
});


/**
 * Training metrics logs and `olmoe plot-train`: logs parse into records (null → NaN), a last line cut short by a
 * killed run is skipped with a warning while a malformed line elsewhere is an error naming file and line, and
 * the figures render as SVG and PNG naming the runs, with a summary of final loss and best validation CE.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FormatError } from '../src/core/errors.js';
import { parseTrainingLog, readTrainingRun } from '../src/train/metrics-log.js';
import { bucketMeans, plotTraining } from '../src/train/plot.js';
import { cliPath, tempDir } from './helpers.js';

/** A small run: 2 layers, 4 experts; validation every 10 steps for "all" and "code". */
function logLines(steps: number, lbl: boolean): string[] {
  const lines: string[] = [];
  for (let step = 0; step < steps; step++) {
    const loss = 5 - step / steps;
    const expertLoad = [0, 1].map(() => (lbl ? [0.25, 0.25, 0.25, 0.25] : [0.55, 0.15, 0.15, 0.15]));
    lines.push(JSON.stringify({ kind: 'train', step, tokens: 1024 * (step + 1), loss, ce: loss - 0.02, lbl: lbl ? 0.01 : 0, zloss: 0.002, lr: 1e-3, gradNorm: 0.5, tokensPerSecond: 900, expertLoad, routingEntropy: [1.2, 1.3] }));
    if (step % 10 === 9) {
      for (const domain of ['all', 'code']) lines.push(JSON.stringify({ kind: 'valid', step, tokens: 1024 * (step + 1), domain, ce: 4.5 - step / 100 + (lbl ? 0 : 0.1), bitsPerByte: 1.5 }));
      // in-loop task accuracy: cloze rises with the step (+5 points with LBL), lettered stays at chance
      const task = { kind: 'task', step, tokens: 1024 * (step + 1), task: 'capitals', stderr: 0.05, n: 100, chance: 0.25, bitsPerByte: 1.2 };
      lines.push(JSON.stringify({ ...task, formulation: 'cf', normalization: 'per_char', primary: true, accuracy: 0.3 + step / 100 + (lbl ? 0.05 : 0) }));
      lines.push(JSON.stringify({ ...task, formulation: 'cf', normalization: 'none', primary: false, accuracy: 0.9 }));
      lines.push(JSON.stringify({ ...task, formulation: 'mcf', normalization: 'none', primary: true, accuracy: 0.25 }));
    }
  }
  return lines;
}

function olmoe(args: string[]) {
  const result = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('training metrics log', () => {
  it('parses train and valid records; null values read as NaN', () => {
    const log = parseTrainingLog(`${logLines(10, true).join('\n')}\n{"kind":"train","step":10,"loss":null}\n`, 'run.jsonl');
    assert.equal(log.train.length, 11);
    assert.equal(log.valid.length, 2);
    assert.deepEqual(log.train[3]!.expertLoad, [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]);
    assert.deepEqual(log.valid.map((v) => v.domain), ['all', 'code']);
    assert.ok(Number.isNaN(log.train[10]!.loss) && Number.isNaN(log.train[10]!.gradNorm));
    assert.deepEqual(log.warnings, []);
  });

  it('parses in-loop task records and names a malformed field', () => {
    const log = parseTrainingLog(`${logLines(10, true).join('\n')}\n`, 'run.jsonl');
    assert.deepEqual(log.tasks.map((t) => [t.step, t.task, t.formulation, t.normalization, t.primary]), [[9, 'capitals', 'cf', 'per_char', true], [9, 'capitals', 'cf', 'none', false], [9, 'capitals', 'mcf', 'none', true]]);
    assert.ok(Math.abs(log.tasks[0]!.accuracy - 0.44) < 1e-12);
    assert.throws(() => parseTrainingLog('{"kind":"task","step":1,"task":"x","formulation":"cf","normalization":"none","primary":"yes"}\n', 'r.jsonl'), /line 1: "primary" "yes": expected true or false/);
    assert.throws(() => parseTrainingLog('{"kind":"task","step":1,"formulation":"cf","normalization":"none","primary":true}\n', 'r.jsonl'), /line 1: "task" undefined: expected a non-empty string/);
    assert.throws(() => parseTrainingLog('{"kind":"task","step":1,"task":"x","formulation":"cf","normalization":"none","primary":true,"accuracy":"1"}\n', 'r.jsonl'), /"accuracy" "1": expected a number/);
  });

  it('skips a truncated last line with a warning', () => {
    const lines = logLines(5, true);
    const text = `${lines.join('\n')}\n${lines[0]!.slice(0, 30)}`;
    const log = parseTrainingLog(text, 'run.jsonl');
    assert.equal(log.train.length, 5);
    assert.equal(log.warnings.length, 1);
    assert.match(log.warnings[0]!, /run\.jsonl: line 6: .*incomplete last line/);
  });

  it('a malformed line elsewhere is an error naming the file and line', () => {
    const lines = logLines(5, true);
    lines.splice(2, 0, '{"kind":"train","step":');
    assert.throws(() => parseTrainingLog(`${lines.join('\n')}\n`, 'run.jsonl'), (e) => e instanceof FormatError && /^run\.jsonl: line 3: not JSON/.test(e.message));
    // a complete last line (ended by a newline) is not a truncation
    assert.throws(() => parseTrainingLog(`${logLines(2, true).join('\n')}\n{"kind":\n`, 'run.jsonl'), /line 3: not JSON/);
    assert.throws(() => parseTrainingLog('{"kind":"train","step":-1}\n', 'run.jsonl'), /line 1: "step" -1/);
    assert.throws(() => parseTrainingLog('{"kind":"train","step":1,"loss":"high"}\n', 'run.jsonl'), /line 1: "loss" "high": expected a number/);
    assert.throws(() => parseTrainingLog('{"kind":"valid","step":1}\n', 'run.jsonl'), /line 1: "domain"/);
    assert.throws(() => parseTrainingLog('[1]\n', 'run.jsonl'), /line 1: expected a JSON object/);
  });

  it('an empty file is an error; records of unknown kinds are skipped with a warning', () => {
    assert.throws(() => parseTrainingLog('', 'empty.jsonl'), (e) => e instanceof FormatError && /^empty\.jsonl: no metrics records/.test(e.message));
    assert.throws(() => parseTrainingLog('{"kind":"tr', 'cut.jsonl'), /no metrics records/);
    const log = parseTrainingLog(`{"kind":"config","seed":1}\n${logLines(1, true)[0]}\n`, 'run.jsonl');
    assert.equal(log.train.length, 1);
    assert.match(log.warnings[0]!, /line 1: skipped a record of unknown kind "config"/);
  });

  it('averages long runs in buckets, plotted at each bucket\'s last step', () => {
    const train = parseTrainingLog(`${logLines(10, false).join('\n')}\n`, 'run.jsonl').train;
    const buckets = bucketMeans(train, 4); // 10 records → buckets of 3: steps 2, 5, 8, 9
    assert.deepEqual(buckets.map((r) => r.step), [2, 5, 8, 9]);
    assert.ok(Math.abs(buckets[0]!.loss - (5 - 0.1)) < 1e-12);
    assert.deepEqual(buckets[0]!.expertLoad![0], [0.55, 0.15, 0.15, 0.15].map((x) => (x * 3) / 3));
  });
});

describe('plotTraining and olmoe plot-train', () => {
  it('writes every figure as SVG and PNG naming the runs, and a summary', async () => {
    const dir = tempDir();
    const runs = [readTrainingRunFrom(dir, 'a', true, 'with LBL'), readTrainingRunFrom(dir, 'b', false, 'without LBL')];
    const out = join(dir, 'plots');
    const { files, skipped } = await plotTraining(runs, out);
    assert.deepEqual(skipped, []);
    for (const name of ['loss', 'lr', 'grad-norm', 'throughput', 'expert-load', 'routing-entropy', 'validation', 'tasks']) {
      const svg = readFileSync(join(out, `${name}.svg`), 'utf8');
      assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*<\/svg>\s*$/, name);
      assert.ok(svg.includes('with LBL') && svg.includes('without LBL'), `${name} names both runs`);
      assert.deepEqual([...readFileSync(join(out, `${name}.png`)).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
      assert.ok(files.includes(`${name}.svg`) && files.includes(`${name}.png`));
    }
    const summary = readFileSync(join(out, 'summary.md'), 'utf8');
    // final train loss 5 − 19/20 = 4.05; best valid CE (all) at the last evaluation, step 19
    assert.match(summary, /\| with LBL \| .*a\.jsonl \| 19 \| 20480 \| 4\.0500 \| 4\.0300 \| 4\.3100 \| 19 \|/);
    assert.match(summary, /\| without LBL \| .*b\.jsonl \| 19 \| 20480 \| 4\.0500 \| 4\.0300 \| 4\.4100 \| 19 \|/);
    assert.match(summary, /\| code \| 4\.3100 \| 4\.4100 \|/);
    // last evaluation (step 19): cloze per_char 0.3 + 0.19 (+ 0.05 with LBL) beats lettered 0.25; 'none' is not primary
    assert.match(summary, /\| capitals \| 54\.0 ± 5\.0 \(cf, step 19\) \| 49\.0 ± 5\.0 \(cf, step 19\) \|/);
    assert.match(readFileSync(join(out, 'tasks.svg'), 'utf8'), /capitals/);
  });

  it('leaves out figures of values no run logged', async () => {
    const dir = tempDir();
    const file = join(dir, 'plain.jsonl');
    writeFileSync(file, '{"kind":"train","step":0,"loss":3,"lr":0.001}\n{"kind":"train","step":1,"loss":2.5,"lr":0.001}\n');
    const { skipped } = await plotTraining([readTrainingRun(file)], join(dir, 'out'));
    assert.deepEqual(skipped, ['grad-norm', 'throughput', 'expert-load', 'routing-entropy', 'validation', 'tasks']);
    assert.ok(readFileSync(join(dir, 'out', 'loss.svg'), 'utf8').includes('plain'));
  });

  it('the CLI compares runs by label, warns about a truncated last line, and names a malformed line', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'a.jsonl'), `${logLines(20, true).join('\n')}\n`);
    writeFileSync(join(dir, 'b.jsonl'), `${logLines(20, false).join('\n')}\n{"kind":"train","st`);
    const out = join(dir, 'out');
    const ok = olmoe(['plot-train', join(dir, 'a.jsonl'), join(dir, 'b.jsonl'), '--label', 'with LBL', 'without LBL', '--out', out]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /warning: .*b\.jsonl: line 31: skipped an incomplete last line/); // 20 train + 2 × (2 valid + 3 task) lines
    assert.ok(existsSync(join(out, 'expert-load.png')));
    assert.match(readFileSync(join(out, 'summary.md'), 'utf8'), /without LBL/);

    const labels = olmoe(['plot-train', join(dir, 'a.jsonl'), '--label', 'x', 'y', '--out', out]);
    assert.equal(labels.code, 1);
    assert.match(labels.stderr, /--label: 2 labels for 1 metrics files/);
    writeFileSync(join(dir, 'bad.jsonl'), `${logLines(3, true)[0]}\nnot json\n${logLines(3, true)[1]}\n`);
    const bad = olmoe(['plot-train', join(dir, 'bad.jsonl'), '--out', out]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /olmoe: error: .*bad\.jsonl: line 2: not JSON/);
    writeFileSync(join(dir, 'empty.jsonl'), '');
    assert.match(olmoe(['plot-train', join(dir, 'empty.jsonl'), '--out', out]).stderr, /empty\.jsonl: no metrics records/);
  });
});

function readTrainingRunFrom(dir: string, name: string, lbl: boolean, label: string) {
  const file = join(dir, `${name}.jsonl`);
  writeFileSync(file, `${logLines(20, lbl).join('\n')}\n`);
  return readTrainingRun(file, label);
}

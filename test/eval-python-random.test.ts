/**
 * OLMES samples instances with Python's random.Random(1234).sample: the port gives CPython's exact indices
 * (vectors printed by CPython 3.11 for the five OLMES splits that are subsampled, both of sample's strategies),
 * and the whole list equals python3's where python3 is installed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { pythonSample } from '../src/eval/python-random.js';

const CPYTHON: [number, number[], number[]][] = [
  [2376, [1805, 478, 30, 371, 143, 343, 403, 1452, 969, 71, 126, 64], [930, 1163, 735]], // ARC-Easy test
  [3270, [3187, 1805, 478, 30, 371, 2384, 143, 2750, 2838, 343, 403, 3139], [508, 1929, 1517]], // BoolQ validation
  [10042, [7220, 1914, 122, 1485, 9539, 572, 1375, 1612, 5810, 3879, 285, 504], [2749, 1447, 7325]], // HellaSwag: the set strategy
  [1838, [1593, 902, 239, 15, 185, 1652, 1192, 71, 1375, 1419, 171, 201], [242, 384, 311]], // PIQA validation
  [1954, [1593, 902, 239, 15, 185, 1865, 1930, 1923, 1652, 1192, 71, 1375], [386, 965, 1505]], // SIQA validation
];

describe('Python-compatible sampling', () => {
  it('reproduces CPython\'s Random(1234).sample(range(N), 1000)', () => {
    for (const [n, first, last] of CPYTHON) {
      const sample = pythonSample(n, 1000, 1234);
      assert.deepEqual(sample.slice(0, 12), first, `N=${n}`);
      assert.deepEqual(sample.slice(-3), last, `N=${n}`);
      assert.equal(new Set(sample).size, 1000);
    }
  });

  const python = spawnSync('python3', ['-c', 'print(1)'], { encoding: 'utf8' });
  const skip = python.status === 0 ? false : 'python3 not installed';
  if (skip) console.log(`# SKIP: ${skip}`);
  it('equals python3 on whole lists, several seeds and sizes', { skip }, () => {
    const cases: [number, number, number][] = [[10, 3, 0], [50, 10, 5], [100, 100, 7], [30000, 6, 2 ** 32 - 1], [1, 1, 42], [0, 0, 1]];
    const script = `import random, json; print(json.dumps([random.Random(s).sample(range(n), k) for n, k, s in ${JSON.stringify(cases)}]))`;
    const expected = JSON.parse(spawnSync('python3', ['-c', script], { encoding: 'utf8' }).stdout) as number[][];
    cases.forEach(([n, k, seed], i) => assert.deepEqual(pythonSample(n, k, seed), expected[i], `${n} ${k} ${seed}`));
  });

  it('refuses what Python would refuse', () => {
    assert.throws(() => pythonSample(5, 6, 1), /cannot sample 6 of 5/);
    assert.throws(() => pythonSample(5, 2, -1), /sample seed -1/);
  });
});

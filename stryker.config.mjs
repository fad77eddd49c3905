// StrykerJS over src/backends/reference and src/core (`npm run mutation` runs this, then stryker.generate.config.mjs;
// the results are in README.md, Testing). Stryker instruments the TS sources in a sandbox copy, `buildCommand`
// compiles that copy once (a mutant is switched on at run time by an environment variable: no build per mutant),
// and the TAP runner runs compiled node:test files, each in its own process, with per-file coverage, so a mutant
// runs only the files that reach it, in the order below (fast files first), stopping at the first failure.
//
// Instrumented, the reference backend's inner loops run 30-50x slower, so the test files are the ones that stay
// fast: golden-gqa.test.js stands in for model.test.js (22 s a run instrumented, the same forward on a 3x bigger
// model), and conformance.test.js (≈60 s even uninstrumented: it quantizes K-quant test weights), generate.test.js
// and batch.test.js (80 s / 26 s instrumented) are left out. src/core/errors.ts (error classes and messages) is
// not mutated. Static mutants (module-level tables) would rerun every file and are ignored.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export const base = {
  packageManager: 'npm',
  testRunner: 'tap',
  buildCommand: 'npx tsc -p .',
  coverageAnalysis: 'perTest',
  ignoreStatic: true,
  checkers: [],
  concurrency: 1,
  timeoutMS: 20000,
  timeoutFactor: 2,
  ignorePatterns: ['dist', 'reports', '.olmoe', 'bench/results', '.stryker-tmp'],
  reporters: ['clear-text', 'json', 'html', 'progress-append-only'],
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
};

const tapFiles = (names) => ({
  testFiles: names.map((name) => `dist/test/${name}.test.js`),
  nodeArgs: ['--test-reporter=tap', '-r', '{{hookFile}}', '{{testFile}}'],
  forceBail: true,
});

export const tap = tapFiles;

export default {
  ...base,
  mutate: ['src/backends/reference/**/*.ts', 'src/core/**/*.ts', '!src/core/errors.ts'],
  tap: tapFiles(['reference-backend', 'dtype', 'quant', 'sampling', 'rng-golden', 'model-laws', 'golden-gqa', 'native']),
  tempDirName: '.stryker-tmp/core',
  // `npm run mutation -- --incremental` reuses this file: only changed code or tests rerun.
  incrementalFile: 'reports/mutation/core-incremental.json',
  jsonReporter: { fileName: 'reports/mutation/core.json' },
  htmlReporter: { fileName: 'reports/mutation/core.html' },
};

// StrykerJS over src/generate (see stryker.config.mjs). The backends are not mutated here, so the forward runs
// at full speed and the generation tests on the tiny fixture fit: generate.test.js, batch.test.js and the
// golden-gqa greedy runs, plus the sampling unit tests and generation-knobs.test.js (written for what the first
// run left alive).
import { base, tap } from './stryker.config.mjs';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  ...base,
  mutate: ['src/generate/**/*.ts'],
  tap: tap(['sampling', 'generation-knobs', 'golden-gqa', 'batch', 'generate']),
  tempDirName: '.stryker-tmp/generate',
  incrementalFile: 'reports/mutation/generate-incremental.json',
  jsonReporter: { fileName: 'reports/mutation/generate.json' },
  htmlReporter: { fileName: 'reports/mutation/generate.html' },
};

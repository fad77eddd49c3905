/**
 * Load a (full-size) OLMoE checkpoint on the reference backend and decode a few tokens, reporting load time,
 * resident memory and speed. Not a CI test: run it by hand on a checkpoint from
 *   node dist/src/cli/main.js create-random /path/olmoe-full --preset olmoe-1b-7b
 *   node dist/bench/reference-load-decode.js /path/olmoe-full [promptTokens=8] [newTokens=4]
 */
import { readFileSync } from 'node:fs';
import { generateText, loadPretrained, ReferenceBackend } from '../src/index.js';

function residentMiB(field: 'VmRSS' | 'VmHWM'): number {
  const match = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return match ? Number(match[1]) / 1024 : NaN;
}

async function main(): Promise<void> {
  const [dir, promptArg = '8', newArg = '4'] = process.argv.slice(2);
  if (!dir) throw new Error('usage: reference-load-decode.js MODEL_DIR [promptTokens] [newTokens]');
  const loadStart = performance.now();
  const pretrained = await loadPretrained(dir, { backend: new ReferenceBackend() });
  const loadSeconds = (performance.now() - loadStart) / 1000;
  const rssAfterLoad = residentMiB('VmRSS');
  const promptIds = Array.from({ length: Number(promptArg) }, (_, i) => 100 + i);
  const result = await generateText(pretrained, promptIds, { greedy: true, maxNewTokens: Number(newArg), ignoreEos: true });
  const report = {
    model: dir,
    backend: 'reference',
    loadSeconds: +loadSeconds.toFixed(2),
    rssAfterLoadMiB: Math.round(rssAfterLoad),
    peakRssMiB: Math.round(residentMiB('VmHWM')),
    promptTokens: promptIds.length,
    prefillSeconds: +(result.prefillMs / 1000).toFixed(2),
    newTokens: result.ids.length,
    decodeSecondsPerToken: +(result.decodeMs / 1000 / Math.max(1, result.ids.length - 1)).toFixed(2),
  };
  console.log(JSON.stringify(report, null, 2));
}

await main();

#!/usr/bin/env node
// Enforces the layer rules of ARCHITECTURE.md over src/: each layer imports only the layers below it,
// model code never imports a specific backend, and the CLI uses only the public API (src/index.ts).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const src = resolve(import.meta.dirname ?? dirname(new URL(import.meta.url).pathname), '..', 'src');
const allowed = {
  core: ['core'],
  'backends/reference': ['core', 'backends/reference'],
  'backends/native': ['core', 'backends/reference', 'backends/native'], // reuses the reference's light ops
  backends: ['core', 'backends', 'backends/reference', 'backends/native'], // backends/index.ts chooses among them
  autograd: ['core', 'autograd'], // the tape over any backend's ops: knows only the interfaces
  io: ['core', 'io'], // file formats, atomic writes, the hub, and the document reader that train/ and analysis/ share
  plot: ['core', 'plot'], // figure rendering (Vega-Lite → SVG/PNG) for every layer that draws; below train/, eval/, analysis/
  tokenizer: ['core', 'io', 'tokenizer'],
  model: ['core', 'io', 'tokenizer', 'model'],
  generate: ['core', 'io', 'tokenizer', 'model', 'generate'],
  analysis: ['core', 'io', 'plot', 'tokenizer', 'model', 'analysis'], // metrics use only analysis/trace.ts; the recorder runs the model
  train: ['core', 'io', 'plot', 'tokenizer', 'model', 'autograd', 'eval', 'train'], // never analysis/ (what both need lives below both: io/documents.ts, plot/); eval/: the harness runs in-loop
  eval: ['core', 'io', 'plot', 'tokenizer', 'model', 'generate', 'eval'], // the harness: scoring requests and tasks over a model
  server: ['server', 'index.ts'], // like the CLI, a shell over the public API
  cli: ['cli', 'index.ts', 'server'],
  'index.ts': null, // the public entry may re-export anything
};

function layerOf(file) {
  const rel = relative(src, file).replaceAll('\\', '/');
  if (rel === 'index.ts') return 'index.ts';
  const [top, second] = rel.split('/');
  return top === 'backends' && (second === 'reference' || second === 'native') ? `backends/${second}` : top;
}

function* walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* walk(path);
    else if (path.endsWith('.ts')) yield path;
  }
}

const problems = [];
for (const file of walk(src)) {
  const layer = layerOf(file);
  if (!(layer in allowed)) problems.push(`${relative(src, file)}: folder "${layer}" has no layer rule`);
  const rules = allowed[layer];
  if (!rules) continue;
  for (const [, spec] of readFileSync(file, 'utf8').matchAll(/(?:import|export)[^'"]*?from\s+'([^']+)'/g)) {
    if (!spec.startsWith('.')) continue;
    const target = layerOf(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
    if (!rules.includes(target)) problems.push(`${relative(src, file)} (${layer}) imports ${spec} (${target})`);
  }
}
if (problems.length) {
  console.error(`import rules violated:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('import rules: ok');

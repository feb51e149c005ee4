#!/usr/bin/env node
// Regenerates src/generated/ from the repository's docs/schemas/ (the
// committed output of `flagship-worker schemas export`). With --check, writes
// nothing and exits 1 when a generated file is stale.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { generateEnvelope, generateKinds } from './codegen.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const schemas = path.resolve(root, '../../docs/schemas');
const command = 'scripts/generate.mjs';

/** Every generated file: its path in the package and its fresh text. */
export function generatedFiles() {
  return [
    ['src/generated/flagship.ts', generateKinds(schemas, { registry: 'generatedKinds', command })],
    ['src/generated/envelope.ts', generateEnvelope(path.join(schemas, 'envelope.json'), { command })],
  ].map(([file, text]) => ({ file, path: path.join(root, file), text }));
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const { file, path: target, text } of generatedFiles()) {
    const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : null;
    if (current === text) continue;
    if (check) {
      console.error(`${file} is stale: run \`npm run generate\` and commit it`);
      stale++;
    } else {
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.writeFileSync(target, text);
      console.log(`wrote ${file}`);
    }
  }
  process.exitCode = stale ? 1 : 0;
}

#!/usr/bin/env node
// Copies the Redis broker's enqueue script from the Rust crate into this
// package (lua/), so the producer sends exactly what the Rust broker sends.
// Run by `npm run build`; test/script.test.ts fails when the copies differ
// from the sources.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sources = path.resolve(root, '../../src/broker/redis/scripts');
const target = path.join(root, 'lua');

/** The files copied: the prelude every script starts with, then the enqueue script. */
export const SCRIPT_FILES = ['prelude.lua', 'enqueue.lua'];

fs.mkdirSync(target, { recursive: true });
for (const file of SCRIPT_FILES) {
  const from = path.join(sources, file);
  if (!fs.existsSync(from)) {
    console.error(`copy-lua: ${from} is missing; build this package inside the flagship-worker repository`);
    process.exit(1);
  }
  fs.copyFileSync(from, path.join(target, file));
}
console.log(`copied ${SCRIPT_FILES.join(', ')} from ${path.relative(root, sources)}`);

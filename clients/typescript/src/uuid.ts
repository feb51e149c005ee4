/** UUID v7 job ids, in the canonical lower-case form the Rust side stores. */

import { randomFillSync } from "node:crypto";

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
/** Random bytes drawn in bulk: one system call per 409 ids, not one per id. */
const pool = Buffer.alloc(4096);
let used = pool.length;
/** The time part of the last id, reused while the millisecond lasts. */
let lastMs = Number.NaN;
let lastPrefix = "";

/**
 * A new UUID v7: 48 bits of Unix time in milliseconds, the version, 74
 * random bits and the variant, so ids sort by creation time (to the ms).
 */
export function uuidv7(now: number = Date.now()): string {
  if (used + 10 > pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  const r = used;
  used += 10;
  if (now !== lastMs) {
    lastMs = now;
    const ts = Math.floor(now).toString(16).padStart(12, "0");
    lastPrefix = ts.slice(0, 8) + "-" + ts.slice(8, 12) + "-7";
  }
  const b = (i: number): number => pool[r + i] as number;
  return (
    lastPrefix +
    (b(0) & 0x0f).toString(16) +
    HEX[b(1)] +
    "-" +
    HEX[(b(2) & 0x3f) | 0x80] +
    HEX[b(3)] +
    "-" +
    HEX[b(4)] +
    HEX[b(5)] +
    HEX[b(6)] +
    HEX[b(7)] +
    HEX[b(8)] +
    HEX[b(9)]
  );
}

/**
 * The enqueue script: the Redis broker's own `prelude.lua` followed by its
 * `enqueue.lua`, joined exactly as the Rust broker joins them (the prelude's
 * text, then the script's, nothing in between). `npm run build` copies both
 * files from `src/broker/redis/scripts/` into this package's `lua/`.
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The version of the enqueue contract this package speaks: the enqueue
 * script's KEYS, ARGV and reply, and the key names (see docs/redis.md,
 * "The enqueue contract"). The envelope has its own version, `v`.
 */
export const PROTOCOL_VERSION = 1;

/** The folder holding the copied scripts. */
export const LUA_DIR = fileURLToPath(new URL("../../lua/", import.meta.url));

function read(file: string): string {
  try {
    return readFileSync(LUA_DIR + file, "utf8");
  } catch (cause) {
    throw new Error(
      `the enqueue script ${file} is missing from ${LUA_DIR}; run \`npm run build\` in clients/typescript`,
      { cause },
    );
  }
}

/** The full source sent with `SCRIPT LOAD` / `EVAL`. */
export const ENQUEUE_SCRIPT: string = read("prelude.lua") + read("enqueue.lua");

/** The script's SHA1, for `EVALSHA`. */
export const ENQUEUE_SCRIPT_SHA1: string = createHash("sha1").update(ENQUEUE_SCRIPT).digest("hex");

/** The protocol version a script's header states (`-- Protocol N:`), if any. */
export function statedProtocol(source: string): number | undefined {
  const m = /^-- Protocol (\d+):/m.exec(source);
  return m ? Number(m[1]) : undefined;
}

const stated = statedProtocol(ENQUEUE_SCRIPT);
if (stated !== PROTOCOL_VERSION) {
  throw new Error(
    `the copied enqueue script states protocol ${stated ?? "none"}, but this package speaks protocol ${PROTOCOL_VERSION}; ` +
      "update the package for the new contract (docs/redis.md) before using it",
  );
}

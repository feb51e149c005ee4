import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { ENQUEUE_SCRIPT, ENQUEUE_SCRIPT_SHA1, PROTOCOL_VERSION, statedProtocol } from "../src/index.js";
import { LUA_DIR } from "../src/script.js";

const SOURCES = fileURLToPath(new URL("../../../../src/broker/redis/scripts/", import.meta.url));
const source = (file: string): string => readFileSync(SOURCES + file, "utf8");

test("the package's copies of the Lua scripts are the Rust broker's", () => {
  for (const file of ["prelude.lua", "enqueue.lua"]) {
    assert.equal(
      readFileSync(LUA_DIR + file, "utf8"),
      source(file),
      `lua/${file} differs from src/broker/redis/scripts/${file}: run \`npm run build\``,
    );
  }
});

test("the script sent is the prelude followed by enqueue.lua, as the Rust broker joins them", () => {
  assert.equal(ENQUEUE_SCRIPT, source("prelude.lua") + source("enqueue.lua"));
  assert.equal(ENQUEUE_SCRIPT_SHA1, createHash("sha1").update(ENQUEUE_SCRIPT).digest("hex"));
});

test("the script states the protocol version the package speaks", () => {
  assert.equal(statedProtocol(source("enqueue.lua")), PROTOCOL_VERSION);
  assert.equal(statedProtocol("-- Protocol 7: later\nlocal x"), 7);
  assert.equal(statedProtocol("local x = 1"), undefined);
});

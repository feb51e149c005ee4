import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const PACKAGE = fileURLToPath(new URL("../../", import.meta.url));

interface Codegen {
  generateKinds(dir: string, options?: { registry?: string }): string;
  generate(roots: { name: string; schema: unknown; source: string; kind?: string; queue?: string }[], options?: { registry?: string | null }): string;
  CodegenError: new (...args: never[]) => Error;
}
const codegen = (await import(pathToFileURL(join(PACKAGE, "scripts/codegen.mjs")).href)) as Codegen;
const { generatedFiles } = (await import(pathToFileURL(join(PACKAGE, "scripts/generate.mjs")).href)) as {
  generatedFiles(): { file: string; path: string; text: string }[];
};

test("the committed generated files match docs/schemas", () => {
  for (const { file, path, text } of generatedFiles()) {
    assert.equal(readFileSync(path, "utf8"), text, `${file} is stale: run \`npm run generate\` and commit it`);
  }
});

const obj = (properties: Record<string, unknown>, required: string[] = [], extra: Record<string, unknown> = {}) => ({
  type: "object",
  properties,
  required,
  ...extra,
});

function gen(schema: unknown): string {
  return codegen.generate([{ name: "ThingJob", schema, source: "thing.json", kind: "thing", queue: "things" }]);
}

test("keywords the generator does not understand are refused with their place", () => {
  assert.throws(() => gen(obj({ tags: { type: "array", uniqueItems: true } })), (e: Error) => {
    assert.ok(e instanceof codegen.CodegenError);
    assert.match(e.message, /thing\.json\/properties\/tags: the keyword `uniqueItems` is not supported/);
    return true;
  });
  assert.throws(() => gen(obj({ a: { $ref: "https://example.com/s.json" } })), /only references to #\/\$defs\/NAME/);
  assert.throws(() => gen(obj({ a: { minLength: 1 } })), /`minLength` without `type`/);
  assert.throws(() => gen(obj({ a: { type: "string", minItems: 1 } })), /`minItems` does not apply to type string/);
});

test("oneOf is generated only when its branches exclude each other", () => {
  assert.throws(
    () => gen({ oneOf: [obj({ a: { type: "string" } }), obj({ b: { type: "string" } })] }),
    /branches 0 and 1 may both match one value/,
  );
  // Distinct constants, distinct JSON types, and closed objects requiring different keys are exclusive.
  assert.match(gen({ oneOf: [{ const: "a" }, { const: "b" }] }), /z\.enum\(\["a", "b"\]\)/);
  assert.match(gen({ oneOf: [{ type: "string" }, obj({ n: { type: "integer" } }, ["n"])] }), /z\.union\(\[/);
  const tagged = gen({
    oneOf: [
      obj({ Resize: { type: "integer" } }, ["Resize"], { additionalProperties: false }),
      obj({ Crop: { type: "integer" } }, ["Crop"], { additionalProperties: false }),
    ],
  });
  assert.match(tagged, /z\.strictObject/);
  assert.match(gen({ oneOf: [obj({ t: { const: "x" } }, ["t"]), obj({ t: { const: "y" } }, ["t"])] }), /z\.discriminatedUnion\("t"/);
});

test("recursive and conflicting definitions are refused", () => {
  assert.throws(
    () => gen({ $defs: { Node: obj({ next: { $ref: "#/$defs/Node" } }) }, ...obj({ head: { $ref: "#/$defs/Node" } }) }),
    /refers to itself/,
  );
  assert.throws(
    () =>
      codegen.generate([
        { name: "AJob", schema: { $defs: { P: { type: "string" } }, $ref: "#/$defs/P" }, source: "a.json", kind: "a", queue: "q" },
        { name: "BJob", schema: { $defs: { P: { type: "integer" } }, $ref: "#/$defs/P" }, source: "b.json", kind: "b", queue: "q" },
      ]),
    /b\.json#\/\$defs\/P: differs from the definition of the same name in a\.json/,
  );
});

test("a directory of exported schemas becomes a module with a registry", () => {
  const dir = mkdtempSync(join(tmpdir(), "flagship-codegen-"));
  try {
    writeFileSync(join(dir, "envelope.json"), JSON.stringify({ type: "object" }));
    writeFileSync(
      join(dir, "send-welcome.json"),
      JSON.stringify({
        title: "SendWelcome",
        ...obj({ email: { type: "string" }, userId: { type: "integer", format: "uint64", minimum: 0 } }, ["email"]),
        "x-flagship-worker": { kind: "send-welcome", queue: "emails" },
      }),
    );
    const text = codegen.generateKinds(dir, { registry: "appKinds" });
    assert.match(text, /export type SendWelcomeJob = \{/);
    assert.match(text, /userId\?: number \| undefined;/);
    assert.match(text, /export const SendWelcomeJobSchema = z\.looseObject/);
    assert.match(text, /"send-welcome": \{ kind: "send-welcome", queue: "emails", schema: SendWelcomeJobSchema \}/);
    assert.match(text, /max\(9007199254740991/);
    assert.doesNotMatch(text, /envelope/i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const empty = mkdtempSync(join(tmpdir(), "flagship-codegen-"));
  try {
    assert.throws(() => codegen.generateKinds(empty), /no kind schemas/);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

/**
 * The generator against what schemars really writes (tests/flagship/interop.rs):
 * generates the module for the kind schemas in argv[2], type-checks it with
 * tsc's strictest settings (which also checks that every type agrees with its
 * schema), loads it, and validates the payloads in the JSON file argv[3]
 * (`{ "valid": { kind: [payload, ...] }, "invalid": { kind: [payload, ...] } }`,
 * serialized by serde). Prints one JSON line: the compiler's diagnostics and,
 * per kind, the issues of each payload (an empty list: accepted).
 */

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import ts from "typescript";
import type { z } from "zod";

import { issuesOf } from "../../src/validation.js";

const PACKAGE = fileURLToPath(new URL("../../../", import.meta.url));
const [schemas, samplesFile] = process.argv.slice(2);
if (!schemas || !samplesFile) {
  console.error("usage: codegen-check.js <schemas-dir> <samples.json>");
  process.exit(2);
}

const { generateKinds } = (await import(pathToFileURL(join(PACKAGE, "scripts/codegen.mjs")).href)) as {
  generateKinds(dir: string, options: { registry: string }): string;
};
// Inside the package, so that `zod` resolves from its node_modules.
const work = join(PACKAGE, "dist", `codegen-check-${process.pid}`);
mkdirSync(work, { recursive: true });
try {
  const source = join(work, "kinds.ts");
  writeFileSync(source, generateKinds(schemas, { registry: "kinds" }));
  writeFileSync(join(work, "package.json"), '{ "type": "module" }');
  const program = ts.createProgram([source], {
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    noUnusedLocals: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    noEmit: true,
    skipLibCheck: true,
  });
  const diagnostics = ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));

  const js = ts.transpileModule(readFileSync(source, "utf8"), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  writeFileSync(join(work, "kinds.js"), js);
  const { kinds } = (await import(pathToFileURL(join(work, "kinds.js")).href)) as {
    kinds: Record<string, { queue: string; schema: z.ZodType }>;
  };
  const samples = JSON.parse(readFileSync(samplesFile, "utf8")) as Record<"valid" | "invalid", Record<string, unknown[]>>;
  const check = (group: Record<string, unknown[]>) =>
    Object.fromEntries(
      Object.entries(group).map(([kind, payloads]) => {
        const spec = kinds[kind];
        if (!spec) return [kind, "no such kind in the generated module"];
        return [kind, payloads.map((p) => {
          const r = spec.schema.safeParse(p);
          return r.success ? [] : issuesOf(r.error.issues, p);
        })];
      }),
    );
  const queues = Object.fromEntries(Object.entries(kinds).map(([k, s]) => [k, s.queue]));
  console.log(JSON.stringify({ diagnostics, queues, valid: check(samples.valid), invalid: check(samples.invalid) }));
} finally {
  rmSync(work, { recursive: true, force: true });
}

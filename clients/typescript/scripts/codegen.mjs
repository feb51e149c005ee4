#!/usr/bin/env node
// Generates TypeScript types and Zod schemas from flagship-worker's JSON
// Schemas (the files `flagship-worker schemas export DIR` or
// `SchemaRegistry::export` write).
//
//   flagship-worker-codegen <schemas-dir> <out.ts> [--registry NAME]
//
// Every `{kind}.json` carrying an `x-flagship-worker` annotation ({ kind,
// queue }) becomes a type `{Kind}Job`, a Zod schema `{Kind}JobSchema` and an
// entry of the registry object (default name `kinds`) that `Producer` takes.
// Other files in the directory (such as `envelope.json`) are skipped.
//
// The generator understands the JSON Schema that schemars writes for serde
// types: `type` (also as a list with "null"), `properties`, `required`,
// `additionalProperties`, `items`, `minItems`/`maxItems`, `const`, `enum`,
// `oneOf` (when its branches provably exclude each other), `anyOf`, `allOf`,
// `$ref` to `#/$defs/...`, string lengths, `pattern`, number bounds, and the
// formats whose Rust types refuse other text (`date-time`, `date`, `uuid`,
// and integer widths such as `uint32`). Other formats are annotations, as in
// the Rust validator. Anything else is refused with the schema path, so a
// schema is never validated more loosely than written.
//
// Objects accept properties they do not declare, as the JSON Schemas do
// (unless `additionalProperties: false`), and Zod keeps them in its output.
// String lengths count Unicode code points, as JSON Schema does.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { ANNOTATION, CodegenError, sortDefs, toIr, withoutDefs } from './schema-ir.mjs';

export { ANNOTATION, CodegenError };

/** How each asserted string format is checked, and the rule errors name. */
const FORMAT_CHECKS = {
  'date-time': { zod: 'z.iso.datetime({ offset: true })', rule: 'format date-time (RFC 3339, with Z or an offset)' },
  date: { zod: 'z.iso.date()', rule: 'format date (YYYY-MM-DD)' },
  uuid: { zod: 'z.uuid()', rule: 'format uuid' },
};

/** `audit-event` → `AuditEvent`. */
export function pascal(text) {
  return text
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w[0].toUpperCase() + w.slice(1))
    .join('');
}

/**
 * Generates one TypeScript module.
 *
 * `roots`: `[{ name, schema, source, kind?, queue? }]`: each becomes `export
 * type {name}` and `export const {name}Schema`; roots with a kind also become
 * registry entries. `registry`: the registry's name, or null for none.
 */
export function generate(roots, { registry = 'kinds', header = [] } = {}) {
  const defs = new Map(); // name -> { schema, source }
  for (const root of roots) {
    for (const [name, schema] of Object.entries(root.schema.$defs ?? {})) {
      const seen = defs.get(name);
      if (seen && JSON.stringify(seen.schema) !== JSON.stringify(schema)) {
        throw new CodegenError(`${root.source}#/$defs/${name}`, `differs from the definition of the same name in ${seen.source}; rename one of the Rust types`);
      }
      if (!seen) defs.set(name, { schema, source: root.source });
    }
  }
  const rootNames = new Set();
  for (const root of roots) {
    if (defs.has(root.name) || rootNames.has(root.name)) {
      throw new CodegenError(root.source, `the type name ${root.name} is used twice; rename the Rust type or the kind`);
    }
    rootNames.add(root.name);
  }

  const irs = new Map();
  for (const [name, { schema, source }] of defs) irs.set(name, toIr(schema, `${source}#/$defs/${name}`, defs));
  const order = sortDefs(irs);

  const out = [];
  out.push(...header.map((line) => `// ${line}`));
  out.push('');
  out.push('import { z } from "zod";');
  out.push('');
  out.push('/** A string\'s length in Unicode code points, as JSON Schema counts it. */');
  out.push('function codePoints(s: string): number {');
  out.push('  let n = s.length;');
  out.push('  for (let i = 0; i < s.length; i++) {');
  out.push('    const c = s.charCodeAt(i);');
  out.push('    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {');
  out.push('      const d = s.charCodeAt(i + 1);');
  out.push('      if (d >= 0xdc00 && d <= 0xdfff) {');
  out.push('        n--;');
  out.push('        i++;');
  out.push('      }');
  out.push('    }');
  out.push('  }');
  out.push('  return n;');
  out.push('}');
  out.push('void codePoints;');
  const emit = (name, ir, doc) => {
    out.push('');
    if (doc) out.push(...jsdoc(doc, ''));
    out.push(`export type ${name} = ${tsOf(ir, '')};`);
    if (doc) out.push(...jsdoc(doc, ''));
    out.push(`export const ${name}Schema = ${zodOf(ir, '')};`);
  };
  for (const name of order) emit(name, irs.get(name), defs.get(name).schema.description);
  const rootIrs = roots.map((root) => toIr(withoutDefs(root.schema), root.source, defs));
  roots.forEach((root, i) => emit(root.name, rootIrs[i], root.schema.description));

  // The types and the schemas come from one walk; tsc checks they agree.
  out.push('');
  out.push('/** Compile-time proof that each type is what its schema parses to. */');
  out.push('type Agree<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;');
  for (const name of [...order, ...roots.map((r) => r.name)]) {
    out.push(`const _${name}Agrees: Agree<${name}, z.output<typeof ${name}Schema>> = true;`);
    out.push(`void _${name}Agrees;`);
  }

  const kinds = roots.filter((root) => root.kind);
  if (registry && kinds.length > 0) {
    out.push('');
    out.push('/** Every job kind of this module: its queue and payload schema, for `Producer`. */');
    out.push(`export const ${registry} = {`);
    for (const root of kinds) {
      out.push(`  ${JSON.stringify(root.kind)}: { kind: ${JSON.stringify(root.kind)}, queue: ${JSON.stringify(root.queue)}, schema: ${root.name}Schema },`);
    }
    out.push('} as const;');
  }
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------------------
// Emitting

function jsdoc(text, indent) {
  const lines = String(text).replace(/\*\//g, '*\\/').split('\n');
  if (lines.length === 1) return [`${indent}/** ${lines[0]} */`];
  return [`${indent}/**`, ...lines.map((l) => `${indent} *${l ? ` ${l}` : ''}`), `${indent} */`];
}

function key(name) {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}

function tsOf(ir, indent) {
  switch (ir.k) {
    case 'unknown': return 'unknown';
    case 'never': return 'never';
    case 'ref': return ir.name;
    case 'literal': return JSON.stringify(ir.value);
    case 'null': return 'null';
    case 'boolean': return 'boolean';
    case 'string': return 'string';
    case 'number': return 'number';
    case 'array': {
      const inner = tsOf(ir.items, indent);
      return /^[A-Za-z0-9_$"]+$/.test(inner) ? `${inner}[]` : `Array<${inner}>`;
    }
    case 'nullable': return `${tsOf(ir.inner, indent)} | null`;
    case 'union': return ir.items.map((i) => tsOf(i, indent)).join(' | ');
    case 'intersection': return ir.items.map((i) => `(${tsOf(i, indent)})`).join(' & ');
    case 'object': {
      const inner = `${indent}  `;
      const lines = ['{'];
      for (const p of ir.props) {
        if (p.doc) lines.push(...jsdoc(p.doc, inner));
        const t = tsOf(p.ir, inner);
        lines.push(p.required ? `${inner}${key(p.name)}: ${t};` : `${inner}${key(p.name)}?: ${t} | undefined;`);
      }
      if (ir.additional === true && ir.props.length === 0) lines.push(`${inner}[key: string]: unknown;`);
      lines.push(`${indent}}`);
      if (typeof ir.additional !== 'object') return lines.join('\n');
      // Undeclared properties must match `additionalProperties`.
      const rest = `{ [key: string]: ${tsOf(ir.additional, indent)} }`;
      return ir.props.length === 0 ? rest : `${lines.join('\n')} & ${rest}`;
    }
    default: throw new Error(`unhandled ${ir.k}`);
  }
}

function zodOf(ir, indent) {
  switch (ir.k) {
    case 'unknown': return 'z.unknown()';
    case 'never': return 'z.never()';
    case 'ref': return `${ir.name}Schema`;
    case 'literal': return `z.literal(${JSON.stringify(ir.value)})`;
    case 'null': return 'z.null()';
    case 'boolean': return 'z.boolean()';
    case 'string': return zodString(ir);
    case 'number': return zodNumber(ir);
    case 'array': {
      let s = `z.array(${zodOf(ir.items, indent)})`;
      if (ir.minItems !== undefined) s += `.min(${ir.minItems}, { message: "minItems ${ir.minItems}" })`;
      if (ir.maxItems !== undefined) s += `.max(${ir.maxItems}, { message: "maxItems ${ir.maxItems}" })`;
      return s;
    }
    case 'nullable': return `${zodOf(ir.inner, indent)}.nullable()`;
    case 'union': {
      const inner = `${indent}  `;
      const items = ir.items.map((i) => `${inner}${zodOf(i, inner)},`);
      if (ir.items.every((i) => i.k === 'literal' && typeof i.value === 'string')) {
        return `z.enum([${ir.items.map((i) => JSON.stringify(i.value)).join(', ')}])`;
      }
      const head = ir.discriminator ? `z.discriminatedUnion(${JSON.stringify(ir.discriminator)}, [` : 'z.union([';
      return [head, ...items, `${indent}])`].join('\n');
    }
    case 'intersection':
      return ir.items.map((i) => zodOf(i, indent)).reduce((a, b) => `z.intersection(${a}, ${b})`);
    case 'object': {
      const inner = `${indent}  `;
      const lines = [];
      for (const p of ir.props) {
        const s = zodOf(p.ir, inner);
        // A required property must be present even where any value would do.
        const present = p.required && p.ir.k === 'unknown' ? '.nonoptional()' : '';
        lines.push(`${inner}${key(p.name)}: ${s}${present}${p.required ? '' : '.optional()'},`);
      }
      const body = lines.length ? `{\n${lines.join('\n')}\n${indent}}` : '{}';
      if (ir.additional === false) return `z.strictObject(${body})`;
      if (ir.additional === true) return `z.looseObject(${body})`;
      if (ir.props.length === 0) return `z.record(z.string(), ${zodOf(ir.additional, indent)})`;
      return `z.object(${body}).catchall(${zodOf(ir.additional, indent)})`;
    }
    default: throw new Error(`unhandled ${ir.k}`);
  }
}

function zodString(ir) {
  let s = ir.format ? withMessage(FORMAT_CHECKS[ir.format].zod, FORMAT_CHECKS[ir.format].rule) : 'z.string()';
  // A string has at least half as many code points as UTF-16 units and at
  // most as many: count them only when the length alone cannot decide.
  if (ir.minLength !== undefined && ir.minLength > 0) {
    const n = ir.minLength;
    s += `.refine((s) => s.length >= ${2 * n} || (s.length >= ${n} && codePoints(s) >= ${n}), { message: "minLength ${n}" })`;
  }
  if (ir.maxLength !== undefined) {
    const n = ir.maxLength;
    s += `.refine((s) => s.length <= ${n} || (s.length <= ${2 * n} && codePoints(s) <= ${n}), { message: "maxLength ${n}" })`;
  }
  if (ir.pattern !== undefined) {
    s += `.regex(new RegExp(${JSON.stringify(ir.pattern)}, "u"), { message: ${JSON.stringify(`pattern ${ir.pattern}`)} })`;
  }
  return s;
}

/** Adds a `message` to a format constructor call such as `z.uuid()`. */
function withMessage(call, message) {
  const m = JSON.stringify(message);
  if (call.endsWith('()')) return `${call.slice(0, -1)}{ message: ${m} })`;
  return call.replace(/ \}\)$/, `, message: ${m} })`);
}

function zodNumber(ir) {
  let s = ir.integer ? 'z.number().int()' : 'z.number()';
  const fmt = ir.format ? ` (format ${ir.format})` : '';
  if (ir.minimum !== undefined) s += `.min(${ir.minimum}, { message: "minimum ${ir.minimum}${fmt}" })`;
  if (ir.maximum !== undefined) s += `.max(${ir.maximum}, { message: "maximum ${ir.maximum}${fmt}" })`;
  if (ir.exclusiveMinimum !== undefined) s += `.gt(${ir.exclusiveMinimum}, { message: "exclusiveMinimum ${ir.exclusiveMinimum}" })`;
  if (ir.exclusiveMaximum !== undefined) s += `.lt(${ir.exclusiveMaximum}, { message: "exclusiveMaximum ${ir.exclusiveMaximum}" })`;
  if (ir.multipleOf !== undefined) s += `.multipleOf(${ir.multipleOf}, { message: "multipleOf ${ir.multipleOf}" })`;
  return s;
}

// ---------------------------------------------------------------------------
// Files

/** Reads every kind schema (files with the annotation) in `dir`, sorted by kind. */
export function readKindSchemas(dir) {
  const roots = [];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const source = path.join(dir, file);
    const schema = JSON.parse(fs.readFileSync(source, 'utf8'));
    const meta = schema[ANNOTATION];
    if (!meta) continue;
    if (typeof meta.kind !== 'string' || typeof meta.queue !== 'string') {
      throw new CodegenError(source, `\`${ANNOTATION}\` must name the kind and the queue`);
    }
    roots.push({ name: `${pascal(meta.kind)}Job`, schema, source: file, kind: meta.kind, queue: meta.queue });
  }
  if (roots.length === 0) {
    throw new CodegenError(dir, `no kind schemas (JSON files with \`${ANNOTATION}\`); write them with \`flagship-worker schemas export\` or \`SchemaRegistry::export\``);
  }
  return roots.sort((a, b) => (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0));
}

/** The module for the kind schemas in `dir`. */
export function generateKinds(dir, { registry = 'kinds', command = 'flagship-worker-codegen' } = {}) {
  const roots = readKindSchemas(dir);
  return generate(roots, {
    registry,
    header: [
      `Generated by ${command} from ${roots.map((r) => r.source).join(', ')}.`,
      'Do not edit: change the Rust job types, export the schemas again and regenerate.',
    ],
  });
}

/** The module for the job envelope's schema (`envelope.json`): `JobEnvelope` and its parts. */
export function generateEnvelope(file, { command = 'flagship-worker-codegen' } = {}) {
  const schema = JSON.parse(fs.readFileSync(file, 'utf8'));
  return generate([{ name: 'JobEnvelope', schema, source: path.basename(file) }], {
    registry: null,
    header: [
      `Generated by ${command} from ${path.basename(file)}.`,
      'Do not edit: change src/envelope.rs, export the schemas again and regenerate.',
    ],
  });
}

function main(argv) {
  const args = [...argv];
  let registry = 'kinds';
  const at = args.indexOf('--registry');
  if (at >= 0) {
    registry = args[at + 1];
    args.splice(at, 2);
    if (!registry || !/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(registry)) {
      console.error('--registry needs a TypeScript identifier');
      return 2;
    }
  }
  if (args.length !== 2 || args[0].startsWith('-')) {
    console.error('usage: flagship-worker-codegen <schemas-dir> <out.ts> [--registry NAME]');
    return 2;
  }
  const [dir, out] = args;
  try {
    const text = generateKinds(dir, { registry });
    fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
    fs.writeFileSync(out, text);
    console.log(`wrote ${out}`);
    return 0;
  } catch (e) {
    if (e instanceof CodegenError) {
      console.error(`flagship-worker-codegen: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}

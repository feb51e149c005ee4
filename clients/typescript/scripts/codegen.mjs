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

/** The annotation `SchemaRegistry::export` adds to each kind's schema. */
export const ANNOTATION = 'x-flagship-worker';

/** Keywords that only annotate: they never change what is valid. */
const ANNOTATIONS = new Set([
  '$schema', '$comment', 'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly',
]);

/** Formats asserted, and the bounds integer formats imply. */
const INTEGER_FORMATS = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], uint16: [0, 65535],
  int32: [-2147483648, 2147483647], uint32: [0, 4294967295],
  // JavaScript numbers hold integers exactly only up to 2^53 - 1 (Zod's
  // `.int()` enforces that range); larger ones would change on the way.
  int64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], uint64: [0, Number.MAX_SAFE_INTEGER],
  int: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], uint: [0, Number.MAX_SAFE_INTEGER],
};
const STRING_FORMATS = {
  'date-time': { zod: 'z.iso.datetime({ offset: true })', rule: 'format date-time (RFC 3339, with Z or an offset)' },
  date: { zod: 'z.iso.date()', rule: 'format date (YYYY-MM-DD)' },
  uuid: { zod: 'z.uuid()', rule: 'format uuid' },
};

/** A schema the generator cannot translate faithfully. */
export class CodegenError extends Error {
  constructor(where, message) {
    super(`${where}: ${message}`);
    this.name = 'CodegenError';
  }
}

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

function withoutDefs(schema) {
  const { $defs: _defs, [ANNOTATION]: _annotation, ...rest } = schema;
  return rest;
}

/** Definitions in an order where each comes after those it uses. */
function sortDefs(irs) {
  const order = [];
  const state = new Map(); // name -> 'visiting' | 'done'
  const visit = (name, from) => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') {
      throw new CodegenError(from, `the definition ${name} refers to itself; recursive schemas are not supported`);
    }
    state.set(name, 'visiting');
    for (const ref of refsOf(irs.get(name))) visit(ref, `#/$defs/${name}`);
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of [...irs.keys()].sort()) visit(name, `#/$defs/${name}`);
  return order;
}

function refsOf(ir) {
  switch (ir.k) {
    case 'ref': return [ir.name];
    case 'union': case 'intersection': return ir.items.flatMap(refsOf);
    case 'array': return refsOf(ir.items);
    case 'nullable': return refsOf(ir.inner);
    case 'object': return [
      ...ir.props.flatMap((p) => refsOf(p.ir)),
      ...(typeof ir.additional === 'object' ? refsOf(ir.additional) : []),
    ];
    default: return [];
  }
}

// ---------------------------------------------------------------------------
// JSON Schema -> intermediate form
//
// { k: 'unknown' } | { k: 'never' } | { k: 'ref', name } | { k: 'literal', value }
// { k: 'null' } | { k: 'boolean' }
// { k: 'string', minLength?, maxLength?, pattern?, format? }
// { k: 'number', integer, minimum?, maximum?, exclusiveMinimum?, exclusiveMaximum?, multipleOf? }
// { k: 'array', items, minItems?, maxItems? }
// { k: 'object', props: [{ name, ir, required, doc }], additional: true | false | ir }
// { k: 'union', items, discriminator? } | { k: 'intersection', items } | { k: 'nullable', inner }

const TYPE_KEYWORDS = {
  string: ['minLength', 'maxLength', 'pattern', 'format'],
  integer: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'format'],
  number: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'format'],
  array: ['items', 'minItems', 'maxItems'],
  object: ['properties', 'required', 'additionalProperties'],
  boolean: [],
  null: [],
};
const STRUCTURAL = ['type', '$ref', 'const', 'enum', 'oneOf', 'anyOf', 'allOf', '$defs', ANNOTATION];
const KNOWN = new Set([...ANNOTATIONS, ...STRUCTURAL, ...Object.values(TYPE_KEYWORDS).flat()]);

function toIr(schema, where, defs) {
  if (schema === true) return { k: 'unknown' };
  if (schema === false) return { k: 'never' };
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    throw new CodegenError(where, 'a schema must be an object or a boolean');
  }
  for (const key of Object.keys(schema)) {
    if (!KNOWN.has(key) && !key.startsWith('x-')) {
      throw new CodegenError(where, `the keyword \`${key}\` is not supported by this generator`);
    }
  }
  if (schema.$defs && where.includes('#/')) {
    throw new CodegenError(where, '`$defs` is only supported at the top of a schema file');
  }
  const parts = [];
  if ('$ref' in schema) parts.push(refIr(schema.$ref, where, defs));
  if ('const' in schema) parts.push(literalIr(schema.const, `${where}/const`));
  if ('enum' in schema) {
    if (!Array.isArray(schema.enum) || schema.enum.length === 0) throw new CodegenError(`${where}/enum`, 'must be a non-empty list');
    const items = schema.enum.map((v, i) => literalIr(v, `${where}/enum/${i}`));
    parts.push(items.length === 1 ? items[0] : { k: 'union', items });
  }
  let typed = typedIr(schema, where, defs);
  if (typed && parts.length > 0 && ('const' in schema || 'enum' in schema) && plain(typed)) {
    // `type` beside `const` or `enum` (as schemars writes it) only repeats
    // the constants' type, unless they do not have it.
    const literals = parts[parts.length - 1];
    const allowed = jsonTypes(typed, defs);
    const values = literals.k === 'union' ? literals.items : [literals];
    if (!values.every((v) => [...jsonTypes(v, defs)].every((t) => allowed.has(t)))) {
      throw new CodegenError(where, 'a constant does not have the given `type`');
    }
    typed = null;
  }
  const oneOf = 'oneOf' in schema ? branchesIr(schema.oneOf, `${where}/oneOf`, defs) : null;
  if (oneOf) {
    exclusive(oneOf, `${where}/oneOf`, defs);
    if (typed && typed.k === 'object' && oneOf.every((b) => b.k === 'object')) {
      // Properties beside `oneOf` (serde's flattened enums) go into each branch.
      parts.push(unionOf(oneOf.map((b, i) => mergeObjects(typed, b, `${where}/oneOf/${i}`))));
    } else {
      if (typed) parts.push(typed);
      parts.push(unionOf(oneOf));
    }
  } else if (typed) {
    parts.push(typed);
  }
  if ('anyOf' in schema) parts.push(unionOf(branchesIr(schema.anyOf, `${where}/anyOf`, defs), false));
  if ('allOf' in schema) parts.push(...branchesIr(schema.allOf, `${where}/allOf`, defs));
  if (parts.length === 0) return { k: 'unknown' };
  if (parts.length === 1) return parts[0];
  return { k: 'intersection', items: parts };
}

/** A type with no constraint beyond the JSON type itself. */
function plain(ir) {
  switch (ir.k) {
    case 'null': case 'boolean': return true;
    case 'string': return Object.keys(ir).length === 1;
    case 'number': return Object.keys(ir).length === 2 && !ir.integer;
    case 'nullable': return plain(ir.inner);
    case 'union': return ir.items.every(plain);
    default: return false;
  }
}

function branchesIr(list, where, defs) {
  if (!Array.isArray(list) || list.length === 0) throw new CodegenError(where, 'must be a non-empty list');
  return list.map((s, i) => toIr(s, `${where}/${i}`, defs));
}

/** A union, using a discriminator property when every branch has one. */
function unionOf(items, tryDiscriminator = true) {
  const flat = items.length === 1 ? items[0] : { k: 'union', items };
  if (flat.k !== 'union') return flat;
  const nulls = flat.items.filter((i) => i.k === 'null');
  const rest = flat.items.filter((i) => i.k !== 'null');
  if (nulls.length > 0 && rest.length > 0) {
    return { k: 'nullable', inner: unionOf(rest, tryDiscriminator) };
  }
  if (tryDiscriminator && rest.every((i) => i.k === 'object')) {
    const key = discriminatorOf(rest);
    if (key) return { k: 'union', items: rest, discriminator: key };
  }
  return flat;
}

/** A property every object branch requires with a distinct constant. */
function discriminatorOf(objects) {
  const candidates = objects[0].props.filter((p) => p.required && p.ir.k === 'literal').map((p) => p.name);
  for (const name of candidates) {
    const values = objects.map((o) => o.props.find((p) => p.name === name && p.required && p.ir.k === 'literal')?.ir.value);
    if (values.some((v) => v === undefined)) continue;
    if (new Set(values.map((v) => JSON.stringify(v))).size === values.length) return name;
  }
  return null;
}

function refIr(ref, where, defs) {
  const m = typeof ref === 'string' && /^#\/\$defs\/([^/]+)$/.exec(ref);
  if (!m) throw new CodegenError(`${where}/$ref`, `only references to #/$defs/NAME are supported, not ${JSON.stringify(ref)}`);
  if (!defs.has(m[1])) throw new CodegenError(`${where}/$ref`, `there is no definition ${m[1]}`);
  if (!/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(m[1])) throw new CodegenError(`${where}/$ref`, `the definition name ${m[1]} is not a TypeScript identifier`);
  return { k: 'ref', name: m[1] };
}

function literalIr(value, where) {
  if (value === null) return { k: 'null' };
  if (['string', 'number', 'boolean'].includes(typeof value)) return { k: 'literal', value };
  throw new CodegenError(where, 'only string, number, boolean and null constants are supported');
}

function typedIr(schema, where, defs) {
  const types = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
  const used = Object.keys(schema).filter((k) => Object.values(TYPE_KEYWORDS).flat().includes(k));
  if (types.length === 0) {
    if (used.length > 0) {
      throw new CodegenError(where, `\`${used[0]}\` without \`type\` is not supported; give the type`);
    }
    return null;
  }
  for (const key of used) {
    if (!types.some((t) => TYPE_KEYWORDS[t]?.includes(key))) {
      throw new CodegenError(where, `\`${key}\` does not apply to type ${types.join(' or ')}`);
    }
  }
  const items = types.map((t) => {
    switch (t) {
      case 'null': return { k: 'null' };
      case 'boolean': return { k: 'boolean' };
      case 'string': return stringIr(schema, where);
      case 'integer': case 'number': return numberIr(schema, t === 'integer', where);
      case 'array': return arrayIr(schema, where, defs);
      case 'object': return objectIr(schema, where, defs);
      default: throw new CodegenError(`${where}/type`, `unknown type ${JSON.stringify(t)}`);
    }
  });
  return unionOf(items, false);
}

function stringIr(schema, where) {
  const ir = { k: 'string' };
  for (const key of ['minLength', 'maxLength']) {
    if (key in schema) ir[key] = nonNegativeInt(schema[key], `${where}/${key}`);
  }
  if ('pattern' in schema) {
    try {
      new RegExp(schema.pattern, 'u');
    } catch (e) {
      throw new CodegenError(`${where}/pattern`, `not a valid regular expression: ${e.message}`);
    }
    ir.pattern = schema.pattern;
  }
  if (typeof schema.format === 'string' && STRING_FORMATS[schema.format]) ir.format = schema.format;
  return ir;
}

function numberIr(schema, integer, where) {
  const ir = { k: 'number', integer };
  for (const key of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']) {
    if (key in schema) {
      if (typeof schema[key] !== 'number') throw new CodegenError(`${where}/${key}`, 'must be a number');
      ir[key] = schema[key];
    }
  }
  const bounds = integer && typeof schema.format === 'string' ? INTEGER_FORMATS[schema.format] : undefined;
  if (bounds) {
    ir.minimum = Math.max(ir.minimum ?? -Infinity, bounds[0]);
    ir.maximum = Math.min(ir.maximum ?? Infinity, bounds[1]);
    ir.format = schema.format;
  }
  return ir;
}

function arrayIr(schema, where, defs) {
  const ir = { k: 'array', items: 'items' in schema ? toIr(schema.items, `${where}/items`, defs) : { k: 'unknown' } };
  for (const key of ['minItems', 'maxItems']) {
    if (key in schema) ir[key] = nonNegativeInt(schema[key], `${where}/${key}`);
  }
  return ir;
}

function objectIr(schema, where, defs) {
  const properties = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  for (const name of required) {
    if (!(name in properties)) {
      throw new CodegenError(`${where}/required`, `${JSON.stringify(name)} is required but not among the properties`);
    }
  }
  const props = Object.entries(properties).map(([name, s]) => ({
    name,
    ir: toIr(s, `${where}/properties/${name}`, defs),
    required: required.has(name),
    doc: typeof s === 'object' ? s.description : undefined,
  }));
  let additional = true;
  if ('additionalProperties' in schema) {
    const a = schema.additionalProperties;
    additional = typeof a === 'boolean' ? a : toIr(a, `${where}/additionalProperties`, defs);
    if (typeof additional === 'object' && additional.k === 'unknown') additional = true;
  }
  return { k: 'object', props, additional };
}

function mergeObjects(base, branch, where) {
  const props = [...base.props];
  for (const p of branch.props) {
    if (props.some((q) => q.name === p.name)) {
      throw new CodegenError(where, `the property ${JSON.stringify(p.name)} is declared both beside \`oneOf\` and in a branch`);
    }
    props.push(p);
  }
  if (base.additional !== true && base.additional !== branch.additional) {
    throw new CodegenError(where, '`additionalProperties` beside `oneOf` is not supported');
  }
  return { k: 'object', props, additional: branch.additional };
}

function nonNegativeInt(value, where) {
  if (!Number.isInteger(value) || value < 0) throw new CodegenError(where, 'must be a non-negative integer');
  return value;
}

// ---------------------------------------------------------------------------
// `oneOf` means exactly one branch matches. A union means at least one; the
// two agree when no value can match two branches. Prove that, or refuse.

function exclusive(branches, where, defs) {
  const resolved = branches.map((b) => deref(b, defs));
  for (let i = 0; i < resolved.length; i++) {
    for (let j = i + 1; j < resolved.length; j++) {
      if (!disjoint(resolved[i], resolved[j], defs)) {
        throw new CodegenError(where, `branches ${i} and ${j} may both match one value, and \`oneOf\` requires exactly one; give the branches a distinct constant property (serde's tagged enums do)`);
      }
    }
  }
}

function deref(ir, defs) {
  let seen = 0;
  while (ir.k === 'ref') {
    ir = toIr(defs.get(ir.name).schema, `#/$defs/${ir.name}`, defs);
    if (++seen > 32) break;
  }
  return ir;
}

/** The JSON types a value matching `ir` can have. */
function jsonTypes(ir, defs) {
  ir = deref(ir, defs);
  switch (ir.k) {
    case 'literal': return new Set([typeof ir.value === 'number' ? 'number' : typeof ir.value]);
    case 'null': return new Set(['null']);
    case 'boolean': return new Set(['boolean']);
    case 'string': return new Set(['string']);
    case 'number': return new Set(['number']);
    case 'array': return new Set(['array']);
    case 'object': return new Set(['object']);
    case 'never': return new Set();
    case 'nullable': return new Set([...jsonTypes(ir.inner, defs), 'null']);
    case 'union': return new Set(ir.items.flatMap((i) => [...jsonTypes(i, defs)]));
    case 'intersection': {
      const sets = ir.items.map((i) => jsonTypes(i, defs));
      return new Set([...sets[0]].filter((t) => sets.every((s) => s.has(t))));
    }
    default: return new Set(['null', 'boolean', 'string', 'number', 'array', 'object']);
  }
}

function disjoint(a, b, defs) {
  const ta = jsonTypes(a, defs);
  const tb = jsonTypes(b, defs);
  if (![...ta].some((t) => tb.has(t))) return true;
  if (a.k === 'literal' && b.k === 'literal') return a.value !== b.value;
  if (a.k === 'union' && a.items.every((i) => i.k === 'literal') && b.k === 'literal') return !a.items.some((i) => i.value === b.value);
  if (b.k === 'union' && b.items.every((i) => i.k === 'literal') && a.k === 'literal') return !b.items.some((i) => i.value === a.value);
  if (a.k === 'object' && b.k === 'object') {
    for (const p of a.props) {
      const q = b.props.find((x) => x.name === p.name);
      if (p.required && q?.required && p.ir.k === 'literal' && q.ir.k === 'literal' && p.ir.value !== q.ir.value) return true;
    }
    // A closed object cannot hold a property the other one requires.
    const requiresUnknownTo = (x, y) => y.additional === false && x.props.some((p) => p.required && !y.props.some((q) => q.name === p.name));
    if (requiresUnknownTo(a, b) || requiresUnknownTo(b, a)) return true;
  }
  return false;
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
  let s = ir.format ? withMessage(STRING_FORMATS[ir.format].zod, STRING_FORMATS[ir.format].rule) : 'z.string()';
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

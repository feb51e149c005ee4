// JSON Schema -> the generator's intermediate form (see codegen.mjs): what
// each schema means, checked for keywords the generator cannot honour, and
// `oneOf` proven exclusive before it may become a union.

/** The annotation `SchemaRegistry::export` adds to each kind's schema. */
export const ANNOTATION = 'x-flagship-worker';

/** Keywords that only annotate: they never change what is valid. */
const ANNOTATIONS = new Set([
  '$schema', '$comment', 'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly',
]);

/** String formats asserted: their Rust types (chrono, uuid) refuse other text. */
export const STRING_FORMATS = ['date-time', 'date', 'uuid'];

/** The bounds integer formats imply. */
const INTEGER_FORMATS = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], uint16: [0, 65535],
  int32: [-2147483648, 2147483647], uint32: [0, 4294967295],
  // JavaScript numbers hold integers exactly only up to 2^53 - 1 (Zod's
  // `.int()` enforces that range); larger ones would change on the way.
  int64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], uint64: [0, Number.MAX_SAFE_INTEGER],
  int: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], uint: [0, Number.MAX_SAFE_INTEGER],
};

/** A schema the generator cannot translate faithfully. */
export class CodegenError extends Error {
  constructor(where, message) {
    super(`${where}: ${message}`);
    this.name = 'CodegenError';
  }
}

/** A root schema without its definitions and annotation, to translate as a type. */
export function withoutDefs(schema) {
  const { $defs: _defs, [ANNOTATION]: _annotation, ...rest } = schema;
  return rest;
}

/** Definitions in an order where each comes after those it uses. */
export function sortDefs(irs) {
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

export function toIr(schema, where, defs) {
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
  if (typeof schema.format === 'string' && STRING_FORMATS.includes(schema.format)) ir.format = schema.format;
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

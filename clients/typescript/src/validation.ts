/** Payload validation with Zod, and its issues in JSON Schema's terms. */

import type { z } from "zod";

import { PayloadError, type PayloadIssue } from "./errors.js";

/** Rules the generated schemas state in their messages. */
const RULE = /^(required|type |minimum |maximum |exclusiveMinimum |exclusiveMaximum |multipleOf |minLength |maxLength |pattern |format |minItems |maxItems )/;

/** A JSON Pointer for a Zod path. */
export function pointer(path: readonly PropertyKey[]): string {
  return path.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

/** The JSON type of a value, for messages ("string", "array", ...). */
function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

/** Whether `path` names a property or element that is absent. */
function missing(root: unknown, path: readonly PropertyKey[]): boolean {
  let at: unknown = root;
  for (const key of path) {
    if (at === null || typeof at !== "object" || !Object.prototype.hasOwnProperty.call(at, key)) return true;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at === undefined;
}

/** The value at `path`, or undefined. */
function at(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const key of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

/**
 * Turns Zod's issues into paths and rules. Rules come from the schema
 * (bounds, patterns, allowed constants) and from JSON types, never from the
 * payload's values.
 */
export function issuesOf(issues: readonly z.core.$ZodIssue[], value: unknown, base: readonly PropertyKey[] = []): PayloadIssue[] {
  const out: PayloadIssue[] = [];
  for (const issue of issues) {
    const path = [...base, ...issue.path];
    const push = (rule: string): void => {
      out.push({ path: pointer(path), rule });
    };
    switch (issue.code) {
      case "invalid_type":
        if (missing(value, path)) push("required");
        else push(`type: expected ${issue.expected === "int" ? "integer" : issue.expected}, got ${jsonType(at(value, path))}`);
        break;
      case "too_small":
      case "too_big": {
        if (RULE.test(issue.message)) {
          push(issue.message);
          break;
        }
        const small = issue.code === "too_small";
        const bound = small ? (issue as { minimum: unknown }).minimum : (issue as { maximum: unknown }).maximum;
        const what =
          issue.origin === "array" || issue.origin === "set"
            ? small ? "minItems" : "maxItems"
            : issue.origin === "string"
              ? small ? "minLength" : "maxLength"
              : small ? "minimum" : "maximum";
        const safe = issue.origin === "int" ? " (JavaScript's safe integers)" : "";
        push(`${what} ${String(bound)}${safe}`);
        break;
      }
      case "invalid_format":
        push(RULE.test(issue.message) ? issue.message : issue.format === "regex" ? `pattern ${String((issue as { pattern?: unknown }).pattern)}` : `format ${issue.format}`);
        break;
      case "not_multiple_of":
        push(`multipleOf ${String(issue.divisor)}`);
        break;
      case "invalid_value":
        push(`one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`);
        break;
      case "unrecognized_keys":
        push(`additionalProperties false: unknown ${issue.keys.length === 1 ? "property" : "properties"} ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}`);
        break;
      case "invalid_union": {
        const u = issue as z.core.$ZodIssueInvalidUnion & { discriminator?: string; options?: unknown[] };
        if (u.discriminator !== undefined) {
          const allowed = (u.options ?? []).map((o) => JSON.stringify(o)).join(", ");
          push(missing(value, path) ? `required (one of ${allowed})` : `one of ${allowed}`);
          break;
        }
        // None of the alternatives matched: report the closest one's
        // problems: the fewest, and among those the deepest (the branch
        // that got furthest into the value).
        const depth = (b: PayloadIssue[]): number => Math.max(...b.map((i) => i.path.split("/").length));
        const branches = u.errors.map((errs) => issuesOf(errs, value, path));
        const closest = branches
          .filter((b) => b.length > 0)
          .sort((a, b) => a.length - b.length || depth(b) - depth(a))[0];
        if (!closest) {
          push(`oneOf: none of the ${u.errors.length} alternatives matched`);
          break;
        }
        out.push(...closest.map((i) => ({ path: i.path, rule: `${i.rule} (closest of ${u.errors.length} alternatives)` })));
        break;
      }
      case "invalid_key":
      case "invalid_element":
        out.push(...issuesOf(issue.issues, value, path));
        break;
      default:
        push(issue.message);
    }
  }
  return out;
}

/**
 * Checks `value` (the payload as the worker will read it: parsed from the
 * JSON that is sent) against `schema`; throws a {@link PayloadError}.
 */
export function validatePayload(kind: string, schema: z.ZodType, value: unknown, index?: number): void {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new PayloadError(kind, issuesOf(result.error.issues, value), index);
  }
}

/** Job kinds as a producer knows them: name, queue, payload schema. */

import type { z } from "zod";

/** One job kind: where its jobs go and what their payload must look like. */
export interface KindSpec<S extends z.ZodType = z.ZodType> {
  /** The kind's wire name (`Job::KIND` in Rust), e.g. `audit-event`. */
  readonly kind: string;
  /** The queue its jobs go to (`Job::QUEUE`). */
  readonly queue: string;
  /** The payload's schema, generated from the kind's JSON Schema. */
  readonly schema: S;
  /**
   * The idempotency key a payload implies (`Job::idempotency_key` in Rust),
   * used when the enqueue options give none.
   */
  readonly idempotencyKey?: ((payload: z.output<S>) => string | undefined) | undefined;
}

/**
 * A kind of any payload type, as a registry holds it: each kind's
 * `idempotencyKey` takes its own payload type.
 */
export interface AnyKindSpec {
  readonly kind: string;
  readonly queue: string;
  readonly schema: z.ZodType;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly idempotencyKey?: ((payload: any) => string | undefined) | undefined;
}

/** Job kinds by name, as generated (`kinds`) or combined with spread. */
export type KindRegistry = { readonly [kind: string]: AnyKindSpec };

/** The names of a registry's kinds. */
export type KindName<K extends KindRegistry> = keyof K & string;

/** The payload type of kind `N`. */
export type PayloadOf<K extends KindRegistry, N extends KindName<K>> = z.input<K[N]["schema"]>;

/** The longest job kind or queue name accepted, in bytes. */
export const MAX_NAME_LEN = 128;
const NAME = /^[A-Za-z0-9:._-]+$/;

/** Whether `name` is a valid job kind or queue name (1 to 128 of `A-Z a-z 0-9 : - _ .`). */
export function validName(name: string): boolean {
  return name.length >= 1 && name.length <= MAX_NAME_LEN && NAME.test(name);
}

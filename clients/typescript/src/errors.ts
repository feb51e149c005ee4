/**
 * The errors a producer throws. None of them repeats a payload value: they
 * name where the problem is and which rule it broke.
 */

/** One reason a payload was refused. */
export interface PayloadIssue {
  /** JSON Pointer to the offending value inside the payload (`""` is the root). */
  readonly path: string;
  /** The schema rule it broke, e.g. `pattern ^[a-z]+$`, `minItems 1`, `required`. */
  readonly rule: string;
}

/** Where a JSON Pointer points, in words. */
export function describePath(path: string): string {
  return path === "" ? "the payload's root" : `\`${path}\``;
}

/** A payload that its job kind's schema refuses. Nothing was enqueued. */
export class PayloadError extends Error {
  override readonly name = "PayloadError";
  /** The job kind whose schema refused the payload. */
  readonly kind: string;
  /** Every problem found, the first one in the message. */
  readonly issues: readonly PayloadIssue[];
  /** The job's position in the batch, for `enqueueBatch`. */
  readonly index: number | undefined;

  constructor(kind: string, issues: readonly PayloadIssue[], index?: number) {
    const first = issues[0] ?? { path: "", rule: "invalid" };
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : "";
    const job = index === undefined ? "" : ` (job ${index} of the batch)`;
    super(
      `invalid payload for job kind \`${kind}\`${job} at ${describePath(first.path)}: ${first.rule}${more}; ` +
        "fix the payload, nothing was enqueued",
    );
    this.kind = kind;
    this.issues = issues;
    this.index = index;
  }

  /** JSON Pointer of the first problem. */
  get path(): string {
    return this.issues[0]?.path ?? "";
  }

  /** The rule of the first problem. */
  get rule(): string {
    return this.issues[0]?.rule ?? "invalid";
  }
}

/** A payload larger than the limit. Nothing was enqueued. */
export class PayloadTooLargeError extends Error {
  override readonly name = "PayloadTooLargeError";

  constructor(
    /** The job kind. */
    readonly kind: string,
    /** The payload's size as JSON, in bytes. */
    readonly size: number,
    /** The limit, in bytes. */
    readonly limit: number,
  ) {
    super(
      `payload of ${size} bytes for job kind \`${kind}\` exceeds the limit of ${limit} bytes; store large data ` +
        "elsewhere and enqueue a reference to it (the workers refuse it too unless their limit is raised)",
    );
  }
}

/** A job kind the producer was not given. Nothing was enqueued. */
export class UnknownKindError extends Error {
  override readonly name = "UnknownKindError";

  constructor(readonly kind: string) {
    super(`unknown job kind \`${kind}\`: pass its schema in the producer's \`kinds\` (generate it with flagship-worker-codegen)`);
  }
}

/** Enqueue options or producer settings that cannot be used. Nothing was enqueued. */
export class InvalidOptionsError extends Error {
  override readonly name = "InvalidOptionsError";
}

/** Redis refused or failed the enqueue. Jobs of other calls in the same batch may be stored. */
export class BrokerError extends Error {
  override readonly name = "BrokerError";
}

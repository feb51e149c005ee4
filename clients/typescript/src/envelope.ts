/**
 * Building the job envelope exactly as the Rust side writes it
 * (`src/envelope.rs`, `docs/schemas/envelope.json`), and the enqueue options.
 */

import { InvalidOptionsError, PayloadTooLargeError } from "./errors.js";
import type { AnyKindSpec } from "./kinds.js";
import { uuidv7 } from "./uuid.js";
import { validatePayload } from "./validation.js";

/** The envelope version this package writes. */
export const ENVELOPE_VERSION = 1;
/** Default largest payload, in bytes of JSON: 1 MiB, as the workers' default. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;
/** The longest idempotency key accepted, in bytes of UTF-8. */
export const MAX_IDEMPOTENCY_KEY_BYTES = 512;
/** The most retries a job may ask for. */
export const MAX_RETRIES = 1000;
/** The lowest job priority (reserved last). */
export const MIN_PRIORITY = -10;
/** The highest job priority (reserved first). */
export const MAX_PRIORITY = 10;
/** The furthest ahead a job may be scheduled: about ten years (3,660 days). */
export const MAX_SCHEDULE_AHEAD_MS = 10 * 366 * 24 * 3600 * 1000;

/** How one job is enqueued. */
export interface EnqueueOptions {
  /** Run no earlier than this time. */
  readonly runAt?: Date;
  /** Run after this many milliseconds (rounded up). Not together with `runAt`. */
  readonly delayMs?: number;
  /** Makes the enqueue idempotent; overrides the key the kind derives from the payload. */
  readonly idempotencyKey?: string;
  /** Overrides the queue's retry policy's number of retries for this job (0 to 1,000). */
  readonly maxRetries?: number;
  /**
   * Reservation priority within the queue, an integer from -10 to 10
   * (default 0): a higher priority is reserved first; jobs of one priority
   * are reserved oldest first.
   */
  readonly priority?: number;
}

/** A job ready to send: its id, envelope JSON, delay and key, as the script takes them. */
export interface PreparedJob {
  /** The new job's id (UUID v7). */
  readonly id: string;
  /** The queue the job goes to. */
  readonly queue: string;
  /** The envelope, as JSON. */
  readonly envelope: string;
  /** Milliseconds until the job may run (0: now); Redis adds it to its own clock. */
  readonly delayMs: number;
  /** The idempotency key, or `""` for none. */
  readonly idempotencyKey: string;
}

/** The last time written into an envelope: a batch's jobs share it. */
let lastTime = Number.NaN;
let lastIso = "";

function iso(ms: number): string {
  if (ms !== lastTime) {
    lastTime = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** The envelope's opening (`{"v":1,"id":"`) and the kind and queue fields, per kind. */
const heads = new WeakMap<AnyKindSpec, string>();

function head(spec: AnyKindSpec): string {
  let text = heads.get(spec);
  if (text === undefined) {
    text = `","type":${JSON.stringify(spec.kind)},"queue":${JSON.stringify(spec.queue)},"payload":`;
    heads.set(spec, text);
  }
  return text;
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/** The run time and delay the options ask for, checked against `now`. */
function schedule(options: EnqueueOptions, now: number): { runAt: number; delayMs: number } {
  const { runAt, delayMs } = options;
  if (runAt !== undefined && delayMs !== undefined) {
    throw new InvalidOptionsError("give either `runAt` or `delayMs` in the enqueue options, not both");
  }
  let at = now;
  if (runAt !== undefined) {
    at = runAt instanceof Date ? runAt.getTime() : Number.NaN;
    if (!Number.isFinite(at)) throw new InvalidOptionsError("`runAt` must be a valid Date");
  } else if (delayMs !== undefined) {
    if (typeof delayMs !== "number" || !Number.isFinite(delayMs) || delayMs < 0) {
      throw new InvalidOptionsError("`delayMs` must be a finite number of milliseconds, at least 0");
    }
    at = now + Math.ceil(delayMs);
  }
  if (at > now + MAX_SCHEDULE_AHEAD_MS) {
    throw new InvalidOptionsError("the run time is more than ten years ahead; was a delay given in the wrong unit?");
  }
  return { runAt: at, delayMs: Math.max(0, at - now) };
}

function checkKey(key: string): void {
  const bytes = utf8Bytes(key);
  if (bytes < 1 || bytes > MAX_IDEMPOTENCY_KEY_BYTES) {
    throw new InvalidOptionsError(`idempotency key must be 1 to ${MAX_IDEMPOTENCY_KEY_BYTES} bytes, got ${bytes}`);
  }
}

function checkPriority(priority: number): void {
  if (!Number.isInteger(priority) || priority < MIN_PRIORITY || priority > MAX_PRIORITY) {
    throw new InvalidOptionsError(`\`priority\` must be an integer from ${MIN_PRIORITY} to ${MAX_PRIORITY}`);
  }
}

function checkRetries(retries: number): void {
  if (!Number.isInteger(retries) || retries < 0 || retries > MAX_RETRIES) {
    throw new InvalidOptionsError(`\`maxRetries\` must be an integer from 0 to ${MAX_RETRIES}`);
  }
}

/**
 * Validates a payload and builds its job: the envelope JSON in the Rust
 * field order (`v, id, type, queue, payload, idempotency_key, attempt,
 * max_retries, priority, enqueued_at, run_at, attempts`), with the payload checked as
 * the worker will read it, i.e. parsed back from the JSON sent.
 */
export function prepareJob(
  spec: AnyKindSpec,
  payload: unknown,
  options: EnqueueOptions,
  now: number,
  maxPayloadBytes: number,
  index?: number,
): PreparedJob {
  const json = JSON.stringify(payload);
  if (json === undefined) {
    throw new InvalidOptionsError(`the payload of job kind \`${spec.kind}\` is not JSON (undefined or a function)`);
  }
  const size = utf8Bytes(json);
  if (size > maxPayloadBytes) throw new PayloadTooLargeError(spec.kind, size, maxPayloadBytes);
  const sent: unknown = JSON.parse(json);
  validatePayload(spec.kind, spec.schema, sent, index);

  const key = options.idempotencyKey ?? spec.idempotencyKey?.(sent) ?? "";
  if (options.idempotencyKey !== undefined || key !== "") checkKey(key);
  if (options.maxRetries !== undefined) checkRetries(options.maxRetries);
  if (options.priority !== undefined) checkPriority(options.priority);
  const { runAt, delayMs } = schedule(options, now);

  const id = uuidv7(now);
  const enqueuedAt = iso(now);
  const runAtText = runAt === now ? enqueuedAt : new Date(runAt).toISOString();
  const envelope =
    `{"v":${ENVELOPE_VERSION},"id":"${id}${head(spec)}${json},` +
    (key !== "" ? `"idempotency_key":${JSON.stringify(key)},` : "") +
    `"attempt":0,` +
    (options.maxRetries !== undefined ? `"max_retries":${options.maxRetries},` : "") +
    (options.priority !== undefined && options.priority !== 0 ? `"priority":${options.priority},` : "") +
    `"enqueued_at":"${enqueuedAt}","run_at":"${runAtText}","attempts":[]}`;
  return { id, queue: spec.queue, envelope, delayMs, idempotencyKey: key };
}

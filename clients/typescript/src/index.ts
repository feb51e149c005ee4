/**
 * Enqueue flagship-worker jobs from TypeScript.
 *
 * - {@link Producer}: enqueue and batch enqueue over ioredis, with the Redis
 *   broker's own enqueue script, delays, run times and idempotency keys.
 * - {@link flagshipKinds} and the generated `…Job` types and `…JobSchema`
 *   Zod schemas of the FlagShip job kinds; `flagship-worker-codegen`
 *   generates the same for an application's own kinds.
 * - The contract: {@link PROTOCOL_VERSION}, {@link ENQUEUE_SCRIPT},
 *   {@link ENVELOPE_VERSION} (see docs/interop.md and docs/redis.md).
 */

export { Producer, MAX_BATCH, QUEUES_KEY, enqueueKeys } from "./producer.js";
export type { EnqueueOutcome, JobRequest, ProducerOptions } from "./producer.js";
export {
  DEFAULT_MAX_PAYLOAD_BYTES,
  ENVELOPE_VERSION,
  MAX_IDEMPOTENCY_KEY_BYTES,
  MAX_PRIORITY,
  MAX_RETRIES,
  MAX_SCHEDULE_AHEAD_MS,
  MIN_PRIORITY,
  prepareJob,
} from "./envelope.js";
export type { EnqueueOptions, PreparedJob } from "./envelope.js";
export {
  BrokerError,
  InvalidOptionsError,
  PayloadError,
  PayloadTooLargeError,
  UnknownKindError,
  describePath,
} from "./errors.js";
export type { PayloadIssue } from "./errors.js";
export { validName } from "./kinds.js";
export type { AnyKindSpec, KindName, KindRegistry, KindSpec, PayloadOf } from "./kinds.js";
export { ENQUEUE_SCRIPT, ENQUEUE_SCRIPT_SHA1, PROTOCOL_VERSION, statedProtocol } from "./script.js";
export { uuidv7 } from "./uuid.js";
export { issuesOf, validatePayload } from "./validation.js";
export { flagshipKinds, PRODUCER_KINDS } from "./flagship.js";
export * from "./generated/flagship.js";
export * from "./generated/envelope.js";

/** The {@link Producer}: enqueues jobs into flagship-worker's Redis broker. */

import { Redis, type RedisOptions } from "ioredis";

import { DEFAULT_MAX_PAYLOAD_BYTES, prepareJob, type EnqueueOptions, type PreparedJob } from "./envelope.js";
import { BrokerError, InvalidOptionsError, UnknownKindError } from "./errors.js";
import { validName, type KindName, type KindRegistry, type AnyKindSpec, type PayloadOf } from "./kinds.js";
import { ENQUEUE_SCRIPT, ENQUEUE_SCRIPT_SHA1 } from "./script.js";

/** The most jobs one script call carries (the Rust broker's `MAX_BATCH`); larger batches are split and pipelined. */
export const MAX_BATCH = 1000;
/** The set of every queue name in use, read by workers' admin tools (`Broker::queues`). */
export const QUEUES_KEY = "flagship-worker:queues";

/** What happened to one job, like the Rust client's `EnqueueOutcome`. */
export type EnqueueOutcome =
  /** Stored under this new id. */
  | { readonly status: "enqueued"; readonly id: string }
  /**
   * Not stored: the job with this id already holds the idempotency key (or,
   * when a batch is sent again after a lost reply, this job itself).
   */
  | { readonly status: "duplicate"; readonly id: string };

/** One job of a batch. */
export type JobRequest<K extends KindRegistry> = {
  [N in KindName<K>]: { readonly kind: N; readonly payload: PayloadOf<K, N>; readonly options?: EnqueueOptions };
}[KindName<K>];

/** How a {@link Producer} is set up. */
export interface ProducerOptions<K extends KindRegistry> {
  /** The job kinds it may enqueue, e.g. `flagshipKinds` or a generated registry. */
  readonly kinds: K;
  /**
   * The connection (single Redis; Redis Cluster is not supported yet, as in
   * the Rust broker). The caller owns it unless the producer was made with
   * {@link Producer.connect}.
   */
  readonly redis: Redis;
  /** Payloads larger than this, in bytes of JSON, are refused (default 1 MiB, as the workers). */
  readonly maxPayloadBytes?: number;
  /** The clock for `enqueued_at` and delays (default `Date.now`); due times then come from Redis's clock. */
  readonly now?: () => number;
}

/** One script call: a queue's keys and the ARGV of its jobs. */
interface ScriptCall {
  readonly keys: readonly string[];
  readonly argv: readonly string[];
  readonly jobs: readonly number[];
}

/** The enqueue script's KEYS for `queue`, in the script's order. */
export function enqueueKeys(queue: string): string[] {
  const tag = `{${queue}}`;
  return ["jobs", "ready", "scheduled", "unique", "completed-keys", "job-keys", "wake"].map((k) => `${tag}:${k}`);
}

function isNoScript(e: unknown): boolean {
  return e instanceof Error && e.message.startsWith("NOSCRIPT");
}

function brokerError(e: unknown): BrokerError {
  const message = e instanceof Error ? e.message : String(e);
  if (message.startsWith("OOM")) {
    return new BrokerError(
      `Redis is out of memory (maxmemory reached) and refused the enqueue; nothing was stored by that call. Drain or purge queues, or raise \`maxmemory\` (${message})`,
      { cause: e },
    );
  }
  if (message.startsWith("NOPERM")) {
    return new BrokerError(`the Redis user may not run EVALSHA, SCRIPT LOAD or SADD; grant them in the ACL (${message})`, { cause: e });
  }
  return new BrokerError(`Redis refused or failed the enqueue (${message})`, { cause: e });
}

/**
 * Enqueues jobs with the Redis broker's own enqueue script, validating every
 * payload with its kind's Zod schema first (nothing is sent when one is
 * invalid).
 *
 * ```ts
 * import { Redis } from "ioredis";
 * import { Producer, flagshipKinds } from "@flagship-worker/client";
 *
 * const producer = new Producer({ redis: new Redis(process.env.REDIS_URL!), kinds: flagshipKinds });
 * const outcome = await producer.enqueue("audit-event", { event: { ... } });
 * ```
 */
export class Producer<K extends KindRegistry> {
  /** The connection every call uses. */
  readonly redis: Redis;
  /** The kinds this producer may enqueue. */
  readonly kinds: K;
  /** The payload size limit in bytes of JSON. */
  readonly maxPayloadBytes: number;
  /** Where `enqueued_at` and delays are measured. */
  private readonly now: () => number;
  /** Queues this producer has added to the queue registry. */
  private readonly registered = new Set<string>();
  /** Whether {@link close} quits the connection (it was made by {@link connect}). */
  private readonly owned: boolean;

  constructor(options: ProducerOptions<K>, owned = false) {
    for (const [name, spec] of Object.entries(options.kinds) as [string, AnyKindSpec][]) {
      if (spec.kind !== name) throw new InvalidOptionsError(`the kind registered as \`${name}\` calls itself \`${spec.kind}\``);
      if (!validName(spec.kind)) throw new InvalidOptionsError(`job kind \`${name}\` must be 1 to 128 ASCII letters, digits or \`: - _ .\``);
      if (!validName(spec.queue)) throw new InvalidOptionsError(`queue \`${spec.queue}\` of job kind \`${name}\` must be 1 to 128 ASCII letters, digits or \`: - _ .\``);
    }
    const limit = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (!Number.isInteger(limit) || limit < 1) throw new InvalidOptionsError("`maxPayloadBytes` must be a positive integer");
    this.redis = options.redis;
    this.kinds = options.kinds;
    this.maxPayloadBytes = limit;
    this.now = options.now ?? Date.now;
    this.owned = owned;
  }

  /** A producer on its own connection to `url` (`redis://[user:password@]host:port[/db]`); {@link close} quits it. */
  static connect<K extends KindRegistry>(
    url: string,
    options: Omit<ProducerOptions<K>, "redis"> & { readonly redisOptions?: Omit<RedisOptions, "replyMapping"> },
  ): Producer<K> {
    const redis = options.redisOptions ? new Redis(url, options.redisOptions) : new Redis(url);
    return new Producer({ ...options, redis }, true);
  }

  /** Quits the connection if {@link connect} made it; otherwise the caller closes its own. */
  async close(): Promise<void> {
    if (this.owned) await this.redis.quit();
  }

  private spec(kind: string): AnyKindSpec {
    const spec = Object.prototype.hasOwnProperty.call(this.kinds, kind) ? this.kinds[kind] : undefined;
    if (!spec) throw new UnknownKindError(kind);
    return spec;
  }

  /**
   * Validates a job and builds what would be sent, without sending it: the
   * id, the envelope JSON, the delay and the idempotency key.
   */
  prepare<N extends KindName<K>>(kind: N, payload: PayloadOf<K, N>, options: EnqueueOptions = {}): PreparedJob {
    return prepareJob(this.spec(kind), payload, options, this.now(), this.maxPayloadBytes);
  }

  /** Enqueues one job: run now, after `delayMs`, or at `runAt`, with an optional idempotency key. */
  async enqueue<N extends KindName<K>>(kind: N, payload: PayloadOf<K, N>, options: EnqueueOptions = {}): Promise<EnqueueOutcome> {
    const [outcome] = await this.send([this.prepare(kind, payload, options)]);
    if (!outcome) throw new BrokerError("Redis returned no enqueue outcome");
    return outcome;
  }

  /**
   * Enqueues many jobs, of any kinds, in as few round trips as possible: one
   * script call per queue and 1,000 jobs, all in one pipeline. Either every
   * job is valid and the batch is sent, or nothing is; outcomes come in the
   * jobs' order.
   */
  async enqueueBatch(jobs: ReadonlyArray<JobRequest<K>>): Promise<EnqueueOutcome[]> {
    const now = this.now();
    const prepared = jobs.map((job, i) =>
      prepareJob(this.spec(job.kind), job.payload, job.options ?? {}, now, this.maxPayloadBytes, i),
    );
    return this.send(prepared);
  }

  /** Sends prepared jobs: registers new queues, then runs the script per queue slice. */
  private async send(jobs: readonly PreparedJob[]): Promise<EnqueueOutcome[]> {
    if (jobs.length === 0) return [];
    const calls = this.calls(jobs);
    await this.register(jobs);
    const replies = await this.run(calls);
    const outcomes: (EnqueueOutcome | undefined)[] = new Array(jobs.length);
    calls.forEach((call, c) => {
      const reply = replies[c];
      if (!Array.isArray(reply) || reply.length !== call.jobs.length) {
        throw new BrokerError("the enqueue script returned an unexpected reply; is the Redis a flagship-worker broker of this protocol?");
      }
      call.jobs.forEach((j, k) => {
        const entry: unknown = reply[k];
        const id = (jobs[j] as PreparedJob).id;
        if (entry === 1) outcomes[j] = { status: "enqueued", id };
        else if (typeof entry === "string") outcomes[j] = { status: "duplicate", id: entry };
        else throw new BrokerError("the enqueue script returned an entry that is neither 1 nor a job id");
      });
    });
    return outcomes as EnqueueOutcome[];
  }

  /** Groups jobs by queue in first-seen order, in slices of at most {@link MAX_BATCH}. */
  private calls(jobs: readonly PreparedJob[]): ScriptCall[] {
    const open = new Map<string, { keys: string[]; argv: string[]; jobs: number[] }>();
    const calls: ScriptCall[] = [];
    jobs.forEach((job, i) => {
      let call = open.get(job.queue);
      if (!call || call.jobs.length >= MAX_BATCH) {
        call = { keys: enqueueKeys(job.queue), argv: [], jobs: [] };
        open.set(job.queue, call);
        calls.push(call);
      }
      call.argv.push(job.id, job.envelope, String(job.delayMs), job.idempotencyKey);
      call.jobs.push(i);
    });
    return calls;
  }

  /** Adds queues this producer has not registered yet to the queue registry (`SADD`, outside any hash tag). */
  private async register(jobs: readonly PreparedJob[]): Promise<void> {
    const fresh = [...new Set(jobs.map((j) => j.queue))].filter((q) => !this.registered.has(q));
    if (fresh.length === 0) return;
    try {
      await this.redis.sadd(QUEUES_KEY, ...fresh);
    } catch (e) {
      throw brokerError(e);
    }
    for (const q of fresh) this.registered.add(q);
  }

  /** Runs the calls with `EVALSHA` (pipelined), loading the script once if Redis lost it. */
  private async run(calls: readonly ScriptCall[]): Promise<unknown[]> {
    const evalsha = (call: ScriptCall): (string | number)[] => [ENQUEUE_SCRIPT_SHA1, call.keys.length, ...call.keys, ...call.argv];
    if (calls.length === 1) {
      const call = calls[0] as ScriptCall;
      try {
        return [await this.redis.evalsha(...(evalsha(call) as [string, number, ...string[]]))];
      } catch (e) {
        if (!isNoScript(e)) throw brokerError(e);
      }
      try {
        await this.redis.script("LOAD", ENQUEUE_SCRIPT);
        return [await this.redis.evalsha(...(evalsha(call) as [string, number, ...string[]]))];
      } catch (e) {
        throw brokerError(e);
      }
    }
    const pipeline = this.redis.pipeline();
    for (const call of calls) pipeline.evalsha(...(evalsha(call) as [string, number, ...string[]]));
    const results = (await pipeline.exec()) ?? [];
    const missing = results.map((r, i) => (r && isNoScript(r[0]) ? i : -1)).filter((i) => i >= 0);
    if (missing.length > 0) {
      // A call that found no script did nothing: load it and run those again.
      const again = this.redis.pipeline();
      again.script("LOAD", ENQUEUE_SCRIPT);
      for (const i of missing) again.evalsha(...(evalsha(calls[i] as ScriptCall) as [string, number, ...string[]]));
      const rerun = (await again.exec()) ?? [];
      missing.forEach((i, k) => {
        results[i] = rerun[k + 1] as [Error | null, unknown];
      });
    }
    if (results.length !== calls.length) throw new BrokerError("Redis returned fewer replies than script calls");
    return results.map((r) => {
      if (!r) throw new BrokerError("Redis returned no reply for an enqueue call");
      if (r[0]) throw brokerError(r[0]);
      return r[1];
    });
  }
}

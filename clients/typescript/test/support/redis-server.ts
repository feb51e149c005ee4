/**
 * A private `redis-server` per test file, on a free port, killed at the end.
 * Without the binary the tests skip with a printed notice, unless
 * `FLAGSHIP_REQUIRE_REDIS=1` (CI), which makes them fail instead.
 */

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Redis } from "ioredis";

const BINARY = process.env.FLAGSHIP_REDIS_SERVER ?? "redis-server";

/** Whether redis-server runs here; prints why tests skip, or throws when they may not. */
export function redisAvailable(): boolean {
  const ok = spawnSync(BINARY, ["--version"], { stdio: "ignore" }).status === 0;
  if (ok) return true;
  if (process.env.FLAGSHIP_REQUIRE_REDIS === "1") {
    throw new Error("FLAGSHIP_REQUIRE_REDIS=1 but redis-server cannot run; install it or set FLAGSHIP_REDIS_SERVER");
  }
  console.error("SKIPPED: redis-server not found (set FLAGSHIP_REDIS_SERVER, or install it); set FLAGSHIP_REQUIRE_REDIS=1 to fail instead");
  return false;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A running redis-server owned by a test. */
export class RedisServer {
  private constructor(
    /** The port it listens on. */
    readonly port: number,
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  /** `redis://127.0.0.1:<port>`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** A new connection (the caller quits it). */
  connect(): Redis {
    return new Redis(this.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
  }

  /**
   * Starts a server on a free port and waits until it answers PING. With
   * `cluster`, it is a one-node cluster serving every slot: Redis then
   * refuses any command or script whose keys span two slots (`CROSSSLOT`).
   */
  static async start({ cluster = false }: { cluster?: boolean } = {}): Promise<RedisServer> {
    for (let tries = 0; tries < 5; tries++) {
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), "flagship-ts-redis-"));
      const child = spawn(
        BINARY,
        [
          ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no"],
          ...(cluster ? ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] : []),
        ],
        { stdio: "ignore" },
      );
      const kill = (): void => {
        child.kill("SIGKILL");
      };
      process.once("exit", kill);
      const server = new RedisServer(port, child, dir);
      if (await server.ready()) {
        if (cluster) await server.serveEverySlot();
        return server;
      }
      await server.stop();
    }
    throw new Error("redis-server would not start on a free port");
  }

  private async ready(): Promise<boolean> {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) return false;
      const probe = new Redis(this.port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on("error", () => {});
      try {
        await probe.connect();
        if ((await probe.ping()) === "PONG") return true;
      } catch {
        // Not listening yet.
      } finally {
        probe.disconnect();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  private async serveEverySlot(): Promise<void> {
    const redis = this.connect();
    try {
      await redis.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383");
      const deadline = Date.now() + 10_000;
      while (!String(await redis.call("CLUSTER", "INFO")).includes("cluster_state:ok")) {
        if (Date.now() > deadline) throw new Error("the one-node cluster did not come up");
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      redis.disconnect();
    }
  }

  /** Kills the server and removes its directory. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

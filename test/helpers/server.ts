import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../src/observability/logger.js";
import { startServer, type RunningServer, type ServerConfig } from "../../src/server.js";
import { createTestDatabase } from "./postgres.js";

export type StoreKind = "sqlite" | "postgres";
export const STORE_KINDS: StoreKind[] = ["sqlite", "postgres"];

/** Collected log records of an in-process server. */
export interface TestLog {
  lines: Record<string, unknown>[];
}

export function memoryLogger(): { logger: Logger; log: TestLog } {
  const log: TestLog = { lines: [] };
  const destination = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) log.lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger({ format: "json", level: "debug", destination }), log };
}

export interface TestServer extends RunningServer {
  log: TestLog;
  dataDir: string;
  /** The PostgreSQL database of a postgres server. */
  databaseUrl?: string;
  fatal: Error[];
  stop(): Promise<void>;
}

/**
 * A real server on 127.0.0.1, port 0, on a fresh SQLite data dir or a fresh PostgreSQL
 * database. RBAC enforcement is off unless overridden (the tests of other features call
 * without credentials; test/rbac.test.ts turns it on).
 */
export async function startTestServer(kind: StoreKind = "sqlite", overrides: Partial<ServerConfig> = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-test-"));
  const database = kind === "postgres" ? await createTestDatabase() : undefined;
  const { logger, log } = memoryLogger();
  const fatal: Error[] = [];
  const server = await startServer(
    { listen: "127.0.0.1:0", dataDir, postgresUrl: database?.url, busyTimeoutMs: 2000, rbacEnforcement: false, ...overrides },
    { logger, onFatal: (err) => fatal.push(err) },
  );
  return {
    ...server,
    log,
    dataDir,
    databaseUrl: database?.url,
    fatal,
    async stop() {
      await server.close();
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

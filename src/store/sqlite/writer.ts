/**
 * The SQLite writer thread. It owns the only write connection of the store, applies the
 * schema migrations at start, and commits ingest batches durably.
 *
 * The same transactions carry the fleet writes (releases, acks, nodes) and the rollout
 * writes (plans, status changes with their node moves and audit records), each in its own
 * savepoint, so an ack storm is committed in groups too.
 *
 * Group commit: batches that arrive while a commit waits on fsync are committed together
 * in the next transaction, each inside its own savepoint. A batch that fails rolls back to
 * its savepoint alone (all of it or none, as always); the others commit. Every batch is
 * answered only after the commit that holds it is durable, so an answered batch survives
 * kill -9 and power loss. Running writes here also keeps the server's event loop free while
 * a commit waits on the disk or on another process's write lock.
 */
import { closeSync, existsSync, openSync, unlinkSync, writeSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import type Database from "better-sqlite3";
import { migrationsFolder } from "../../paths.js";
import { EVENT_COLUMNS } from "../event-rows.js";
import { placeholderNames } from "../prepared-queries.js";
import { openConnection, type SqliteConnectionOptions } from "./connection.js";
import { classifySqliteError, type SqliteFailure } from "./errors.js";
import { AbortedError, ConflictError, FailedPreconditionError, NotFoundError } from "../../domain/errors.js";
import { prepareFleetWrites, type FleetWrite, type FleetWriteResults } from "./fleet-writes.js";
import { prepareAuditWrites } from "./audit-writes.js";
import { withInserted } from "../../domain/audit.js";
import type { AuditRow } from "../rollout-rows.js";
import { prepareRbacWrites, type RbacWrite, type RbacWriteResults } from "./rbac.js";
import { prepareWorkloadWrites, type WorkloadWrite, type WorkloadWriteResults } from "./workloads.js";
import { prepareEnrollmentWrites, type EnrollmentWrite, type EnrollmentWriteResults } from "./enrollment.js";
import { prepareRolloutWrites, type RolloutWrite } from "./rollout-writes.js";
import { prepareOperationWrites, type OperationWrite, type OperationWriteResults } from "./operation-writes.js";
import type { RolloutRecord } from "../rollout-rows.js";
import type { OpenedStage } from "../rollout-opening.js";
import type { WriteHandlers } from "./write-ops.js";
import { events } from "./schema.js";
import { prepareEventDeletes, type DeleteEventsResult, type DeleteEventsWrite } from "./event-maintenance.js";

/**
 * An event batch to store (its rows flattened, EVENT_COLUMNS.length values per row), a
 * fleet write, or the request to stop.
 */
/** One request: an event batch or a write. */
export type WriterWork = { id: number; rows: unknown[]; audit?: AuditRow } | { id: number; write: StoreWrite };
/** A message to this thread: requests (several per message), or the close. */
export type WriterRequest = WriterWork[] | { close: true };
/** A write of the fleet or rollout tables. */
export type StoreWrite = FleetWrite | RolloutWrite | RbacWrite | EnrollmentWrite | WorkloadWrite | OperationWrite | DeleteEventsWrite;
/**
 * Writes that make room: allowed at --max-db-size (into the reserve above it), so that the
 * way out of a full database — an audit prune, revoking what flooded it — still works.
 */
const RELIEF_OPS: ReadonlySet<string> = new Set<StoreWrite["op"]>(["pruneAudit", "revokeRole", "revokeToken", "revokeEnrollmentToken", "deleteEvents"]);
/** What each rollout write answers (./rollout-writes.ts answers their union). */
interface RolloutWriteResults {
  createRollout: { record: RolloutRecord; created: boolean };
  commitRollout: { done: true };
  openRolloutStage: { opened?: OpenedStage };
  registerSigningKey: { done: true };
  pruneAudit: { removed: number; firstKeptSeq?: number };
  appendAudit: { done: true };
}
/** What each write answers, by operation: the typed op map SqliteStore.write is checked against. */
export type StoreWriteResults = FleetWriteResults & RbacWriteResults & EnrollmentWriteResults & WorkloadWriteResults & RolloutWriteResults & OperationWriteResults & { deleteEvents: DeleteEventsResult };
export type StoreWriteResult = StoreWriteResults[StoreWrite["op"]];

/** This thread's answer: how many rows were new, a fleet write's result or refusal, or the kind of failure. */
export type WriterReply =
  | { id: number; inserted: number }
  | { id: number; result: StoreWriteResult }
  | { id: number; refused: { kind: RefusalKind; message: string } }
  | { id: number; failure: SqliteFailure; detail: string }
  | { ready: true }
  | { closed: true }
  | { startFailure: SqliteFailure; detail: string };

/** Disk space held beside the database for the writes that make room, released when the disk is really full. */
const RESERVE_BYTES = 256 * 1024;

/** Holds the reserve file (creating it when there is room); false when it cannot be had. */
function holdReserve(file: string): boolean {
  if (existsSync(file)) return true;
  try {
    const fd = openSync(file, "wx", 0o600);
    try {
      writeSync(fd, Buffer.alloc(RESERVE_BYTES));
    } finally {
      closeSync(fd);
    }
    return true;
  } catch {
    try {
      unlinkSync(file);
    } catch {
      // nothing was created
    }
    return false;
  }
}
/** A write refused by a rule of ../write-rules.ts, by the class of its error (classes do not cross threads). */
export type RefusalKind = "notFound" | "conflict" | "aborted" | "failedPrecondition";
const refusalKind = (err: unknown): RefusalKind | undefined =>
  err instanceof NotFoundError
    ? "notFound"
    : err instanceof ConflictError
      ? "conflict"
      : err instanceof AbortedError
        ? "aborted"
        : err instanceof FailedPreconditionError
          ? "failedPrecondition"
          : undefined;

/** Most batches one transaction takes; the rest wait for the next one. */
const MAX_GROUP = 32;

const port = parentPort!;
/** Posts one reply, or several in one message (the store takes both). */
const post = (reply: WriterReply | WriterReply[]) => port.postMessage(reply);
/** The driver's message, for the server log only (it may name the file); callers see the kind. */
const detailOf = (err: unknown) => String((err as Error)?.message ?? err);
const failure = (id: number, err: unknown): WriterReply => ({ id, failure: classifySqliteError(err), detail: detailOf(err) });

/** Rows per multi-row INSERT: fewer statement executions, 450 bound values (well under SQLite's limit). */
const ROWS_PER_STATEMENT = 50;

function prepareStatements(sqlite: Database.Database) {
  const db = drizzle({ client: sqlite });
  migrate(db, { migrationsFolder: migrationsFolder("sqlite") });
  // The statement text comes from the drizzle schema. Flattened rows bind as they are, so
  // their column order (EVENT_COLUMNS) must be the order drizzle binds parameters in.
  const row = Object.fromEntries(EVENT_COLUMNS.map((c) => [c, sql.placeholder(c)]));
  const insertOf = (rows: number) => {
    const query = db.insert(events).values(Array(rows).fill(row)).onConflictDoNothing().toSQL();
    if (placeholderNames(query.params).some((name, i) => name !== EVENT_COLUMNS[i % EVENT_COLUMNS.length])) {
      throw new Error("insert parameters are not in EVENT_COLUMNS order");
    }
    return sqlite.prepare(query.sql);
  };
  const audit = prepareAuditWrites(db);
  const fleet = prepareFleetWrites(db, audit.append);
  return {
    fleet,
    enrollment: prepareEnrollmentWrites(db, audit.append, (enrollment, nowMs) => fleet.enrollNode({ op: "enrollNode", enrollment, nowMs }).node),
    rollout: prepareRolloutWrites(db, audit.append, audit.prune),
    rbac: prepareRbacWrites(db, audit.append),
    workloads: prepareWorkloadWrites(db, audit.append),
    operations: prepareOperationWrites(db, audit.append),
    audit,
    retention: prepareEventDeletes(sqlite),
    insertOne: insertOf(1),
    insertMany: insertOf(ROWS_PER_STATEMENT),
    begin: sqlite.prepare("BEGIN IMMEDIATE"),
    commit: sqlite.prepare("COMMIT"),
    rollback: sqlite.prepare("ROLLBACK"),
    savepoint: sqlite.prepare("SAVEPOINT batch"),
    release: sqlite.prepare("RELEASE batch"),
    rollbackTo: sqlite.prepare("ROLLBACK TO batch"),
  };
}

function start(): void {
  let sqlite: Database.Database;
  let s: ReturnType<typeof prepareStatements>;
  try {
    sqlite = openConnection(workerData as SqliteConnectionOptions, "writer");
    s = prepareStatements(sqlite);
  } catch (err) {
    post({ startFailure: classifySqliteError(err), detail: detailOf(err) });
    return;
  }
  const width = EVENT_COLUMNS.length;
  const chunk = ROWS_PER_STATEMENT * width;
  const insertRows = (rows: unknown[]): number => {
    let inserted = 0;
    let i = 0;
    for (; i + chunk <= rows.length; i += chunk) inserted += s.insertMany.run(rows.slice(i, i + chunk)).changes;
    for (; i < rows.length; i += width) inserted += s.insertOne.run(rows.slice(i, i + width)).changes;
    return inserted;
  };

  const ingest = (rows: unknown[], audit: AuditRow | undefined): number => {
    const inserted = insertRows(rows);
    if (audit && inserted > 0) s.audit.append([withInserted(audit, inserted)]);
    return inserted;
  };
  // The rollout module answers one union for all its operations; each handler names its part.
  const rollout = <K extends keyof RolloutWriteResults>(w: Extract<RolloutWrite, { op: K }>) => s.rollout(w) as RolloutWriteResults[K];
  const handlers = {
    ...s.fleet,
    ...s.rbac,
    ...s.enrollment,
    ...s.workloads,
    ...s.operations,
    createRollout: rollout,
    commitRollout: rollout,
    openRolloutStage: rollout,
    registerSigningKey: rollout,
    pruneAudit: rollout,
    appendAudit: rollout,
    deleteEvents: (w: DeleteEventsWrite) => s.retention.deleteEvents(w),
  } satisfies WriteHandlers<StoreWrite, StoreWriteResults>;
  // The one place the request's operation picks its handler (TypeScript cannot correlate the two).
  const write = (w: StoreWrite): StoreWriteResult => (handlers[w.op] as (w: StoreWrite) => StoreWriteResult)(w);
  const run = (req: WriterWork): WriterReply =>
    "rows" in req ? { id: req.id, inserted: ingest(req.rows, req.audit) } : { id: req.id, result: write(req.write) };

  const { maxDbBytes } = workerData as SqliteConnectionOptions;
  const pageSize = sqlite.pragma("page_size", { simple: true }) as number;
  const limitPages = maxDbBytes && maxDbBytes > 0 ? Math.floor(maxDbBytes / pageSize) : 0;
  const usedPages = () => (sqlite.pragma("page_count", { simple: true }) as number) - (sqlite.pragma("freelist_count", { simple: true }) as number);
  const fullError = () => Object.assign(new Error("the database has reached --max-db-size"), { code: "SQLITE_FULL" });

  const queue: WriterWork[] = [];
  const reserveFile = `${(workerData as SqliteConnectionOptions).file}-reserve`;
  let reserveHeld = holdReserve(reserveFile);
  const isRelief = (req: WriterWork) => "write" in req && RELIEF_OPS.has(req.write.op);
  /**
   * A disk that is really full refused writes that make room: give up the reserve and run them
   * again, once (the reserve is taken again at the next start).
   */
  const retryWithReserve = (reqs: WriterWork[]): boolean => {
    if (!reserveHeld || reqs.length === 0) return false;
    try {
      unlinkSync(reserveFile);
    } catch {
      // already gone
    }
    reserveHeld = false;
    queue.unshift(...reqs);
    setImmediate(flush);
    return true;
  };
  const flush = () => {
    const group = queue.splice(0, MAX_GROUP);
    if (queue.length > 0) setImmediate(flush);
    const replies: WriterReply[] = [];
    try {
      s.begin.run();
      const atLimit = limitPages > 0 && usedPages() >= limitPages;
      for (const req of group) {
        if (atLimit && !("write" in req && RELIEF_OPS.has(req.write.op))) {
          replies.push(failure(req.id, fullError()));
          continue;
        }
        s.savepoint.run();
        try {
          replies.push(run(req));
          s.release.run();
        } catch (err) {
          const refused = refusalKind(err);
          if (refused) {
            s.rollbackTo.run();
            s.release.run();
            replies.push({ id: req.id, refused: { kind: refused, message: (err as Error).message } });
            continue;
          }
          // Some errors (SQLITE_FULL among them) may roll back the whole transaction: then the group fails together.
          if (!sqlite.inTransaction) throw err;
          s.rollbackTo.run();
          s.release.run();
          replies.push(failure(req.id, err));
        }
      }
      s.commit.run();
    } catch (err) {
      // BEGIN or COMMIT failed, or the transaction was lost: nothing of the group is stored.
      if (sqlite.inTransaction) s.rollback.run();
      const retried = classifySqliteError(err) === "full" && retryWithReserve(group.filter(isRelief));
      post(group.filter((req) => !(retried && isRelief(req))).map((req) => failure(req.id, err)));
      return;
    }
    const fullRelief = group.filter((req, i) => isRelief(req) && "failure" in replies[i] && replies[i].failure === "full");
    const retried = retryWithReserve(fullRelief);
    post(retried ? replies.filter((_, i) => !fullRelief.includes(group[i])) : replies);
  };

  port.on("message", (req: WriterRequest) => {
    if (!Array.isArray(req)) {
      // Commit what is queued, then close the connection so the WAL is folded back into the file.
      while (queue.length > 0) flush();
      sqlite.close();
      post({ closed: true });
      port.close();
      return;
    }
    const idle = queue.length === 0;
    for (const work of req) queue.push(work);
    if (idle && queue.length > 0) setImmediate(flush);
  });
  post({ ready: true });
}

start();

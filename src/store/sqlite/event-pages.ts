import path from "node:path";
import { Worker } from "node:worker_threads";
import { StoreUnavailableError } from "../../domain/errors.js";
import { packageRoot } from "../../paths.js";
import type { EventPage, EventQuery } from "../store.js";
import type { SqliteConnectionOptions } from "./connection.js";
import type { SqliteFailure } from "./errors.js";
import type { PageReply, PageRequest } from "./event-page-thread.js";

// Compiled JavaScript, also when the caller runs from TypeScript sources (as the writer's).
const PAGE_THREAD_SCRIPT = path.join(packageRoot, "dist", "src", "store", "sqlite", "event-page-thread.js");

/**
 * The thread's young generation. Its garbage is a page's rows and text, dead once the page is
 * posted; a larger one only holds more of it. (A process-wide --max-semi-space-size would
 * override this limit in every thread, which is why the server's #! line sets none.)
 */
const PAGE_THREAD_YOUNG_MB = 8;

interface Waiter {
  query: EventQuery;
  resolve: (page: EventPage) => void;
  reject: (err: Error) => void;
}

/**
 * Pages of the event log read and written as JSON on the event page thread
 * (./event-page-thread.ts), started on the first page asked for. Should the thread fail to
 * start or stop, the pages it had and every later one are answered by `inline` (the same read
 * on the store's reader connection): a page costs the event loop again, but none is lost.
 */
export class EventPageReader {
  private worker: Worker | undefined;
  private ready: Promise<boolean> | undefined;
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 1;
  /** Set once the thread is gone: pages are answered inline from then on. */
  private lost = false;
  private closed = false;

  constructor(
    private readonly connection: SqliteConnectionOptions,
    private readonly inline: (query: EventQuery) => Promise<EventPage>,
    /** Turns a failure the thread reported into the store's typed error (corruption is fatal there too). */
    private readonly translate: (err: Error, kind: SqliteFailure) => Error,
  ) {}

  /** False once the thread is gone (pages are then answered inline); true before it starts. */
  get onThread(): boolean {
    return !this.lost;
  }

  async page(query: EventQuery): Promise<EventPage> {
    if (this.closed) throw new StoreUnavailableError("the store is closed");
    if (!this.lost) await this.start();
    const worker = this.worker;
    if (this.lost || this.closed || !worker) return this.inline(query);
    return new Promise<EventPage>((resolve, reject) => {
      const id = this.nextId++;
      this.waiting.set(id, { query, resolve, reject });
      worker.postMessage({ id, query } satisfies PageRequest);
    });
  }

  /** Stops the thread; pages still waiting fail as the store's other calls do once it is closed. */
  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    for (const waiter of this.waiting.values()) waiter.reject(new StoreUnavailableError("the store is closed"));
    this.waiting.clear();
    if (worker) await worker.terminate();
  }

  /** For tests: stops the thread as a crash would. */
  async stopThreadForTest(): Promise<void> {
    await this.worker?.terminate();
  }

  /** Starts the thread once; true when it is ready for pages. */
  private start(): Promise<boolean> {
    this.ready ??= new Promise<boolean>((resolve) => {
      const worker = new Worker(PAGE_THREAD_SCRIPT, { workerData: this.connection, resourceLimits: { maxYoungGenerationSizeMb: PAGE_THREAD_YOUNG_MB } });
      this.worker = worker;
      worker.on("message", (reply: PageReply) => {
        if ("ready" in reply) resolve(true);
        else if ("startFailure" in reply) {
          resolve(false);
          this.gone(worker);
        } else this.onReply(reply);
      });
      worker.on("error", () => {
        resolve(false);
        this.gone(worker);
      });
      worker.on("exit", () => {
        resolve(false);
        this.gone(worker);
      });
    });
    return this.ready;
  }

  private onReply(reply: Extract<PageReply, { id: number }>): void {
    const waiter = this.waiting.get(reply.id);
    if (!waiter) return;
    this.waiting.delete(reply.id);
    if ("text" in reply) waiter.resolve({ count: reply.count, text: reply.text, onThread: true });
    else waiter.reject(this.translate(new Error(reply.detail), reply.failure));
  }

  /** The thread stopped or failed: what it had is answered inline, and so is every later page. */
  private gone(worker: Worker): void {
    if (this.closed || this.lost) return;
    this.lost = true;
    if (this.worker === worker) this.worker = undefined;
    void worker.terminate();
    const orphans = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of orphans) this.inline(w.query).then(w.resolve, w.reject);
  }
}

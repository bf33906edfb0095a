/**
 * Leader election among the replicas that share one PostgreSQL database.
 *
 * The authority is a lease in `leader_epochs`: one row per epoch, the newest the current one.
 * Every replica keeps one dedicated connection (a pg.Client of its own, never a pooled one) on
 * which it holds, when it can, a session advisory lock: the fast path. A follower that gets the
 * lock knows the previous holder's session is gone (killed, its lock connection terminated) and
 * takes over at once; one that cannot get it takes over only when the current epoch is resigned
 * or its lease ran out by the database's clock (a paused or partitioned leader), and then ends
 * the stuck holder's lock session.
 *
 * Losing the election connection ends leadership at once (its session lock is gone with it, so
 * a follower may already lead).
 *
 * A takeover is one transaction: lock the newest row FOR UPDATE, end it, insert epoch + 1. A
 * renewal is one statement scoped to this holder AND this epoch AND a lease not yet run out,
 * so a deposed leader can never extend anything. The leader stops acting (leadership false,
 * fence() throws) as soon as no renewal has succeeded within lease − renew, measured on its own
 * monotonic clock from the moment the last good renewal was sent: always before the database
 * can consider its lease over. Its writes are fenced in the database anyway (requireEpoch).
 *
 * The same connection LISTENs on one channel: resignations (followers campaign at once, so a
 * handover takes milliseconds) and the signals other replicas relay to the leader (./relay.ts).
 */
import { performance } from "node:perf_hooks";
import pg from "pg";
import { FailedPreconditionError, StoreUnavailableError, ValidationError } from "../domain/errors.js";
import type { Logger } from "../observability/logger.js";
import { electionSessionName, storeSessionName } from "./ids.js";
import { notLeader, type Leadership } from "./leadership.js";

export const DEFAULT_LEADER_LEASE_MS = 10_000;
export const DEFAULT_LEADER_RENEW_MS = 2_000;
/** The LISTEN/NOTIFY channel of the replicas of one database. */
export const HA_CHANNEL = "autonomy_ha";
// Any constant (the other keys of the schema are 7_340_02x): the leader's session lock.
export const LEADER_LOCK_KEY = 7_340_031;

/** --leader-lease and --leader-renew: the lease must leave room for a failed renewal and a margin. */
export function validateLeaderTimings(leaseMs: number, renewMs: number): void {
  if (!Number.isFinite(renewMs) || renewMs < 100 || renewMs > 60_000) throw new ValidationError("--leader-renew", `${renewMs}ms: must be 100ms to 60s`);
  if (!Number.isFinite(leaseMs) || leaseMs > 600_000) throw new ValidationError("--leader-lease", `${leaseMs}ms: must be at most 10 minutes`);
  if (leaseMs < 3 * renewMs) {
    throw new ValidationError(
      "--leader-lease",
      `${leaseMs}ms must be at least 3 × --leader-renew (${renewMs}ms): the leader stops acting when no renewal succeeded within lease − renew, so it needs room to miss one`,
    );
  }
}

/** A message on HA_CHANNEL. */
export type HaMessage = { t: "resigned"; epoch: number; holder: string } | { t: "acquired"; epoch: number; holder: string } | { t: "signals"; from: string; body: unknown };

/** The current row of leader_epochs, as /v1/health/leader shows it. */
export interface EpochRow {
  epoch: number;
  holderId: string;
  acquiredAt: Date;
  renewedAt: Date;
  resignedAt?: Date;
  leaseMs: number;
  /** By the database's clock. */
  expired: boolean;
}

export interface ElectionOptions {
  url: string;
  /** This replica's id (unique per process). */
  holderId: string;
  leaseMs: number;
  renewMs: number;
  logger: Logger;
  /** Signals relayed by other replicas (the leader applies them). */
  onSignals?: (body: unknown, from: string) => void;
  /** Every change of leadership (metrics). */
  onTransition?: (leading: boolean, epoch: number | undefined) => void;
}

type Listener = (leading: boolean, epoch: number | undefined) => void | Promise<void>;

const mono = () => performance.now();

export class PgLeadership implements Leadership {
  readonly mode = "postgres" as const;
  private client?: pg.Client;
  private leading?: { epoch: number; acquiredAt: Date };
  private lockHeld = false;
  private lastRenewOk = 0;
  private readonly listeners = new Set<Listener>();
  private timer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private stopped = false;
  private holdOffUntil = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private failures = 0;
  private unreachableSince?: number;
  private ticking = false;
  private kicked = false;

  constructor(private readonly opts: ElectionOptions) {
    validateLeaderTimings(opts.leaseMs, opts.renewMs);
  }

  get holderId(): string {
    return this.opts.holderId;
  }

  isLeader(): boolean {
    return this.leading !== undefined;
  }
  epoch(): number | undefined {
    return this.leading?.epoch;
  }
  fence(): number {
    if (!this.leading) throw notLeader();
    return this.leading.epoch;
  }
  /** Whether this replica's election connection holds the leader's session lock. */
  holdsSessionLock(): boolean {
    return this.lockHeld;
  }
  /** Whether the election connection is up. */
  connected(): boolean {
    return this.client !== undefined;
  }

  onChange(fn: Listener): () => void {
    this.listeners.add(fn);
    void fn(this.leading !== undefined, this.leading?.epoch);
    return () => this.listeners.delete(fn);
  }

  /**
   * Starts campaigning in the background; never throws for an unreachable database (it
   * retries). Resolves after the first attempt (so a lone replica leads once it resolves).
   */
  async start(): Promise<void> {
    const first = this.tick();
    // The leader stops acting before its lease can run out: lease − renew after the last good renewal was sent.
    this.watchdog = setInterval(() => {
      if (this.leading && mono() - this.lastRenewOk > this.opts.leaseMs - this.opts.renewMs) {
        void this.stepDown(`no renewal succeeded within ${this.opts.leaseMs - this.opts.renewMs}ms`);
      }
    }, Math.min(200, this.opts.renewMs / 4));
    this.watchdog.unref();
    await first;
  }

  /** Campaigns (or renews) now: a resignation was announced. */
  kick(): void {
    if (this.ticking) this.kicked = true;
    else this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  /** Runs fn alone on the election connection (a campaign is a transaction: nothing may slip into it). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.ticking = true;
    let delay = this.leading ? this.opts.renewMs : Math.max(100, Math.floor(this.opts.renewMs / 2));
    try {
      await this.exclusive(async () => {
        const c = await this.connection();
        if (this.leading) await this.renew(c);
        else await this.campaign(c);
      });
      this.failures = 0;
    } catch (err) {
      this.failures += 1;
      this.dropConnection(err as Error);
      delay = Math.min(this.opts.renewMs, 100 * 2 ** Math.min(this.failures, 6));
    } finally {
      this.ticking = false;
    }
    if (this.kicked) {
      this.kicked = false;
      delay = 0;
    }
    this.schedule(delay);
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({
      connectionString: this.opts.url,
      keepAlive: true,
      connectionTimeoutMillis: this.opts.renewMs,
      query_timeout: this.opts.renewMs,
      application_name: electionSessionName(this.opts.holderId),
    });
    client.on("error", (err) => this.dropConnection(err, client));
    client.on("end", () => this.dropConnection(new Error("connection closed"), client));
    client.on("notification", (n) => {
      if (n.channel === HA_CHANNEL && n.payload) this.onMessage(n.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${HA_CHANNEL}`);
    } catch (err) {
      client.end().catch(() => undefined);
      throw err;
    }
    this.client = client;
    this.lockHeld = false;
    if (this.unreachableSince !== undefined) {
      this.opts.logger.info({ down_ms: Math.round(mono() - this.unreachableSince) }, "PostgreSQL reachable again for leader election");
      this.unreachableSince = undefined;
    }
    return client;
  }

  private dropConnection(err: Error, which?: pg.Client): void {
    if (which && which !== this.client) return;
    const client = this.client;
    this.client = undefined;
    this.lockHeld = false;
    client?.removeAllListeners("end");
    client?.end().catch(() => undefined);
    // The session lock went with the connection: a follower may lead at once (the fast path).
    if (this.leading && !this.stopped) void this.stepDown(`the election connection failed (${err.message})`);
    if (this.unreachableSince === undefined && !this.stopped) {
      this.unreachableSince = mono();
      this.opts.logger.error(
        { err: err.message, leading: this.leading !== undefined },
        "PostgreSQL unreachable for leader election; retrying with backoff (a leader keeps acting only until its lease margin runs out)",
      );
    }
  }

  private async campaign(c: pg.Client): Promise<void> {
    if (mono() < this.holdOffUntil) return;
    if (!this.lockHeld) {
      const { rows } = await c.query<{ got: boolean }>("SELECT pg_try_advisory_lock($1) AS got", [LEADER_LOCK_KEY]);
      this.lockHeld = rows[0].got;
    }
    const started = mono();
    let reason: string | undefined;
    let epoch = 0;
    let acquiredAt = new Date();
    if (!this.lockHeld) {
      // A holder whose lease ran out but whose lock session lives is stuck (paused, cut off):
      // its sessions are ended first, so no transaction it left open holds the epoch's row.
      const { rows } = await c.query<{ holder_id: string; expired: boolean; resigned: boolean }>(
        `SELECT holder_id, resigned_at IS NOT NULL AS resigned,
                renewed_at + lease_ms * interval '1 millisecond' <= clock_timestamp() AS expired
         FROM leader_epochs ORDER BY epoch DESC LIMIT 1`,
      );
      const cur = rows[0];
      if (cur && !cur.resigned && !cur.expired) return;
      if (cur && !cur.resigned && cur.expired && cur.holder_id !== this.opts.holderId) {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ($1, $2) AND pid <> pg_backend_pid()", [
          electionSessionName(cur.holder_id),
          storeSessionName(cur.holder_id),
        ]);
      }
    }
    await c.query("BEGIN");
    try {
      // Never wait long for the row: a campaign that cannot lock it tries again at the next tick.
      await c.query(`SET LOCAL lock_timeout = ${Math.max(100, Math.floor(this.opts.renewMs / 2))}`);
      const { rows } = await c.query<{ epoch: string; holder_id: string; resigned: boolean; expired: boolean }>(
        `SELECT epoch, holder_id, resigned_at IS NOT NULL AS resigned,
                renewed_at + lease_ms * interval '1 millisecond' <= clock_timestamp() AS expired
         FROM leader_epochs ORDER BY epoch DESC LIMIT 1 FOR UPDATE`,
      );
      const cur = rows[0];
      reason = !cur ? "first" : cur.resigned ? "resigned" : cur.expired ? "lease_expired" : this.lockHeld ? "lock_released" : undefined;
      if (reason === undefined) {
        await c.query("ROLLBACK");
        return;
      }
      if (cur && !cur.resigned) {
        await c.query("UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = $2 WHERE epoch = $1", [cur.epoch, reason]);
      }
      epoch = (cur ? Number(cur.epoch) : 0) + 1;
      const inserted = await c.query<{ acquired_at: Date }>(
        `INSERT INTO leader_epochs (epoch, holder_id, acquired_at, renewed_at, lease_ms)
         VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3) RETURNING acquired_at`,
        [epoch, this.opts.holderId, this.opts.leaseMs],
      );
      acquiredAt = inserted.rows[0].acquired_at;
      await c.query("COMMIT");
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      // Another replica won the same takeover (the epoch's primary key): not an error of the connection.
      if ((err as { code?: string }).code === "23505" || (err as { code?: string }).code === "55P03") {
        if (this.lockHeld) await this.unlock(c);
        return;
      }
      throw err;
    }
    this.lastRenewOk = started;
    this.leading = { epoch, acquiredAt };
    this.opts.logger.info({ epoch, holder_id: this.opts.holderId, reason, session_lock_held: this.lockHeld }, "this replica leads");
    await c.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify({ t: "acquired", epoch, holder: this.opts.holderId } satisfies HaMessage)]).catch(() => undefined);
    void this.transition(true, epoch);
  }

  private async renew(c: pg.Client): Promise<void> {
    const lead = this.leading!;
    const sent = mono();
    const { rowCount } = await c.query(
      `UPDATE leader_epochs SET renewed_at = clock_timestamp()
       WHERE epoch = $1 AND holder_id = $2 AND resigned_at IS NULL
         AND renewed_at + lease_ms * interval '1 millisecond' > clock_timestamp()`,
      [lead.epoch, this.opts.holderId],
    );
    if (this.leading !== lead) return;
    if (rowCount === 0) {
      await this.stepDown(`epoch ${lead.epoch} was ended elsewhere (resigned or taken over)`, { alreadyEnded: true });
      return;
    }
    this.lastRenewOk = sent;
    if (!this.lockHeld) {
      const { rows } = await c.query<{ got: boolean }>("SELECT pg_try_advisory_lock($1) AS got", [LEADER_LOCK_KEY]);
      this.lockHeld = rows[0].got;
    }
  }

  private async unlock(c: pg.Client): Promise<void> {
    this.lockHeld = false;
    await c.query("SELECT pg_advisory_unlock_all()").catch(() => undefined);
  }

  private transition(leading: boolean, epoch: number | undefined): Promise<unknown> {
    this.opts.onTransition?.(leading, epoch);
    return Promise.allSettled([...this.listeners].map((fn) => Promise.resolve().then(() => fn(leading, epoch))));
  }

  /**
   * Stops leading: leadership is false at once (fence() throws), then the listeners stop their
   * work, then the epoch is ended in the database (unless it already was) so a follower takes
   * over without waiting for the lease.
   */
  async stepDown(reason: string, opts: { alreadyEnded?: boolean; waitMs?: number } = {}): Promise<void> {
    const lead = this.leading;
    if (!lead) return;
    this.leading = undefined;
    // A replica that just stopped leading lets the others campaign first: its connection came
    // back quicker than theirs noticed would otherwise hand it the lock again, and leadership flap.
    this.holdOffUntil = Math.max(this.holdOffUntil, mono() + 2 * this.opts.renewMs);
    this.opts.logger.warn({ epoch: lead.epoch, reason }, "this replica stopped leading");
    const stopped = this.transition(false, undefined);
    await Promise.race([stopped, new Promise((r) => setTimeout(r, opts.waitMs ?? this.opts.renewMs).unref())]);
    if (opts.alreadyEnded || this.stopped) return;
    void this.exclusive(async () => {
      const c = this.client;
      if (!c) return;
      await c.query("UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = 'stepped_down' WHERE epoch = $1 AND holder_id = $2 AND resigned_at IS NULL", [lead.epoch, this.opts.holderId]);
      await this.unlock(c);
      await c.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify({ t: "resigned", epoch: lead.epoch, holder: this.opts.holderId } satisfies HaMessage)]);
    }).catch(() => undefined);
  }

  /**
   * Resigns the current epoch, from any replica: this replica stops first if it is the holder;
   * the epoch is ended in the database and the followers told, so one of them leads within
   * milliseconds. The resigning replica does not campaign again for two renewal periods.
   */
  async resign(reason: string): Promise<{ previousHolder: string; previousEpoch: number; resignedAt: Date }> {
    const current = await this.current();
    if (!current || current.resignedAt) throw new FailedPreconditionError("no replica leads now: there is nothing to resign");
    if (this.leading?.epoch === current.epoch) {
      this.holdOffUntil = mono() + 2 * this.opts.renewMs;
      const lead = this.leading;
      this.leading = undefined;
      this.opts.logger.warn({ epoch: lead.epoch, reason }, "this replica resigns its leadership");
      await Promise.race([this.transition(false, undefined), new Promise((r) => setTimeout(r, this.opts.renewMs).unref())]);
    }
    return this.exclusive(async () => {
      const c = await this.connection();
      const { rows } = await c.query<{ holder_id: string; resigned_at: Date }>(
        "UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = 'resigned' WHERE epoch = $1 AND resigned_at IS NULL RETURNING holder_id, resigned_at",
        [current.epoch],
      );
      if (rows.length === 0) throw new FailedPreconditionError(`epoch ${current.epoch} already ended before the resignation`);
      if (current.holderId === this.opts.holderId) await this.unlock(c);
      await c.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify({ t: "resigned", epoch: current.epoch, holder: rows[0].holder_id } satisfies HaMessage)]);
      return { previousHolder: rows[0].holder_id, previousEpoch: current.epoch, resignedAt: rows[0].resigned_at };
    });
  }

  /** The newest row of leader_epochs; StoreUnavailable when the database cannot be reached. */
  async current(): Promise<EpochRow | undefined> {
    const c = this.client;
    if (!c) throw new StoreUnavailableError("PostgreSQL cannot be reached for leader election; retry shortly");
    const { rows } = await this.exclusive(() =>
      c.query<{ epoch: string; holder_id: string; acquired_at: Date; renewed_at: Date; resigned_at: Date | null; lease_ms: number; expired: boolean }>(
        `SELECT epoch, holder_id, acquired_at, renewed_at, resigned_at, lease_ms,
                renewed_at + lease_ms * interval '1 millisecond' <= clock_timestamp() AS expired
         FROM leader_epochs ORDER BY epoch DESC LIMIT 1`,
      ),
    );
    const r = rows[0];
    if (!r) return undefined;
    return { epoch: Number(r.epoch), holderId: r.holder_id, acquiredAt: r.acquired_at, renewedAt: r.renewed_at, resignedAt: r.resigned_at ?? undefined, leaseMs: r.lease_ms, expired: r.expired };
  }

  private onMessage(payload: string): void {
    let msg: HaMessage;
    try {
      msg = JSON.parse(payload) as HaMessage;
    } catch {
      return;
    }
    if (msg.t === "resigned") {
      if (this.leading?.epoch === msg.epoch) {
        // Resigned from another replica: hand over, do not take it straight back.
        this.holdOffUntil = mono() + 2 * this.opts.renewMs;
        void this.stepDown(`epoch ${msg.epoch} was resigned`, { alreadyEnded: true });
      }
      else if (!this.leading) this.kick();
    } else if (msg.t === "signals") {
      if (this.leading && msg.from !== this.opts.holderId) this.opts.onSignals?.(msg.body, msg.from);
    }
  }

  /** Sends a message to every replica over the election connection (dropped when it is down). */
  async notify(msg: HaMessage): Promise<void> {
    const c = this.client;
    if (!c) return;
    await c.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify(msg)]);
  }

  /** Stops campaigning; a leader steps down and ends its epoch so a follower takes over at once. */
  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.watchdog);
    clearTimeout(this.timer);
    if (this.leading) {
      const lead = this.leading;
      this.leading = undefined;
      await Promise.race([this.transition(false, undefined), new Promise((r) => setTimeout(r, this.opts.renewMs).unref())]);
      await this.exclusive(async () => {
        const c = this.client;
        if (!c) return;
        await c.query("UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = 'stopped' WHERE epoch = $1 AND holder_id = $2 AND resigned_at IS NULL", [lead.epoch, this.opts.holderId]);
        await c.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify({ t: "resigned", epoch: lead.epoch, holder: this.opts.holderId } satisfies HaMessage)]);
      }).catch(() => undefined);
    }
    await this.chain.catch(() => undefined);
    const c = this.client;
    this.client = undefined;
    c?.removeAllListeners("end");
    await c?.end().catch(() => undefined);
  }
}

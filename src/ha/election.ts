/**
 * Leader election among the replicas that share one PostgreSQL database.
 *
 * The authority is a lease in `leader_epochs`: one row per epoch, the newest the current one.
 * Every replica keeps one dedicated connection (a pg.Client of its own, never a pooled one) on
 * which it holds, when it can, a session advisory lock: the fast path. A follower that gets the
 * lock and sees that the election session which won the current epoch is gone (killed, its lock
 * connection terminated) takes over at once; one that cannot get it takes over only when the
 * current epoch is resigned or its lease ran out by the database's clock (a paused or
 * partitioned leader), and then ends the stuck holder's lock session. The lock goes with the
 * leadership: a replica that stops leading releases it, one that starts takes it when free.
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
 * The same connection LISTENs on one channel: resignations (followers campaign at once, not at
 * their next poll, so a handover takes milliseconds; the resigned replica holds off for two
 * renewal periods) and the signals other replicas relay to the leader (./relay.ts).
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

/**
 * Opens a transaction on c with a bounded lock wait, and runs a first statement in it, all in one
 * round trip (a simple query: no parameters); the first statement's rows.
 */
async function inTransaction<R extends pg.QueryResultRow>(c: pg.Client, lockTimeoutMs: number, first: string): Promise<R[]> {
  const results = (await c.query(`BEGIN; SET LOCAL lock_timeout = ${Math.floor(lockTimeoutMs)}; ${first}`)) as unknown as pg.QueryResult<R>[];
  return results[2].rows;
}

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
      // Every lock wait on this connection is bounded (a campaign bounds its own tighter).
      await client.query(`LISTEN ${HA_CHANNEL}; SET lock_timeout = ${this.opts.renewMs}`);
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

  /**
   * One campaign, in few round trips (a handover waits for each): the lock and the newest epoch
   * in one; the takeover's transaction opened with its row locked in one; the new epoch, its
   * announcement (sent at commit) and the lock in one; the commit.
   */
  private async campaign(c: pg.Client): Promise<void> {
    if (mono() < this.holdOffUntil) return;
    const started = mono();
    const { rows: [head] } = await c.query<{ got: boolean; holder_id: string | null; resigned: boolean | null; expired: boolean | null }>(
      `SELECT CASE WHEN $2::boolean THEN true ELSE pg_try_advisory_lock($1) END AS got, e.holder_id, e.resigned, e.expired
       FROM (SELECT 1) AS one LEFT JOIN LATERAL (
         SELECT holder_id, resigned_at IS NOT NULL AS resigned,
                renewed_at + lease_ms * interval '1 millisecond' <= clock_timestamp() AS expired
         FROM leader_epochs ORDER BY epoch DESC LIMIT 1) AS e ON true`,
      [LEADER_LOCK_KEY, this.lockHeld],
    );
    this.lockHeld = head.got;
    if (!this.lockHeld && head.holder_id !== null) {
      if (!head.resigned && !head.expired) return;
      // A holder whose lease ran out but whose lock session lives is stuck (paused, cut off):
      // its sessions are ended first, so no transaction it left open holds the epoch's row.
      if (!head.resigned && head.expired && head.holder_id !== this.opts.holderId) {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ($1, $2) AND pid <> pg_backend_pid()", [
          electionSessionName(head.holder_id),
          storeSessionName(head.holder_id),
        ]);
      }
    }
    let reason: string | undefined;
    let epoch = 0;
    let acquiredAt = new Date();
    try {
      // Never wait long for the row: a campaign that cannot lock it tries again at the next tick.
      const cur = (
        await inTransaction<{ epoch: string; holder_id: string; resigned: boolean; expired: boolean }>(
          c,
          Math.max(100, Math.floor(this.opts.renewMs / 2)),
          `SELECT epoch, holder_id, resigned_at IS NOT NULL AS resigned,
                  renewed_at + lease_ms * interval '1 millisecond' <= clock_timestamp() AS expired
           FROM leader_epochs ORDER BY epoch DESC LIMIT 1 FOR UPDATE`,
        )
      )[0];
      reason = !cur ? "first" : cur.resigned ? "resigned" : cur.expired ? "lease_expired" : this.lockHeld ? "lock_released" : undefined;
      // The lock says the previous holder's session is gone only if the holder held it: one that
      // took over a resigned epoch may not have it yet. A holder whose winning session lives leads on.
      if (reason === "lock_released" && cur && (await this.winnerLives(c, cur.holder_id, cur.epoch))) reason = undefined;
      if (reason === undefined) {
        await c.query("ROLLBACK");
        // Free the lock for the leader (it takes it at its next renewal): the fast path is its.
        if (this.lockHeld && cur && cur.holder_id !== this.opts.holderId) await this.unlock(c);
        return;
      }
      if (cur && !cur.resigned) {
        await c.query("UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = $2 WHERE epoch = $1", [cur.epoch, reason]);
      }
      epoch = (cur ? Number(cur.epoch) : 0) + 1;
      const inserted = await c.query<{ acquired_at: Date; got: boolean }>(
        `WITH ins AS (
           INSERT INTO leader_epochs (epoch, holder_id, acquired_at, renewed_at, lease_ms)
           VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3) RETURNING acquired_at)
         SELECT acquired_at, pg_notify($4, $5) IS NULL AS notified, CASE WHEN $6::boolean THEN true ELSE pg_try_advisory_lock($7) END AS got FROM ins`,
        [epoch, this.opts.holderId, this.opts.leaseMs, HA_CHANNEL, JSON.stringify({ t: "acquired", epoch, holder: this.opts.holderId } satisfies HaMessage), this.lockHeld, LEADER_LOCK_KEY],
      );
      acquiredAt = inserted.rows[0].acquired_at;
      // Taking over a resigned epoch or a lapsed lease, the lock was taken now if it was free (the fast path).
      this.lockHeld = inserted.rows[0].got;
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

  /**
   * Whether the election session that won an epoch is still open: one of the holder's that began
   * before the epoch did (a holder that lost its connection stopped leading; its next one is newer).
   */
  private async winnerLives(c: pg.Client, holderId: string, epoch: string): Promise<boolean> {
    const { rows } = await c.query<{ lives: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()
                        AND backend_start < (SELECT acquired_at FROM leader_epochs WHERE epoch = $2)) AS lives`,
      [electionSessionName(holderId), epoch],
    );
    return rows[0].lives;
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
    if (!this.stopped) this.endEpoch(opts.alreadyEnded ? undefined : lead.epoch, "stepped_down");
  }

  /**
   * In the background: ends this replica's epoch (unless undefined: it was ended elsewhere),
   * releases the session lock with it (the next leader's fast path), and tells the followers.
   */
  private endEpoch(epoch: number | undefined, reason: string): void {
    void this.exclusive(async () => {
      const c = this.client;
      if (!c) return;
      if (epoch !== undefined) {
        await c.query("UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = $3 WHERE epoch = $1 AND holder_id = $2 AND resigned_at IS NULL", [epoch, this.opts.holderId, reason]);
      }
      await this.unlock(c);
      if (epoch !== undefined) await c.query("SELECT pg_notify($1, $2)", [HA_CHANNEL, JSON.stringify({ t: "resigned", epoch, holder: this.opts.holderId } satisfies HaMessage)]);
    }).catch(() => undefined);
  }

  /**
   * Resigns the current epoch, from any replica: this replica stops leading first if it is the
   * holder (fence() throws from then on; its listeners stop in the background); the epoch is ended
   * in the database once no decision made under it is still committing (FOR UPDATE waits for
   * their FOR KEY SHARE, and any later one is fenced), and the followers are told, so one of them
   * leads within milliseconds. The resigning replica does not campaign again for two renewal periods.
   */
  async resign(reason: string): Promise<{ previousHolder: string; previousEpoch: number; resignedAt: Date }> {
    const lead = this.leading;
    if (lead) {
      this.holdOffUntil = mono() + 2 * this.opts.renewMs;
      this.leading = undefined;
      this.opts.logger.warn({ epoch: lead.epoch, reason }, "this replica resigns its leadership");
      void this.transition(false, undefined);
    }
    try {
      return await this.exclusive(async () => {
        const c = await this.connection();
        // One statement, one round trip: the newest epoch (this replica's own, if it led) locked
        // FOR UPDATE first, so no decision made under it is still committing (the connection's
        // lock_timeout bounds the wait); ended; the followers told at commit; and the session
        // lock released with its own epoch, so the next leader takes it as it wins.
        const { rows } = await c.query<{ epoch: string; holder_id: string; resigned_at: Date }>(
          `WITH ended AS (
             UPDATE leader_epochs SET resigned_at = clock_timestamp(), end_reason = 'resigned'
             WHERE epoch = (SELECT epoch FROM leader_epochs
                            WHERE epoch = (SELECT max(epoch) FROM leader_epochs) AND ($1::bigint IS NULL OR epoch = $1) AND resigned_at IS NULL
                            FOR UPDATE)
             RETURNING epoch, holder_id, resigned_at)
           SELECT epoch, holder_id, resigned_at,
                  pg_notify($2, json_build_object('t', 'resigned', 'epoch', epoch, 'holder', holder_id)::text) IS NULL AS notified,
                  CASE WHEN holder_id = $3 THEN pg_advisory_unlock_all() IS NULL END AS unlocked
           FROM ended`,
          [lead?.epoch ?? null, HA_CHANNEL, this.opts.holderId],
        );
        const ended = rows[0];
        if (!ended) throw new FailedPreconditionError(lead ? `epoch ${lead.epoch} already ended before the resignation` : "no replica leads now: there is nothing to resign");
        if (ended.holder_id === this.opts.holderId) this.lockHeld = false;
        return { previousHolder: ended.holder_id, previousEpoch: Number(ended.epoch), resignedAt: ended.resigned_at };
      });
    } catch (err) {
      // This replica stopped leading: its epoch must end all the same, or the followers wait for its lease.
      if (lead) this.endEpoch(lead.epoch, "stepped_down");
      throw err;
    }
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

/**
 * Three (or N) `autonomy-orchestrator serve --postgres-url` replicas as real processes on one
 * private PostgreSQL, each behind a TCP proxy of its own (to cut it off), a steady load of
 * ingest + heartbeats + acks + rollouts sent like a load balancer would (to any replica that
 * answers), the faults (kill -9, SIGSTOP/SIGCONT, pg_terminate_backend, PostgreSQL restart, a
 * partition), and the checker that reads the history afterwards. Used by test/ha-chaos.test.ts
 * (short), `npm run chaos` (long) and bench/ha.ts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { TRANSITIONS, type Action, type PlanPhase } from "../src/domain/rollouts.js";
import { packageRoot } from "../src/paths.js";
import { TcpProxy, type PgCluster } from "./ha-pg.js";

export const ORCHESTRATOR = path.join(packageRoot, "dist", "src", "cli", "orchestrator", "main.js");

export interface Replica {
  index: number;
  url: string;
  proc: ChildProcess;
  pid: number;
  proxy: TcpProxy;
  lines: string[];
  exited: Promise<void>;
  alive: boolean;
  stopped: boolean;
}

export interface ClusterOptions {
  pg: PgCluster;
  dbUrl: string;
  dataRoot: string;
  replicas?: number;
  leaseMs?: number;
  renewMs?: number;
  /** Extra serve flags. */
  args?: string[];
}

const ms = (n: number) => `${n}ms`;

export class HaCluster {
  readonly replicas: Replica[] = [];
  private readonly admin: pg.Pool;

  constructor(readonly opts: ClusterOptions) {
    this.admin = new pg.Pool({ connectionString: opts.dbUrl, max: 3 });
    this.admin.on("error", () => {});
  }

  get leaseMs(): number {
    return this.opts.leaseMs ?? 10_000;
  }

  static async start(opts: ClusterOptions): Promise<HaCluster> {
    const c = new HaCluster(opts);
    const n = opts.replicas ?? 3;
    for (let i = 0; i < n; i++) {
      const u = new URL(opts.dbUrl);
      c.replicas.push(await c.spawn(i, await new TcpProxy({ host: u.hostname, port: Number(u.port) }).start()));
    }
    return c;
  }

  private async spawn(index: number, proxy: TcpProxy): Promise<Replica> {
    const dir = path.join(this.opts.dataRoot, `replica-${index}`);
    mkdirSync(dir, { recursive: true });
    const proc = spawn(
      process.execPath,
      [
        ORCHESTRATOR,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--data-dir",
        dir,
        "--postgres-url",
        proxy.urlFor(this.opts.dbUrl),
        "--leader-lease",
        ms(this.leaseMs),
        "--leader-renew",
        ms(this.opts.renewMs ?? 2_000),
        ...(this.opts.args ?? []),
      ],
      { env: { ...process.env, AUTONOMY_RBAC_ENFORCEMENT: "0" }, stdio: ["ignore", "ignore", "pipe"] },
    );
    const lines: string[] = [];
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    let buffered = "";
    const url = await new Promise<string>((resolve, reject) => {
      proc.stderr!.on("data", (chunk: Buffer) => {
        buffered += chunk.toString("utf8");
        let nl;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (!line.includes('"msg":"request"')) lines.push(line);
          if (lines.length > 2000) lines.splice(0, 1000);
          if (line.includes('"msg":"serving"')) resolve(String((JSON.parse(line) as { url: string }).url));
        }
      });
      void exited.then(() => reject(new Error(`replica ${index} exited before serving:\n${lines.join("\n")}`)));
    });
    const r: Replica = { index, url, proc, pid: proc.pid!, proxy, lines, exited, alive: true, stopped: false };
    void exited.then(() => (r.alive = false));
    return r;
  }

  /** A replica killed (kill -9) or stopped, started again on the same data dir and proxy. */
  async restart(r: Replica): Promise<Replica> {
    if (r.alive) {
      r.proc.kill("SIGKILL");
      await r.exited;
    }
    const next = await this.spawn(r.index, r.proxy);
    this.replicas[r.index] = next;
    return next;
  }

  kill9(r: Replica): Promise<void> {
    r.proc.kill("SIGKILL");
    return r.exited;
  }
  stop(r: Replica): void {
    r.proc.kill("SIGSTOP");
    r.stopped = true;
  }
  cont(r: Replica): void {
    r.proc.kill("SIGCONT");
    r.stopped = false;
  }

  /** Replicas that run and are not paused. */
  live(): Replica[] {
    return this.replicas.filter((r) => r.alive && !r.stopped);
  }

  /** The newest epoch as the database holds it. */
  async newestEpoch(): Promise<{ epoch: number; holderId: string; resigned: boolean; pid: number } | undefined> {
    const { rows } = await this.admin.query<{ epoch: string; holder_id: string; resigned: boolean }>(
      "SELECT epoch, holder_id, resigned_at IS NOT NULL AS resigned FROM leader_epochs ORDER BY epoch DESC LIMIT 1",
    );
    const r = rows[0];
    return r && { epoch: Number(r.epoch), holderId: r.holder_id, resigned: r.resigned, pid: Number(r.holder_id.split(":")[1]) };
  }

  /** The replica that leads now (by the database), if any. */
  async leader(): Promise<{ replica: Replica; epoch: number } | undefined> {
    const e = await this.newestEpoch().catch(() => undefined);
    if (!e || e.resigned) return undefined;
    const replica = this.replicas.find((r) => r.pid === e.pid && r.alive);
    return replica && { replica, epoch: e.epoch };
  }

  /**
   * Waits until a replica other than `not` leads under an epoch above `after`, answers
   * write-ready, and says itself that it leads. Resolves with how long it took.
   */
  async waitLeader(opts: { after?: number; not?: Replica; timeoutMs?: number } = {}): Promise<{ replica: Replica; epoch: number; ms: number }> {
    const started = performance.now();
    const deadline = started + (opts.timeoutMs ?? this.leaseMs * 4);
    for (;;) {
      const l = await this.leader();
      if (l && l.epoch > (opts.after ?? 0) && l.replica !== opts.not && !l.replica.stopped) {
        const ready = await get(l.replica.url, "/v1/health/write-ready").catch(() => undefined);
        const says = ready?.status === 200 ? await get(l.replica.url, "/v1/health/leader").catch(() => undefined) : undefined;
        if ((says?.body as { this_replica_is_leader?: boolean } | undefined)?.this_replica_is_leader) {
          return { ...l, ms: performance.now() - started };
        }
      }
      if (performance.now() > deadline) {
        const holder = l?.replica;
        const says = holder ? await get(holder.url, "/v1/health/leader").catch((e: Error) => e.message) : undefined;
        throw new Error(
          `no new leader within ${opts.timeoutMs ?? this.leaseMs * 4}ms after epoch ${opts.after ?? 0} (newest epoch: ${JSON.stringify(await this.newestEpoch().catch(() => undefined))}; ` +
            `its holder says ${JSON.stringify(says)})\n${(holder?.lines ?? []).slice(-12).join("\n")}`,
        );
      }
      await sleep(20);
    }
  }

  /** pg_terminate_backend of a replica's election connection. */
  async terminateLockConnection(r: Replica): Promise<number> {
    const { rows } = await this.admin.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1",
      [`autonomy-leader %:${r.pid}:%`],
    );
    for (const { pid } of rows) await this.admin.query("SELECT pg_terminate_backend($1)", [pid]);
    return rows.length;
  }

  query<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<T>> {
    return this.admin.query<T>(sql, params);
  }

  async close(): Promise<void> {
    for (const r of this.replicas) {
      if (r.stopped) r.proc.kill("SIGCONT");
      if (r.alive) r.proc.kill("SIGKILL");
      await r.exited;
      await r.proxy.close();
    }
    await this.admin.end();
  }
}

// -- HTTP -------------------------------------------------------------------------------------

export async function get(base: string, p: string, timeoutMs = 2_000): Promise<{ status: number; body: unknown }> {
  const res = await fetch(base + p, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

export async function post(base: string, p: string, body: unknown, timeoutMs = 3_000): Promise<{ status: number; body: unknown }> {
  const res = await fetch(base + p, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json", "autonomy-operator": "chaos" },
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

// -- load -----------------------------------------------------------------------------------

export interface Answered {
  events: string[];
  acks: { nodeId: string; releaseId: string }[];
  errors: number;
  requests: number;
}

/**
 * A steady load over the live replicas, as a load balancer spreads it (a replica that fails to
 * answer is skipped for the next): `nodes` simulated agents heartbeat, fetch their desired
 * release and ack it healthy; event batches are ingested; rollouts run one after the other
 * (each plan three stages) on the channel; each replica's write-ready is checked every second,
 * as the load balancer does. Every 200 answer is recorded.
 */
export class Load {
  readonly answered: Answered = { events: [], acks: [], errors: 0, requests: 0 };
  /** When each plan's status last changed (stage opened or passed), for "the rollout moves again". */
  readonly progress: { atMs: number; planId: string; phase: string; stage: number }[] = [];
  readonly plans: string[] = [];
  private running = true;
  private readonly loops: Promise<void>[] = [];
  private nextEvent = 0;
  private rr = 0;
  private readonly installed = new Map<string, string>();

  constructor(
    private readonly cluster: HaCluster,
    private readonly opts: { nodes: number; channel?: string; eventsPerBatch?: number; eventIntervalMs?: number },
  ) {}

  private get channel(): string {
    return this.opts.channel ?? "chaos";
  }
  private node(i: number): string {
    return `node-${String(i).padStart(4, "0")}`;
  }

  /** A request to some live replica; the next one on failure (up to each once). */
  async call(method: "GET" | "POST", p: string, body?: unknown): Promise<{ status: number; body: unknown } | undefined> {
    const live = this.cluster.live();
    for (let k = 0; k < live.length; k++) {
      const r = live[(this.rr++ + k) % live.length];
      this.answered.requests += 1;
      try {
        const res = method === "GET" ? await get(r.url, p) : await post(r.url, p, body);
        if (res.status < 500) return res;
      } catch {
        // not answering: the next replica
      }
      this.answered.errors += 1;
    }
    return undefined;
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.opts.nodes; i++) {
      const id = this.node(i);
      for (;;) {
        const r = await this.call("POST", "/v1/nodes", { node_id: id, channel: this.channel, agent_version: "chaos" });
        if (r?.status === 200) break;
        await sleep(100);
      }
    }
    this.loops.push(this.agents(), this.ingest(), this.rollouts(), this.healthChecks());
  }

  /** The load balancer's health check (README: HAProxy, inter 1s): write-ready of every live replica each second. */
  private async healthChecks(): Promise<void> {
    while (this.running) {
      const started = Date.now();
      await Promise.all(this.cluster.live().map((r) => get(r.url, "/v1/health/write-ready").catch(() => undefined)));
      await sleep(Math.max(0, 1_000 - (Date.now() - started)));
    }
  }

  private async agents(): Promise<void> {
    while (this.running) {
      const started = Date.now();
      await Promise.all(
        Array.from({ length: this.opts.nodes }, async (_, i) => {
          const id = this.node(i);
          await this.call("POST", `/v1/nodes/${id}/heartbeat`, { node_id: id });
          const d = await this.call("GET", `/v1/nodes/${id}/desired-release`);
          const release = (d?.body as { release?: { release_id?: string } } | undefined)?.release?.release_id;
          if (d?.status !== 200 || !release || this.installed.get(id) === release) return;
          const ack = await this.call("POST", `/v1/nodes/${id}/ack`, { release_id: release, node_id: id, state: "healthy", reported_release_id: release });
          if (ack?.status === 200) {
            this.installed.set(id, release);
            this.answered.acks.push({ nodeId: id, releaseId: release });
          }
        }),
      );
      await sleep(Math.max(0, 200 - (Date.now() - started)));
    }
  }

  private async ingest(): Promise<void> {
    const per = this.opts.eventsPerBatch ?? 20;
    while (this.running) {
      const events = Array.from({ length: per }, () => {
        const n = this.nextEvent++;
        return { event_id: `ev-${n}`, event_type: "chaos.tick", node_id: this.node(n % this.opts.nodes), timestamp: new Date().toISOString() };
      });
      const r = await this.call("POST", "/v1/events", { events });
      if (r?.status === 200) for (const e of events) this.answered.events.push(e.event_id);
      await sleep(this.opts.eventIntervalMs ?? 50);
    }
  }

  private async rollouts(): Promise<void> {
    for (let k = 1; this.running; k++) {
      const releaseId = `rel-${k}`;
      const planId = `plan-${k}`;
      const published = await this.until(() =>
        this.call("POST", "/v1/releases", {
          release_id: releaseId,
          channel: this.channel,
          version: releaseId,
          staged: true,
          artifacts: [{ name: "app", digest: `sha256:${"ab".repeat(32)}` }],
        }),
      );
      if (!published) return;
      const created = await this.until(() =>
        this.call("POST", "/v1/rollouts", {
          plan_id: planId,
          release_id: releaseId,
          stages: [
            { stage_id: "a", percent: 34, gates: [{ kind: "success_ratio", min_ratio: 1 }] },
            { stage_id: "b", percent: 67, gates: [{ kind: "success_ratio", min_ratio: 1 }] },
            { stage_id: "c", percent: 100, gates: [{ kind: "success_ratio", min_ratio: 1 }] },
          ],
        }),
      );
      if (!created) return;
      this.plans.push(planId);
      let last = "";
      while (this.running) {
        const s = await this.call("GET", `/v1/rollouts/${planId}/status`);
        const st = (s?.body as { status?: { phase?: string; current_stage?: number; stages?: { phase: string }[] } } | undefined)?.status;
        if (st) {
          const key = `${st.phase}/${st.current_stage}/${(st.stages ?? []).map((x) => x.phase).join(",")}`;
          if (key !== last) {
            last = key;
            this.progress.push({ atMs: Date.now(), planId, phase: st.phase ?? "", stage: st.current_stage ?? -1 });
          }
          if (st.phase === "completed") break;
        }
        await sleep(50);
      }
    }
  }

  private async until(fn: () => Promise<{ status: number; body: unknown } | undefined>): Promise<boolean> {
    while (this.running) {
      const r = await fn();
      if (r && r.status === 200) return true;
      if (r && r.status !== 503 && r.status !== 429) throw new Error(`load: ${r.status} ${JSON.stringify(r.body)}`);
      await sleep(100);
    }
    return false;
  }

  /** Resolves when the rollout has moved (a status change) after `sinceMs`. */
  async movedSince(sinceMs: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.progress.find((x) => x.atMs > sinceMs);
      if (p) return p.atMs;
      if (Date.now() > deadline) throw new Error(`the rollout did not move within ${timeoutMs}ms`);
      await sleep(20);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

// -- the checker ------------------------------------------------------------------------------

export interface CheckReport {
  epochs: number;
  decisions: number;
  plans: number;
  transitions: number;
  events: number;
  acks: number;
  problems: string[];
}

/** Reads the history from the database and checks what must hold whatever happened. */
export async function checkHistory(cluster: HaCluster, answered: Answered): Promise<CheckReport> {
  const problems: string[] = [];
  const { rows: epochs } = await cluster.query<{ epoch: string; acquired_at: Date; renewed_at: Date; resigned_at: Date | null; lease_ms: number }>(
    "SELECT epoch, acquired_at, renewed_at, resigned_at, lease_ms FROM leader_epochs ORDER BY epoch",
  );
  const ends = new Map<number, { from: number; to: number }>();
  epochs.forEach((e, i) => {
    const epoch = Number(e.epoch);
    if (epoch !== i + 1) problems.push(`epochs: ${epoch} at position ${i + 1} (they must be 1, 2, 3, ...)`);
    const leaseEnd = e.renewed_at.getTime() + e.lease_ms;
    const to = e.resigned_at ? Math.min(e.resigned_at.getTime(), leaseEnd) : leaseEnd;
    ends.set(epoch, { from: e.acquired_at.getTime(), to });
    const next = epochs[i + 1];
    if (next) {
      if (!e.resigned_at) problems.push(`epoch ${epoch} was never ended, yet epoch ${Number(next.epoch)} began`);
      if (next.acquired_at.getTime() < to) problems.push(`epoch ${Number(next.epoch)} began ${to - next.acquired_at.getTime()}ms before epoch ${epoch} ended`);
    }
  });

  const { rows: records } = await cluster.query<{ seq: string; at_ms: string; action: string; resource: string; actor: string; fields_json: string }>(
    "SELECT seq, at_ms, action, resource, actor, fields_json FROM audit_records WHERE resource_type = 'rollout_plan' ORDER BY seq",
  );
  let decisions = 0;
  let transitions = 0;
  const phaseOf = new Map<string, { phase: string; version: number }>();
  for (const r of records) {
    const f = JSON.parse(r.fields_json) as { from_phase?: string; to_phase?: string; version?: number; leader_epoch?: number };
    if (f.leader_epoch !== undefined) {
      decisions += 1;
      const span = ends.get(f.leader_epoch);
      const at = Number(r.at_ms);
      // at_ms is whole milliseconds, the epochs' times microseconds: one millisecond of slack.
      if (!span) problems.push(`record ${r.seq} was decided under epoch ${f.leader_epoch}, which does not exist`);
      else if (at < span.from - 1 || at > span.to + 1) problems.push(`record ${r.seq} (${r.action} of ${r.resource}) was written under epoch ${f.leader_epoch} outside its lease`);
    }
    if (f.from_phase === undefined || f.to_phase === undefined) continue;
    transitions += 1;
    const prev = phaseOf.get(r.resource) ?? { phase: "published", version: f.version === undefined ? 0 : f.version - 1 };
    if (prev.phase !== f.from_phase) problems.push(`plan ${r.resource}: record ${r.seq} goes from ${f.from_phase}, but the plan was ${prev.phase}`);
    // The phase table, and "completed" where an action closes the last stage (applyAction).
    const allowed = TRANSITIONS[f.from_phase as PlanPhase]?.[r.action as Action];
    if (allowed === undefined || (allowed !== f.to_phase && !(allowed === "active" && f.to_phase === "completed"))) problems.push(`plan ${r.resource}: ${r.action} from ${f.from_phase} to ${f.to_phase} is not in the phase table`);
    if (f.version !== undefined && f.version <= prev.version) problems.push(`plan ${r.resource}: record ${r.seq} has version ${f.version} after ${prev.version}`);
    phaseOf.set(r.resource, { phase: f.to_phase, version: f.version ?? prev.version });
  }

  const { rows: twice } = await cluster.query("SELECT plan_id, node_id, count(*)::int AS n FROM rollout_moves GROUP BY 1, 2 HAVING count(*) > 1");
  for (const t of twice) problems.push(`node ${t.node_id} was moved ${t.n} times by plan ${t.plan_id}`);

  const { rows: ev } = await cluster.query<{ n: number }>("SELECT count(DISTINCT event_id)::int AS n FROM events WHERE event_id = ANY($1)", [answered.events]);
  if (ev[0].n !== new Set(answered.events).size) problems.push(`${new Set(answered.events).size - ev[0].n} event(s) answered 200 are not stored`);
  const keys = answered.acks.map((a) => `${a.releaseId}/${a.nodeId}`);
  const { rows: ak } = await cluster.query<{ n: number }>("SELECT count(*)::int AS n FROM node_acks WHERE release_id || '/' || node_id = ANY($1)", [keys]);
  if (ak[0].n !== new Set(keys).size) problems.push(`${new Set(keys).size - ak[0].n} ack(s) answered 200 are not stored`);

  const live = cluster.live()[0];
  const verify = live ? await get(live.url, "/v1/audit/verify", 30_000) : undefined;
  if ((verify?.body as { ok?: boolean } | undefined)?.ok !== true) problems.push(`the audit chain does not verify: ${JSON.stringify(verify?.body)}`);

  return { epochs: epochs.length, decisions, plans: phaseOf.size, transitions, events: answered.events.length, acks: answered.acks.length, problems };
}

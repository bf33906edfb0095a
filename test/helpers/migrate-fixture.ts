import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { h1 } from "./http.js";
import { createTestDatabase } from "./postgres.js";
import { until } from "./wait.js";

/** A fresh database named mig_<random> on the run's PostgreSQL server; `drop` removes it. */
export function createMigrateDatabase(): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  return createTestDatabase({ prefix: "mig" });
}

/** sha256 of every file of a directory, by name: what "the SQLite data dir did not change" compares. */
export function dirDigest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = createHash("sha256").update(readFileSync(path.join(dir, name))).digest("hex");
  return out;
}

export const DIGEST = `sha256:${"ab".repeat(32)}`;

/** A REST caller of one server, as an operator with an optional bearer token. */
export function restClient(baseUrl: string, token?: string) {
  return async (method: string, p: string, body?: unknown) => {
    // With a token the operator is the token's principal; without one, the header names it.
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    else headers["autonomy-operator"] = "olga";
    const res = await h1(`${baseUrl}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers });
    let json: unknown;
    try {
      json = res.json();
    } catch {
      json = undefined;
    }
    return { status: res.status, body: json as Record<string, any> };
  };
}

export type Rest = ReturnType<typeof restClient>;

async function ok(rest: Rest, method: string, p: string, body?: unknown) {
  const r = await rest(method, p, body);
  if (r.status !== 200) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/**
 * Fills a running server through its API with one of everything migrate must carry: nodes
 * (one drained), releases (staged and not), acks, events of several types, a completed and an
 * active rollout plan (with their moves), a custom role, a binding and a token, and the audit
 * records all of it writes.
 */
export async function populate(rest: Rest, opts: { events?: number } = {}): Promise<void> {
  const nodes = ["fx-1", "fx-2", "fx-3", "fx-4"];
  for (const nodeId of nodes) {
    await ok(rest, "POST", "/v1/nodes", { node_id: nodeId, channel: "fx", labels: { site: nodeId === "fx-4" ? "b" : "a" } });
    await ok(rest, "POST", `/v1/nodes/${nodeId}/heartbeat`, {});
  }
  const release = (id: string, staged: boolean) => ({ release_id: id, channel: "fx", version: id, staged, artifacts: [{ name: "app", digest: DIGEST }], notes: `notes of ${id}` });
  await ok(rest, "POST", "/v1/releases", release("fx-r1", false));
  for (const nodeId of nodes) {
    await ok(rest, "POST", `/v1/nodes/${nodeId}/ack`, { release_id: "fx-r1", state: "healthy", reported_release_id: "fx-r1", message: `up on ${nodeId}` });
  }
  const total = opts.events ?? 300;
  for (let sent = 0; sent < total; ) {
    const n = Math.min(1000, total - sent);
    const events = Array.from({ length: n }, (_, i) => {
      const k = sent + i;
      return {
        event_id: `ev-${k}`,
        event_type: ["boot", "metric", "alert"][k % 3],
        node_id: nodes[k % nodes.length],
        timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, k % 60)).toISOString(),
        release_id: "fx-r1",
        lock_fingerprint: k % 7 === 0 ? `lock-${k}` : undefined,
        payload: { k, text: `value "${k}" with a, comma and {braces}` },
      };
    });
    await ok(rest, "POST", "/v1/events", { events });
    sent += n;
  }

  // A plan that completes: two nodes, no gates; they install and report healthy.
  await ok(rest, "POST", "/v1/releases", release("fx-r2", true));
  await ok(rest, "POST", "/v1/rollouts", { plan_id: "fx-done", release_id: "fx-r2", stages: [{ stage_id: "all", node_ids: ["fx-1", "fx-2"] }] });
  await until("fx-done moves its nodes", async () => (await rest("GET", "/v1/nodes/fx-1/desired-release")).body.release?.release_id === "fx-r2");
  for (const nodeId of ["fx-1", "fx-2"]) {
    await ok(rest, "POST", `/v1/nodes/${nodeId}/ack`, { release_id: "fx-r2", state: "healthy", reported_release_id: "fx-r2" });
  }
  await until("fx-done completes", async () => (await rest("GET", "/v1/rollouts/fx-done/status")).body.status?.phase === "completed", 15_000);

  // A plan that stays active: its canary waits for a manual approval.
  await ok(rest, "POST", "/v1/releases", release("fx-r3", true));
  await ok(rest, "POST", "/v1/rollouts", {
    plan_id: "fx-active",
    release_id: "fx-r3",
    stages: [
      { stage_id: "canary", node_ids: ["fx-3"], gates: [{ kind: "manual" }] },
      { stage_id: "rest", percent: 100 },
    ],
  });
  await until("fx-active moves its canary", async () => (await rest("GET", "/v1/nodes/fx-3/desired-release")).body.release?.release_id === "fx-r3");
  await ok(rest, "POST", "/v1/nodes/fx-3/ack", { release_id: "fx-r3", state: "healthy", reported_release_id: "fx-r3" });

  await ok(rest, "POST", "/v1/nodes/fx-4/drain", { reason: "disk swap" });

  await ok(rest, "POST", "/v1/rbac/roles", { name: "fx-reader", permissions: ["fleet:read", "telemetry:read"] });
  await ok(rest, "POST", "/v1/rbac/bindings", { principal: "operator:fx-ann", role: "fx-reader" });
  await ok(rest, "POST", "/v1/rbac/tokens", { principal: "operator:fx-ann", ttl_hours: 2, description: "fixture" });
}

/** The same reads of two servers, for "answers the same after migration". */
export async function reads(rest: Rest): Promise<Record<string, unknown>> {
  const get = async (p: string) => {
    const r = await rest("GET", p);
    return { status: r.status, body: r.body };
  };
  const out: Record<string, unknown> = {};
  for (const p of [
    "/v1/fleet?channel=fx&stale_threshold_seconds=86400",
    "/v1/nodes",
    "/v1/nodes/fx-1/summary",
    "/v1/nodes/fx-3/desired-release",
    "/v1/nodes/fx-2/acks",
    "/v1/events?limit=1000",
    "/v1/events?node_id=fx-2&event_type=metric&limit=50",
    "/v1/releases/latest?channel=fx",
    "/v1/releases/fx-r1/acks",
    "/v1/rollouts",
    "/v1/rollouts/fx-done",
    "/v1/rollouts/fx-active/status",
    "/v1/rollouts/fx-active/spec",
    "/v1/rollouts/fx-active/stages/canary/gates",
    "/v1/rollouts/signing-keys",
    "/v1/rbac/roles",
    "/v1/rbac/bindings",
    "/v1/rbac/tokens",
    "/v1/audit/records?limit=1000",
    "/v1/audit/verify",
  ]) {
    out[p] = await get(p);
  }
  return out;
}

export function hasFile(dir: string, name: string): boolean {
  return existsSync(path.join(dir, name));
}

import os from "node:os";
import type { HandlerContext } from "@connectrpc/connect";
import { buildInfo } from "../build-info.js";
import { redactLine, redactText, redactValue } from "../domain/redact.js";
import { NotFoundError, ValidationError } from "../domain/errors.js";
import type { LogRing } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import type { Store } from "../store/store.js";

/** What a part may use while it is assembled. */
export interface BundlePartContext {
  /** Time-bounded parts cover [sinceMs, nowMs]. */
  sinceMs: number;
  nowMs: number;
  /** The call asking for the part (parts that call another service pass it on). */
  call: HandlerContext;
}

/** Text content, kept as it is (after redaction), instead of a value written as JSON. */
export interface BundleText {
  text: string;
}

/**
 * One file of a support bundle. Its name is how clients ask for it; the file name's
 * extension says how its content is written and redacted: .json (a value, secret-named keys
 * and every string redacted), .jsonl (lines, each redacted as JSON), anything else (text).
 */
export interface BundlePart {
  name: string;
  fileName: string;
  description: string;
  collect(c: BundlePartContext): Promise<unknown>;
}

const PART_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const FILE_NAME = /^[a-z0-9][a-z0-9._-]{0,100}$/;

const jsonReplacer = (_k: string, v: unknown) => (typeof v === "bigint" ? Number(v) : v);

/**
 * The parts a server can put in a support bundle, by name, in bundle order. Features add
 * their own part with register() (the divergence report, HA status), so a bundle grows
 * without its clients changing: they list the parts and ask for each.
 */
export class SupportBundle {
  private readonly parts = new Map<string, BundlePart>();

  constructor(parts: readonly BundlePart[] = []) {
    for (const p of parts) this.register(p);
  }

  register(part: BundlePart): this {
    if (!PART_NAME.test(part.name) || !FILE_NAME.test(part.fileName)) throw new Error(`bundle part "${part.name}": bad name or file name`);
    if (this.parts.has(part.name)) throw new Error(`bundle part "${part.name}" is registered twice`);
    if ([...this.parts.values()].some((p) => p.fileName === part.fileName)) throw new Error(`bundle file "${part.fileName}" is registered twice`);
    this.parts.set(part.name, part);
    return this;
  }

  list(): { name: string; fileName: string; description: string }[] {
    return [...this.parts.values()].map(({ name, fileName, description }) => ({ name, fileName, description }));
  }

  /** Assembles one part, redacted. NotFoundError names an unknown part. */
  async collect(name: string, c: BundlePartContext): Promise<{ name: string; fileName: string; content: string }> {
    if (name === "") throw new ValidationError("name", "required");
    const part = this.parts.get(name);
    if (!part) throw new NotFoundError(`no bundle part "${name}" (known: ${[...this.parts.keys()].join(", ")})`);
    const value = await part.collect(c);
    return { name, fileName: part.fileName, content: render(part.fileName, value) };
  }
}

/** A part's value as its file's content, redacted. */
export function render(fileName: string, value: unknown): string {
  const text = (value as BundleText | undefined)?.text;
  if (fileName.endsWith(".json")) return `${JSON.stringify(redactValue(JSON.parse(JSON.stringify(value ?? null, jsonReplacer))), null, 2)}\n`;
  if (typeof text !== "string") throw new Error(`bundle part file ${fileName}: text expected`);
  if (fileName.endsWith(".jsonl")) return text.split("\n").filter((l) => l !== "").map((l) => `${redactLine(l)}\n`).join("");
  return redactText(text);
}

/** What the standard parts read. */
export interface StandardPartDeps {
  store: Store;
  metrics: Metrics;
  /** The flags the server runs with (after defaults and environment variables), else its settings. */
  config: object;
  /** The server log's newest records. */
  logRing?: LogRing;
  startedAtMs: number;
  rbacEnforced: boolean;
  /** The audit chain's verification, as the audit service answers it. */
  verifyAudit: (call: HandlerContext) => Promise<unknown>;
}

const AUTONOMY_ENV = /^AUTONOMY_/;

/** The parts every server has; see the README's "Support bundles" for what each holds. */
export function standardParts(d: StandardPartDeps): BundlePart[] {
  return [
    {
      name: "version",
      fileName: "version.json",
      description: "version, build, runtime and host",
      collect: async () => ({
        ...buildInfo(),
        node: process.version,
        platform: `${process.platform}/${process.arch}`,
        hostname: os.hostname(),
        pid: process.pid,
        uptime_seconds: Math.round((Date.now() - d.startedAtMs) / 1000),
        memory: process.memoryUsage(),
        load_average: os.loadavg(),
      }),
    },
    {
      name: "flags",
      fileName: "flags.json",
      description: "the settings the server runs with and its AUTONOMY_ environment",
      collect: async () => ({
        settings: d.config,
        environment: Object.fromEntries(Object.entries(process.env).filter(([k]) => AUTONOMY_ENV.test(k))),
      }),
    },
    {
      name: "health",
      fileName: "health.json",
      description: "health, store reachability and RBAC enforcement",
      collect: async () => {
        const started = performance.now();
        let store: string;
        try {
          await d.store.newestEventSeq();
          store = "ok";
        } catch (err) {
          store = `failing: ${(err as Error).message}`;
        }
        return {
          status: store === "ok" ? "ok" : "degraded",
          store: { dialect: d.store.dialect, check: store, round_trip_ms: Math.round((performance.now() - started) * 100) / 100 },
          rbac_enforced: d.rbacEnforced,
        };
      },
    },
    {
      name: "metrics",
      fileName: "metrics.prom",
      description: "a snapshot of /metrics",
      collect: async () => ({ text: await d.metrics.registry.metrics() }),
    },
    {
      name: "store-stats",
      fileName: "store-stats.json",
      description: "row counts, file or table sizes, WAL size, database settings",
      collect: () => d.store.statistics(),
    },
    {
      name: "audit-verify",
      fileName: "audit-verify.json",
      description: "verification of the audit chain",
      collect: (c) => d.verifyAudit(c.call),
    },
    {
      name: "plans",
      fileName: "plans-unfinished.json",
      description: "rollout plans not finished, with their status",
      collect: async () => {
        const records = await d.store.listRollouts({ unfinished: true, limit: 1000 });
        return records.map((r) => ({ plan: r.plan, status: r.status }));
      },
    },
    {
      name: "server-log",
      fileName: "server-log.jsonl",
      description: "the server's recent log lines (in-memory ring buffer), within --since",
      collect: async (c) => {
        if (!d.logRing) return { text: "" };
        const lines = d.logRing.snapshot().filter((line) => {
          const time = /"time":"([^"]+)"/.exec(line)?.[1];
          const at = time ? Date.parse(time) : NaN;
          return Number.isNaN(at) || at >= c.sinceMs;
        });
        return { text: lines.join("\n") };
      },
    },
  ];
}

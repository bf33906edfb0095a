import { createHash, randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients } from "../clients/index.js";
import { redactText, redactValue } from "../src/domain/redact.js";
import { createLogger, LogRing } from "../src/observability/logger.js";
import { render, SupportBundle } from "../src/ops/support-bundle.js";
import { initCa, issueCert, type IssuedCert } from "../src/security/ca.js";
import { tarGz } from "../src/cli/shared/tar.js";
import { AUTONOMY_BIN, runProgram, startChildServer, type ChildServer } from "./helpers/child.js";
import { STORE_KINDS, startTestServer } from "./helpers/server.js";

const secret = (label: string) => `${label}${randomBytes(12).toString("hex")}`;
const PEM_KEY = `-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC${randomBytes(24).toString("base64")}\n-----END PRIVATE KEY-----`;

describe("redaction", () => {
  const token = `ao_${randomBytes(32).toString("base64url")}`;
  it.each([
    ["an API token", `token in text ${token} here`, token],
    ["a bearer header", "authorization: Bearer abc.def-ghi_JKL", "abc.def-ghi_JKL"],
    ["a bearer header in a URL", "/v1/x?h=Authorization:%20Bearer%20s3cr3tvalue", "s3cr3tvalue"],
    ["a URL password", "postgres://app:pa55w0rd@db.internal:5432/cp", "pa55w0rd"],
    ["a URL password with an odd user", "postgresql://my.user:p%40ss@db/cp?sslmode=require", "p%40ss"],
    ["a secret query parameter", "GET /v1/events?access_token=tok123456&limit=1", "tok123456"],
    ["a password assignment", "connect failed: password=hunter2 host=db", "hunter2"],
    ["a PEM private key", `key:\n${PEM_KEY}\nend`, PEM_KEY.split("\n")[1]],
    ["an EC private key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBxyz\n-----END EC PRIVATE KEY-----", "MHcCAQEEIBxyz"],
    ["a truncated private key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAtrunc", "MIIEowIBAAKCAQEAtrunc"],
  ])("removes %s", (_name, text, leaked) => {
    const out = redactText(text);
    expect(out).not.toContain(leaked);
    expect(out).toContain("[redacted]");
  });

  it("empties secret-named keys at any depth and keeps the rest", () => {
    const out = redactValue({ a: { password: "x1", apiKey: "x2", client_secret: "x3", nested: [{ token: "x4" }] }, tokenFile: "/etc/t", enforced: true, name: "ok" });
    expect(JSON.stringify(out)).not.toMatch(/x[1-4]/);
    expect(out).toMatchObject({ tokenFile: "/etc/t", enforced: true, name: "ok" });
  });

  it("redacts the server log's ring buffer, bearer headers and keys in logged fields included", async () => {
    const ring = new LogRing(100);
    const sink = new Writable({ write: (_c, _e, done) => done() });
    const logger = createLogger({ format: "text", level: "info", destination: sink, ring });
    logger.info({ headers: { authorization: "Bearer abcdefghijkl" }, url: "postgres://u:pgpw12345@h/db", key: PEM_KEY, token }, "seen");
    const bundle = new SupportBundle([{ name: "log", fileName: "log.jsonl", description: "", collect: async () => ({ text: ring.snapshot().join("\n") }) }]);
    const { content } = await bundle.collect("log", { sinceMs: 0, nowMs: Date.now(), call: undefined as never });
    for (const s of ["abcdefghijkl", "pgpw12345", PEM_KEY.split("\n")[1], token]) expect(content).not.toContain(s);
    expect(JSON.parse(content).msg).toBe("seen");
  });

  it("keeps only the newest lines within its bounds", () => {
    const ring = new LogRing(3, 1000);
    ring.write("1\n2\n3\n4\n");
    expect(ring.snapshot()).toEqual(["2", "3", "4"]);
    ring.write(`${"x".repeat(900)}\n${"y".repeat(200)}\n`);
    expect(ring.snapshot()).toEqual(["y".repeat(200)]);
  });

  it("refuses a part registered twice and names unknown parts", async () => {
    const part = { name: "a", fileName: "a.json", description: "", collect: async () => ({}) };
    expect(() => new SupportBundle([part, part])).toThrow(/twice/);
    await expect(new SupportBundle([part]).collect("b", { sinceMs: 0, nowMs: 0, call: undefined as never })).rejects.toThrow(/no bundle part "b"/);
    expect(render("x.json", { n: 1n })).toBe('{\n  "n": 1\n}\n');
  });
});

describe("the tar writer", () => {
  it("writes an archive system tar extracts byte for byte", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "ao-tar-"));
    try {
      const big = randomBytes(5000);
      const file = path.join(dir, "a.tar.gz");
      const { writeFileSync } = await import("node:fs");
      writeFileSync(file, tarGz([{ name: "d/x.txt", content: Buffer.from("hi\n") }, { name: "d/big.bin", content: big }, { name: "d/empty", content: Buffer.alloc(0) }]));
      await promisify(execFile)("tar", ["-xzf", file, "-C", dir]);
      expect(readFileSync(path.join(dir, "d/x.txt"), "utf8")).toBe("hi\n");
      expect(readFileSync(path.join(dir, "d/big.bin")).equals(big)).toBe(true);
      expect(readFileSync(path.join(dir, "d/empty")).length).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.each(STORE_KINDS)("support bundle parts: %s", (kind) => {
  it("answers every standard part, store statistics with the dialect's settings", async () => {
    const server = await startTestServer(kind);
    const api = createOrchestratorClients({ baseUrl: server.url });
    try {
      const { parts } = await api.support.listBundleParts({});
      expect(parts.map((p) => p.name)).toEqual(["version", "flags", "health", "metrics", "store-stats", "audit-verify", "plans", "server-log", "ha", "divergence"]);
      const stats = JSON.parse((await api.support.collectBundlePart({ name: "store-stats" })).content);
      expect(stats.dialect).toBe(kind);
      const ha = JSON.parse((await api.support.collectBundlePart({ name: "ha" })).content);
      expect(ha).toMatchObject({ mode: kind === "sqlite" ? "standalone" : "postgres", writeReady: true });
      const divergence = JSON.parse((await api.support.collectBundlePart({ name: "divergence" })).content);
      expect(divergence).toEqual({ nodes: [], truncated: false, cap: 1000 });
      expect(stats.rowCounts.events).toBe(0);
      expect(Object.keys(stats.settings)).toContain(kind === "sqlite" ? "journal_mode" : "synchronous_commit");
      if (kind === "postgres") expect(JSON.stringify(JSON.parse((await api.support.collectBundlePart({ name: "flags" })).content))).not.toMatch(/:\/\/[^:/]+:[^[@/]+@/);
      const audit = JSON.parse((await api.support.collectBundlePart({ name: "audit-verify" })).content);
      expect(audit.ok).toBe(true);
      await expect(api.support.collectBundlePart({ name: "nope" })).rejects.toThrow(/no bundle part "nope"/);
      await expect(api.support.collectBundlePart({ name: "health", sinceSeconds: 0n })).rejects.toThrow(/since_seconds/);
    } finally {
      api.close();
      await server.stop();
    }
  });
});

describe("autonomy support-bundle generate against a TLS server with RBAC on", () => {
  let work: string;
  let dataDir: string;
  let server: ChildServer;
  let serverCert: IssuedCert;
  let caFile: string;
  let adminToken: string;
  const envToken = `ao_${randomBytes(32).toString("base64url")}`;
  const pgPassword = secret("pgpw");
  const bearer = secret("bearer");

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-bundle-"));
    dataDir = path.join(work, "data");
    const ca = path.join(work, "ca");
    caFile = (await initCa(ca)).certFile;
    serverCert = await issueCert(ca, { profile: "server", name: "api", ips: ["127.0.0.1"] });
    server = await startChildServer(["--data-dir", dataDir, "--tls-cert-file", serverCert.certFile, "--tls-key-file", serverCert.keyFile], {
      AUTONOMY_RBAC_ENFORCEMENT: "1",
      AUTONOMY_TOKEN: envToken,
      AUTONOMY_AUDIT_PG_URL: `postgres://auditor:${pgPassword}@db.example:5432/audit`,
    });
    adminToken = readFileSync(path.join(dataDir, "bootstrap-admin-token"), "utf8").trim();
    // Credentials where clients should not put them: in URLs, which the request log records.
    const ca509 = readFileSync(caFile);
    for (const p of [`/v1/health?access_token=${adminToken}`, `/v1/health?h=Authorization:%20Bearer%20${bearer}`, `/v1/events?dsn=postgres://x:${pgPassword}@h/db`]) {
      await new Promise<void>((resolve) => https.get(`${server.url}${p}`, { ca: ca509 }, (res) => (res.resume(), res.on("end", resolve))).on("error", () => resolve()));
    }
  });
  afterAll(async () => {
    await server?.kill();
    rmSync(work, { recursive: true, force: true });
  });

  const cli = (args: string[], token: string) =>
    runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "--tls-ca-file", caFile, ...args], { AUTONOMY_TOKEN: token });

  it("writes a redacted bundle with a manifest whose digests match its files", async () => {
    const out = path.join(work, "bundle.tar.gz");
    const run = await cli(["support-bundle", "generate", "--output", out, "--since", "1h"], adminToken);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`support bundle written: ${out}`);
    const dir = path.join(work, "x");
    mkdirSync(dir);
    await promisify(execFile)("tar", ["-xzf", out, "-C", dir]);
    const [top] = readdirSync(dir);
    const files = Object.fromEntries(readdirSync(path.join(dir, top)).map((f) => [f, readFileSync(path.join(dir, top, f))]));
    expect(Object.keys(files).sort()).toEqual(
      ["audit-verify.json", "client.json", "divergence.json", "flags.json", "ha.json", "health.json", "manifest.json", "metrics.prom", "plans-unfinished.json", "server-log.jsonl", "store-stats.json", "version.json"],
    );
    const manifest = JSON.parse(files["manifest.json"].toString());
    expect(manifest.failed).toEqual([]);
    for (const f of manifest.files) expect(createHash("sha256").update(files[f.path]).digest("hex")).toBe(f.sha256);

    // What the bundle must hold, so the secrets' absence below means they were removed.
    const log = files["server-log.jsonl"].toString();
    expect(log).toContain("access_token=[redacted]");
    expect(log).toContain("Bearer%20[redacted]");
    const flags = JSON.parse(files["flags.json"].toString());
    expect(flags.environment.AUTONOMY_AUDIT_PG_URL).toBe("postgres://auditor:[redacted]@db.example:5432/audit");
    expect(flags.environment.AUTONOMY_TOKEN).toBe("[redacted]");
    expect(flags.settings).toMatchObject({ tlsKeyFile: serverCert.keyFile, logFormat: "json", eventRetention: 0 });

    const keyBody = readFileSync(serverCert.keyFile, "utf8").split("\n").filter((l) => l && !l.startsWith("-----"));
    const caKeyBody = readFileSync(path.join(work, "ca", readdirSync(path.join(work, "ca")).find((f) => f.includes("key"))!), "utf8")
      .split("\n")
      .filter((l) => l && !l.startsWith("-----"));
    const everything = Object.values(files).map((b) => b.toString()).join("\n");
    for (const s of [adminToken, envToken, pgPassword, bearer, ...keyBody, ...caKeyBody]) expect(everything).not.toContain(s);
    expect(everything).not.toContain("PRIVATE KEY-----\nM");
  });

  it("prints a progress line per part on a terminal", async () => {
    const out = path.join(work, "tty.tar.gz");
    const argv = [process.execPath, AUTONOMY_BIN, "--orchestrator-url", server.url, "--tls-ca-file", caFile, "support-bundle", "generate", "--output", out];
    const { stdout } = await promisify(execFile)("script", ["-qec", argv.map((a) => `'${a}'`).join(" "), "/dev/null"], {
      env: { ...process.env, AUTONOMY_TOKEN: adminToken },
    });
    const names = ["version", "flags", "health", "metrics", "store-stats", "audit-verify", "plans", "server-log", "ha", "divergence"];
    names.forEach((name, i) => expect(stdout).toMatch(new RegExp(`\\[${i + 1}/${names.length}\\] ${name}: [\\d.]+ (B|KiB) in \\d+ ms`)));
  });

  it("refuses a principal without support:bundle and writes nothing", async () => {
    const tokenFile = path.join(work, "viewer-token");
    expect((await cli(["rbac", "token", "create", "--principal", "operator:viewer", "--output-file", tokenFile], adminToken)).code).toBe(0);
    expect((await cli(["rbac", "role", "assign", "--principal", "operator:viewer", "--role", "analyst"], adminToken)).code).toBe(0);
    const out = path.join(work, "refused.tar.gz");
    const run = await cli(["support-bundle", "generate", "--output", out], readFileSync(tokenFile, "utf8").trim());
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("support:bundle");
    expect(() => readFileSync(out)).toThrow();
  });
});

import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UI_SECURITY_HEADERS } from "../src/transport/ui-static.js";
import { TRANSPORTS, h1, h2 } from "./helpers/http.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const UI_DIR = path.resolve("dist/ui");
/** The budget of the first load of /ui/: compressed JavaScript. */
const JS_BUDGET_BYTES = 300 * 1024;

describe("the dashboard's files at /ui/", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer("sqlite", { rbacEnforcement: true });
  });
  afterAll(() => server.stop());

  describe.each(TRANSPORTS)("over %s", (_name, request) => {
    it("answers the page with a strict CSP, nosniff and no framing", async () => {
      const res = await request(`${server.url}/ui/`);
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
      const csp = res.headers["content-security-policy"];
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toContain("default-src 'none'");
      expect(csp).not.toContain("unsafe-inline");
      expect(csp).not.toContain("unsafe-eval");
      expect(res.headers["x-content-type-options"]).toBe("nosniff");
      expect(res.headers["x-frame-options"]).toBe("DENY");
      expect(res.headers["cache-control"]).toBe("no-cache");
      // No inline script: every <script> names a file of the build.
      const scripts = [...res.text.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)];
      expect(scripts.length).toBeGreaterThan(0);
      for (const s of scripts) {
        expect(s[0]).toMatch(/src="\/ui\/assets\/[^"]+\.js"/);
        expect(s[1].trim()).toBe("");
      }
    });

    it("serves the hashed assets for a year, and the same headers on them", async () => {
      const index = await request(`${server.url}/ui/`);
      const src = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(index.text)![1];
      const res = await request(`${server.url}${src}`);
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe("text/javascript; charset=utf-8");
      expect(res.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
      expect(res.headers["content-security-policy"]).toBe(UI_SECURITY_HEADERS["content-security-policy"]);
      const again = await request(`${server.url}${src}`, { headers: { "if-none-match": res.headers.etag } });
      expect(again.status).toBe(304);
    });

    it.each([
      ["a file that is not there", "/ui/nope.js", 404],
      ["a dot-dot path", "/ui/../package.json", 404],
      ["an encoded dot-dot path", "/ui/..%2f..%2fpackage.json", 404],
      ["a bad percent-encoding", "/ui/%E0%A4%A", 404],
    ])("answers %s with 404 and nothing from the disk", async (_case, p, status) => {
      const res = await request(`${server.url}${p}`);
      expect(res.status).toBe(status);
      expect(res.json()).toMatchObject({ code: "not_found" });
    });

    it("refuses other methods with 405 and Allow", async () => {
      const res = await request(`${server.url}/ui/`, { method: "POST", body: "{}" });
      expect(res.status).toBe(405);
      expect(res.headers.allow).toBe("GET, HEAD");
    });
  });

  it("redirects /ui to /ui/ and leaves the API paths to the API", async () => {
    const res = await fetch(`${server.url}/ui`, { redirect: "manual" });
    expect(res.status).toBe(308);
    expect(res.headers.get("location")).toBe("/ui/");
    expect((await h1(`${server.url}/v1/health`)).status).toBe(200);
    expect((await h1(`${server.url}/uix`)).status).toBe(404);
  });

  it("counts its requests under one route label in the metrics", async () => {
    await h1(`${server.url}/ui/`);
    await h1(`${server.url}/ui/nope.js`);
    const metrics = (await h1(`${server.url}/metrics`)).text;
    expect(metrics).toMatch(/cp_http_requests_total\{[^}]*route="GET \/ui\/"[^}]*status="200"[^}]*\} \d+/);
    expect(metrics).not.toContain('route="GET /ui/nope.js"');
  });

  it("keeps an HTTP/1.1 connection open from one file to the next", async () => {
    const res = await fetch(`${server.url}/ui/`);
    await res.text();
    expect(res.headers.get("connection")).toBe("keep-alive");
  });

  it.each([
    ["Sec-Fetch-Site: cross-site", { "sec-fetch-site": "cross-site" }, 403],
    ["Sec-Fetch-Site: same-site", { "sec-fetch-site": "same-site" }, 403],
    ["an Origin of another host", { origin: "https://elsewhere.example" }, 403],
    ["Origin: null", { origin: "null" }, 403],
    ["Sec-Fetch-Site: same-origin", { "sec-fetch-site": "same-origin", origin: "https://elsewhere.example" }, 401],
    ["no browser header (a CLI, an agent, curl)", {}, 401],
  ])("a state-changing call marked %s is answered %i", async (_case, headers, status) => {
    const res = await h1(`${server.url}/v1/nodes/n-1/drain`, {
      method: "POST",
      headers: { "content-type": "text/plain", ...headers },
      body: JSON.stringify({ reason: "x" }),
    });
    expect(res.status).toBe(status);
    if (status === 403) expect(res.json().message).toContain("another site");
  });

  it("lets a same-origin call through and never refuses a read", async () => {
    const own = new URL(server.url).host;
    const sameOrigin = await h1(`${server.url}/v1/nodes/n-1/drain`, { method: "POST", headers: { origin: `http://${own}` }, body: "{}" });
    expect(sameOrigin.status).toBe(401);
    expect((await h1(`${server.url}/v1/health`, { headers: { "sec-fetch-site": "cross-site" } })).status).toBe(200);
  });

  it("sends gzip to a browser that accepts it", async () => {
    const index = await h1(`${server.url}/ui/`);
    const src = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(index.text)![1];
    const plain = await h2(`${server.url}${src}`);
    const zipped = await h2(`${server.url}${src}`, { headers: { "accept-encoding": "gzip, deflate, br" } });
    expect(plain.headers["content-encoding"]).toBeUndefined();
    expect(zipped.headers["content-encoding"]).toBe("gzip");
    expect(Number(zipped.headers["content-length"])).toBeLessThan(Number(plain.headers["content-length"]) / 2);
  });

  it("keeps the first load under 300 KB of compressed JavaScript", () => {
    const html = readFileSync(path.join(UI_DIR, "index.html"), "utf8");
    const entry = [...html.matchAll(/(?:src|href)="\/ui\/(assets\/[^"]+\.js)"/g)].map((m) => m[1]);
    expect(entry.length).toBeGreaterThan(0);
    // Every chunk the entry imports statically loads with it; lazy chunks (import()) do not.
    const seen = new Set<string>();
    const visit = (rel: string) => {
      if (seen.has(rel)) return;
      seen.add(rel);
      const code = readFileSync(path.join(UI_DIR, rel), "utf8");
      for (const m of code.matchAll(/\bimport\s*(?:[\w*{}\s,$]+from\s*)?["']\.\/([^"']+\.js)["']/g)) visit(`assets/${m[1]}`);
    };
    entry.forEach(visit);
    const gzipped = [...seen].reduce((n, rel) => n + gzipSync(readFileSync(path.join(UI_DIR, rel)), { level: 9 }).length, 0);
    const allJs = readdirSync(path.join(UI_DIR, "assets")).filter((f) => f.endsWith(".js"));
    expect(seen.size).toBeLessThanOrEqual(allJs.length);
    expect(gzipped).toBeLessThan(JS_BUDGET_BYTES);
  });
});

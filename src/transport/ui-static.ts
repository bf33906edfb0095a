import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { ServerResponse } from "node:http";
import type { RequestInfo } from "./context.js";
import type { NodeRequest, NodeResponse } from "./rest.js";

/** Where the dashboard is served. */
export const UI_PREFIX = "/ui/";

/**
 * The headers of every dashboard answer. Scripts and styles come only from the server's own
 * files (no inline script, no eval), the page talks only to its own origin, and no other
 * site may frame it.
 */
export const UI_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; "),
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
};

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

interface UiFile {
  type: string;
  body: Buffer;
  /** The gzip encoding, made at the first request that accepts it (null: not smaller). */
  gzip?: Buffer | null;
  /** Hashed names under assets/ never change: cache them for a year; everything else is revalidated. */
  immutable: boolean;
  etag: string;
}

/** The built dashboard next to the compiled server (dist/ui), or dist/ui of the checkout when run from source. */
export function defaultUiDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const compiled = path.resolve(here, "../../ui");
  return existsSync(path.join(compiled, "index.html")) ? compiled : path.resolve(here, "../../dist/ui");
}

function walk(dir: string, base = dir, out = new Map<string, string>()): Map<string, string> {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) walk(full, base, out);
    else out.set(path.relative(base, full).split(path.sep).join("/"), full);
  }
  return out;
}

/** Reads every file of the built dashboard into memory (a few hundred KB); gzip waits for a browser that asks. */
function loadFiles(dir: string): Map<string, UiFile> {
  const files = new Map<string, UiFile>();
  if (!existsSync(path.join(dir, "index.html"))) return files;
  for (const [rel, full] of walk(dir)) {
    const type = TYPES[path.extname(rel)];
    if (!type) continue;
    const body = readFileSync(full);
    const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
    files.set(rel, { type, body, immutable: rel.startsWith("assets/"), etag });
  }
  return files;
}

function send(res: NodeResponse, status: number, headers: Record<string, string>, body?: Buffer | string): void {
  const r = res as ServerResponse;
  r.writeHead(status, { ...UI_SECURITY_HEADERS, ...headers });
  if (body === undefined) r.end();
  else r.end(body);
}

/**
 * Serves the built dashboard under /ui/ from memory (read once at start; nothing of the
 * request path reaches the file system). Answers true when the path was the dashboard's
 * (so the caller stops there), false for every other path. The files hold no data: every
 * figure on the page comes from the RPCs, which check the caller's credential.
 */
export function createUiStaticHandler(dir: string = defaultUiDir()): (req: NodeRequest, res: NodeResponse, info?: RequestInfo) => boolean {
  const files = loadFiles(dir);
  return (req, res, info) => {
    const pathname = (req.url ?? "/").split("?")[0];
    if (pathname !== "/ui" && !pathname.startsWith(UI_PREFIX)) return false;
    // One bounded label for the request metrics and the log line, whatever the file.
    if (info) info.route = "GET /ui/";
    if (pathname === "/ui") {
      send(res, 308, { location: UI_PREFIX, "content-length": "0" });
      return true;
    }
    if (req.method === "GET" || req.method === "HEAD") {
      // Answer once the request is read, so an HTTP/1.1 connection stays open for the next file.
      if (req.complete) answer(req, res, pathname);
      else {
        req.once("end", () => answer(req, res, pathname));
        req.resume();
      }
      return true;
    }
    send(res, 405, { allow: "GET, HEAD", "content-type": "application/json" }, JSON.stringify({ code: "method_not_allowed", message: `${req.method} is not allowed on ${pathname}; allowed: GET, HEAD` }));
    return true;
  };

  function answer(req: NodeRequest, res: NodeResponse, pathname: string): void {
    if (files.size === 0) {
      send(res, 404, { "content-type": "application/json" }, JSON.stringify({ code: "not_found", message: "the dashboard is not built into this installation (npm run build)" }));
      return;
    }
    let rel: string;
    try {
      rel = decodeURIComponent(pathname.slice(UI_PREFIX.length));
    } catch {
      rel = "\0";
    }
    // The page routes in its URL fragment, so any other path under /ui/ is a missing file.
    const file = files.get(rel === "" ? "index.html" : rel);
    if (!file) {
      send(res, 404, { "content-type": "application/json" }, JSON.stringify({ code: "not_found", message: `no such path: ${pathname}` }));
      return;
    }
    const headers: Record<string, string> = {
      "content-type": file.type,
      "cache-control": file.immutable ? "public, max-age=31536000, immutable" : "no-cache",
      etag: file.etag,
      vary: "accept-encoding",
    };
    if (req.headers["if-none-match"] === file.etag) {
      send(res, 304, headers);
      return;
    }
    const acceptsGzip = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    if (acceptsGzip && file.gzip === undefined) {
      const gzip = gzipSync(file.body, { level: 9 });
      file.gzip = gzip.length < file.body.length ? gzip : null;
    }
    const body = acceptsGzip && file.gzip ? file.gzip : file.body;
    if (body === file.gzip) headers["content-encoding"] = "gzip";
    headers["content-length"] = String(body.length);
    send(res, 200, headers, req.method === "HEAD" ? undefined : body);
  }
}
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Refuses (403) a state-changing request that a browser says another site's page made. A
 * browser sends its client certificate with every request to this origin, also with those a
 * page of another site makes, and the REST paths read a JSON body whatever its content type: a
 * form on another site could otherwise act with the certificate of an operator who opened the
 * dashboard. Browsers mark such requests (Sec-Fetch-Site, Origin); the CLI, the agents and
 * curl send neither header, so they are never refused here. Answers true when it answered.
 */
export function refuseCrossSite(req: NodeRequest, res: NodeResponse, info?: RequestInfo): boolean {
  if (SAFE_METHODS.has(req.method ?? "GET")) return false;
  const site = req.headers["sec-fetch-site"];
  const origin = req.headers.origin;
  const host = req.headers.host ?? req.headers[":authority"];
  let foreign = site === "cross-site" || site === "same-site";
  if (!foreign && site === undefined && typeof origin === "string") {
    try {
      foreign = origin === "null" || new URL(origin).host !== host;
    } catch {
      foreign = true;
    }
  }
  if (!foreign) return false;
  if (info) info.route = "cross_site_refused";
  const r = res as ServerResponse;
  r.writeHead(403, { "content-type": "application/json" });
  r.end(JSON.stringify({ code: "permission_denied", message: "a request another site's page made is refused: open the dashboard at /ui/ on this server" }));
  return true;
}

/**
 * What every request passes before Connect or the REST transcoder sees it, in this order:
 *
 *   1. the RPC it calls, from the path alone (RPC paths, then the REST bindings); plain paths
 *      (/metrics, /v1/crl) and unknown ones go straight on, reading nothing;
 *   2. throttling: an address whose unauthenticated calls used up its bucket is answered 429
 *      (`resource_exhausted`) before any credential is looked at;
 *   3. the credential, from the headers only: a call that needs one and has none, or a bad
 *      token, is answered 401 (`unauthenticated`) without reading its body;
 *   4. the refused-bodies budget: a principal or address whose bodies the checks below keep
 *      refusing is answered 429 (`resource_exhausted`) before its next body is read;
 *   5. the body: read within the size limit and the request timeout, with at most one large
 *      body per core being read and parsed at a time, then checked for nesting depth and
 *      framing so the parsers' cost stays linear; Connect and REST then read it from memory.
 *
 * Answers are written in the protocol of the request (REST and Connect unary JSON, gRPC and
 * gRPC-Web trailers-only, Connect streaming end-of-stream), as Connect itself would write them.
 */
import type http from "node:http";
import http2 from "node:http2";
import os from "node:os";
import { promisify } from "node:util";
import zlib from "node:zlib";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import { PayloadTooLargeError, ValidationError } from "../domain/errors.js";
import type { Logger } from "../observability/logger.js";
import type { PeerIdentity } from "../domain/identity.js";
import { checkJsonDepth, checkProtoMessage, envelopesOf, JsonDepthScanner, type Envelope } from "./body-checks.js";
import type { RequestInfo } from "./context.js";
import { domainToConnectError, RequestTimeoutError, restErrorBody, restStatus } from "./errors.js";
import type { RequestHandler } from "./listener.js";
import type { RateLimiter } from "./rate-limit.js";
import { requestHeaders, type NodeRequest, type NodeResponse, type RestResolver } from "./rest.js";
import type { ServiceEntry } from "./services.js";

/** How long a throttled call waits for its 429. */
export const THROTTLE_HOLD_MS = 1000;

/**
 * An address that used up its unauthenticated calls, or a principal or address that used up its
 * refused bodies: answered `resource_exhausted` with Retry-After, held THROTTLE_HOLD_MS first.
 * Not a ConnectError subclass: ConnectError's `instanceof` accepts any ConnectError.
 */
class ThrottledError extends Error {
  constructor(
    what: string,
    readonly retryAfterSeconds: number,
  ) {
    super(`${what}; retry in ${retryAfterSeconds}s`);
  }

  toConnectError(): ConnectError {
    return new ConnectError(this.message, Code.ResourceExhausted, new Headers({ "retry-after": String(this.retryAfterSeconds) }));
  }
}

/** The answer to a client without a certificate on a server that requires one, but lets it enrol. */
export const CERTLESS_REFUSAL =
  "this server requires a client certificate (mutual TLS); without one it serves only enrolment (edgectl enroll --token)";

/** Bodies above this size count against the large-body permits. */
export const LARGE_BODY_BYTES = 1024 * 1024;

export interface GateOptions {
  services: readonly ServiceEntry[];
  resolveRest: RestResolver;
  /** True for an RPC anyone may call (a "public" permission, or RBAC enforcement off): never throttled. */
  isOpen(method: DescMethod): boolean;
  /** Authentication from the headers (src/security/authz.ts `checkCredential`): a refusal, or the principal's id when the credential names one. */
  checkCredential(method: DescMethod, peer: PeerIdentity | undefined, header: Headers, source: string): Promise<{ denied?: ConnectError; principal?: string }>;
  /** The request's log and metrics record (its verified client certificate included). */
  infoOf(req: NodeRequest): RequestInfo;
  /** Unauthenticated calls per client address. */
  limiter: RateLimiter;
  /**
   * Bodies refused by the body checks (too large, nested too deep, malformed framing, too
   * slow), counted per principal and per client address: once either has used up its bucket,
   * its calls are answered `resource_exhausted` (429) with Retry-After before their body is
   * read. Off when unset or at a rate of 0.
   */
  refusedBodies?: RateLimiter;
  maxBodyBytes: number;
  /** The whole body must arrive within this many milliseconds of the request's headers. */
  requestTimeoutMs: number;
  /** Large bodies read and parsed at once; the number of cores when unset. */
  largeBodyPermits?: number;
  /**
   * True for a request on a connection that presented no client certificate to a server that
   * requires one, let in for enrolment only (serve --ca-dir): it may call `certlessMethods`
   * and nothing else (no RPC, REST path, page or /metrics), else it is answered `unauthenticated`.
   */
  certless?(req: NodeRequest): boolean;
  certlessMethods?: ReadonlySet<DescMethod>;
  /** A certless request was refused (counted like a handshake without a certificate). */
  onCertlessRefused?(): void;
  logger: Logger;
}

type Protocol = "rest" | "connect" | "connect-stream" | "grpc" | "grpcweb";

function protocolOf(contentType: string): Exclude<Protocol, "rest"> {
  if (contentType.startsWith("application/grpc-web")) return "grpcweb";
  if (contentType.startsWith("application/grpc")) return "grpc";
  if (contentType.startsWith("application/connect+")) return "connect-stream";
  return "connect";
}

/** The client's IP address, the key of throttling and of the connection caps. */
export function clientAddress(req: NodeRequest): string {
  const socket = "stream" in req ? req.stream.session?.socket : req.socket;
  return socket?.remoteAddress ?? "unknown";
}

/**
 * The throttling key of an address: IPv4 addresses (also IPv4-mapped) as they are, IPv6 by
 * their /64, which one host can fill with addresses at will.
 */
export function throttleKey(address: string): string {
  if (!address.includes(":") || address.startsWith("::ffff:")) return address;
  const [head, tail = ""] = address.split("::");
  const groups = head.split(":").filter(Boolean);
  if (groups.length < 4) {
    const rest = tail.split(":").filter(Boolean);
    const zeros = 8 - groups.length - rest.length;
    groups.push(...Array(Math.max(0, zeros)).fill("0"), ...rest);
  }
  return `${groups.slice(0, 4).join(":")}::/64`;
}

/** A counting semaphore: `acquire` resolves with a release function once a permit is free. */
class Permits {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

const percentEncode = (s: string) => s.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));

/** Writes `err` as the protocol of the request answers errors. */
export function writeError(req: NodeRequest, res: NodeResponse, protocol: Protocol, contentType: string, err: ConnectError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // HTTP/2: an answer given before the body was read ends the stream (RST_STREAM NO_ERROR,
  // after the answer), so the client stops sending; HTTP/1.1 closes the connection instead.
  if ("stream" in req) {
    res.once("finish", () => {
      if (req.complete || req.stream.destroyed) return;
      req.stream.close(http2.constants.NGHTTP2_NO_ERROR);
      // A body refused as it arrived (too deep, too large, too slow) was sent on purpose or by
      // a broken client: its session takes no new streams (GOAWAY) and ends when the open ones
      // have, so that the client pays a new connection for the next one.
      if (err.code !== Code.Unauthenticated && err.code !== Code.ResourceExhausted) req.stream.session?.close();
      else if (err.cause instanceof PayloadTooLargeError) req.stream.session?.close();
    });
  }
  const extra: Record<string, string> = {};
  err.metadata.forEach((value, key) => (extra[key] = value));
  const w = res as http.ServerResponse;
  switch (protocol) {
    case "grpc":
    case "grpcweb": {
      // Trailers-only: the status travels in the headers of an empty response.
      const type = protocol === "grpc" ? "application/grpc" : contentType.startsWith("application/grpc-web-text") ? "application/grpc-web-text" : "application/grpc-web+proto";
      w.writeHead(200, { ...extra, "content-type": type, "grpc-status": String(err.code), "grpc-message": percentEncode(err.rawMessage) });
      w.end();
      return;
    }
    case "connect-stream": {
      const json = Buffer.from(JSON.stringify({ error: { code: codeToString(err.code), message: err.rawMessage } }));
      const frame = Buffer.alloc(5 + json.length);
      frame[0] = 0b10; // end of stream
      frame.writeUInt32BE(json.length, 1);
      json.copy(frame, 5);
      w.writeHead(200, { ...extra, "content-type": contentType.startsWith("application/connect+json") ? "application/connect+json" : "application/connect+proto" });
      w.end(frame);
      return;
    }
    default: {
      const status = protocol === "rest" ? restStatus(err) : codeToHttpStatus(err.code);
      w.writeHead(status, { ...extra, "content-type": "application/json" });
      w.end(restErrorBody(err));
    }
  }
}

/** Reads the whole body within `limit` bytes and the deadline, taking a large-body permit past LARGE_BODY_BYTES. */
function readBody(
  req: NodeRequest,
  limit: number,
  timeoutMs: number,
  permit: () => Promise<() => void>,
  hold: (release: () => void) => void,
  onChunk?: (chunk: Buffer) => void,
): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (declared > limit) return Promise.reject(new PayloadTooLargeError(`request body: larger than ${limit} bytes`));
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let large = false;
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
      if (err) {
        req.pause();
        reject(err);
      } else resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
    };
    const timer = setTimeout(() => finish(new RequestTimeoutError(`request body: not received within ${timeoutMs / 1000}s`)), timeoutMs);
    const takeLarge = () => {
      large = true;
      req.pause();
      void permit().then((release) => {
        hold(release);
        if (!done) req.resume();
      });
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return finish(new PayloadTooLargeError(`request body: larger than ${limit} bytes`));
      try {
        onChunk?.(chunk);
      } catch (err) {
        return finish(err as Error);
      }
      chunks.push(chunk);
      if (!large && size > LARGE_BODY_BYTES) takeLarge();
    };
    const onEnd = () => finish();
    const onError = (err: Error) => finish(err);
    const onClose = () => finish(new ConnectError("the client closed the request", Code.Canceled));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
    if (declared > LARGE_BODY_BYTES) takeLarge();
  });
}

/** Lets Connect and the transcoder, which read the request as an async iterable, read `body` from memory. */
function replay(req: NodeRequest, body: Buffer): void {
  Object.defineProperty(req, Symbol.asyncIterator, {
    configurable: true,
    value: async function* () {
      if (body.length > 0) yield body;
    },
  });
}

const DECOMPRESS: Record<string, (data: Buffer, options: zlib.ZlibOptions) => Promise<Buffer>> = {
  gzip: promisify(zlib.gunzip),
  br: promisify(zlib.brotliDecompress),
};

/** Decompresses within `limit` bytes; undefined for an encoding this server does not take (Connect answers those). */
async function decompress(encoding: string, data: Buffer, limit: number): Promise<Buffer | undefined> {
  const fn = DECOMPRESS[encoding];
  if (!fn) return undefined;
  try {
    return await fn(data, { maxOutputLength: limit });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") throw new PayloadTooLargeError(`request body: larger than ${limit} bytes once decompressed`);
    throw new ValidationError("", `request body: not valid ${encoding}`);
  }
}

function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  out.set(data, 5);
  return out;
}

/**
 * The checks of a body before its parser sees it; returns the body the parser is to read.
 * Compressed bodies and frames are decompressed here (within the body limit), checked, and
 * passed on decompressed, so that the parser never meets bytes that were not checked.
 */
async function checkBody(req: NodeRequest, protocol: Protocol, contentType: string, header: Headers, method: DescMethod, body: Buffer, limit: number): Promise<Buffer> {
  const check = (bytes: Uint8Array) => (contentType.includes("json") || protocol === "rest" ? checkJsonDepth(bytes) : checkProtoMessage(method.input, bytes));
  if (protocol === "rest") {
    check(body);
    return body;
  }
  if (protocol === "connect") {
    const encoding = header.get("content-encoding") ?? "identity";
    if (encoding === "identity") {
      check(body);
      return body;
    }
    const plain = await decompress(encoding, body, limit);
    if (!plain) return body;
    check(plain);
    delete req.headers["content-encoding"];
    delete req.headers["content-length"];
    return plain;
  }
  const encodingHeader = protocol === "connect-stream" ? "connect-content-encoding" : "grpc-encoding";
  const encoding = header.get(encodingHeader) ?? "identity";
  const envelopes = envelopesOf(body);
  const data = (e: Envelope) => body.subarray(e.start, e.end);
  const isEnd = (e: Envelope) => protocol === "connect-stream" && (e.flags & 0b10) !== 0;
  const compressed = envelopes.some((e) => !isEnd(e) && e.flags & 0b1);
  if (compressed && encoding === "identity") {
    throw new ValidationError("", `request body: a message frame is flagged compressed but the request names no ${encodingHeader}`);
  }
  if (!compressed) {
    for (const e of envelopes) if (!isEnd(e)) check(data(e));
    return body;
  }
  const frames: Buffer[] = [];
  for (const e of envelopes) {
    if (isEnd(e) || !(e.flags & 0b1)) {
      if (!isEnd(e)) check(data(e));
      frames.push(envelope(e.flags, data(e)));
      continue;
    }
    const plain = await decompress(encoding, data(e), limit);
    if (!plain) return body;
    check(plain);
    frames.push(envelope(e.flags & ~0b1, plain));
  }
  return Buffer.concat(frames);
}

/** Wraps the RPC handler with the gate. */
export function createGate(opts: GateOptions, next: RequestHandler): RequestHandler {
  const rpcPaths = new Map<string, DescMethod>();
  for (const { service } of opts.services) for (const method of service.methods) rpcPaths.set(`/${service.typeName}/${method.name}`, method);
  const permits = new Permits(opts.largeBodyPermits ?? os.availableParallelism());

  const toConnect = (err: unknown): ConnectError | undefined => (err instanceof ConnectError ? err : domainToConnectError(err));

  async function handle(req: NodeRequest, res: NodeResponse, protocol: Protocol, method: DescMethod, contentType: string): Promise<void> {
    const info = opts.infoOf(req);
    const header = requestHeaders(req);
    const address = throttleKey(clientAddress(req));
    if (opts.isOpen(method)) return passBody(req, res, protocol, method, contentType, header, refusalKeys(address, undefined));
    // A verified client certificate is never throttled. A call with no credential at all is
    // refused for sure: it takes its token before the (audited) refusal, so that concurrent
    // ones cannot all pass on the same last token. A bearer token is looked up first and
    // takes a token only when it fails.
    if (!info.peer) {
      const wait = opts.limiter.retryAfter(address);
      if (wait > 0) {
        throw new ThrottledError(`too many unauthenticated requests from ${address}`, wait);
      }
    }
    const bare = !info.peer && !header.has("authorization");
    if (bare) opts.limiter.take(address);
    const { denied, principal } = await opts.checkCredential(method, info.peer, header, address);
    if (denied) {
      if (!bare && !info.peer) opts.limiter.take(address);
      throw denied;
    }
    return passBody(req, res, protocol, method, contentType, header, refusalKeys(address, principal));
  }

  /** The refused-bodies buckets of a call: its principal's (when known) and its address's. */
  function refusalKeys(address: string, principal: string | undefined): string[] {
    return principal === undefined ? [`address ${address}`] : [`principal ${principal}`, `address ${address}`];
  }

  async function passBody(req: NodeRequest, res: NodeResponse, protocol: Protocol, method: DescMethod, contentType: string, header: Headers, keys: string[]): Promise<void> {
    const hasBody = req.method !== "GET" && req.method !== "HEAD" && req.method !== "DELETE";
    const budget = opts.refusedBodies;
    if (hasBody && budget?.enabled) {
      // A caller whose bodies keep being refused is answered before its next body is read, so
      // that refusing costs it a held stream rather than the server a read and a check.
      for (const key of keys) {
        const wait = budget.retryAfter(key);
        if (wait > 0) throw new ThrottledError(`too many refused request bodies from ${key}`, wait);
      }
      try {
        await readAndCheck(req, res, protocol, method, contentType, header);
      } catch (err) {
        if (err instanceof ValidationError || err instanceof PayloadTooLargeError || err instanceof RequestTimeoutError) for (const key of keys) budget.take(key);
        throw err;
      }
    } else if (hasBody) {
      await readAndCheck(req, res, protocol, method, contentType, header);
    }
    next(req, res);
  }

  async function readAndCheck(req: NodeRequest, res: NodeResponse, protocol: Protocol, method: DescMethod, contentType: string, header: Headers): Promise<void> {
    let release: (() => void) | undefined;
    let closed = false;
    res.once("close", () => {
      closed = true;
      release?.();
    });
    // Plain JSON is checked for depth as it arrives, and refused at its first bytes.
    const plainJson = (protocol === "rest" || (protocol === "connect" && contentType.includes("json"))) && (header.get("content-encoding") ?? "identity") === "identity";
    const scanner = plainJson ? new JsonDepthScanner() : undefined;
    const body = await readBody(
      req,
      opts.maxBodyBytes,
      opts.requestTimeoutMs,
      () => permits.acquire(),
      (r) => {
        if (closed) r();
        else release = r;
      },
      scanner && ((chunk) => scanner.feed(chunk)),
    );
    replay(req, scanner ? body : await checkBody(req, protocol, contentType, header, method, body, opts.maxBodyBytes));
  }

  return (req, res) => {
    const pathname = (req.url ?? "/").split("?", 1)[0];
    const contentType = String(req.headers["content-type"] ?? "");
    const rpcMethod = rpcPaths.get(pathname);
    const rest = rpcMethod ? undefined : opts.resolveRest(req.method, pathname);
    const method = rpcMethod ?? rest?.method;
    const protocol: Protocol = rpcMethod ? protocolOf(contentType) : "rest";
    if (opts.certless?.(req) && !(method && opts.certlessMethods?.has(method))) {
      opts.onCertlessRefused?.();
      const info = opts.infoOf(req);
      info.route ??= rpcMethod ? `${rpcMethod.parent.typeName}/${rpcMethod.name}` : (rest?.route ?? "certless");
      info.code = codeToString(Code.Unauthenticated);
      const refusal = new ConnectError(CERTLESS_REFUSAL, Code.Unauthenticated);
      writeError(req, res, protocol, contentType, refusal);
      return;
    }
    if (!method) {
      next(req, res);
      return;
    }
    const start = async () => {
      // Connect needs the authority to build the request URL; HTTP/1.0 may leave it out.
      if (!("stream" in req ? req.authority : req.headers.host)) throw new ValidationError("host", "required: the request names no Host");
      await handle(req, res, protocol, method, contentType);
    };
    start().catch((err: unknown) => {
      let connectErr = err instanceof ThrottledError ? err.toConnectError() : toConnect(err);
      if (!connectErr || connectErr.code === Code.Internal) {
        opts.logger.error({ err, path: pathname, method: req.method }, "request failed before the interceptors");
        connectErr = new ConnectError("internal error", Code.Internal, undefined, undefined, err);
      }
      const info = opts.infoOf(req);
      info.route ??= rpcMethod ? `${method.parent.typeName}/${method.name}` : rest?.route;
      info.protocol ??= protocol === "connect-stream" ? "connect" : protocol;
      info.code = codeToString(connectErr.code);
      const answer = connectErr;
      if (err instanceof ThrottledError) {
        // Held before it is sent: a client that ignores Retry-After gets one answer per open
        // stream (HTTP/2) or connection (HTTP/1.1) a second, however fast it asks.
        const hold = setTimeout(() => {
          if (!res.writableEnded && !res.destroyed) writeError(req, res, protocol, contentType, answer);
        }, THROTTLE_HOLD_MS);
        res.once("close", () => clearTimeout(hold));
        return;
      }
      writeError(req, res, protocol, contentType, answer);
    });
  };
}

/**
 * Tells why a call never reached the orchestrator's handlers, in words an operator can act on:
 * nothing listening, a name that does not resolve, TLS refused on either side, or a server that
 * is not the orchestrator. Server answers (not_found, permission_denied, ...) are left alone.
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import tls from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";

/** What went wrong with the connection, for programs that react differently (the agent). */
export type TransportFailureKind =
  | "refused" // nothing listens
  | "unresolved" // the host name does not resolve
  | "unreachable" // no route, timed out connecting
  | "timeout" // connected, but no answer in time
  | "tls-hostname" // the server certificate is for other names
  | "tls-unknown-ca" // the server certificate is not signed by a trusted CA
  | "tls-server-expired"
  | "tls-not-tls" // https:// to a cleartext server
  | "tls-cert-required" // mutual TLS, no client certificate given
  | "tls-cert-refused" // the server refused the client certificate (revoked, expired, unknown CA)
  | "not-orchestrator" // something answered, but not the orchestrator's API
  | "closed"; // the connection closed without an answer

export interface TransportFailure {
  kind: TransportFailureKind;
  /** One sentence, without the URL (the caller says where the URL came from). */
  message: string;
}

export interface DiagnoseContext {
  url: string;
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** Flag names the TLS material came from, for the advice (default: the CLI flags). */
  flags?: { ca: string; cert: string };
}

interface NodeErrorLike extends Error {
  code?: string;
  host?: string;
  cert?: { subjectaltname?: string; subject?: Record<string, string>; issuer?: Record<string, string>; valid_to?: string };
}

function nodeChain(err: unknown): NodeErrorLike[] {
  const chain: NodeErrorLike[] = [];
  for (let e = err; e instanceof Error && !chain.includes(e); e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}

const UNKNOWN_CA = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
]);

/** Codes of a connection the peer closed or reset, or an HTTP/2 session that broke. */
const CLOSED = new Set(["ECONNRESET", "EPIPE", "ERR_HTTP2_SESSION_ERROR", "ERR_HTTP2_STREAM_ERROR", "ERR_HTTP2_GOAWAY_SESSION", "ERR_STREAM_PREMATURE_CLOSE", "ERR_HTTP2_INVALID_SESSION"]);

function subjectName(subject: Record<string, string> | undefined): string {
  if (!subject) return "?";
  return subject.CN ? `CN=${subject.CN}` : Object.entries(subject).map(([k, v]) => `${k}=${v}`).join(",");
}

/** A failure that the error itself explains; undefined when it takes a probe or is a server answer. */
function fromError(err: unknown, ctx: DiagnoseContext): TransportFailure | "closed" | undefined {
  const flags = ctx.flags ?? { ca: "--tls-ca-file", cert: "--tls-cert-file" };
  const url = new URL(ctx.url);
  for (const e of nodeChain(err)) {
    const code = e.code;
    if (code === "ECONNREFUSED") return { kind: "refused", message: `connection refused: nothing listens on ${url.host}` };
    if (code === "ENOTFOUND" || code === "EAI_AGAIN") return { kind: "unresolved", message: `the host name "${url.hostname}" does not resolve` };
    if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH" || code === "ECONNABORTED") {
      return { kind: "unreachable", message: `${url.host} cannot be reached (${code})` };
    }
    if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
      const names = (e.cert?.subjectaltname ?? "").split(/,\s*/).filter(Boolean).map((n) => n.replace(/^(DNS|IP Address):/, ""));
      return {
        kind: "tls-hostname",
        message:
          `the server's certificate is for ${names.length ? names.map((n) => `"${n}"`).join(", ") : "no host names"}, not "${url.hostname}": ` +
          `use a URL with one of those names, or give the server a certificate for "${url.hostname}" ` +
          `(autonomy cert issue --profile server ${isIP(url.hostname.replace(/^\[|\]$/g, "")) ? "--ip" : "--dns"} ${url.hostname})`,
      };
    }
    if (code && UNKNOWN_CA.has(code)) {
      const issuer = e.cert ? ` (issued by ${subjectName(e.cert.issuer)})` : "";
      return {
        kind: "tls-unknown-ca",
        message: ctx.tls?.ca
          ? `the server's certificate${issuer} is not signed by the CA in ${flags.ca}`
          : `the server's certificate${issuer} is not signed by a CA this client trusts: pass the CA certificate with ${flags.ca}`,
      };
    }
    if (code === "CERT_HAS_EXPIRED") return { kind: "tls-server-expired", message: "the server's certificate has expired" };
    if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "ERR_SSL_PACKET_LENGTH_TOO_LONG" || (code === "EPROTO" && url.protocol === "https:")) {
      return { kind: "tls-not-tls", message: `the server does not speak TLS on ${url.host}: use an http:// URL` };
    }
    if (code === "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED") return certificateRequired(flags);
    if (code === "ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED" || code === "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED" || code === "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA" || code === "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE") {
      return certificateRefused(ctx, flags);
    }
    if (code === "ERR_HTTP2_ERROR") {
      return {
        kind: "not-orchestrator",
        message: url.protocol === "http:"
          ? "the server does not speak HTTP/2 without TLS as the orchestrator does: is this the orchestrator's URL (or does it need https://)?"
          : "the server broke the HTTP/2 protocol: is this the orchestrator's URL?",
      };
    }
    if (code && CLOSED.has(code)) return "closed";
  }
  if (err instanceof ConnectError) {
    if (err.code === Code.DeadlineExceeded) return { kind: "timeout", message: "no answer in time" };
    if (err.code === Code.Canceled && nodeChain(err).length === 1 && /CANCEL|aborted/i.test(err.rawMessage)) return "closed";
    // An answer without a Connect or gRPC error body is not from the orchestrator's handlers.
    const type = err.metadata.get("content-type") ?? "";
    const fromHandler = /^application\/(json|proto|grpc|connect)/.test(type) || err.metadata.has("grpc-status");
    if (!fromHandler && err.code !== Code.Canceled) {
      const status = /^HTTP (\d{3})$/.exec(err.rawMessage)?.[1];
      if (status !== undefined || err.metadata.has("content-type")) {
        return {
          kind: "not-orchestrator",
          message: `the server answered ${status ? `HTTP ${status}` : `with ${type}`}, not the orchestrator's API: is this the orchestrator's URL?`,
        };
      }
    }
  }
  return undefined;
}

function certificateRequired(flags: { cert: string }): TransportFailure {
  return {
    kind: "tls-cert-required",
    message: `the server requires a client certificate (mutual TLS): pass ${flags.cert} and --tls-key-file`,
  };
}

function certificateRefused(ctx: DiagnoseContext, flags: { cert: string }): TransportFailure {
  let about = "";
  let expired = false;
  try {
    const cert = new X509Certificate(ctx.tls!.cert!);
    const cn = /CN=([^\n]+)/.exec(cert.subject)?.[1] ?? cert.subject;
    expired = Date.parse(cert.validTo) < Date.now();
    about = ` (${cn}, serial ${cert.serialNumber.toLowerCase()}${expired ? `, expired ${new Date(cert.validTo).toISOString()}` : ""})`;
  } catch {
    // An unreadable certificate: the message below still holds.
  }
  return {
    kind: "tls-cert-refused",
    message: expired
      ? `the server refused the client certificate of ${flags.cert}${about}: it has expired; issue a new one (autonomy cert rotate)`
      : `the server refused the client certificate of ${flags.cert}${about}: it is revoked, or not signed by a CA the server trusts`,
  };
}

/**
 * Opens a TLS connection of its own and watches what the server does after the handshake. A
 * server that refuses a client certificate completes the TLS 1.3 handshake from the client's side
 * and then closes the connection without a word: that closure is the only sign of it.
 */
function probeTls(ctx: DiagnoseContext): Promise<"closed-after-handshake" | "open" | NodeErrorLike> {
  const url = new URL(ctx.url);
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: url.hostname,
      port: Number(url.port || 443),
      servername: isIP(url.hostname.replace(/^\[|\]$/g, "")) ? undefined : url.hostname,
      ca: ctx.tls?.ca,
      cert: ctx.tls?.cert,
      key: ctx.tls?.key,
      ALPNProtocols: ["h2"],
    });
    let settled = false;
    const done = (v: "closed-after-handshake" | "open" | NodeErrorLike) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    let secure = false;
    const started = Date.now();
    const timer = setTimeout(() => done(secure ? "open" : Object.assign(new Error("handshake timed out"), { code: "ETIMEDOUT" })), 10_000);
    socket.once("secureConnect", () => {
      secure = true;
      // Reading makes a TLS alert the server sent after the handshake surface as an error.
      socket.resume();
      // A refusal arrives about one round trip after the handshake: wait a few handshakes' worth.
      const waitMs = Math.min(2000, Math.max(500, 3 * (Date.now() - started)));
      setTimeout(() => done("open"), waitMs).unref();
    });
    socket.once("error", (err: NodeErrorLike) => done(secure && CLOSED.has(err.code ?? "") ? "closed-after-handshake" : err));
    socket.once("close", () => done(secure ? "closed-after-handshake" : Object.assign(new Error("closed"), { code: "ECONNRESET" })));
  });
}

/**
 * Explains a failed call, or returns undefined when the error is the orchestrator's own answer
 * (or nothing better can be said). May open one TLS connection to find out (half a second, or three handshakes' time on a slow link).
 */
export async function diagnoseTransportError(err: unknown, ctx: DiagnoseContext): Promise<TransportFailure | undefined> {
  let url: URL;
  try {
    url = new URL(ctx.url);
  } catch {
    return undefined;
  }
  const first = fromError(err, ctx);
  if (first !== "closed") return first;
  if (url.protocol === "https:") {
    const probe = await probeTls(ctx);
    const flags = ctx.flags ?? { ca: "--tls-ca-file", cert: "--tls-cert-file" };
    if (probe === "closed-after-handshake") return ctx.tls?.cert ? certificateRefused(ctx, flags) : certificateRequired(flags);
    if (probe !== "open") {
      const again = fromError(probe, ctx);
      if (again && again !== "closed") return again;
    }
    return { kind: "closed", message: "the server closed the connection without an answer" };
  }
  return {
    kind: "closed",
    message: "the server closed the connection without an answer: is this the orchestrator's URL (or does it serve TLS, and need https://)?",
  };
}

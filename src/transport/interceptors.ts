import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { requestInfoKey } from "./context.js";
import { domainToConnectError } from "./errors.js";

function protocolOf(header: Headers): string {
  const type = header.get("content-type") ?? "";
  if (type.startsWith("application/grpc-web")) return "grpcweb";
  if (type.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/**
 * Requests being answered, from their arrival to their response's close, and the streaming
 * calls among them, both counted by the server's request handler (the observe interceptor marks
 * a request as a stream). A request waiting for its turn counts from its arrival; an open agent
 * stream, which mostly waits, is taken off again as a stream.
 */
export class CallsInFlight {
  requests = 0;
  streams = 0;

  /** Requests in flight other than streams. */
  get unary(): number {
    return this.requests - this.streams;
  }
}

/**
 * Records the RPC, its protocol and its result code for the request log line, and the
 * per-RPC counters and latency histogram. Outermost, so it sees the final code. Marks a
 * streaming call in its request info and counts it in `calls`.
 */
export function createObserveInterceptor(metrics: Metrics, calls?: CallsInFlight): Interceptor {
  return (next) => async (req) => {
    const info = req.contextValues.get(requestInfoKey);
    if (calls && info && !info.stream && !info.closed && req.method.methodKind !== "unary") {
      info.stream = true;
      calls.streams++;
    }
    const rpc = `${req.service.typeName}/${req.method.name}`;
    const protocol = info?.protocol ?? protocolOf(req.header);
    if (info) {
      info.rpc = rpc;
      info.protocol = protocol;
      info.route ??= rpc;
    }
    const end = metrics.rpcDuration.startTimer({ rpc, protocol });
    let code = "ok";
    try {
      return await next(req);
    } catch (err) {
      code = codeToString(ConnectError.from(err).code);
      throw err;
    } finally {
      end();
      metrics.rpcRequests.inc({ rpc, protocol, code });
      if (info) info.code = code;
    }
  };
}

/**
 * Turns what handlers throw into ConnectErrors: typed domain errors keep their message,
 * anything else is logged here with its stack and answered `internal` with no detail.
 */
export function createErrorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const rpc = `${req.service.typeName}/${req.method.name}`;
    const map = (err: unknown): ConnectError => {
      if (err instanceof ConnectError) return err;
      const mapped = domainToConnectError(err);
      if (mapped) return mapped;
      logger.error({ err, rpc }, "unexpected error in handler");
      return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      throw map(err);
    }
    if (!res.stream) return res;
    // A streaming handler throws while its messages are read, after this returned.
    const messages = res.message;
    async function* mapped() {
      try {
        yield* messages;
      } catch (err) {
        throw map(err);
      }
    }
    return { ...res, message: mapped() };
  };
}

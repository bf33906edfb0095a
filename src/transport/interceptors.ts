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
 * Records the RPC, its protocol and its result code for the request log line, and the
 * per-RPC counters and latency histogram. Outermost, so it sees the final code.
 */
export function createObserveInterceptor(metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const info = req.contextValues.get(requestInfoKey);
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
    try {
      return await next(req);
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      const mapped = domainToConnectError(err);
      if (mapped) throw mapped;
      logger.error({ err, rpc: `${req.service.typeName}/${req.method.name}` }, "unexpected error in handler");
      throw new ConnectError("internal error", Code.Internal, undefined, undefined, err);
    }
  };
}

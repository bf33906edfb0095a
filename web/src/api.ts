import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuditService } from "../../gen/autonomy/v1/audit_pb.js";
import { EventService } from "../../gen/autonomy/v1/events_pb.js";
import { HaService } from "../../gen/autonomy/v1/ha_pb.js";
import { NodeService } from "../../gen/autonomy/v1/nodes_pb.js";
import { OperationsService } from "../../gen/autonomy/v1/operations_pb.js";
import { RbacService } from "../../gen/autonomy/v1/rbac_pb.js";
import { ReleaseService } from "../../gen/autonomy/v1/releases_pb.js";
import { RolloutService } from "../../gen/autonomy/v1/rollouts_pb.js";

/**
 * The bearer token lives in sessionStorage only: it goes with this tab and never into a URL
 * or a cookie. With mutual TLS there is none: the browser's client certificate identifies
 * the caller on every request.
 */
const TOKEN_KEY = "autonomy.token";

export const tokenStore = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (token: string) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

const bearer: Interceptor = (next) => (req) => {
  const token = tokenStore.get();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

/** Same origin as the page: the server that served it answers every RPC (Connect protocol, JSON). */
const transport = createConnectTransport({ baseUrl: window.location.origin, interceptors: [bearer], defaultTimeoutMs: 15_000 });

export interface Api {
  nodes: Client<typeof NodeService>;
  releases: Client<typeof ReleaseService>;
  rollouts: Client<typeof RolloutService>;
  audit: Client<typeof AuditService>;
  events: Client<typeof EventService>;
  rbac: Client<typeof RbacService>;
  ha: Client<typeof HaService>;
  operations: Client<typeof OperationsService>;
}

export const api: Api = {
  nodes: createClient(NodeService, transport),
  releases: createClient(ReleaseService, transport),
  rollouts: createClient(RolloutService, transport),
  audit: createClient(AuditService, transport),
  events: createClient(EventService, transport),
  rbac: createClient(RbacService, transport),
  ha: createClient(HaService, transport),
  operations: createClient(OperationsService, transport),
};

/** An error as one line for a person: the Connect code in words and the server's message. */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  const words: Partial<Record<Code, string>> = {
    [Code.Unauthenticated]: "Not signed in",
    [Code.PermissionDenied]: "Not allowed",
    [Code.NotFound]: "Not found",
    [Code.InvalidArgument]: "Invalid input",
    [Code.FailedPrecondition]: "Not possible now",
    [Code.Aborted]: "Changed meanwhile",
    [Code.AlreadyExists]: "Conflict",
    [Code.Unavailable]: "Server unavailable",
    [Code.ResourceExhausted]: "Throttled",
    [Code.DeadlineExceeded]: "Timed out",
  };
  return `${words[e.code] ?? "Error"}: ${e.rawMessage}`;
}

export { Code, ConnectError };

import { createContextKey } from "@connectrpc/connect";
import type { PeerIdentity, Principal } from "../domain/identity.js";

/**
 * What the per-request log line and metrics need to know that only inner layers learn:
 * the route (RPC name or REST template), the protocol and the result code. The HTTP
 * wrapper creates it; the REST transcoder and the interceptors fill it in.
 */
export interface RequestInfo {
  route?: string;
  rpc?: string;
  protocol?: string;
  code?: string;
  /** The verified client certificate of the connection (mutual TLS). */
  peer?: PeerIdentity;
  /** The remote address of the connection (the source of audit records of refused calls). */
  remoteAddress?: string;
  /** Who the authorization interceptor took the caller for. */
  principal?: Principal;
  /** Set when the request is a streaming call (CallsInFlight counts it until the response closes). */
  stream?: boolean;
  /** Set when the response has closed. */
  closed?: boolean;
}

export const requestInfoKey = createContextKey<RequestInfo | undefined>(undefined, {
  description: "request info for logs and metrics",
});

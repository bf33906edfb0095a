import type { ServiceImpl } from "@connectrpc/connect";
import type { HealthService } from "../../gen/autonomy/v1/health_pb.js";
import { buildInfo } from "../build-info.js";
import type { Store } from "../store/store.js";
import { stopState } from "./operations-service.js";

/** Response header of every health check carrying the server's version (autonomy version shows it). */
export const SERVER_VERSION_HEADER = "autonomy-server-version";

export const ENFORCEMENT_OFF_WARNING =
  "RBAC enforcement is off (AUTONOMY_RBAC_ENFORCEMENT=0): every caller may call every RPC; calls are still identified and audited";

/**
 * HealthService: a liveness probe; it answers while the process serves requests, with a
 * warning an operator must see and the emergency stop as the store holds it: left out when
 * there never was one, or when the store cannot be read (liveness does not depend on the
 * database).
 */
export function createHealthService(deps: { rbacEnforced: boolean; store?: Store }): ServiceImpl<typeof HealthService> {
  return {
    async check(_req, ctx) {
      ctx.responseHeader.set(SERVER_VERSION_HEADER, buildInfo().version);
      const stop = await deps.store?.emergencyStop().catch(() => undefined);
      const emergencyStop = stop && stop.sinceMs !== null ? stopState(stop) : undefined;
      return deps.rbacEnforced ? { status: "ok", emergencyStop } : { status: "ok", warning: ENFORCEMENT_OFF_WARNING, emergencyStop };
    },
  };
}

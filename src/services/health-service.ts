import type { ServiceImpl } from "@connectrpc/connect";
import type { HealthService } from "../../gen/autonomy/v1/health_pb.js";
import { buildInfo } from "../build-info.js";

/** Response header of every health check carrying the server's version (autonomy version shows it). */
export const SERVER_VERSION_HEADER = "autonomy-server-version";

export const ENFORCEMENT_OFF_WARNING =
  "RBAC enforcement is off (AUTONOMY_RBAC_ENFORCEMENT=0): every caller may call every RPC; calls are still identified and audited";

/** HealthService: a liveness probe; it answers while the process serves requests, with a warning an operator must see. */
export function createHealthService(deps: { rbacEnforced: boolean }): ServiceImpl<typeof HealthService> {
  return {
    check(_req, ctx) {
      ctx.responseHeader.set(SERVER_VERSION_HEADER, buildInfo().version);
      return deps.rbacEnforced ? { status: "ok" } : { status: "ok", warning: ENFORCEMENT_OFF_WARNING };
    },
  };
}

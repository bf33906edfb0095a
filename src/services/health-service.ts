import type { ServiceImpl } from "@connectrpc/connect";
import type { HealthService } from "../../gen/autonomy/v1/health_pb.js";

/** HealthService: a liveness probe; it answers while the process serves requests. */
export function createHealthService(): ServiceImpl<typeof HealthService> {
  return {
    check() {
      return { status: "ok" };
    },
  };
}

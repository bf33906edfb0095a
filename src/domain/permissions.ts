import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { AuditService } from "../../gen/autonomy/v1/audit_pb.js";
import { EventService } from "../../gen/autonomy/v1/events_pb.js";
import { HaService } from "../../gen/autonomy/v1/ha_pb.js";
import { HealthService } from "../../gen/autonomy/v1/health_pb.js";
import { NodeService } from "../../gen/autonomy/v1/nodes_pb.js";
import { EnrollmentService } from "../../gen/autonomy/v1/enrollment_pb.js";
import { permission } from "../../gen/autonomy/v1/options_pb.js";
import { RbacService } from "../../gen/autonomy/v1/rbac_pb.js";
import { ReleaseService } from "../../gen/autonomy/v1/releases_pb.js";
import { RolloutService } from "../../gen/autonomy/v1/rollouts_pb.js";
import { OperationsService } from "../../gen/autonomy/v1/operations_pb.js";
import { EventFollowService } from "../../gen/autonomy/v1/follow_pb.js";
import { SupportService } from "../../gen/autonomy/v1/support_pb.js";
import { WorkloadService } from "../../gen/autonomy/v1/workloads_pb.js";

let declared: ReadonlySet<string> | undefined;
const byMethod = new Map<DescMethod, string>();

/** The permission an RPC needs, as its .proto option declares it ("public", or "" when it declares none); read once per method. */
export function permissionOf(method: DescMethod): string {
  let p = byMethod.get(method);
  if (p === undefined) byMethod.set(method, (p = getOption(method, permission)));
  return p;
}

/**
 * Every permission some RPC needs, as the .proto method options declare them: a role can grant
 * only these (or "*"); anything else is a typo that would grant nothing.
 */
export function declaredPermissions(): ReadonlySet<string> {
  declared ??= new Set(
    [AuditService, EnrollmentService, EventService, HaService, HealthService, NodeService, OperationsService, RbacService, ReleaseService, RolloutService, EventFollowService, SupportService, WorkloadService]
      .flatMap((s) => s.methods.map(permissionOf))
      .filter((p) => p !== "" && p !== "public"),
  );
  return declared;
}

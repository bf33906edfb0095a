import type { ServiceImpl } from "@connectrpc/connect";
import { HaService } from "../../gen/autonomy/v1/ha_pb.js";
import { actorOf } from "../services/audit-record.js";
import type { ServiceEntry } from "../transport/services.js";
import type { HaRuntime } from "./runtime.js";

/** HaService: what the HA endpoints answer (src/ha/runtime.ts computes it). */
export function createHaService(ha: HaRuntime): ServiceImpl<typeof HaService> {
  return {
    haStatus: () => ha.status(),
    haLeader: () => ha.leader(),
    haQuorum: () => ha.quorum(),
    haAudit: () => ha.audit(),
    haResign: (req, ctx) => ha.resign(req.reason, actorOf(ctx)),
  };
}

/** The service entry of HaService, served next to the others. */
export function haServiceEntry(ha: HaRuntime): ServiceEntry {
  return { service: HaService, impl: createHaService(ha) } as unknown as ServiceEntry;
}

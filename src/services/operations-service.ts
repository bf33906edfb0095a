import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { EmergencyStopStateSchema, type EmergencyStopState, type OperationsService, type ReconcileOutcome } from "../../gen/autonomy/v1/operations_pb.js";
import { checkOlderThan, decodeDivergenceToken, encodeDivergenceToken, RECONCILE_STRATEGIES, type ReconcileStrategy } from "../domain/divergence.js";
import { FailedPreconditionError, NotFoundError, ValidationError, type DomainError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import { pageSize } from "../domain/nodes.js";
import { checkReason } from "../domain/rollouts.js";
import type { Logger } from "../observability/logger.js";
import type { RolloutController } from "../rollouts/controller.js";
import type { EmergencyStopRow } from "../store/operation-rows.js";
import type { SightingBuffer } from "../store/sightings.js";
import type { Store } from "../store/store.js";
import { actorOf, auditRecord } from "./audit-record.js";
import { divergencePage } from "./divergence-report.js";

export interface OperationsServiceDeps {
  store: Store;
  sightings: SightingBuffer;
  staleAfterMs: number;
  controller: RolloutController;
  logger?: Logger;
}

/** The stop as the API answers it. */
export function stopState(row: EmergencyStopRow): EmergencyStopState {
  return create(EmergencyStopStateSchema, {
    active: row.active,
    since: row.sinceMs === null ? undefined : timestampFromMs(row.sinceMs),
    stoppedBy: row.stoppedBy,
    reason: row.reason,
    resumedAt: row.resumedAtMs === null || row.active ? undefined : timestampFromMs(row.resumedAtMs),
    resumedBy: row.active ? "" : row.resumedBy,
    resumeReason: row.active ? "" : row.resumeReason,
  });
}

/** Rows of the report read per page when reconcile walks every diverged node. */
const RECONCILE_PAGE = 500;

/** OperationsService: the emergency stop, the divergence report and reconcile. */
export function createOperationsService(deps: OperationsServiceDeps): ServiceImpl<typeof OperationsService> {
  const { store, sightings, controller } = deps;

  /** The leader's controller reads the halted plans back now rather than at its next resync (a follower relays them). */
  const rereadPlans = (planIds: readonly string[]) =>
    Promise.all(planIds.map((id) => controller.planChanged(id))).catch((err: unknown) =>
      deps.logger?.warn({ err: (err as Error).message }, "re-reading the rollout plans after the emergency stop failed"),
    );

  async function reconcileOne(ctx: HandlerContext, nodeId: string, strategy: ReconcileStrategy | "unpin", reason: string): Promise<string> {
    const who = actorOf(ctx);
    const nowMs = Date.now();
    const record = (action: string, eventName: string) =>
      auditRecord(who, { eventName, category: "system", action, resourceType: "node", resource: nodeId, fields: { strategy }, reason }, nowMs);
    switch (strategy) {
      case "reapply": {
        const node = await store.requestReapply(nodeId, nowMs, record("reapply", "node.reconcile.reapply"));
        return `asked to install ${node.reapplyReleaseId} again`;
      }
      case "accept": {
        // The pin is what the node reports: the newest heartbeat first.
        await sightings.flush();
        const node = await store.acceptReported(nodeId, nowMs, reason, record("accept", "node.reconcile.accept"));
        return `pinned to ${node.pinnedReleaseId}, the release it reports`;
      }
      case "drain":
        await store.setDrained(nodeId, true, reason, record("drain", "node.drained"));
        return "drained";
      case "unpin": {
        const before = await store.getNode(nodeId);
        if (!before) throw new NotFoundError(`node "${nodeId}" is not enrolled`);
        if (before.pinnedReleaseId === "") return "had no pin";
        const node = await store.unpinNode(nodeId, record("unpin", "node.reconcile.unpin"));
        return `pin of ${before.pinnedReleaseId} removed; desired release now ${node.pinnedReleaseId || "its channel's or plan's"}`;
      }
    }
  }

  return {
    async emergencyStop(req, ctx) {
      checkReason(req.reason);
      const who = actorOf(ctx);
      const atMs = Date.now();
      const audit = auditRecord(
        who,
        { eventName: "emergency.stopped", category: "system", action: "emergency_stop", resourceType: "fleet", resource: "emergency_stop", reason: req.reason },
        atMs,
      );
      const result = await store.startEmergencyStop({ ...who, atMs, reason: req.reason, audit });
      if (result.changed) {
        deps.logger?.warn({ actor: who.actor, reason: req.reason, halted_plans: result.haltedPlanIds }, "emergency stop: every unfinished rollout plan halted");
        await rereadPlans(result.haltedPlanIds);
      }
      return { state: stopState(result.state), changed: result.changed, haltedPlanIds: result.haltedPlanIds };
    },

    async emergencyResume(req, ctx) {
      checkReason(req.reason);
      const who = actorOf(ctx);
      const atMs = Date.now();
      const audit = auditRecord(
        who,
        { eventName: "emergency.resumed", category: "system", action: "emergency_resume", resourceType: "fleet", resource: "emergency_stop", reason: req.reason },
        atMs,
      );
      const result = await store.endEmergencyStop({ ...who, atMs, reason: req.reason, audit });
      if (result.changed) deps.logger?.warn({ actor: who.actor, reason: req.reason }, "emergency stop lifted; halted plans stay halted until resumed");
      return { state: stopState(result.state), changed: result.changed };
    },

    async getEmergencyStatus() {
      return { state: stopState(await store.emergencyStop()) };
    },

    async listDivergedNodes(req) {
      checkId(req.channel, "channel", false);
      const olderThan = checkOlderThan(req.olderThanSeconds);
      const limit = pageSize(req.pageSize ?? 100);
      const after = decodeDivergenceToken(req.pageToken);
      const page = await divergencePage(deps, {
        channel: req.channel || undefined,
        divergedAtOrBeforeMs: Date.now() - olderThan * 1000,
        after,
        limit,
      });
      return {
        nodes: page.nodes,
        nextPageToken: page.next ? encodeDivergenceToken(page.next.divergedSinceMs, page.next.nodeId) : "",
        olderThanSeconds: BigInt(olderThan),
      };
    },

    async reconcileNodes(req, ctx) {
      checkReason(req.reason);
      checkId(req.nodeId, "node_id", false);
      checkId(req.channel, "channel", false);
      if ((req.nodeId === "") === !req.allDiverged) throw new ValidationError("node_id", "name one node (node_id) or set all_diverged, not both");
      if (req.unpin && req.strategy !== "") throw new ValidationError("strategy", "unpin takes no strategy");
      if (!req.unpin && !(RECONCILE_STRATEGIES as readonly string[]).includes(req.strategy)) {
        throw new ValidationError("strategy", `must be one of ${RECONCILE_STRATEGIES.join(", ")}`);
      }
      if (req.allDiverged && req.unpin) throw new ValidationError("unpin", "unpins one node (node_id) at a time");
      if (!req.allDiverged && (req.channel !== "" || req.olderThanSeconds !== undefined)) {
        throw new ValidationError(req.channel !== "" ? "channel" : "older_than_seconds", "selects diverged nodes: only with all_diverged");
      }
      const strategy = req.unpin ? "unpin" : (req.strategy as ReconcileStrategy);
      if (!req.allDiverged) {
        const message = await reconcileOne(ctx, req.nodeId, strategy, req.reason);
        return { outcomes: [{ nodeId: req.nodeId, outcome: "done", message }], done: 1, skipped: 0 };
      }
      const olderThan = checkOlderThan(req.olderThanSeconds);
      const divergedAtOrBeforeMs = Date.now() - olderThan * 1000;
      const outcomes: ReconcileOutcome[] = [];
      let done = 0;
      let skipped = 0;
      // Every diverged node as the report lists it now: the ids first, so acting on a node
      // (which takes it out of the index) does not move the pages under the walk.
      const ids: string[] = [];
      let after: { divergedSinceMs: number; nodeId: string } | undefined;
      do {
        const page = await divergencePage(deps, { channel: req.channel || undefined, divergedAtOrBeforeMs, after, limit: RECONCILE_PAGE });
        ids.push(...page.nodes.map((n) => n.nodeId));
        after = page.next;
      } while (after);
      for (const nodeId of ids) {
        try {
          const message = await reconcileOne(ctx, nodeId, strategy, req.reason);
          outcomes.push({ $typeName: "autonomy.v1.ReconcileOutcome", nodeId, outcome: "done", message });
          done++;
        } catch (err) {
          // A node this strategy cannot apply to (nothing to accept, a stop in force) is skipped with why; others go on.
          if (!(err instanceof FailedPreconditionError || err instanceof NotFoundError)) throw err;
          outcomes.push({ $typeName: "autonomy.v1.ReconcileOutcome", nodeId, outcome: "skipped", message: (err as DomainError).message });
          skipped++;
        }
      }
      return { outcomes, done, skipped };
    },
  };
}

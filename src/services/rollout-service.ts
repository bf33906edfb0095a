import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import {
  GateStatusSchema,
  RolloutPlanSchema,
  StuckPlanSchema,
  type RolloutPlan,
  type RolloutService,
  type RolloutStatus,
  type StuckPlan,
} from "../../gen/autonomy/v1/rollouts_pb.js";
import { NotFoundError, ValidationError } from "../domain/errors.js";
import { checkId } from "../domain/fields.js";
import {
  DEFAULT_STUCK_THRESHOLD_SECONDS,
  PLAN_PHASES,
  RECOVERY_STRATEGIES,
  canonicalJson,
  checkReason,
  initialPlanState,
  pastDeadline,
  shownStagePhase,
  validateRolloutPlan,
  type Action,
  type PlanState,
  type RecoveryStrategy,
} from "../domain/rollouts.js";
import type { Metrics } from "../observability/metrics.js";
import type { RolloutController } from "../rollouts/controller.js";
import { actorOf, auditRecord } from "./audit-record.js";
import type { SpecSigner } from "../rollouts/signing.js";
import {
  rowToMovedNode,
  rowToPlan,
  rowToState,
  stateToRow,
  stateToStatus,
  type RolloutRecord,
} from "../store/rollout-rows.js";
import type { Store } from "../store/store.js";

const MAX_LIST = 1000;
const DEFAULT_LIST = 100;

export interface RolloutServiceDeps {
  store: Store;
  metrics: Metrics;
  controller: RolloutController;
  signer: SpecSigner;
}

/** RolloutService: signed plans, their status, operator actions and recovery. */
export function createRolloutService(deps: RolloutServiceDeps): ServiceImpl<typeof RolloutService> {
  const { store, metrics, controller, signer } = deps;

  async function record(planId: string): Promise<RolloutRecord> {
    checkId(planId, "plan_id", true);
    const found = await store.getRollout(planId);
    if (!found) throw new NotFoundError(`rollout plan "${planId}" not found`);
    return found;
  }

  /** The newest status: the controller's for a plan it tracks, else the stored one. */
  function stateOf(r: RolloutRecord): PlanState {
    return controller.trackedState(r.plan.planId) ?? rowToState(r.status, r.plan.createdAtMs);
  }

  function statusOf(r: RolloutRecord, state = stateOf(r)): RolloutStatus {
    return stateToStatus(state, (i) => controller.liveTally(r.plan.planId, i));
  }

  function stageIndex(r: RolloutRecord, stageId: string): number {
    checkId(stageId, "stage_id", true);
    const index = rowToPlan(r.plan).stages.findIndex((s) => s.stageId === stageId);
    if (index < 0) throw new NotFoundError(`plan "${r.plan.planId}" has no stage "${stageId}"`);
    return index;
  }

  async function act(
    ctx: HandlerContext,
    req: { planId: string; reason: string; expectedVersion?: number },
    action: Action,
  ): Promise<{ status: RolloutStatus }> {
    checkId(req.planId, "plan_id", true);
    checkReason(req.reason);
    const r = await record(req.planId);
    const result = await controller.act(req.planId, action, { ...actorOf(ctx), reason: req.reason, expectedVersion: req.expectedVersion });
    return { status: statusOf(r, result.state) };
  }

  return {
    async createRolloutPlan(req, ctx) {
      validateRolloutPlan(req.plan);
      const who = actorOf(ctx);
      const release = await store.getRelease(req.plan.releaseId);
      if (!release) throw new NotFoundError(`release "${req.plan.releaseId}" not found; publish it first`);
      if (req.plan.channel !== "" && req.plan.channel !== release.channel) {
        throw new ValidationError("plan.channel", `release "${release.releaseId}" is on channel "${release.channel}"`);
      }
      const plan: RolloutPlan = create(RolloutPlanSchema, {
        ...req.plan,
        planId: req.plan.planId || `plan-${randomUUID()}`,
        channel: release.channel,
      });
      const spec = canonicalJson(toJson(RolloutPlanSchema, plan, { useProtoFieldName: true }));
      const nowMs = Date.now();
      const state = initialPlanState(plan, nowMs);
      const { record: stored, created } = await store.createRollout(
        {
          planId: plan.planId,
          releaseId: plan.releaseId,
          channel: plan.channel,
          spec,
          signature: signer.sign(Buffer.from(spec)).toString("base64"),
          keyId: signer.keyId,
          createdAtMs: nowMs,
        },
        stateToRow(state),
        auditRecord(
          who,
          {
            eventName: "rollout.plan.created",
            category: "rollout",
            action: "create",
            resourceType: "rollout_plan",
            resource: plan.planId,
            fields: { release_id: plan.releaseId, channel: plan.channel, stages: plan.stages.length },
            reason: plan.description,
          },
          nowMs,
        ),
      );
      if (created) {
        metrics.rolloutPlans.inc();
        await controller.track(stored);
      }
      return { plan: rowToPlan(stored.plan), status: statusOf(stored), created };
    },

    async listRolloutPlans(req) {
      if (req.phase !== "" && !(PLAN_PHASES as readonly string[]).includes(req.phase)) {
        throw new ValidationError("phase", `must be one of ${PLAN_PHASES.join(", ")}`);
      }
      const limit = req.limit ?? DEFAULT_LIST;
      if (limit < 1 || limit > MAX_LIST) throw new ValidationError("limit", `must be 1 to ${MAX_LIST}`);
      const rows = await store.listRollouts({ phase: req.phase || undefined, limit });
      const rollouts = rows.map((r) => ({ plan: rowToPlan(r.plan), status: statusOf(r) }));
      return { rollouts, count: rollouts.length };
    },

    async listStuckRollouts(req) {
      const threshold = req.thresholdSeconds ?? DEFAULT_STUCK_THRESHOLD_SECONDS;
      if (threshold < 0) throw new ValidationError("threshold_seconds", "must not be negative");
      const nowMs = Date.now();
      const stuckPlans: StuckPlan[] = [];
      for (const r of await store.listRollouts({ unfinished: true })) {
        const state = stateOf(r);
        if (state.phase !== "published" && state.phase !== "active") continue;
        const plan = rowToPlan(r.plan);
        const index = state.currentStage;
        const stageId = index >= 0 ? state.stages[index].stageId : "";
        const deadline = index >= 0 ? pastDeadline(plan.stages[index], state.stages[index], nowMs) : undefined;
        const idleMs = nowMs - state.updatedAtMs;
        if (deadline === undefined && idleMs <= threshold * 1000) continue;
        let reason: string;
        if (state.phase === "published") {
          reason = "the plan has not started: its first stage was never opened";
        } else {
          const waiting = controller
            .evaluate(r, index)
            .gates.filter((g) => !g.passed)
            .map((g) => `${g.kind}: ${g.detail}`);
          const why = waiting.length > 0 ? `waiting on ${waiting.join("; ")}` : "every gate passes; the controller has not advanced it";
          reason = `${deadline ?? `no progress for ${Math.round(idleMs / 1000)}s`}; ${why}`;
        }
        const sinceMs = deadline !== undefined ? state.stages[index].openedAtMs! + plan.stages[index].deadlineSeconds * 1000 : state.updatedAtMs;
        stuckPlans.push(
          create(StuckPlanSchema, {
            planId: r.plan.planId,
            phase: state.phase,
            currentStageId: stageId,
            stuckSince: timestampFromMs(sinceMs),
            stuckReason: reason,
          }),
        );
      }
      return { stuckPlans };
    },

    async listSigningKeys() {
      const keys = (await store.signingKeys()).map((k) => ({
        keyId: k.keyId,
        algorithm: "ed25519",
        publicKeyPem: k.publicKeyPem,
        createdAt: timestampFromMs(k.createdAtMs),
        current: k.keyId === signer.keyId,
      }));
      return { keys };
    },

    async getRolloutPlan(req) {
      const r = await record(req.planId);
      return { plan: rowToPlan(r.plan), status: statusOf(r) };
    },

    async getRolloutSpec(req) {
      const r = await record(req.planId);
      return {
        plan: rowToPlan(r.plan),
        canonicalSpec: Buffer.from(r.plan.spec),
        signature: Buffer.from(r.plan.signature, "base64"),
        keyId: r.plan.keyId,
        algorithm: "ed25519",
      };
    },

    async getRolloutStatus(req) {
      return { status: statusOf(await record(req.planId)) };
    },

    pauseRollout: (req, ctx) => act(ctx, req, "pause"),
    resumeRollout: (req, ctx) => act(ctx, req, "resume"),
    promoteRollout: (req, ctx) => act(ctx, req, "promote"),
    haltRollout: (req, ctx) => act(ctx, req, "halt"),
    cancelRollout: (req, ctx) => act(ctx, req, "cancel"),

    async recoverRollout(req, ctx) {
      checkId(req.planId, "plan_id", true);
      if (!(RECOVERY_STRATEGIES as readonly string[]).includes(req.strategy)) {
        throw new ValidationError("strategy", `must be one of ${RECOVERY_STRATEGIES.join(", ")}`);
      }
      checkReason(req.reason);
      checkId(req.stageId, "stage_id", false);
      const r = await record(req.planId);
      const result = await controller.act(req.planId, req.strategy as RecoveryStrategy, {
        ...actorOf(ctx),
        reason: req.reason,
        expectedVersion: req.expectedVersion,
        stageId: req.stageId || undefined,
        dryRun: req.dryRun,
      });
      return {
        status: statusOf(r, result.state),
        fromPhase: result.fromPhase,
        toPhase: result.state.phase,
        movedNodes: result.moved.map(rowToMovedNode),
        message: result.message,
        dryRun: req.dryRun,
      };
    },

    async getStageGates(req) {
      const r = await record(req.planId);
      const index = stageIndex(r, req.stageId);
      const state = stateOf(r);
      const stage = state.stages[index];
      const ev = controller.evaluate(r, index);
      return {
        stagePhase: shownStagePhase(stage),
        gates: ev.gates.map((g) => create(GateStatusSchema, g)),
        manualApproved: stage.manualApproved,
        allPassed: ev.allPassed,
      };
    },

    async approveGate(req, ctx) {
      const r = await record(req.planId);
      stageIndex(r, req.stageId);
      checkReason(req.reason);
      const result = await controller.act(req.planId, "approve", { ...actorOf(ctx), reason: req.reason, stageId: req.stageId, expectedVersion: req.expectedVersion });
      return { approved: true, promoted: result.promoted ?? false, message: result.message, status: statusOf(r, result.state) };
    },
  };
}

import { readFileSync } from "node:fs";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import YAML from "yaml";
import {
  ApproveGateResponseSchema,
  GetRolloutPlanResponseSchema,
  GetStageGatesResponseSchema,
  ListRolloutPlansResponseSchema,
  ListStuckRolloutsResponseSchema,
  CreateRolloutPlanResponseSchema,
  RecoverRolloutResponseSchema,
  RolloutPlanSchema,
  RolloutStatusSchema,
  type Gate,
  type GetStageGatesResponse,
  type OrchestratorClients,
  type RolloutPlan,
  type RolloutStatus,
} from "../../../clients/index.js";
import { formatAge, formatTable, formatTime, printJson } from "../shared/output.js";
import { withClients } from "./context.js";

/** Reads a plan file (YAML or JSON) into a RolloutPlan, naming the file in errors. */
export function readPlanFile(file: string): RolloutPlan {
  let parsed: unknown;
  try {
    parsed = YAML.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`${file}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`${file}: expected a plan object (release_id, stages)`);
  }
  try {
    return fromJson(RolloutPlanSchema, parsed as JsonValue);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

function gateText(g: Gate): string {
  switch (g.kind) {
    case "time_soak":
      return `time_soak ${g.seconds}s`;
    case "success_ratio":
      return `success_ratio >= ${g.minRatio}${g.minSample > 1 ? ` (sample ${g.minSample})` : ""}`;
    case "max_failure_ratio":
      return `max_failure_ratio ${g.maxRatio}`;
    case "event_rate":
      return `event_rate ${g.eventType} <= ${g.maxPerNodeHour}/node/h`;
    default:
      return g.kind;
  }
}

function selectorText(s: RolloutPlan["stages"][number]): string {
  if (s.nodeIds.length > 0) return s.nodeIds.length <= 3 ? s.nodeIds.join(",") : `${s.nodeIds.length} nodes`;
  const labels = Object.entries(s.matchLabels);
  if (labels.length > 0) return labels.map(([k, v]) => `${k}=${v}`).join(",");
  return `${s.percent}%`;
}

export function describePlan(plan: RolloutPlan, status: RolloutStatus, gates?: GetStageGatesResponse): string {
  const lines = [
    `plan     ${plan.planId}`,
    `release  ${plan.releaseId} (channel ${plan.channel})`,
    `phase    ${status.phase}  (version ${status.version}, updated ${formatAge(status.updatedAt)})`,
  ];
  if (plan.description) lines.push(`about    ${plan.description}`);
  if (status.reason) lines.push(`reason   ${status.reason}`);
  lines.push("");
  const rows = plan.stages.map((stage, i) => {
    const st = status.stages[i];
    const mark = stage.stageId === status.currentStageId ? "*" : " ";
    const gateList = stage.gates.map((g) => (g.kind === "manual" && st.manualApproved ? "manual (approved)" : gateText(g)));
    return [
      `${mark}${stage.stageId}`,
      selectorText(stage),
      st.phase,
      String(st.nodeCount),
      String(st.healthy),
      String(st.failed),
      String(st.unreachable),
      String(st.pending),
      gateList.join(", ") || "-",
    ];
  });
  lines.push(formatTable(["STAGE", "SELECTS", "PHASE", "NODES", "HEALTHY", "FAILED", "UNREACHABLE", "PENDING", "GATES"], rows).trimEnd());
  for (const st of status.stages) if (st.detail) lines.push(`  ${st.stageId}: ${st.detail}`);
  if (gates) {
    lines.push("", `gates of ${status.currentStageId} (${gates.stagePhase}):`);
    for (const g of gates.gates) lines.push(`  [${g.passed ? "x" : " "}] ${g.kind}: ${g.detail}`);
  }
  return lines.join("\n") + "\n";
}

async function readPlan(api: OrchestratorClients, planId: string) {
  const res = await api.rollouts.getRolloutPlan({ planId });
  const status = res.status!;
  const gates =
    status.currentStageId !== "" ? await api.rollouts.getStageGates({ planId, stageId: status.currentStageId }) : undefined;
  return { plan: res.plan!, status, gates };
}

const ACTIONS = {
  pause: "Pause an active rollout: no stage advances until it is resumed.",
  resume: "Resume a paused or halted rollout; its open stage is evaluated again.",
  promote: "Force-pass the open stage of an active rollout and open the next one.",
  halt: "Halt an active rollout, as a failing gate would.",
  cancel: "Cancel a rollout for good; nodes already moved keep the release.",
} as const;

function actionCommand(name: keyof typeof ACTIONS): Command {
  return new Command(name)
    .description(
      `${ACTIONS[name]}\nThe action applies to the status version read just before it: if another operator ` +
        "changed the plan in between, it is refused and nothing happens.",
    )
    .requiredOption("--plan-id <id>", "rollout plan id")
    .requiredOption("--reason <text>", "why (recorded in the audit trail)")
    .action((opts: { planId: string; reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const before = await api.rollouts.getRolloutStatus({ planId: opts.planId });
        const req = { planId: opts.planId, reason: opts.reason, expectedVersion: before.status!.version };
        const method = `${name}Rollout` as const;
        const res = await api.rollouts[method](req);
        if (options.output === "json") return printJson(RolloutStatusSchema, res.status!);
        const s = res.status!;
        process.stdout.write(
          `plan ${s.planId}: ${before.status!.phase} -> ${s.phase}` +
            `${s.currentStageId ? ` (stage ${s.currentStageId})` : ""}, version ${s.version}\n`,
        );
      }),
    );
}

export function rolloutCommand(): Command {
  const rollout = new Command("rollout").description("Staged rollouts: plans, gates and their status.");
  const plan = new Command("plan").description("Publish, inspect and steer rollout plans.");
  plan
    .command("create")
    .description(
      "Publish a rollout plan from a YAML or JSON file:\n" +
        "  plan_id: fw-1.5            # optional; the server picks one otherwise\n" +
        "  release_id: r-1.5\n" +
        "  stages:\n" +
        "    - stage_id: canary\n      node_ids: [robot-7]\n" +
        "      gates: [{kind: success_ratio, min_ratio: 1}, {kind: manual}]\n" +
        "    - stage_id: half\n      percent: 50                # cumulative share of the channel's fleet\n" +
        "      gates: [{kind: max_failure_ratio, max_ratio: 0.1}, {kind: time_soak, seconds: 600}]\n" +
        "      deadline_seconds: 3600\n" +
        "    - stage_id: rest\n      percent: 100\n" +
        "Selectors: node_ids, match_labels {key: value} or percent. Gates: time_soak (seconds), " +
        "success_ratio (min_ratio, min_sample), max_failure_ratio (max_ratio), manual, " +
        "event_rate (event_type, max_per_node_hour).",
    )
    .requiredOption("--file <path>", "plan file (.yaml, .yml or .json)")
    .action((opts: { file: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.createRolloutPlan({ plan: readPlanFile(opts.file) });
        if (options.output === "json") return printJson(CreateRolloutPlanResponseSchema, res);
        const p = res.plan!;
        process.stdout.write(
          res.created
            ? `published plan ${p.planId}: release ${p.releaseId} to channel ${p.channel} in ${p.stages.length} stage(s)\n`
            : `plan ${p.planId} was already published with this spec; nothing changed\n`,
        );
      }),
    );
  plan
    .command("list")
    .description("List rollout plans, newest first.")
    .option("--phase <phase>", "only plans in this phase (published, active, paused, halted, completed, cancelled, rolled_back)")
    .option("--limit <n>", "at most this many (1-1000)", (v) => Number(v))
    .action((opts: { phase?: string; limit?: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.listRolloutPlans({ phase: opts.phase ?? "", limit: opts.limit });
        if (options.output === "json") return printJson(ListRolloutPlansResponseSchema, res);
        if (res.rollouts.length === 0) {
          process.stdout.write("no rollout plans\n");
          return;
        }
        const rows = res.rollouts.map(({ plan: p, status: s }) => [
          p!.planId,
          p!.releaseId,
          p!.channel,
          s!.phase,
          s!.currentStageId || "-",
          `${s!.stages.filter((x) => x.phase === "passed" || x.phase === "skipped").length}/${s!.stages.length}`,
          formatAge(s!.updatedAt),
        ]);
        process.stdout.write(formatTable(["PLAN", "RELEASE", "CHANNEL", "PHASE", "STAGE", "DONE", "UPDATED"], rows));
      }),
    );
  plan
    .command("describe")
    .description("Show a plan: its stages, their node counts and the gates of the current stage.")
    .requiredOption("--plan-id <id>", "rollout plan id")
    .action((opts: { planId: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        if (options.output === "json") {
          return printJson(GetRolloutPlanResponseSchema, await api.rollouts.getRolloutPlan({ planId: opts.planId }));
        }
        const { plan: p, status, gates } = await readPlan(api, opts.planId);
        process.stdout.write(describePlan(p, status, gates));
      }),
    );
  for (const name of Object.keys(ACTIONS) as (keyof typeof ACTIONS)[]) plan.addCommand(actionCommand(name));
  rollout.addCommand(plan);

  rollout
    .command("stuck")
    .description("List published or active plans that have not advanced, or whose open stage is past its deadline.")
    .option("--threshold-seconds <n>", "seconds without progress (default 3600)", (v) => Number(v))
    .action((opts: { thresholdSeconds?: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.listStuckRollouts({ thresholdSeconds: opts.thresholdSeconds });
        if (options.output === "json") return printJson(ListStuckRolloutsResponseSchema, res);
        if (res.stuckPlans.length === 0) {
          process.stdout.write("no stuck plans\n");
          return;
        }
        for (const p of res.stuckPlans) {
          process.stdout.write(
            `${p.planId}  ${p.phase}  stage ${p.currentStageId || "-"}  since ${formatTime(p.stuckSince)}\n  ${p.stuckReason}\n`,
          );
        }
      }),
    );

  const gate = new Command("gate").description("Gate status and manual approval.");
  gate
    .command("list")
    .description("Show the gates of a stage and whether each passes now.")
    .requiredOption("--plan-id <id>", "rollout plan id")
    .requiredOption("--stage-id <id>", "stage id")
    .action((opts: { planId: string; stageId: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.getStageGates(opts);
        if (options.output === "json") return printJson(GetStageGatesResponseSchema, res);
        process.stdout.write(`stage ${opts.stageId}: ${res.stagePhase}; ${res.allPassed ? "every gate passes" : "waiting"}\n`);
        for (const g of res.gates) process.stdout.write(`  [${g.passed ? "x" : " "}] ${g.kind}: ${g.detail}\n`);
      }),
    );
  gate
    .command("approve")
    .description("Approve the manual gate of the open stage; the stage advances when every other gate passes too.")
    .requiredOption("--plan-id <id>", "rollout plan id")
    .requiredOption("--stage-id <id>", "stage id")
    .requiredOption("--reason <text>", "why (recorded in the audit trail)")
    .action((opts: { planId: string; stageId: string; reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.approveGate(opts);
        if (options.output === "json") return printJson(ApproveGateResponseSchema, res);
        process.stdout.write(`${res.message}\n`);
      }),
    );
  rollout.addCommand(gate);
  return rollout;
}

const TARGETS = ["rollout_plan", "rollout_stage"] as const;
const STRATEGIES = ["retry", "rollback", "skip_failed"] as const;

/** `autonomy rollback preview|execute`: the recovery strategies of a plan or of its current stage. */
export function rollbackCommand(): Command {
  const rollback = new Command("rollback").description(
    "Recover a rollout: retry (back to active), rollback (terminal: no further node moves) or skip_failed (pass the stage over its failures).",
  );
  const sub = (name: "preview" | "execute", dryRun: boolean, about: string) =>
    rollback
      .command(name)
      .description(about)
      .addOption(new Option("--target <kind>", "what to recover").choices(TARGETS).makeOptionMandatory())
      .requiredOption("--resource <id>", "plan id (rollout_plan) or PLAN_ID/STAGE_ID (rollout_stage: must be the current stage)")
      .addOption(new Option("--strategy <name>", "recovery strategy").choices(STRATEGIES).makeOptionMandatory())
      .requiredOption("--reason <text>", "why (recorded in the audit trail)")
      .action((opts: { target: string; resource: string; strategy: string; reason: string }, cmd: Command) =>
        withClients(cmd, async (api, options) => {
          let planId = opts.resource;
          let stageId = "";
          if (opts.target === "rollout_stage") {
            const slash = opts.resource.indexOf("/");
            if (slash <= 0 || slash === opts.resource.length - 1) {
              throw new Error(`--resource: a rollout_stage is named PLAN_ID/STAGE_ID, got "${opts.resource}"`);
            }
            planId = opts.resource.slice(0, slash);
            stageId = opts.resource.slice(slash + 1);
          }
          const before = await api.rollouts.getRolloutStatus({ planId });
          const res = await api.rollouts.recoverRollout({
            planId,
            stageId,
            strategy: opts.strategy,
            reason: opts.reason,
            dryRun,
            expectedVersion: before.status!.version,
          });
          if (options.output === "json") return printJson(RecoverRolloutResponseSchema, res);
          process.stdout.write(`${dryRun ? "preview: " : ""}${res.message}\nphase ${res.fromPhase} -> ${res.toPhase}\n`);
          if (res.movedNodes.length > 0) {
            process.stdout.write(`${res.movedNodes.length} node(s) moved by this plan keep its release:\n`);
            process.stdout.write(formatTable(["NODE", "STAGE", "MOVED"], res.movedNodes.map((m) => [m.nodeId, m.stageId, formatTime(m.movedAt)])));
          }
        }),
      );
  sub("preview", true, "Show what a recovery would do (phases, nodes already moved) without changing anything.");
  sub("execute", false, "Apply a recovery strategy.");
  return rollback;
}

import { Command, Option } from "commander";
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
  SigningKeySchema,
  type Gate,
  type GetStageGatesResponse,
  type OrchestratorClients,
  type RolloutPlan,
  type RolloutStatus,
} from "../../../clients/index.js";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "../../files.js";
import { escapeControl, formatAge, formatTable, formatTime, printMessage, subjectOf } from "../shared/output.js";
import { DURATION_HINT, formatDuration, parseDurationSeconds, parsePositiveDuration, parsePositiveInt } from "../shared/parse.js";
import { readSpecFile, suggest } from "../shared/spec-file.js";
import { withClients } from "./context.js";

export const GATE_KINDS = ["time_soak", "success_ratio", "max_failure_ratio", "manual", "event_rate"] as const;

/** Reads a plan file (YAML or JSON), with errors that name the file, the line and the field. */
export function readPlanFile(file: string): RolloutPlan {
  return readSpecFile(file, RolloutPlanSchema, "a rollout plan (release_id, stages)", {
    "Gate.kind": (v) => ((GATE_KINDS as readonly string[]).includes(v) ? undefined : `unknown gate kind "${v}"${suggest(v, GATE_KINDS)}`),
  });
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
  ].map(escapeControl);
  if (plan.description) lines.push(`about    ${escapeControl(plan.description)}`);
  if (status.reason) lines.push(`reason   ${escapeControl(status.reason)}`);
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
  for (const st of status.stages) if (st.detail) lines.push(escapeControl(`  ${st.stageId}: ${st.detail}`));
  if (gates) {
    lines.push("", escapeControl(`gates of ${status.currentStageId} (${gates.stagePhase}):`));
    for (const g of gates.gates) lines.push(escapeControl(`  [${g.passed ? "x" : " "}] ${g.kind}: ${g.detail}`));
  }
  return lines.join("\n") + "\n";
}

/** Phases a plan never leaves. */
const DONE_PHASES = new Set(["completed", "cancelled", "rolled_back"]);

const planIdAlias = () => new Option("--plan-id <id>", "the rollout plan (older spelling of the argument)").hideHelp();

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
      `${ACTIONS[name]} The action applies to the status version read just before it: if another operator ` +
        "changed the plan in between, it is refused and nothing happens.",
    )
    .argument("[plan-id]", "the rollout plan")
    .addOption(planIdAlias())
    .requiredOption("--reason <text>", "why (recorded in the audit trail)")
    .action((positional: string | undefined, opts: { planId?: string; reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const planId = subjectOf(positional, opts.planId, "plan id", `autonomy rollout plan ${name} PLAN_ID --reason TEXT`);
        const before = await api.rollouts.getRolloutStatus({ planId });
        const req = { planId, reason: opts.reason, expectedVersion: before.status!.version };
        const method = `${name}Rollout` as const;
        const res = await api.rollouts[method](req);
        if (options.output !== "text") return printMessage(options.output, RolloutStatusSchema, res.status!);
        const s = res.status!;
        process.stdout.write(
          escapeControl(`plan ${s.planId}: ${before.status!.phase} -> ${s.phase}${s.currentStageId ? ` (stage ${s.currentStageId})` : ""}, version ${s.version}`) + "\n",
        );
      }),
    );
}

export function rolloutCommand(): Command {
  const rollout = new Command("rollout").description("Staged rollouts: plans, gates and their status.");
  const plan = new Command("plan").description("Publish, inspect and steer rollout plans.");
  plan
    .command("create")
    .description("Publish a rollout plan from a YAML or JSON file (below); the server signs it and it cannot change afterwards.")
    .addHelpText(
      "after",
      "\nPlan file:\n" +
        "  plan_id: fw-1.5            # optional; the server picks one otherwise\n" +
        "  release_id: r-1.5\n" +
        "  stages:\n" +
        "    - stage_id: canary\n      node_ids: [robot-7]\n" +
        "      gates: [{kind: success_ratio, min_ratio: 1}, {kind: manual}]\n" +
        "    - stage_id: half\n      percent: 50                # cumulative share of the channel's fleet\n" +
        "      gates: [{kind: max_failure_ratio, max_ratio: 0.1}, {kind: time_soak, seconds: 600}]\n" +
        "      deadline_seconds: 3600\n" +
        "    - stage_id: rest\n      percent: 100\n" +
        "Selectors: node_ids, match_labels {key: value} or percent.\n" +
        "Gates: time_soak (seconds: 600 or 10m), success_ratio (min_ratio, min_sample), max_failure_ratio (max_ratio),\n" +
        "  manual, event_rate (event_type, max_per_node_hour).\n",
    )
    .requiredOption("--file <path>", "plan file (.yaml, .yml or .json)")
    .action((opts: { file: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.createRolloutPlan({ plan: readPlanFile(opts.file) });
        if (options.output !== "text") return printMessage(options.output, CreateRolloutPlanResponseSchema, res);
        const p = res.plan!;
        process.stdout.write(
          escapeControl(
            res.created
              ? `published plan ${p.planId}: release ${p.releaseId} to channel ${p.channel} in ${p.stages.length} stage(s)`
              : `plan ${p.planId} was already published with this spec; nothing changed`,
          ) + "\n",
        );
      }),
    );
  plan
    .command("list")
    .description("List rollout plans, newest first.")
    .option("--phase <phase>", "only plans in this phase (published, active, paused, halted, rolling_back, completed, cancelled, rolled_back)")
    .addOption(new Option("--limit <n>", "at most this many (1-1000)").argParser(parsePositiveInt))
    .action((opts: { phase?: string; limit?: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.listRolloutPlans({ phase: opts.phase ?? "", limit: opts.limit });
        if (options.output !== "text") return printMessage(options.output, ListRolloutPlansResponseSchema, res);
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
    .description("Show a plan: its stages, their node counts and the gates of the current stage. With --watch, redraw until the plan is done.")
    .argument("[plan-id]", "the rollout plan")
    .addOption(planIdAlias())
    .option("-w, --watch", "redraw as the plan moves, until it is completed, cancelled or rolled back")
    .addOption(new Option("--interval <duration>", "time between redraws with --watch").argParser(parsePositiveDuration).default(2000, "2s"))
    .action((positional: string | undefined, opts: { planId?: string; watch?: boolean; interval: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const planId = subjectOf(positional, opts.planId, "plan id", "autonomy rollout plan describe PLAN_ID");
        if (options.output !== "text" && !opts.watch) {
          return printMessage(options.output, GetRolloutPlanResponseSchema, await api.rollouts.getRolloutPlan({ planId }));
        }
        const tty = process.stdout.isTTY === true;
        let last = "";
        for (;;) {
          const { plan: p, status, gates } = await readPlan(api, planId);
          const text =
            options.output !== "text"
              ? JSON.stringify({ plan_id: status.planId, phase: status.phase, current_stage_id: status.currentStageId, version: status.version }) + "\n"
              : describePlan(p, status, gates);
          if (text !== last) {
            // On a terminal, redraw in place; into a pipe or a file, append each new state.
            if (tty && opts.watch) process.stdout.write("\x1b[H\x1b[2J");
            else if (last !== "" && options.output === "text") process.stdout.write("\n");
            process.stdout.write(text);
            last = text;
          }
          if (!opts.watch || DONE_PHASES.has(status.phase)) return;
          await sleep(opts.interval);
        }
      }),
    );
  rollout
    .command("status")
    .description(
      "Show a plan's phase and current stage. With --wait, block until it is done, for CI pipelines: " +
        "exit status 0 when it completed, 1 when it was cancelled, rolled back or halted, or --timeout passed.",
    )
    .argument("[plan-id]", "the rollout plan")
    .addOption(planIdAlias())
    .option("--wait", "block until the plan is completed, cancelled, rolled back or halted")
    .addOption(new Option("--timeout <duration>", `give up waiting after this long (${DURATION_HINT})`).argParser(parsePositiveDuration).default(3_600_000, "1h"))
    .addOption(new Option("--interval <duration>", "time between reads with --wait").argParser(parsePositiveDuration).default(2000, "2s"))
    .action((positional: string | undefined, opts: { planId?: string; wait?: boolean; timeout: number; interval: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const planId = subjectOf(positional, opts.planId, "plan id", "autonomy rollout status PLAN_ID");
        const deadline = Date.now() + opts.timeout;
        let lastLine = "";
        for (;;) {
          const { status } = await api.rollouts.getRolloutStatus({ planId });
          const s = status!;
          // A stage that selected no node says so: it waits until some node qualifies.
          const current = s.stages.find((x) => x.stageId === s.currentStageId);
          const waiting = current?.phase === "waiting" ? ` waiting: ${current.detail}` : "";
          const line = escapeControl(
            `plan ${s.planId}: ${s.phase}${s.currentStageId ? ` (stage ${s.currentStageId}${waiting})` : ""}${s.reason ? `: ${s.reason}` : ""}`,
          );
          const finished = DONE_PHASES.has(s.phase) || s.phase === "halted";
          if (!opts.wait || finished) {
            if (options.output !== "text") printMessage(options.output, RolloutStatusSchema, s);
            else process.stdout.write(line + "\n");
            if (opts.wait && s.phase !== "completed") process.exitCode = 1;
            return;
          }
          if (options.output === "text" && line !== lastLine) process.stderr.write(line + "\n");
          lastLine = line;
          if (Date.now() + opts.interval > deadline) {
            throw new Error(`plan ${s.planId} is still ${s.phase} after ${formatDuration(opts.timeout)} (--timeout)`);
          }
          await sleep(opts.interval);
        }
      }),
    );
  for (const name of Object.keys(ACTIONS) as (keyof typeof ACTIONS)[]) plan.addCommand(actionCommand(name));
  rollout.addCommand(plan);

  rollout
    .command("stuck")
    .description("List published or active plans that have not advanced, or whose open stage is past its deadline.")
    .addOption(new Option("--threshold <duration>", `time without progress (${DURATION_HINT}; default 1h)`).argParser(parseDurationSeconds))
    .addOption(new Option("--threshold-seconds <n>", "the same in seconds (older spelling)").argParser(parsePositiveInt).hideHelp())
    .action((opts: { threshold?: number; thresholdSeconds?: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rollouts.listStuckRollouts({ thresholdSeconds: opts.threshold ?? opts.thresholdSeconds });
        if (options.output !== "text") return printMessage(options.output, ListStuckRolloutsResponseSchema, res);
        if (res.stuckPlans.length === 0) {
          process.stdout.write("no stuck plans\n");
          return;
        }
        for (const p of res.stuckPlans) {
          process.stdout.write(
            escapeControl(`${p.planId}  ${p.phase}  stage ${p.currentStageId || "-"}  since ${formatTime(p.stuckSince)}`) +
              `\n  ${escapeControl(p.stuckReason)}\n`,
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
        if (options.output !== "text") return printMessage(options.output, GetStageGatesResponseSchema, res);
        process.stdout.write(escapeControl(`stage ${opts.stageId}: ${res.stagePhase}; ${res.allPassed ? "every gate passes" : res.stagePhase === "waiting" ? "held until some node qualifies" : "gates not yet passed"}`) + "\n");
        for (const g of res.gates) process.stdout.write(escapeControl(`  [${g.passed ? "x" : " "}] ${g.kind}: ${g.detail}`) + "\n");
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
        if (options.output !== "text") return printMessage(options.output, ApproveGateResponseSchema, res);
        process.stdout.write(`${escapeControl(res.message)}\n`);
      }),
    );
  rollout.addCommand(gate);

  const signingKey = new Command("signing-key").description("The keys the orchestrator signs plan specs with.");
  signingKey
    .command("get")
    .description("Print the current signing key (PEM), or write it for edgectl run --plan-public-key-file.")
    .option("--key-id <id>", "another key than the current one")
    .option("--output-file <file>", "write the PEM to this file instead of printing it")
    .action((opts: { keyId?: string; outputFile?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const { keys } = await api.rollouts.listSigningKeys({});
        const key = opts.keyId ? keys.find((k) => k.keyId === opts.keyId) : keys.find((k) => k.current);
        if (!key) throw new Error(opts.keyId ? `the orchestrator serves no key "${opts.keyId}" (it has: ${keys.map((k) => k.keyId).join(", ")})` : "the orchestrator serves no current signing key");
        if (opts.outputFile) {
          writeFileAtomic(opts.outputFile, key.publicKeyPem, 0o644);
          process.stdout.write(escapeControl(`signing key ${key.keyId} (${key.algorithm}) written to ${opts.outputFile}`) + "\n");
        } else if (options.output !== "text") printMessage(options.output, SigningKeySchema, key);
        else process.stdout.write(key.publicKeyPem.endsWith("\n") ? key.publicKeyPem : `${key.publicKeyPem}\n`);
      }),
    );
  rollout.addCommand(signingKey);
  return rollout;
}

const TARGETS = ["rollout_plan", "rollout_stage"] as const;
const STRATEGIES = ["retry", "rollback", "abort", "skip_failed"] as const;

/** `autonomy rollback preview|execute`: the recovery strategies of a plan or of its current stage. */
export function rollbackCommand(): Command {
  const rollback = new Command("rollback").description(
    "Recover a rollout: retry (back to active), rollback (every node the plan moved gets back the release it ran before; the plan is rolling_back until they run it, then rolled_back), abort (terminal: no further node moves, nodes keep what they have) or skip_failed (pass the stage over its failures).",
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
          if (options.output !== "text") return printMessage(options.output, RecoverRolloutResponseSchema, res);
          process.stdout.write(escapeControl(`${dryRun ? "preview: " : ""}${res.message}`) + `\n${escapeControl(`phase ${res.fromPhase} -> ${res.toPhase}`)}\n`);
          if (res.movedNodes.length > 0) {
            const fate =
              opts.strategy === "rollback" ? "get back the release they ran before" : res.toPhase === "cancelled" ? "keep its release" : "were moved by this plan";
            process.stdout.write(`${res.movedNodes.length} node(s) moved by this plan ${fate}:\n`);
            process.stdout.write(formatTable(["NODE", "STAGE", "MOVED"], res.movedNodes.map((m) => [m.nodeId, m.stageId, formatTime(m.movedAt)])));
          }
        }),
      );
  sub("preview", true, "Show what a recovery would do (phases, nodes already moved) without changing anything.");
  sub("execute", false, "Apply a recovery strategy.");
  return rollback;
}

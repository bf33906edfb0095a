import { Command } from "commander";
import {
  EmergencyResumeResponseSchema,
  EmergencyStopResponseSchema,
  GetEmergencyStatusResponseSchema,
  type EmergencyStopState,
} from "../../../clients/index.js";
import { escapeControl, formatAge, formatTime, printMessage } from "../shared/output.js";
import { withClients } from "./context.js";

/** The stop in a few lines, for people. */
export function describeStopState(s: EmergencyStopState | undefined): string {
  if (!s?.active) {
    const last = s?.resumedAt ? `; the last one was lifted ${formatTime(s.resumedAt)} by ${s.resumedBy} ("${s.resumeReason}")` : "";
    return escapeControl(`no emergency stop in force${last}`) + "\n";
  }
  return (
    escapeControl(`EMERGENCY STOP in force since ${formatTime(s.since)} (${formatAge(s.since)}) by ${s.stoppedBy}: "${s.reason}"`) +
    "\nnew plans and new unstaged releases are refused; no stage opens and no node is moved until: autonomy emergency resume --reason TEXT\n"
  );
}

export function emergencyCommand(): Command {
  const emergency = new Command("emergency").description("Stop every rollout at once, and lift the stop (runbook 11).");
  emergency
    .command("stop")
    .description(
      "Halt every unfinished rollout plan in one transaction, freeze every node's desired release, and refuse new plans and new " +
        "unstaged releases until `autonomy emergency resume`. Agents already installing finish and ack; no install starts. Needs emergency:stop.",
    )
    .requiredOption("--reason <text>", "why (recorded on every halted plan and in the audit trail)")
    .action((opts: { reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const r = await api.operations.emergencyStop({ reason: opts.reason });
        if (options.output !== "text") return printMessage(options.output, EmergencyStopResponseSchema, r);
        if (!r.changed) process.stdout.write("a stop was already in force; nothing changed\n");
        else process.stdout.write(`halted ${r.haltedPlanIds.length} plan(s)${r.haltedPlanIds.length ? `: ${r.haltedPlanIds.map(escapeControl).join(", ")}` : ""}\n`);
        process.stdout.write(describeStopState(r.state));
      }),
    );
  emergency
    .command("resume")
    .description("Lift the stop. Halted plans stay halted: resume each with `autonomy rollout plan resume PLAN_ID --reason TEXT`.")
    .requiredOption("--reason <text>", "why (recorded in the audit trail)")
    .action((opts: { reason: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const r = await api.operations.emergencyResume({ reason: opts.reason });
        if (options.output !== "text") return printMessage(options.output, EmergencyResumeResponseSchema, r);
        process.stdout.write(r.changed ? "emergency stop lifted; halted plans stay halted until resumed\n" : "no stop was in force; nothing changed\n");
      }),
    );
  emergency
    .command("status")
    .description("Whether a stop is in force, since when and by whom.")
    .action((_opts: unknown, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const r = await api.operations.getEmergencyStatus({});
        if (options.output !== "text") return printMessage(options.output, GetEmergencyStatusResponseSchema, r);
        process.stdout.write(describeStopState(r.state));
      }),
    );
  return emergency;
}

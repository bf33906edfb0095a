import { Code, ConnectError } from "@connectrpc/connect";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  ApplyRequestSchema,
  ApplyResponseSchema,
  DeleteServiceResponseSchema,
  GetServiceResponseSchema,
  ListServicesResponseSchema,
  ListWorkloadNodesResponseSchema,
  type PlacementChange,
  type Service,
  type WorkloadResources,
} from "../../../clients/index.js";
import { escapeControl, formatAge, formatFields, formatTable, formatTime, printMessage } from "../shared/output.js";
import { readSpecFile, SpecFileError } from "../shared/spec-file.js";
import { withClients } from "./context.js";

const APPLY_FILE_HELP =
  "\nApply file (YAML or JSON): the services to create or change; services it does not list stay as they are.\n" +
  "  services:\n" +
  "    - name: web                  # letters, digits, - _ ., at most 63 characters\n" +
  "      command: /usr/bin/web-server\n" +
  '      args: ["--port", "8080"]\n' +
  "      env: {MODE: production}\n" +
  "      replicas: 3                # 0 to 10000\n" +
  "      selector: {arch: arm64}    # only nodes with these labels\n" +
  "      resources: {cpu_millis: 250, memory_bytes: 134217728}\n" +
  "      restart_policy: always     # always (default), on-failure or never\n" +
  "      spread_key: zone           # spread replicas over this label's values\n";

function parseVersion(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("expected a version number (0 or more), as `autonomy service list` shows it");
  return Number(value);
}

/** Reads an apply file: `{services: [...]}`, with errors that name the file, the line and the field. */
export function readApplyFile(file: string) {
  const req = readSpecFile(file, ApplyRequestSchema, "an apply file (services: a list of service specs)");
  if (req.dryRun || req.expectedVersion !== undefined) throw new SpecFileError(`${file}: dry_run and expected_version are flags (--dry-run, --expected-version), not keys of the file`);
  if (req.services.length === 0) throw new SpecFileError(`${file}: services: at least one service`);
  return req;
}

/** Millicores as `250m`. */
export const cpu = (r: WorkloadResources | undefined) => `${Number(r?.cpuMillis ?? 0n)}m`;
/** Bytes as `64Mi`. */
export const mem = (r: WorkloadResources | undefined) => {
  const b = Number(r?.memoryBytes ?? 0n);
  return b >= 1 << 30 ? `${(b / (1 << 30)).toFixed(1)}Gi` : b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(0)}Mi` : `${b}B`;
};
const rid = (c: PlacementChange) => `${c.service}-${c.index}`;

function placementLines(p: { launches: PlacementChange[]; updates: PlacementChange[]; stops: PlacementChange[]; unschedulable: PlacementChange[] } | undefined): string {
  if (!p) return "";
  const lines = [
    ...p.launches.map((c) => `  launch ${rid(c)} on ${c.nodeId}`),
    ...p.updates.map((c) => `  update ${rid(c)} on ${c.nodeId} to generation ${c.generation}`),
    ...p.stops.map((c) => `  stop ${rid(c)} on ${c.nodeId} (${c.reason})`),
    ...p.unschedulable.map((c) => `  unschedulable ${rid(c)}: ${c.reason}`),
  ];
  return lines.length === 0 ? "placement: nothing moves\n" : `placement:\n${lines.map((l) => escapeControl(l) + "\n").join("")}`;
}

function describeService(s: Service): string {
  const spec = s.spec!;
  let text = formatFields([
    ["service", spec.name],
    ["command", [spec.command, ...spec.args].join(" ")],
    ["replicas", `${s.running} running of ${spec.replicas}${s.unschedulable > 0 ? `, ${s.unschedulable} unschedulable` : ""}`],
    ["generation", String(s.generation)],
    ["restart policy", spec.restartPolicy],
    ["resources", `${cpu(spec.resources)} cpu, ${mem(spec.resources)} memory per replica`],
    ["selector", Object.entries(spec.selector).map(([k, v]) => `${k}=${v}`).join(",") || "-"],
    ["spread over", spec.spreadKey || "-"],
    ["env", Object.keys(spec.env).sort().join(", ") || "-"],
    ["created", formatTime(s.createdAt)],
    ["updated", formatTime(s.updatedAt)],
  ]);
  if (s.replicas.length === 0) return text;
  const rows = s.replicas.map((r) => [
    r.replicaId,
    r.nodeId || "-",
    r.desiredState,
    r.state,
    `${r.observedGeneration}/${r.generation}`,
    String(r.restarts),
    r.lastExitCode === undefined ? "-" : String(r.lastExitCode),
    r.reportedAt ? formatAge(r.reportedAt) : "-",
    r.reason || "-",
  ]);
  text += "\n" + formatTable(["REPLICA", "NODE", "DESIRED", "STATE", "GEN", "RESTARTS", "EXIT", "REPORTED", "REASON"], rows);
  const output = s.replicas.filter((r) => r.lastOutput.length > 0);
  for (const r of output) text += `\n${escapeControl(r.replicaId)} last output:\n${r.lastOutput.map((l) => `  ${escapeControl(l)}\n`).join("")}`;
  return text;
}

/** `autonomy apply -f FILE`: create or change services. */
export function applyCommand(): Command {
  return new Command("apply")
    .description("Create or change services (replicas the fleet's agents run) from a YAML or JSON file, validated whole: a bad field changes nothing.")
    .addHelpText("after", APPLY_FILE_HELP)
    .requiredOption("-f, --file <path>", "apply file (.yaml, .yml or .json)")
    .option("--dry-run", "show what would change and where the replicas would go; write nothing")
    .addOption(new Option("--expected-version <n>", "apply only while the workload state is at this version (else: aborted, nothing written)").argParser(parseVersion))
    .action((opts: { file: string; dryRun?: boolean; expectedVersion?: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const req = readApplyFile(opts.file);
        let res;
        try {
          res = await api.workloads.apply({ services: req.services, dryRun: opts.dryRun === true, expectedVersion: opts.expectedVersion === undefined ? undefined : BigInt(opts.expectedVersion) });
        } catch (err) {
          const e = ConnectError.from(err);
          if (e.code === Code.InvalidArgument) throw new SpecFileError(`${opts.file}: ${e.rawMessage}`);
          throw err;
        }
        if (options.output !== "text") return printMessage(options.output, ApplyResponseSchema, res);
        const changes = res.changes.map((c) => `service ${c.name} ${c.change}${c.change === "unchanged" ? "" : ` (generation ${c.generation})`}`);
        process.stdout.write(changes.map((c) => escapeControl(c) + "\n").join("") + placementLines(res.placement));
        process.stdout.write(res.dryRun ? `dry run: nothing written (workload version ${res.version})\n` : `workload version ${res.version}\n`);
      }),
    );
}

/** `autonomy service list|describe|delete|nodes`. */
export function serviceCommand(): Command {
  const service = new Command("service").description("Services applied with `autonomy apply`, their replicas, and the nodes that run them.");
  service
    .command("list")
    .description("List the services with their desired and running replicas.")
    .action((_opts: object, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.workloads.listServices({});
        if (options.output !== "text") return printMessage(options.output, ListServicesResponseSchema, res);
        if (res.items.length === 0) return void process.stdout.write(`no services (workload version ${res.version})\n`);
        const rows = res.items.map((s) => [s.spec!.name, `${s.running}/${s.spec!.replicas}`, String(s.unschedulable), String(s.generation), [s.spec!.command, ...s.spec!.args].join(" "), formatTime(s.updatedAt)]);
        process.stdout.write(formatTable(["SERVICE", "RUNNING", "UNSCHEDULABLE", "GENERATION", "COMMAND", "UPDATED"], rows) + `\nworkload version ${res.version}\n`);
      }),
    );
  service
    .command("describe")
    .description("A service's spec and every replica: its node, desired and reported state, restarts, last exit code and output.")
    .argument("<name>", "the service")
    .action((name: string, _opts: object, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.workloads.getService({ name });
        if (options.output !== "text") return printMessage(options.output, GetServiceResponseSchema, res);
        process.stdout.write(describeService(res.service!));
      }),
    );
  service
    .command("delete")
    .description("Delete a service: its replicas are stopped on their nodes.")
    .argument("<name>", "the service")
    .addOption(new Option("--expected-version <n>", "delete only while the workload state is at this version").argParser(parseVersion))
    .action((name: string, opts: { expectedVersion?: number }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.workloads.deleteService({ name, expectedVersion: opts.expectedVersion === undefined ? undefined : BigInt(opts.expectedVersion) });
        if (options.output !== "text") return printMessage(options.output, DeleteServiceResponseSchema, res);
        process.stdout.write(escapeControl(`deleted service ${name}: ${res.stops.length} replicas to stop (workload version ${res.version})`) + "\n");
      }),
    );
  service
    .command("nodes")
    .description("The nodes that report workloads: lifecycle, whether they take replicas, capacity, reported use, what the scheduler reserved, and their replicas.")
    .action((_opts: object, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.workloads.listWorkloadNodes({});
        if (options.output !== "text") return printMessage(options.output, ListWorkloadNodesResponseSchema, res);
        if (res.items.length === 0) return void process.stdout.write("no node reports workloads yet\n");
        const rows = res.items.map((n) => [
          n.nodeId,
          n.lifecycle,
          n.schedulable ? "yes" : "no",
          `${cpu(n.usage)}/${cpu(n.reserved)}/${cpu(n.capacity)}`,
          `${mem(n.usage)}/${mem(n.reserved)}/${mem(n.capacity)}`,
          formatAge(n.reportedAt),
          n.replicaIds.join(",") || "-",
        ]);
        process.stdout.write(formatTable(["NODE", "LIFECYCLE", "SCHEDULABLE", "CPU USED/RESERVED/CAPACITY", "MEMORY USED/RESERVED/CAPACITY", "REPORTED", "REPLICAS"], rows));
      }),
    );
  return service;
}

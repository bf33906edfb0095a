import { readFileSync } from "node:fs";
import os from "node:os";
import { readFlagFile } from "../../files.js";
import { createPublicKey } from "node:crypto";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { runAgent } from "../../agent/agent.js";
import { readState } from "../../agent/state.js";
import { startShipper } from "../../agent/spool/shipper.js";
import { buildInfo } from "../../build-info.js";
import { createLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../../observability/logger.js";
import { runCommand, UsageError } from "../shared/output.js";
import { parseMillicores, parsePositiveDuration, parseSize } from "../shared/parse.js";
import { wrapProse } from "../shared/program.js";
import { parseLabelOption } from "./enroll.js";
import { edgeClients, edgeTarget, renewableEdgeClients } from "./options.js";
import { keepCertificateFresh } from "../../agent/renewal.js";

/** Reads a PEM public key file, naming the file in errors. */
function readPublicKeyFile(file: string): string {
  const pem = readFlagFile("--plan-public-key-file", file).toString("utf8");
  try {
    createPublicKey(pem);
  } catch {
    throw new UsageError(`--plan-public-key-file ${file}: not a PEM public key (autonomy rollout signing-key get --output-file ${file} writes one)`);
  }
  return pem;
}

/** A memory capacity: a size of at least one byte. */
function parseCapacityBytes(value: string): number {
  const bytes = parseSize(value);
  if (bytes < 1) throw new InvalidArgumentError(`"${value}" must be a size of at least 1 byte (examples: 512Mi, 2Gi, 4GiB)`);
  return bytes;
}

/** A value of config.yaml, parsed as its flag would be; a bad one is a usage error naming the key. */
function fromConfig<T>(config: Record<string, string | undefined>, key: string, parse: (v: string) => T): T | undefined {
  const v = config[key];
  if (v === undefined) return undefined;
  try {
    return parse(v);
  } catch (err) {
    throw new UsageError(`config.yaml: ${key}: ${(err as Error).message}`);
  }
}

interface RunOptions {
  planPublicKeyFile?: string;
  nodeId?: string;
  channel?: string;
  label?: Record<string, string>;
  applyCommand?: string;
  healthCommand?: string;
  heartbeatInterval: number;
  pollInterval: number;
  hookGrace: number;
  push: boolean;
  capacityCpu: number;
  capacityMemory: number;
  logFormat: LogFormat;
  logLevel: LogLevel;
}

export function runAgentCommand(): Command {
  return new Command("run")
    .description(
      "Run the agent: heartbeat, hear of a new desired release on the push stream (or poll for it), install it with --apply-command, and acknowledge each step " +
        "(downloading, applied, healthy or failed). Stops cleanly on SIGTERM: a running hook's process group gets SIGTERM, " +
        "then SIGKILL after --hook-grace, and the install is acknowledged failed (interrupted).",
    )
    .addHelpText(
      "after",
      () =>
        "\n" +
        wrapProse(
          "Hooks run with /bin/sh -c, in a process group of their own, and get AUTONOMY_NODE_ID, AUTONOMY_RELEASE_ID, " +
            "AUTONOMY_RELEASE_VERSION, AUTONOMY_RELEASE_CHANNEL and AUTONOMY_RELEASE_FILE (the release as JSON, with digests). " +
            "Exit status 0 of --apply-command means applied; of --health-command (after it), healthy. Their output goes to " +
            "the agent log. Without hooks a release is acknowledged healthy as soon as it is seen. Node id, channel and " +
            "labels default to what `edgectl enroll` stored in the state dir; `edgectl status` shows what the agent knows.",
        ) +
        "\n\n" +
        wrapProse(
          "The agent also runs the service replicas the control plane sends it (on the push stream and in the answers " +
            "to its workload reports), each as a supervised child process; it reports them, with --capacity-cpu and " +
            "--capacity-memory, soon after every change and at least every --heartbeat-interval. Replicas keep running " +
            "while the orchestrator cannot be reached; SIGTERM or SIGINT to the agent stops them (SIGTERM to each process " +
            "group, SIGKILL 10s later) before it exits.",
        ) +
        "\n",
    )
    .option("--node-id <id>", "this node's id")
    .option("--channel <name>", "the release channel the node follows")
    .option("--label <key=value>", "a label rollouts can select the node by (repeatable)", parseLabelOption)
    .addOption(new Option("--apply-command <cmd>", "shell command that installs a release").env("AUTONOMY_APPLY_COMMAND"))
    .addOption(new Option("--health-command <cmd>", "shell command that checks the node after an install").env("AUTONOMY_HEALTH_COMMAND"))
    .addOption(
      new Option("--heartbeat-interval <duration>", "time between heartbeats").argParser(parsePositiveDuration).default(15_000, "15s"),
    )
    .addOption(
      new Option("--poll-interval <duration>", "time between polls of the desired release").argParser(parsePositiveDuration).default(10_000, "10s"),
    )
    .option("--no-push", "do not keep the push stream open: learn of new releases and workload commands by polling only")
    .addOption(
      new Option("--capacity-cpu <cpu>", "CPU this node offers to replicas: cores (2, 0.5) or millicores (1500m)")
        .argParser(parseMillicores)
        .env("AUTONOMY_CAPACITY_CPU")
        .default(os.cpus().length * 1000, `${os.cpus().length}, this machine's cores`),
    )
    .addOption(
      new Option("--capacity-memory <size>", "memory this node offers to replicas (512Mi, 2Gi, 4GiB, bytes)")
        .argParser(parseCapacityBytes)
        .env("AUTONOMY_CAPACITY_MEMORY")
        .default(os.totalmem(), "this machine's memory"),
    )
    .addOption(
      new Option("--hook-grace <duration>", "how long a hook may take to stop after SIGTERM before it is killed").argParser(parsePositiveDuration).default(5_000, "5s"),
    )
    .addOption(
      new Option(
        "--plan-public-key-file <path>",
        "PEM public key rollout plan specs must be signed with (autonomy rollout signing-key get --output-file; default: the keys the orchestrator serves)",
      ).env("AUTONOMY_PLAN_PUBLIC_KEY_FILE"),
    )
    .addOption(new Option("--log-format <format>", "log output format").choices(LOG_FORMATS).default("text"))
    .addOption(new Option("--log-level <level>", "minimum log level").choices(LOG_LEVELS).default("info"))
    .action((opts: RunOptions, cmd: Command) =>
      runCommand("edgectl", async () => {
        const target = edgeTarget(cmd);
        const stateDir = target.options.stateDir;
        const state = readState(stateDir);
        const nodeId = opts.nodeId ?? state.nodeId ?? target.identity?.nodeId;
        const channel = opts.channel ?? state.channel;
        if (!nodeId) throw new UsageError("no node id: pass --node-id or run `edgectl enroll` first");
        if (!channel) throw new UsageError("no channel: pass --channel or run `edgectl enroll` first");
        if (state.nodeId !== undefined && state.nodeId !== nodeId) {
          throw new UsageError(`the state dir belongs to node "${state.nodeId}", not "${nodeId}"; use another --state-dir`);
        }
        if (target.identity && target.identity.nodeId !== nodeId) {
          throw new UsageError(`the enrolled certificate in the state dir is for node "${target.identity.nodeId}", not "${nodeId}"`);
        }
        const fromFlag = (key: string) => cmd.getOptionValueSource(key) !== "default";
        const capacity = {
          cpuMillis: (fromFlag("capacityCpu") ? undefined : fromConfig(target.config, "capacity-cpu", parseMillicores)) ?? opts.capacityCpu,
          memoryBytes: (fromFlag("capacityMemory") ? undefined : fromConfig(target.config, "capacity-memory", parseCapacityBytes)) ?? opts.capacityMemory,
        };
        const planKeyFile = opts.planPublicKeyFile ?? target.config["plan-public-key-file"];
        const planPublicKeyPem = planKeyFile === undefined ? undefined : readPublicKeyFile(planKeyFile);
        const logger = createLogger({ format: opts.logFormat, level: opts.logLevel });
        const stop = new AbortController();
        const onSignal = (signal: string) => {
          logger.info({ signal }, "stopping");
          stop.abort();
        };
        process.once("SIGTERM", () => onSignal("SIGTERM"));
        process.once("SIGINT", () => onSignal("SIGINT"));
        // With the certificate of its enrolment, the agent renews it and reconnects with the new one.
        const renewable = target.identity ? renewableEdgeClients(target) : undefined;
        const api = renewable ?? edgeClients(target);
        logger.info(
          { url: target.url, url_source: target.source, node_id: nodeId, version: buildInfo().version, capacity_cpu_millis: capacity.cpuMillis, capacity_memory_bytes: capacity.memoryBytes },
          "starting",
        );
        // Ships the event spool alongside the agent loop, until the same signal stops both.
        const shipper = startShipper({ api, stateDir, logger, signal: stop.signal });
        const renewal =
          renewable && target.identity
            ? keepCertificateFresh({
                api,
                logger,
                stateDir,
                identity: target.identity,
                signal: stop.signal,
                onRenewed: (identity) => {
                  const tls = { ca: target.tls?.ca, cert: readFileSync(identity.certPath), key: readFileSync(identity.keyPath) };
                  // The agent's messages about refused certificates describe the one in use.
                  Object.assign(target.tls ?? {}, tls);
                  renewable.useTls(tls);
                },
              })
            : Promise.resolve();
        try {
          await runAgent(
            {
              api,
              logger,
              stateDir,
              nodeId,
              channel,
              labels: opts.label ?? state.labels ?? {},
              agentVersion: buildInfo().version,
              applyCommand: opts.applyCommand ?? target.config["apply-command"],
              healthCommand: opts.healthCommand ?? target.config["health-command"],
              heartbeatIntervalMs: opts.heartbeatInterval,
              planPublicKeyPem,
              pollIntervalMs: opts.pollInterval,
              hookGraceMs: opts.hookGrace,
              push: opts.push,
              workloads: { capacity },
              signal: stop.signal,
              target: {
                url: target.url,
                source: target.source,
                tls: target.tls,
                certFile: target.options.tlsCertFile ? path.resolve(target.options.tlsCertFile) : undefined,
              },
            },
            state,
          );
        } catch (err) {
          if (!stop.signal.aborted) throw err;
          logger.info("stopped");
        } finally {
          stop.abort();
          await Promise.all([shipper.done, renewal]);
          api.close();
        }
      }),
    );
}

import { Command, InvalidArgumentError, Option } from "commander";
import { createOrchestratorClients } from "../../../clients/index.js";
import { newKeyAndCsr, PendingKey } from "../../agent/identity.js";
import { readState, writeState } from "../../agent/state.js";
import { buildInfo } from "../../build-info.js";
import { nodeIdOfEnrollmentToken } from "../../domain/enrollment.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { escapeControl, formatTime, runCommand, UsageError } from "../shared/output.js";
import { collectLabel, edgeTarget, explainEdgeError, requestTimeoutOf, withEdgeClients, type EdgeTarget } from "./options.js";
import { waitingNotice } from "../shared/waiting.js";

interface EnrollOptions {
  nodeId?: string;
  channel?: string;
  token?: string;
  label?: Record<string, string>;
  clearLabels?: boolean;
}

const label = (value: string, previous?: Record<string, string>) => {
  try {
    return collectLabel(value, previous);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

const labelText = (labels: Record<string, string>) =>
  Object.keys(labels).length === 0 ? "no labels" : `labels ${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",")}`;

/**
 * Enrolment with a one-time token: a new P-256 key made and kept here (mode 0600), a CSR for
 * it sent with the token, and the certificate the orchestrator's CA answers kept beside the
 * key as the node's identity (src/agent/identity.ts), which `run` then uses for mutual TLS.
 */
async function enrollWithToken(opts: EnrollOptions & { token: string }, target: EdgeTarget): Promise<void> {
  const stateDir = target.options.stateDir;
  const nodeId = opts.nodeId ?? nodeIdOfEnrollmentToken(opts.token);
  if (!nodeId) throw new UsageError("--token: not an enrolment token (they start with aoe_ and name their node); pass --node-id to say which node this is");
  const before = readState(stateDir);
  if (before.nodeId !== undefined && before.nodeId !== nodeId) {
    throw new UsageError(`the state dir belongs to node "${before.nodeId}", not "${nodeId}"; use another --state-dir`);
  }
  if (!target.url.startsWith("https://")) {
    throw new UsageError(`enrolling with a token needs an https:// orchestrator URL (the token and the certificate would travel in the clear), not ${target.url} (${target.source})`);
  }
  const { keyPem, csrPem } = await newKeyAndCsr(nodeId);
  // The key is on disk before the request leaves: a certificate answered always has its key.
  const pending = PendingKey.write(stateDir, keyPem);
  // No client certificate and no bearer token: the one-time token is the credential.
  const tls = { ca: target.tls?.ca };
  const api = createOrchestratorClients({ baseUrl: target.url, timeoutMs: requestTimeoutOf(target), tls, interceptors: [waitingNotice(target.url, "edgectl")] });
  let res;
  try {
    res = await api.enrollment.enroll({ token: opts.token, csrPem, labels: opts.label ?? {}, agentVersion: buildInfo().version });
  } catch (err) {
    pending.discard();
    throw await explainEdgeError(err, { ...target, tls });
  } finally {
    api.close();
  }
  const n = res.node!;
  const c = res.certificate!;
  const ms = (ts: Parameters<typeof timestampMs>[0] | undefined) => (ts ? timestampMs(ts) : 0);
  const identity = pending.adopt(
    { nodeId: n.nodeId, serial: c.serial, chainPem: c.certificateChainPem, notBeforeMs: ms(c.notBefore), notAfterMs: ms(c.notAfter), renewAfterMs: ms(c.renewAfter) },
    { orchestratorUrl: target.url, serverCaPem: target.tls?.ca },
  );
  writeState(stateDir, { ...before, nodeId: n.nodeId, channel: n.channel, labels: n.labels });
  process.stdout.write(
    escapeControl(`enrolled node ${n.nodeId}: channel ${n.channel}, ${labelText(n.labels)}`) +
      "\n" +
      `  certificate ${identity.certPath}: serial ${c.serial}, signed by the orchestrator's CA, valid until ${formatTime(c.notAfter)}; edgectl run renews it from ${formatTime(c.renewAfter)}\n` +
      `  key         ${identity.keyPath} (mode 0600; it never leaves this node)\n` +
      "next: `edgectl run` on this node; it uses this certificate for mutual TLS\n",
  );
}

export function enrollCommand(): Command {
  return new Command("enroll")
    .description(
      "Register this node with the orchestrator, or update its channel, and remember its id, channel and labels in the state dir for `edgectl run`. " +
        "With --token (a one-time token from `autonomy node enrollment-token create`), make this node's key, have the orchestrator's CA sign its certificate, " +
        "and keep both in the state dir: `run` then uses them for mutual TLS and renews the certificate. " +
        "Enrolling again without --label keeps the labels the node has; --clear-labels removes them.",
    )
    .option("--node-id <id>", "this node's id (required without --token; with it, the node the token names)")
    .option("--channel <name>", "the release channel the node follows (required without --token, which names it)")
    .addOption(new Option("--token <token>", "a one-time enrolment token (autonomy node enrollment-token create)").env("AUTONOMY_ENROLLMENT_TOKEN"))
    .option("--label <key=value>", "a label rollouts can select the node by (repeatable; replaces the node's labels)", label)
    .option("--clear-labels", "remove every label of the node")
    .action((opts: EnrollOptions, cmd: Command) => {
      if (opts.token) {
        const token = opts.token.trim();
        return runCommand("edgectl", async () => {
          if (opts.channel !== undefined) throw new UsageError("--channel comes with the token (it names the channel the node follows); leave it out with --token");
          if (opts.clearLabels) throw new UsageError("--clear-labels: a node enrolled with a token has the labels --label gives it");
          await enrollWithToken({ ...opts, token }, edgeTarget(cmd));
        });
      }
      return withEdgeClients(cmd, async (api, target) => {
        if (!opts.nodeId) throw new UsageError("--node-id is required (or enrol with --token)");
        if (!opts.channel) throw new UsageError("--channel is required (or enrol with --token)");
        if (opts.clearLabels && opts.label) throw new UsageError("--label and --clear-labels exclude each other");
        const stateDir = target.options.stateDir;
        const before = readState(stateDir);
        const { node } = await api.nodes.enrollNode({
          nodeId: opts.nodeId,
          channel: opts.channel,
          labels: opts.label ?? {},
          replaceLabels: opts.clearLabels === true,
          agentVersion: buildInfo().version,
        });
        const n = node!;
        writeState(stateDir, { ...before, nodeId: n.nodeId, channel: n.channel, labels: n.labels });
        const seen = n.lastSeen !== undefined;
        const what = seen || before.nodeId === n.nodeId ? "updated the enrolment of" : "enrolled";
        process.stdout.write(
          escapeControl(`${what} node ${n.nodeId}: channel ${n.channel}, ${labelText(n.labels)}`) +
            "\n" +
            (seen
              ? escapeControl(`the orchestrator sees it ${n.lifecycle}`) + "\n"
              : "next: `edgectl run` on this node; it counts as HEALTHY once its heartbeats arrive\n"),
        );
      });
    });
}

export { label as parseLabelOption };

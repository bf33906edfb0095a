import { existsSync } from "node:fs";
import path from "node:path";
import { type Command, Option } from "commander";
import YAML from "yaml";
import { readFileSync } from "node:fs";
import { createOrchestratorClients, createRenewableClients, diagnoseTransportError, type OrchestratorClients, type RenewableClients } from "../../../clients/index.js";
import { identityPath, readIdentity, type LoadedIdentity } from "../../agent/identity.js";
import { defaultStateDir } from "../../agent/state.js";
import { runCommand, TransportError, UsageError, type OutputFormat } from "../shared/output.js";
import { suggest } from "../shared/spec-file.js";
import { transportFailureMessage, waitingNotice } from "../shared/waiting.js";
import { parsePositiveDuration } from "../shared/parse.js";
import { addClientTlsOptions, clientTls, clientToken, type ClientTlsFlags } from "../shared/tls-options.js";

export interface EdgeOptions extends ClientTlsFlags {
  orchestratorUrl?: string;
  stateDir: string;
  output?: OutputFormat;
  /** How long a command waits for each answer of the orchestrator (ms). */
  requestTimeout?: number;
}

/** How long a call waits for its answer unless --request-timeout says otherwise. */
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** The wait for each answer of the orchestrator that a command's options ask for. */
export function requestTimeoutOf(target: EdgeTarget): number {
  return target.options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT_MS;
}

/** Keys of `config.yaml` in the state dir, each the name of the flag it stands for. */
export const EDGE_CONFIG_KEYS = [
  "orchestrator-url",
  "token-file",
  "tls-ca-file",
  "tls-cert-file",
  "tls-key-file",
  "apply-command",
  "health-command",
  "plan-public-key-file",
  "capacity-cpu",
  "capacity-memory",
] as const;
export type EdgeConfig = Partial<Record<(typeof EDGE_CONFIG_KEYS)[number], string>>;

export const edgeConfigPath = (stateDir: string) => path.join(stateDir, "config.yaml");

/** Reads `config.yaml` in the state dir (absent: empty); relative paths in it are relative to the state dir. */
export function readEdgeConfig(stateDir: string): EdgeConfig {
  const file = edgeConfigPath(stateDir);
  if (!existsSync(file)) return {};
  let parsed: unknown;
  try {
    parsed = YAML.parse(readFileSync(file, "utf8"), { schema: "failsafe" });
  } catch (err) {
    throw new UsageError(`${file}: not YAML (${(err as Error).message.split("\n")[0]})`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) throw new UsageError(`${file}: expected key: value lines (${EDGE_CONFIG_KEYS.join(", ")})`);
  const config: EdgeConfig = {};
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (!(EDGE_CONFIG_KEYS as readonly string[]).includes(key)) throw new UsageError(`${file}: unknown key "${key}"${suggest(key, EDGE_CONFIG_KEYS)}`);
    if (typeof value !== "string") throw new UsageError(`${file}: ${key}: expected a text value`);
    const k = key as keyof EdgeConfig;
    config[k] = k.endsWith("-file") ? path.resolve(stateDir, value) : value;
  }
  return config;
}

/** The global options of edgectl, shared by every command. */
export function addEdgeGlobalOptions(cmd: Command): Command {
  return addClientTlsOptions(cmd)
    .addOption(new Option("--orchestrator-url <url>", "orchestrator base URL (default: orchestrator-url in STATE_DIR/config.yaml)").env("AUTONOMY_ORCHESTRATOR_URL"))
    .addOption(
      new Option("--state-dir <dir>", "where the agent keeps what the node runs, its status and config.yaml")
        .env("AUTONOMY_EDGE_STATE_DIR")
        .default(defaultStateDir(), "$XDG_STATE_HOME/autonomyops/edgectl"),
    )
    .addOption(
      new Option("--request-timeout <duration>", "how long a command waits for each answer of the orchestrator")
        .env("AUTONOMY_EDGE_REQUEST_TIMEOUT")
        .argParser(parsePositiveDuration)
        .default(DEFAULT_REQUEST_TIMEOUT_MS, "30s"),
    );
}

/** Where a value of the edgectl options came from, in words: "from --orchestrator-url", "from AUTONOMY_...". */
function sourceOf(cmd: Command, key: string, flag: string, env: string): string | undefined {
  const source = cmd.getOptionValueSourceWithGlobals(key);
  if (source === "cli") return `from ${flag}`;
  if (source === "env") return `from ${env}`;
  return undefined;
}

/** The orchestrator this node talks to, where that URL came from, and the credentials to use. */
export interface EdgeTarget {
  url: string;
  source: string;
  options: EdgeOptions;
  config: EdgeConfig;
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  token?: string;
  /**
   * The node's enrolled identity (edgectl enroll --token), when it is the client certificate in
   * use: no --tls-cert-file came from a flag, a variable or config.yaml.
   */
  identity?: LoadedIdentity;
}

/** The node's enrolled identity in the state dir, or undefined; an unreadable one is a usage error. */
function enrolledIdentity(stateDir: string): LoadedIdentity | undefined {
  try {
    return readIdentity(stateDir);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function edgeTarget(cmd: Command): EdgeTarget {
  const options = { ...(cmd.optsWithGlobals() as EdgeOptions) };
  const config = readEdgeConfig(options.stateDir);
  const enrolled = enrolledIdentity(options.stateDir);
  let url = options.orchestratorUrl;
  let source = sourceOf(cmd, "orchestratorUrl", "--orchestrator-url", "AUTONOMY_ORCHESTRATOR_URL");
  if (!url && config["orchestrator-url"]) {
    url = config["orchestrator-url"];
    source = `from ${edgeConfigPath(options.stateDir)}`;
  }
  if (!url && enrolled?.orchestratorUrl) {
    url = enrolled.orchestratorUrl;
    source = `from ${identityPath(options.stateDir)} (the orchestrator this node enrolled with)`;
  }
  if (!url) {
    throw new UsageError(
      `no orchestrator URL: pass --orchestrator-url, set AUTONOMY_ORCHESTRATOR_URL, or put orchestrator-url: URL in ${edgeConfigPath(options.stateDir)}`,
    );
  }
  // An empty flag or variable counts as not given.
  options.tokenFile ||= process.env.AUTONOMY_TOKEN ? undefined : config["token-file"];
  options.tlsCaFile ||= config["tls-ca-file"];
  options.tlsCertFile ||= config["tls-cert-file"];
  options.tlsKeyFile ||= config["tls-key-file"];
  options.tlsCaFile ||= enrolled?.serverCaPath;
  let identity: LoadedIdentity | undefined;
  if (!options.tlsCertFile && !options.tlsKeyFile && enrolled) {
    identity = enrolled;
    options.tlsCertFile = identity.certPath;
    options.tlsKeyFile = identity.keyPath;
  }
  return { url, source: source ?? "", options, config, tls: clientTls(options), token: clientToken(options), identity };
}

/**
 * Clients for the orchestrator the target names; the caller closes them. Interactive commands
 * say on stderr when an answer takes more than a second; the agent (`run`) logs instead.
 */
export function edgeClients(target: EdgeTarget, opts: { interactive?: boolean; timeoutMs?: number } = {}): OrchestratorClients {
  return createOrchestratorClients({
    baseUrl: target.url,
    timeoutMs: opts.timeoutMs ?? requestTimeoutOf(target),
    tls: target.tls,
    token: target.token,
    interceptors: opts.interactive ? [waitingNotice(target.url, "edgectl")] : [],
  });
}

/** Clients whose certificate can be swapped for a renewed one (edgectl run with an enrolled identity). */
export function renewableEdgeClients(target: EdgeTarget, opts: { timeoutMs?: number } = {}): RenewableClients {
  return createRenewableClients({ baseUrl: target.url, timeoutMs: opts.timeoutMs ?? requestTimeoutOf(target), tls: target.tls, token: target.token });
}

/** A TransportError naming the URL and its source when a call never reached the orchestrator's handlers. */
export async function explainEdgeError(err: unknown, target: EdgeTarget, timeoutMs = requestTimeoutOf(target)): Promise<unknown> {
  const failure = await diagnoseTransportError(err, { url: target.url, tls: target.tls });
  if (!failure) return err;
  return new TransportError(transportFailureMessage(failure, target, timeoutMs), failure.kind, target.url, target.source);
}

/** Runs a command body with clients of the orchestrator; errors are one line (or JSON), exit 1. */
export function withEdgeClients(cmd: Command, body: (api: OrchestratorClients, target: EdgeTarget) => Promise<void>): Promise<void> {
  return runCommand(
    "edgectl",
    async () => {
      const target = edgeTarget(cmd);
      const api = edgeClients(target, { interactive: true });
      try {
        await body(api, target);
      } catch (err) {
        throw await explainEdgeError(err, target);
      } finally {
        api.close();
      }
    },
    { format: () => (cmd.opts().output as OutputFormat | undefined) ?? "text" },
  );
}

/** Collects repeatable `--label key=value` options. */
export function collectLabel(value: string, labels: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new Error(`--label: "${value}" is not key=value`);
  return { ...labels, [value.slice(0, eq)]: value.slice(eq + 1) };
}

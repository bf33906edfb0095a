import type { Command } from "commander";
import { createOrchestratorClients, diagnoseTransportError, type OrchestratorClients } from "../../../clients/index.js";
import { configPath, readConfig, type ConfigContext } from "../shared/config.js";
import { runCommand, TransportError, UsageError, type OutputFormat } from "../shared/output.js";
import { transportFailureMessage, waitingNotice } from "../shared/waiting.js";
import { clientTls, clientToken, type ClientTlsFlags } from "../shared/tls-options.js";

export interface GlobalOptions extends ClientTlsFlags {
  orchestratorUrl?: string;
  context?: string;
  output: OutputFormat;
  requestTimeout: number;
}

/** An orchestrator URL and where it came from, for messages about it. */
export interface ResolvedUrl {
  url: string;
  source: string;
}

/** The config context in force: --context (AUTONOMY_CONTEXT), else current-context of the config file. */
export function currentContext(name: string | undefined): { name: string; context: ConfigContext } | undefined {
  const config = readConfig();
  const chosen = name || config["current-context"];
  if (!chosen) return undefined;
  const context = config.contexts?.[chosen];
  if (!context) {
    const known = Object.keys(config.contexts ?? {});
    throw new UsageError(`no context "${chosen}" in ${configPath()}${known.length ? ` (known: ${known.join(", ")})` : ""}`);
  }
  return { name: chosen, context };
}

/**
 * The orchestrator URL: --orchestrator-url, else AUTONOMY_ORCHESTRATOR_URL, else the config
 * context in force, else orchestrator.url in the config file.
 */
export function resolveOrchestratorUrl(flag: string | undefined, contextName?: string): ResolvedUrl {
  if (flag) return { url: flag, source: "from --orchestrator-url" };
  if (process.env.AUTONOMY_ORCHESTRATOR_URL) return { url: process.env.AUTONOMY_ORCHESTRATOR_URL, source: "from AUTONOMY_ORCHESTRATOR_URL" };
  const ctx = currentContext(contextName);
  if (ctx?.context["orchestrator-url"]) return { url: ctx.context["orchestrator-url"], source: `from context "${ctx.name}" of ${configPath()}` };
  const fromFile = readConfig().orchestrator?.url;
  if (typeof fromFile === "string" && fromFile) return { url: fromFile, source: `from orchestrator.url in ${configPath()}` };
  throw new UsageError(
    `no orchestrator URL: pass --orchestrator-url, set AUTONOMY_ORCHESTRATOR_URL, or run ` +
      `\`autonomy config set-context NAME --orchestrator-url URL\` (writes ${configPath()})`,
  );
}

/**
 * Fills the TLS and token flags that neither a flag nor the environment gave from the config
 * context. The context's TLS files go with https:// URLs only: an http:// URL given by a flag or
 * the environment (a cleartext server next to the context's) is reached without them.
 */
function withContextFiles(options: GlobalOptions, url: string): GlobalOptions {
  const ctx = currentContext(options.context)?.context;
  if (!ctx) return options;
  const tls = url.startsWith("https://");
  return {
    ...options,
    // An empty flag or variable counts as not given.
    tokenFile: options.tokenFile || (process.env.AUTONOMY_TOKEN ? undefined : ctx["token-file"]),
    tlsCaFile: options.tlsCaFile || (tls ? ctx["tls-ca-file"] : undefined),
    tlsCertFile: options.tlsCertFile || (tls ? ctx["tls-cert-file"] : undefined),
    tlsKeyFile: options.tlsKeyFile || (tls ? ctx["tls-key-file"] : undefined),
  };
}

/** The --output of a command: given after the command, else the global one. */
export function outputOf(cmd: Command): OutputFormat {
  const local = cmd.opts().output as OutputFormat | undefined;
  return local ?? (cmd.optsWithGlobals().output as OutputFormat | undefined) ?? "text";
}

export interface CommandContext {
  options: GlobalOptions;
  target: () => ResolvedUrl;
  clients: () => OrchestratorClients;
  /** Turns an error of a call into a TransportError naming the URL when it never reached the server's handlers. */
  explain: (err: unknown) => Promise<unknown>;
}

/** Global options and connected clients for a command; the caller closes the clients. */
export function commandContext(cmd: Command): CommandContext {
  const raw = cmd.optsWithGlobals() as GlobalOptions;
  const options: GlobalOptions = { ...raw, output: outputOf(cmd) };
  let resolved: ResolvedUrl | undefined;
  let files: GlobalOptions | undefined;
  const target = () => (resolved ??= resolveOrchestratorUrl(options.orchestratorUrl, options.context));
  const withFiles = () => (files ??= withContextFiles(options, target().url));
  return {
    options,
    target,
    clients: () => {
      const { url } = target();
      return createOrchestratorClients({
        baseUrl: url,
        timeoutMs: options.requestTimeout,
        operator: process.env.AUTONOMY_OPERATOR || undefined,
        tls: clientTls(withFiles()),
        token: clientToken(withFiles()),
        interceptors: [waitingNotice(url)],
      });
    },
    explain: async (err) => {
      if (!resolved) return err;
      const failure = await diagnoseTransportError(err, { url: resolved.url, tls: clientTls(withFiles()) });
      if (!failure) return err;
      const message = transportFailureMessage(failure, resolved, options.requestTimeout);
      return new TransportError(message, failure.kind, resolved.url, resolved.source);
    },
  };
}

/**
 * Runs a command body with connected clients and the global options: errors go to stderr
 * as one line with exit status 1, and the clients are closed whatever happens.
 */
export function withClients(
  cmd: Command,
  body: (api: OrchestratorClients, options: GlobalOptions) => Promise<void>,
): Promise<void> {
  return runCommand(
    "autonomy",
    async () => {
      const ctx = commandContext(cmd);
      const api = ctx.clients();
      try {
        await body(api, ctx.options);
      } catch (err) {
        throw await ctx.explain(err);
      } finally {
        api.close();
      }
    },
    { format: () => outputOf(cmd) },
  );
}

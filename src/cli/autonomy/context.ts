import type { Command } from "commander";
import { createOrchestratorClients, type OrchestratorClients } from "../../../clients/index.js";
import { configPath, getConfigValue, readConfig } from "../shared/config.js";
import { runCommand, type OutputFormat } from "../shared/output.js";
import { clientTls, clientToken, type ClientTlsFlags } from "../shared/tls-options.js";

export interface GlobalOptions extends ClientTlsFlags {
  orchestratorUrl?: string;
  output: OutputFormat;
}

/** The orchestrator URL: --orchestrator-url, else AUTONOMY_ORCHESTRATOR_URL, else the config file. */
export function resolveOrchestratorUrl(flag: string | undefined): string {
  if (flag) return flag;
  if (process.env.AUTONOMY_ORCHESTRATOR_URL) return process.env.AUTONOMY_ORCHESTRATOR_URL;
  const fromFile = getConfigValue(readConfig(), "orchestrator.url");
  if (typeof fromFile === "string" && fromFile) return fromFile;
  throw new Error(
    `no orchestrator URL: pass --orchestrator-url, set AUTONOMY_ORCHESTRATOR_URL, or run ` +
      `\`autonomy config set orchestrator.url URL\` (writes ${configPath()})`,
  );
}

/** Global options and connected clients for a command; the caller closes the clients. */
export function commandContext(cmd: Command): { options: GlobalOptions; clients: () => OrchestratorClients } {
  const options = cmd.optsWithGlobals() as GlobalOptions;
  // An --output given after the command wins over the global one (whose default is text).
  const local = cmd.opts().output as OutputFormat | undefined;
  if (local === "text" || local === "json") options.output = local;
  return {
    options,
    clients: () => createOrchestratorClients({
        baseUrl: resolveOrchestratorUrl(options.orchestratorUrl),
        timeoutMs: 30_000,
        operator: process.env.AUTONOMY_OPERATOR || undefined,
        tls: clientTls(options),
        token: clientToken(options),
      }),
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
  return runCommand("autonomy", async () => {
    const { options, clients } = commandContext(cmd);
    const api = clients();
    try {
      await body(api, options);
    } finally {
      api.close();
    }
  });
}

import { Command, Option } from "commander";
import { createOrchestratorClients, type OrchestratorClients } from "../../../clients/index.js";
import { defaultStateDir } from "../../agent/state.js";
import { addClientTlsOptions, clientTls, clientToken, type ClientTlsFlags } from "../shared/tls-options.js";

export interface EdgeOptions extends ClientTlsFlags {
  orchestratorUrl?: string;
  stateDir: string;
}

/** The global options of edgectl, shared by every command. */
export function addEdgeGlobalOptions(cmd: Command): Command {
  return addClientTlsOptions(cmd)
    .addOption(new Option("--orchestrator-url <url>", "orchestrator base URL").env("AUTONOMY_ORCHESTRATOR_URL"))
    .addOption(
      new Option("--state-dir <dir>", "where the agent keeps what the node runs")
        .env("AUTONOMY_EDGE_STATE_DIR")
        .default(defaultStateDir(), "$XDG_STATE_HOME/autonomyops/edgectl"),
    );
}

/** Clients for the orchestrator the options name; the caller closes them. */
export function edgeClients(options: EdgeOptions): OrchestratorClients {
  if (!options.orchestratorUrl) throw new Error("no orchestrator URL: pass --orchestrator-url or set AUTONOMY_ORCHESTRATOR_URL");
  return createOrchestratorClients({ baseUrl: options.orchestratorUrl, timeoutMs: 30_000, tls: clientTls(options), token: clientToken(options) });
}

/** Collects repeatable `--label key=value` options. */
export function collectLabel(value: string, labels: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new Error(`--label: "${value}" is not key=value`);
  return { ...labels, [value.slice(0, eq)]: value.slice(eq + 1) };
}

import { Command } from "commander";
import type { OrchestratorClients } from "../../../clients/index.js";
import { buildInfo } from "../../build-info.js";
import { SERVER_VERSION_HEADER } from "../../services/health-service.js";
import { escapeControl, printValue, type OutputFormat } from "./output.js";

/** What a client knows of the orchestrator it talks to. */
export interface ServerVersion {
  url: string;
  version?: string;
  error?: string;
}

/** Asks the orchestrator's health check for its version (a response header). */
export async function serverVersion(api: OrchestratorClients, url: string, timeoutMs = 5000): Promise<ServerVersion> {
  let version: string | undefined;
  await api.health.check({}, { onHeader: (h) => (version = h.get(SERVER_VERSION_HEADER) ?? undefined), timeoutMs });
  return { url, version: version ?? "unknown (older than this client)" };
}

/**
 * `PROGRAM version`: this program's version and build, and the server's version when an
 * orchestrator URL is known and answers.
 */
export function clientVersionCommand(
  program: string,
  server: (cmd: Command) => Promise<ServerVersion | undefined>,
  format: (cmd: Command) => OutputFormat,
): Command {
  return new Command("version")
    .description("Print this program's version and build, and the orchestrator's version when it can be reached")
    .action(async (_opts: unknown, cmd: Command) => {
      const info = buildInfo();
      const srv = await server(cmd).catch((err: unknown) => ({ url: "", error: (err as Error).message }) as ServerVersion);
      const fmt = format(cmd);
      if (fmt !== "text") {
        printValue(fmt, { client: { program, ...info }, server: srv ?? null });
        return;
      }
      process.stdout.write(
        `${program} ${info.version} (build ${info.build_sha.slice(0, 12)}, ${info.build_date}, ${info.platform})\n` +
          (srv === undefined
            ? "server: no orchestrator URL configured\n"
            : srv.version
              ? `server: ${escapeControl(srv.version)} at ${srv.url}\n`
              : `server: not reachable (${escapeControl(srv.error ?? "")})\n`),
      );
    });
}

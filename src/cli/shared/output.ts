import { ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";

export type OutputFormat = "text" | "json";
export const OUTPUT_FORMATS: readonly OutputFormat[] = ["text", "json"];

/** Left-aligned columns separated by two spaces, with a header row. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** One line for stderr: the RPC code and message of a server error, or the message of a local one. */
export function describeError(err: unknown): string {
  if (err instanceof ConnectError) return `${codeToString(err.code)}: ${err.rawMessage}`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs a command body: errors go to stderr as one line and exit 1, so scripts can trust the
 * exit code (usage errors exit 2, from the CLI framework).
 */
export async function runCommand(program: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    process.stderr.write(`${program}: error: ${describeError(err)}\n`);
    process.exitCode = 1;
  }
}

import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
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

/** Writes a message as indented JSON with the proto field names, as the REST API answers. */
export function printJson<D extends DescMessage>(schema: D, message: MessageShape<D>): void {
  const json = toJson(schema, message, { useProtoFieldName: true, alwaysEmitImplicit: true });
  process.stdout.write(JSON.stringify(json, null, 2) + "\n");
}

/** An RFC 3339 time, or "-" when unset. */
export function formatTime(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString() : "-";
}

/** How long ago a time was, for tables: "12s ago", "3m ago", "never". */
export function formatAge(ts: Timestamp | undefined, nowMs = Date.now()): string {
  if (!ts) return "never";
  const s = Math.max(0, Math.round((nowMs - timestampDate(ts).getTime()) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

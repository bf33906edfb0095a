import { toJson, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import YAML from "yaml";

export type OutputFormat = "text" | "json" | "yaml";
export const OUTPUT_FORMATS: readonly OutputFormat[] = ["text", "json", "yaml"];

/**
 * Makes a string from the server safe to print on a terminal: control characters (ESC, carriage
 * return, newline, tab, DEL, the C1 range) become visible escapes such as `\x1b` and `\r`. A node
 * controls its labels, its agent version and its ack messages; printed raw, an ESC sequence or a
 * carriage return could rewrite what an operator sees. Every text output goes through this.
 */
export function escapeControl(value: string): string {
  return value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    switch (c) {
      case "\n":
        return "\\n";
      case "\r":
        return "\\r";
      case "\t":
        return "\\t";
      default: {
        const code = c.charCodeAt(0);
        return code > 0xff ? `\\u${code.toString(16).padStart(4, "0")}` : `\\x${code.toString(16).padStart(2, "0")}`;
      }
    }
  });
}

/** Left-aligned columns separated by two spaces, with a header row; every cell escaped. */
export function formatTable(headers: string[], rows: string[][]): string {
  const safe = rows.map((r) => r.map((c) => escapeControl(c ?? "")));
  const widths = headers.map((h, i) => Math.max(h.length, ...safe.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(headers), ...safe.map(line)].join("\n") + "\n";
}

/** Aligned `label  value` lines, values escaped. */
export function formatFields(fields: [string, string][]): string {
  const width = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${k.padEnd(width)}  ${escapeControl(v)}`.trimEnd()).join("\n") + "\n";
}

/** A usage error found after parsing (a bad value, a missing choice): exit status 2, like the parser's own. */
export class UsageError extends Error {}

/**
 * A call that never reached the orchestrator's handlers: the message names the URL and where it
 * came from; `kind` tells why (see clients/diagnose.ts).
 */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly kind: string,
    readonly url: string,
    readonly urlSource: string,
  ) {
    super(message);
  }
}

/** The RPC code of an error, or what kind of local error it is. */
function errorCode(err: unknown): string {
  if (err instanceof ConnectError) return codeToString(err.code);
  if (err instanceof TransportError) return "unavailable";
  if (err instanceof UsageError) return "usage";
  return "error";
}

/** One line for stderr: the RPC code and message of a server error, or the message of a local one. */
export function describeError(err: unknown): string {
  if (err instanceof ConnectError) return escapeControl(`${codeToString(err.code)}: ${err.rawMessage}`);
  return escapeControl(err instanceof Error ? err.message : String(err));
}

/** Where the format of the error output comes from: the command's --output, when it has been parsed. */
export interface RunSettings {
  format?: () => OutputFormat | undefined;
}

/** Writes an error: one line on stderr, or with --output json|yaml a document `{"error": {...}}` there. */
export function reportError(program: string, err: unknown, format: OutputFormat = "text"): void {
  const exitCode = err instanceof UsageError ? 2 : 1;
  if (format === "text") {
    process.stderr.write(`${program}: error: ${describeError(err)}\n`);
  } else {
    const error: Record<string, string> = {
      code: errorCode(err),
      message: err instanceof ConnectError ? err.rawMessage : err instanceof Error ? err.message : String(err),
    };
    if (err instanceof TransportError) Object.assign(error, { reason: err.kind, url: err.url, url_source: err.urlSource });
    process.stderr.write(format === "json" ? JSON.stringify({ error }) + "\n" : YAML.stringify({ error }));
  }
  process.exitCode = exitCode;
}

/**
 * Runs a command body: errors go to stderr as one line (JSON with --output json) and exit 1, so
 * scripts can trust the exit code (usage errors exit 2).
 */
export async function runCommand(program: string, body: () => Promise<void>, settings: RunSettings = {}): Promise<void> {
  try {
    await body();
  } catch (err) {
    let format: OutputFormat = "text";
    try {
      format = settings.format?.() ?? "text";
    } catch {
      // The options themselves are what failed: report in text.
    }
    reportError(program, err, format);
  }
}

/** Writes a plain JSON value as JSON or YAML. */
export function printValue(format: OutputFormat, value: unknown): void {
  if (format === "yaml") process.stdout.write(YAML.stringify(value));
  else process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

/** The proto JSON of a message, with the proto field names, as the REST API answers. */
export function messageJson<D extends DescMessage>(schema: D, message: MessageShape<D>): JsonValue {
  return toJson(schema, message, { useProtoFieldName: true, alwaysEmitImplicit: true });
}

/** Writes a message as JSON (indented) or YAML, with the proto field names. */
export function printMessage<D extends DescMessage>(format: OutputFormat, schema: D, message: MessageShape<D>): void {
  printValue(format === "text" ? "json" : format, messageJson(schema, message));
}

/** Writes a message as indented JSON with the proto field names, as the REST API answers. */
export function printJson<D extends DescMessage>(schema: D, message: MessageShape<D>): void {
  printMessage("json", schema, message);
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

/** The one subject of a command: its positional argument, or the older --flag spelling of it. */
export function subjectOf(positional: string | undefined, flag: string | undefined, what: string, usage: string): string {
  if (positional !== undefined && flag !== undefined && positional !== flag) {
    throw new UsageError(`two ${what}s given ("${positional}" and "${flag}"); give one: ${usage}`);
  }
  const value = positional ?? flag;
  if (value === undefined || value === "") throw new UsageError(`missing the ${what}: ${usage}`);
  return value;
}

import { readFileSync } from "node:fs";
import { fromJson, ScalarType, type DescField, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import YAML, { isMap, isScalar, isSeq, LineCounter, type Node as YamlNode } from "yaml";
import { fileErrorReason } from "../../files.js";
import { parseDuration } from "./parse.js";
import { UsageError } from "./output.js";

/** A problem in a release or plan file: `FILE:LINE:COL: path: what is wrong`. Usage, so exit status 2. */
export class SpecFileError extends UsageError {}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

/** ` (did you mean "channel"?)` for a near miss among the candidates, else the list of them. */
export function suggest(word: string, candidates: readonly string[]): string {
  const best = candidates
    .map((c) => ({ c, d: distance(word.toLowerCase(), c.toLowerCase()) }))
    .sort((x, y) => x.d - y.d)[0];
  if (best && best.d <= Math.max(2, Math.floor(word.length / 3))) return ` (did you mean "${best.c}"?)`;
  return ` (expected one of: ${candidates.join(", ")})`;
}

const TRUE = new Set(["true", "yes", "on", "y"]);
const FALSE = new Set(["false", "no", "off", "n"]);

/** Fields (by proto name) whose value is a number of seconds: they also take durations ("60s", "10m"). */
const isSeconds = (f: DescField) => f.name === "seconds" || f.name.endsWith("_seconds");

/** Extra checks of string fields, by message and field proto name. */
export type FieldChecks = Record<string, (value: string) => string | undefined>;

interface Walk {
  file: string;
  lines: LineCounter;
  checks: FieldChecks;
}

function fail(w: Walk, node: YamlNode | undefined | null, path: string, message: string): never {
  const at = node?.range ? w.lines.linePos(node.range[0]) : undefined;
  throw new SpecFileError(`${w.file}${at ? `:${at.line}:${at.col}` : ""}: ${path ? `${path}: ` : ""}${message}`);
}

function describeNode(node: YamlNode | null | undefined): string {
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) return node.value === null ? "empty" : `"${String(node.value)}"`;
  return "empty";
}

function scalarJson(w: Walk, field: DescField & { scalar: ScalarType }, node: YamlNode | null, path: string, owner: string): JsonValue {
  if (!isScalar(node) || node.value === null) fail(w, node, path, `expected ${expectation(field)}, got ${describeNode(node)}`);
  const text = String(node.value).trim();
  switch (field.scalar) {
    case ScalarType.STRING: {
      const problem = w.checks[`${owner}.${field.name}`]?.(text);
      if (problem) fail(w, node, path, problem);
      return String(node.value);
    }
    case ScalarType.BOOL:
      if (TRUE.has(text.toLowerCase())) return true;
      if (FALSE.has(text.toLowerCase())) return false;
      return fail(w, node, path, `expected true or false (yes/no), got "${text}"`);
    case ScalarType.INT32:
    case ScalarType.UINT32:
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT32:
    case ScalarType.SINT64: {
      if (/^-?\d+$/.test(text)) return Number(text);
      if (isSeconds(field)) {
        try {
          const ms = parseDuration(text);
          if (ms % 1000 === 0) return ms / 1000;
        } catch {
          // Fall through to the message below.
        }
      }
      return fail(w, node, path, `expected ${expectation(field)}, got "${text}"`);
    }
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT: {
      const percent = /^(-?\d+(?:\.\d+)?)%$/.exec(text);
      if (percent && field.name === "percent") return Number(percent[1]);
      if (/^-?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i.test(text)) return Number(text);
      return fail(w, node, path, `expected ${expectation(field)}, got "${text}"`);
    }
    default:
      return String(node.value);
  }
}

function expectation(field: DescField): string {
  if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) return "a mapping";
  if (field.fieldKind === "scalar" || field.fieldKind === "list") {
    const s = field.fieldKind === "scalar" ? field.scalar : field.listKind === "scalar" ? field.scalar : undefined;
    if (s === ScalarType.BOOL) return "true or false";
    if (s === ScalarType.DOUBLE || s === ScalarType.FLOAT) return field.name === "percent" ? "a number (50 or 50%)" : "a number";
    if (s === ScalarType.STRING) return "a text value";
    if (s !== undefined) return isSeconds(field) ? "a whole number of seconds or a duration (600, 10m, 1h)" : "a whole number";
  }
  return "a value";
}

function messageJson(w: Walk, schema: DescMessage, node: YamlNode | null, path: string): Record<string, JsonValue> {
  if (!isMap(node)) fail(w, node, path, `expected a mapping (${schema.fields.map((f) => f.name).join(", ")}), got ${describeNode(node)}`);
  const out: Record<string, JsonValue> = {};
  const names = schema.fields.map((f) => f.name);
  for (const pair of node.items) {
    const keyNode = pair.key as YamlNode | null;
    const key = isScalar(keyNode) ? String(keyNode.value) : "";
    const field = schema.fields.find((f) => f.name === key || f.jsonName === key);
    const fieldPath = path ? `${path}.${key}` : key;
    if (!field) fail(w, keyNode, path, `unknown key "${key}"${suggest(key, names)}`);
    const value = pair.value as YamlNode | null;
    if (isScalar(value) && value.value === null) continue; // `notes:` with nothing after it: unset
    switch (field.fieldKind) {
      case "scalar":
        out[field.name] = scalarJson(w, field, value, fieldPath, schema.name);
        break;
      case "message":
        if (field.message.typeName === "google.protobuf.Timestamp") {
          if (!isScalar(value)) fail(w, value, fieldPath, "expected an RFC 3339 time (2026-11-22T10:00:00Z)");
          out[field.name] = String(value.value);
        } else out[field.name] = messageJson(w, field.message, value, fieldPath);
        break;
      case "list": {
        if (!isSeq(value)) fail(w, value, fieldPath, `expected a list, got ${describeNode(value)}`);
        out[field.name] = value.items.map((item, i) => {
          const itemPath = `${fieldPath}[${i}]`;
          const itemNode = item as YamlNode | null;
          if (field.listKind === "message") return messageJson(w, field.message, itemNode, itemPath);
          if (field.listKind === "scalar") return scalarJson(w, { ...field, fieldKind: "scalar", scalar: field.scalar } as never, itemNode, itemPath, schema.name);
          return fail(w, itemNode, itemPath, "unsupported value");
        });
        break;
      }
      case "map": {
        if (!isMap(value)) fail(w, value, fieldPath, `expected a mapping of key: value, got ${describeNode(value)}`);
        const map: Record<string, JsonValue> = {};
        for (const entry of value.items) {
          const k = isScalar(entry.key) ? String(entry.key.value) : "";
          const v = entry.value as YamlNode | null;
          if (!isScalar(v) || v.value === null || typeof v.value === "object") fail(w, v, `${fieldPath}.${k}`, "expected a text value");
          map[k] = String(v.value);
        }
        out[field.name] = map;
        break;
      }
      default:
        fail(w, value, fieldPath, "unsupported value");
    }
  }
  return out;
}

/**
 * Reads a YAML or JSON file into a message, saying what people mean: errors name the file, the
 * line and column, the field path (`stages[1].gates[0].seconds`) and, for an unknown key, the
 * nearest known one. Every scalar is read as written (`1.10` stays "1.10" in a text field);
 * booleans take true/false/yes/no; fields counted in seconds take durations (`60s`, `10m`).
 */
export function readSpecFile<D extends DescMessage>(file: string, schema: D, what: string, checks: FieldChecks = {}): MessageShape<D> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new SpecFileError(`${file}: ${fileErrorReason(err)}`);
  }
  const lines = new LineCounter();
  const doc = YAML.parseDocument(text, { schema: "failsafe", lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const w: Walk = { file, lines, checks };
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const at = lines.linePos(e.pos[0]);
    throw new SpecFileError(`${file}:${at.line}:${at.col}: not valid YAML or JSON: ${e.message.split("\n")[0]}`);
  }
  if (doc.contents === null) throw new SpecFileError(`${file}: the file is empty; expected ${what}`);
  if (!isMap(doc.contents)) fail(w, doc.contents as YamlNode, "", `expected ${what}, got ${describeNode(doc.contents as YamlNode)}`);
  const json = messageJson(w, schema, doc.contents as YamlNode, "");
  try {
    return fromJson(schema, json);
  } catch (err) {
    throw new SpecFileError(`${file}: ${(err as Error).message}`);
  }
}

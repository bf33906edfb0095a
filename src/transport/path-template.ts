/**
 * HTTP path templates of `google.api.http` rules (google/api/http.proto):
 *
 *   Template = "/" Segments [ Verb ] ;
 *   Segments = Segment { "/" Segment } ;
 *   Segment  = "*" | "**" | LITERAL | Variable ;
 *   Variable = "{" FieldPath [ "=" Segments ] "}" ;
 *   Verb     = ":" LITERAL ;
 *
 * A template compiles to an anchored regular expression with one group per variable.
 */
export interface PathTemplate {
  readonly source: string;
  /** Field paths of the variables, in group order, e.g. ["release_id", "node_id"]. */
  readonly fields: readonly string[];
  /** Higher wins when several templates match one path: literal segments count most. */
  readonly specificity: number;
  /**
   * The template's first two segments when both are literal and more follows or no verb ends
   * the second ("/v1/releases"): only a path that begins with exactly these can match.
   */
  readonly head?: string;
  match(path: string): Record<string, string> | undefined;
}

export class PathTemplateError extends Error {}

/** The first two segments of a request path ("/v1/releases" of "/v1/releases/r1/acks"), as PathTemplate.head is written. */
export function pathHead(path: string): string {
  const second = path.indexOf("/", 1);
  if (second < 0) return path;
  const third = path.indexOf("/", second + 1);
  return third < 0 ? path : path.slice(0, third);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Splits on "/" outside braces. */
function splitSegments(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of s) {
    if (ch === "{") depth++;
    if (ch === "}") depth--;
    if (ch === "/" && depth === 0) {
      out.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  out.push(current);
  return out;
}

function segmentsRegExp(segments: string[], source: string, score: { value: number }): string {
  return segments
    .map((seg) => {
      if (seg === "") throw new PathTemplateError(`empty segment in path template ${source}`);
      if (seg === "*") return (score.value += 2), "[^/]+";
      if (seg === "**") return (score.value += 1), ".+";
      if (/[{}*]/.test(seg)) throw new PathTemplateError(`bad segment "${seg}" in path template ${source}`);
      score.value += 4;
      return escapeRegExp(seg);
    })
    .join("/");
}

export function compilePathTemplate(source: string): PathTemplate {
  if (!source.startsWith("/")) throw new PathTemplateError(`path template must start with "/": ${source}`);
  let body = source.slice(1);
  let verb = "";
  const lastSlash = body.lastIndexOf("/");
  const colon = body.indexOf(":", lastSlash + 1);
  if (colon >= 0 && !body.slice(colon).includes("}")) {
    verb = body.slice(colon + 1);
    body = body.slice(0, colon);
  }
  const fields: string[] = [];
  const multi: boolean[] = [];
  const score = { value: 0 };
  const segments = splitSegments(body);
  const parts = segments.map((seg) => {
    const variable = /^\{([A-Za-z_][A-Za-z0-9_.]*)(?:=(.+))?\}$/.exec(seg);
    if (!variable) return segmentsRegExp([seg], source, score);
    fields.push(variable[1]);
    const inner = variable[2] ?? "*";
    multi.push(inner.includes("/") || inner.includes("**"));
    return `(${segmentsRegExp(splitSegments(inner), source, score)})`;
  });
  const regex = new RegExp(`^/${parts.join("/")}${verb ? ":" + escapeRegExp(verb) : ""}$`);
  const literal = (seg: string | undefined) => seg !== undefined && seg !== "" && !/[{}*]/.test(seg);
  const headed = literal(segments[0]) && literal(segments[1]) && (segments.length > 2 || verb === "");
  return {
    source,
    fields,
    specificity: score.value,
    head: headed ? `/${segments[0]}/${segments[1]}` : undefined,
    match(path) {
      const m = regex.exec(path);
      if (!m) return undefined;
      const values: Record<string, string> = {};
      for (let i = 0; i < fields.length; i++) {
        const raw = m[i + 1];
        // A single-segment variable is one percent-decoded value; a multi-segment one keeps its slashes.
        values[fields[i]] = multi[i] ? raw.split("/").map(decodeURIComponent).join("/") : decodeURIComponent(raw);
      }
      return values;
    },
  };
}

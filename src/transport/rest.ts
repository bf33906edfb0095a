import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import {
  create,
  fromJson,
  getOption,
  hasOption,
  ScalarType,
  toJson,
  type DescField,
  type DescMessage,
  type DescMethod,
  type JsonObject,
  type JsonValue,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextKey,
  createMethodImplSpec,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
} from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { http } from "../../gen/google/api/annotations_pb.js";
import { PayloadTooLargeError, ValidationError } from "../domain/errors.js";
import { requestInfoKey } from "./context.js";
import { domainToConnectError, restErrorBody, restStatus } from "./errors.js";
import { compilePathTemplate, pathHead, type PathTemplate } from "./path-template.js";
import { jsonText } from "../domain/json-text.js";
import { invokeUnary } from "./unary-adapter.js";
import type { JsonTextImpl, ServiceEntry } from "./services.js";

export type NodeRequest = IncomingMessage | Http2ServerRequest;
export type NodeResponse = ServerResponse | Http2ServerResponse;

/** A path answered outside the RPCs (metrics, CRL); it shares 404/405 handling with the RPC paths. */
export interface PlainRoute {
  method: string;
  path: string;
  handle(req: NodeRequest, res: NodeResponse): void | Promise<void>;
}

/** One REST binding of an RPC: a `google.api.http` rule or one of its `additional_bindings`. */
interface RpcRoute {
  kind: "rpc";
  method: string;
  template: PathTemplate;
  /** "*" (the whole body is the request), a field name, or "" (no body: query parameters). */
  body: string;
  responseBody: string;
  spec: UnarySpec;
  /**
   * When the service writes this RPC's REST answer itself (ServiceEntry.jsonText): the same
   * call through the same interceptors, whose implementation leaves the JSON text in the
   * request's slot (writtenTextKey) and hands the interceptors an empty response message.
   */
  textSpec?: UnarySpec;
}

/** Where a JSON text implementation leaves the answer it wrote, per request. */
const writtenTextKey = createContextKey<{ text?: string } | undefined>(undefined, { description: "REST answer written as JSON text" });

type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;

type Route = RpcRoute | (PlainRoute & { kind: "plain"; template: PathTemplate });

const PATTERN_METHOD = { get: "GET", put: "PUT", post: "POST", delete: "DELETE", patch: "PATCH" } as const;

/** The REST bindings declared on the RPCs of the given services, read from their options at run time. */
export function collectRpcRoutes(services: readonly ServiceEntry[]): RpcRoute[] {
  const routes: RpcRoute[] = [];
  for (const { service, impl, jsonText: textImpls } of services) {
    for (const method of service.methods) {
      if (!hasOption(method, http)) continue;
      const fn = (impl as Record<string, unknown>)[method.localName];
      if (typeof fn !== "function") continue;
      const spec = createMethodImplSpec(method, fn.bind(impl) as never);
      // REST bindings on streaming RPCs are not transcoded: JSON bodies are single messages.
      if (spec.kind !== "unary") continue;
      const rule = getOption(method, http);
      const textImpl = (textImpls as Record<string, JsonTextImpl | undefined> | undefined)?.[method.localName];
      let textSpec: UnarySpec | undefined;
      if (textImpl) {
        if (rule.responseBody || rule.additionalBindings.some((b) => b.responseBody)) {
          throw new Error(`${method.parent.typeName}.${method.name}: a JSON text implementation cannot serve a response_body binding`);
        }
        const answer = async (input: never, context: HandlerContext) => {
          const slot = context.values.get(writtenTextKey);
          if (!slot) throw new Error("a JSON text implementation was called outside the REST transcoder");
          slot.text = await textImpl(input, context);
          return create(method.output);
        };
        textSpec = createMethodImplSpec(method, answer as never) as UnarySpec;
      }
      for (const binding of [rule, ...rule.additionalBindings]) {
        const pattern = binding.pattern;
        if (pattern.case === undefined) continue;
        const [verb, path] =
          pattern.case === "custom"
            ? [pattern.value.kind.toUpperCase(), pattern.value.path]
            : [PATTERN_METHOD[pattern.case], pattern.value];
        routes.push({
          kind: "rpc",
          method: verb,
          template: compilePathTemplate(path),
          body: binding.body,
          responseBody: binding.responseBody,
          spec,
          textSpec,
        });
      }
    }
  }
  return routes;
}

/** Finds a field by dotted path of proto or JSON names. */
function findField(message: DescMessage, path: string[]): DescField | undefined {
  let current: DescMessage | undefined = message;
  let field: DescField | undefined;
  for (const name of path) {
    if (!current) return undefined;
    field = current.fields.find((f) => f.name === name || f.jsonName === name);
    if (!field) return undefined;
    current = field.fieldKind === "message" ? field.message : undefined;
  }
  return field;
}

/** Sets (or, for a repeated field, appends to) the value at a dotted field path, creating objects on the way. */
function setPath(target: JsonObject, path: string[], value: JsonValue, append = false): void {
  let obj = target;
  for (const key of path.slice(0, -1)) {
    const next = obj[key];
    if (typeof next !== "object" || next === null || Array.isArray(next)) obj[key] = {};
    obj = obj[key] as JsonObject;
  }
  const last = path[path.length - 1];
  if (append) ((obj[last] ??= []) as JsonValue[]).push(value);
  else obj[last] = value;
}

/** A query-string value as the JSON the field's type expects (protobuf JSON accepts numbers as strings). */
function queryValue(field: DescField, raw: string): JsonValue {
  const scalar =
    field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar") ? field.scalar : undefined;
  if (scalar === ScalarType.BOOL) {
    if (raw === "true" || raw === "1") return true;
    if (raw === "false" || raw === "0") return false;
    throw new ValidationError(field.name, `must be true or false, got "${raw}"`);
  }
  return raw;
}

function applyQuery(input: JsonObject, message: DescMessage, query: URLSearchParams, bound: Set<string>): void {
  for (const [key, raw] of query) {
    if (bound.has(key)) continue;
    const path = key.split(".");
    const field = findField(message, path);
    // Scalars, enums and well-known types (a Timestamp as RFC 3339, say) can come from a query string.
    const queryable =
      field !== undefined &&
      field.fieldKind !== "map" &&
      (field.fieldKind !== "message" || field.message.typeName.startsWith("google.protobuf."));
    if (!queryable) {
      throw new ValidationError(key, "unknown query parameter");
    }
    setPath(input, path, queryValue(field, raw), field.fieldKind === "list");
  }
}

/**
 * Locates a JSON decoding failure inside a repeated message field, so that the error names
 * the element (`events[3]: ...`) and not only the message type.
 */
function locateDecodeError(message: DescMessage, json: JsonObject, err: unknown): string {
  for (const field of message.fields) {
    const value = json[field.name] ?? json[field.jsonName];
    if (field.fieldKind !== "list" || field.listKind !== "message" || !Array.isArray(value)) continue;
    for (let i = 0; i < value.length; i++) {
      try {
        fromJson(field.message, value[i]);
      } catch (inner) {
        return `${field.name}[${i}]: ${(inner as Error).message}`;
      }
    }
  }
  return (err as Error).message;
}

async function readBody(req: NodeRequest, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (declared > limit) throw new PayloadTooLargeError(`request body: larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new PayloadTooLargeError(`request body: larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

const requestHeaderCache = new WeakMap<NodeRequest, Headers>();

/**
 * A request's headers as a Headers object (pseudo-headers left out), made once per request:
 * the gate and the transcoder both read them. Connect makes its own from the request.
 */
export function requestHeaders(req: NodeRequest): Headers {
  let headers = requestHeaderCache.get(req);
  if (headers) return headers;
  headers = new Headers();
  for (const [key, value] of Object.entries(req.headers)) {
    if (key.startsWith(":") || value === undefined) continue;
    headers.set(key, Array.isArray(value) ? value.join(", ") : value);
  }
  requestHeaderCache.set(req, headers);
  return headers;
}

/**
 * The context of a transcoded call, as Connect's createHandlerContext makes it for a call
 * without a deadline, with one abort controller where that one links three (a REST call has
 * no deadline header and no request signal to link) and the request headers as they are.
 */
function restContext(method: DescMethod, req: NodeRequest, url: URL, contextValues: ContextValues): HandlerContext & { abort(reason?: unknown): void } {
  const controller = new AbortController();
  return {
    service: method.parent,
    method,
    protocolName: "rest",
    requestMethod: req.method ?? "GET",
    url: url.toString(),
    signal: controller.signal,
    timeoutMs: () => undefined,
    requestHeader: requestHeaders(req),
    responseHeader: new Headers(),
    responseTrailer: new Headers(),
    values: contextValues,
    abort: (reason) => controller.abort(reason),
  };
}

function sendJson(res: NodeResponse, status: number, body: string, extra?: Headers): void {
  const headers: Record<string, string> = { "content-type": "application/json" };
  extra?.forEach((value, key) => {
    headers[key] = value;
  });
  (res as ServerResponse).writeHead(status, headers);
  res.end(body);
}

/** Routes by the head of their template (PathTemplate.head), so a request tries only the few that can match it. */
class RouteTable<R extends { method: string; template: PathTemplate }> {
  private readonly byHead = new Map<string, R[]>();
  private readonly headless: R[] = [];
  /** Declaration order: of two routes as specific as each other, the one declared first wins. */
  private readonly order = new Map<R, number>();

  constructor(private readonly routes: readonly R[]) {
    for (const [i, route] of routes.entries()) {
      this.order.set(route, i);
      const head = route.template.head;
      if (head === undefined) this.headless.push(route);
      else {
        let list = this.byHead.get(head);
        if (!list) this.byHead.set(head, (list = []));
        list.push(route);
      }
    }
  }

  /** The most specific route for a method and path, and (when none) every method the path allows. */
  match(method: string | undefined, pathname: string): { best?: { route: R; vars: Record<string, string> }; allowed: Set<string> } {
    const candidates = this.byHead.get(pathHead(pathname));
    const best = this.bestOf(candidates, method, pathname, this.bestOf(this.headless, method, pathname, undefined));
    if (best) return { best, allowed: new Set([best.route.method]) };
    const allowed = new Set<string>();
    for (const route of this.routes) if (matchVars(route, pathname)) allowed.add(route.method);
    return { allowed };
  }

  private bestOf(routes: readonly R[] | undefined, method: string | undefined, pathname: string, best: { route: R; vars: Record<string, string> } | undefined) {
    for (const route of routes ?? []) {
      if (route.method !== method || (best && !this.beats(route, best.route))) continue;
      const vars = matchVars(route, pathname);
      if (vars) best = { route, vars };
    }
    return best;
  }

  private beats(route: R, than: R): boolean {
    const a = route.template.specificity;
    const b = than.template.specificity;
    return a > b || (a === b && this.order.get(route)! < this.order.get(than)!);
  }
}

function matchVars(route: { template: PathTemplate }, pathname: string): Record<string, string> | undefined {
  try {
    return route.template.match(pathname);
  } catch {
    throw new ValidationError("path", "malformed percent-encoding");
  }
}

/** The RPC a REST request calls, with its route label, without reading the request; undefined when it calls none. */
export type RestResolver = (method: string | undefined, pathname: string) => { method: DescMethod; route: string } | undefined;

/** Resolves REST requests to the RPCs of `services` exactly as the transcoder does. */
export function createRestResolver(services: readonly ServiceEntry[]): RestResolver {
  const routes = new RouteTable(collectRpcRoutes(services));
  return (method, pathname) => {
    let match;
    try {
      match = routes.match(method, pathname).best;
    } catch {
      return undefined; // the transcoder answers the malformed path
    }
    return match && { method: match.route.spec.method, route: `${match.route.method} ${match.route.template.source}` };
  };
}

export interface RestHandlerOptions {
  services: readonly ServiceEntry[];
  plainRoutes?: readonly PlainRoute[];
  interceptors: Interceptor[];
  contextValues: (req: NodeRequest) => ContextValues;
  maxBodyBytes: number;
  /** Called with an error that becomes `internal` here, outside the interceptors (which log their own). */
  onUnexpected?: (err: unknown, req: NodeRequest) => void;
}

/**
 * The REST transcoder: answers the `google.api.http` paths of every RPC by turning path
 * variables, query parameters and the JSON body into the request message, calling the same
 * implementation through the same interceptors as Connect and gRPC, and writing the
 * response as JSON with proto field names. Unknown paths are 404, a wrong method 405 with
 * `Allow`. Adding a REST path to an RPC is one option in its .proto file.
 */
export function createRestHandler(opts: RestHandlerOptions): (req: NodeRequest, res: NodeResponse) => Promise<void> {
  const routes = new RouteTable<Route>([
    ...collectRpcRoutes(opts.services),
    ...(opts.plainRoutes ?? []).map((r) => ({ ...r, kind: "plain" as const, template: compilePathTemplate(r.path) })),
  ]);

  return async function handleRest(req, res) {
    const contextValues = opts.contextValues(req);
    const info = contextValues.get(requestInfoKey);
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? "/", "http://localhost");
      } catch {
        throw new ValidationError("path", "not a valid request target");
      }
      const { best, allowed } = routes.match(req.method, url.pathname);
      if (!best) {
        if (info) info.route = allowed.size > 0 ? "method_not_allowed" : "not_found";
        if (allowed.size > 0) {
          const allow = [...allowed].sort().join(", ");
          sendJson(res, 405, JSON.stringify({ code: "method_not_allowed", message: `${req.method} is not allowed on ${url.pathname}; allowed: ${allow}` }), new Headers({ allow }));
        } else {
          sendJson(res, 404, JSON.stringify({ code: "not_found", message: `no such path: ${url.pathname}` }));
        }
        return;
      }
      const { route, vars } = best;
      if (info) info.route = `${route.method} ${route.template.source}`;
      if (route.kind === "plain") {
        await route.handle(req, res);
        return;
      }
      await invoke(route, vars, url, req, res, contextValues);
    } catch (err) {
      let connectErr = err instanceof ConnectError ? err : domainToConnectError(err);
      if (!connectErr) {
        opts.onUnexpected?.(err, req);
        connectErr = new ConnectError("internal error", Code.Internal, undefined, undefined, err);
      }
      if (info) info.code ??= codeToString(connectErr.code);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(res, restStatus(connectErr), restErrorBody(connectErr), connectErr.metadata);
    }
  };

  async function invoke(
    route: RpcRoute,
    vars: Record<string, string>,
    url: URL,
    req: NodeRequest,
    res: NodeResponse,
    contextValues: ContextValues,
  ): Promise<void> {
    const method: DescMethod = route.spec.method;
    let input: JsonObject = {};
    if (route.body !== "") {
      const raw = await readBody(req, opts.maxBodyBytes);
      let parsed: JsonValue;
      try {
        parsed = raw.length === 0 ? {} : (JSON.parse(raw.toString("utf8")) as JsonValue);
      } catch (err) {
        throw new ValidationError("", `malformed JSON: ${(err as Error).message}`);
      }
      if (route.body === "*") {
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
          throw new ValidationError("", "request body must be a JSON object");
        }
        input = parsed;
      } else {
        setPath(input, route.body.split("."), parsed);
      }
    }
    for (const [field, value] of Object.entries(vars)) setPath(input, field.split("."), value);
    if (route.body !== "*") applyQuery(input, method.input, url.searchParams, new Set(Object.keys(vars)));

    let message;
    try {
      message = fromJson(method.input, input, { ignoreUnknownFields: false });
    } catch (err) {
      throw new ValidationError("", locateDecodeError(method.input, input, err));
    }
    const info = contextValues.get(requestInfoKey);
    if (info) info.protocol = "rest";
    const context = restContext(method, req, url, contextValues);
    const written: { text?: string } = {};
    if (route.textSpec) contextValues.set(writtenTextKey, written);
    const output = await invokeUnary(route.textSpec ?? route.spec, context, message, opts.interceptors);
    let body: string;
    if (written.text !== undefined) {
      body = written.text;
    } else if (route.responseBody) {
      // response_body: one field of the response is the body (no RPC declares one today).
      const json = toJson(method.output, output, { useProtoFieldName: true, alwaysEmitImplicit: true }) as JsonObject;
      body = JSON.stringify(json[route.responseBody]);
    } else {
      body = jsonText(method.output, output);
    }
    sendJson(res, 200, body, context.responseHeader);
  }
}

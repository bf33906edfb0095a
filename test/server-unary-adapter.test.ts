/**
 * The behaviour of Connect's private `invokeUnaryImplementation` that the REST transcoder relies
 * on (src/transport/unary-adapter.ts). An upgrade of @connectrpc/connect that changes it fails here.
 */
import { readFileSync } from "node:fs";
import { create, isMessage } from "@bufbuild/protobuf";
import { createContextKey, createContextValues, createHandlerContext, createMethodImplSpec, type Interceptor } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HealthService, CheckRequestSchema, CheckResponseSchema } from "../gen/autonomy/v1/health_pb.js";
import { invokeUnary, type UnaryImplSpec } from "../src/transport/unary-adapter.js";

const who = createContextKey("nobody");

describe("the unary adapter over Connect's invokeUnaryImplementation", () => {
  it("runs on the pinned @connectrpc/connect 2.1.x", () => {
    const installed = new URL("../node_modules/@connectrpc/connect/package.json", import.meta.url);
    const pkg = JSON.parse(readFileSync(installed, "utf8")) as { version: string };
    expect(pkg.version).toMatch(/^2\.1\.\d+$/);
    const ours = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { dependencies: Record<string, string> };
    expect(ours.dependencies["@connectrpc/connect"]).toMatch(/^~2\.1\./);
  });

  it("runs the interceptors around the implementation, outermost first, and returns a message from a plain init object", async () => {
    const method = HealthService.method.check;
    const calls: string[] = [];
    const spec = createMethodImplSpec(method, (_req, ctx) => {
      calls.push(`impl sees ${ctx.values.get(who)}`);
      ctx.responseHeader.set("x-impl", "1");
      ctx.responseTrailer.set("x-trailer", "2");
      return { status: "ok" };
    }) as UnaryImplSpec<typeof CheckRequestSchema, typeof CheckResponseSchema>;
    const interceptor = (name: string): Interceptor => (next) => async (req) => {
      calls.push(`${name} before ${req.method.name}`);
      const res = await next(req);
      calls.push(`${name} after`);
      res.header.set(`x-${name}`, "seen");
      return res;
    };
    const context = createHandlerContext({
      service: HealthService,
      method,
      protocolName: "rest",
      requestMethod: "GET",
      url: "http://localhost/v1/health",
      requestHeader: new Headers(),
      contextValues: createContextValues().set(who, "alice"),
    });
    const output = await invokeUnary(spec, context, create(CheckRequestSchema), [interceptor("outer"), interceptor("inner")]);
    expect(isMessage(output, CheckResponseSchema)).toBe(true);
    expect(output.status).toBe("ok");
    expect(calls).toEqual(["outer before Check", "inner before Check", "impl sees alice", "inner after", "outer after"]);
    expect(Object.fromEntries(context.responseHeader)).toEqual({ "x-impl": "1", "x-inner": "seen", "x-outer": "seen" });
    expect(context.responseTrailer.get("x-trailer")).toBe("2");
  });

  it("lets an interceptor's error through unchanged", async () => {
    const method = HealthService.method.check;
    const spec = createMethodImplSpec(method, () => ({ status: "ok" })) as UnaryImplSpec;
    const context = createHandlerContext({ service: HealthService, method, protocolName: "rest", requestMethod: "GET", url: "http://localhost/", requestHeader: new Headers(), contextValues: createContextValues() });
    const boom = new Error("refused here");
    await expect(invokeUnary(spec, context, create(CheckRequestSchema), [() => () => Promise.reject(boom)])).rejects.toBe(boom);
  });
});

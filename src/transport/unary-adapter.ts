/**
 * The one use of a Connect-ES internal: the REST transcoder calls an RPC implementation
 * through the same interceptors as Connect and gRPC with `invokeUnaryImplementation`, which
 * `@connectrpc/connect/protocol` exports but marks "@private, does not follow semantic
 * versioning". package.json pins `@connectrpc/connect` to ~2.1 (patch releases only) for this;
 * test/server-unary-adapter.test.ts checks the behaviour relied on, so an upgrade that changes
 * it fails there and not on a REST path in production.
 *
 * Relied on: the interceptors run around the implementation, outermost first, and see the
 * method and the context values; the implementation may return a plain init object, which
 * comes back as a message of the output type; headers and trailers the interceptors or the
 * implementation set end up on the context.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext, Interceptor, MethodImplSpec } from "@connectrpc/connect";
import { invokeUnaryImplementation } from "@connectrpc/connect/protocol";

export type UnaryImplSpec<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> = Extract<MethodImplSpec<I, O>, { kind: "unary" }>;

/** Calls a unary implementation with `input` through `interceptors`; returns its output message. */
export function invokeUnary<I extends DescMessage, O extends DescMessage>(
  spec: UnaryImplSpec<I, O>,
  context: HandlerContext,
  input: MessageShape<I>,
  interceptors: Interceptor[],
): Promise<MessageShape<O>> {
  return invokeUnaryImplementation(spec, context, input, interceptors);
}

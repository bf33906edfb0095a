import { create, createFileRegistry, setExtension, toJson, type DescService } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
  MethodOptionsSchema,
} from "@bufbuild/protobuf/wkt";
import { createContextValues } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { http } from "../gen/google/api/annotations_pb.js";
import { HttpRuleSchema, type HttpRule } from "../gen/google/api/http_pb.js";
import { listenCleartext, type Listener } from "../src/transport/listener.js";
import { createRestHandler } from "../src/transport/rest.js";
import type { ServiceEntry } from "../src/transport/services.js";
import { h1 } from "./helpers/http.js";

/**
 * A service declared at run time with the google.api.http features the product's own RPCs do
 * not all use yet: path variables, a body field, response_body, additional_bindings, a custom
 * verb, repeated and typed query parameters.
 */
function itemService(): DescService {
  const str = (name: string, number: number, label = Label.OPTIONAL) => ({ name, number, type: Type.STRING, label, jsonName: name });
  const rule = (init: Parameters<typeof create<typeof HttpRuleSchema>>[1]) => {
    const options = create(MethodOptionsSchema);
    setExtension(options, http, create(HttpRuleSchema, init) as HttpRule);
    return options;
  };
  const file = create(FileDescriptorProtoSchema, {
    name: "test/v1/items.proto",
    package: "test.v1",
    syntax: "proto3",
    messageType: [
      { name: "Item", field: [str("id", 1), str("note", 2)] },
      {
        name: "GetItemRequest",
        field: [
          str("shelf", 1),
          str("id", 2),
          str("tags", 3, Label.REPEATED),
          { name: "verbose", number: 4, type: Type.BOOL, label: Label.OPTIONAL, jsonName: "verbose" },
          { name: "limit", number: 5, type: Type.INT32, label: Label.OPTIONAL, jsonName: "limit" },
        ],
      },
      { name: "UpdateItemRequest", field: [str("shelf", 1), { name: "item", number: 2, type: Type.MESSAGE, typeName: ".test.v1.Item", label: Label.OPTIONAL, jsonName: "item" }] },
      { name: "ItemResponse", field: [{ name: "item", number: 1, type: Type.MESSAGE, typeName: ".test.v1.Item", label: Label.OPTIONAL, jsonName: "item" }, str("echo", 2)] },
    ],
    service: [
      {
        name: "ItemService",
        method: [
          {
            name: "GetItem",
            inputType: ".test.v1.GetItemRequest",
            outputType: ".test.v1.ItemResponse",
            options: rule({
              pattern: { case: "get", value: "/v1/shelves/{shelf}/items/{id}" },
              additionalBindings: [create(HttpRuleSchema, { pattern: { case: "get", value: "/v1/items/{id}" } })],
            }),
          },
          {
            name: "UpdateItem",
            inputType: ".test.v1.UpdateItemRequest",
            outputType: ".test.v1.ItemResponse",
            options: rule({ pattern: { case: "patch", value: "/v1/shelves/{shelf}/items" }, body: "item", responseBody: "item" }),
          },
          {
            name: "ArchiveItem",
            inputType: ".test.v1.GetItemRequest",
            outputType: ".test.v1.ItemResponse",
            options: rule({ pattern: { case: "post", value: "/v1/items/{id}:archive" }, body: "*" }),
          },
        ],
      },
    ],
  });
  return createFileRegistry(file, () => undefined).getService("test.v1.ItemService")!;
}

describe("REST transcoding from google.api.http options", () => {
  let listener: Listener;
  let base: string;
  beforeAll(async () => {
    const service = itemService();
    // GetItem and ArchiveItem both take a GetItemRequest: echo what the transcoder built.
    const echo = (req: never, method: string) => ({
      echo: JSON.stringify({ method, ...(toJson(service.methods[0].input, req) as object) }),
    });
    const impl = {
      getItem: (req: never) => ({ item: { id: "found" }, ...echo(req, "get") }),
      updateItem: (req: { shelf: string; item?: { id: string; note: string } }) => ({ item: { id: `${req.shelf}/${req.item?.id}`, note: req.item?.note }, echo: "not sent" }),
      archiveItem: (req: never) => echo(req, "archive"),
    };
    const handler = createRestHandler({
      services: [{ service, impl } as unknown as ServiceEntry],
      interceptors: [],
      contextValues: () => createContextValues(),
      maxBodyBytes: 1024,
    });
    listener = await listenCleartext({ host: "127.0.0.1", port: 0 }, (req, res) => void handler(req, res));
    base = `http://127.0.0.1:${listener.address.port}`;
  });
  afterAll(async () => listener.close());

  it("fills path variables and typed, repeated query parameters", async () => {
    const res = await h1(`${base}/v1/shelves/s%2F1/items/i1?tags=a&tags=b&verbose=true&limit=5`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.json().echo)).toEqual({ method: "get", shelf: "s/1", id: "i1", tags: ["a", "b"], verbose: true, limit: 5 });
  });

  it("serves additional_bindings of the same RPC", async () => {
    const res = await h1(`${base}/v1/items/i2`);
    expect(JSON.parse(res.json().echo)).toEqual({ method: "get", id: "i2" });
  });

  it("puts the body into the named field, merges path variables, and answers response_body only", async () => {
    const res = await h1(`${base}/v1/shelves/s9/items`, { method: "PATCH", body: JSON.stringify({ id: "x", note: "n" }) });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ id: "s9/x", note: "n" });
  });

  it("matches a custom verb and takes the whole body", async () => {
    const res = await h1(`${base}/v1/items/i3:archive`, { method: "POST", body: JSON.stringify({ tags: ["z"] }) });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.json().echo)).toEqual({ method: "archive", id: "i3", tags: ["z"] });
    // Another verb is not ArchiveItem: the path only matches GET /v1/items/{id} (id "i3:unarchive").
    const other = await h1(`${base}/v1/items/i3:unarchive`, { method: "POST", body: "{}" });
    expect(other.status).toBe(405);
    expect(other.headers.allow).toBe("GET");
  });

  it.each([
    ["/v1/items/i2?verbose=maybe", 400, "verbose: must be true or false"],
    ["/v1/items/i2?limit=many", 400, "limit"],
    ["/v1/items/i2?colour=red", 400, "colour: unknown query parameter"],
    ["/v1/items/%E0%A4%A", 400, "path: malformed percent-encoding"],
  ])("refuses %s with %i", async (path, status, message) => {
    const res = await h1(base + path);
    expect(res.status).toBe(status);
    expect(res.json().message).toContain(message);
  });

  it("answers 405 with every method the path allows", async () => {
    const res = await h1(`${base}/v1/shelves/s/items/i`, { method: "DELETE" });
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe("GET");
    const patchOnly = await h1(`${base}/v1/shelves/s/items`);
    expect(patchOnly.status).toBe(405);
    expect(patchOnly.headers.allow).toBe("PATCH");
  });

  it("answers a body over the limit with 413", async () => {
    const res = await h1(`${base}/v1/shelves/s/items`, { method: "PATCH", body: JSON.stringify({ note: "n".repeat(2000) }) });
    expect(res.status).toBe(413);
  });
});

describe("REST route choice", () => {
  // Both templates match /v1/b/c with the same specificity; only the first has a literal head.
  const plain = (path: string, answer: string) => ({ method: "GET", path, handle: (_req: unknown, res: { end(body: string): void }) => res.end(answer) });

  it.each([
    [["/v1/b/*", "/v1/{a}/c"], "/v1/b/*"],
    [["/v1/{a}/c", "/v1/b/*"], "/v1/{a}/c"],
  ])("of %j, as specific as each other, takes the one declared first", async (paths, expected) => {
    const handler = createRestHandler({
      services: [],
      plainRoutes: paths.map((p) => plain(p, p)),
      interceptors: [],
      contextValues: () => createContextValues(),
      maxBodyBytes: 1024,
    });
    const listener = await listenCleartext({ host: "127.0.0.1", port: 0 }, (req, res) => void handler(req, res));
    try {
      const base = `http://127.0.0.1:${listener.address.port}`;
      expect((await h1(`${base}/v1/b/c`)).text).toBe(expected);
      const wrongMethod = await h1(`${base}/v1/b/c`, { method: "POST" });
      expect([wrongMethod.status, wrongMethod.headers.allow]).toEqual([405, "GET"]);
      expect((await h1(`${base}/v1/x/y`)).status).toBe(404);
    } finally {
      await listener.close();
    }
  });
});

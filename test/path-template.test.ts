import { describe, expect, it } from "vitest";
import { compilePathTemplate, pathHead, PathTemplateError } from "../src/transport/path-template.js";

describe("compilePathTemplate", () => {
  it.each([
    ["/v1/events", "/v1/events", {}],
    ["/v1/releases/{release_id}/acks/{node_id}", "/v1/releases/r%201/acks/n-7", { release_id: "r 1", node_id: "n-7" }],
    ["/v1/{name=shelves/*}", "/v1/shelves/s1", { name: "shelves/s1" }],
    ["/v1/{name=files/**}", "/v1/files/a/b/c", { name: "files/a/b/c" }],
    ["/v1/items/*/parts", "/v1/items/x/parts", {}],
    ["/v1/{item.id}:cancel", "/v1/abc:cancel", { "item.id": "abc" }],
  ])("%s matches %s", (template, path, vars) => {
    expect(compilePathTemplate(template).match(path)).toEqual(vars);
  });

  it.each([
    ["/v1/events", "/v1/events/x"],
    ["/v1/events", "/v1/event"],
    ["/v1/releases/{release_id}/acks", "/v1/releases//acks"],
    ["/v1/{name=shelves/*}", "/v1/shelves/s1/x"],
    ["/v1/{id}:cancel", "/v1/abc"],
  ])("%s does not match %s", (template, path) => {
    expect(compilePathTemplate(template).match(path)).toBeUndefined();
  });

  it("ranks a literal segment above a variable, so /v1/rollouts/stuck beats /v1/rollouts/{plan_id}", () => {
    expect(compilePathTemplate("/v1/rollouts/stuck").specificity).toBeGreaterThan(
      compilePathTemplate("/v1/rollouts/{plan_id}").specificity,
    );
  });

  it.each(["v1/events", "/v1//events", "/v1/{a"])("refuses the malformed template %s", (template) => {
    expect(() => compilePathTemplate(template)).toThrow(PathTemplateError);
  });
});

describe("template heads", () => {
  it.each([
    ["/v1/releases/{release_id}/acks/{node_id}", "/v1/releases"],
    ["/v1/events", "/v1/events"],
    ["/v1/rollouts/{plan_id}:approve", "/v1/rollouts"],
    ["/v1/{name=shelves/*}", undefined],
    ["/v1/abc:cancel", undefined],
    ["/v1/*/parts", undefined],
    ["/metrics", undefined],
  ])("%s has the head %s", (template, head) => {
    expect(compilePathTemplate(template).head).toBe(head);
  });

  it("reads a request path's head as templates write theirs, so every path a template matches has its head", () => {
    expect(pathHead("/v1/releases/r1/acks/n1")).toBe("/v1/releases");
    expect(pathHead("/v1/events")).toBe("/v1/events");
    expect(pathHead("/metrics")).toBe("/metrics");
    expect(pathHead("/")).toBe("/");
    for (const [template, path] of [
      ["/v1/releases/{release_id}/acks/{node_id}", "/v1/releases/r%201/acks/n-7"],
      ["/v1/rollouts/{plan_id}:approve", "/v1/rollouts/p1:approve"],
      ["/v1/events", "/v1/events"],
    ]) {
      const t = compilePathTemplate(template);
      expect(t.match(path)).toBeDefined();
      expect(pathHead(path)).toBe(t.head);
    }
  });
});

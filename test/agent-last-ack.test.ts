import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { lastAckFile, readLastAck, writeLastAck } from "../src/agent/status.js";

describe("last-ack.json", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), "ao-last-ack-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const ack = { release_id: "r1", state: "healthy", at: "2026-12-03T08:00:00.000Z" };

  it("names the node that sent the ack, and is read back for that node only", () => {
    writeLastAck(dir, "node-a", ack);
    expect(JSON.parse(readFileSync(lastAckFile(dir), "utf8"))).toEqual({ node_id: "node-a", ...ack });
    expect(readLastAck(dir, "node-a")).toEqual({ ...ack, message: undefined });
    const warnings: string[] = [];
    // The state dir enrolled again as another node: the old node's ack is not this one's.
    expect(readLastAck(dir, "node-b", (m) => warnings.push(m))).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  it("takes a file of an older agent, which names no node, as the node's own; refuses one that is not an ack with a warning", () => {
    writeFileSync(lastAckFile(dir), JSON.stringify({ ...ack, message: "ok" }));
    expect(readLastAck(dir, "node-a")).toEqual({ ...ack, message: "ok" });
    writeFileSync(lastAckFile(dir), JSON.stringify({ node_id: "node-a", state: "healthy" }));
    const warnings: string[] = [];
    expect(readLastAck(dir, "node-a", (m) => warnings.push(m))).toBeUndefined();
    expect(warnings).toEqual([`${lastAckFile(dir)}: not an acknowledgement (release_id, state, at); ignored`]);
  });
});

import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReleaseSchema } from "../gen/autonomy/v1/releases_pb.js";
import { ackToRow, releaseToRow, type AckRow } from "../src/store/fleet-rows.js";
import type { Store } from "../src/store/store.js";
import { openStore } from "./helpers/store.js";

const ack = (nodeId: string, observedAtMs: number): AckRow => ackToRow({ releaseId: "wb-r1", nodeId, state: "applied", message: "", reportedReleaseId: "" }, observedAtMs);

describe("SQLite writer: requests of one turn cross in one message", () => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ store, cleanup } = await openStore("sqlite"));
    await store.publishRelease(releaseToRow(create(ReleaseSchema, { releaseId: "wb-r1", channel: "wb", version: "1", artifacts: [{ name: "app", digest: `sha256:${"ab".repeat(32)}` }] }), 1));
    await store.enrollNode({ nodeId: "wb-n1", channel: "wb", labels: {}, agentVersion: "1" }, 1);
  });
  afterAll(async () => cleanup());

  it("fails the requests of a message that cannot cross to the writer, and takes the next ones", async () => {
    // A value that cannot be cloned to the writer thread: its whole message fails, nothing of it is written.
    const bad = { ...ack("wb-n1", 10), message: (() => "not data") as unknown as string };
    const sent = await Promise.allSettled([store.upsertAck(ack("wb-n1", 5)), store.upsertAck(bad)]);
    expect(sent.map((s) => s.status)).toEqual(["rejected", "rejected"]);
    expect(String((sent[1] as PromiseRejectedResult).reason)).toMatch(/could not be cloned/);
    expect(await store.acksOfNode("wb-n1")).toEqual([]);
    const next = await store.upsertAck(ack("wb-n1", 20));
    expect(next.stale).toBe(false);
    expect((await store.acksOfNode("wb-n1")).map((a) => a.state)).toEqual(["applied"]);
  });
});

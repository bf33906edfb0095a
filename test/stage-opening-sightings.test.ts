import { describe, expect, it } from "vitest";
import { createLogger } from "../src/observability/logger.js";
import { createMetrics } from "../src/observability/metrics.js";
import { RolloutController } from "../src/rollouts/controller.js";
import type { NodeSighting } from "../src/store/fleet-rows.js";
import type { StageOpening } from "../src/store/rollout-opening.js";
import { SightingBuffer } from "../src/store/sightings.js";
import { FakeRolloutStore } from "./helpers/controller-store.js";

const NOW = 10_000_000;
const STALE_AFTER = 3_600_000;

/** A buffer that is not written during the test: what it holds is what the store has not. */
const unflushedBuffer = (fake: FakeRolloutStore) => new SightingBuffer({ store: fake.asStore(), flushIntervalMs: 3_600_000, onFlushError: () => {} });

const controllerOver = (fake: FakeRolloutStore, sightings: SightingBuffer) =>
  new RolloutController({
    store: fake.asStore(),
    sightings,
    metrics: createMetrics(),
    logger: createLogger({ format: "json", level: "error" }),
    staleAfterMs: STALE_AFTER,
    now: () => NOW,
  });

describe("a stage opening reads the sightings not yet stored", () => {
  it("selects a node only the buffer has seen lately and records the release its sighting reported, writing no sighting first", async () => {
    const fake = new FakeRolloutStore();
    // Stored: last seen two hours ago (stale), reporting r0; "fresh" and "tie" seen lately, "never" never seen.
    const stored: Record<string, { seen: number | null; release: string | null }> = {
      back: { seen: NOW - 2 * STALE_AFTER, release: "r0" },
      quiet: { seen: NOW - 2 * STALE_AFTER, release: "r0" },
      plain: { seen: NOW - 2 * STALE_AFTER, release: "r0" },
      fresh: { seen: NOW, release: "r-stored" },
      tie: { seen: NOW - 1000, release: "r-stored" },
      never: { seen: null, release: null },
    };
    for (const [id, n] of Object.entries(stored)) {
      fake.addNode(id, { lastSeenMs: n.seen });
      fake.nodes.get(id)!.reportedReleaseId = n.release;
    }
    const sightings = unflushedBuffer(fake);
    // Seen again a moment ago, held in the buffer only: "back" reports a new release, "plain" none.
    sightings.record({ nodeId: "back", lastSeenMs: NOW - 1000, reportedReleaseId: "r-buffered" });
    sightings.record({ nodeId: "plain", lastSeenMs: NOW - 1000 });
    sightings.record({ nodeId: "never", lastSeenMs: NOW - 1000, reportedReleaseId: "r-first" });
    // As old as what the store holds: its release is the newer word (the write's rule is >=).
    sightings.record({ nodeId: "tie", lastSeenMs: NOW - 1000, reportedReleaseId: "r-tie" });
    // Older than the store's, and stale itself: it changes neither the last seen (still HEALTHY) nor the release.
    sightings.record({ nodeId: "fresh", lastSeenMs: NOW - 3 * STALE_AFTER, reportedReleaseId: "r-older" });
    const controller = controllerOver(fake, sightings);
    fake.publish({ planId: "p", stages: [{ stageId: "all", percent: 100, gates: [{ kind: "manual" }] }] });
    await controller.start();
    await controller.settled("p");

    const moves = new Map(fake.moves.filter((m) => m.planId === "p").map((m) => [m.nodeId, m.previousReleaseId]));
    expect(moves).toEqual(
      new Map([
        ["back", "r-buffered"],
        ["plain", "r0"],
        ["fresh", "r-stored"],
        ["tie", "r-tie"],
        ["never", "r-first"],
      ]),
    );
    // "quiet" was seen by nobody within --node-stale-after: left out.
    expect(fake.movesOf("p")).not.toContain("quiet");
    // The opening did not write the buffer first: it still holds them all.
    expect(sightings.pending().map((s) => s.nodeId).sort()).toEqual(["back", "fresh", "never", "plain", "tie"]);
    await controller.stop();
    await sightings.close();
  });

  it("leaves out the sightings of the stage it leaves, whose nodes the plan moved already", async () => {
    const fake = new FakeRolloutStore();
    fake.addNode("lead", { lastSeenMs: NOW });
    fake.addNode("back", { lastSeenMs: NOW - 2 * STALE_AFTER });
    const sent: (readonly NodeSighting[] | undefined)[] = [];
    const open = fake.openRolloutStage.bind(fake);
    fake.openRolloutStage = (o: StageOpening) => {
      sent.push(o.sightings);
      return open(o);
    };
    const sightings = unflushedBuffer(fake);
    const controller = controllerOver(fake, sightings);
    fake.publish({
      planId: "p",
      stages: [
        { stageId: "first", nodeIds: ["lead"], gates: [{ kind: "manual" }] },
        { stageId: "rest", percent: 100, gates: [{ kind: "manual" }] },
      ],
    });
    await controller.start();
    await controller.settled("p");
    expect(fake.movesOf("p", "first")).toEqual(["lead"]);
    sightings.record({ nodeId: "lead", lastSeenMs: NOW, reportedReleaseId: "r" });
    sightings.record({ nodeId: "back", lastSeenMs: NOW - 1000 });
    await controller.act("p", "approve", { actor: "alice", source: "api", reason: "first is fine", stageId: "first" });
    await controller.settled("p");
    expect(fake.movesOf("p", "rest")).toEqual(["back"]);
    expect(sent.at(-1)?.map((s) => s.nodeId)).toEqual(["back"]);
    await controller.stop();
    await sightings.close();
  });
});

import { afterEach, describe, expect, it, vi } from "vitest";
import { StoreUnavailableError } from "../src/domain/errors.js";
import { createLogger } from "../src/observability/logger.js";
import { createMetrics } from "../src/observability/metrics.js";
import { RolloutController } from "../src/rollouts/controller.js";
import { SightingBuffer } from "../src/store/sightings.js";
import { FakeRolloutStore } from "./helpers/controller-store.js";

const NOW = 1_000_000;

function setup() {
  const fake = new FakeRolloutStore();
  for (const id of ["n1", "n2", "n3", "n4"]) fake.addNode(id, { lastSeenMs: NOW });
  const sightings = new SightingBuffer({ store: fake.asStore(), flushIntervalMs: 3_600_000, onFlushError: () => {} });
  const controller = new RolloutController({
    store: fake.asStore(),
    sightings,
    metrics: createMetrics(),
    logger: createLogger({ format: "json", level: "error" }),
    staleAfterMs: 3_600_000,
    now: () => NOW,
  });
  return { fake, sightings, controller };
}

describe("rollout controller regressions", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a stage whose tracking failed after its opening was written is not advanced on an empty count", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    const { fake, sightings, controller } = setup();
    fake.publish({
      planId: "p",
      stages: [
        { stageId: "s1", percent: 50, gates: [{ kind: "max_failure_ratio", maxRatio: 0.1 }] },
        { stageId: "s2", percent: 100 },
      ],
    });
    // Reading the opened stage's nodes back fails once (either read the controller uses for it).
    fake.failOn("acksOfRelease");
    fake.failOn("stageNodes");
    await controller.start();
    await controller.settled("p");
    await vi.advanceTimersByTimeAsync(60_000);
    await controller.settled("p");
    const status = JSON.parse(fake.statuses.get("p")!.stages) as { phase: string }[];
    // No node has acked: the stage must still be open, and s2 must have moved nobody.
    expect(status.map((s) => s.phase)).toEqual(["open", "pending"]);
    expect(fake.movesOf("p", "s2")).toEqual([]);
    expect(controller.liveTally("p", 0)).toMatchObject({ nodeCount: 2, healthy: 0, failed: 0 });
    await controller.stop();
    await sightings.close();
  });

  it("an action after stop() is refused at once and touches no store", async () => {
    const { fake, sightings, controller } = setup();
    fake.publish({ planId: "p", stages: [{ stageId: "s1", percent: 50, gates: [{ kind: "manual" }] }] });
    await controller.start();
    await controller.settled("p");
    await controller.stop();
    const calls = fake.calls.length;
    // A store that keeps answering: an action that re-entered itself would loop until it stopped.
    fake.failOn("getRollout", { skip: 20 });
    const result = controller.act("p", "pause", { actor: "t", source: "test", reason: "x" });
    await expect(result).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(result).rejects.toThrow(/stopped/);
    expect(fake.calls.slice(calls)).toEqual([]);
    await sightings.close();
  });
});

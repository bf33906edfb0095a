import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { startPushFleet, type PushFleet } from "../bench/push-fleet.js";
import { startChildServer, type ChildServer } from "./helpers/child.js";
import { eventually } from "./helpers/wait.js";

const AGENTS = 20;
const POLL_MS = 60_000;
const DIGEST = `sha256:${"cd".repeat(32)}`;

describe("push to real edgectl agents", () => {
  let server: ChildServer;
  let api: OrchestratorClients;
  let work: string;
  let fleet: PushFleet | undefined;

  beforeAll(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-push-e2e-"));
    server = await startChildServer(["--data-dir", path.join(work, "server"), "--push-keepalive", "2s"]);
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    await fleet?.stop();
    api.close();
    await server.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it(`with a ${POLL_MS / 1000} s poll interval, ${AGENTS} agents all start installing when the stage opens, before any of them could have polled again`, async () => {
    fleet = startPushFleet({ url: server.url, work, channel: "push", count: AGENTS, pollInterval: `${POLL_MS / 1000}s` });
    await fleet.streamsOpen(45_000);
    await eventually(async () => {
      const { nodes } = await api.nodes.getFleetStatus({ channel: "push" });
      expect(nodes.filter((n) => n.lifecycle === "HEALTHY")).toHaveLength(AGENTS);
    });
    await api.releases.publishRelease({ release: { releaseId: "p1", channel: "push", version: "1.0.0", staged: true, artifacts: [{ name: "app", digest: DIGEST }] } });
    await api.rollouts.createRolloutPlan({ plan: { planId: "push-plan", releaseId: "p1", stages: [{ stageId: "all", percent: 100 }] } });

    // Each agent polled once as it started; its next poll comes a poll interval after that.
    // Every install must start before the first of those: push delivered it, not a poll.
    const firstRepoll = Math.min(...fleet.spawnedAt) + POLL_MS;
    await eventually(async () => expect(fleet!.installStarts("p1").filter((t) => t !== undefined)).toHaveLength(AGENTS), firstRepoll - Date.now() - 1000);
    const starts = fleet.installStarts("p1") as number[];
    expect(Math.max(...starts)).toBeLessThan(firstRepoll);
    for (let i = 0; i < AGENTS; i++) expect(fleet.output(i)).toMatch(/pushed: the desired release changed/);
    const stage = (await api.rollouts.getRolloutStatus({ planId: "push-plan" })).status!.stages[0];
    expect(stage.nodeCount).toBe(AGENTS);
    // For the record (bench/push.ts measures it): the stage's opening to the last install start.
    console.log(`stage opened to the last of ${AGENTS} installs starting: ${Math.max(...starts) - timestampMs(stage.openedAt!)} ms`);
    await eventually(async () => expect((await api.rollouts.getRolloutStatus({ planId: "push-plan" })).status!.phase).toBe("completed"), 20_000);
    // Twenty agents starting on a loaded two-core machine take a while; the poll interval bounds the rest.
  }, 150_000);
});

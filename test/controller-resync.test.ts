import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrchestratorClients, type OrchestratorClients } from "../clients/index.js";
import { STORE_KINDS, startTestServer, type TestServer } from "./helpers/server.js";
import { until } from "./helpers/wait.js";

const DIGEST = `sha256:${"cd".repeat(32)}`;

/** --rollout-resync on a real server: a decision whose signal never reached the controller is still taken. */
describe.each(STORE_KINDS)("level-triggered rollouts on %s", (kind) => {
  let server: TestServer;
  let api: OrchestratorClients;
  beforeAll(async () => {
    server = await startTestServer(kind, { rolloutResyncMs: 200, heartbeatFlushMs: 3_600_000 });
    api = createOrchestratorClients({ baseUrl: server.url });
  });
  afterAll(async () => {
    api.close();
    await server.stop();
  });

  it("completes a stage from acks written behind the controller's back, at the next resync", async () => {
    for (const nodeId of ["lt-1", "lt-2"]) {
      await api.nodes.enrollNode({ nodeId, channel: "lt" });
      await api.nodes.heartbeat({ nodeId });
    }
    await api.releases.publishRelease({ release: { releaseId: "lt-r1", channel: "lt", version: "1", staged: true, artifacts: [{ name: "a", digest: DIGEST }] } });
    await api.rollouts.createRolloutPlan({ plan: { planId: "lt-plan", releaseId: "lt-r1", stages: [{ stageId: "all", percent: 100, gates: [{ kind: "success_ratio", minRatio: 1 }] }] } });
    await until("stage open", async () => (await api.rollouts.getRolloutStatus({ planId: "lt-plan" })).status!.stages[0].phase === "open");
    // Straight into the store: the ack path, and with it the controller's signal, is skipped.
    for (const nodeId of ["lt-1", "lt-2"]) {
      await server.store.upsertAck({ releaseId: "lt-r1", nodeId, state: "healthy", message: "", reportedReleaseId: "lt-r1", observedAtMs: Date.now(), updatedAtMs: Date.now() });
    }
    const done = await until("completed", async () => {
      const s = (await api.rollouts.getRolloutStatus({ planId: "lt-plan" })).status!;
      return s.phase === "completed" ? s : undefined;
    });
    expect(done.stages[0]).toMatchObject({ phase: "passed", nodeCount: 2, healthy: 2 });
    expect(server.log.lines.some((l) => l.msg === "rollout stage counts differed from the store; counted again")).toBe(true);
  });
});

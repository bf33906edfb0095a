import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { readPlanFile } from "../src/cli/autonomy/rollout.js";
import { readReleaseFile } from "../src/cli/autonomy/release.js";
import { AUTONOMY_BIN, runProgram } from "./helpers/child.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

// Every case runs the built programs, a second or more each on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const DIGEST = `sha256:${"ab".repeat(32)}`;

describe("release and plan files", () => {
  let work: string;
  const file = (name: string, text: string) => {
    const f = path.join(work, name);
    writeFileSync(f, text);
    return f;
  };
  beforeAll(() => {
    work = mkdtempSync(path.join(os.tmpdir(), "ao-files-"));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it.each([
    [
      "an unknown key, with a did-you-mean",
      "release.yaml",
      `release_id: r1\nchanel: stable\nversion: "1"\nartifacts: []\n`,
      ":2:1: unknown key \"chanel\" (did you mean \"channel\"?)",
    ],
    [
      "an unknown key deep down, with its path",
      "release.yaml",
      `release_id: r1\nchannel: stable\nversion: "1"\nartifacts:\n  - name: app\n    digset: ${DIGEST}\n`,
      ':6:5: artifacts[0]: unknown key "digset" (did you mean "digest"?)',
    ],
    ["a bad digest", "release.yaml", `release_id: r1\nchannel: s\nversion: "1"\nartifacts:\n  - {name: app, digest: md5:00}\n`, ':5:25: artifacts[0].digest: "md5:00" is not a digest'],
    ["a boolean that is not one", "release.yaml", `release_id: r1\nchannel: s\nversion: "1"\nstaged: maybe\n`, ':4:9: staged: expected true or false (yes/no), got "maybe"'],
    ["a list where a mapping is due", "release.yaml", `- release_id: r1\n`, ":1:1: expected a release (release_id, channel, version, artifacts), got a list"],
    ["broken YAML", "release.yaml", `release_id: [r1\n`, ":2:1: not valid YAML or JSON"],
    ["JSON with an unknown key", "release.json", `{\n  "release_id": "r1",\n  "notes": "x",\n  "artefacts": []\n}\n`, ':4:3: unknown key "artefacts" (did you mean "artifacts"?)'],
  ])("release file: %s", (_name, fileName, text, message) => {
    const f = file(fileName, text);
    expect(() => readReleaseFile(f)).toThrow(`${f}${message}`);
  });

  it.each([
    [
      "seconds that are not a duration",
      `release_id: r1\nstages:\n  - stage_id: a\n    percent: 10\n  - stage_id: b\n    gates:\n      - kind: time_soak\n        seconds: soon\n`,
      ':8:18: stages[1].gates[0].seconds: expected a whole number of seconds or a duration (600, 10m, 1h), got "soon"',
    ],
    ["an unknown gate kind", `release_id: r1\nstages:\n  - stage_id: a\n    gates: [{kind: time-soak}]\n`, ':4:20: stages[0].gates[0].kind: unknown gate kind "time-soak" (did you mean "time_soak"?)'],
    ["an unknown stage key", `release_id: r1\nstages:\n  - stage_id: a\n    nodes: [robot-7]\n`, ':4:5: stages[0]: unknown key "nodes" (expected one of: stage_id, node_ids, match_labels, percent, gates, deadline_seconds)'],
    ["a percent that is not a number", `release_id: r1\nstages:\n  - stage_id: a\n    percent: half\n`, ':4:14: stages[0].percent: expected a number (50 or 50%), got "half"'],
    ["labels that are not a mapping", `release_id: r1\nstages:\n  - stage_id: a\n    match_labels: site=lab\n`, ":4:19: stages[0].match_labels: expected a mapping of key: value"],
  ])("plan file: %s", (_name, text, message) => {
    const f = file("plan.yaml", text);
    expect(() => readPlanFile(f)).toThrow(`${f}${message}`);
  });

  it("accepts what people write: durations for seconds, 50%, yes/no, versions as written", () => {
    const plan = readPlanFile(
      file(
        "ok-plan.yaml",
        `release_id: r1\nstages:\n  - stage_id: a\n    percent: 50%\n    deadline_seconds: 1h\n    gates: [{kind: time_soak, seconds: 60s}, {kind: success_ratio, min_ratio: 0.95}]\n`,
      ),
    );
    expect(plan.stages[0]).toMatchObject({ percent: 50, deadlineSeconds: 3600 });
    expect(plan.stages[0].gates.map((g) => [g.kind, g.seconds, g.minRatio])).toEqual([
      ["time_soak", 60, 0],
      ["success_ratio", 0, 0.95],
    ]);
    const release = readReleaseFile(
      file("ok-release.yaml", `release_id: r1\nchannel: stable\nversion: 1.10\nstaged: yes\nnotes:\nartifacts:\n  - {name: app, digest: ${DIGEST}}\n`),
    );
    expect(release).toMatchObject({ version: "1.10", staged: true, notes: "" });
  });

  describe("through the CLI", () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer("sqlite");
    });
    afterAll(async () => {
      await server.stop();
    });

    it("a bad file is a usage error (exit 2) in one line naming file, line and field", async () => {
      const f = file("bad.yaml", `release_id: r1\nchannel: stable\nversion: "1"\nartifacts:\n  - name: app\n    digest: ${DIGEST}\n    ulr: https://x\n`);
      const r = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "release", "publish", "--file", f]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(`autonomy: error: ${f}:7:5: artifacts[0]: unknown key "ulr" (did you mean "url"?)\n`);
      const missing = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "rollout", "plan", "create", "--file", path.join(work, "nope.yaml")]);
      expect(missing).toMatchObject({ code: 2, stderr: `autonomy: error: ${path.join(work, "nope.yaml")}: no such file\n` });
      const dir = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "release", "publish", "--file", work]);
      expect(dir).toMatchObject({ code: 2, stderr: `autonomy: error: ${work}: is a directory, not a file\n` });
      const flag = await runProgram(AUTONOMY_BIN, ["--orchestrator-url", server.url, "--token-file", work, "fleet", "status"]);
      expect(flag).toMatchObject({ code: 2, stderr: `autonomy: error: --token-file ${work}: is a directory, not a file\n` });
    });
  });
});

/**
 * Runs the README's quick start and TLS walkthrough as printed: every ```sh block of those
 * sections, in order, in a fresh home directory, with `npx autonomy`, `npx edgectl` and
 * `npx autonomy-orchestrator` running the built programs. The one substitution: the port 8888
 * becomes a free port of 127.0.0.1, so tests can run side by side.
 *
 * An HTML comment just before a block tells the runner what a reader does with it:
 *   <!-- readme-test: server -->      `npm start`: runs `autonomy-orchestrator serve` in the background
 *   <!-- readme-test: background -->  a long-running command (another terminal); ready="TEXT" waits for TEXT in its output
 *   <!-- readme-test: terminal=NAME -->  runs in that terminal (shell variables are kept per terminal)
 *   <!-- readme-test: retry -->       a step a reader repeats until the fleet is ready for it
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { AUTONOMY_BIN, EDGECTL_BIN, ORCHESTRATOR_BIN } from "./helpers/child.js";
import { freePort } from "./helpers/net.js";

interface Block {
  heading: string;
  line: number;
  code: string;
  marker: { server?: boolean; background?: boolean; retry?: boolean; terminal: string; ready?: string };
}

/** The ```sh blocks under the given headings (## or ###), with the marker comment before each. */
export function readmeBlocks(text: string, headings: string[]): Block[] {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  let heading = "";
  for (let i = 0; i < lines.length; i++) {
    const h = /^#{2,3} (.*)$/.exec(lines[i]);
    if (h) heading = h[1];
    if (lines[i] !== "```sh" || !headings.includes(heading)) continue;
    let j = i + 1;
    const code: string[] = [];
    for (; lines[j] !== "```"; j++) code.push(lines[j]);
    let k = i - 1;
    while (k >= 0 && lines[k].trim() === "") k--;
    const comment = /^<!-- readme-test: (.*) -->$/.exec(lines[k] ?? "")?.[1] ?? "";
    const words = comment.replace(/\(.*\)/, "");
    blocks.push({
      heading,
      line: i + 1,
      code: code.join("\n"),
      marker: {
        server: /\bserver\b/.test(words),
        background: /\bbackground\b/.test(words),
        retry: /\bretry\b/.test(words),
        terminal: /\bterminal=(\S+)/.exec(words)?.[1] ?? "main",
        ready: /\bready="([^"]*)"/.exec(words)?.[1],
      },
    });
    i = j;
  }
  return blocks;
}

describe("README", () => {
  const work = mkdtempSync(path.join(os.tmpdir(), "ao-readme-"));
  const background: { proc: ChildProcess; output: () => string; line: number }[] = [];

  afterAll(async () => {
    await stopBackground();
    rmSync(work, { recursive: true, force: true });
  });

  async function stopBackground() {
    for (const b of background.splice(0)) {
      if (b.proc.exitCode !== null || b.proc.signalCode !== null) continue;
      const exited = new Promise((resolve) => b.proc.once("exit", resolve));
      process.kill(-b.proc.pid!, "SIGTERM");
      await exited;
    }
  }

  it("the quick start and the TLS walkthrough run as printed", { timeout: 300_000 }, async () => {
    const home = path.join(work, "home");
    const cwd = path.join(work, "cwd");
    const bin = path.join(work, "bin");
    for (const d of [home, cwd, bin]) mkdirSync(d, { recursive: true });
    const shim = (name: string, body: string) => {
      writeFileSync(path.join(bin, name), `#!/bin/sh\n${body}\n`);
      chmodSync(path.join(bin, name), 0o755);
    };
    shim("autonomy", `exec "${process.execPath}" "${AUTONOMY_BIN}" "$@"`);
    shim("edgectl", `exec "${process.execPath}" "${EDGECTL_BIN}" "$@"`);
    shim("autonomy-orchestrator", `exec "${process.execPath}" "${ORCHESTRATOR_BIN}" "$@"`);
    shim("npx", 'exec "$@"');
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { PATH: `${bin}:${process.env.PATH}`, HOME: home, LANG: "C.UTF-8", AUTONOMY_LISTEN: `127.0.0.1:${port}` };

    const readme = readFileSync("README.md", "utf8");
    const blocks = readmeBlocks(readme, ["Quick start", "TLS, mutual TLS and revocation"]);
    expect(blocks.length).toBeGreaterThan(10);
    expect(blocks.filter((b) => b.heading === "TLS, mutual TLS and revocation").length).toBeGreaterThanOrEqual(3);

    const stateOf = (terminal: string) => path.join(work, `terminal-${terminal}.sh`);
    const script = (b: Block) => {
      const state = stateOf(b.marker.terminal);
      const code = b.code.replaceAll("8888", String(port));
      // Shell variables (exported or not) and the directory carry over to the next block of the same terminal.
      return (
        `cd "${cwd}"\n[ -f "${state}" ] && . "${state}"\n__before="$(compgen -v)"\nset -e\n${code}\nset +e\n` +
        `{ export -p; for v in $(compgen -v); do case "$v" in [A-Z]*) echo "$__before" | grep -qx "$v" || declare -p "$v";; esac; done; } > "${state}.new" 2>/dev/null\n` +
        `mv "${state}.new" "${state}"\n`
      );
    };
    const runBlock = (b: Block) => spawnSync("bash", ["-c", script(b)], { env, encoding: "utf8", timeout: 120_000 });

    let section = "";
    let last = "";
    for (const b of blocks) {
      if (b.heading !== section) {
        // A new section starts after the previous one's long-running processes are stopped.
        await stopBackground();
        section = b.heading;
      }
      const where = `README.md:${b.line}`;
      if (b.marker.server || b.marker.background) {
        const args = b.marker.server ? [ORCHESTRATOR_BIN, "serve"] : ["-c", `cd "${cwd}"; [ -f "${stateOf(b.marker.terminal)}" ] && . "${stateOf(b.marker.terminal)}"; ${b.code.replaceAll("8888", String(port))}`];
        const proc = spawn(b.marker.server ? process.execPath : "bash", args, { env, cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        proc.stdout!.on("data", (c: Buffer) => (output += c.toString()));
        proc.stderr!.on("data", (c: Buffer) => (output += c.toString()));
        background.push({ proc, output: () => output, line: b.line });
        const ready = b.marker.server ? '"msg":"serving"' : b.marker.ready;
        if (ready !== undefined) {
          const deadline = Date.now() + 60_000;
          while (!output.includes(ready)) {
            if (proc.exitCode !== null) throw new Error(`${where}: exited with status ${proc.exitCode} before "${ready}":\n${output}`);
            if (Date.now() > deadline) throw new Error(`${where}: no "${ready}" within 60 s:\n${output}`);
            await sleep(100);
          }
        }
        continue;
      }
      let run = runBlock(b);
      const deadline = Date.now() + 60_000;
      while (b.marker.retry && run.status !== 0 && Date.now() < deadline) {
        await sleep(500);
        run = runBlock(b);
      }
      const logs = background.map((x) => `--- background block README.md:${x.line}:\n${x.output().slice(-3000)}`).join("\n");
      expect({ block: where, status: run.status, stderr: run.stderr }, `${where}\n${b.code}\nstdout:\n${run.stdout}\n${logs}`).toEqual({
        block: where,
        status: 0,
        stderr: expect.any(String),
      });
      // A step whose status a pipeline hides still says so on stderr.
      expect(run.stderr, `${where}\n${b.code}`).not.toMatch(/\berror:/);
      last = run.stdout;
    }
    // The walkthrough's last step reads the CRL over mutual TLS.
    expect(last).toContain("-----BEGIN X509 CRL");
    // What the walkthrough promises: the revoked node's certificate is refused by name.
    const refused = spawnSync(
      "bash",
      ["-c", `cd "${cwd}" && edgectl --orchestrator-url https://localhost:${port} --tls-ca-file ca/ca.pem --tls-cert-file ca/node-robot-7.pem --tls-key-file ca/node-robot-7-key.pem --state-dir robot-7 enroll --node-id robot-7 --channel stable`],
      { env, encoding: "utf8" },
    );
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("the server refused the client certificate");
  });
});

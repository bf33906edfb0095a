/**
 * The server entry: one teardown stack for a failed start and for a stop, and errors raised
 * outside the interceptor chain logged with their cause (and answered without detail).
 */
import { createHook } from "node:async_hooks";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { initCa, issueCert } from "../src/security/ca.js";
import { startServer } from "../src/server.js";
import { listenCleartext } from "../src/transport/listener.js";
import { listenTls } from "../src/transport/tls-listener.js";
import { h1 } from "./helpers/http.js";
import { freePort } from "./helpers/net.js";
import { memoryLogger, startTestServer } from "./helpers/server.js";

/** True when a port on 127.0.0.1 can be bound (nothing holds it). */
const portIsFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });

describe("server teardown", () => {
  it("undoes a start that fails half-way: the API port is released and the store closed", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "ao-teardown-"));
    const apiPort = await freePort();
    // The metrics port is taken, so the start fails after the API listener is up.
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", () => resolve()));
    const metricsPort = (blocker.address() as net.AddressInfo).port;
    const { logger } = memoryLogger();
    try {
      await expect(
        startServer(
          { listen: `127.0.0.1:${apiPort}`, metricsAddr: `127.0.0.1:${metricsPort}`, dataDir, busyTimeoutMs: 2000, rbacEnforcement: false },
          { logger, onFatal: () => {} },
        ),
      ).rejects.toThrow(/EADDRINUSE/);
      expect(await portIsFree(apiPort)).toBe(true);
      // The same data dir and port serve again.
      const again = await startServer({ listen: `127.0.0.1:${apiPort}`, dataDir, busyTimeoutMs: 2000, rbacEnforcement: false }, { logger, onFatal: () => {} });
      expect((await h1(`${again.url}/v1/health`)).status).toBe(200);
      await again.close();
      await again.close(); // a second stop does nothing
      expect(await portIsFree(apiPort)).toBe(true);
    } finally {
      blocker.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("a listener whose port is taken leaves no timer behind, cleartext or TLS", async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", () => resolve()));
    const port = (blocker.address() as net.AddressInfo).port;
    const dir = mkdtempSync(path.join(os.tmpdir(), "ao-listen-"));
    try {
      const ca = path.join(dir, "ca");
      await initCa(ca);
      const cert = await issueCert(ca, { profile: "server", name: "api" });
      const tls = { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) };
      const events = { onRefused: () => {}, onRevokedClosed: () => {} };
      for (const listen of [
        () => listenCleartext({ host: "127.0.0.1", port }, () => {}),
        () => listenTls({ host: "127.0.0.1", port }, () => {}, tls, events),
      ]) {
        const live = new Set<number>();
        const hook = createHook({
          init: (id, type) => void (type === "Timeout" && live.add(id)),
          destroy: (id) => void live.delete(id),
        }).enable();
        try {
          await expect(listen()).rejects.toThrow(/EADDRINUSE/);
          await new Promise((r) => setImmediate(r));
        } finally {
          hook.disable();
        }
        expect(live.size).toBe(0);
      }
    } finally {
      blocker.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("logs an error raised outside the interceptors with its cause, and answers internal without detail", async () => {
    const server = await startTestServer("sqlite", { rbacEnforcement: true });
    try {
      // A fault in the token lookup, which runs in the transport before any interceptor.
      (server.store as unknown as { rbac: { tokenByHash: () => never } }).rbac.tokenByHash = () => {
        throw new TypeError("token table unreadable", { cause: new Error("disk sector 7") });
      };
      const res = await h1(`${server.url}/v1/fleet`, { headers: { authorization: "Bearer ao_some-token" } });
      expect([res.status, res.json()]).toEqual([500, { code: "internal", message: "internal error" }]);
      const line = server.log.lines.find((l) => l.msg === "request failed before the interceptors");
      expect(line).toMatchObject({ level: 50, path: "/v1/fleet", err: { message: expect.stringContaining("token table unreadable"), stack: expect.any(String) } });
      expect(JSON.stringify(line)).toContain("disk sector 7");
    } finally {
      await server.stop();
    }
  });

  it.each([
    ["an HTTP/1.0 RPC call without Host", "POST /autonomy.v1.HealthService/Check HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", /^HTTP\/1\.1 400 [^]*"host: required/],
    ["a malformed absolute request target", "GET http://[x/v1 HTTP/1.1\r\nHost: x\r\n\r\n", /^HTTP\/1\.1 400 [^]*"path: not a valid request target"/],
  ])("answers %s with 400 and keeps serving", async (_name, request, expected) => {
    const server = await startTestServer("sqlite");
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(server.address.port, "127.0.0.1", () => socket.write(request));
        let text = "";
        socket.on("data", (c: Buffer) => {
          text += c.toString();
          if (text.includes("}")) socket.end();
        });
        socket.on("close", () => resolve(text));
        socket.on("error", reject);
      });
      expect(reply).toMatch(expected);
      expect((await h1(`${server.url}/v1/health`)).status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});

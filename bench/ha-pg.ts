/**
 * PostgreSQL for the HA tests and benchmark: a private server of Debian's binaries (started,
 * restarted, replicated by the caller) and a TCP proxy in front of it that partitions on demand.
 */
import { execFile } from "node:child_process";
import net from "node:net";
import { appendFileSync, chmodSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const BIN = "/usr/lib/postgresql/15/bin";
const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;

/** Runs a PostgreSQL program (as the postgres user when we are root: the server refuses root). */
async function pgRun(program: string, args: string[]): Promise<string> {
  const [cmd, argv] = asRoot ? ["runuser", ["-u", "postgres", "--", path.join(BIN, program), ...args]] : [path.join(BIN, program), args];
  const { stdout } = await run(cmd, argv, { maxBuffer: 16 << 20 });
  return stdout;
}

/**
 * A private PostgreSQL server (Debian's binaries) that a test starts, stops, restarts and
 * replicates, apart from the shared one: trust auth on 127.0.0.1, wal_level=replica.
 */
export class PgCluster {
  private constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  get adminUrl(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  static async create(opts: { synchronousStandby?: string } = {}): Promise<PgCluster> {
    const root = mkdtempSync(path.join(os.tmpdir(), "ha-pg-"));
    chmodSync(root, 0o777);
    const dir = path.join(root, "primary");
    await pgRun("initdb", ["-D", dir, "-A", "trust", "-U", "postgres", "--locale=C", "--encoding=UTF8"]);
    const port = await freePort();
    const c = new PgCluster(dir, port);
    appendFileSync(
      path.join(dir, "postgresql.conf"),
      [
        `port = ${port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${root}'`,
        "wal_level = replica",
        "max_wal_senders = 5",
        "max_connections = 200",
        "fsync = off",
        opts.synchronousStandby ? `synchronous_standby_names = '${opts.synchronousStandby}'` : "",
      ].join("\n") + "\n",
    );
    appendFileSync(path.join(dir, "pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n");
    await c.start();
    return c;
  }

  async start(): Promise<void> {
    await pgRun("pg_ctl", ["-D", this.dir, "-w", "-l", path.join(this.dir, "log"), "start"]);
  }
  async stop(): Promise<void> {
    await pgRun("pg_ctl", ["-D", this.dir, "-w", "-m", "fast", "stop"]).catch(() => undefined);
  }
  async restart(): Promise<void> {
    await pgRun("pg_ctl", ["-D", this.dir, "-w", "-m", "fast", "-l", path.join(this.dir, "log"), "restart"]);
  }

  /** A streaming standby of this server, made with pg_basebackup -R, started on a port of its own. */
  async standby(name: string): Promise<PgCluster> {
    const dir = path.join(path.dirname(this.dir), name);
    await pgRun("pg_basebackup", ["-h", "127.0.0.1", "-p", String(this.port), "-U", "postgres", "-D", dir, "-R", "-X", "stream"]);
    const port = await freePort();
    appendFileSync(path.join(dir, "postgresql.auto.conf"), `port = ${port}\nprimary_conninfo = 'host=127.0.0.1 port=${this.port} user=postgres application_name=${name}'\n`);
    const s = new PgCluster(dir, port);
    await s.start();
    return s;
  }

  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = [], db = "postgres"): Promise<T[]> {
    const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${this.port}/${db}` });
    await client.connect();
    try {
      return (await client.query<T>(sql, params)).rows;
    } finally {
      await client.end();
    }
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(path.dirname(this.dir), { recursive: true, force: true });
  }
}



/**
 * A TCP proxy in front of PostgreSQL that a test controls: "pass" forwards, "blackhole" keeps
 * every connection open but forwards nothing (a partition: the peers see silence, not a reset),
 * "drop" resets every connection and refuses new ones.
 */
export class TcpProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  private mode: "pass" | "blackhole" | "drop" = "pass";
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((client) => {
      if (this.mode === "drop") {
        client.destroy();
        return;
      }
      const upstream = net.connect(target.port, target.host);
      const pair = { a: client, b: upstream };
      this.pairs.add(pair);
      const forward = (from: net.Socket, to: net.Socket) =>
        from.on("data", (chunk) => {
          if (this.mode === "pass") to.write(chunk);
        });
      forward(client, upstream);
      forward(upstream, client);
      const end = () => {
        // Partitioned: neither side learns that the other closed.
        if (this.mode === "blackhole") return;
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** The URL of `url` through this proxy. */
  urlFor(url: string): string {
    const u = new URL(url);
    u.host = `127.0.0.1:${this.port}`;
    return u.toString();
  }

  /** Back to "pass" from "blackhole", the connections that lost bytes are reset (as TCP would, eventually). */
  set(mode: "pass" | "blackhole" | "drop"): void {
    const was = this.mode;
    this.mode = mode;
    if (mode === "drop" || (mode === "pass" && was === "blackhole")) {
      for (const p of this.pairs) {
        p.a.destroy();
        p.b.destroy();
      }
      this.pairs.clear();
    }
  }

  async close(): Promise<void> {
    this.mode = "drop";
    for (const p of this.pairs) {
      p.a.destroy();
      p.b.destroy();
    }
    await new Promise((r) => this.server.close(r));
  }
}

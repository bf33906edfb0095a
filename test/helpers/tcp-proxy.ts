import net from "node:net";

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

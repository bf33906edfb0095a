import type http2 from "node:http2";

export interface Reply {
  status: number;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
}

/** One request on an HTTP/2 session, its whole answer collected. */
export function request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Uint8Array): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let status = 0;
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => resolve({ status, trailers, body: Buffer.concat(chunks) }));
    stream.on("error", reject);
    if (body !== undefined) stream.end(body);
  });
}

/** Requests per second and latency percentiles of a run (sorts `latencies` in place). */
export function summarize(latencies: number[], seconds: number) {
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  return { requests: latencies.length, seconds, requestsPerSecond: latencies.length / seconds, p50Ms: at(0.5), p99Ms: at(0.99) };
}

/** A sample's value in Prometheus text: `name value`, or the first `name{...}` whose labels include `labels`; 0 when absent. */
export function metric(text: string, name: string, labels = ""): number {
  const line = text.split("\n").find((l) => l.startsWith(name + (labels ? `{${labels}}` : " ")) || (labels && l.startsWith(`${name}{`) && l.includes(labels)));
  return line ? Number(line.trim().split(" ").pop()) : 0;
}

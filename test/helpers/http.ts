import http2 from "node:http2";

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
  json(): any;
}

function response(status: number, headers: Record<string, string>, text: string): RawResponse {
  return { status, headers, text, json: () => JSON.parse(text) };
}

/** One HTTP/1.1 request (Node's fetch speaks HTTP/1.1). */
export async function h1(url: string, init: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  const res = await fetch(url, { method: init.method ?? "GET", body: init.body, headers: init.headers });
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => (headers[k] = v));
  return response(res.status, headers, await res.text());
}

/** One HTTP/2 request over cleartext with prior knowledge (h2c), on its own connection. */
export async function h2(url: string, init: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  const target = new URL(url);
  const session = http2.connect(target.origin);
  try {
    return await new Promise<RawResponse>((resolve, reject) => {
      session.once("error", reject);
      const req = session.request({ ":method": init.method ?? "GET", ":path": target.pathname + target.search, ...init.headers });
      const chunks: Buffer[] = [];
      let status = 0;
      const headers: Record<string, string> = {};
      req.on("response", (h) => {
        status = Number(h[":status"]);
        for (const [k, v] of Object.entries(h)) if (!k.startsWith(":")) headers[k] = String(v);
      });
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(response(status, headers, Buffer.concat(chunks).toString("utf8"))));
      req.on("error", reject);
      req.end(init.body);
    });
  } finally {
    session.close();
  }
}

export const TRANSPORTS = [
  ["HTTP/1.1", h1],
  ["HTTP/2 cleartext", h2],
] as const;

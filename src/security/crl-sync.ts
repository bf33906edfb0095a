/**
 * Pull-based CRL distribution: a server fetches the CRL other control planes serve
 * (GET /v1/crl) over mutual TLS, and takes one only when enough publishers serve the same
 * bytes, it is signed by the CA and in date, and its CRL number is not below the one in force
 * (no rollback). An accepted CRL is written atomically to --tls-crl-file, where the file
 * watcher applies it like any other change.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import https from "node:https";
import tls from "node:tls";
import { writeFileAtomic } from "../files.js";
import { checkCrl, type CheckedCrl } from "./pki.js";

export interface CrlSyncSettings {
  urls: readonly string[];
  minSources: number;
  /** Milliseconds between rounds after the first; 0: only the round at start. */
  intervalMs: number;
  /** Name expected in the publishers' certificates instead of the URL's host (--tls-crl-server-name). */
  serverName?: string;
  crlFile: string;
  caPem: Buffer;
  /** This server's certificate and key, presented to the publishers. */
  cert: Buffer;
  key: Buffer;
}

export type SyncOutcome = "accepted" | "unchanged" | "no_quorum" | "rollback_refused";

export interface SyncResult {
  outcome: SyncOutcome;
  detail: string;
  crl?: CheckedCrl;
}

const FETCH_TIMEOUT_MS = 10_000;
const MAX_CRL_BYTES = 16 * 1024 * 1024;

function fetchCrl(url: string, s: CrlSyncSettings): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = {
      ca: s.caPem,
      cert: s.cert,
      key: s.key,
      timeout: FETCH_TIMEOUT_MS,
      ...(s.serverName ? { servername: s.serverName, checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(s.serverName!, cert) } : {}),
    };
    const req = https.get(url, options, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`HTTP ${res.statusCode}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_CRL_BYTES) req.destroy(new Error("larger than 16 MiB"));
        else chunks.push(c);
      });
      res.on("end", () => resolve(Buffer.concat(chunks)));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${FETCH_TIMEOUT_MS / 1000}s`)));
    req.on("error", reject);
  });
}

/**
 * One round: fetch from every publisher, group identical answers, keep the valid ones that at
 * least minSources publishers serve, and write the newest if it moves forward. `onFailure`
 * hears each publisher that could not be fetched or served a CRL that does not check out.
 */
export async function syncCrlOnce(s: CrlSyncSettings, onFailure: (url: string, reason: string) => void): Promise<SyncResult> {
  const answers = await Promise.all(
    s.urls.map(async (url) => {
      try {
        return { url, body: await fetchCrl(url, s) };
      } catch (err) {
        onFailure(url, (err as Error).message);
        return undefined;
      }
    }),
  );
  const groups = new Map<string, { body: Buffer; urls: string[] }>();
  for (const a of answers) {
    if (!a) continue;
    const digest = createHash("sha256").update(a.body).digest("hex");
    const g = groups.get(digest) ?? { body: a.body, urls: [] };
    g.urls.push(a.url);
    groups.set(digest, g);
  }
  const candidates: { crl: CheckedCrl; urls: string[] }[] = [];
  for (const g of groups.values()) {
    try {
      candidates.push({ crl: await checkCrl(g.body, s.caPem.toString("utf8")), urls: g.urls });
    } catch (err) {
      for (const url of g.urls) onFailure(url, (err as Error).message);
    }
  }
  const agreed = candidates.filter((c) => c.urls.length >= s.minSources).sort((a, b) => (a.crl.number < b.crl.number ? 1 : -1));
  if (agreed.length === 0) {
    const best = Math.max(0, ...candidates.map((c) => c.urls.length));
    return { outcome: "no_quorum", detail: `no CRL is served by ${s.minSources} publisher(s) alike (at most ${best} agree)` };
  }
  const chosen = agreed[0].crl;
  const current = existsSync(s.crlFile) ? readFileSync(s.crlFile) : undefined;
  let currentCrl: CheckedCrl | undefined;
  if (current) {
    try {
      currentCrl = await checkCrl(current, s.caPem.toString("utf8"));
    } catch {
      currentCrl = undefined; // a bad file on disk is replaced by an agreed good CRL
    }
  }
  if (currentCrl && chosen.raw.equals(currentCrl.raw)) return { outcome: "unchanged", detail: `CRL number ${chosen.number} is in force`, crl: chosen };
  if (currentCrl && chosen.number <= currentCrl.number) {
    return {
      outcome: "rollback_refused",
      detail: `the publishers agree on CRL number ${chosen.number}, not newer than number ${currentCrl.number} in force`,
    };
  }
  writeFileAtomic(s.crlFile, chosen.raw);
  return { outcome: "accepted", detail: `CRL number ${chosen.number} from ${agreed[0].urls.length} publisher(s)`, crl: chosen };
}

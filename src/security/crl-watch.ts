import { readFileSync, unwatchFile, watch, watchFile, type FSWatcher } from "node:fs";
import { readFlagFile } from "../files.js";
import path from "node:path";
import { checkCrl, type CheckedCrl } from "./pki.js";

/** Files given to `serve --tls-*`, read and checked at start. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  caFile?: string;
  crlFile?: string;
  /** Pull the CRL from other control planes into crlFile (--tls-crl-sync-*). */
  crlSync?: { urls: string[]; minSources: number; intervalMs: number; serverName?: string };
}

export interface LoadedTls {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  crl?: CheckedCrl;
}

/**
 * Reads the TLS files and checks them, failing closed: a CRL that is missing, not signed by
 * the CA or past its nextUpdate stops the start with one line saying which and why.
 */
export async function loadTlsFiles(files: TlsFiles): Promise<LoadedTls> {
  if (files.crlFile !== undefined && files.caFile === undefined) throw new Error("--tls-crl-file needs --tls-ca-file");
  const cert = readFlagFile("--tls-cert-file", files.certFile);
  const key = readFlagFile("--tls-key-file", files.keyFile);
  const ca = files.caFile === undefined ? undefined : readFlagFile("--tls-ca-file", files.caFile);
  let crl: CheckedCrl | undefined;
  if (files.crlFile !== undefined) {
    const raw = readFlagFile("--tls-crl-file", files.crlFile);
    try {
      crl = await checkCrl(raw, ca!.toString("utf8"));
    } catch (err) {
      throw new Error(`--tls-crl-file ${files.crlFile}: ${(err as Error).message}`);
    }
  }
  return { cert, key, ca, crl };
}

/**
 * Watches a CRL file. A change that holds a good CRL (signed by the CA, not expired, other
 * bytes) is handed to onGood; a bad one to onBad, and the last good CRL stays in force.
 * Writers may replace the file (rename) or rewrite it in place: the directory is watched,
 * changes are debounced, and a slow poll catches file systems without change events.
 */
export function watchCrlFile(
  file: string,
  caPem: string,
  initial: CheckedCrl,
  handlers: { onGood(crl: CheckedCrl): void; onBad(err: Error): void },
): { close(): void } {
  let current = initial;
  let timer: NodeJS.Timeout | undefined;
  let checking = Promise.resolve();
  const check = () => {
    checking = checking.then(async () => {
      let raw: Buffer;
      try {
        raw = readFileSync(file);
      } catch (err) {
        handlers.onBad(new Error(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`));
        return;
      }
      if (raw.equals(current.raw)) return;
      try {
        current = await checkCrl(raw, caPem);
        handlers.onGood(current);
      } catch (err) {
        handlers.onBad(err as Error);
      }
    });
  };
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(check, 50);
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(path.dirname(file), (_event, name) => {
      if (name === null || name === path.basename(file)) soon();
    });
    watcher.on("error", () => {});
  } catch {
    watcher = undefined;
  }
  watchFile(file, { interval: 1000, persistent: false }, soon);
  return {
    close() {
      clearTimeout(timer);
      watcher?.close();
      unwatchFile(file);
    },
  };
}

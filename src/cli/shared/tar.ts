import { gzipSync } from "node:zlib";

/** One regular file of an archive. */
export interface TarEntry {
  /** A relative path of at most 100 bytes, "/" separated. */
  name: string;
  content: Buffer;
  mode?: number;
  mtimeMs?: number;
}

const BLOCK = 512;

function field(header: Buffer, offset: number, length: number, value: string): void {
  header.write(value, offset, Math.min(length, Buffer.byteLength(value)), "utf8");
}

const octal = (n: number, length: number) => n.toString(8).padStart(length - 1, "0") + "\0";

/** The 512-byte POSIX ustar header of a regular file. */
function header(e: TarEntry): Buffer {
  if (Buffer.byteLength(e.name) > 100 || e.name.startsWith("/") || e.name.split("/").includes("..")) {
    throw new Error(`tar entry "${e.name}": a relative path of at most 100 bytes`);
  }
  const h = Buffer.alloc(BLOCK);
  field(h, 0, 100, e.name);
  field(h, 100, 8, octal(e.mode ?? 0o600, 8));
  field(h, 108, 8, octal(0, 8));
  field(h, 116, 8, octal(0, 8));
  field(h, 124, 12, octal(e.content.length, 12));
  field(h, 136, 12, octal(Math.floor((e.mtimeMs ?? Date.now()) / 1000), 12));
  h.fill(" ", 148, 156); // the checksum counts its own field as spaces
  field(h, 156, 1, "0");
  field(h, 257, 6, "ustar\0");
  field(h, 263, 2, "00");
  let sum = 0;
  for (const byte of h) sum += byte;
  field(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/**
 * A gzip-compressed POSIX ustar archive of regular files: what `tar -xzf` reads everywhere.
 * A bundle is a few small files, so the archive is built in memory; no dependency needed.
 */
export function tarGz(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(header(e), e.content);
    const pad = (BLOCK - (e.content.length % BLOCK)) % BLOCK;
    if (pad > 0) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return gzipSync(Buffer.concat(parts));
}

import { closeSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import path from "node:path";

/**
 * Replaces a file atomically and durably: a temporary file written and fsynced, renamed over
 * the target, and the directory fsynced, so a crash leaves the old content or the new one.
 * Readers (a server watching a CRL, say) never see half a file.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", mode);
  try {
    // The mode given, whatever the umask (or a leftover temporary file) would have made it.
    fchmodSync(fd, mode);
    const buf = typeof data === "string" ? Buffer.from(data) : data;
    // On a filling disk a write may take only part of the bytes; only the next one fails (ENOSPC).
    for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, file);
  const dirFd = openSync(path.dirname(file), "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

/** Why a file could not be read, in a few words (`no such file`, `is a directory`), for a message naming it. */
export function fileErrorReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES") return "permission denied";
  if (code === "EISDIR") return "is a directory, not a file";
  return (err as Error).message;
}

/** Reads a file a flag names; errors name the flag and the file, in one line. */
export function readFlagFile(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`${flag} ${file}: ${fileErrorReason(err)}`);
  }
}

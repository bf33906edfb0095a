import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { packageRoot } from "./paths.js";

export interface BuildInfo {
  version: string;
  build_sha: string;
  build_date: string;
  tier: "self-hosted";
  platform: string;
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** Version from package.json, commit and date from dist/build-info.json (written at build time). */
export function buildInfo(): BuildInfo {
  const pkg = readJson(path.join(packageRoot, "package.json"));
  const build = readJson(path.join(packageRoot, "dist", "build-info.json"));
  return {
    version: String(pkg.version ?? "unknown"),
    build_sha: String(build.sha ?? "unknown"),
    build_date: String(build.date ?? "unknown"),
    tier: "self-hosted",
    platform: `${os.platform()}/${os.arch()} node ${process.version}`,
  };
}

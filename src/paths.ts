import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

function findPackageRoot(start: string): string {
  let dir = start;
  while (!existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("package.json not found above " + start);
    dir = parent;
  }
  return dir;
}

/** The installed package's root, the same whether running from src/ (tests) or dist/. */
export const packageRoot = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Schema migrations shipped with the package, one folder per dialect. */
export function migrationsFolder(dialect: "sqlite" | "pg"): string {
  return path.join(packageRoot, "migrations", dialect);
}

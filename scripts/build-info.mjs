// Writes dist/build-info.json (commit and build time) for `autonomy-orchestrator version`,
// and makes the compiled programs executable (they start through their #! line).
import { execSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

let sha = process.env.AUTONOMY_BUILD_SHA ?? "";
if (!sha) {
  try {
    sha = execSync("git rev-parse HEAD", { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    sha = "unknown";
  }
}
mkdirSync("dist", { recursive: true });
writeFileSync("dist/build-info.json", JSON.stringify({ sha, date: new Date().toISOString() }) + "\n");
const pkg = JSON.parse(readFileSync("package.json", "utf8"));
for (const bin of Object.values(pkg.bin)) chmodSync(bin, 0o755);

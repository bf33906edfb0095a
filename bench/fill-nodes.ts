import path from "node:path";
import Database from "better-sqlite3";
import { DB_FILE_NAME } from "../src/store/sqlite/store.js";
import { nodeName } from "./fleet-load.js";
import { startOrchestrator } from "./processes.js";

/**
 * A fleet of `nodes` nodes written straight into a server's database (enrolling 100,000 through
 * the API would take minutes): last seen within the last 90 s, every 20th ten minutes ago, every
 * 50th never; then a release, whose trigger sets every node's desired release.
 */
export async function fillNodes(dataDir: string, nodes: number): Promise<void> {
  const first = await startOrchestrator(dataDir); // applies the migrations
  await first.stop();
  const db = new Database(path.join(dataDir, DB_FILE_NAME));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = OFF");
  const now = Date.now();
  const insert = db.prepare(
    "INSERT INTO nodes (node_id, channel, labels, agent_version, enrolled_at_ms, last_seen_ms, reported_release_id, drained, drain_reason) VALUES (?, 'bench', '{}', 'bench', ?, ?, ?, 0, '')",
  );
  db.transaction(() => {
    for (let n = 0; n < nodes; n++) {
      const seen = n % 50 === 0 ? null : n % 20 === 0 ? now - 600_000 : now - ((n * 7919) % 90_000);
      insert.run(nodeName(n), now - 3_600_000, seen, seen === null ? null : "bench-r0");
    }
    db.prepare("INSERT INTO releases (release_id, channel, version, artifacts, notes, published_at_ms, staged) VALUES ('bench-p1', 'bench', '1', '[]', '', ?, 0)").run(now - 3_000_000);
  })();
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
}


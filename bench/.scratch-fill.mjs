import Database from "better-sqlite3";
import { INSERT_SQL } from "../dist/bench/sqlite-schema.js";
import { jsonBatch, rowOf } from "../dist/bench/workload.js";
const db = new Database(process.argv[2]); db.pragma("journal_mode = WAL"); db.pragma("synchronous = OFF");
const ins = db.prepare(INSERT_SQL);
const tx = db.transaction((b0) => { for (let b = b0; b < b0 + 100; b++) for (const e of jsonBatch(b)) ins.run(rowOf(e, Date.now())); });
for (let b = 0; b < 2000; b += 100) tx(b);
db.pragma("wal_checkpoint(TRUNCATE)"); db.close();

CREATE TABLE "fleet_seen" (
	"channel" text NOT NULL,
	"seen_s" bigint NOT NULL,
	"n" integer NOT NULL,
	CONSTRAINT "fleet_seen_channel_seen_s_pk" PRIMARY KEY("channel","seen_s")
);
--> statement-breakpoint
CREATE TABLE "fleet_totals" (
	"channel" text NOT NULL,
	"drained" boolean NOT NULL,
	"drifted" boolean NOT NULL,
	"seen" boolean NOT NULL,
	"n" integer NOT NULL,
	CONSTRAINT "fleet_totals_channel_drained_drifted_seen_pk" PRIMARY KEY("channel","drained","drifted","seen")
);
--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "desired_release_id" text;--> statement-breakpoint
CREATE INDEX "fleet_seen_seen" ON "fleet_seen" USING btree ("seen_s");--> statement-breakpoint
CREATE INDEX "nodes_channel_seen" ON "nodes" USING btree ("channel","last_seen_ms");
--> statement-breakpoint
-- Each node's desired release (the rule of src/services/desired-release.ts): the newest move
-- of a rollout plan when it is not older than the channel's latest unstaged release, else that release.
UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1));
--> statement-breakpoint
INSERT INTO fleet_totals (channel, drained, drifted, seen, n)
  SELECT channel, drained, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '')), last_seen_ms IS NOT NULL, count(*) FROM nodes GROUP BY 1, 2, 3, 4;
--> statement-breakpoint
INSERT INTO fleet_seen (channel, seen_s, n)
  SELECT channel, last_seen_ms / 1000, count(*) FROM nodes WHERE last_seen_ms IS NOT NULL GROUP BY 1, 2;
--> statement-breakpoint
-- Applies the changes of one statement on nodes to the counts, in key order (replicas
-- flushing together lock the counter rows in the same order), dropping emptied seconds.
CREATE FUNCTION fleet_counts_apply(d_channel text[], d_seen bigint[], d_drained boolean[], d_drifted boolean[], d_k integer[])
RETURNS void LANGUAGE sql AS $$
  INSERT INTO fleet_seen AS f (channel, seen_s, n)
    SELECT c, s / 1000, sum(k) FROM unnest(d_channel, d_seen, d_k) AS d(c, s, k)
    WHERE s IS NOT NULL GROUP BY 1, 2 HAVING sum(k) <> 0 ORDER BY 1, 2
    ON CONFLICT (channel, seen_s) DO UPDATE SET n = f.n + excluded.n;
  DELETE FROM fleet_seen f USING unnest(d_channel, d_seen) AS d(c, s)
    WHERE f.channel = d.c AND f.seen_s = d.s / 1000 AND f.n = 0;
  INSERT INTO fleet_totals AS t (channel, drained, drifted, seen, n)
    SELECT c, dr, df, s IS NOT NULL, sum(k) FROM unnest(d_channel, d_seen, d_drained, d_drifted, d_k) AS d(c, s, dr, df, k)
    GROUP BY 1, 2, 3, 4 HAVING sum(k) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (channel, drained, drifted, seen) DO UPDATE SET n = t.n + excluded.n;
$$;
--> statement-breakpoint
CREATE FUNCTION fleet_counts_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fleet_counts_apply(array_agg(c), array_agg(s), array_agg(dr), array_agg(df), array_agg(k))
    FROM (SELECT channel, last_seen_ms, drained, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '')), 1 FROM new_rows) AS d(c, s, dr, df, k);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION fleet_counts_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fleet_counts_apply(array_agg(c), array_agg(s), array_agg(dr), array_agg(df), array_agg(k))
    FROM (SELECT channel, last_seen_ms, drained, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '')), -1 FROM old_rows UNION ALL SELECT channel, last_seen_ms, drained, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '')), 1 FROM new_rows) AS d(c, s, dr, df, k);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION fleet_counts_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fleet_counts_apply(array_agg(c), array_agg(s), array_agg(dr), array_agg(df), array_agg(k))
    FROM (SELECT channel, last_seen_ms, drained, (desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '')), -1 FROM old_rows) AS d(c, s, dr, df, k);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER fleet_counts_insert AFTER INSERT ON nodes REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet_counts_on_insert();
--> statement-breakpoint
CREATE TRIGGER fleet_counts_update AFTER UPDATE ON nodes REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet_counts_on_update();
--> statement-breakpoint
CREATE TRIGGER fleet_counts_delete AFTER DELETE ON nodes REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet_counts_on_delete();
--> statement-breakpoint
CREATE FUNCTION nodes_desired_on_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1))
  WHERE channel = NEW.channel;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER nodes_desired_on_release AFTER INSERT ON releases FOR EACH ROW WHEN (NOT NEW.staged) EXECUTE FUNCTION nodes_desired_on_release();
--> statement-breakpoint
CREATE FUNCTION nodes_desired_on_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1))
  WHERE node_id IN (SELECT node_id FROM new_moves);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER nodes_desired_on_moves AFTER INSERT ON rollout_moves REFERENCING NEW TABLE AS new_moves FOR EACH STATEMENT EXECUTE FUNCTION nodes_desired_on_moves();

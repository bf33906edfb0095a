CREATE TABLE `fleet_seen` (
	`channel` text NOT NULL,
	`seen_s` integer NOT NULL,
	`n` integer NOT NULL,
	PRIMARY KEY(`channel`, `seen_s`)
);
--> statement-breakpoint
CREATE INDEX `fleet_seen_seen` ON `fleet_seen` (`seen_s`);--> statement-breakpoint
CREATE TABLE `fleet_totals` (
	`channel` text NOT NULL,
	`drained` integer NOT NULL,
	`drifted` integer NOT NULL,
	`seen` integer NOT NULL,
	`n` integer NOT NULL,
	PRIMARY KEY(`channel`, `drained`, `drifted`, `seen`)
);
--> statement-breakpoint
ALTER TABLE `nodes` ADD `desired_release_id` text;--> statement-breakpoint
CREATE INDEX `nodes_channel_seen` ON `nodes` (`channel`,`last_seen_ms`);
--> statement-breakpoint
-- Each node's desired release (the rule of src/services/desired-release.ts): the newest move
-- of a rollout plan when it is not older than the channel's latest unstaged release, else that release.
UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1));
--> statement-breakpoint
INSERT INTO fleet_totals (channel, drained, drifted, seen, n)
  SELECT channel, drained, (nodes.desired_release_id IS NOT NULL AND nodes.desired_release_id <> coalesce(nodes.reported_release_id, '')), last_seen_ms IS NOT NULL, count(*) FROM nodes GROUP BY 1, 2, 3, 4;
--> statement-breakpoint
INSERT INTO fleet_seen (channel, seen_s, n)
  SELECT channel, last_seen_ms / 1000, count(*) FROM nodes WHERE last_seen_ms IS NOT NULL GROUP BY 1, 2;
--> statement-breakpoint
CREATE TRIGGER fleet_counts_node_insert AFTER INSERT ON nodes BEGIN
  INSERT INTO fleet_totals (channel, drained, drifted, seen, n) VALUES (NEW.channel, NEW.drained, (NEW.desired_release_id IS NOT NULL AND NEW.desired_release_id <> coalesce(NEW.reported_release_id, '')), NEW.last_seen_ms IS NOT NULL, 1)
    ON CONFLICT (channel, drained, drifted, seen) DO UPDATE SET n = n + 1;
  INSERT INTO fleet_seen (channel, seen_s, n) SELECT NEW.channel, NEW.last_seen_ms / 1000, 1 WHERE NEW.last_seen_ms IS NOT NULL
    ON CONFLICT (channel, seen_s) DO UPDATE SET n = n + 1;
END;
--> statement-breakpoint
CREATE TRIGGER fleet_counts_node_delete AFTER DELETE ON nodes BEGIN
  UPDATE fleet_totals SET n = n - 1
    WHERE channel = OLD.channel AND drained = OLD.drained AND drifted = (OLD.desired_release_id IS NOT NULL AND OLD.desired_release_id <> coalesce(OLD.reported_release_id, '')) AND seen = (OLD.last_seen_ms IS NOT NULL);
  UPDATE fleet_seen SET n = n - 1 WHERE channel = OLD.channel AND seen_s = OLD.last_seen_ms / 1000;
  DELETE FROM fleet_seen WHERE channel = OLD.channel AND seen_s = OLD.last_seen_ms / 1000 AND n = 0;
END;
--> statement-breakpoint
CREATE TRIGGER fleet_totals_node_update AFTER UPDATE ON nodes
  WHEN OLD.channel IS NOT NEW.channel OR OLD.drained IS NOT NEW.drained
    OR (OLD.last_seen_ms IS NULL) <> (NEW.last_seen_ms IS NULL) OR (OLD.desired_release_id IS NOT NULL AND OLD.desired_release_id <> coalesce(OLD.reported_release_id, '')) <> (NEW.desired_release_id IS NOT NULL AND NEW.desired_release_id <> coalesce(NEW.reported_release_id, ''))
BEGIN
  UPDATE fleet_totals SET n = n - 1
    WHERE channel = OLD.channel AND drained = OLD.drained AND drifted = (OLD.desired_release_id IS NOT NULL AND OLD.desired_release_id <> coalesce(OLD.reported_release_id, '')) AND seen = (OLD.last_seen_ms IS NOT NULL);
  INSERT INTO fleet_totals (channel, drained, drifted, seen, n) VALUES (NEW.channel, NEW.drained, (NEW.desired_release_id IS NOT NULL AND NEW.desired_release_id <> coalesce(NEW.reported_release_id, '')), NEW.last_seen_ms IS NOT NULL, 1)
    ON CONFLICT (channel, drained, drifted, seen) DO UPDATE SET n = n + 1;
END;
--> statement-breakpoint
CREATE TRIGGER fleet_seen_node_update AFTER UPDATE ON nodes
  WHEN OLD.channel IS NOT NEW.channel OR (OLD.last_seen_ms / 1000) IS NOT (NEW.last_seen_ms / 1000)
BEGIN
  UPDATE fleet_seen SET n = n - 1 WHERE channel = OLD.channel AND seen_s = OLD.last_seen_ms / 1000;
  DELETE FROM fleet_seen WHERE channel = OLD.channel AND seen_s = OLD.last_seen_ms / 1000 AND n = 0;
  INSERT INTO fleet_seen (channel, seen_s, n) SELECT NEW.channel, NEW.last_seen_ms / 1000, 1 WHERE NEW.last_seen_ms IS NOT NULL
    ON CONFLICT (channel, seen_s) DO UPDATE SET n = n + 1;
END;
--> statement-breakpoint
CREATE TRIGGER nodes_desired_on_release AFTER INSERT ON releases WHEN NEW.staged = 0 BEGIN
  UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1))
  WHERE channel = NEW.channel;
END;
--> statement-breakpoint
CREATE TRIGGER nodes_desired_on_move AFTER INSERT ON rollout_moves BEGIN
  UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1))
  WHERE node_id = NEW.node_id;
END;

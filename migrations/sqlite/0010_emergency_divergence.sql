CREATE TABLE `emergency_stop` (
	`id` integer PRIMARY KEY NOT NULL,
	`active` integer NOT NULL,
	`since_ms` integer,
	`stopped_by` text NOT NULL,
	`reason` text NOT NULL,
	`resumed_at_ms` integer,
	`resumed_by` text NOT NULL,
	`resume_reason` text NOT NULL
);
--> statement-breakpoint
ALTER TABLE `nodes` ADD `diverged_since_ms` integer;--> statement-breakpoint
ALTER TABLE `nodes` ADD `pinned_release_id` text;--> statement-breakpoint
ALTER TABLE `nodes` ADD `pinned_at_ms` integer;--> statement-breakpoint
ALTER TABLE `nodes` ADD `pin_reason` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `nodes` ADD `reapply_release_id` text;--> statement-breakpoint
ALTER TABLE `nodes` ADD `reapply_requested_at_ms` integer;--> statement-breakpoint
CREATE INDEX `nodes_diverged` ON `nodes` (`diverged_since_ms`,`node_id`);--> statement-breakpoint
CREATE INDEX `nodes_channel_diverged` ON `nodes` (`channel`,`diverged_since_ms`,`node_id`);--> statement-breakpoint
INSERT INTO `emergency_stop` (`id`, `active`, `since_ms`, `stopped_by`, `reason`, `resumed_at_ms`, `resumed_by`, `resume_reason`) VALUES (1, 0, NULL, '', '', NULL, '', '');
--> statement-breakpoint
-- Nodes already diverged when this migration runs: since when is unknown, so from now.
UPDATE nodes SET diverged_since_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
  WHERE desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '');
--> statement-breakpoint
CREATE TRIGGER nodes_diverged_insert AFTER INSERT ON nodes
  WHEN NEW.desired_release_id IS NOT NULL AND NEW.desired_release_id <> coalesce(NEW.reported_release_id, '')
BEGIN
  UPDATE nodes SET diverged_since_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE node_id = NEW.node_id;
END;
--> statement-breakpoint
-- A new desired release starts the clock again; a new reported release keeps it running while the two still differ.
CREATE TRIGGER nodes_diverged_update AFTER UPDATE OF desired_release_id, reported_release_id ON nodes
  WHEN OLD.desired_release_id IS NOT NEW.desired_release_id OR OLD.reported_release_id IS NOT NEW.reported_release_id
BEGIN
  UPDATE nodes SET diverged_since_ms = CASE
      WHEN NEW.desired_release_id IS NULL OR NEW.desired_release_id = coalesce(NEW.reported_release_id, '') THEN NULL
      WHEN OLD.desired_release_id IS NOT NEW.desired_release_id OR OLD.diverged_since_ms IS NULL THEN CAST(unixepoch('subsec') * 1000 AS INTEGER)
      ELSE OLD.diverged_since_ms END
    WHERE node_id = NEW.node_id;
END;
--> statement-breakpoint
-- A pinned node (reconcile --strategy accept) does not follow its channel's new unstaged releases.
DROP TRIGGER nodes_desired_on_release;
--> statement-breakpoint
CREATE TRIGGER nodes_desired_on_release AFTER INSERT ON releases WHEN NEW.staged = 0 BEGIN
  UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1))
  WHERE channel = NEW.channel AND pinned_release_id IS NULL;
END;
--> statement-breakpoint
-- The next plan that moves a pinned node removes its pin.
DROP TRIGGER nodes_desired_on_move;
--> statement-breakpoint
CREATE TRIGGER nodes_desired_on_move AFTER INSERT ON rollout_moves BEGIN
  UPDATE nodes SET pinned_release_id = NULL, pinned_at_ms = NULL, pin_reason = '', desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND r.staged = 0 ORDER BY r.seq DESC LIMIT 1))
  WHERE node_id = NEW.node_id;
END;

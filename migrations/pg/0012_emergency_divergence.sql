CREATE TABLE "emergency_stop" (
	"id" integer PRIMARY KEY NOT NULL,
	"active" boolean NOT NULL,
	"since_ms" bigint,
	"stopped_by" text NOT NULL,
	"reason" text NOT NULL,
	"resumed_at_ms" bigint,
	"resumed_by" text NOT NULL,
	"resume_reason" text NOT NULL
);
--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "diverged_since_ms" bigint;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "pinned_release_id" text;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "pinned_at_ms" bigint;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "pin_reason" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "reapply_release_id" text;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "reapply_requested_at_ms" bigint;--> statement-breakpoint
CREATE INDEX "nodes_diverged" ON "nodes" USING btree ("diverged_since_ms","node_id");--> statement-breakpoint
CREATE INDEX "nodes_channel_diverged" ON "nodes" USING btree ("channel","diverged_since_ms","node_id");--> statement-breakpoint
INSERT INTO "emergency_stop" ("id", "active", "since_ms", "stopped_by", "reason", "resumed_at_ms", "resumed_by", "resume_reason") VALUES (1, false, NULL, '', '', NULL, '', '');
--> statement-breakpoint
-- Nodes already diverged when this migration runs: since when is unknown, so from now.
UPDATE nodes SET diverged_since_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
  WHERE desired_release_id IS NOT NULL AND desired_release_id <> coalesce(reported_release_id, '');
--> statement-breakpoint
-- A new desired release starts the clock again; a new reported release keeps it running while the two still differ.
CREATE FUNCTION nodes_diverged_since() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.desired_release_id IS NULL OR NEW.desired_release_id = coalesce(NEW.reported_release_id, '') THEN
    NEW.diverged_since_ms := NULL;
  ELSIF TG_OP = 'INSERT' THEN
    NEW.diverged_since_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  ELSIF OLD.desired_release_id IS DISTINCT FROM NEW.desired_release_id OR OLD.diverged_since_ms IS NULL THEN
    NEW.diverged_since_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
CREATE TRIGGER nodes_diverged_since BEFORE INSERT OR UPDATE OF desired_release_id, reported_release_id ON nodes
  FOR EACH ROW EXECUTE FUNCTION nodes_diverged_since();
--> statement-breakpoint
-- A pinned node (reconcile --strategy accept) does not follow its channel's new unstaged releases.
CREATE OR REPLACE FUNCTION nodes_desired_on_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE nodes SET desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1))
  WHERE channel = NEW.channel AND pinned_release_id IS NULL;
  RETURN NULL;
END $$;
--> statement-breakpoint
-- The next plan that moves a pinned node removes its pin.
CREATE OR REPLACE FUNCTION nodes_desired_on_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE nodes SET pinned_release_id = NULL, pinned_at_ms = NULL, pin_reason = '', desired_release_id = coalesce(
    (SELECT CASE WHEN m.moved_at_ms >= coalesce((SELECT r.published_at_ms FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1), -1)
                  AND EXISTS (SELECT 1 FROM releases r WHERE r.release_id = m.release_id)
             THEN m.release_id END
       FROM rollout_moves m WHERE m.node_id = nodes.node_id ORDER BY m.seq DESC LIMIT 1),
    (SELECT r.release_id FROM releases r WHERE r.channel = nodes.channel AND NOT r.staged ORDER BY r.seq DESC LIMIT 1))
  WHERE node_id IN (SELECT node_id FROM new_moves);
  RETURN NULL;
END $$;

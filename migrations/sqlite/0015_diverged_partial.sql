DROP INDEX `nodes_diverged`;--> statement-breakpoint
DROP INDEX `nodes_channel_diverged`;--> statement-breakpoint
CREATE INDEX `nodes_diverged` ON `nodes` (`diverged_since_ms`,`node_id`) WHERE "nodes"."diverged_since_ms" IS NOT NULL;--> statement-breakpoint
CREATE INDEX `nodes_channel_diverged` ON `nodes` (`channel`,`diverged_since_ms`,`node_id`) WHERE "nodes"."diverged_since_ms" IS NOT NULL;
CREATE TABLE `node_acks` (
	`release_id` text NOT NULL,
	`node_id` text NOT NULL,
	`state` text NOT NULL,
	`message` text NOT NULL,
	`reported_release_id` text NOT NULL,
	`observed_at_ms` integer NOT NULL,
	`updated_at_ms` integer NOT NULL,
	PRIMARY KEY(`release_id`, `node_id`),
	FOREIGN KEY (`release_id`) REFERENCES `releases`(`release_id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`node_id`) REFERENCES `nodes`(`node_id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `node_acks_node_updated` ON `node_acks` (`node_id`,`updated_at_ms`);--> statement-breakpoint
CREATE TABLE `nodes` (
	`node_id` text PRIMARY KEY NOT NULL,
	`channel` text NOT NULL,
	`labels` text NOT NULL,
	`agent_version` text NOT NULL,
	`enrolled_at_ms` integer NOT NULL,
	`last_seen_ms` integer,
	`reported_release_id` text,
	`drained` integer NOT NULL,
	`drain_reason` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `nodes_channel_id` ON `nodes` (`channel`,`node_id`);--> statement-breakpoint
CREATE TABLE `releases` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`release_id` text NOT NULL,
	`channel` text NOT NULL,
	`version` text NOT NULL,
	`artifacts` text NOT NULL,
	`notes` text NOT NULL,
	`published_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `releases_release_id_unique` ON `releases` (`release_id`);--> statement-breakpoint
CREATE INDEX `releases_channel_seq` ON `releases` (`channel`,`seq`);
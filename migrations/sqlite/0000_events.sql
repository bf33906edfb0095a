CREATE TABLE `events` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`event_id` text NOT NULL,
	`event_type` text NOT NULL,
	`node_id` text NOT NULL,
	`ts_seconds` integer NOT NULL,
	`ts_nanos` integer NOT NULL,
	`lock_fingerprint` text,
	`release_id` text,
	`payload` text,
	`received_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `events_event_id_unique` ON `events` (`event_id`);--> statement-breakpoint
CREATE INDEX `events_node_seq` ON `events` (`node_id`,`seq`);--> statement-breakpoint
CREATE INDEX `events_type_seq` ON `events` (`event_type`,`seq`);
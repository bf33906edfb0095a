CREATE TABLE `audit_records` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at_ms` integer NOT NULL,
	`event_name` text NOT NULL,
	`category` text NOT NULL,
	`action` text NOT NULL,
	`outcome` text NOT NULL,
	`actor` text NOT NULL,
	`resource_type` text NOT NULL,
	`resource` text NOT NULL,
	`source` text NOT NULL,
	`fields_json` text NOT NULL,
	`reason` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `audit_records_resource` ON `audit_records` (`resource_type`,`resource`,`seq`);--> statement-breakpoint
CREATE TABLE `rollout_moves` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`plan_id` text NOT NULL,
	`stage_id` text NOT NULL,
	`node_id` text NOT NULL,
	`release_id` text NOT NULL,
	`moved_at_ms` integer NOT NULL,
	FOREIGN KEY (`plan_id`) REFERENCES `rollout_plans`(`plan_id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `rollout_moves_plan_node` ON `rollout_moves` (`plan_id`,`node_id`);--> statement-breakpoint
CREATE INDEX `rollout_moves_node_seq` ON `rollout_moves` (`node_id`,`seq`);--> statement-breakpoint
CREATE TABLE `rollout_plans` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`plan_id` text NOT NULL,
	`release_id` text NOT NULL,
	`channel` text NOT NULL,
	`spec` text NOT NULL,
	`signature` text NOT NULL,
	`key_id` text NOT NULL,
	`created_at_ms` integer NOT NULL,
	FOREIGN KEY (`release_id`) REFERENCES `releases`(`release_id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `rollout_plans_plan_id_unique` ON `rollout_plans` (`plan_id`);--> statement-breakpoint
CREATE INDEX `rollout_plans_channel` ON `rollout_plans` (`channel`,`seq`);--> statement-breakpoint
CREATE TABLE `rollout_status` (
	`plan_id` text PRIMARY KEY NOT NULL,
	`version` integer NOT NULL,
	`phase` text NOT NULL,
	`current_stage` integer NOT NULL,
	`reason` text NOT NULL,
	`updated_at_ms` integer NOT NULL,
	`stages` text NOT NULL,
	FOREIGN KEY (`plan_id`) REFERENCES `rollout_plans`(`plan_id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `rollout_status_phase` ON `rollout_status` (`phase`);--> statement-breakpoint
CREATE TABLE `signing_keys` (
	`key_id` text PRIMARY KEY NOT NULL,
	`public_key_pem` text NOT NULL,
	`created_at_ms` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `releases` ADD `staged` integer DEFAULT false NOT NULL;
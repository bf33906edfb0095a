CREATE TABLE `workload_commands` (
	`command_id` text PRIMARY KEY NOT NULL,
	`node_id` text NOT NULL,
	`replica_id` text NOT NULL,
	`kind` text NOT NULL,
	`payload` text NOT NULL,
	`created_at_ms` integer NOT NULL,
	`acked_at_ms` integer,
	`ok` integer,
	`message` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `workload_commands_node` ON `workload_commands` (`node_id`,`acked_at_ms`,`created_at_ms`);--> statement-breakpoint
CREATE TABLE `workload_nodes` (
	`node_id` text PRIMARY KEY NOT NULL,
	`capacity_cpu_millis` integer NOT NULL,
	`capacity_memory_bytes` integer NOT NULL,
	`usage_cpu_millis` integer NOT NULL,
	`usage_memory_bytes` integer NOT NULL,
	`replicas` text NOT NULL,
	`reported_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `workload_replicas` (
	`service` text NOT NULL,
	`idx` integer NOT NULL,
	`node_id` text NOT NULL,
	`generation` integer NOT NULL,
	`desired_state` text NOT NULL,
	`state` text NOT NULL,
	`reason` text NOT NULL,
	`restarts` integer NOT NULL,
	`last_exit_code` integer,
	`last_output` text NOT NULL,
	`observed_generation` integer NOT NULL,
	`reported_at_ms` integer,
	`changed_at_ms` integer NOT NULL,
	PRIMARY KEY(`service`, `idx`, `node_id`)
);
--> statement-breakpoint
CREATE INDEX `workload_replicas_node` ON `workload_replicas` (`node_id`);--> statement-breakpoint
CREATE TABLE `workload_services` (
	`name` text PRIMARY KEY NOT NULL,
	`spec` text NOT NULL,
	`generation` integer NOT NULL,
	`created_at_ms` integer NOT NULL,
	`updated_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `workload_state` (
	`id` integer PRIMARY KEY NOT NULL,
	`version` integer NOT NULL
);

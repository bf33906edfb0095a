CREATE TABLE `enrollment_tokens` (
	`token_id` text PRIMARY KEY NOT NULL,
	`token_hash` text NOT NULL,
	`node_id` text NOT NULL,
	`channel` text NOT NULL,
	`created_by` text NOT NULL,
	`created_at_ms` integer NOT NULL,
	`expires_at_ms` integer NOT NULL,
	`used_at_ms` integer,
	`certificate_serial` text,
	`revoked_at_ms` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `enrollment_tokens_token_hash_unique` ON `enrollment_tokens` (`token_hash`);--> statement-breakpoint
CREATE INDEX `enrollment_tokens_node` ON `enrollment_tokens` (`node_id`,`created_at_ms`);--> statement-breakpoint
CREATE TABLE `node_certificates` (
	`serial` text PRIMARY KEY NOT NULL,
	`node_id` text NOT NULL,
	`issued_at_ms` integer NOT NULL,
	`not_before_ms` integer NOT NULL,
	`not_after_ms` integer NOT NULL,
	`token_id` text,
	`previous_serial` text
);
--> statement-breakpoint
CREATE INDEX `node_certificates_node` ON `node_certificates` (`node_id`,`issued_at_ms`);
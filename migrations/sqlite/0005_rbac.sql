CREATE TABLE `rbac_bindings` (
	`principal` text NOT NULL,
	`role` text NOT NULL,
	`created_at_ms` integer NOT NULL,
	PRIMARY KEY(`principal`, `role`)
);
--> statement-breakpoint
CREATE TABLE `rbac_roles` (
	`name` text PRIMARY KEY NOT NULL,
	`permissions` text NOT NULL,
	`created_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `rbac_tokens` (
	`token_id` text PRIMARY KEY NOT NULL,
	`token_hash` text NOT NULL,
	`principal` text NOT NULL,
	`description` text NOT NULL,
	`created_at_ms` integer NOT NULL,
	`expires_at_ms` integer NOT NULL,
	`revoked_at_ms` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `rbac_tokens_token_hash_unique` ON `rbac_tokens` (`token_hash`);
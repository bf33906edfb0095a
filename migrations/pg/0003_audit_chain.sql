CREATE TABLE "audit_prune_gate" (
	"id" integer PRIMARY KEY NOT NULL,
	"open" integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE "audit_records" ADD COLUMN "prev_hash" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_records" ADD COLUMN "hash" text DEFAULT '' NOT NULL;
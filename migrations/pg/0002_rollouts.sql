CREATE TABLE "audit_records" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"at_ms" bigint NOT NULL,
	"event_name" text NOT NULL,
	"category" text NOT NULL,
	"action" text NOT NULL,
	"outcome" text NOT NULL,
	"actor" text NOT NULL,
	"resource_type" text NOT NULL,
	"resource" text NOT NULL,
	"source" text NOT NULL,
	"fields_json" text NOT NULL,
	"reason" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "rollout_moves" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"plan_id" text NOT NULL,
	"stage_id" text NOT NULL,
	"node_id" text NOT NULL,
	"release_id" text NOT NULL,
	"moved_at_ms" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "rollout_plans" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"plan_id" text NOT NULL,
	"release_id" text NOT NULL,
	"channel" text NOT NULL,
	"spec" text NOT NULL,
	"signature" text NOT NULL,
	"key_id" text NOT NULL,
	"created_at_ms" bigint NOT NULL,
	CONSTRAINT "rollout_plans_plan_id_unique" UNIQUE("plan_id")
);
--> statement-breakpoint
CREATE TABLE "rollout_status" (
	"plan_id" text PRIMARY KEY NOT NULL,
	"version" integer NOT NULL,
	"phase" text NOT NULL,
	"current_stage" integer NOT NULL,
	"reason" text NOT NULL,
	"updated_at_ms" bigint NOT NULL,
	"stages" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "signing_keys" (
	"key_id" text PRIMARY KEY NOT NULL,
	"public_key_pem" text NOT NULL,
	"created_at_ms" bigint NOT NULL
);
--> statement-breakpoint
ALTER TABLE "releases" ADD COLUMN "staged" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "rollout_moves" ADD CONSTRAINT "rollout_moves_plan_id_rollout_plans_plan_id_fk" FOREIGN KEY ("plan_id") REFERENCES "public"."rollout_plans"("plan_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rollout_plans" ADD CONSTRAINT "rollout_plans_release_id_releases_release_id_fk" FOREIGN KEY ("release_id") REFERENCES "public"."releases"("release_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rollout_status" ADD CONSTRAINT "rollout_status_plan_id_rollout_plans_plan_id_fk" FOREIGN KEY ("plan_id") REFERENCES "public"."rollout_plans"("plan_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "audit_records_resource" ON "audit_records" USING btree ("resource_type","resource","seq");--> statement-breakpoint
CREATE UNIQUE INDEX "rollout_moves_plan_node" ON "rollout_moves" USING btree ("plan_id","node_id");--> statement-breakpoint
CREATE INDEX "rollout_moves_node_seq" ON "rollout_moves" USING btree ("node_id","seq");--> statement-breakpoint
CREATE INDEX "rollout_plans_channel" ON "rollout_plans" USING btree ("channel","seq");--> statement-breakpoint
CREATE INDEX "rollout_status_phase" ON "rollout_status" USING btree ("phase");
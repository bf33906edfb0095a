DROP INDEX "rollout_moves_plan_node";--> statement-breakpoint
ALTER TABLE "rollout_moves" ADD COLUMN "kind" text DEFAULT 'move' NOT NULL;--> statement-breakpoint
ALTER TABLE "rollout_moves" ADD COLUMN "previous_release_id" text;--> statement-breakpoint
CREATE UNIQUE INDEX "rollout_moves_plan_node" ON "rollout_moves" USING btree ("plan_id","node_id","kind");
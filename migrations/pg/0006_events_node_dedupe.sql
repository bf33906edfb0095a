ALTER TABLE "events" DROP CONSTRAINT "events_event_id_unique";--> statement-breakpoint
CREATE UNIQUE INDEX "events_node_event_id" ON "events" USING btree ("node_id","event_id");
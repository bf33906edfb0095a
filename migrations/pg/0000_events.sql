CREATE TABLE "events" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"event_id" text NOT NULL,
	"event_type" text NOT NULL,
	"node_id" text NOT NULL,
	"ts_seconds" bigint NOT NULL,
	"ts_nanos" integer NOT NULL,
	"lock_fingerprint" text,
	"release_id" text,
	"payload" text,
	"received_at_ms" bigint NOT NULL,
	CONSTRAINT "events_event_id_unique" UNIQUE("event_id")
);
--> statement-breakpoint
CREATE INDEX "events_node_seq" ON "events" USING btree ("node_id","seq");--> statement-breakpoint
CREATE INDEX "events_type_seq" ON "events" USING btree ("event_type","seq");
CREATE TABLE "node_acks" (
	"release_id" text NOT NULL,
	"node_id" text NOT NULL,
	"state" text NOT NULL,
	"message" text NOT NULL,
	"reported_release_id" text NOT NULL,
	"observed_at_ms" bigint NOT NULL,
	"updated_at_ms" bigint NOT NULL,
	CONSTRAINT "node_acks_release_id_node_id_pk" PRIMARY KEY("release_id","node_id")
);
--> statement-breakpoint
CREATE TABLE "nodes" (
	"node_id" text PRIMARY KEY NOT NULL,
	"channel" text NOT NULL,
	"labels" text NOT NULL,
	"agent_version" text NOT NULL,
	"enrolled_at_ms" bigint NOT NULL,
	"last_seen_ms" bigint,
	"reported_release_id" text,
	"drained" boolean NOT NULL,
	"drain_reason" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "releases" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"release_id" text NOT NULL,
	"channel" text NOT NULL,
	"version" text NOT NULL,
	"artifacts" text NOT NULL,
	"notes" text NOT NULL,
	"published_at_ms" bigint NOT NULL,
	CONSTRAINT "releases_release_id_unique" UNIQUE("release_id")
);
--> statement-breakpoint
ALTER TABLE "node_acks" ADD CONSTRAINT "node_acks_release_id_releases_release_id_fk" FOREIGN KEY ("release_id") REFERENCES "public"."releases"("release_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "node_acks" ADD CONSTRAINT "node_acks_node_id_nodes_node_id_fk" FOREIGN KEY ("node_id") REFERENCES "public"."nodes"("node_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "node_acks_node_updated" ON "node_acks" USING btree ("node_id","updated_at_ms");--> statement-breakpoint
CREATE INDEX "nodes_channel_id" ON "nodes" USING btree ("channel","node_id");--> statement-breakpoint
CREATE INDEX "releases_channel_seq" ON "releases" USING btree ("channel","seq");
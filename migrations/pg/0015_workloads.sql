CREATE TABLE "workload_commands" (
	"command_id" text PRIMARY KEY NOT NULL,
	"node_id" text NOT NULL,
	"replica_id" text NOT NULL,
	"kind" text NOT NULL,
	"payload" text NOT NULL,
	"created_at_ms" bigint NOT NULL,
	"acked_at_ms" bigint,
	"ok" boolean,
	"message" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "workload_nodes" (
	"node_id" text PRIMARY KEY NOT NULL,
	"capacity_cpu_millis" bigint NOT NULL,
	"capacity_memory_bytes" bigint NOT NULL,
	"usage_cpu_millis" bigint NOT NULL,
	"usage_memory_bytes" bigint NOT NULL,
	"replicas" text NOT NULL,
	"reported_at_ms" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "workload_replicas" (
	"service" text NOT NULL,
	"idx" integer NOT NULL,
	"node_id" text NOT NULL,
	"generation" bigint NOT NULL,
	"desired_state" text NOT NULL,
	"state" text NOT NULL,
	"reason" text NOT NULL,
	"restarts" integer NOT NULL,
	"last_exit_code" integer,
	"last_output" text NOT NULL,
	"observed_generation" bigint NOT NULL,
	"reported_at_ms" bigint,
	"changed_at_ms" bigint NOT NULL,
	CONSTRAINT "workload_replicas_service_idx_node_id_pk" PRIMARY KEY("service","idx","node_id")
);
--> statement-breakpoint
CREATE TABLE "workload_services" (
	"name" text PRIMARY KEY NOT NULL,
	"spec" text NOT NULL,
	"generation" bigint NOT NULL,
	"created_at_ms" bigint NOT NULL,
	"updated_at_ms" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "workload_state" (
	"id" integer PRIMARY KEY NOT NULL,
	"version" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "workload_commands_node" ON "workload_commands" USING btree ("node_id","acked_at_ms","created_at_ms");--> statement-breakpoint
CREATE INDEX "workload_replicas_node" ON "workload_replicas" USING btree ("node_id");
CREATE TABLE "ha_cutover" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"source" text NOT NULL,
	"started_at_ms" bigint NOT NULL,
	"cutover_at_ms" bigint,
	"row_counts" text NOT NULL,
	"version" text NOT NULL
);

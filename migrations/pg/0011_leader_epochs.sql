CREATE TABLE "leader_epochs" (
	"epoch" bigint PRIMARY KEY NOT NULL,
	"holder_id" text NOT NULL,
	"acquired_at" timestamp (6) with time zone NOT NULL,
	"renewed_at" timestamp (6) with time zone NOT NULL,
	"resigned_at" timestamp (6) with time zone,
	"lease_ms" integer NOT NULL,
	"end_reason" text
);

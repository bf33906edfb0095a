CREATE TABLE "node_last_events" (
	"node_id" text NOT NULL,
	"event_type" text NOT NULL,
	"seq" bigint NOT NULL,
	CONSTRAINT "node_last_events_node_id_event_type_pk" PRIMARY KEY("node_id","event_type")
);
--> statement-breakpoint
INSERT INTO node_last_events (node_id, event_type, seq) SELECT node_id, event_type, max(seq) FROM events GROUP BY 1, 2;
--> statement-breakpoint
-- Once per statement: an ingested batch costs one upsert per node and type, in key order.
CREATE FUNCTION node_last_events_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO node_last_events AS l (node_id, event_type, seq)
    SELECT node_id, event_type, max(seq) FROM new_events GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (node_id, event_type) DO UPDATE SET seq = greatest(l.seq, excluded.seq);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER node_last_events_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION node_last_events_on_insert();

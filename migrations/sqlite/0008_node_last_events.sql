CREATE TABLE `node_last_events` (
	`node_id` text NOT NULL,
	`event_type` text NOT NULL,
	`seq` integer NOT NULL,
	PRIMARY KEY(`node_id`, `event_type`)
);
--> statement-breakpoint
INSERT INTO node_last_events (node_id, event_type, seq) SELECT node_id, event_type, max(seq) FROM events GROUP BY 1, 2;
--> statement-breakpoint
CREATE TRIGGER node_last_events_insert AFTER INSERT ON events BEGIN
  INSERT INTO node_last_events (node_id, event_type, seq) VALUES (NEW.node_id, NEW.event_type, NEW.seq)
    ON CONFLICT (node_id, event_type) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > seq;
END;

CREATE TABLE `ha_cutover` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`source` text NOT NULL,
	`started_at_ms` integer NOT NULL,
	`cutover_at_ms` integer,
	`row_counts` text NOT NULL,
	`version` text NOT NULL
);

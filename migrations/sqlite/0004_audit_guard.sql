-- The audit trail is append-only: UPDATE is refused always, DELETE outside a prune.
INSERT INTO `audit_prune_gate` (`id`, `open`) VALUES (1, 0);
--> statement-breakpoint
CREATE TRIGGER `audit_records_no_update` BEFORE UPDATE ON `audit_records`
BEGIN
  SELECT RAISE(ABORT, 'audit records are append-only');
END;
--> statement-breakpoint
CREATE TRIGGER `audit_records_no_delete` BEFORE DELETE ON `audit_records`
WHEN (SELECT `open` FROM `audit_prune_gate` WHERE `id` = 1) IS NOT 1
BEGIN
  SELECT RAISE(ABORT, 'audit records are removed only by an audit prune');
END;
--> statement-breakpoint
CREATE TRIGGER `audit_prune_gate_one_row` BEFORE INSERT ON `audit_prune_gate`
BEGIN
  SELECT RAISE(ABORT, 'audit_prune_gate holds one row');
END;

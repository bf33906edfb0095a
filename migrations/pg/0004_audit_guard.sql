-- The audit trail is append-only: UPDATE is refused always, DELETE outside a prune.
INSERT INTO "audit_prune_gate" ("id", "open") VALUES (1, 0);
--> statement-breakpoint
CREATE FUNCTION audit_records_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    RAISE EXCEPTION 'audit records are append-only';
  END IF;
  IF (SELECT "open" FROM "audit_prune_gate" WHERE "id" = 1) IS DISTINCT FROM 1 THEN
    RAISE EXCEPTION 'audit records are removed only by an audit prune';
  END IF;
  RETURN OLD;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER audit_records_guard BEFORE UPDATE OR DELETE ON "audit_records"
FOR EACH ROW EXECUTE FUNCTION audit_records_guard();
--> statement-breakpoint
CREATE FUNCTION audit_prune_gate_one_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_prune_gate holds one row';
END;
$$;
--> statement-breakpoint
CREATE TRIGGER audit_prune_gate_one_row BEFORE INSERT ON "audit_prune_gate"
FOR EACH ROW EXECUTE FUNCTION audit_prune_gate_one_row();

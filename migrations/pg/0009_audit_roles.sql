-- Pruning runs through this function, with the rights of the role that owns the audit tables:
-- the role the server runs as needs no UPDATE or DELETE on them (see autonomy_grant_server_role).
-- It removes only a prefix of the chain, and nothing younger than a day.
CREATE FUNCTION autonomy_audit_prune(before_ms bigint) RETURNS TABLE (removed bigint, first_kept_seq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  keep_from bigint;
  n bigint;
BEGIN
  IF before_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 86400000 THEN
    RAISE EXCEPTION 'audit records younger than a day are never pruned';
  END IF;
  PERFORM pg_advisory_xact_lock(7340023);
  SELECT min(r.seq) INTO keep_from FROM audit_records r WHERE r.at_ms >= before_ms;
  UPDATE audit_prune_gate SET open = 1 WHERE id = 1;
  IF keep_from IS NULL THEN
    DELETE FROM audit_records;
  ELSE
    DELETE FROM audit_records WHERE seq < keep_from;
  END IF;
  GET DIAGNOSTICS n = ROW_COUNT;
  UPDATE audit_prune_gate SET open = 0 WHERE id = 1;
  RETURN QUERY SELECT n, keep_from;
END;
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION autonomy_audit_prune(bigint) FROM PUBLIC;
--> statement-breakpoint
-- Run by the owner of the tables, once per server role: everything the server needs, but on the
-- audit trail only SELECT and INSERT (history is appended, never rewritten: not even the server's
-- own connection can UPDATE, DELETE or TRUNCATE it) and EXECUTE of autonomy_audit_prune.
-- CREATE on the database and on the drizzle schema lets the server's start check, as it does, that
-- no migration is pending; the migrations themselves are run by the owner.
CREATE FUNCTION autonomy_grant_server_role(server_role name) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), server_role);
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), server_role);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', current_schema(), server_role);
  EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), server_role);
  EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_prune_gate FROM %I', server_role);
  EXECUTE format('GRANT EXECUTE ON FUNCTION autonomy_audit_prune(bigint) TO %I', server_role);
  EXECUTE format('GRANT USAGE, CREATE ON SCHEMA drizzle TO %I', server_role);
  EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA drizzle TO %I', server_role);
END;
$$;

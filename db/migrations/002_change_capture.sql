-- Change capture: every write to citas NOTIFYs the affected negocio_id(s) on channel
-- citas_live_cambios. PostgreSQL delivers notifications only when the transaction commits (never
-- for a rollback) and folds identical ones within a transaction, so a batch of 10,000 inserts for
-- one negocio is one notification.
--
-- The function is generic: its argument names the column holding the negocio id, so an existing
-- database can attach it to its own table with one statement, for example:
--   CREATE TRIGGER citas_live_cambios AFTER INSERT OR UPDATE OR DELETE ON appointment
--     FOR EACH ROW EXECUTE FUNCTION citas_live_notify('business_uuid');
CREATE OR REPLACE FUNCTION citas_live_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  col text := coalesce(TG_ARGV[0], 'negocio_id');
  old_id text;
  new_id text;
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    old_id := to_jsonb(OLD) ->> col;
    IF old_id IS NOT NULL THEN PERFORM pg_notify('citas_live_cambios', old_id); END IF;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    new_id := to_jsonb(NEW) ->> col;
    IF new_id IS NOT NULL AND new_id IS DISTINCT FROM old_id THEN PERFORM pg_notify('citas_live_cambios', new_id); END IF;
  END IF;
  RETURN NULL;
END
$$;

-- TRUNCATE cannot name rows: '*' tells listeners to recompute everything they show.
CREATE OR REPLACE FUNCTION citas_live_notify_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('citas_live_cambios', '*');
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS citas_live_cambios ON citas;
CREATE TRIGGER citas_live_cambios
  AFTER INSERT OR UPDATE OR DELETE ON citas
  FOR EACH ROW EXECUTE FUNCTION citas_live_notify('negocio_id');

DROP TRIGGER IF EXISTS citas_live_truncate ON citas;
CREATE TRIGGER citas_live_truncate
  AFTER TRUNCATE ON citas
  FOR EACH STATEMENT EXECUTE FUNCTION citas_live_notify_truncate();

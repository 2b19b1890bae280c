-- Change capture without NOTIFY on the write path.
--
-- 002 made every write to citas call pg_notify, and NOTIFY takes a lock global to the whole
-- PostgreSQL server at every commit: with 16 writers the booking database committed a third of
-- what it commits without it. Here a write only adds the changed negocio_id to a small table that
-- one citas-live instance at a time drains every CHANGE_CAPTURE_POLL_MS (see README "Change
-- capture"). The table is UNLOGGED: no WAL for it, and after a crash of PostgreSQL it comes back
-- empty, which costs nothing because every instance recomputes what it shows when the database
-- comes back.
CREATE UNLOGGED TABLE IF NOT EXISTS citas_live_cambios (
  negocio_id text NOT NULL
);
-- Every role that writes citas must be able to record its change, whatever its privileges
-- (the REST API's role needs no GRANT). Inserting is all it may do: a forged row costs one
-- recompute of the figures, read from citas as always.
REVOKE ALL ON citas_live_cambios FROM PUBLIC;
GRANT INSERT ON citas_live_cambios TO PUBLIC;

-- The functions run with the writer's rights (no SECURITY DEFINER, whose per-call switch of user
-- and search_path costs the write path more than the insert itself) and name the table with the
-- schema this migration ran in, so a writer's search_path cannot send the row elsewhere.
DO $migration$
BEGIN
  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION citas_live_capture() RETURNS trigger
    LANGUAGE plpgsql AS $body$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (OLD.negocio_id);
      ELSE
        INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (NEW.negocio_id);
        IF TG_OP = 'UPDATE' AND OLD.negocio_id IS DISTINCT FROM NEW.negocio_id THEN
          INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (OLD.negocio_id);
        END IF;
      END IF;
      RETURN NULL;
    END
    $body$;

    -- The generic function of 002, for triggers an existing database put on its own table: the same
    -- contract (its argument names the column holding the negocio id), now writing to the table.
    CREATE OR REPLACE FUNCTION citas_live_notify() RETURNS trigger
    LANGUAGE plpgsql AS $body$
    DECLARE
      col text := coalesce(TG_ARGV[0], 'negocio_id');
      old_id text;
      new_id text;
    BEGIN
      IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_id := to_jsonb(OLD) ->> col;
        IF old_id IS NOT NULL THEN INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (old_id); END IF;
      END IF;
      IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_id := to_jsonb(NEW) ->> col;
        IF new_id IS NOT NULL AND new_id IS DISTINCT FROM old_id THEN
          INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (new_id);
        END IF;
      END IF;
      RETURN NULL;
    END
    $body$;

    -- TRUNCATE cannot name rows: '*' tells the server to recompute everything it shows.
    CREATE OR REPLACE FUNCTION citas_live_notify_truncate() RETURNS trigger
    LANGUAGE plpgsql AS $body$
    BEGIN
      INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES ('*');
      RETURN NULL;
    END
    $body$;
  $f$, current_schema());
END
$migration$;

-- Off the old trigger. An UPDATE that moves none of the figures (notes, updated_at, pendiente to
-- confirmada) records nothing.
DROP TRIGGER IF EXISTS citas_live_cambios ON citas;
CREATE TRIGGER citas_live_cambios
  AFTER INSERT OR DELETE ON citas
  FOR EACH ROW EXECUTE FUNCTION citas_live_capture();

DROP TRIGGER IF EXISTS citas_live_cambios_update ON citas;
CREATE TRIGGER citas_live_cambios_update
  AFTER UPDATE ON citas
  FOR EACH ROW
  WHEN (OLD.negocio_id IS DISTINCT FROM NEW.negocio_id
        OR OLD.fecha_hora IS DISTINCT FROM NEW.fecha_hora
        OR (OLD.estado IS DISTINCT FROM NEW.estado
            AND (OLD.estado IN ('atendida', 'cancelada') OR NEW.estado IN ('atendida', 'cancelada'))))
  EXECUTE FUNCTION citas_live_capture();

DROP TRIGGER IF EXISTS citas_live_truncate ON citas;
CREATE TRIGGER citas_live_truncate
  AFTER TRUNCATE ON citas
  FOR EACH STATEMENT EXECUTE FUNCTION citas_live_notify_truncate();

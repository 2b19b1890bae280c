-- Change capture that no other role of the database can feed, stall or take over.
--
-- Until now any role could INSERT into citas_live_cambios (so a role that may not even read citas
-- could make every instance recompute every channel, or stop capture with a few huge rows), and
-- the capture leader was whoever held an advisory lock any role can take. Now:
--
-- 1. Only the triggers write the change table. The trigger functions run with the rights of the
--    role that ran this migration (SECURITY DEFINER), and nobody else may insert, nor call the
--    functions (so no role can hang them on a table of its own). A writer of citas needs no
--    privilege of citas-live's: its writes are recorded for it. Every name in their bodies is
--    schema-qualified, operators included, so a writer's search_path cannot put objects of its own
--    in their place; a `SET search_path` clause would do the same at a cost on every row written
--    (two settings changes per call: 0.78 of the writes without a trigger, against 0.85 here, in a
--    16-writer pgbench of bare inserts).
-- 2. A row holds at most 64 characters (a negocio id, or '*'): never much larger than that.
-- 3. The capture leader is the instance holding the lease in citas_live_capture_leader, a row only
--    this role may write. Its session's pid and start time say whether it is still connected; the
--    lease's end says whether it still answers. The row also records the end of the last completed
--    drain, so every instance can tell when capture has stopped.
--
-- Run the migrations as the role the server connects as (the owner of these objects): the server
-- drains, and compacts, the change table it owns, and writes the lease.

-- What was pending may include rows of any size: dropped, and '*' stands for them (every instance
-- recomputes what it shows when it drains it).
WITH pending AS (DELETE FROM citas_live_cambios RETURNING 1)
INSERT INTO citas_live_cambios (negocio_id) SELECT '*' WHERE EXISTS (SELECT 1 FROM pending);
-- A length a row cannot pass (what the triggers write is a negocio id, or '*'); checked by the
-- type, which costs the write path less than a CHECK with a pattern.
ALTER TABLE citas_live_cambios ALTER COLUMN negocio_id TYPE varchar(64);
REVOKE ALL ON citas_live_cambios FROM PUBLIC;

DO $migration$
BEGIN
  EXECUTE format($f$
    -- A BEFORE trigger (it returns the row as it came): an AFTER one costs each write a place in
    -- the queue of AFTER events as well, and the write tax with it was 0.88 of the writes without
    -- a trigger, against 0.94 (16 pgbench writers, PostgreSQL 15). A write that fails after it
    -- rolls its change back with it.
    CREATE OR REPLACE FUNCTION citas_live_capture() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER AS $body$
    BEGIN
      IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (OLD.negocio_id);
        RETURN OLD;
      END IF;
      INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (NEW.negocio_id);
      -- negocio_id is NOT NULL in citas.
      IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND OLD.negocio_id OPERATOR(pg_catalog.<>) NEW.negocio_id THEN
        INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (OLD.negocio_id);
      END IF;
      RETURN NEW;
    END
    $body$;

    -- The generic function for a table of an existing database (its argument names the column
    -- holding the negocio id), as an AFTER or a BEFORE trigger. A value that cannot be a negocio
    -- id (negocios.id has the same pattern) is not recorded: the write itself goes through.
    CREATE OR REPLACE FUNCTION citas_live_notify() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER AS $body$
    DECLARE
      col text := coalesce(TG_ARGV[0], 'negocio_id');
      old_id text;
      new_id text;
    BEGIN
      IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        old_id := pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.->>) col;
        IF old_id OPERATOR(pg_catalog.~) '^[A-Za-z0-9_-]{1,64}$' THEN INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (old_id); END IF;
      END IF;
      IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        new_id := pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.->>) col;
        IF new_id OPERATOR(pg_catalog.~) '^[A-Za-z0-9_-]{1,64}$' AND (old_id IS NULL OR new_id OPERATOR(pg_catalog.<>) old_id) THEN
          INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES (new_id);
        END IF;
      END IF;
      IF TG_WHEN OPERATOR(pg_catalog.<>) 'BEFORE' THEN RETURN NULL; END IF;
      IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN RETURN OLD; END IF;
      RETURN NEW;
    END
    $body$;

    -- TRUNCATE cannot name rows: '*' tells the server to recompute everything it shows.
    CREATE OR REPLACE FUNCTION citas_live_notify_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER AS $body$
    BEGIN
      INSERT INTO %1$I.citas_live_cambios (negocio_id) VALUES ('*');
      RETURN NULL;
    END
    $body$;
  $f$, current_schema());
END
$migration$;

DROP TRIGGER IF EXISTS citas_live_cambios ON citas;
CREATE TRIGGER citas_live_cambios
  BEFORE INSERT OR DELETE ON citas
  FOR EACH ROW EXECUTE FUNCTION citas_live_capture();

DROP TRIGGER IF EXISTS citas_live_cambios_update ON citas;
CREATE TRIGGER citas_live_cambios_update
  BEFORE UPDATE ON citas
  FOR EACH ROW
  WHEN (OLD.negocio_id IS DISTINCT FROM NEW.negocio_id
        OR OLD.fecha_hora IS DISTINCT FROM NEW.fecha_hora
        OR (OLD.estado IS DISTINCT FROM NEW.estado
            AND (OLD.estado IN ('atendida', 'cancelada') OR NEW.estado IN ('atendida', 'cancelada'))))
  EXECUTE FUNCTION citas_live_capture();

-- Triggers already on tables call them whoever writes; creating a new one takes this privilege
-- (grant it to the role that adds the trigger to a table of its own).
REVOKE EXECUTE ON FUNCTION citas_live_capture(), citas_live_notify(), citas_live_notify_truncate() FROM PUBLIC;

CREATE UNLOGGED TABLE IF NOT EXISTS citas_live_capture_leader (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  -- The instance leading (its bus instance id), and its session: leadership ends with the session.
  instance text NOT NULL,
  pid integer NOT NULL,
  backend_start timestamptz NOT NULL,
  -- Renewed by the leader; a leader whose session stopped answering loses it when this passes.
  lease_until timestamptz NOT NULL,
  -- When the last drain of the change table completed (any leader's).
  drained_at timestamptz
);
REVOKE ALL ON citas_live_capture_leader FROM PUBLIC;

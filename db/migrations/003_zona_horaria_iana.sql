-- zona_horaria must be a zone name PostgreSQL knows (IANA names such as Europe/Madrid or UTC).
-- The check in 001 only tried the value, and AT TIME ZONE also takes POSIX offsets: 'UTC+05:30'
-- passed and then meant UTC-05:30 (POSIX signs are inverted), silently shifting "today".
CREATE OR REPLACE FUNCTION negocios_check_zona_horaria() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.zona_horaria IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.zona_horaria) THEN
    RAISE EXCEPTION 'zona_horaria % is not a time zone name PostgreSQL knows (an IANA name such as Europe/Madrid)', NEW.zona_horaria
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN NEW;
END
$$;

-- Live rows of tap-analytics in PostgreSQL: one view per stream, tap_analytics_live.<stream>.
--
-- A reconciliation (reconcile_deletes) makes target-postgres set _sdc_deleted_at on the rows
-- the API no longer has; these views leave them out, and the _sdc_* columns with them, and give
-- every timestamp as `timestamp with time zone` (target-postgres 0.8.1 stores them as
-- `timestamp without time zone` holding UTC).
--
--   psql "$DATABASE_URL" -f warehouse/postgres_live_views.sql
--
-- Run it after the first load, and again after an upgrade that adds columns (a view keeps the
-- columns it was made with). The tables are in the schema `tap_analytics` (meltano.yml's
-- default_target_schema); for another schema, change the two names below. Running it again
-- replaces the views. A view blocks a change of its table's column types and a drop of the
-- table (load_method overwrite): `DROP SCHEMA tap_analytics_live CASCADE` first, run it after.

CREATE SCHEMA IF NOT EXISTS tap_analytics_live;

DO $views$
DECLARE
    source_schema CONSTANT text := 'tap_analytics';
    live_schema CONSTANT text := 'tap_analytics_live';
    stream text;
    columns text;
BEGIN
    FOREACH stream IN ARRAY ARRAY[
        'media', 'media_insights', 'stories', 'story_insights',
        'user_insights', 'user_lifetime_insights', 'users'
    ] LOOP
        SELECT string_agg(
                   CASE WHEN data_type = 'timestamp without time zone'
                        THEN format('%1$I AT TIME ZONE ''UTC'' AS %1$I', column_name)
                        ELSE format('%I', column_name) END,
                   ', ' ORDER BY ordinal_position)
          INTO columns
          FROM information_schema.columns
         WHERE table_schema = source_schema
           AND table_name = stream
           AND column_name NOT LIKE '\_sdc\_%';
        IF columns IS NULL THEN
            RAISE NOTICE 'no table %.%: load it first; no view made for it', source_schema, stream;
            CONTINUE;
        END IF;
        EXECUTE format('DROP VIEW IF EXISTS %I.%I', live_schema, stream);
        EXECUTE format(
            'CREATE VIEW %I.%I AS SELECT %s FROM %I.%I WHERE _sdc_deleted_at IS NULL',
            live_schema, stream, columns, source_schema, stream);
    END LOOP;
END
$views$;

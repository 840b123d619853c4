-- outbox-relay schema. Idempotent: apply with `outbox-relay -c FILE migrate`
-- or `psql -f`. Needs PostgreSQL 13+ (gen_random_uuid is built in).

-- The trigger NOTIFYs only while the relay says it is waiting: a NOTIFY
-- serializes every notifying transaction at commit and halves writer
-- throughput when paid on every insert. The flag is a one-value sequence per
-- outbox table (<table>_relay_waiting: 1 waiting, 0 busy) that the relay sets
-- with setval and the trigger's WHEN reads with pg_sequence_last_value: no
-- PL/pgSQL call and no query per writer transaction (a flag table read by
-- the trigger function cost writers about a fifth of their throughput on a
-- CPU-bound box), and setval is visible at once, without a commit.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END $$;

-- Replaced by the sequence: the flag table of earlier versions, which the
-- function above no longer reads.
DROP TABLE IF EXISTS outbox_relay_state;

-- A sent or parked row made unsent again (released, or re-sent on purpose)
-- may lie below the relay's low water, where it no longer looks: tell it.
CREATE OR REPLACE FUNCTION outbox_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify(TG_ARGV[0], 'rescan');
    RETURN NULL;
END $$;

-- Creates an outbox table (any name; each part quoted) with its waiting flag,
-- its gated notify trigger and its release trigger. Safe to call again. No index mentions
-- sent_at, so the relay's marks can be HOT updates; the relay finds unsent
-- rows from a low-water id on the primary key instead. A mark rewrites the
-- row in its page when there is room: the relay marks whole pages at once,
-- so only fillfactor 50 leaves room for all of a page's rows (measured on
-- 300-byte rows: 50,000 marks in 172 ms at 45, 450 ms at 70; the table is
-- about a third larger).
-- p_partition_rows (retention.mode = "partitions"): a table created now is
-- partitioned by range of id, p_partition_rows ids per partition, with one
-- partition ahead of the ids (the relay keeps more ahead). A partitioned
-- table cannot enforce a unique event_id (a unique index must hold the
-- partition key), so it has none: gen_random_uuid() does not repeat, and a
-- writer that sets its own event ids keeps them unique itself. An existing
-- table is left as it is (outbox_convert_to_partitions converts one).
DROP FUNCTION IF EXISTS outbox_install(text, text, text);
CREATE OR REPLACE FUNCTION outbox_install(p_schema text, p_table text, p_channel text DEFAULT 'outbox',
                                          p_partition_rows bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    qt text := format('%I.%I', p_schema, p_table);
    qf text := format('%I.%I', p_schema, p_table || '_relay_waiting');
BEGIN
    EXECUTE format($f$
        CREATE TABLE IF NOT EXISTS %s (
            id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id       uuid NOT NULL %s DEFAULT gen_random_uuid(),
            aggregate_type text NOT NULL,
            aggregate_id   text,
            event_type     text NOT NULL,
            topic          text,
            payload        bytea,
            headers        jsonb,
            created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            sent_at        timestamptz,
            attempts       integer NOT NULL DEFAULT 0,
            last_error     text,
            parked_at      timestamptz
        ) %s$f$, qt, CASE WHEN p_partition_rows IS NULL THEN 'UNIQUE' ELSE '' END,
        CASE WHEN p_partition_rows IS NULL THEN 'WITH (fillfactor = 50)' ELSE 'PARTITION BY RANGE (id)' END);
    -- A partitioned table has no storage of its own: its partitions get the fillfactor.
    IF (SELECT relkind <> 'p' FROM pg_catalog.pg_class WHERE oid = qt::regclass) THEN
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', qt);
    ELSIF p_partition_rows IS NOT NULL THEN
        PERFORM outbox_add_partitions(qt::regclass, p_partition_rows, 1);
    END IF;
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', p_schema, p_table || '_unsent');
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %s MINVALUE 0 MAXVALUE 1 START 0 CACHE 1 NO CYCLE', qf);
    -- Every writer's trigger reads the flag, so every role may.
    EXECUTE format('GRANT SELECT ON SEQUENCE %s TO PUBLIC', qf);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_notify ON %s', qt);
    -- The relay finds the flag through this trigger's dependency on it.
    EXECUTE format('CREATE TRIGGER outbox_notify AFTER INSERT ON %s FOR EACH STATEMENT'
                   ' WHEN (pg_catalog.pg_sequence_last_value(%L::regclass) = 1)'
                   ' EXECUTE FUNCTION outbox_notify(%L)', qt, qf, p_channel);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_released ON %s', qt);
    EXECUTE format('CREATE TRIGGER outbox_released AFTER UPDATE OF sent_at, parked_at ON %s FOR EACH ROW'
                   ' WHEN (NEW.sent_at IS NULL AND NEW.parked_at IS NULL'
                   ' AND (OLD.sent_at IS NOT NULL OR OLD.parked_at IS NOT NULL))'
                   ' EXECUTE FUNCTION outbox_released(%L)', qt, p_channel);
END $$;

-- The last id the outbox's identity gave out (0 before the first).
CREATE OR REPLACE FUNCTION outbox_last_id(p_table regclass) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v bigint;
BEGIN
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s',
                   pg_catalog.pg_get_serial_sequence(p_table::text, 'id')) INTO v;
    RETURN v;
END $$;

-- The partitions of an outbox with their bounds (NULL: MINVALUE, MAXVALUE)
-- and whether a DETACH ... CONCURRENTLY of theirs is unfinished.
CREATE OR REPLACE FUNCTION outbox_partition_bounds(p_table regclass)
RETURNS TABLE (part regclass, lo bigint, hi bigint, detach_pending bool) LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass,
           CASE WHEN b[1] <> 'MINVALUE' THEN btrim(b[1], '''')::bigint END,
           CASE WHEN b[2] <> 'MAXVALUE' THEN btrim(b[2], '''')::bigint END,
           i.inhdetachpending
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid,
    LATERAL regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \((.*)\) TO \((.*)\)') b
    WHERE i.inhparent = p_table
$$;

-- Creates partitions of p_rows ids after the highest one (from the next id
-- when there is none) until p_ahead of them lie wholly above the last id
-- given out. Each is created apart, then attached: ATTACH PARTITION takes
-- SHARE UPDATE EXCLUSIVE on the outbox, which writers, claims and marks do
-- not wait for (CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE).
-- Returns how many it created.
CREATE OR REPLACE FUNCTION outbox_add_partitions(p_table regclass, p_rows bigint, p_ahead int)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    last bigint := outbox_last_id(p_table);
    ns text := (SELECT relnamespace::regnamespace::text FROM pg_catalog.pg_class WHERE oid = p_table);
    name text := (SELECT relname FROM pg_catalog.pg_class WHERE oid = p_table);
    have int;
    lo bigint;
    part text;
    created int := 0;
BEGIN
    SELECT count(*) FILTER (WHERE b.lo > last), max(b.hi) INTO have, lo FROM outbox_partition_bounds(p_table) b;
    lo := COALESCE(lo, last + 1);
    WHILE have < p_ahead LOOP
        part := format('%s.%I', ns, name || '_p' || lo);
        EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS) WITH (fillfactor = 50)', part, p_table);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
                       p_table, part, lo, lo + p_rows);
        IF lo > last THEN
            have := have + 1;
        END IF;
        lo := lo + p_rows;
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- What retention may do with each partition of an outbox (the relay's
-- partitions mode): 'pending' (a detach to finish), 'detached' (a table
-- detached from the outbox and not dropped: a relay stopped in between),
-- 'ahead' (no id given out yet), 'open' (ids still to come), 'unsent' (a
-- row unsent or sent within p_keep_s), 'parked' (kept until an operator
-- releases or deletes its parked rows), 'droppable'. Only partitions whose
-- last row was sent long enough ago are scanned; rows and parked are the
-- counts of that scan (NULL without one).
CREATE OR REPLACE FUNCTION outbox_partitions(p_table regclass, p_keep_s int)
RETURNS TABLE (part text, lo bigint, hi bigint, state text, rows bigint, parked bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    last bigint := outbox_last_id(p_table);
    prefix text := (SELECT relname FROM pg_catalog.pg_class WHERE oid = p_table) || '_p';
    b record;
    tail record;
    stay bigint;
BEGIN
    FOR b IN SELECT * FROM outbox_partition_bounds(p_table) ORDER BY 2 NULLS FIRST LOOP
        part := b.part::text;
        lo := b.lo;
        hi := b.hi;
        rows := NULL;
        parked := NULL;
        IF b.detach_pending THEN
            state := 'pending';
        ELSIF b.lo > last THEN
            state := 'ahead';
        ELSIF b.hi IS NULL OR b.hi - 1 > last THEN
            state := 'open';
        ELSE
            EXECUTE format('SELECT sent_at, parked_at FROM %s ORDER BY id DESC LIMIT 1', b.part) INTO tail;
            IF tail.parked_at IS NULL
               AND (tail.sent_at IS NULL OR tail.sent_at >= now() - make_interval(secs => p_keep_s)) THEN
                state := 'unsent';
            ELSE
                EXECUTE format('SELECT count(*), count(*) FILTER (WHERE parked_at IS NOT NULL),'
                               ' count(*) FILTER (WHERE parked_at IS NULL AND (sent_at IS NULL'
                               '  OR sent_at >= now() - make_interval(secs => %s))) FROM %s', p_keep_s, b.part)
                    INTO rows, parked, stay;
                state := CASE WHEN parked > 0 THEN 'parked' WHEN stay > 0 THEN 'unsent' ELSE 'droppable' END;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    lo := NULL;
    hi := NULL;
    state := 'detached';
    rows := NULL;
    parked := NULL;
    FOR part IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_class t ON t.oid = p_table AND c.relnamespace = t.relnamespace
                WHERE c.relkind = 'r' AND NOT c.relispartition AND left(c.relname, length(prefix)) = prefix
                  AND substr(c.relname, length(prefix) + 1) ~ '^[0-9]+$' LOOP
        RETURN NEXT;
    END LOOP;
END $$;

-- Drops p_part, a partition detached from p_table, when every row in it was
-- sent more than p_keep_s ago and none is parked. Otherwise (a row that
-- committed while the detach waited for its transaction) it attaches it
-- again over its rows' ids, which no other partition holds, and tells the
-- relay to rescan. state: 'dropped', 'reattached' or 'gone'; rows: its rows.
CREATE OR REPLACE FUNCTION outbox_drop_partition(p_table regclass, p_part text, p_keep_s int, p_channel text,
                                                 OUT state text, OUT rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
    part regclass := to_regclass(p_part);
    stay bigint;
    lo bigint;
    hi bigint;
BEGIN
    IF part IS NULL THEN
        state := 'gone';
        rows := 0;
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*), count(*) FILTER (WHERE parked_at IS NOT NULL OR sent_at IS NULL'
                   '  OR sent_at >= now() - make_interval(secs => %s)), min(id), max(id) + 1 FROM %s',
                   p_keep_s, part)
        INTO rows, stay, lo, hi;
    IF stay = 0 THEN
        EXECUTE format('DROP TABLE %s', part);
        state := 'dropped';
    ELSE
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)', p_table, part, lo, hi);
        PERFORM pg_catalog.pg_notify(p_channel, 'rescan');
        state := 'reattached';
    END IF;
END $$;

-- Converts an outbox table into a partitioned one, in one transaction under
-- an ACCESS EXCLUSIVE lock (writers wait; ATTACH scans the old table once to
-- check its ids): the table becomes partition <table>_p0, holding the ids
-- below the next one; a partitioned table takes its name, its grants and
-- its identity (going on from the same next id); one partition is created
-- ahead. Run it as the table's owner. The old partition is dropped like any
-- other once every row in it was sent keep_s ago and none is parked.
CREATE OR REPLACE FUNCTION outbox_convert_to_partitions(p_schema text, p_table text, p_partition_rows bigint,
                                                        p_channel text DEFAULT 'outbox')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    qt text := format('%I.%I', p_schema, p_table);
    old text := format('%I.%I', p_schema, p_table || '_p0');
    nextid bigint;
    seq_privs text[];
    seq_grantees oid[];
    acl record;
    idx record;
BEGIN
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', qt);
    IF (SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = qt::regclass) THEN
        RETURN;
    END IF;
    nextid := outbox_last_id(qt::regclass) + 1;
    SELECT array_agg(a.privilege_type), array_agg(a.grantee) INTO seq_privs, seq_grantees
    FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
    WHERE c.oid = pg_catalog.pg_get_serial_sequence(qt, 'id')::regclass AND a.grantee <> c.relowner;
    -- The partitioned table's row triggers are cloned onto its partitions.
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_notify ON %s', qt);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_released ON %s', qt);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN id DROP IDENTITY IF EXISTS', qt);
    EXECUTE format('ALTER TABLE %s RENAME TO %I', qt, p_table || '_p0');
    -- Frees the index names (outbox_pkey ...) for the partitioned table's.
    FOR idx IN SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
               WHERE i.indrelid = old::regclass AND left(c.relname, length(p_table) + 1) = p_table || '_' LOOP
        EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', p_schema, idx.relname,
                       p_table || '_p0_' || substr(idx.relname, length(p_table) + 2));
    END LOOP;
    EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS) PARTITION BY RANGE (id)', qt, old);
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (id)', qt);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH %s)', qt, nextid);
    FOR acl IN SELECT a.privilege_type, a.grantee FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
               WHERE c.oid = old::regclass AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON %s TO %s', acl.privilege_type, qt,
                       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(acl.grantee::regrole::text) END);
    END LOOP;
    FOR i IN 1 .. COALESCE(array_length(seq_privs, 1), 0) LOOP
        EXECUTE format('GRANT %s ON SEQUENCE %s TO %s', seq_privs[i], pg_catalog.pg_get_serial_sequence(qt, 'id'),
                       CASE WHEN seq_grantees[i] = 0 THEN 'PUBLIC'
                            ELSE quote_ident(seq_grantees[i]::regrole::text) END);
    END LOOP;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (MINVALUE) TO (%s)', qt, old, nextid);
    PERFORM outbox_install(p_schema, p_table, p_channel, p_partition_rows);
END $$;

-- `SET outbox.partition_rows = N` before this file (migrate does it with
-- retention.mode = "partitions") creates public.outbox partitioned.
SELECT outbox_install('public', 'outbox', 'outbox', NULLIF(current_setting('outbox.partition_rows', true), '')::bigint);

-- Outbox tables made by an earlier version keep a trigger without the flag,
-- so every insert would NOTIFY: give each one this role owns its flag and
-- the new triggers, and name the others.
DO $do$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT n.nspname, c.relname, c.relowner,
                    split_part(encode(g.tgargs, 'escape'), '\000', 1) AS channel
             FROM pg_catalog.pg_trigger g
             JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE g.tgname = 'outbox_notify' AND g.tgqual IS NULL
    LOOP
        IF pg_catalog.pg_has_role(t.relowner, 'USAGE') THEN
            PERFORM outbox_install(t.nspname, t.relname, t.channel);
        ELSE
            RAISE WARNING 'outbox table %.% has the old notify trigger: run SELECT outbox_install(%L, %L, %L) as its owner',
                t.nspname, t.relname, t.nspname, t.relname, t.channel;
        END IF;
    END LOOP;
END $do$;

-- Enqueue one event into public.outbox in the caller's transaction; returns its event_id.
CREATE OR REPLACE FUNCTION outbox_enqueue(
    p_aggregate_type text, p_aggregate_id text, p_event_type text, p_payload bytea,
    p_headers jsonb DEFAULT NULL, p_topic text DEFAULT NULL)
RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO public.outbox (aggregate_type, aggregate_id, event_type, payload, headers, topic)
    VALUES (p_aggregate_type, p_aggregate_id, p_event_type, p_payload, p_headers, p_topic)
    RETURNING event_id
$$;

CREATE OR REPLACE FUNCTION outbox_enqueue(
    p_aggregate_type text, p_aggregate_id text, p_event_type text, p_payload jsonb,
    p_headers jsonb DEFAULT NULL, p_topic text DEFAULT NULL)
RETURNS uuid LANGUAGE sql AS $$
    SELECT outbox_enqueue(p_aggregate_type, p_aggregate_id, p_event_type,
                          convert_to(p_payload::text, 'UTF8'), p_headers, p_topic)
$$;

-- Parked rows (could never be published): inspect, fix, then release with
--   UPDATE outbox SET parked_at = NULL, attempts = 0 WHERE id = ...;
CREATE OR REPLACE VIEW outbox_parked AS
    SELECT id, event_id, aggregate_type, aggregate_id, event_type, topic, attempts,
           last_error, created_at, parked_at
    FROM public.outbox WHERE parked_at IS NOT NULL;

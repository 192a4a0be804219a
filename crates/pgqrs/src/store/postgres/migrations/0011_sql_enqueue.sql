-- pgqrs schema version 11: enqueue from SQL, inside the caller's own transaction.
--
-- {s}.pgqrs_enqueue(queue, payload, ...) adds one job and returns its id, for any
-- PostgreSQL client (psycopg, asyncpg, SQLAlchemy, Django, psql): the job exists if and
-- only if the caller's transaction commits, and its NOTIFY (sent only then) wakes idle
-- workers in every process. It is named like the tables (pgqrs_*) because the default
-- schema is `public`, where a bare `enqueue` could clash with the application's own.
--
-- Options, with the defaults and checks of the library's enqueue:
--   delay interval | at timestamptz   when it becomes claimable (not both; default now)
--   priority integer                  higher runs first (default 0)
--   max_attempts integer              attempts before it is a dead letter
--   timeout interval                  the handler's deadline (default: the worker's)
--   key text                          unique key: while a job of the queue holds it, no
--                                     second job is made and the holder's id is returned
--   unique_for interval               a finished job holds its key this long (needs key)
--   on_duplicate text                 'existing' (default) or 'error' (raises
--                                     unique_violation, SQLSTATE 23505; needs key)
--   group_key text                    the job's group, for a queue's group concurrency
--                                     limit (the library's `group`)
--
-- One source of truth: the defaults and bounds (max_attempts, max_payload_bytes, priority,
-- delay, timeout, key and unique_for limits, the payload's nesting depth) are not written
-- here but read from pgqrs_settings rows named 'enqueue.*', which install() writes from the
-- library's own constants and the installing store's configuration, every time it runs.
--
-- Bad input raises with a message saying what is wrong: SQLSTATE 22023
-- (invalid_parameter_value) for a bad option or payload, 42704 (undefined_object) for an
-- unknown queue, 55000 (object_not_in_prerequisite_state) when install() has not written the
-- settings.
CREATE OR REPLACE FUNCTION {s}.pgqrs_enqueue(
    queue        text,
    payload      json,
    delay        interval    DEFAULT NULL,
    at           timestamptz DEFAULT NULL,
    priority     integer     DEFAULT NULL,
    max_attempts integer     DEFAULT NULL,
    timeout      interval    DEFAULT NULL,
    key          text        DEFAULT NULL,
    unique_for   interval    DEFAULT NULL,
    on_duplicate text        DEFAULT NULL,
    group_key    text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $pgqrs$
DECLARE
    cfg         record;
    qid         bigint;
    v_priority  bigint := coalesce(pgqrs_enqueue.priority, 0);
    v_attempts  bigint;
    v_visible   timestamptz;
    v_timeout   bigint;
    v_policy    text := coalesce(pgqrs_enqueue.on_duplicate, 'existing');
    v_text      text;
    v_bare      text;
    v_token     text;
    v_id        bigint;
    v_round     integer;
BEGIN
    SELECT max(value) FILTER (WHERE name = 'enqueue.max_attempts') AS max_attempts,
           max(value) FILTER (WHERE name = 'enqueue.max_payload_bytes') AS max_payload_bytes,
           max(value) FILTER (WHERE name = 'enqueue.min_priority') AS min_priority,
           max(value) FILTER (WHERE name = 'enqueue.max_priority') AS max_priority,
           max(value) FILTER (WHERE name = 'enqueue.max_delay_ms') AS max_delay_ms,
           max(value) FILTER (WHERE name = 'enqueue.min_timeout_ms') AS min_timeout_ms,
           max(value) FILTER (WHERE name = 'enqueue.max_timeout_ms') AS max_timeout_ms,
           max(value) FILTER (WHERE name = 'enqueue.max_key_bytes') AS max_key_bytes,
           max(value) FILTER (WHERE name = 'enqueue.max_unique_for_ms') AS max_unique_for_ms,
           max(value) FILTER (WHERE name = 'enqueue.max_depth') AS max_depth,
           count(*) FILTER (WHERE name LIKE 'enqueue.%') AS n
    INTO cfg
    FROM {s}.pgqrs_settings;
    IF cfg.n < 10 THEN
        RAISE EXCEPTION 'pgqrs_enqueue: the enqueue settings of schema {s} are missing; run pgqrs''s install() (admin(store).install()) once more'
            USING ERRCODE = '55000';
    END IF;

    -- The options, as the library checks them.
    IF pgqrs_enqueue.queue IS NULL THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid queue: no queue given' USING ERRCODE = '22023';
    END IF;
    IF pgqrs_enqueue.payload IS NULL THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid payload: SQL NULL is not a message (the JSON null is: ''null''::json)'
            USING ERRCODE = '22023';
    END IF;
    IF v_priority NOT BETWEEN cfg.min_priority AND cfg.max_priority THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid priority: must be between % and % (higher runs first), got %',
            cfg.min_priority, cfg.max_priority, v_priority USING ERRCODE = '22023';
    END IF;
    v_attempts := coalesce(pgqrs_enqueue.max_attempts, cfg.max_attempts);
    IF v_attempts < 1 THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid max_attempts: must be between 1 and 2147483647, got %',
            v_attempts USING ERRCODE = '22023';
    END IF;
    IF pgqrs_enqueue.delay IS NOT NULL AND pgqrs_enqueue.at IS NOT NULL THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid delay: give either a delay or a time (at), not both'
            USING ERRCODE = '22023';
    END IF;
    IF pgqrs_enqueue.delay < interval '0' THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid delay: must not be negative, got %',
            pgqrs_enqueue.delay USING ERRCODE = '22023';
    END IF;
    IF extract(epoch FROM pgqrs_enqueue.delay) * 1000 > cfg.max_delay_ms THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid delay: must be at most % s (100 years), got %',
            cfg.max_delay_ms / 1000, pgqrs_enqueue.delay USING ERRCODE = '22023';
    END IF;
    IF extract(epoch FROM pgqrs_enqueue.at - now()) * 1000 > cfg.max_delay_ms THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid at: must be at most % s (100 years) ahead, got %',
            cfg.max_delay_ms / 1000, pgqrs_enqueue.at USING ERRCODE = '22023';
    END IF;
    v_visible := coalesce(pgqrs_enqueue.at, now() + coalesce(pgqrs_enqueue.delay, interval '0'));
    IF pgqrs_enqueue.timeout IS NOT NULL THEN
        -- As stored: whole milliseconds, rounded up.
        v_timeout := ceil(extract(epoch FROM pgqrs_enqueue.timeout) * 1000)::bigint;
        IF extract(epoch FROM pgqrs_enqueue.timeout) * 1000 < cfg.min_timeout_ms
           OR v_timeout > cfg.max_timeout_ms THEN
            RAISE EXCEPTION 'pgqrs_enqueue: invalid timeout: must be from % ms to % s (7 days), got %; leave it NULL for no limit',
                cfg.min_timeout_ms, cfg.max_timeout_ms / 1000, pgqrs_enqueue.timeout
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF v_policy NOT IN ('existing', 'error') THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid on_duplicate: must be "existing" (return the id of the job holding the key) or "error" (raise unique_violation), got "%"',
            v_policy USING ERRCODE = '22023';
    END IF;
    IF pgqrs_enqueue.key IS NULL THEN
        IF pgqrs_enqueue.unique_for IS NOT NULL OR pgqrs_enqueue.on_duplicate IS NOT NULL THEN
            RAISE EXCEPTION 'pgqrs_enqueue: invalid %: applies to jobs with a unique key: give key',
                CASE WHEN pgqrs_enqueue.unique_for IS NOT NULL THEN 'unique_for' ELSE 'on_duplicate' END
                USING ERRCODE = '22023';
        END IF;
    ELSIF octet_length(pgqrs_enqueue.key) NOT BETWEEN 1 AND cfg.max_key_bytes THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid key: must be 1 to % bytes long (got % bytes); a longer identity can be hashed into a key',
            cfg.max_key_bytes, octet_length(pgqrs_enqueue.key) USING ERRCODE = '22023';
    END IF;
    IF octet_length(pgqrs_enqueue.group_key) NOT BETWEEN 1 AND cfg.max_key_bytes THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid group_key: must be 1 to % bytes long (got % bytes); leave it NULL for a job without a group',
            cfg.max_key_bytes, octet_length(pgqrs_enqueue.group_key) USING ERRCODE = '22023';
    END IF;
    IF pgqrs_enqueue.unique_for IS NOT NULL
       AND (pgqrs_enqueue.unique_for <= interval '0'
            OR extract(epoch FROM pgqrs_enqueue.unique_for) * 1000 > cfg.max_unique_for_ms) THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid unique_for: must be more than 0 and at most % s (100 years), got %',
            cfg.max_unique_for_ms / 1000, pgqrs_enqueue.unique_for USING ERRCODE = '22023';
    END IF;

    -- The payload must read back as written (the library's check_json): not too large,
    -- nested at most max_depth deep, numbers within 64 bits, no lone UTF-16 surrogate.
    v_text := pgqrs_enqueue.payload::text;
    IF octet_length(v_text) > cfg.max_payload_bytes THEN
        RAISE EXCEPTION 'pgqrs_enqueue: payload of % bytes exceeds the maximum of % bytes (store large data elsewhere and enqueue a reference)',
            octet_length(v_text), cfg.max_payload_bytes USING ERRCODE = '22023';
    END IF;
    -- The escapes, left to right (a pair, another \u escape, or any other one such as an
    -- escaped backslash, so that "\\ud800" is not taken for one).
    IF strpos(v_text, '\u') > 0 AND EXISTS (
        SELECT 1 FROM regexp_matches(v_text,
            '\\(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[^u])', 'g') AS m(e)
        WHERE m.e[1] ~ '^u[dD][89a-fA-F][0-9a-fA-F]{2}$')
    THEN
        RAISE EXCEPTION 'pgqrs_enqueue: invalid payload: holds a string with a lone UTF-16 surrogate escape (\ud800-\udfff not in a pair), which is not valid text; remove it'
            USING ERRCODE = '22023';
    END IF;
    -- Numbers and nesting: only a payload that may hold a long integer or an exponent, or
    -- more brackets than max_depth, needs the look past its strings (cheap tests first).
    IF v_text ~ '[0-9]{19}|[0-9.][eE]'
       OR length(v_text) - length(replace(replace(v_text, '[', ''), '{', '')) > cfg.max_depth THEN
        -- Strings out of the way, only the structure and the scalars are left.
        v_bare := regexp_replace(v_text, '"[^"\\]*(\\.[^"\\]*)*"', '""', 'g');
        IF v_bare ~ '[0-9]{19}|[eE]' THEN
            FOR v_token IN
                SELECT m[1] FROM regexp_matches(v_bare, '(-?[0-9][0-9.eE+-]*)', 'g') AS m
                WHERE length(m[1]) > 18 OR m[1] ~ '[eE]'
            LOOP
                IF v_token ~ '[.eE]' THEN
                    IF abs(v_token::numeric) > 1.7976931348623157e308 THEN
                        RAISE EXCEPTION 'pgqrs_enqueue: invalid payload: holds the number %, beyond the range of a 64-bit float; send it as a string',
                            left(v_token, 40) USING ERRCODE = '22023';
                    END IF;
                ELSIF v_token::numeric NOT BETWEEN -9223372036854775808 AND 18446744073709551615 THEN
                    RAISE EXCEPTION 'pgqrs_enqueue: invalid payload: holds an integer of % digits, outside the 64-bit range (-9223372036854775808 to 18446744073709551615) that is read back exactly; send it as a string',
                        length(ltrim(v_token, '-')) USING ERRCODE = '22023';
                END IF;
            END LOOP;
        END IF;
        -- Nesting: keep the brackets (what is left besides them is a fixed set of
        -- characters), then each pass removes the innermost pairs; after max_depth passes a
        -- payload nested at most that deep has none left.
        v_bare := translate(v_bare, '0123456789+-.eE,:" truefalsn' || E'\t\n\r', '');
        FOR v_round IN 1..cfg.max_depth LOOP
            EXIT WHEN v_bare = '';
            v_bare := regexp_replace(v_bare, '\[\]|\{\}', '', 'g');
        END LOOP;
        IF v_bare <> '' THEN
            RAISE EXCEPTION 'pgqrs_enqueue: invalid payload: nested more than % levels deep; flatten it',
                cfg.max_depth USING ERRCODE = '22023';
        END IF;
    END IF;

    -- The queue's row, held (FOR KEY SHARE) until the transaction ends, as the library's
    -- enqueue does: a concurrent delete_queue waits for this transaction.
    SELECT q.id INTO qid FROM {s}.pgqrs_queues q WHERE q.name = pgqrs_enqueue.queue FOR KEY SHARE;
    IF qid IS NULL THEN
        RAISE EXCEPTION 'pgqrs_enqueue: queue "%" does not exist (create it with admin.create_queue)',
            pgqrs_enqueue.queue USING ERRCODE = '42704';
    END IF;

    IF pgqrs_enqueue.key IS NULL THEN
        INSERT INTO {s}.pgqrs_jobs (queue_id, payload, max_attempts, visible_at, priority, timeout_ms, group_key)
        VALUES (qid, pgqrs_enqueue.payload, v_attempts, v_visible, v_priority, v_timeout, pgqrs_enqueue.group_key)
        RETURNING id INTO v_id;
    ELSE
        -- As the library's keyed enqueue: the job holding the key (waiting or running, or
        -- archived within unique_for) wins; a key taken by a transaction that commits after
        -- this statement's snapshot is skipped by ON CONFLICT, and the next round sees it.
        FOR v_round IN 1..100 LOOP
            SELECT j.id INTO v_id FROM {s}.pgqrs_jobs j
            WHERE j.queue_id = qid AND j.unique_key = pgqrs_enqueue.key;
            IF v_id IS NULL AND pgqrs_enqueue.unique_for IS NOT NULL THEN
                SELECT a.id INTO v_id FROM {s}.pgqrs_archive a
                WHERE a.queue_id = qid AND a.unique_key = pgqrs_enqueue.key
                      AND a.archived_at > now() - pgqrs_enqueue.unique_for
                ORDER BY a.archived_at DESC, a.id DESC LIMIT 1;
            END IF;
            IF v_id IS NOT NULL THEN
                IF v_policy = 'error' THEN
                    RAISE EXCEPTION 'pgqrs_enqueue: job % already holds the unique key "%" (waiting, running, or finished within unique_for); nothing was written (use on_duplicate => ''existing'' to get its id instead)',
                        v_id, pgqrs_enqueue.key
                        USING ERRCODE = '23505', DETAIL = format('existing_id=%s', v_id);
                END IF;
                RETURN v_id;
            END IF;
            INSERT INTO {s}.pgqrs_jobs (queue_id, payload, max_attempts, visible_at, priority, timeout_ms, unique_key, group_key)
            VALUES (qid, pgqrs_enqueue.payload, v_attempts, v_visible, v_priority, v_timeout, pgqrs_enqueue.key, pgqrs_enqueue.group_key)
            ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id INTO v_id;
            EXIT WHEN v_id IS NOT NULL;
        END LOOP;
        IF v_id IS NULL THEN
            RAISE EXCEPTION 'pgqrs_enqueue: the job holding the key "%" kept changing over 100 tries',
                pgqrs_enqueue.key USING ERRCODE = '40001';
        END IF;
    END IF;

    -- Workers of every process LISTEN on one channel per schema; PostgreSQL delivers this
    -- when the transaction commits (once, however many enqueues it made) and never on a
    -- rollback. A delayed job wakes nobody: workers find it by polling once it is due.
    IF v_visible <= now() THEN
        PERFORM pg_notify('pgqrs_' || btrim('{s}', '"'), pgqrs_enqueue.queue);
    END IF;
    RETURN v_id;
END
$pgqrs$;

-- docent-eval schema, version 4: shards (`run --shard K/N`) and their merge (`merge --into`).
--
-- shard_plan: the whole question set's partition, stored with every sharded run and with the
-- run merged from its shards, so that `merge` checks completeness by question id, and names
-- the shard each missing id belongs to, without the question file.
CREATE TABLE shard_plan (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    question_id TEXT    NOT NULL,
    ordinal     INTEGER NOT NULL,              -- 1-based position in the question file
    shard_index INTEGER NOT NULL,              -- 0-based shard the question belongs to
    PRIMARY KEY (run_id, question_id)
);
CREATE INDEX shard_plan_by_shard ON shard_plan(run_id, shard_index);

-- shard_parts: in a merged run, one row per shard run merged into it (a shard started again
-- as a new run, or on another host, is another part). A part is known by its shard, host and
-- start time, so merging the same database again updates its row instead of adding one.
CREATE TABLE shard_parts (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    shard_index       INTEGER NOT NULL,
    host              TEXT    NOT NULL,        -- where the shard ran ('' when not recorded)
    source_started_at TEXT    NOT NULL,        -- runs.started_at of the shard run
    source_path       TEXT    NOT NULL,        -- the database it was last merged from
    source_run_id     INTEGER NOT NULL,        -- its runs.id in that file (not an identity)
    status            TEXT    NOT NULL,        -- the shard run's status when merged
    status_reason     TEXT,
    finished_at       TEXT,
    active_ms         INTEGER NOT NULL,        -- the shard run's generation time, all sessions
    sessions          INTEGER NOT NULL,
    question_count    INTEGER NOT NULL,
    answers           INTEGER NOT NULL,        -- answer rows the shard run held when merged
    ok_answers        INTEGER NOT NULL,        -- of those, ok
    answers_sha256    TEXT    NOT NULL,        -- sha256 of its answers' ids and statuses
    merged_at         TEXT    NOT NULL,
    UNIQUE (run_id, shard_index, host, source_started_at)
);

-- The part a memory sample of a merged run came from (NULL in any other run), so that merging a
-- shard again replaces its samples instead of adding them twice.
ALTER TABLE memory_samples ADD COLUMN shard_part_id INTEGER REFERENCES shard_parts(id) ON DELETE CASCADE;

-- docent-eval schema, version 1. Applied once; PRAGMA user_version records the version.
-- Times are UTC ISO-8601 text with milliseconds, sizes in bytes, durations in ms.

CREATE TABLE runs (
    id                   INTEGER PRIMARY KEY,
    status               TEXT    NOT NULL CHECK (status IN ('running', 'interrupted', 'finished', 'failed')),
    status_reason        TEXT,                -- why a run is failed/interrupted, in one sentence
    started_at           TEXT    NOT NULL,
    finished_at          TEXT,
    updated_at           TEXT    NOT NULL,    -- heartbeat of the process that holds the run
    model_path           TEXT    NOT NULL,
    model_name           TEXT    NOT NULL,
    model_size_bytes     INTEGER NOT NULL,
    model_sha256         TEXT    NOT NULL,
    questions_path       TEXT    NOT NULL,
    questions_sha256     TEXT    NOT NULL,
    question_count       INTEGER NOT NULL,
    config_json          TEXT    NOT NULL,    -- every setting that shapes an answer (the run identity)
    engine_json          TEXT,                -- what the engine chose: layers offloaded, context, threads
    predicted_peak_bytes INTEGER,
    host_json            TEXT    NOT NULL,    -- host, CPU, RAM, GPUs, build features
    holder_pid           INTEGER,             -- process writing this run (NULL when none)
    holder_started_at    TEXT,                -- that process's start time, so a reused pid is never taken for it
    active_ms            INTEGER NOT NULL DEFAULT 0, -- generation wall time summed over all sessions
    sessions             INTEGER NOT NULL DEFAULT 0  -- how many times the run was started or resumed
);

CREATE TABLE questions (
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    question_id  TEXT    NOT NULL,
    ordinal      INTEGER NOT NULL,             -- 1-based position in the question file
    question     TEXT    NOT NULL,
    reference    TEXT,                         -- reference answer text, when given
    answer_index INTEGER,                      -- 0-based correct choice, multiple choice only
    choices_json TEXT,                         -- JSON array of choices, multiple choice only
    category     TEXT,
    context      TEXT,
    extra_json   TEXT,                         -- unknown fields of the input, kept verbatim
    PRIMARY KEY (run_id, question_id)
);
CREATE INDEX questions_by_ordinal ON questions(run_id, ordinal);

CREATE TABLE answers (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    question_id       TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('ok', 'error')),
    answer            TEXT,
    error             TEXT,
    finish_reason     TEXT,                    -- eos | length | context
    prompt_tokens     INTEGER,
    prompt_tokens_reused INTEGER,              -- prompt tokens taken from a shared KV prefix
    completion_tokens INTEGER,
    queued_at         TEXT,
    started_at        TEXT,
    first_token_at    TEXT,
    finished_at       TEXT,
    ttft_ms           REAL,
    latency_ms        REAL,
    decode_tok_per_s  REAL,
    rss_bytes         INTEGER,
    gpu_used_bytes    INTEGER,
    score             REAL,                    -- 1/0 for multiple choice; exact match for short answer
    exact_match       INTEGER,
    f1                REAL,
    chosen_index      INTEGER,                 -- choice extracted from a multiple-choice answer
    parallel_slot     INTEGER,
    UNIQUE (run_id, question_id)
);

CREATE TABLE memory_samples (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    at              TEXT    NOT NULL,
    rss_bytes       INTEGER,
    ram_used_bytes  INTEGER,
    ram_total_bytes INTEGER,
    swap_used_bytes INTEGER,
    swap_total_bytes INTEGER,
    gpu_index       INTEGER,                   -- NULL where NVML is absent
    gpu_used_bytes  INTEGER,
    gpu_total_bytes INTEGER,
    gpu_util_pct    INTEGER
);
CREATE INDEX memory_samples_by_run ON memory_samples(run_id, at);

-- Cache of file hashes so that a multi-GB model is hashed once, keyed by path, size and mtime.
CREATE TABLE file_hashes (
    path       TEXT    NOT NULL,
    size_bytes INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    PRIMARY KEY (path, size_bytes, mtime_ns)
);

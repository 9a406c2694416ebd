-- Views for users. Recreated on every open, so they always match the binary.
DROP VIEW IF EXISTS run_summary;
DROP VIEW IF EXISTS answers_view;
DROP VIEW IF EXISTS category_summary;
DROP VIEW IF EXISTS errors;
DROP VIEW IF EXISTS memory_peaks;

-- One row per run: progress, speed, memory and quality.
CREATE VIEW run_summary AS
WITH ranked AS (
    SELECT run_id, latency_ms,
           ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY latency_ms) AS rn,
           COUNT(*)     OVER (PARTITION BY run_id)                     AS n
    FROM answers WHERE status = 'ok' AND latency_ms IS NOT NULL
),
latency_pct AS (   -- nearest-rank percentiles
    SELECT run_id,
           MIN(CASE WHEN rn >= 0.50 * n THEN latency_ms END) AS p50_latency_ms,
           MIN(CASE WHEN rn >= 0.95 * n THEN latency_ms END) AS p95_latency_ms
    FROM ranked GROUP BY run_id
),
per_run AS (
    SELECT run_id,
           COUNT(*)                                      AS done,
           SUM(status = 'ok')                            AS ok,
           SUM(status = 'error')                         AS errors,
           COUNT(score)                                  AS scored,
           AVG(score)                                    AS accuracy,
           AVG(f1)                                       AS mean_f1,
           AVG(CASE WHEN status = 'ok' THEN latency_ms END) AS mean_latency_ms,
           AVG(CASE WHEN status = 'ok' THEN ttft_ms END)    AS mean_ttft_ms,
           AVG(decode_tok_per_s)                         AS mean_decode_tok_per_s,
           SUM(prompt_tokens)                            AS prompt_tokens,
           SUM(completion_tokens)                        AS completion_tokens,
           MAX(rss_bytes)                                AS peak_answer_rss_bytes
    FROM answers GROUP BY run_id
),
mem AS (
    SELECT run_id,
           MAX(rss_bytes)       AS peak_rss_bytes,
           MAX(ram_used_bytes)  AS peak_ram_used_bytes,
           MAX(ram_total_bytes) AS ram_total_bytes,
           MAX(swap_used_bytes) AS peak_swap_used_bytes,
           MAX(gpu_used_bytes)  AS peak_gpu_used_bytes,
           MAX(gpu_total_bytes) AS gpu_total_bytes,
           COUNT(DISTINCT at)   AS memory_samples
    FROM memory_samples GROUP BY run_id
)
SELECT r.id                                   AS run_id,
       r.status,
       r.model_name,
       r.question_count                       AS total,
       COALESCE(a.done, 0)                    AS done,
       COALESCE(a.ok, 0)                      AS ok,
       COALESCE(a.errors, 0)                  AS errors,
       ROUND(1.0 * COALESCE(a.ok, 0) / NULLIF(r.question_count, 0), 4) AS success_rate,
       a.scored,
       ROUND(a.accuracy, 4)                   AS accuracy,
       ROUND(a.mean_f1, 4)                    AS mean_f1,
       ROUND(a.mean_latency_ms, 1)            AS mean_latency_ms,
       ROUND(p.p50_latency_ms, 1)             AS p50_latency_ms,
       ROUND(p.p95_latency_ms, 1)             AS p95_latency_ms,
       ROUND(a.mean_ttft_ms, 1)               AS mean_ttft_ms,
       ROUND(a.mean_decode_tok_per_s, 1)      AS mean_decode_tok_per_s,
       ROUND(1000.0 * a.completion_tokens / NULLIF(r.active_ms, 0), 1) AS throughput_tok_per_s,
       ROUND(3600000.0 * a.done / NULLIF(r.active_ms, 0), 1)           AS questions_per_hour,
       a.prompt_tokens,
       a.completion_tokens,
       MAX(COALESCE(m.peak_rss_bytes, 0), COALESCE(a.peak_answer_rss_bytes, 0)) AS peak_rss_bytes,
       m.peak_ram_used_bytes,
       m.ram_total_bytes,
       m.peak_swap_used_bytes,
       m.peak_gpu_used_bytes,
       m.gpu_total_bytes,
       r.predicted_peak_bytes,                -- preflight's predicted peak RSS (host)
       -- (predicted - measured) / measured, in percent; GPU from engine_json (NVML counts the device)
       ROUND(100.0 * (r.predicted_peak_bytes - MAX(COALESCE(m.peak_rss_bytes, 0), COALESCE(a.peak_answer_rss_bytes, 0)))
             / NULLIF(MAX(COALESCE(m.peak_rss_bytes, 0), COALESCE(a.peak_answer_rss_bytes, 0)), 0), 1) AS rss_prediction_error_pct,
       NULLIF(json_extract(r.engine_json, '$.preflight.predicted_gpu_bytes'), 0) AS predicted_gpu_bytes,
       ROUND(100.0 * (json_extract(r.engine_json, '$.preflight.predicted_gpu_bytes') - m.peak_gpu_used_bytes)
             / NULLIF(m.peak_gpu_used_bytes, 0), 1) AS gpu_prediction_error_pct,
       ROUND(r.active_ms / 1000.0, 1)         AS wall_time_s,
       r.sessions,
       r.started_at,
       r.finished_at,
       r.model_path
FROM runs r
LEFT JOIN per_run a     ON a.run_id = r.id
LEFT JOIN latency_pct p ON p.run_id = r.id
LEFT JOIN mem m         ON m.run_id = r.id;

-- Answers beside their questions, in question-file order.
CREATE VIEW answers_view AS
SELECT q.run_id, q.ordinal, q.question_id, q.category, q.question, q.choices_json,
       q.reference, q.answer_index,
       a.status, a.answer, a.error, a.finish_reason, a.score, a.exact_match, a.f1, a.chosen_index,
       a.prompt_tokens, a.completion_tokens, a.ttft_ms, a.latency_ms, a.decode_tok_per_s,
       a.rss_bytes, a.gpu_used_bytes, a.queued_at, a.started_at, a.first_token_at, a.finished_at
FROM questions q
LEFT JOIN answers a ON a.run_id = q.run_id AND a.question_id = q.question_id;

-- One row per run and category: progress, accuracy and speed of the questions of that category
-- (questions without a category under '(none)'). Error rows count as wrong, as in `report`.
-- mc_*: multiple choice with a key; free_*: short answers with a reference (score = reference
-- contained in the answer), exact_match_rate and mean_f1 over the same short answers.
CREATE VIEW category_summary AS
SELECT q.run_id,
       r.model_name,
       COALESCE(q.category, '(none)')                                    AS category,
       COUNT(*)                                                          AS total,
       COUNT(a.id)                                                       AS done,
       COALESCE(SUM(a.status = 'ok'), 0)                                 AS ok,
       COALESCE(SUM(a.status = 'error'), 0)                              AS errors,
       SUM(a.id IS NOT NULL AND q.choices_json IS NOT NULL AND q.answer_index IS NOT NULL) AS mc_n,
       ROUND(AVG(CASE WHEN q.choices_json IS NOT NULL AND q.answer_index IS NOT NULL AND a.id IS NOT NULL
                      THEN COALESCE(a.score, 0) END), 4)                 AS mc_accuracy,
       SUM(a.id IS NOT NULL AND q.choices_json IS NULL AND q.reference IS NOT NULL) AS free_n,
       ROUND(AVG(CASE WHEN q.choices_json IS NULL AND q.reference IS NOT NULL AND a.id IS NOT NULL
                      THEN COALESCE(a.score, 0) END), 4)                 AS free_accuracy,
       ROUND(AVG(CASE WHEN q.choices_json IS NULL AND q.reference IS NOT NULL AND a.id IS NOT NULL
                      THEN COALESCE(a.exact_match, 0) END), 4)           AS exact_match_rate,
       ROUND(AVG(CASE WHEN q.choices_json IS NULL AND q.reference IS NOT NULL AND a.id IS NOT NULL
                      THEN COALESCE(a.f1, 0) END), 4)                    AS mean_f1,
       ROUND(AVG(CASE WHEN a.status = 'ok' THEN a.latency_ms END), 1)    AS mean_latency_ms,
       ROUND(AVG(CASE WHEN a.status = 'ok' THEN a.ttft_ms END), 1)       AS mean_ttft_ms
FROM questions q
JOIN runs r ON r.id = q.run_id
LEFT JOIN answers a ON a.run_id = q.run_id AND a.question_id = q.question_id
GROUP BY q.run_id, COALESCE(q.category, '(none)');

-- Every failed question (answers.status = 'error') with its question and reason.
-- Group them with: SELECT run_id, error, COUNT(*) FROM errors GROUP BY 1, 2;
CREATE VIEW errors AS
SELECT a.run_id,
       r.model_name,
       q.ordinal,
       a.question_id,
       q.category,
       a.error,
       a.prompt_tokens,
       a.queued_at,
       length(q.question) + COALESCE(length(q.context), 0) AS question_chars,
       q.question
FROM answers a
JOIN runs r      ON r.id = a.run_id
JOIN questions q ON q.run_id = a.run_id AND q.question_id = a.question_id
WHERE a.status = 'error';

-- One row per run with memory samples: the peak of each memory figure and when it happened, next
-- to the preflight prediction. GPU figures are summed over GPUs at each sample time (NULL without
-- NVML). peak_over_predicted = peak RSS / predicted_peak_bytes (the preflight's host RSS prediction;
-- the GPU prediction is run_summary.predicted_gpu_bytes).
CREATE VIEW memory_peaks AS
WITH per_at AS (
    SELECT run_id, at,
           MAX(rss_bytes)        AS rss,
           MAX(ram_used_bytes)   AS ram,
           MAX(ram_total_bytes)  AS ram_total,
           MAX(swap_used_bytes)  AS swap,
           MAX(swap_total_bytes) AS swap_total,
           SUM(gpu_used_bytes)   AS gpu,
           SUM(gpu_total_bytes)  AS gpu_total
    FROM memory_samples GROUP BY run_id, at
),
peaks AS (
    SELECT run_id, COUNT(*) AS samples, MIN(at) AS first_at, MAX(at) AS last_at,
           MAX(rss) AS rss, MAX(ram) AS ram, MAX(ram_total) AS ram_total,
           MAX(swap) AS swap, MAX(swap_total) AS swap_total,
           MAX(gpu) AS gpu, MAX(gpu_total) AS gpu_total
    FROM per_at GROUP BY run_id
)
SELECT p.run_id,
       r.model_name,
       p.samples,
       p.first_at,
       p.last_at,
       p.rss                                                           AS peak_rss_bytes,
       (SELECT MIN(x.at) FROM per_at x WHERE x.run_id = p.run_id AND x.rss = p.rss)   AS peak_rss_at,
       p.ram                                                           AS peak_ram_used_bytes,
       p.ram_total                                                     AS ram_total_bytes,
       (SELECT MIN(x.at) FROM per_at x WHERE x.run_id = p.run_id AND x.ram = p.ram)   AS peak_ram_at,
       p.swap                                                          AS peak_swap_used_bytes,
       p.swap_total                                                    AS swap_total_bytes,
       p.gpu                                                           AS peak_gpu_used_bytes,
       p.gpu_total                                                     AS gpu_total_bytes,
       (SELECT MIN(x.at) FROM per_at x WHERE x.run_id = p.run_id AND x.gpu = p.gpu)   AS peak_gpu_at,
       r.predicted_peak_bytes,
       ROUND(1.0 * p.rss / NULLIF(r.predicted_peak_bytes, 0), 3)       AS peak_over_predicted
FROM peaks p
JOIN runs r ON r.id = p.run_id;

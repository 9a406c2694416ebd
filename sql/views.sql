-- Views for users. Recreated on every open, so they always match the binary.
DROP VIEW IF EXISTS run_summary;
DROP VIEW IF EXISTS answers_view;

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
       r.predicted_peak_bytes,
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

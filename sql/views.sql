-- Views for users, and the one definition of every figure that `report`, `compare`, `status` and
-- the end-of-run summary show: they read these views and compute nothing of their own. Recreated
-- on every open, so they always match the binary. Definitions in words: docs/metrics.md.
DROP VIEW IF EXISTS run_summary;
DROP VIEW IF EXISTS answers_view;
DROP VIEW IF EXISTS category_summary;
DROP VIEW IF EXISTS errors;
DROP VIEW IF EXISTS memory_peaks;
DROP VIEW IF EXISTS answer_grades;
DROP VIEW IF EXISTS memory_by_time;
DROP VIEW IF EXISTS loglik_grades;
DROP VIEW IF EXISTS shard_summary;
DROP VIEW IF EXISTS merged_runs;

-- Every question of a run with how it is graded:
--   kind 'mc'   multiple choice with a known correct index;
--   kind 'free' short answer with a reference text;
--   kind NULL   nothing to grade against (unscored: in no accuracy denominator).
-- graded = answered (an ok or an error row) and kind is not NULL. An error row counts as wrong
-- (correct 0, exact 0, f1 0).
CREATE VIEW answer_grades AS
SELECT q.run_id,
       q.question_id,
       q.ordinal,
       COALESCE(q.category, '(none)')                                   AS category,
       CASE WHEN q.choices_json IS NOT NULL AND q.answer_index IS NOT NULL THEN 'mc'
            WHEN q.choices_json IS NULL AND q.reference IS NOT NULL THEN 'free' END AS kind,
       a.status,
       (a.id IS NOT NULL)                                               AS answered,
       (a.id IS NOT NULL AND (q.answer_index IS NOT NULL AND q.choices_json IS NOT NULL
                              OR q.choices_json IS NULL AND q.reference IS NOT NULL)) AS graded,
       (a.status = 'ok' AND a.score = 1)                                AS correct,
       (a.status = 'ok' AND a.exact_match = 1)                          AS exact,
       CASE WHEN a.status = 'ok' THEN COALESCE(a.f1, 0) WHEN a.id IS NOT NULL THEN 0 END AS f1,
       CASE WHEN a.status = 'ok' THEN a.latency_ms END                  AS ok_latency_ms,
       CASE WHEN a.status = 'ok' THEN a.ttft_ms END                     AS ok_ttft_ms
FROM questions q
LEFT JOIN answers a ON a.run_id = q.run_id AND a.question_id = q.question_id;

-- Every multiple-choice question scored by log-likelihood (choice_scores), with the choice each
-- normalisation picks and whether it is the correct one:
--   acc        the largest summed log-probability;
--   acc_norm   the largest log-probability per character of the continuation (lm-evaluation-
--              harness's acc_norm);
--   acc_bytes  per UTF-8 byte;
--   acc_token  per token (llama-perplexity's mean over the continuation's tokens).
-- Ties go to the first choice, as numpy's argmax in lm-evaluation-harness. chance = 1 / choices.
-- generated_agrees: the answer generated in the same run (--mc-scoring both) chose the same as acc.
CREATE VIEW loglik_grades AS
WITH ranked AS (
    SELECT run_id, question_id, choice_index, tokens_computed, tokens_reused,
           ROW_NUMBER() OVER w_acc   AS r_acc,
           ROW_NUMBER() OVER w_norm  AS r_norm,
           ROW_NUMBER() OVER w_bytes AS r_bytes,
           ROW_NUMBER() OVER w_token AS r_token,
           COUNT(*) OVER (PARTITION BY run_id, question_id) AS choices
    FROM choice_scores
    WINDOW w_acc   AS (PARTITION BY run_id, question_id ORDER BY logprob DESC, choice_index),
           w_norm  AS (PARTITION BY run_id, question_id ORDER BY logprob / NULLIF(chars, 0) DESC, choice_index),
           w_bytes AS (PARTITION BY run_id, question_id ORDER BY logprob / NULLIF(bytes, 0) DESC, choice_index),
           w_token AS (PARTITION BY run_id, question_id ORDER BY logprob / NULLIF(tokens, 0) DESC, choice_index)
),
picks AS (
    SELECT run_id, question_id, MAX(choices) AS choices,
           MAX(CASE WHEN r_acc = 1 THEN choice_index END)   AS acc_choice,
           MAX(CASE WHEN r_norm = 1 THEN choice_index END)  AS acc_norm_choice,
           MAX(CASE WHEN r_bytes = 1 THEN choice_index END) AS acc_bytes_choice,
           MAX(CASE WHEN r_token = 1 THEN choice_index END) AS acc_token_choice,
           SUM(tokens_computed) AS tokens_computed,
           SUM(tokens_reused)   AS tokens_reused
    FROM ranked GROUP BY run_id, question_id
)
SELECT p.run_id, p.question_id, q.ordinal,
       COALESCE(q.category, '(none)')                AS category,
       q.answer_index,
       p.choices,
       (q.answer_index IS NOT NULL)                  AS graded,
       p.acc_choice, p.acc_norm_choice, p.acc_bytes_choice, p.acc_token_choice,
       (p.acc_choice = q.answer_index)               AS acc,
       (p.acc_norm_choice = q.answer_index)          AS acc_norm,
       (p.acc_bytes_choice = q.answer_index)         AS acc_bytes,
       (p.acc_token_choice = q.answer_index)         AS acc_token,
       1.0 / p.choices                               AS chance,
       CASE WHEN a.finish_reason <> 'loglik' AND a.status = 'ok'
            THEN (a.chosen_index IS NOT NULL AND a.chosen_index = p.acc_choice) END AS generated_agrees,
       p.tokens_computed, p.tokens_reused
FROM picks p
JOIN questions q     ON q.run_id = p.run_id AND q.question_id = p.question_id
LEFT JOIN answers a  ON a.run_id = p.run_id AND a.question_id = p.question_id;

-- One row per run and sample time: RSS, RAM and swap as sampled, GPU memory summed over GPUs
-- (NULL without NVML).
CREATE VIEW memory_by_time AS
SELECT run_id, at,
       MAX(rss_bytes)        AS rss_bytes,
       MAX(ram_used_bytes)   AS ram_used_bytes,
       MAX(ram_total_bytes)  AS ram_total_bytes,
       MAX(swap_used_bytes)  AS swap_used_bytes,
       MAX(swap_total_bytes) AS swap_total_bytes,
       SUM(gpu_used_bytes)   AS gpu_used_bytes,
       SUM(gpu_total_bytes)  AS gpu_total_bytes
FROM memory_samples GROUP BY run_id, at;

-- One row per run: progress, quality, speed and memory.
--   success_rate = ok / total; accuracy = correct / graded (mc_ and free_ restricted to a kind);
--   exact_match_rate and mean_f1 over graded short answers; latency and TTFT over ok rows, with
--   nearest-rank percentiles (smallest value whose 1-based rank r satisfies r >= p * n);
--   throughput and questions per hour over runs.active_ms (generation time of all sessions);
--   peak_rss_bytes over memory samples and answer rows; peak GPU = max over sample times of the
--   sum over GPUs.
CREATE VIEW run_summary AS
WITH latency_ranked AS (
    SELECT run_id, latency_ms AS v,
           ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY latency_ms) AS rn,
           COUNT(*)     OVER (PARTITION BY run_id)                     AS n
    FROM answers WHERE status = 'ok' AND latency_ms IS NOT NULL
),
latency_pct AS (
    SELECT run_id,
           MIN(CASE WHEN rn >= 0.50 * n - 1e-9 THEN v END) AS p50,
           MIN(CASE WHEN rn >= 0.95 * n - 1e-9 THEN v END) AS p95,
           MAX(v)                                         AS max
    FROM latency_ranked GROUP BY run_id
),
ttft_ranked AS (
    SELECT run_id, ttft_ms AS v,
           ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY ttft_ms) AS rn,
           COUNT(*)     OVER (PARTITION BY run_id)                  AS n
    FROM answers WHERE status = 'ok' AND ttft_ms IS NOT NULL
),
ttft_pct AS (
    SELECT run_id,
           MIN(CASE WHEN rn >= 0.50 * n - 1e-9 THEN v END) AS p50,
           MIN(CASE WHEN rn >= 0.95 * n - 1e-9 THEN v END) AS p95,
           MAX(v)                                         AS max
    FROM ttft_ranked GROUP BY run_id
),
grades AS (
    SELECT run_id,
           SUM(graded)                                    AS graded,
           SUM(graded AND correct)                        AS correct,
           SUM(graded AND kind = 'mc')                    AS mc_graded,
           SUM(graded AND kind = 'mc' AND correct)        AS mc_correct,
           SUM(graded AND kind = 'free')                  AS free_graded,
           SUM(graded AND kind = 'free' AND correct)      AS free_correct,
           SUM(graded AND kind = 'free' AND exact)        AS free_exact,
           AVG(CASE WHEN graded AND kind = 'free' THEN f1 END) AS mean_f1
    FROM answer_grades GROUP BY run_id
),
per_run AS (
    SELECT run_id,
           COUNT(*)                                         AS done,
           SUM(status = 'ok')                               AS ok,
           SUM(status = 'error')                            AS errors,
           AVG(CASE WHEN status = 'ok' THEN latency_ms END) AS mean_latency_ms,
           AVG(CASE WHEN status = 'ok' THEN ttft_ms END)    AS mean_ttft_ms,
           AVG(CASE WHEN status = 'ok' THEN decode_tok_per_s END) AS mean_decode_tok_per_s,
           COALESCE(SUM(prompt_tokens), 0)                  AS prompt_tokens,
           COALESCE(SUM(prompt_tokens_reused), 0)           AS prompt_tokens_reused,
           COALESCE(SUM(completion_tokens), 0)              AS completion_tokens,
           MAX(rss_bytes)                                   AS peak_answer_rss_bytes
    FROM answers GROUP BY run_id
),
mem AS (
    SELECT run_id,
           COUNT(*)              AS memory_samples,
           MAX(rss_bytes)        AS peak_rss_bytes,
           MAX(ram_used_bytes)   AS peak_ram_used_bytes,
           MAX(ram_total_bytes)  AS ram_total_bytes,
           MAX(swap_used_bytes)  AS peak_swap_used_bytes,
           MAX(swap_total_bytes) AS swap_total_bytes,
           MAX(gpu_used_bytes)   AS peak_gpu_used_bytes,
           MAX(gpu_total_bytes)  AS gpu_total_bytes
    FROM memory_by_time GROUP BY run_id
),
loglik AS (
    SELECT run_id,
           SUM(graded)                                  AS scored,
           SUM(graded AND acc)                          AS acc,
           SUM(graded AND acc_norm)                     AS acc_norm,
           SUM(graded AND acc_bytes)                    AS acc_bytes,
           SUM(graded AND acc_token)                    AS acc_token,
           AVG(CASE WHEN graded THEN chance END)        AS chance,
           AVG(generated_agrees)                        AS agreement
    FROM loglik_grades GROUP BY run_id
),
peaks AS (
    SELECT r.id AS run_id,
           NULLIF(MAX(COALESCE(m.peak_rss_bytes, 0), COALESCE(a.peak_answer_rss_bytes, 0)), 0) AS peak_rss_bytes,
           json_extract(r.engine_json, '$.preflight.predicted_gpu_bytes') AS predicted_gpu_bytes
    FROM runs r
    LEFT JOIN per_run a ON a.run_id = r.id
    LEFT JOIN mem m     ON m.run_id = r.id
)
SELECT r.id                                   AS run_id,
       r.status,
       r.model_name,
       r.question_count                       AS total,
       COALESCE(a.done, 0)                    AS done,
       COALESCE(a.ok, 0)                      AS ok,
       COALESCE(a.errors, 0)                  AS errors,
       ROUND(1.0 * COALESCE(a.ok, 0) / NULLIF(r.question_count, 0), 4) AS success_rate,
       COALESCE(g.graded, 0)                  AS graded,
       COALESCE(g.correct, 0)                 AS correct,
       ROUND(1.0 * g.correct / NULLIF(g.graded, 0), 4)           AS accuracy,
       COALESCE(g.mc_graded, 0)               AS mc_graded,
       COALESCE(g.mc_correct, 0)              AS mc_correct,
       ROUND(1.0 * g.mc_correct / NULLIF(g.mc_graded, 0), 4)     AS mc_accuracy,
       COALESCE(g.free_graded, 0)             AS free_graded,
       COALESCE(g.free_correct, 0)            AS free_correct,
       ROUND(1.0 * g.free_correct / NULLIF(g.free_graded, 0), 4) AS free_text_accuracy,
       COALESCE(g.free_exact, 0)              AS exact_matches,
       ROUND(1.0 * g.free_exact / NULLIF(g.free_graded, 0), 4)   AS exact_match_rate,
       ROUND(g.mean_f1, 4)                    AS mean_f1,
       COALESCE(ll.scored, 0)                 AS loglik_scored,
       COALESCE(ll.acc, 0)                    AS loglik_acc_correct,
       COALESCE(ll.acc_norm, 0)               AS loglik_acc_norm_correct,
       ROUND(1.0 * ll.acc / NULLIF(ll.scored, 0), 4)       AS loglik_acc,
       ROUND(1.0 * ll.acc_norm / NULLIF(ll.scored, 0), 4)  AS loglik_acc_norm,
       ROUND(1.0 * ll.acc_bytes / NULLIF(ll.scored, 0), 4) AS loglik_acc_bytes,
       ROUND(1.0 * ll.acc_token / NULLIF(ll.scored, 0), 4) AS loglik_acc_token,
       ROUND(ll.chance, 4)                    AS loglik_chance,
       ROUND(ll.agreement, 4)                 AS generated_loglik_agreement,
       ROUND(a.mean_latency_ms, 1)            AS mean_latency_ms,
       ROUND(lp.p50, 1)                       AS p50_latency_ms,
       ROUND(lp.p95, 1)                       AS p95_latency_ms,
       ROUND(lp.max, 1)                       AS max_latency_ms,
       ROUND(a.mean_ttft_ms, 1)               AS mean_ttft_ms,
       ROUND(tp.p50, 1)                       AS p50_ttft_ms,
       ROUND(tp.p95, 1)                       AS p95_ttft_ms,
       ROUND(tp.max, 1)                       AS max_ttft_ms,
       ROUND(a.mean_decode_tok_per_s, 1)      AS mean_decode_tok_per_s,
       ROUND(1000.0 * a.completion_tokens / NULLIF(r.active_ms, 0), 1) AS throughput_tok_per_s,
       ROUND(3600000.0 * a.done / NULLIF(r.active_ms, 0), 1)           AS questions_per_hour,
       COALESCE(a.prompt_tokens, 0)           AS prompt_tokens,
       COALESCE(a.prompt_tokens_reused, 0)    AS prompt_tokens_reused,
       COALESCE(a.completion_tokens, 0)       AS completion_tokens,
       COALESCE(m.memory_samples, 0)          AS memory_samples,
       p.peak_rss_bytes,
       m.peak_ram_used_bytes,
       m.ram_total_bytes,
       m.peak_swap_used_bytes,
       m.swap_total_bytes,
       m.peak_gpu_used_bytes,
       m.gpu_total_bytes,
       r.predicted_peak_bytes,                -- preflight's predicted peak RSS (host)
       -- (predicted - measured) / measured, in percent
       ROUND(100.0 * (r.predicted_peak_bytes - p.peak_rss_bytes) / NULLIF(p.peak_rss_bytes, 0), 1) AS rss_prediction_error_pct,
       NULLIF(p.predicted_gpu_bytes, 0)       AS predicted_gpu_bytes,
       ROUND(100.0 * (p.predicted_gpu_bytes - m.peak_gpu_used_bytes) / NULLIF(m.peak_gpu_used_bytes, 0), 1) AS gpu_prediction_error_pct,
       ROUND(r.active_ms / 1000.0, 1)         AS wall_time_s,
       r.sessions,
       r.started_at,
       r.finished_at,
       r.model_path
FROM runs r
LEFT JOIN per_run a      ON a.run_id = r.id
LEFT JOIN grades g       ON g.run_id = r.id
LEFT JOIN latency_pct lp ON lp.run_id = r.id
LEFT JOIN ttft_pct tp    ON tp.run_id = r.id
LEFT JOIN mem m          ON m.run_id = r.id
LEFT JOIN loglik ll      ON ll.run_id = r.id
LEFT JOIN peaks p        ON p.run_id = r.id;

-- Answers beside their questions, in question-file order.
CREATE VIEW answers_view AS
SELECT q.run_id, q.ordinal, q.question_id, q.category, q.question, q.choices_json,
       q.reference, q.answer_index,
       a.status, a.answer, a.error, a.finish_reason, a.score, a.exact_match, a.f1, a.chosen_index,
       a.prompt_tokens, a.completion_tokens, a.ttft_ms, a.latency_ms, a.decode_tok_per_s,
       a.rss_bytes, a.gpu_used_bytes, a.queued_at, a.started_at, a.first_token_at, a.finished_at
FROM questions q
LEFT JOIN answers a ON a.run_id = q.run_id AND a.question_id = q.question_id;

-- One row per run and category (questions without one under '(none)'), with the definitions of
-- run_summary restricted to the category's questions. first_ordinal orders categories as the
-- question file does.
CREATE VIEW category_summary AS
SELECT g.run_id,
       r.model_name,
       g.category,
       MIN(g.ordinal)                                                   AS first_ordinal,
       COUNT(*)                                                         AS total,
       SUM(g.answered)                                                  AS done,
       COALESCE(SUM(g.status = 'ok'), 0)                                AS ok,
       COALESCE(SUM(g.status = 'error'), 0)                             AS errors,
       SUM(g.graded)                                                    AS graded,
       SUM(g.graded AND g.correct)                                      AS correct,
       ROUND(1.0 * SUM(g.graded AND g.correct) / NULLIF(SUM(g.graded), 0), 4) AS accuracy,
       SUM(g.graded AND g.kind = 'mc')                                  AS mc_graded,
       SUM(g.graded AND g.kind = 'mc' AND g.correct)                    AS mc_correct,
       ROUND(1.0 * SUM(g.graded AND g.kind = 'mc' AND g.correct)
             / NULLIF(SUM(g.graded AND g.kind = 'mc'), 0), 4)           AS mc_accuracy,
       SUM(g.graded AND g.kind = 'free')                                AS free_graded,
       SUM(g.graded AND g.kind = 'free' AND g.correct)                  AS free_correct,
       ROUND(1.0 * SUM(g.graded AND g.kind = 'free' AND g.correct)
             / NULLIF(SUM(g.graded AND g.kind = 'free'), 0), 4)         AS free_text_accuracy,
       SUM(g.graded AND g.kind = 'free' AND g.exact)                    AS exact_matches,
       ROUND(1.0 * SUM(g.graded AND g.kind = 'free' AND g.exact)
             / NULLIF(SUM(g.graded AND g.kind = 'free'), 0), 4)         AS exact_match_rate,
       ROUND(AVG(CASE WHEN g.graded AND g.kind = 'free' THEN g.f1 END), 4) AS mean_f1,
       ROUND(AVG(g.ok_latency_ms), 1)                                   AS mean_latency_ms,
       ROUND(AVG(g.ok_ttft_ms), 1)                                      AS mean_ttft_ms,
       COALESCE(SUM(l.graded), 0)                                       AS loglik_scored,
       COALESCE(SUM(l.graded AND l.acc), 0)                             AS loglik_acc_correct,
       COALESCE(SUM(l.graded AND l.acc_norm), 0)                        AS loglik_acc_norm_correct,
       ROUND(1.0 * SUM(l.graded AND l.acc) / NULLIF(SUM(l.graded), 0), 4)       AS loglik_acc,
       ROUND(1.0 * SUM(l.graded AND l.acc_norm) / NULLIF(SUM(l.graded), 0), 4)  AS loglik_acc_norm,
       ROUND(1.0 * SUM(l.graded AND l.acc_bytes) / NULLIF(SUM(l.graded), 0), 4) AS loglik_acc_bytes,
       ROUND(1.0 * SUM(l.graded AND l.acc_token) / NULLIF(SUM(l.graded), 0), 4) AS loglik_acc_token,
       ROUND(AVG(CASE WHEN l.graded THEN l.chance END), 4)              AS loglik_chance
FROM answer_grades g
JOIN runs r ON r.id = g.run_id
LEFT JOIN loglik_grades l ON l.run_id = g.run_id AND l.question_id = g.question_id
GROUP BY g.run_id, g.category;

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

-- One row per run with memory samples: the peak of each memory figure (as in run_summary) and
-- when it happened, next to the preflight prediction. peak_over_predicted = peak sampled RSS /
-- predicted_peak_bytes.
CREATE VIEW memory_peaks AS
WITH peaks AS (
    SELECT run_id, COUNT(*) AS samples, MIN(at) AS first_at, MAX(at) AS last_at,
           MAX(rss_bytes) AS rss, MAX(ram_used_bytes) AS ram, MAX(ram_total_bytes) AS ram_total,
           MAX(swap_used_bytes) AS swap, MAX(swap_total_bytes) AS swap_total,
           MAX(gpu_used_bytes) AS gpu, MAX(gpu_total_bytes) AS gpu_total
    FROM memory_by_time GROUP BY run_id
)
SELECT p.run_id,
       r.model_name,
       p.samples,
       p.first_at,
       p.last_at,
       p.rss                                                           AS peak_rss_bytes,
       (SELECT MIN(x.at) FROM memory_by_time x WHERE x.run_id = p.run_id AND x.rss_bytes = p.rss) AS peak_rss_at,
       p.ram                                                           AS peak_ram_used_bytes,
       p.ram_total                                                     AS ram_total_bytes,
       (SELECT MIN(x.at) FROM memory_by_time x WHERE x.run_id = p.run_id AND x.ram_used_bytes = p.ram) AS peak_ram_at,
       p.swap                                                          AS peak_swap_used_bytes,
       p.swap_total                                                    AS swap_total_bytes,
       p.gpu                                                           AS peak_gpu_used_bytes,
       p.gpu_total                                                     AS gpu_total_bytes,
       (SELECT MIN(x.at) FROM memory_by_time x WHERE x.run_id = p.run_id AND x.gpu_used_bytes = p.gpu) AS peak_gpu_at,
       r.predicted_peak_bytes,
       ROUND(1.0 * p.rss / NULLIF(r.predicted_peak_bytes, 0), 3)       AS peak_over_predicted
FROM peaks p
JOIN runs r ON r.id = p.run_id;

-- One row per shard of a run merged from shards (`merge --into`), with run_summary's
-- definitions restricted to the shard: questions in the shard (from the partition), answers,
-- the hosts it ran on, wall_time_s = its generation time over all its sessions (runs.active_ms
-- of the shard runs), throughput and questions per hour over that time.
CREATE VIEW shard_summary AS
WITH plan AS (
    SELECT run_id, shard_index, COUNT(*) AS questions
    FROM shard_plan
    WHERE run_id IN (SELECT run_id FROM shard_parts)
    GROUP BY run_id, shard_index
),
answered AS (
    SELECT p.run_id, p.shard_index,
           COUNT(*)                                AS done,
           SUM(a.status = 'ok')                    AS ok,
           SUM(a.status = 'error')                 AS errors,
           COALESCE(SUM(a.completion_tokens), 0)   AS completion_tokens
    FROM shard_plan p
    JOIN answers a ON a.run_id = p.run_id AND a.question_id = p.question_id
    GROUP BY p.run_id, p.shard_index
),
parts AS (
    SELECT run_id, shard_index,
           COUNT(*)                                AS parts,
           group_concat(DISTINCT NULLIF(host, '')) AS hosts,
           SUM(active_ms)                          AS active_ms,
           SUM(sessions)                           AS sessions,
           MIN(source_started_at)                  AS started_at,
           MAX(finished_at)                        AS finished_at
    FROM shard_parts GROUP BY run_id, shard_index
)
SELECT pl.run_id,
       pl.shard_index,
       pl.questions,
       COALESCE(a.done, 0)                                             AS done,
       COALESCE(a.ok, 0)                                               AS ok,
       COALESCE(a.errors, 0)                                           AS errors,
       COALESCE(pt.parts, 0)                                           AS parts,
       pt.hosts,
       COALESCE(pt.sessions, 0)                                        AS sessions,
       ROUND(pt.active_ms / 1000.0, 1)                                 AS wall_time_s,
       ROUND(1000.0 * a.completion_tokens / NULLIF(pt.active_ms, 0), 1) AS throughput_tok_per_s,
       ROUND(3600000.0 * a.done / NULLIF(pt.active_ms, 0), 1)          AS questions_per_hour,
       pt.started_at,
       pt.finished_at
FROM plan pl
LEFT JOIN answered a ON a.run_id = pl.run_id AND a.shard_index = pl.shard_index
LEFT JOIN parts pt   ON pt.run_id = pl.run_id AND pt.shard_index = pl.shard_index;

-- One row per merged run: shards in the split and merged so far, and the elapsed time from the
-- first shard's start to the last one's finish (the shards run side by side, so this is less
-- than run_summary's wall_time_s, their generation time summed), with the questions per hour
-- that elapsed time gives the whole job.
CREATE VIEW merged_runs AS
SELECT r.id                                                   AS run_id,
       CAST(json_extract(r.config_json, '$.shard.count') AS INTEGER) AS shard_count,
       json_extract(r.config_json, '$.shard.key')             AS shard_key,
       COUNT(DISTINCT sp.shard_index)                         AS shards_merged,
       COUNT(*)                                               AS parts,
       ROUND((julianday(MAX(sp.finished_at)) - julianday(MIN(sp.source_started_at))) * 86400.0, 1) AS elapsed_s,
       ROUND(3600.0 * (SELECT COUNT(*) FROM answers a WHERE a.run_id = r.id)
             / NULLIF((julianday(MAX(sp.finished_at)) - julianday(MIN(sp.source_started_at))) * 86400.0, 0), 1)
                                                              AS questions_per_hour_elapsed
FROM runs r
JOIN shard_parts sp ON sp.run_id = r.id
GROUP BY r.id;

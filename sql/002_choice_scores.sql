-- docent-eval schema, version 2: multiple choice scored by log-likelihood (`run --mc-scoring`).
-- One row per choice of a multiple-choice question: the continuation scored after the prompt, the
-- sum of its tokens' log-probabilities, and the lengths every normalisation divides by. A
-- question's rows are written in one transaction, so a question has all its choices or none.
CREATE TABLE choice_scores (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    question_id     TEXT    NOT NULL,
    choice_index    INTEGER NOT NULL,          -- 0-based, as questions.answer_index
    continuation    TEXT    NOT NULL,          -- the text scored: a letter label or the choice text
    logprob         REAL    NOT NULL,          -- sum of natural-log probabilities of its tokens
    tokens          INTEGER NOT NULL,          -- continuation tokens (joint tokenization, split at the prompt)
    chars           INTEGER NOT NULL,          -- Unicode characters of the continuation
    bytes           INTEGER NOT NULL,          -- its UTF-8 bytes
    greedy          INTEGER NOT NULL,          -- 1 when every token was the most probable one
    tokens_computed INTEGER NOT NULL,          -- tokens decoded for this choice alone
    tokens_reused   INTEGER NOT NULL,          -- tokens it took from KV computed once (prompt, shared prefix)
    token_ids_json  TEXT    NOT NULL,          -- JSON array: the continuation's token ids
    token_logprobs_json TEXT NOT NULL,         -- JSON array: each token's log-probability (sum = logprob)
    scored_at       TEXT    NOT NULL,
    PRIMARY KEY (run_id, question_id, choice_index)
);

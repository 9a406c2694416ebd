-- docent-eval schema, version 3: the tokenizer check (`run --hf-tokenizer`).
-- The GGUF's tokenizer compared with the original model's Hugging Face tokenizer.json over the
-- run's prompts: counts and the first differing examples (record::TokenizerCheck as JSON).
-- Rewritten by each session that is given --hf-tokenizer; NULL when none was.
ALTER TABLE runs ADD COLUMN tokenizer_check_json TEXT;

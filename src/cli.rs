//! The command line as clap types: what each subcommand accepts. [`crate::commands`] runs them.

use crate::config::{GpuLayers, McContinuation, McScoring, PrefixCache};
use crate::dataset::shard::{ShardArg, ShardKey};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Crash-safe, measured evaluation of GGUF language models over question sets, stored in SQLite.
#[derive(Debug, Parser)]
#[command(name = "docent-eval", version = crate::LONG_VERSION, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a question set through a model and store every answer, timing and memory sample.
    Run(RunArgs),
    /// Report one run: model, settings, progress, accuracy, speed, memory, errors (md|csv|json|html).
    Report(ReportArgs),
    /// Compare runs side by side, one row per run [default: every finished run].
    Compare(CompareArgs),
    /// Score the stored answers again with the current scoring rules.
    Score(ScoreArgs),
    /// Predict from the GGUF header whether a model fits this machine (RAM, swap, GPU) and how.
    Preflight(PreflightArgs),
    /// Progress of a run, from the database (works while another process runs it).
    Status(StatusArgs),
    /// Ask the process running a run to stop gracefully, and wait for it.
    Stop(StopArgs),
    /// Live RAM, swap and GPU memory, like `watch nvidia-smi; free -h`.
    Monitor(MonitorArgs),
    /// Print each question's prompt as the model receives it (JSON lines: id, prompt, tokens).
    Prompts(PromptsArgs),
    /// Merge the databases of a run's shards (`run --shard`) into one, checking every question.
    Merge(MergeArgs),
}

/// Arguments of `merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged database (created if missing; merging into it again adds only what is new).
    #[arg(long, value_name = "all.db")]
    pub into: PathBuf,
    /// Shard databases written by `run --shard` (copies are fine; they are only read).
    #[arg(value_name = "SHARD.db", required = true)]
    pub shards: Vec<PathBuf>,
    /// Machine-readable output, with every missing question id.
    #[arg(long)]
    pub json: bool,
}

/// How a question file in a benchmark's own shape is read, and the prompt every question gets
/// (docs/benchmarks/).
#[derive(Debug, Clone, Default, Args)]
pub struct FormatArgs {
    /// Read the file's columns as question fields, e.g. `question=query,choices=A|B|C|D,answer=answer:index1`
    /// (fields id, question, context, category, choices, answer; answer forms text, index0,
    /// index1, letter). Unmapped fields are read by their own names.
    #[arg(long, value_name = "FIELD=COLUMN,...", conflicts_with = "map_file")]
    pub map: Option<String>,
    /// The same mapping in a file, one FIELD=COLUMN a line (`#` starts a comment line).
    #[arg(long, value_name = "FILE")]
    pub map_file: Option<PathBuf>,
    /// Prompt template file: the user message of every question, with placeholders such as
    /// {{question}}, {{context}}, {{A}}, {{choices}} [default: the built-in wording].
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
}

/// Arguments of `prompts`.
#[derive(Debug, Args)]
pub struct PromptsArgs {
    /// GGUF model file (its chat template and tokenizer are used).
    #[arg(long)]
    pub model: PathBuf,
    /// Question set.
    #[arg(long)]
    pub questions: PathBuf,
    /// Column mapping and prompt template.
    #[command(flatten)]
    pub format: FormatArgs,
    /// The plain text after BOS instead of the model's chat template (as `run --no-chat-template`).
    #[arg(long)]
    pub no_chat_template: bool,
    /// System prompt.
    #[arg(long, conflicts_with = "system_file")]
    pub system: Option<String>,
    /// File holding the system prompt.
    #[arg(long)]
    pub system_file: Option<PathBuf>,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Results database.
    #[arg(long)]
    pub db: PathBuf,
    /// The run [default: the most recent].
    #[arg(long)]
    pub run_id: Option<i64>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Results database.
    #[arg(long)]
    pub db: PathBuf,
    /// The run [default: the most recent].
    #[arg(long)]
    pub run_id: Option<i64>,
    /// Seconds to wait for the process to finish its in-flight questions and exit.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
}

/// Arguments of `monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Milliseconds between lines.
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: u64,
    /// Stop after N lines [default: until Ctrl-C].
    #[arg(long)]
    pub count: Option<u64>,
}

/// Arguments of `preflight`.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// GGUF model file (only its header is read).
    #[arg(long, value_name = "M.gguf")]
    pub model: PathBuf,
    /// Context tokens per sequence [default: min(trained context, 4096)].
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    /// Layers offloaded to the GPU: a number, or `auto` (as many as fit).
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    pub n_gpu_layers: GpuLayers,
    /// Tokens per llama.cpp batch.
    #[arg(long, default_value_t = 512)]
    pub batch_size: u32,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Plan for another machine: its RAM (e.g. 87.5GB, 64GiB); taken as all available.
    #[arg(long, value_name = "SIZE")]
    pub ram: Option<String>,
    /// Plan for another machine: its swap (e.g. 0, 16G).
    #[arg(long, value_name = "SIZE")]
    pub swap: Option<String>,
    /// Plan for another machine: one GPU with this much free memory (e.g. 40GB), as a CUDA build.
    #[arg(long, value_name = "SIZE")]
    pub gpu_memory: Option<String>,
    /// Check the GGUF's tokenizer against the original model's Hugging Face tokenizer.json:
    /// every prompt of --questions is tokenized by both (docs/tokenizer-check.md).
    #[arg(long, value_name = "tokenizer.json", requires = "questions")]
    pub hf_tokenizer: Option<PathBuf>,
    /// With --hf-tokenizer: the question set whose prompts are checked.
    #[arg(long, value_name = "Q.jsonl")]
    pub questions: Option<PathBuf>,
    /// With --hf-tokenizer: column mapping and prompt template of the question set.
    #[command(flatten)]
    pub format: FormatArgs,
    /// With --hf-tokenizer: exit 2 when any prompt tokenizes differently.
    #[arg(long, requires = "hf_tokenizer")]
    pub require_tokenizer_match: bool,
}

fn parse_format(text: &str) -> std::result::Result<crate::report::Format, String> {
    text.parse()
}

/// Arguments of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Results database.
    #[arg(long, value_name = "results.db")]
    pub db: PathBuf,
    /// The run [default: the most recent].
    #[arg(long)]
    pub run_id: Option<i64>,
    /// md, csv, json or html [default: from --out's extension, else md].
    #[arg(long, value_parser = parse_format, value_name = "md|csv|json|html")]
    pub format: Option<crate::report::Format>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// Arguments of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Results database.
    #[arg(long, value_name = "results.db")]
    pub db: PathBuf,
    /// Runs to compare [default: every finished run].
    #[arg(value_name = "RUN_ID")]
    pub run_ids: Vec<i64>,
    /// md, csv, json or html [default: from --out's extension, else md].
    #[arg(long, value_parser = parse_format, value_name = "md|csv|json|html")]
    pub format: Option<crate::report::Format>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// Arguments of `score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Results database.
    #[arg(long, value_name = "results.db")]
    pub db: PathBuf,
    /// Only this run [default: every run].
    #[arg(long)]
    pub run_id: Option<i64>,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// GGUF model file.
    #[arg(long, value_name = "M.gguf")]
    pub model: PathBuf,
    /// Question set: .jsonl, .json (array) or .csv with a header.
    #[arg(long, value_name = "Q.jsonl")]
    pub questions: PathBuf,
    /// Column mapping and prompt template (both part of the run's identity).
    #[command(flatten)]
    pub format: FormatArgs,
    /// SQLite results database (created if missing).
    #[arg(long, value_name = "results.db")]
    pub db: PathBuf,
    /// Continue the most recent unfinished run (or --run-id) instead of starting a new one.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: the run to continue.
    #[arg(long, requires = "resume")]
    pub run_id: Option<i64>,
    /// Questions decoded together (continuous batching); log-likelihood scoring decodes one
    /// question per batch whatever this says, so its scores never depend on it.
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Context tokens per sequence [default: longest prompt + max tokens, capped at the model's].
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Layers offloaded to the GPU: a number, or `auto` (all when a GPU is present, else 0).
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    pub n_gpu_layers: GpuLayers,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling mass (with --temperature > 0).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Random seed (with --temperature > 0); each question gets its own seed derived from it.
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// System prompt.
    #[arg(long, conflicts_with = "system_file", value_name = "PROMPT")]
    pub system: Option<String>,
    /// File holding the system prompt.
    #[arg(long, value_name = "FILE")]
    pub system_file: Option<PathBuf>,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Milliseconds between memory samples.
    #[arg(long, default_value_t = 1000)]
    pub sample_interval_ms: u64,
    /// CPU threads for llama.cpp [default: all cores].
    #[arg(long)]
    pub threads: Option<u32>,
    /// Tokens per llama.cpp batch (16 to 65536).
    #[arg(long, default_value_t = 512)]
    pub batch_size: u32,
    /// Seconds in-flight questions may take to finish after Ctrl-C/SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub grace_seconds: u64,
    /// Prompt prefixes computed once and copied: every prefix two or more questions share
    /// (tree), only the one all share (global), or none (off; benchmarks).
    #[arg(long, value_enum, default_value_t = PrefixCache::Tree)]
    pub prefix_cache: PrefixCache,
    /// The same as --prefix-cache off.
    #[arg(long, hide = true, conflicts_with = "prefix_cache")]
    pub no_prefix_cache: bool,
    /// One KV cache pool shared by all sequences (llama.cpp's unified KV) instead of a fixed
    /// share per sequence; the pool still holds --ctx x --parallel tokens.
    #[arg(long)]
    pub kv_unified: bool,
    /// How multiple-choice questions are scored: generate an answer and parse it, score every
    /// choice by log-likelihood (as lm-evaluation-harness), or both side by side.
    #[arg(long, value_enum, default_value_t = McScoring::Generate)]
    pub mc_scoring: McScoring,
    /// With --mc-scoring loglik/both: score each choice as its letter (A, B, ... listed in the
    /// prompt) or as its own text.
    #[arg(long, value_enum, default_value_t = McContinuation::Letter)]
    pub mc_continuation: McContinuation,
    /// With letter continuations: the label scored for each choice, `{{letter}}` standing for
    /// A, B, ... (HAE-RAE in lm-evaluation-harness scores `({{letter}})`) [default: the letter].
    #[arg(long, value_name = "FORM")]
    pub mc_label: Option<String>,
    /// Check the GGUF's tokenizer against the original model's Hugging Face tokenizer.json on
    /// every prompt; the result is stored with the run and shown by `report`.
    #[arg(long, value_name = "tokenizer.json")]
    pub hf_tokenizer: Option<PathBuf>,
    /// With --hf-tokenizer: refuse the run (exit 2, nothing written) when any prompt tokenizes
    /// differently.
    #[arg(long, requires = "hf_tokenizer")]
    pub require_tokenizer_match: bool,
    /// Give the model the plain text after BOS instead of its chat template (base models, and
    /// the sequences llama-perplexity and lm-evaluation-harness build); with log-likelihood
    /// scoring each continuation then follows a space.
    #[arg(long)]
    pub no_chat_template: bool,
    /// Benchmarks only: generate exactly --max-tokens, ignoring end-of-sequence.
    #[arg(long, hide = true)]
    pub ignore_eos: bool,
    /// Benchmarks only: commit no answers and take no memory samples (measures their cost).
    #[arg(long, hide = true)]
    pub bench_discard_answers: bool,
    /// Run even when preflight predicts the model will not fit in memory.
    #[arg(long)]
    pub force: bool,
    /// Answer one shard of the question set: K/N (0-based), or `auto` from a Slurm job array
    /// (SLURM_ARRAY_TASK_*) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --shards).
    /// Each shard writes its own database; `merge` combines them.
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<ShardArg>,
    /// With --shard auto in a Kubernetes Indexed Job: the shard count (the Job's completions).
    #[arg(long, requires = "shard", value_name = "N")]
    pub shards: Option<u32>,
    /// What puts a question in a shard: its id, or its passage (`context`: questions on one
    /// passage stay together and keep their prefix reuse).
    #[arg(long, value_enum, default_value_t = ShardKey::Id)]
    pub shard_key: ShardKey,
}

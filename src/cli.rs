//! Command line (clap): parses arguments into library requests and maps outcomes to exit codes.

use crate::config::{ExecutionSettings, GenerationSettings, GpuLayers};
use crate::control::StopSignal;
use crate::error::{exit_code, Error, Result};
use crate::run::{self, RunRequest};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

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
    /// SQLite results database (created if missing).
    #[arg(long, value_name = "results.db")]
    pub db: PathBuf,
    /// Continue the most recent unfinished run (or --run-id) instead of starting a new one.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: the run to continue.
    #[arg(long, requires = "resume")]
    pub run_id: Option<i64>,
    /// Questions decoded together (continuous batching).
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
    /// Tokens per llama.cpp batch.
    #[arg(long, default_value_t = 512)]
    pub batch_size: u32,
    /// Seconds in-flight questions may take to finish after Ctrl-C/SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub grace_seconds: u64,
    /// Benchmarks only: generate exactly --max-tokens, ignoring end-of-sequence.
    #[arg(long, hide = true)]
    pub ignore_eos: bool,
}

impl RunArgs {
    fn into_request(self) -> Result<RunRequest> {
        let system_prompt = match (&self.system, &self.system_file) {
            (Some(text), _) => Some(text.clone()),
            (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!(
                    "--system-file {} cannot be read ({e}); check the path",
                    path.display()
                ))
            })?),
            (None, None) => None,
        };
        Ok(RunRequest {
            model: self.model,
            questions: self.questions,
            db: self.db,
            resume: self.resume,
            run_id: self.run_id,
            generation: GenerationSettings {
                max_tokens: self.max_tokens,
                ctx: self.ctx,
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                system_prompt: system_prompt.filter(|s| !s.trim().is_empty()),
                limit: self.limit,
                ignore_eos: self.ignore_eos,
            },
            execution: ExecutionSettings {
                parallel: self.parallel,
                gpu_layers: self.n_gpu_layers,
                threads: self.threads,
                sample_interval_ms: self.sample_interval_ms,
                batch_size: self.batch_size,
            },
            grace: Duration::from_secs(self.grace_seconds),
        })
    }
}

/// Execute a parsed command line; returns the process exit code.
pub fn execute(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => {
            let request = args.into_request()?;
            let stop = StopSignal::install()
                .map_err(|e| Error::Engine(format!("cannot install signal handlers: {e}")))?;
            let outcome = run::run(&request, &stop)?;
            eprintln!("{}", outcome.message);
            if outcome.exit_code == exit_code::OK || outcome.exit_code == exit_code::SOME_FAILED {
                let store = crate::store::Store::open_existing(&request.db)?;
                println!("{}", crate::report::summary_text(&store, outcome.run_id)?);
            }
            Ok(outcome.exit_code)
        }
    }
}

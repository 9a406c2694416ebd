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
    /// Recompute the prompt prefix shared by all questions for every question (benchmarks).
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// One KV cache pool shared by all sequences (llama.cpp's unified KV) instead of a fixed
    /// share per sequence; the pool still holds --ctx x --parallel tokens.
    #[arg(long)]
    pub kv_unified: bool,
    /// Benchmarks only: generate exactly --max-tokens, ignoring end-of-sequence.
    #[arg(long, hide = true)]
    pub ignore_eos: bool,
    /// Benchmarks only: commit no answers and take no memory samples (measures their cost).
    #[arg(long, hide = true)]
    pub bench_discard_answers: bool,
    /// Run even when preflight predicts the model will not fit in memory.
    #[arg(long)]
    pub force: bool,
}

/// `--system` text, or the contents of `--system-file`; blank counts as none.
fn read_system_prompt(
    text: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>> {
    let prompt = match (text, file) {
        (Some(text), _) => Some(text.to_string()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "--system-file {} cannot be read ({e}); check the path",
                path.display()
            ))
        })?),
        (None, None) => None,
    };
    Ok(prompt.filter(|s| !s.trim().is_empty()))
}

impl RunArgs {
    fn into_request(self) -> Result<RunRequest> {
        let system_prompt =
            read_system_prompt(self.system.as_deref(), self.system_file.as_deref())?;
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
                system_prompt,
                limit: self.limit,
                ignore_eos: self.ignore_eos,
            },
            execution: ExecutionSettings {
                parallel: self.parallel,
                gpu_layers: self.n_gpu_layers,
                threads: self.threads,
                sample_interval_ms: self.sample_interval_ms,
                batch_size: self.batch_size,
                prefix_cache: !self.no_prefix_cache,
                kv_unified: self.kv_unified,
            },
            grace: Duration::from_secs(self.grace_seconds),
            discard_answers: self.bench_discard_answers,
            force: self.force,
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
        Command::Report(args) => {
            let store = crate::store::Store::open_existing(&args.db)?;
            let run_id = crate::report::report_run(&store, args.run_id)?;
            let comparison = crate::report::load(&store, &[run_id])?;
            let format = crate::report::Format::choose(args.format, args.out.as_deref());
            let bytes = crate::report::render(&comparison, format);
            crate::report::write_output(&bytes, args.out.as_deref())?;
            Ok(exit_code::OK)
        }
        Command::Compare(args) => {
            let store = crate::store::Store::open_existing(&args.db)?;
            let run_ids = crate::report::compare_runs(&store, &args.run_ids)?;
            let comparison = crate::report::load(&store, &run_ids)?;
            let format = crate::report::Format::choose(args.format, args.out.as_deref());
            let bytes = crate::report::render(&comparison, format);
            crate::report::write_output(&bytes, args.out.as_deref())?;
            Ok(exit_code::OK)
        }
        Command::Score(args) => {
            let store = crate::store::Store::open_existing(&args.db)?;
            let done = crate::report::rescore(&store, args.run_id)?;
            let runs: Vec<String> = done.runs.iter().map(i64::to_string).collect();
            println!(
                "rescored {} answers of run(s) {}: {} changed",
                done.answers,
                runs.join(", "),
                done.changed
            );
            Ok(exit_code::OK)
        }
        Command::Preflight(args) => preflight_command(args),
        Command::Status(args) => {
            let store = crate::store::Store::open_existing(&args.db)?;
            let run_id = crate::control::pick_run(&store, args.run_id)?;
            let report = crate::control::status(&store, run_id)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", crate::control::status_text(&report));
            }
            Ok(exit_code::OK)
        }
        Command::Stop(args) => {
            let store = crate::store::Store::open_existing(&args.db)?;
            let run_id = crate::control::pick_run(&store, args.run_id)?;
            match crate::control::stop(&store, run_id, Duration::from_secs(args.timeout_seconds))? {
                crate::control::StopOutcome::Stopped { pid, status } => {
                    println!("run {run_id}: process {pid} stopped; status {status}; continue with --resume")
                }
                crate::control::StopOutcome::NotRunning { status } => {
                    println!("run {run_id} is not running (status {status}); nothing to stop")
                }
            }
            Ok(exit_code::OK)
        }
        Command::Prompts(args) => {
            let system = read_system_prompt(args.system.as_deref(), args.system_file.as_deref())?;
            for prompt in
                run::render_prompts(&args.model, &args.questions, system.as_deref(), args.limit)?
            {
                println!("{}", serde_json::to_string(&prompt).unwrap_or_default());
            }
            Ok(exit_code::OK)
        }
        Command::Monitor(args) => {
            let interval = Duration::from_millis(args.interval_ms.max(100));
            crate::monitor::watch(interval, args.count, &mut std::io::stdout().lock())
                .map_err(|e| Error::io("stdout", e))?;
            Ok(exit_code::OK)
        }
    }
}

fn preflight_command(args: PreflightArgs) -> Result<i32> {
    use crate::preflight::hardware::{size_flag, Assume};
    let request = crate::preflight::PreflightRequest {
        model: args.model,
        ctx: args.ctx,
        parallel: args.parallel,
        gpu_layers: args.n_gpu_layers,
        batch_size: args.batch_size,
        assume: Assume {
            ram: size_flag("--ram", args.ram.as_deref())?,
            swap: size_flag("--swap", args.swap.as_deref())?,
            gpu_memory: size_flag("--gpu-memory", args.gpu_memory.as_deref())?,
        },
    };
    let report = crate::preflight::preflight(&request)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Error::Engine(e.to_string()))?
        );
    } else {
        print!("{}", report.text());
    }
    Ok(exit_code::OK)
}

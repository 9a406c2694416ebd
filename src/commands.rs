//! One function per subcommand: turn parsed arguments into library calls and print the result.
//! The only module that writes to standard output; logs and progress go to standard error.

use crate::cli::{
    Cli, Command, CompareArgs, FormatArgs, MergeArgs, MonitorArgs, PreflightArgs, PromptsArgs,
    ReportArgs, RunArgs, ScoreArgs, StatusArgs, StopArgs,
};
use crate::config::{ExecutionSettings, GenerationSettings, PrefixCache, TemplateRecord};
use crate::dataset::mapping::Mapping;
use crate::dataset::shard;
use crate::error::{exit_code, usage, Result};
use crate::holder::StopOutcome;
use crate::report::{self, Format};
use crate::run::{self, RunRequest, StopSignal};
use crate::store::Store;
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Run a parsed command line; returns the exit code of a command that ran to its end.
pub fn execute(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run(args) => run_command(args),
        Command::Report(args) => report_command(args),
        Command::Compare(args) => compare_command(args),
        Command::Score(args) => score_command(args),
        Command::Preflight(args) => preflight_command(args),
        Command::Status(args) => status_command(args),
        Command::Stop(args) => stop_command(args),
        Command::Prompts(args) => prompts_command(args),
        Command::Monitor(args) => monitor_command(args),
        Command::Merge(args) => merge_command(args),
    }
}

fn merge_command(args: MergeArgs) -> Result<u8> {
    let outcome = crate::merge::merge(&args.into, &args.shards)?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&outcome)?))?;
    } else {
        print(&outcome.text())?;
    }
    Ok(outcome.exit_code)
}

/// Write `text` to standard output. A closed pipe (`| head`) is not an error: the reader has
/// what it wanted.
fn print(text: &str) -> Result<()> {
    print_bytes(text.as_bytes())
}

/// [`print`] for output that is already bytes (a rendered report).
fn print_bytes(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

fn run_command(args: RunArgs) -> Result<u8> {
    let request = run_request(args)?;
    let stop = StopSignal::install().context("installing the SIGINT/SIGTERM handlers")?;
    let outcome = run::run(&request, &stop)?;
    eprintln!("{}", outcome.message);
    if outcome.exit_code == exit_code::OK || outcome.exit_code == exit_code::SOME_FAILED {
        let store = Store::open_read_only(&request.db)?;
        print(&format!(
            "{}\n",
            report::summary_text(&store, outcome.run_id)?
        ))?;
    }
    Ok(outcome.exit_code)
}

fn run_request(args: RunArgs) -> Result<RunRequest> {
    let system_prompt = system_prompt(args.system.as_deref(), args.system_file.as_deref())?;
    let (mapping, template) = question_format(&args.format)?;
    Ok(RunRequest {
        model: args.model,
        questions: args.questions,
        db: args.db,
        resume: args.resume,
        run_id: args.run_id,
        generation: GenerationSettings {
            max_tokens: args.max_tokens,
            ctx: args.ctx,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            system_prompt,
            limit: args.limit,
            ignore_eos: args.ignore_eos,
            mc_scoring: args.mc_scoring,
            mc_continuation: args.mc_continuation,
            chat_template: !args.no_chat_template,
            mapping,
            template,
            mc_label: args.mc_label,
            // Set from --shard once the question set is read (it records the shard's ids).
            shard: None,
        },
        execution: ExecutionSettings {
            parallel: args.parallel,
            gpu_layers: args.n_gpu_layers,
            threads: args.threads,
            sample_interval_ms: args.sample_interval_ms,
            batch_size: args.batch_size,
            prefix_cache: !args.no_prefix_cache && args.prefix_cache != PrefixCache::Off,
            global_prefix_only: args.prefix_cache == PrefixCache::Global,
            kv_unified: args.kv_unified,
        },
        grace: Duration::from_secs(args.grace_seconds),
        discard_answers: args.bench_discard_answers,
        force: args.force,
        hf_tokenizer: args.hf_tokenizer,
        require_tokenizer_match: args.require_tokenizer_match,
        shard: args
            .shard
            .map(|shard| shard::resolve(shard, args.shards, |name| std::env::var(name).ok()))
            .transpose()?,
        shard_key: args.shard_key,
    })
}

/// `--map`/`--map-file` and `--template`, read and checked (usage errors name the file).
fn question_format(args: &FormatArgs) -> Result<(Option<Mapping>, Option<TemplateRecord>)> {
    let mapping =
        crate::dataset::mapping::from_args(args.map.as_deref(), args.map_file.as_deref())?;
    let template = args
        .template
        .as_deref()
        .map(crate::prompt::template::load)
        .transpose()?;
    Ok((mapping, template))
}

/// `--system` text, or the contents of `--system-file`; blank counts as none.
fn system_prompt(text: Option<&str>, file: Option<&Path>) -> Result<Option<String>> {
    let prompt = match (text, file) {
        (Some(text), _) => Some(text.to_string()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "--system-file {} cannot be read ({e}); check the path",
                path.display()
            ))
        })?),
        (None, None) => None,
    };
    Ok(prompt.filter(|s| !s.trim().is_empty()))
}

fn report_command(args: ReportArgs) -> Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let run_id = store.pick_run(args.run_id)?;
    write_report(&store, &[run_id], args.format, args.out.as_deref())
}

fn compare_command(args: CompareArgs) -> Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let run_ids = report::compare_runs(&store, &args.run_ids)?;
    write_report(&store, &run_ids, args.format, args.out.as_deref())
}

fn write_report(
    store: &Store,
    run_ids: &[i64],
    format: Option<Format>,
    out: Option<&Path>,
) -> Result<u8> {
    let comparison = report::load(store, run_ids)?;
    let bytes = report::render(&comparison, Format::choose(format, out));
    match out {
        Some(path) => write_out(path, &bytes, store.path())?,
        None => print_bytes(&bytes)?,
    }
    Ok(exit_code::OK)
}

/// Write `--out` through a temporary file renamed into place, so a failed write never leaves a
/// half-written report; never onto the database (or its journal files).
fn write_out(path: &Path, bytes: &[u8], db: &Path) -> Result<()> {
    if is_same_file_or_journal(path, db) {
        return Err(usage(format!(
            "--out {} is the database itself; choose another file",
            path.display()
        )));
    }
    let cannot = |e: std::io::Error| {
        usage(format!(
            "--out {} cannot be written ({e}); check the path",
            path.display()
        ))
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // A temporary file is private (0600); a report is for the team, so it gets the mode any new
    // file gets (0644 under the usual umask).
    let mut temporary = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(directory)
        .map_err(cannot)?;
    temporary.write_all(bytes).map_err(cannot)?;
    temporary.persist(path).map_err(|e| cannot(e.error))?;
    Ok(())
}

/// Whether `path` names the database at `db` or its `-wal`/`-shm` file (by device and inode, so
/// another spelling of the same path is caught too).
fn is_same_file_or_journal(path: &Path, db: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return false;
    };
    let journal = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    [db.to_path_buf(), journal("-wal"), journal("-shm")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .any(|m| m.dev() == target.dev() && m.ino() == target.ino())
}

fn score_command(args: ScoreArgs) -> Result<u8> {
    let store = existing_for_writing(&args.db)?;
    let done = report::rescore(&store, args.run_id)?;
    let runs: Vec<String> = done.runs.iter().map(i64::to_string).collect();
    print(&format!(
        "rescored {} answers of run(s) {}: {} changed\n",
        done.answers,
        runs.join(", "),
        done.changed
    ))?;
    Ok(exit_code::OK)
}

/// `score` rewrites scores in place: the database must exist (it is never created here).
fn existing_for_writing(db: &Path) -> Result<Store> {
    if !db.is_file() {
        return Err(usage(format!(
            "--db {}: no such database file; check the path",
            db.display()
        )));
    }
    Store::open(db)
}

fn preflight_command(args: PreflightArgs) -> Result<u8> {
    use crate::preflight::hardware::{size_flag, Assume};
    let request = crate::preflight::PreflightRequest {
        model: args.model.clone(),
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
    crate::preflight::check_model_file(&request.model)?;
    let tokenizer = preflight_tokenizer_check(&args)?;
    let mut report = crate::preflight::preflight(&request, &crate::engine::backend_facts())?;
    report.tokenizer_check = tokenizer.clone();
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        let check = tokenizer.as_ref().map_or(String::new(), |c| c.text());
        print(&format!("{}{check}", report.text()))?;
    }
    match tokenizer {
        Some(check) if args.require_tokenizer_match && !check.agrees() => {
            Err(crate::error::Error::TokenizerMismatch(check.summary()).into())
        }
        _ => Ok(exit_code::OK),
    }
}

/// `preflight --hf-tokenizer`: the tokenizer check over the prompts of `--questions`.
fn preflight_tokenizer_check(
    args: &PreflightArgs,
) -> Result<Option<crate::record::TokenizerCheck>> {
    let (Some(hf_tokenizer), Some(questions)) = (&args.hf_tokenizer, &args.questions) else {
        return Ok(None);
    };
    let (mapping, template) = question_format(&args.format)?;
    let settings = GenerationSettings {
        mapping,
        template,
        ..Default::default()
    };
    let check = crate::tokcheck::check_file(&args.model, hf_tokenizer, questions, &settings)?;
    Ok(Some(check))
}

fn status_command(args: StatusArgs) -> Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let run_id = store.pick_run(args.run_id)?;
    let status = report::status::status(&store, run_id)?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&status)?))?;
    } else {
        print(&report::status::status_text(&status))?;
    }
    Ok(exit_code::OK)
}

fn stop_command(args: StopArgs) -> Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let run_id = store.pick_run(args.run_id)?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    match crate::holder::stop(&store, run_id, timeout)? {
        StopOutcome::Stopped { pid, status } => print(&format!(
            "run {run_id}: process {pid} stopped; status {status}; continue with --resume\n"
        ))?,
        StopOutcome::NotRunning { status } => print(&format!(
            "run {run_id} is not running (status {status}); nothing to stop\n"
        ))?,
    }
    Ok(exit_code::OK)
}

fn prompts_command(args: PromptsArgs) -> Result<u8> {
    let (mapping, template) = question_format(&args.format)?;
    let settings = GenerationSettings {
        system_prompt: system_prompt(args.system.as_deref(), args.system_file.as_deref())?,
        limit: args.limit,
        chat_template: !args.no_chat_template,
        mapping,
        template,
        ..Default::default()
    };
    let prompts = run::rendered_prompts(&args.model, &args.questions, &settings)?;
    let mut lines = String::new();
    for prompt in prompts {
        lines += &serde_json::to_string(&prompt)?;
        lines.push('\n');
    }
    print(&lines)?;
    Ok(exit_code::OK)
}

fn monitor_command(args: MonitorArgs) -> Result<u8> {
    let interval = Duration::from_millis(args.interval_ms.max(100));
    let mut stdout = std::io::stdout().lock();
    match crate::monitor::watch(interval, args.count, &mut stdout) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing to standard output")?,
    }
    Ok(exit_code::OK)
}

//! Memory preflight: before a model is loaded (or anything is written), read its GGUF header,
//! estimate weights, KV cache and compute buffers per device, compare them with the RAM, swap and
//! GPU memory of this machine, and say whether and how the run fits.
//!
//! * [`shape`]: the model's shape from its metadata (no weights are read).
//! * [`estimate`]: the formulas (documented there and in docs/preflight.md).
//! * [`hardware`]: RAM/swap (sysinfo), GPUs (NVML, else llama.cpp), planning overrides.
//! * [`verdict`]: placement, verdict, advice.

pub mod estimate;
pub mod hardware;
pub mod shape;
pub mod verdict;

use crate::config::{ExecutionSettings, GenerationSettings, GpuLayers};
use crate::dataset::Question;
use crate::error::{Error, Result};
use crate::record::BackendFacts;
use crate::units::{gib, human_bytes as human};
use estimate::{Estimate, Plan, Repack};
use hardware::{Assume, Hardware};
use serde::Serialize;
use shape::ModelShape;
use std::io::Read;
use std::path::{Path, PathBuf};
use verdict::{Evaluation, Placement, Verdict};

/// Resident memory the results store adds once a run starts (SQLite connections and page cache,
/// the recorder and sampler threads), measured on SmolLM2 runs.
pub const STORE_ALLOWANCE: u64 = 6 << 20;
/// The context `preflight` assumes when `--ctx` is not given (capped at the trained context).
pub const DEFAULT_PREFLIGHT_CTX: u32 = 4096;
/// Bytes allowed for the chat template around each question when bounding the context before
/// the tokenizer is loaded (the bound only has to be an upper bound: tokens <= UTF-8 bytes).
const TEMPLATE_ALLOWANCE: usize = 512;

/// What `docent-eval preflight` was asked.
#[derive(Debug, Clone)]
pub struct PreflightRequest {
    /// The GGUF file.
    pub model: PathBuf,
    /// Context per sequence; `None` = min(trained context, 4096).
    pub ctx: Option<u32>,
    /// Sequences decoded together.
    pub parallel: u32,
    /// GPU layers requested.
    pub gpu_layers: GpuLayers,
    /// Tokens per batch.
    pub batch_size: u32,
    /// Figures of another machine to plan for.
    pub assume: Assume,
}

/// Everything preflight found, as printed (text or `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    /// The model file.
    pub model_path: String,
    /// Its shape.
    pub model: ModelShape,
    /// Context per sequence the estimate is for.
    pub ctx_per_seq: u32,
    /// Where that context comes from.
    pub ctx_source: String,
    /// Sequences.
    pub parallel: u32,
    /// Tokens per batch.
    pub batch_size: u32,
    /// `--n-gpu-layers` as requested.
    pub requested_gpu_layers: String,
    /// The machine.
    pub hardware: Hardware,
    /// Placement, estimate, verdict, advice.
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// `--hf-tokenizer`: the GGUF's tokenizer against the original model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer_check: Option<crate::record::TokenizerCheck>,
}

impl PreflightReport {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.evaluation.verdict
    }

    /// The estimate.
    pub fn estimate(&self) -> &Estimate {
        &self.evaluation.estimate
    }

    /// The refusal `run` prints when the run is predicted not to fit.
    pub fn refusal(&self) -> String {
        let e = self.estimate();
        let mut text = format!(
            "{}: predicted not to fit ({}).\n  needs: weights {}, KV cache {} ({} tokens x {} sequences), compute {}, other {}{}\n  has:   RAM {} available of {}, swap {} free{}\n",
            self.model_path,
            self.evaluation.verdict_text,
            human(e.host.weights + e.host.repacked + e.gpu.weights),
            human(e.host.kv_cache + e.gpu.kv_cache),
            e.n_ctx_per_seq,
            self.parallel,
            human(e.host.compute + e.gpu.compute),
            human(e.host.vocab_and_outputs + e.host.overhead + e.gpu.overhead),
            if e.gpu_layers > 0 {
                format!("; {} of it on the GPU ({} layers)", human(e.gpu_peak), e.gpu_layers)
            } else {
                String::new()
            },
            gib(self.hardware.ram_available_bytes),
            gib(self.hardware.ram_total_bytes),
            gib(self.hardware.swap_free_bytes),
            if self.hardware.can_offload {
                format!(", GPU {} free", gib(self.hardware.gpu_free()))
            } else {
                String::new()
            }
        );
        for line in &self.evaluation.advice {
            text.push_str(&format!("  change: {line}\n"));
        }
        text.push_str("  or pass --force to try anyway (llama.cpp may fail to allocate, or the system may kill the process).");
        text
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        [
            model_lines(&self.model_path, &self.model),
            self.plan_lines(),
            estimate_table(self.estimate()),
            machine_line(&self.hardware),
            outcome_lines(&self.evaluation),
        ]
        .concat()
    }

    /// The context, sequences, batch and layer placement the estimate is for.
    fn plan_lines(&self) -> String {
        let e = self.estimate();
        format!(
            "plan      context {} tokens x {} sequence(s) = {} KV cells (f16) · batch {} · GPU layers {} ({})\n          context: {}\n",
            self.ctx_per_seq,
            self.parallel,
            e.n_ctx,
            self.batch_size,
            e.gpu_layers,
            self.evaluation.placement.reason,
            self.ctx_source
        )
    }
}

/// The model's path, identity (name, architecture, size, types) and architecture figures.
fn model_lines(path: &str, m: &ModelShape) -> String {
    let truncated = if m.is_truncated() {
        format!(" declared, {} on disk (truncated)", human(m.file_bytes))
    } else {
        String::new()
    };
    let gqa = if m.n_head_kv > 0 && m.n_head_kv < m.n_head {
        format!(" (grouped-query, {}:1)", m.n_head / m.n_head_kv)
    } else {
        String::new()
    };
    let sliding_window = m
        .sliding_window
        .map_or(String::new(), |w| format!(" · sliding window {w}"));
    format!(
        "model     {path}\n          {} · {} · {:.2}B parameters · {} ({}) · file {}{truncated}\n          {} layers · embedding {} · FFN {} · heads {} · KV heads {}{gqa} · head dim {} · vocab {} · trained context {}{sliding_window}\n",
        m.name,
        m.architecture,
        m.n_params as f64 / 1e9,
        m.quantization,
        m.tensor_types.join(", "),
        human(m.declared_file_bytes),
        m.n_layer,
        m.n_embd,
        m.n_ff,
        m.n_head,
        m.n_head_kv,
        m.head_dim_k,
        m.n_vocab,
        m.n_ctx_train,
    )
}

/// The estimate as a table: one row per component, host and GPU columns (`-` where a component
/// has no GPU share or nothing is offloaded), then the reserved-versus-touched note.
fn estimate_table(e: &Estimate) -> String {
    let row = |label: &str, host_bytes: u64, gpu_bytes: Option<u64>| {
        let gpu = match gpu_bytes {
            Some(bytes) if e.gpu_layers > 0 => human(bytes),
            _ => "-".to_string(),
        };
        format!("  {label:<26}{:>12}  {gpu:>12}\n", human(host_bytes))
    };
    [
        format!("estimate  {:<18}{:>12}  {:>12}\n", "", "host (RSS)", "GPU"),
        row("weights", e.host.weights, Some(e.gpu.weights)),
        row("repacked CPU copies", e.host.repacked, None),
        row("KV cache", e.host.kv_cache, Some(e.gpu.kv_cache)),
        row("compute buffers", e.host.compute, Some(e.gpu.compute)),
        row("vocabulary + logits", e.host.vocab_and_outputs, None),
        row("process / CUDA runtime", e.host.overhead, Some(e.gpu.overhead)),
        row("total (predicted peak)", e.host_peak, Some(e.gpu_peak)),
        format!(
            "          host compute buffer reserved {} (virtual; {} of it touched for batches of {} tokens)\n",
            human(e.host_compute_reserved),
            human(e.host.compute),
            e.batch_tokens
        ),
    ]
    .concat()
}

/// RAM, swap and each GPU the plan counts, marked when some figures are assumed.
fn machine_line(hw: &Hardware) -> String {
    let swap = if hw.swap_total_bytes == 0 {
        "none".to_string()
    } else {
        format!(
            "{} ({} free)",
            gib(hw.swap_total_bytes),
            gib(hw.swap_free_bytes)
        )
    };
    let gpus = if hw.gpus.is_empty() {
        format!("GPU none ({})", hw.offload_note)
    } else {
        hw.gpus
            .iter()
            .map(|g| {
                format!(
                    "GPU {} {}: {} free of {} ({})",
                    g.index,
                    g.name,
                    gib(g.free_bytes),
                    gib(g.total_bytes),
                    g.source
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "machine   RAM {} ({} available) · swap {swap} · {gpus}{}\n",
        gib(hw.ram_total_bytes),
        gib(hw.ram_available_bytes),
        if hw.assumed { " [assumed]" } else { "" }
    )
}

/// The verdict, what to change, the flags to run with, and the warnings.
fn outcome_lines(evaluation: &Evaluation) -> String {
    let mut out = format!("verdict   {}\n", evaluation.verdict_text);
    for line in &evaluation.advice {
        out.push_str(&format!("change    {line}\n"));
    }
    out.push_str(&format!(
        "flags     {}\n",
        evaluation.recommended_flags.join(" ")
    ));
    for line in &evaluation.warnings {
        out.push_str(&format!("warning   {line}\n"));
    }
    out
}

/// Resident memory of this process now, plus what the store adds during a run.
pub fn process_baseline() -> u64 {
    crate::monitor::Probe::new().sample().rss_bytes + STORE_ALLOWANCE
}

/// `docent-eval preflight`: describe the model and predict whether it fits.
pub fn preflight(request: &PreflightRequest, backend: &BackendFacts) -> Result<PreflightReport> {
    check_model_file(&request.model)?;
    if request.parallel == 0 || request.parallel > 512 {
        return Err(Error::Usage(format!(
            "--parallel {} must be between 1 and 512",
            request.parallel
        ))
        .into());
    }
    if let Some(ctx) = request.ctx {
        if ctx < 32 {
            return Err(
                Error::Usage(format!("--ctx {ctx} is too small; use at least 32 tokens")).into(),
            );
        }
    }
    let shape = ModelShape::read(&request.model)?;
    let (ctx, ctx_source) = match request.ctx {
        Some(ctx) => (ctx, "--ctx".to_string()),
        None => {
            let ctx = DEFAULT_PREFLIGHT_CTX.min(shape.n_ctx_train.min(u64::from(u32::MAX)) as u32);
            (
                ctx,
                format!(
                    "--ctx not given: min(trained {}, {DEFAULT_PREFLIGHT_CTX}); `run` sizes it from the longest prompt + --max-tokens",
                    shape.n_ctx_train
                ),
            )
        }
    };
    let hardware = Hardware::detect(request.assume, backend);
    let plan = Plan {
        ctx_per_seq: ctx,
        n_seq: request.parallel,
        n_batch: request.batch_size.max(request.parallel),
        gpu_layers: 0,
        largest_batch: None,
        logits_rows: None,
        process_baseline: process_baseline(),
        gpu_backend: hardware.can_offload,
        repack: Repack::from_system_info(&backend.system_info),
    };
    let evaluation = verdict::evaluate(&shape, &plan, request.gpu_layers, &hardware);
    Ok(PreflightReport {
        model_path: request.model.display().to_string(),
        model: shape,
        ctx_per_seq: ctx,
        ctx_source,
        parallel: request.parallel,
        batch_size: plan.n_batch,
        requested_gpu_layers: request.gpu_layers.to_string(),
        hardware,
        evaluation,
        tokenizer_check: None,
    })
}

/// The question put to llama.cpp's layer fitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitRequest {
    /// Context tokens of all sequences.
    pub n_ctx: u32,
    /// Sequences.
    pub n_seq: u32,
    /// Batch size.
    pub n_batch: u32,
    /// Bytes to keep free on each GPU.
    pub margin_bytes: u64,
}

/// The preflight of a run, done before the store is opened and before the weights load.
#[derive(Debug, Clone)]
pub struct RunPreflight {
    /// The report for the run's settings (context bounded from the question text).
    pub report: PreflightReport,
    /// The plan it was made with.
    pub plan: Plan,
}

/// The context per sequence of a run, one formula for the preflight and the run: `--ctx`, else
/// the longest prompt plus `--max-tokens`, padded to 256 and capped at the trained context.
pub fn context_per_sequence(
    longest_prompt_tokens: usize,
    generation: &GenerationSettings,
    n_ctx_train: u64,
) -> u32 {
    if let Some(ctx) = generation.ctx {
        return ctx;
    }
    let needed = longest_prompt_tokens.saturating_add(generation.max_tokens as usize);
    let padded = needed.div_ceil(256).max(1).saturating_mul(256);
    let trained = n_ctx_train.clamp(256, u64::from(u32::MAX)) as usize;
    padded.min(trained) as u32
}

/// An upper bound of [`context_per_sequence`] before the tokenizer is loaded: a token covers at
/// least one UTF-8 byte, so the longest question's bytes plus the system prompt and a template
/// allowance bound its prompt tokens.
pub fn context_bound(
    questions: &[Question],
    generation: &GenerationSettings,
    n_ctx_train: u64,
) -> (u32, String) {
    if let Some(ctx) = generation.ctx {
        return (ctx, "--ctx".into());
    }
    let system = generation.system_prompt.as_deref().map_or(0, str::len);
    let longest = questions
        .iter()
        .map(|q| crate::prompt::user_message(q).len())
        .max()
        .unwrap_or(0);
    (
        context_per_sequence(longest + system + TEMPLATE_ALLOWANCE, generation, n_ctx_train),
        format!(
            "bound before tokenizing: longest prompt {longest} bytes + system {system} + template {TEMPLATE_ALLOWANCE} + --max-tokens {}, capped at the trained {n_ctx_train}",
            generation.max_tokens
        ),
    )
}

/// Preflight for `run`: estimate for the run's settings and refuse (a usage error, exit 2) when
/// the run is predicted not to fit, unless `force`.
pub fn check_run(
    model: &Path,
    questions: &[Question],
    generation: &GenerationSettings,
    execution: &ExecutionSettings,
    force: bool,
    backend: &BackendFacts,
) -> Result<RunPreflight> {
    let shape = ModelShape::read(model)?;
    let (ctx, ctx_source) = context_bound(questions, generation, shape.n_ctx_train);
    let n_seq = execution.parallel.min(questions.len().max(1) as u32);
    let hardware = Hardware::detect(Assume::default(), backend);
    let plan = Plan {
        ctx_per_seq: ctx,
        n_seq,
        n_batch: execution.batch_size.max(n_seq),
        gpu_layers: 0,
        largest_batch: None,
        logits_rows: None,
        process_baseline: process_baseline(),
        gpu_backend: hardware.can_offload,
        repack: Repack::from_system_info(&backend.system_info),
    };
    let evaluation = verdict::evaluate(&shape, &plan, execution.gpu_layers, &hardware);
    let report = PreflightReport {
        model_path: model.display().to_string(),
        model: shape,
        ctx_per_seq: ctx,
        ctx_source,
        parallel: n_seq,
        batch_size: plan.n_batch,
        requested_gpu_layers: execution.gpu_layers.to_string(),
        hardware,
        evaluation,
        tokenizer_check: None,
    };
    log::info!(
        "preflight: {} (context {} x {}, GPU layers {})",
        report.evaluation.verdict_text,
        report.ctx_per_seq,
        report.parallel,
        report.estimate().gpu_layers
    );
    for warning in &report.evaluation.warnings {
        log::warn!("preflight: {warning}");
    }
    if !report.verdict().runnable() {
        if force {
            log::warn!(
                "--force: running although preflight predicts it will not fit:\n{}",
                report.refusal()
            );
        } else {
            return Err(Error::Usage(report.refusal()).into());
        }
    }
    Ok(RunPreflight { report, plan })
}

impl RunPreflight {
    /// What llama.cpp's own fitting (`common_fit_params`) should be asked, when it decides the
    /// placement: only for `auto` with a GPU backend.
    pub fn fit_request(&self, requested: GpuLayers) -> Option<FitRequest> {
        (requested == GpuLayers::Auto && self.report.hardware.can_offload).then(|| FitRequest {
            n_ctx: self.plan.ctx_per_seq.saturating_mul(self.plan.n_seq),
            n_seq: self.plan.n_seq,
            n_batch: self.plan.n_batch,
            margin_bytes: verdict::GPU_MARGIN,
        })
    }

    /// Where to put the layers for loading: the estimate's placement, or llama.cpp's answer to
    /// [`Self::fit_request`] when it was asked (`fitted`); a failed fit falls back to the estimate.
    pub fn placement(&self, fitted: Option<Result<u32>>) -> Placement {
        let estimated = self.report.evaluation.placement.clone();
        match fitted {
            None => estimated,
            Some(Ok(layers)) => {
                let layers = layers.min(self.report.model.n_layer + 1);
                Placement {
                    gpu_layers: layers,
                    method: "llama.cpp fit_params".into(),
                    reason: format!(
                        "auto: llama.cpp fit_params placed {layers} of {} layers for {} context tokens (estimate said {})",
                        self.report.model.n_layer + 1,
                        self.plan.ctx_per_seq.saturating_mul(self.plan.n_seq),
                        estimated.gpu_layers
                    ),
                }
            }
            Some(Err(e)) => Placement {
                reason: format!("{} (llama.cpp fit_params failed: {e})", estimated.reason),
                ..estimated
            },
        }
    }

    /// The estimate for the settings the run really uses, known once prompts are tokenized.
    pub fn refined(
        &self,
        ctx_per_seq: u32,
        sequences: u32,
        batch_size: u32,
        largest_batch: u32,
        logits_rows: Option<u32>,
        gpu_layers: u32,
    ) -> Estimate {
        let plan = Plan {
            ctx_per_seq,
            n_seq: sequences,
            n_batch: batch_size,
            gpu_layers,
            largest_batch: Some(largest_batch),
            logits_rows,
            ..self.plan.clone()
        };
        estimate::estimate(&self.report.model, &plan)
    }
}

/// Refuse a path that is not a readable GGUF file (version 2 or 3), with one clear sentence.
pub fn check_model_file(path: &Path) -> Result<u64> {
    let metadata = std::fs::metadata(path).map_err(|e| {
        Error::Usage(format!(
            "model file {} cannot be read ({e}); check the --model path (run `make model` to fetch the default)",
            path.display()
        ))
    })?;
    if !metadata.is_file() {
        return Err(Error::Usage(format!(
            "--model {} is not a file; pass a .gguf file",
            path.display()
        ))
        .into());
    }
    let mut header = [0u8; 8];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map(|_| ());
    if read.is_err() || &header[..4] != b"GGUF" {
        return Err(Error::Usage(format!(
            "--model {} is not a GGUF file (no GGUF magic); convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf",
            path.display()
        )).into());
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(Error::Usage(format!(
            "--model {} is GGUF version {version}; this llama.cpp reads versions 2 and 3",
            path.display()
        ))
        .into());
    }
    Ok(metadata.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_gguf_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_model_file(&dir.path().join("none.gguf")).unwrap_err();
        assert!(missing.to_string().contains("cannot be read"), "{missing}");
        let text = dir.path().join("text.gguf");
        std::fs::write(&text, b"hello world, not a model").unwrap();
        assert!(check_model_file(&text)
            .unwrap_err()
            .to_string()
            .contains("not a GGUF"));
        let future = dir.path().join("v9.gguf");
        std::fs::write(&future, b"GGUF\x09\x00\x00\x00rest").unwrap();
        assert!(check_model_file(&future)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        let good = dir.path().join("v3.gguf");
        std::fs::write(&good, b"GGUF\x03\x00\x00\x00rest").unwrap();
        assert_eq!(check_model_file(&good).unwrap(), 12);
        assert!(check_model_file(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a file"));
    }
}

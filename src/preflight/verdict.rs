//! From an estimate and a machine to a verdict: where to place the layers, whether the run fits,
//! and what to change when it does not.

use super::estimate::{estimate, Estimate, Plan, CTX_PAD};
use super::hardware::Hardware;
use super::shape::ModelShape;
use crate::config::GpuLayers;
use crate::units::gib;
use serde::Serialize;

/// Memory llama.cpp's own fitting keeps free on each GPU (`--fit-target`, 1 GiB by default).
pub const GPU_MARGIN: u64 = 1 << 30;

/// RAM kept free for the rest of the system: 2% of RAM, at least 256 MiB.
pub fn ram_margin(hw: &Hardware) -> u64 {
    (hw.ram_total_bytes / 50).max(256 << 20)
}

/// Whether and how a run fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every layer, the output layer included, is on the GPU.
    FitsOnGpu,
    /// Some layers are on the GPU, the rest on the CPU.
    FitsWithOffload,
    /// CPU only, in RAM.
    FitsInRam,
    /// Only when swap absorbs part of it (slow).
    FitsOnlyWithSwap,
    /// Not even with swap, or the requested GPU layers do not fit the GPU.
    WillNotFit,
}

impl Verdict {
    /// The verdict's name as serialized (`fits_in_ram`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::FitsOnGpu => "fits_on_gpu",
            Verdict::FitsWithOffload => "fits_with_offload",
            Verdict::FitsInRam => "fits_in_ram",
            Verdict::FitsOnlyWithSwap => "fits_only_with_swap",
            Verdict::WillNotFit => "will_not_fit",
        }
    }

    /// Whether a run should go ahead without `--force`.
    pub fn runnable(self) -> bool {
        self != Verdict::WillNotFit
    }
}

pub use crate::record::Placement;

/// The outcome of evaluating one plan on one machine.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Layer placement.
    pub placement: Placement,
    /// The estimate for it.
    pub estimate: Estimate,
    /// The verdict.
    pub verdict: Verdict,
    /// The verdict in one line, with the numbers.
    pub verdict_text: String,
    /// What to change when it does not fit (or fits only with swap).
    pub advice: Vec<String>,
    /// The flags to run with.
    pub recommended_flags: Vec<String>,
    /// Thin margins, missing swap (with the commands to add some), ignored flags.
    pub warnings: Vec<String>,
}

fn host_budget(hw: &Hardware) -> u64 {
    hw.ram_available_bytes.saturating_sub(ram_margin(hw))
}

fn gpu_budget(hw: &Hardware) -> u64 {
    hw.gpu_free().saturating_sub(GPU_MARGIN)
}

fn host_fits(e: &Estimate, hw: &Hardware) -> bool {
    e.host_peak <= host_budget(hw)
}

fn host_fits_with_swap(e: &Estimate, hw: &Hardware) -> bool {
    e.host_peak <= host_budget(hw) + hw.swap_free_bytes
}

fn gpu_fits(e: &Estimate, hw: &Hardware) -> bool {
    e.gpu_layers == 0 || e.gpu_peak <= gpu_budget(hw)
}

fn with_layers(plan: &Plan, layers: u32) -> Plan {
    Plan {
        gpu_layers: layers,
        ..plan.clone()
    }
}

/// The most layers whose GPU share fits the GPU budget (0 when none).
fn max_gpu_layers(shape: &ModelShape, plan: &Plan, hw: &Hardware) -> u32 {
    if !hw.can_offload {
        return 0;
    }
    (1..=shape.n_layer + 1)
        .rev()
        .find(|&l| gpu_fits(&estimate(shape, &with_layers(plan, l)), hw))
        .unwrap_or(0)
}

/// Decide placement and verdict for `requested` GPU layers under `plan` (whose `gpu_layers` is
/// ignored) on `hw`.
pub fn evaluate(
    shape: &ModelShape,
    plan: &Plan,
    requested: GpuLayers,
    hw: &Hardware,
) -> Evaluation {
    let all = shape.n_layer + 1;
    let placement = place_layers(shape, plan, requested, hw);
    let layers = placement.gpu_layers;
    let e = estimate(shape, &with_layers(plan, layers));
    let gpu_ok = gpu_fits(&e, hw);
    let verdict = classify(&e, gpu_ok, all, hw);
    Evaluation {
        verdict_text: verdict_text(verdict, &e, gpu_ok, all, hw),
        advice: advice(shape, plan, hw, layers, &e, verdict, gpu_ok),
        recommended_flags: recommended_flags(&e, plan),
        warnings: warnings(shape, plan, requested, hw, &e, verdict),
        placement,
        estimate: e,
        verdict,
    }
}

/// Where the layers go: the count asked for (capped at all layers), none when this binary cannot
/// offload, or for `auto` the most the GPU budget holds.
fn place_layers(shape: &ModelShape, plan: &Plan, requested: GpuLayers, hw: &Hardware) -> Placement {
    let all = shape.n_layer + 1;
    match requested {
        GpuLayers::Count(n) if n > 0 && !hw.can_offload => Placement {
            gpu_layers: 0,
            method: "cpu".into(),
            reason: format!("--n-gpu-layers {n}, but {}", hw.offload_note),
        },
        GpuLayers::Count(n) => Placement {
            gpu_layers: n.min(all),
            method: "flag".into(),
            reason: format!("--n-gpu-layers {n}"),
        },
        GpuLayers::Auto if !hw.can_offload => Placement {
            gpu_layers: 0,
            method: "cpu".into(),
            reason: format!("auto: {}", hw.offload_note),
        },
        GpuLayers::Auto => {
            let fit = max_gpu_layers(shape, plan, hw);
            Placement {
                gpu_layers: fit,
                method: "estimate".into(),
                reason: auto_placement_reason(fit, all, hw),
            }
        }
    }
}

fn auto_placement_reason(fit: u32, all: u32, hw: &Hardware) -> String {
    if fit == all {
        format!(
            "auto: all {all} layers fit {} ({} free)",
            hw.gpus[0].name,
            gib(hw.gpu_free())
        )
    } else {
        format!(
            "auto: {fit} of {all} layers fit {} ({} free, {} kept free)",
            hw.gpus[0].name,
            gib(hw.gpu_free()),
            gib(GPU_MARGIN)
        )
    }
}

/// The verdict for estimate `e` (of `all` layers) on `hw`; `gpu_ok` is whether its GPU share fits.
fn classify(e: &Estimate, gpu_ok: bool, all: u32, hw: &Hardware) -> Verdict {
    if !gpu_ok {
        Verdict::WillNotFit
    } else if host_fits(e, hw) {
        if e.gpu_layers == all {
            Verdict::FitsOnGpu
        } else if e.gpu_layers > 0 {
            Verdict::FitsWithOffload
        } else {
            Verdict::FitsInRam
        }
    } else if host_fits_with_swap(e, hw) {
        Verdict::FitsOnlyWithSwap
    } else {
        Verdict::WillNotFit
    }
}

/// The verdict in one line, with the figures it was decided on.
fn verdict_text(verdict: Verdict, e: &Estimate, gpu_ok: bool, all: u32, hw: &Hardware) -> String {
    let host_line = format!(
        "host peak RSS {} of {} RAM available{}",
        gib(e.host_peak),
        gib(hw.ram_available_bytes),
        if hw.swap_free_bytes > 0 {
            format!(" + {} swap free", gib(hw.swap_free_bytes))
        } else {
            String::new()
        }
    );
    let gpu_line = format!("GPU {} of {} free", gib(e.gpu_peak), gib(hw.gpu_free()));
    match verdict {
        Verdict::FitsOnGpu => {
            format!("fits on the GPU (all {all} layers): {gpu_line}; {host_line}")
        }
        Verdict::FitsWithOffload => format!(
            "fits with {} of {all} layers offloaded: {gpu_line}; {host_line}",
            e.gpu_layers
        ),
        Verdict::FitsInRam => format!("fits in RAM (CPU only): {host_line}"),
        Verdict::FitsOnlyWithSwap => {
            format!("fits only with swap (it will page and run slowly): {host_line}")
        }
        Verdict::WillNotFit if !gpu_ok => format!(
            "will not fit: {} layers need {} on the GPU but {} is free ({} kept free)",
            e.gpu_layers,
            gib(e.gpu_peak),
            gib(hw.gpu_free()),
            gib(GPU_MARGIN)
        ),
        Verdict::WillNotFit => format!("will not fit in memory: {host_line}"),
    }
}

/// What to change when the run does not fit, or fits only with swap, with `layers` on the GPU.
fn advice(
    shape: &ModelShape,
    plan: &Plan,
    hw: &Hardware,
    layers: u32,
    e: &Estimate,
    verdict: Verdict,
    gpu_ok: bool,
) -> Vec<String> {
    if !gpu_ok {
        // The host figures are for a placement that cannot load, so only the GPU advice holds.
        let fit = max_gpu_layers(shape, plan, hw);
        return vec![format!(
            "offload fewer layers: --n-gpu-layers {fit} (or auto) fits the GPU"
        )];
    }
    if !matches!(verdict, Verdict::WillNotFit | Verdict::FitsOnlyWithSwap) {
        return Vec::new();
    }
    let mut advice = Vec::new();
    if let Some(ctx) = largest_ram_ctx_tokens(shape, plan, layers, hw) {
        advice.push(format!(
            "a smaller context: --ctx {ctx} fits in RAM with --parallel {}",
            plan.n_seq
        ));
    }
    if let Some(n) = most_ram_parallel(shape, plan, layers, hw) {
        advice.push(format!(
            "fewer parallel sequences: --parallel {n} fits in RAM with --ctx {}",
            plan.ctx_per_seq
        ));
    }
    let fit = max_gpu_layers(shape, plan, hw);
    if fit > layers {
        advice.push(format!(
            "offload more layers to the GPU: --n-gpu-layers {fit}"
        ));
    }
    if verdict == Verdict::WillNotFit {
        let swap_gib = swap_to_add_gib(e, hw);
        advice.push(format!(
            "or add about {swap_gib} GiB of swap (slow: the model will page): {}",
            swap_commands(swap_gib)
        ));
    }
    advice
}

/// Whether `plan` with `layers` on the GPU fits in RAM (without swap).
fn fits_ram(shape: &ModelShape, plan: &Plan, layers: u32, hw: &Hardware) -> bool {
    host_fits(&estimate(shape, &with_layers(plan, layers)), hw)
}

/// The largest context per sequence (a multiple of `CTX_PAD`, at most `plan`'s) that fits in RAM
/// at `plan`'s `--parallel`; `None` when not even one pad does. Binary search: the host peak
/// grows with the context.
fn largest_ram_ctx_tokens(
    shape: &ModelShape,
    plan: &Plan,
    layers: u32,
    hw: &Hardware,
) -> Option<u64> {
    let mut lo = 0u64;
    let mut hi = u64::from(plan.ctx_per_seq) / CTX_PAD;
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let smaller = Plan {
            ctx_per_seq: (mid * CTX_PAD) as u32,
            ..plan.clone()
        };
        if fits_ram(shape, &smaller, layers, hw) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (lo > 0).then_some(lo * CTX_PAD)
}

/// The most sequences, fewer than `plan`'s, that fit in RAM at `plan`'s context.
fn most_ram_parallel(shape: &ModelShape, plan: &Plan, layers: u32, hw: &Hardware) -> Option<u32> {
    (1..plan.n_seq).rev().find(|&n| {
        let fewer = Plan {
            n_seq: n,
            ..plan.clone()
        };
        fits_ram(shape, &fewer, layers, hw)
    })
}

/// Swap that would absorb what RAM and the free swap lack, rounded up, plus 2 GiB of headroom.
fn swap_to_add_gib(e: &Estimate, hw: &Hardware) -> u64 {
    let short_bytes = e.host_peak.saturating_sub(host_budget(hw));
    (short_bytes.saturating_sub(hw.swap_free_bytes) as f64 / (1u64 << 30) as f64)
        .ceil()
        .max(1.0) as u64
        + 2
}

fn recommended_flags(e: &Estimate, plan: &Plan) -> Vec<String> {
    vec![
        format!("--n-gpu-layers {}", e.gpu_layers),
        format!("--ctx {}", plan.ctx_per_seq),
        format!("--parallel {}", plan.n_seq),
    ]
}

/// Ignored flags, a thin margin without swap, a context beyond training, a truncated file.
fn warnings(
    shape: &ModelShape,
    plan: &Plan,
    requested: GpuLayers,
    hw: &Hardware,
    e: &Estimate,
    verdict: Verdict,
) -> Vec<String> {
    [
        ignored_gpu_layers_warning(requested, hw),
        no_swap_warning(e, verdict, hw),
        beyond_trained_ctx_warning(shape, plan),
        truncated_file_warning(shape),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn ignored_gpu_layers_warning(requested: GpuLayers, hw: &Hardware) -> Option<String> {
    match requested {
        GpuLayers::Count(n) if n > 0 && !hw.can_offload => Some(format!(
            "--n-gpu-layers {n} has no effect: {}",
            hw.offload_note
        )),
        _ => None,
    }
}

/// Without swap, a spike past a thin RAM headroom gets the run killed instead of slowed down.
fn no_swap_warning(e: &Estimate, verdict: Verdict, hw: &Hardware) -> Option<String> {
    let headroom_bytes = hw.ram_available_bytes.saturating_sub(e.host_peak);
    let thin = headroom_bytes < (hw.ram_total_bytes / 10).max(2 << 30);
    if hw.swap_total_bytes != 0 || !verdict.runnable() || !thin {
        return None;
    }
    let swap_gib = ((e.host_peak as f64 / (1u64 << 30) as f64) / 2.0)
        .ceil()
        .max(4.0) as u64;
    Some(format!(
        "no swap is configured and only {} of RAM would stay free: an allocation spike or another process can get this run killed. Add {swap_gib} GiB of swap: {}",
        gib(headroom_bytes),
        swap_commands(swap_gib)
    ))
}

fn beyond_trained_ctx_warning(shape: &ModelShape, plan: &Plan) -> Option<String> {
    (u64::from(plan.ctx_per_seq) > shape.n_ctx_train).then(|| {
        format!(
            "--ctx {} is beyond the {} tokens {} was trained with; answers past that may degrade",
            plan.ctx_per_seq, shape.n_ctx_train, shape.name
        )
    })
}

fn truncated_file_warning(shape: &ModelShape) -> Option<String> {
    shape.is_truncated().then(|| {
        format!(
            "the file is {} bytes but its header declares {}: tensor data is missing, llama.cpp will refuse to load it (re-download or re-convert it); the estimate uses the declared size",
            shape.file_bytes, shape.declared_file_bytes
        )
    })
}

/// The commands that add a swap file of `gib` GiB (and keep it after a reboot).
pub fn swap_commands(gib: u64) -> String {
    format!(
        "`sudo fallocate -l {gib}G /swapfile && sudo chmod 600 /swapfile && sudo mkswap /swapfile && sudo swapon /swapfile` then `echo '/swapfile none swap sw 0 0' | sudo tee -a /etc/fstab`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::estimate::Repack;
    use crate::preflight::shape::{LayerRole, TensorPlace};

    const GIB: u64 = 1 << 30;

    /// 10 blocks of 1 GiB, a 1 GiB output and a 0.5 GiB embedding; KV 1 MiB a token.
    fn shape() -> ModelShape {
        let mut tensors = vec![TensorPlace {
            name: "token_embd.weight".into(),
            bytes: GIB / 2,
            ggml_type: 1,
            rows: 1000,
            layer: LayerRole::Input,
        }];
        for il in 0..10 {
            tensors.push(TensorPlace {
                name: format!("blk.{il}.ffn_up.weight"),
                bytes: GIB,
                ggml_type: 1,
                rows: 1000,
                layer: LayerRole::Block(il),
            });
        }
        tensors.push(TensorPlace {
            name: "output.weight".into(),
            bytes: GIB,
            ggml_type: 1,
            rows: 1000,
            layer: LayerRole::Output,
        });
        let weight_bytes = tensors.iter().map(|t| t.bytes).sum();
        ModelShape {
            name: "m".into(),
            architecture: "llama".into(),
            quantization: "F16".into(),
            tensor_types: vec![],
            n_params: 0,
            n_layer: 10,
            n_embd: 1024,
            n_ff: 4096,
            n_head: 8,
            n_head_kv: 8,
            // 10 layers x 8 heads x (k + v = 2 x 3276.8) x 2 bytes ~ 1 MiB a token.
            head_dim_k: 3277,
            head_dim_v: 3277,
            n_vocab: 32000,
            n_merges: 0,
            tokenizer_text_bytes: 0,
            n_ctx_train: 8192,
            sliding_window: None,
            tied_embeddings: false,
            weight_bytes,
            declared_file_bytes: weight_bytes,
            file_bytes: weight_bytes,
            tensors,
        }
    }

    fn plan(ctx: u32, n_seq: u32) -> Plan {
        Plan {
            ctx_per_seq: ctx,
            n_seq,
            n_batch: 512,
            gpu_layers: 0,
            largest_batch: None,
            logits_rows: None,
            process_baseline: 0,
            gpu_backend: false,
            repack: Repack::default(),
        }
    }

    fn machine(ram: u64, swap: u64, gpu: Option<u64>) -> Hardware {
        Hardware {
            ram_total_bytes: ram,
            ram_available_bytes: ram,
            swap_total_bytes: swap,
            swap_free_bytes: swap,
            gpus: gpu
                .map(|free| {
                    vec![super::super::hardware::Gpu {
                        index: 0,
                        name: "GPU".into(),
                        total_bytes: free,
                        free_bytes: free,
                        source: "assumed".into(),
                    }]
                })
                .unwrap_or_default(),
            can_offload: gpu.is_some(),
            nvml: false,
            assumed: true,
            offload_note: "test".into(),
        }
    }

    #[test]
    fn cpu_verdicts_from_ram_then_swap() {
        let s = shape();
        // ~11.5 GiB of weights + 2 GiB of KV.
        let fits = evaluate(
            &s,
            &plan(2048, 1),
            GpuLayers::Auto,
            &machine(64 * GIB, 8 * GIB, None),
        );
        assert_eq!(fits.verdict, Verdict::FitsInRam);
        assert!(fits.warnings.is_empty(), "{:?}", fits.warnings);
        let swap = evaluate(
            &s,
            &plan(2048, 1),
            GpuLayers::Auto,
            &machine(13 * GIB, 8 * GIB, None),
        );
        assert_eq!(
            swap.verdict,
            Verdict::FitsOnlyWithSwap,
            "{}",
            swap.verdict_text
        );
        let no = evaluate(
            &s,
            &plan(8192, 4),
            GpuLayers::Auto,
            &machine(16 * GIB, 0, None),
        );
        assert_eq!(no.verdict, Verdict::WillNotFit);
        assert!(!no.verdict.runnable());
        let advice = no.advice.join("\n");
        assert!(advice.contains("--ctx "), "{advice}");
        assert!(advice.contains("--parallel "), "{advice}");
        assert!(advice.contains("sudo mkswap /swapfile"), "{advice}");
    }

    #[test]
    fn thin_margin_without_swap_warns_with_the_commands() {
        let s = shape();
        let e = evaluate(
            &s,
            &plan(2048, 1),
            GpuLayers::Auto,
            &machine(15 * GIB, 0, None),
        );
        assert_eq!(e.verdict, Verdict::FitsInRam, "{}", e.verdict_text);
        let warning = e.warnings.join("\n");
        assert!(warning.contains("no swap is configured"), "{warning}");
        assert!(warning.contains("sudo fallocate -l"), "{warning}");
        assert!(warning.contains("/etc/fstab"), "{warning}");
        // The same margin with swap configured is not a warning.
        let e = evaluate(
            &s,
            &plan(2048, 1),
            GpuLayers::Auto,
            &machine(15 * GIB, 4 * GIB, None),
        );
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn gpu_placement_fits_what_it_can_and_refuses_too_many_layers() {
        let s = shape();
        let all = evaluate(
            &s,
            &plan(1024, 1),
            GpuLayers::Auto,
            &machine(64 * GIB, 0, Some(24 * GIB)),
        );
        assert_eq!(all.verdict, Verdict::FitsOnGpu, "{}", all.verdict_text);
        assert_eq!(all.placement.gpu_layers, 11);
        let some = evaluate(
            &s,
            &plan(1024, 1),
            GpuLayers::Auto,
            &machine(64 * GIB, 0, Some(8 * GIB)),
        );
        assert_eq!(
            some.verdict,
            Verdict::FitsWithOffload,
            "{}",
            some.verdict_text
        );
        assert!((1..11).contains(&some.placement.gpu_layers));
        assert!(some.estimate.gpu_peak <= 7 * GIB);
        let forced = evaluate(
            &s,
            &plan(1024, 1),
            GpuLayers::Count(11),
            &machine(64 * GIB, 0, Some(8 * GIB)),
        );
        assert_eq!(forced.verdict, Verdict::WillNotFit);
        assert!(
            forced.advice[0].contains(&format!("--n-gpu-layers {}", some.placement.gpu_layers)),
            "{:?}",
            forced.advice
        );
        // Layers requested from a binary that cannot offload are ignored, with a warning.
        let cpu = evaluate(
            &s,
            &plan(1024, 1),
            GpuLayers::Count(5),
            &machine(64 * GIB, 0, None),
        );
        assert_eq!(
            (cpu.placement.gpu_layers, cpu.verdict),
            (0, Verdict::FitsInRam)
        );
        assert!(cpu.warnings[0].contains("no effect"), "{:?}", cpu.warnings);
    }
}

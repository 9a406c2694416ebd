//! The memory estimate: what llama.cpp will allocate and what the process will actually touch,
//! per device (host RAM, GPU), from the model's shape and the run's settings.
//!
//! Formulas follow the llama.cpp snapshot this crate links (llama-context.cpp, llama-kv-cache.cpp,
//! llama-model.cpp, ggml-cpu/repack.cpp); the host-side constants were calibrated against
//! `/proc/self/status` on SmolLM2-135M and Gemma-3-270M (see docs/preflight.md).
//!
//! * context: `n_ctx = pad256(ctx × parallel)`, `n_ctx_seq = pad256(n_ctx / parallel)`, and the KV
//!   cache holds `n_ctx_seq × parallel` cells (the cache is not unified; one stream per sequence).
//! * KV cache = layers × cells × n_head_kv × (head_dim_k + head_dim_v) × 2 bytes (f16). Sliding-window
//!   layers get full-size caches too (`swa_full` is llama.cpp's default). The buffer is cleared at
//!   creation, so all of it is resident.
//! * weights: the file is mmapped with MAP_POPULATE, so on the CPU every byte of it is resident;
//!   tensors the CPU backend repacks (Q4_0/Q4_K/IQ4_NL/MXFP4 matrices with rows % 8 == 0 on AVX2)
//!   are copied once more into anonymous memory. Offloaded layers are copied to the GPU and their
//!   file range is unmapped.
//! * compute buffer, reserved: the worst-case graph of one micro-batch of `n_ubatch` tokens, all of
//!   whose outputs are logits: `max(n_out·n_vocab·4 + 5·n_embd·T·4, T·(3·n_ff + 1.5·n_embd +
//!   2.5·q_dim)·4) + n_masks·n_ctx_seq·T·2`. That is what a GPU allocates. On the CPU the buffer is
//!   malloc'd but only the pages a real batch writes become resident: `1.5 MB + T·(3·n_ff +
//!   1.5·n_embd + 2.5·q_dim)·4` for the largest batch of T tokens (docent-eval asks logits of the
//!   last token of each sequence only).
//! * host extras: the vocabulary (≈ 3.9 MB + 144 B a token + 112 B a BPE merge + token text) and
//!   the logits buffer (`rows × n_vocab × 4`, rows = sequences, or the most continuation tokens of
//!   one batch when log-likelihood scoring reads a row for each).
//!
//! All arithmetic saturates: a term past 2^64 bytes reads as `u64::MAX`, which no budget holds,
//! so an absurd plan never wraps to a small number that "fits". Header values that overflow on
//! their own are refused when the shape is read ([`overflowing_term`]), as an input error naming
//! the file.

use super::shape::{LayerRole, ModelShape};
use serde::Serialize;

/// Bytes of an f16 KV-cache element (llama.cpp's default `type_k`/`type_v`).
pub const KV_F16_BYTES: u64 = 2;
/// llama.cpp pads the context to a multiple of this (llama-context.cpp).
pub const CTX_PAD: u64 = 256;
/// llama.cpp's largest micro-batch in docent-eval's sessions (`n_ubatch = min(batch, 512)`).
pub const MAX_UBATCH: u64 = 512;

/// Vocabulary structures llama.cpp builds on the host: a fixed part ...
const VOCAB_FIXED: u64 = 3_900_000;
/// ... plus this per token (id→token entry, token→id hash node, piece cache) ...
const VOCAB_PER_TOKEN: u64 = 144;
/// ... plus this per BPE merge (a `std::map<pair<string,string>,int>` node).
const VOCAB_PER_MERGE: u64 = 112;
/// Compute-buffer pages touched regardless of batch size (graph, work buffers).
const COMPUTE_TOUCHED_FIXED: u64 = 1_500_000;
/// CUDA runtime, cuBLAS and the CUDA context: device memory per GPU in use (an assumption, not
/// measured on this project's machines).
pub const CUDA_DEVICE_OVERHEAD: u64 = 400 << 20;
/// The same libraries' resident host memory (an assumption, not measured here).
pub const CUDA_HOST_OVERHEAD: u64 = 512 << 20;

/// Which ggml types the CPU backend repacks into a second, interleaved copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Repack {
    /// AVX2 (x86): Q4_0, Q4_K, IQ4_NL, MXFP4 with rows % 8 == 0.
    pub avx2: bool,
    /// AVX-512 (x86): also Q2_K.
    pub avx512: bool,
    /// ARM NEON with dot product: also Q5_K, Q6_K, Q8_0.
    pub neon_dotprod: bool,
}

impl Repack {
    /// From llama.cpp's system info line (`AVX2 = 1 | ... | REPACK = 1`).
    pub fn from_system_info(info: &str) -> Repack {
        let on = |flag: &str| info.contains(&format!("{flag} = 1"));
        if !on("REPACK") {
            return Repack::default();
        }
        Repack {
            avx2: on("AVX2"),
            avx512: on("AVX512"),
            neon_dotprod: on("NEON") && on("DOTPROD"),
        }
    }

    /// Whether a weight matrix of this type and row count gets a repacked copy.
    pub fn applies(&self, ggml_type: u32, rows: u64) -> bool {
        const Q4_0: u32 = 2;
        const Q8_0: u32 = 8;
        const Q2_K: u32 = 10;
        const Q4_K: u32 = 12;
        const Q5_K: u32 = 13;
        const Q6_K: u32 = 14;
        const IQ4_NL: u32 = 20;
        const MXFP4: u32 = 39;
        if self.avx2 && matches!(ggml_type, Q4_0 | Q4_K | IQ4_NL | MXFP4) && rows.is_multiple_of(8)
        {
            return true;
        }
        if self.avx512 && ggml_type == Q2_K && rows.is_multiple_of(8) {
            return true;
        }
        self.neon_dotprod
            && matches!(ggml_type, Q4_0 | Q4_K | Q5_K | Q6_K | IQ4_NL | MXFP4 | Q8_0)
            && rows.is_multiple_of(4)
    }
}

/// The settings an estimate is for.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Context tokens per sequence requested.
    pub ctx_per_seq: u32,
    /// Sequences decoded together (`--parallel`).
    pub n_seq: u32,
    /// Tokens per llama.cpp batch.
    pub n_batch: u32,
    /// Layers offloaded (0 = CPU only; `n_layer + 1` = everything including the output layer).
    pub gpu_layers: u32,
    /// Tokens of the largest batch that will really be decoded, when known (after tokenizing);
    /// `None` assumes a full micro-batch.
    pub largest_batch: Option<u32>,
    /// Most tokens of one batch whose logits are read, when more than one per sequence
    /// (log-likelihood scoring reads a row per continuation token); `None`: one per sequence.
    pub logits_rows: Option<u32>,
    /// Resident memory of the process before the model loads (measured) plus its store threads.
    pub process_baseline: u64,
    /// A GPU backend (CUDA) is in use, with its host and device overheads.
    pub gpu_backend: bool,
    /// CPU repacking rules of this build.
    pub repack: Repack,
}

/// Bytes on one device, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Model weights (on the host: the resident part of the mmapped file).
    pub weights: u64,
    /// Repacked copies of CPU weights (host only).
    pub repacked: u64,
    /// KV cache.
    pub kv_cache: u64,
    /// Compute buffer (host: pages touched; GPU: allocated).
    pub compute: u64,
    /// Logits buffer and vocabulary (host only).
    pub vocab_and_outputs: u64,
    /// Process baseline (host) or CUDA context (GPU).
    pub overhead: u64,
}

impl Footprint {
    /// Sum of all parts.
    pub fn total(&self) -> u64 {
        [
            self.weights,
            self.repacked,
            self.kv_cache,
            self.compute,
            self.vocab_and_outputs,
            self.overhead,
        ]
        .into_iter()
        .fold(0, add)
    }
}

/// The estimate for one plan.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// KV cells in all (`n_ctx` as llama.cpp will report it).
    pub n_ctx: u64,
    /// KV cells per sequence after padding.
    pub n_ctx_per_seq: u64,
    /// Layers on the GPU (clamped to `n_layer + 1`).
    pub gpu_layers: u32,
    /// Tokens of the micro-batch the touched-compute term assumes.
    pub batch_tokens: u64,
    /// Host memory, as resident set (what peak RSS should read).
    pub host: Footprint,
    /// Host compute buffer as allocated (virtual; only `host.compute` of it becomes resident).
    pub host_compute_reserved: u64,
    /// GPU memory (all zero on a CPU-only plan).
    pub gpu: Footprint,
    /// Predicted peak RSS of the process.
    pub host_peak: u64,
    /// Predicted GPU memory this process uses.
    pub gpu_peak: u64,
    /// KV bytes per context token, all layers (for "what if" arithmetic).
    pub kv_bytes_per_token: u64,
}

fn pad(value: u64, to: u64) -> u64 {
    mul(value.div_ceil(to), to)
}

/// `a × b`, saturating at `u64::MAX` ("more than any machine has").
fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// `a + b`, saturating at `u64::MAX`.
fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b)
}

/// The first memory term that overflows 64 bits for `shape` at its own trained context (one
/// sequence, a full micro-batch, all layers on the CPU or all on the GPU, every repack rule on),
/// if one does. Such a header describes no model: [`ModelShape::from_gguf`] refuses it.
pub fn overflowing_term(shape: &ModelShape) -> Option<&'static str> {
    let ctx = u32::try_from(shape.n_ctx_train).unwrap_or(u32::MAX);
    for gpu_layers in [0, shape.n_layer.saturating_add(1)] {
        let plan = Plan {
            ctx_per_seq: ctx,
            n_seq: 1,
            n_batch: MAX_UBATCH as u32,
            gpu_layers,
            largest_batch: None,
            logits_rows: None,
            process_baseline: 0,
            gpu_backend: true,
            repack: Repack {
                avx2: true,
                avx512: true,
                neon_dotprod: true,
            },
        };
        let e = estimate(shape, &plan);
        let terms = [
            ("the KV cache", e.kv_bytes_per_token),
            ("the KV cache", e.host.kv_cache),
            ("the KV cache", e.gpu.kv_cache),
            ("the weights", e.host.weights),
            ("the weights", e.gpu.weights),
            ("the repacked weights", e.host.repacked),
            ("the compute buffer", e.host.compute),
            ("the compute buffer", e.gpu.compute),
            ("the compute buffer", e.host_compute_reserved),
            ("the vocabulary and logits", e.host.vocab_and_outputs),
            ("the total", e.host_peak),
            ("the total", e.gpu_peak),
        ];
        if let Some((term, _)) = terms.iter().find(|(_, bytes)| *bytes == u64::MAX) {
            return Some(term);
        }
    }
    None
}

/// Estimate memory for `shape` under `plan`.
// Linear formula: the terms of docs/preflight.md "The estimate", in one place to check against it.
pub fn estimate(shape: &ModelShape, plan: &Plan) -> Estimate {
    let n_layer = u64::from(shape.n_layer);
    let n_seq = u64::from(plan.n_seq.max(1));
    let gpu_layers = plan.gpu_layers.min(shape.n_layer.saturating_add(1));
    // llama-context.cpp: pad the total, split per sequence, pad again.
    let n_ctx_total = pad(mul(u64::from(plan.ctx_per_seq.max(1)), n_seq), CTX_PAD);
    let n_ctx_per_seq = pad(n_ctx_total / n_seq, CTX_PAD).max(CTX_PAD);
    let n_ctx = mul(n_ctx_per_seq, n_seq);

    // Layer il is on the GPU when il >= n_layer + 1 - gpu_layers (il == n_layer: the output layer).
    let gpu_start = (n_layer + 1).saturating_sub(u64::from(gpu_layers));
    let on_gpu = |role: LayerRole| match role {
        LayerRole::Input => false,
        LayerRole::Block(il) => u64::from(il) >= gpu_start,
        LayerRole::Output => n_layer >= gpu_start,
    };
    // The output layer is the first to go to the GPU, then blocks from the last one down.
    let output_on_gpu = gpu_layers > 0;
    let gpu_blocks = n_layer.saturating_sub(gpu_start);

    let mut host = Footprint::default();
    let mut gpu = Footprint::default();
    let mut host_mapped = shape.file_bytes.max(shape.declared_file_bytes);
    for t in &shape.tensors {
        if on_gpu(t.layer) {
            gpu.weights = add(gpu.weights, t.bytes);
            host_mapped = host_mapped.saturating_sub(t.bytes);
        } else if plan.repack.applies(t.ggml_type, t.rows) && t.layer != LayerRole::Input {
            host.repacked = add(host.repacked, t.bytes);
        }
    }
    // Tied embeddings: an offloaded output layer gets its own copy of token_embd.
    if output_on_gpu && shape.tied_embeddings {
        gpu.weights = shape
            .tensors
            .iter()
            .filter(|t| t.name == "token_embd.weight")
            .map(|t| t.bytes)
            .fold(gpu.weights, add);
    }
    host.weights = host_mapped;

    let kv_per_token_layer = shape.kv_bytes_per_token_layer(KV_F16_BYTES);
    let kv_bytes_per_token = mul(kv_per_token_layer, n_layer);
    let kv_per_layer = mul(kv_per_token_layer, n_ctx);
    gpu.kv_cache = mul(kv_per_layer, gpu_blocks);
    host.kv_cache = mul(kv_per_layer, n_layer - gpu_blocks);

    // Compute buffer: worst-case micro-batch.
    let n_ubatch = u64::from(plan.n_batch).clamp(1, MAX_UBATCH).min(n_ctx);
    let n_outputs = n_ubatch; // n_outputs_max defaults to n_batch >= n_ubatch
    let n_masks = if shape.sliding_window.is_some() { 2 } else { 1 };
    let masks = mul(mul(n_masks * 2, n_ctx_per_seq), n_ubatch);
    // A saturated term stays saturated: halving u64::MAX and multiplying by 4 saturates again.
    let per_token_layer = mul(
        4,
        add(
            add(mul(3, shape.n_ff), mul(3, shape.n_embd) / 2),
            mul(5, shape.q_dim()) / 2,
        ),
    );
    let layers_part = mul(n_ubatch, per_token_layer);
    let output_part = add(
        mul(mul(n_outputs, shape.n_vocab), 4),
        mul(mul(5 * 4, shape.n_embd), n_ubatch),
    );
    let reserved_full = add(output_part.max(layers_part), masks);
    let host_inputs = add(mul(mul(2 * 4, shape.n_embd), n_ubatch), masks);
    let batch_tokens = plan
        .largest_batch
        .map_or(n_ubatch, |b| u64::from(b).clamp(1, n_ubatch));
    let touched = add(COMPUTE_TOUCHED_FIXED, mul(batch_tokens, per_token_layer));
    if gpu_layers == 0 {
        host.compute = touched;
        gpu.compute = 0;
    } else {
        gpu.compute = if output_on_gpu {
            reserved_full
        } else {
            add(layers_part, masks)
        };
        // The host keeps the input embeddings (and the logits while the output layer is on it).
        host.compute = if output_on_gpu {
            add(
                COMPUTE_TOUCHED_FIXED,
                mul(mul(batch_tokens, shape.n_embd), 4 * 2),
            )
        } else {
            touched
        };
    }
    let host_compute_reserved = if gpu_layers == 0 || !output_on_gpu {
        reserved_full
    } else {
        host_inputs
    };

    let logits_rows = plan.logits_rows.map_or(n_seq, u64::from).max(n_seq);
    host.vocab_and_outputs = [
        mul(shape.n_vocab, VOCAB_PER_TOKEN),
        mul(shape.n_merges, VOCAB_PER_MERGE),
        shape.tokenizer_text_bytes,
        mul(mul(logits_rows, shape.n_vocab), 4),
    ]
    .into_iter()
    .fold(VOCAB_FIXED, add);
    host.overhead = plan.process_baseline;
    if plan.gpu_backend && gpu_layers > 0 {
        host.overhead = add(host.overhead, CUDA_HOST_OVERHEAD);
        gpu.overhead = CUDA_DEVICE_OVERHEAD;
    }
    let host_peak = host.total();
    let gpu_peak = if gpu_layers > 0 { gpu.total() } else { 0 };
    Estimate {
        n_ctx,
        n_ctx_per_seq,
        gpu_layers,
        batch_tokens,
        host,
        host_compute_reserved,
        gpu,
        host_peak,
        gpu_peak,
        kv_bytes_per_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::shape::TensorPlace;

    fn shape(n_layer: u32, tied: bool) -> ModelShape {
        let mut tensors = vec![TensorPlace {
            name: "token_embd.weight".into(),
            bytes: 1000,
            ggml_type: 12,
            rows: 1000,
            layer: LayerRole::Input,
        }];
        for il in 0..n_layer {
            tensors.push(TensorPlace {
                name: format!("blk.{il}.ffn_up.weight"),
                bytes: 100,
                ggml_type: 12,
                rows: 64,
                layer: LayerRole::Block(il),
            });
        }
        if !tied {
            tensors.push(TensorPlace {
                name: "output.weight".into(),
                bytes: 500,
                ggml_type: 14,
                rows: 1000,
                layer: LayerRole::Output,
            });
        }
        let weight_bytes = tensors.iter().map(|t| t.bytes).sum();
        ModelShape {
            name: "t".into(),
            architecture: "llama".into(),
            quantization: "Q4_K_M".into(),
            tensor_types: vec![],
            n_params: 0,
            n_layer,
            n_embd: 64,
            n_ff: 128,
            n_head: 4,
            n_head_kv: 2,
            head_dim_k: 16,
            head_dim_v: 16,
            n_vocab: 1000,
            n_merges: 0,
            tokenizer_text_bytes: 0,
            n_ctx_train: 4096,
            sliding_window: None,
            tied_embeddings: tied,
            weight_bytes,
            declared_file_bytes: weight_bytes + 100,
            file_bytes: weight_bytes + 100,
            tensors,
        }
    }

    fn plan(ctx: u32, n_seq: u32, gpu_layers: u32) -> Plan {
        Plan {
            ctx_per_seq: ctx,
            n_seq,
            n_batch: 512,
            gpu_layers,
            largest_batch: None,
            logits_rows: None,
            process_baseline: 0,
            gpu_backend: false,
            repack: Repack::default(),
        }
    }

    #[test]
    fn context_is_padded_like_llama_cpp() {
        let s = shape(4, false);
        let e = estimate(&s, &plan(1000, 1, 0));
        assert_eq!((e.n_ctx, e.n_ctx_per_seq), (1024, 1024));
        let e = estimate(&s, &plan(300, 3, 0));
        // pad256(900) = 1024; 1024 / 3 = 341 -> 512 per sequence -> 1536 cells.
        assert_eq!((e.n_ctx, e.n_ctx_per_seq), (1536, 512));
        // KV = layers x cells x kv_heads x (k + v) x 2 bytes.
        assert_eq!(e.host.kv_cache, 4 * 1536 * 2 * 32 * 2);
        assert_eq!(e.kv_bytes_per_token, 4 * 2 * 32 * 2);
    }

    #[test]
    fn offload_moves_layers_from_the_end_and_the_output_last() {
        let s = shape(4, false);
        let cpu = estimate(&s, &plan(512, 1, 0));
        assert_eq!(cpu.gpu_peak, 0);
        assert_eq!(cpu.host.weights, s.file_bytes);
        // Two "layers": the output layer and the last block.
        let two = estimate(&s, &plan(512, 1, 2));
        assert_eq!(two.gpu.weights, 500 + 100);
        assert_eq!(two.host.weights, s.file_bytes - 600);
        assert_eq!(two.gpu.kv_cache, cpu.host.kv_cache / 4);
        assert_eq!(two.host.kv_cache, cpu.host.kv_cache / 4 * 3);
        let all = estimate(&s, &plan(512, 1, 99));
        assert_eq!(all.gpu_layers, 5);
        assert_eq!(all.gpu.weights, 400 + 500);
        assert_eq!(all.host.kv_cache, 0);
        // Tied embeddings: the offloaded output layer copies token_embd to the GPU.
        let tied = estimate(&shape(4, true), &plan(512, 1, 5));
        assert_eq!(tied.gpu.weights, 400 + 1000);
    }

    #[test]
    fn repack_rules_follow_ggml_cpu() {
        let avx2 = Repack::from_system_info("AVX = 1 | AVX2 = 1 | REPACK = 1 |");
        assert!(avx2.avx2 && !avx2.avx512);
        assert!(avx2.applies(12, 64));
        assert!(!avx2.applies(12, 63));
        assert!(!avx2.applies(3, 64), "Q4_1 is not repacked");
        assert!(!avx2.applies(8, 64), "Q8_0 is not repacked on x86");
        assert!(
            !Repack::from_system_info("AVX2 = 1 |").avx2,
            "no REPACK, no copies"
        );
        let s = shape(4, false);
        let mut p = plan(512, 1, 0);
        p.repack = avx2;
        // Block tensors are Q4_K with 64 rows; token_embd is used by GET_ROWS and never repacked.
        assert_eq!(estimate(&s, &p).host.repacked, 400);
    }

    #[test]
    fn touched_compute_grows_with_the_batch() {
        let s = shape(4, false);
        let mut p = plan(2048, 1, 0);
        p.largest_batch = Some(10);
        let small = estimate(&s, &p);
        p.largest_batch = Some(500);
        let large = estimate(&s, &p);
        assert!(large.host.compute > small.host.compute);
        assert!(large.host_compute_reserved >= large.host.compute - COMPUTE_TOUCHED_FIXED);
    }
}

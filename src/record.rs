//! Records that cross modules and are stored in JSON columns (`runs.engine_json`,
//! `runs.host_json`, `runs.tokenizer_check_json`): plain serde structs, written and read by the same type. The SQL views read
//! some of their keys with `json_extract`; a unit test fails if one of those keys is missing from
//! the serialized struct.

use crate::config::ExecutionSettings;
use crate::units::{printable, Lines};
use serde::{Deserialize, Serialize};

/// What the engine chose for one session of a run (`runs.engine_json`, rewritten per session).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineRecord {
    /// Where the layers went, and why.
    pub placement: Placement,
    /// The memory prediction for the settings really used.
    pub preflight: PreflightRecord,
    /// The loaded model.
    pub model: ModelInfo,
    /// The llama.cpp context.
    pub session: SessionOptions,
    /// Prompt tokens shared by every question, computed once per session.
    pub shared_prefix_tokens: usize,
    /// The execution flags of this session.
    pub execution: ExecutionSettings,
}

/// How many layers are offloaded to the GPU, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Layers offloaded.
    pub gpu_layers: u32,
    /// `flag`, `estimate`, `cpu` or `llama.cpp fit_params`.
    pub method: String,
    /// One sentence.
    pub reason: String,
}

/// Preflight's prediction for a session, with its main parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreflightRecord {
    /// `fits_on_gpu`, `fits_with_offload`, `fits_in_ram`, `fits_only_with_swap`, `will_not_fit`.
    pub verdict: String,
    /// The verdict in one sentence.
    pub verdict_text: String,
    /// Predicted peak RSS of the process.
    pub predicted_peak_rss_bytes: u64,
    /// Predicted GPU memory of the process.
    pub predicted_gpu_bytes: u64,
    /// Weights (host resident + repacked + GPU).
    pub weights_bytes: u64,
    /// KV cache (host + GPU).
    pub kv_cache_bytes: u64,
    /// Compute buffers (host + GPU).
    pub compute_bytes: u64,
}

/// What the loaded model is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `general.name`, or the file stem.
    pub name: String,
    /// `general.architecture`.
    pub architecture: String,
    /// Transformer layers.
    pub n_layer: u32,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Parameter count.
    pub n_params: u64,
    /// Bytes of weights.
    pub size_bytes: u64,
    /// Layers placed on the GPU.
    pub gpu_layers: u32,
    /// Why that many.
    pub gpu_layers_reason: String,
    /// `chat-template` or `fallback`.
    pub prompt_format: String,
}

/// Shape of a llama.cpp context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOptions {
    /// Independent sequences (slots, plus one for a shared prefix).
    pub sequences: u32,
    /// Tokens of context each sequence owns.
    pub ctx_per_sequence: u32,
    /// Most tokens per decode call.
    pub batch_size: u32,
    /// CPU threads.
    pub threads: u32,
    /// One KV pool for all sequences (each still uses at most `ctx_per_sequence` cells, so the
    /// pool of `ctx_per_sequence x sequences` cells can never run out).
    pub kv_unified: bool,
}

/// A GPU as llama.cpp sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// Device name, e.g. `CUDA0`.
    pub name: String,
    /// Description, e.g. `NVIDIA H100 80GB HBM3`.
    pub description: String,
    /// Backend name, e.g. `CUDA`.
    pub backend: String,
    /// Device memory.
    pub memory_total: u64,
    /// Free device memory at the time of the query.
    pub memory_free: u64,
}

/// What the compiled-in llama.cpp offers, asked once by the caller and handed to the preflight
/// (which reads GGUF headers only and never initialises llama.cpp itself).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendFacts {
    /// llama.cpp's system info line (CPU features such as AVX2, which decide weight repacking).
    pub system_info: String,
    /// GPUs llama.cpp can offload to (empty in a CPU build or without a device).
    pub gpus: Vec<GpuDevice>,
    /// In a GPU build that sees no GPU, why (e.g. the CUDA module found no driver); `None` in a
    /// CPU build or when a GPU is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_absence: Option<String>,
}

/// The machine and build a run was started on (`runs.host_json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Host name.
    pub hostname: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU brand.
    pub cpu: Option<String>,
    /// Logical CPUs.
    pub logical_cpus: usize,
    /// Host RAM.
    pub ram_total_bytes: u64,
    /// Swap.
    pub swap_total_bytes: u64,
    /// GPUs NVML reports.
    pub gpus: Vec<HostGpu>,
    /// llama.cpp's system info line.
    pub llama_system_info: String,
    /// What this binary was built with.
    pub build: BuildInfo,
}

/// A GPU of the host, as NVML reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostGpu {
    /// NVML index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Memory.
    pub total_bytes: u64,
}

/// What this binary was built with (from build.rs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Crate version.
    pub version: String,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// llama-cpp-sys-2 version (the llama.cpp snapshot).
    pub llama_cpp_sys_2: String,
    /// Cargo profile.
    pub profile: String,
    /// Target triple.
    pub target: String,
    /// rustc version.
    pub rustc: String,
}

impl BuildInfo {
    /// This binary.
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            backend: env!("DOCENT_BUILD_BACKEND").into(),
            llama_cpp_sys_2: env!("DOCENT_BUILD_LLAMA_CPP_SYS").into(),
            profile: env!("DOCENT_BUILD_PROFILE").into(),
            target: env!("DOCENT_BUILD_TARGET").into(),
            rustc: env!("DOCENT_BUILD_RUSTC").into(),
        }
    }
}

/// The GGUF's tokenizer against the original model's Hugging Face `tokenizer.json`, over the
/// prompts of a question set (`preflight`/`run --hf-tokenizer`; `runs.tokenizer_check_json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizerCheck {
    /// The tokenizer.json as given.
    pub hf_tokenizer: String,
    /// Its sha256.
    pub hf_tokenizer_sha256: String,
    /// The GGUF's `tokenizer.ggml.pre`, when it has one.
    pub gguf_pre_tokenizer: Option<String>,
    /// Prompts tokenized by both.
    pub prompts_checked: usize,
    /// Prompts whose token ids differ.
    pub prompts_differ: usize,
    /// Tokens the GGUF tokenizer produced over all prompts.
    pub gguf_tokens: usize,
    /// Tokens the Hugging Face tokenizer produced over all prompts.
    pub hf_tokens: usize,
    /// The first differing prompts (at most three).
    pub examples: Vec<TokenizerDifference>,
}

/// One prompt the two tokenizers split differently, around the first difference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizerDifference {
    /// Question id.
    pub question_id: String,
    /// Index of the first differing token.
    pub token_index: usize,
    /// The prompt text around the first difference.
    pub snippet: String,
    /// The GGUF's tokens from a little before the difference.
    pub gguf: Vec<TokenPiece>,
    /// The Hugging Face tokenizer's tokens over the same stretch.
    pub hf: Vec<TokenPiece>,
}

/// A token id and its text as the vocabulary stores it (byte-level BPE: `Ġ` is a space, `Ċ` a
/// line break).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenPiece {
    /// Token id.
    pub id: i64,
    /// Its vocabulary text.
    pub text: String,
}

impl TokenizerCheck {
    /// Whether every prompt tokenized the same.
    pub fn agrees(&self) -> bool {
        self.prompts_differ == 0
    }

    /// The verdict in one line. The path, the GGUF's pre-tokenizer name and (in [`Self::text`])
    /// the question ids come from files: shown with [`printable`]'s escapes, as on any terminal
    /// output.
    pub fn summary(&self) -> String {
        format!(
            "tokenizer check against {}: {} of {} prompts tokenize differently (GGUF {} tokens, Hugging Face {}; GGUF pre-tokenizer {})",
            printable(&self.hf_tokenizer, Lines::Escape),
            self.prompts_differ,
            self.prompts_checked,
            self.gguf_tokens,
            self.hf_tokens,
            printable(self.gguf_pre_tokenizer.as_deref().unwrap_or("none"), Lines::Escape)
        )
    }

    /// The summary and each example on its own lines: the snippet and both token sequences.
    pub fn text(&self) -> String {
        let mut text = self.summary();
        text.push('\n');
        for example in &self.examples {
            text.push_str(&format!(
                "  question {}, token {}: …{}…\n    GGUF: {}\n    HF:   {}\n",
                printable(&example.question_id, Lines::Escape),
                example.token_index,
                printable(&example.snippet, Lines::Escape),
                pieces(&example.gguf),
                pieces(&example.hf)
            ));
        }
        text
    }
}

/// `1234 "▁the" 42 "x"`: ids with their texts quoted (escapes for line breaks).
pub fn pieces(tokens: &[TokenPiece]) -> String {
    tokens
        .iter()
        .map(|t| format!("{} {:?}", t.id, t.text))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `json_extract(x.engine_json, '$.a.b')` in the views must name a key that
    /// [`EngineRecord`] serializes; a renamed field would otherwise turn a column into NULL.
    #[test]
    fn every_engine_json_key_the_views_extract_exists() {
        let views = include_str!("../sql/views.sql");
        let record = serde_json::to_value(EngineRecord::default()).expect("serializable");
        let mut checked = 0;
        for (at, _) in views.match_indices("engine_json, '$.") {
            let rest = &views[at + "engine_json, '$.".len()..];
            let path = &rest[..rest.find('\'').expect("closing quote")];
            let pointer = format!("/{}", path.replace('.', "/"));
            assert!(
                record.pointer(&pointer).is_some(),
                "views.sql extracts engine_json $.{path}, which EngineRecord does not serialize"
            );
            checked += 1;
        }
        assert!(
            checked > 0,
            "the views extract at least one engine_json key"
        );
    }

    #[test]
    fn engine_record_round_trips() {
        let mut record = EngineRecord::default();
        record.model.architecture = "llama".into();
        record.session.ctx_per_sequence = 512;
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<EngineRecord>(&text).unwrap(), record);
    }
}

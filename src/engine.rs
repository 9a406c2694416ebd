//! llama.cpp in-process through `llama-cpp-2`: the only module that touches the bindings.
//!
//! The engine loads a GGUF model with an explicit number of GPU layers, renders prompts with the
//! model's own chat template, tokenizes, and hands out [`Session`]s: one llama.cpp context with
//! `n_seq` independent sequences that the scheduler fills and decodes in shared batches.

use crate::config::{GenerationSettings, GpuLayers};
use crate::error::{Error, Result};
pub use crate::record::{BackendFacts, GpuDevice, ModelInfo, SessionOptions};
use crate::run::scheduler::Decoder;
use llama_cpp_2::context::kv_cache::KvCacheConversionError;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType, LogOptions};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

/// A token id of the loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(i32);

impl Token {
    /// A token id for decoders that are not llama.cpp (the scheduler's tests).
    #[cfg(test)]
    pub(crate) fn from_id(id: i32) -> Token {
        Token(id)
    }

    /// The model's id of this token (stored with per-token scores).
    pub fn id(self) -> i32 {
        self.0
    }
}

/// The plain prompt used when the GGUF carries no chat template llama.cpp can apply.
pub const FALLBACK_FORMAT: &str = "{system}\n\nQuestion: {question}\nAnswer:";

pub use crate::config::MAX_SEQUENCES;

fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        // llama.cpp logs through `tracing`, forwarded to `log`: RUST_LOG=llama_cpp_2=info shows it.
        llama_cpp_2::send_logs_to_tracing(LogOptions::default());
        modules::load();
        // Only this OnceLock initialises the backend, so the "already initialised" error cannot occur.
        LlamaBackend::init().expect("llama.cpp backend initialises once per process")
    })
}

/// llama.cpp's backends as run-time modules: the CUDA build compiles ggml's backends as shared
/// libraries (`GGML_BACKEND_DL`) that live beside the binary, so a missing NVIDIA driver makes the
/// CUDA module fail to load instead of the binary failing to start. The CPU build links its one
/// backend statically and loads nothing.
mod modules {
    /// The folder the modules are loaded from: the binary's own, never the current directory
    /// (a library planted there would run with the user's rights).
    #[cfg(feature = "cuda")]
    pub fn folder() -> Option<std::path::PathBuf> {
        let exe = std::env::current_exe().ok()?;
        Some(exe.canonicalize().unwrap_or(exe).parent()?.to_path_buf())
    }

    #[cfg(feature = "cuda")]
    pub fn load() {
        use std::os::unix::ffi::OsStrExt;
        let Some(folder) = folder() else {
            log::warn!(
                "cannot locate this binary's folder; llama.cpp's backend modules are not loaded"
            );
            return;
        };
        let Ok(path) = std::ffi::CString::new(folder.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a NUL-terminated path that outlives the call; llama.cpp copies what it keeps.
        unsafe { llama_cpp_sys_2::ggml_backend_load_all_from_path(path.as_ptr()) };
    }

    #[cfg(not(feature = "cuda"))]
    pub fn load() {}

    /// Why this CUDA build offloads nothing, in one phrase: the module is missing, did not load
    /// (the loader's own words, e.g. `libcuda.so.1: cannot open shared object file`), or loaded
    /// and found no device.
    #[cfg(feature = "cuda")]
    pub fn cuda_absence() -> String {
        let Some(folder) = folder() else {
            return "this binary's folder is unknown".into();
        };
        let module = folder.join("libggml-cuda.so");
        if !module.exists() {
            return format!("{} is missing", module.display());
        }
        // SAFETY: loading runs the module's initialisers, the same ones llama.cpp just ran.
        match unsafe { libloading::Library::new(&module) } {
            Err(e) => format!("the CUDA backend did not load: {}", loader_reason(&e)),
            Ok(_) => "the CUDA driver reports no usable device".into(),
        }
    }

    /// The innermost message of a loader error (libloading wraps dlerror's text).
    #[cfg(feature = "cuda")]
    fn loader_reason(error: &libloading::Error) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            text = inner.to_string();
            source = inner.source();
        }
        text
    }

    /// Whether llama.cpp has any backend to run on (the CUDA build's CPU module can go missing).
    pub fn any_device() -> bool {
        // SAFETY: reads llama.cpp's device registry, filled once by `load`.
        unsafe { llama_cpp_sys_2::ggml_backend_dev_count() > 0 }
    }
}

/// llama.cpp's description of the CPU/GPU features of this build (e.g. `AVX2 = 1`).
pub fn system_info() -> String {
    backend();
    // SAFETY: returns a pointer to a static, NUL-terminated string owned by llama.cpp.
    unsafe {
        let text = llama_cpp_sys_2::llama_print_system_info();
        if text.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(text)
            .to_string_lossy()
            .trim()
            .to_string()
    }
}

/// What this build of llama.cpp offers: CPU features, the GPUs it can offload to, and in a GPU
/// build that sees none, why.
pub fn backend_facts() -> BackendFacts {
    let gpus = gpu_devices();
    BackendFacts {
        system_info: system_info(),
        gpu_absence: gpu_absence(&gpus),
        gpus,
    }
}

#[cfg(feature = "cuda")]
fn gpu_absence(gpus: &[GpuDevice]) -> Option<String> {
    gpus.is_empty().then(modules::cuda_absence)
}

#[cfg(not(feature = "cuda"))]
fn gpu_absence(_gpus: &[GpuDevice]) -> Option<String> {
    None
}

/// GPU devices that llama.cpp can offload to in this build (empty in a CPU-only build).
pub fn gpu_devices() -> Vec<GpuDevice> {
    backend();
    list_llama_ggml_backend_devices()
        .into_iter()
        .filter(|d| {
            matches!(
                d.device_type,
                LlamaBackendDeviceType::Gpu | LlamaBackendDeviceType::IntegratedGpu
            )
        })
        .map(|d| GpuDevice {
            name: d.name,
            description: d.description,
            backend: d.backend,
            memory_total: d.memory_total as u64,
            memory_free: d.memory_free as u64,
        })
        .collect()
}

/// llama.cpp's own memory fitting (`common_fit_params`, as `llama-server --fit` uses it): the
/// number of layers to offload so that a context of `n_ctx` tokens in `n_seq` sequences fits the
/// free memory of the GPUs, keeping `margin_bytes` free on each. It reads only the model's
/// metadata (llama.cpp loads it with `no_alloc`). Only meaningful when a GPU backend is present.
pub fn fit_gpu_layers(
    path: &Path,
    n_ctx: u32,
    n_seq: u32,
    n_batch: u32,
    margin_bytes: u64,
) -> Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    backend();
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("--model {} contains a NUL byte", path.display())))?;
    let mut context_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx.max(1)))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch.min(512))
        .with_n_seq_max(n_seq.max(1))
        .with_kv_unified(false);
    // SAFETY: returns a constant of the linked llama.cpp.
    let devices = unsafe { llama_cpp_sys_2::llama_max_devices() }.max(1);
    let mut margins = vec![usize::try_from(margin_bytes).unwrap_or(usize::MAX); devices];
    let mut params = std::pin::pin!(LlamaModelParams::default());
    params
        .as_mut()
        .fit_params(
            &c_path,
            &mut context_params,
            &mut margins,
            (n_ctx / n_seq.max(1)).max(1),
            llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR,
        )
        .map_err(|e| anyhow::anyhow!("llama.cpp fit_params: {e}"))?;
    // -1 (the default, left alone when everything fits) means every layer.
    Ok(u32::try_from(params.n_gpu_layers()).unwrap_or(u32::MAX / 2))
}

/// A prompt with its last piece kept apart (see [`Engine::scoring_prompt`]).
struct PromptParts {
    text: String,
    tokens: Vec<Token>,
    /// The text after the last message (all of it when the template could not be split).
    tail: String,
    /// Index in `tokens` of the tail's first token (0: the tail starts with BOS).
    tail_start: usize,
    /// Whether the tail is read with special tokens (a chat template's markers).
    tail_special: bool,
}

/// A loaded model.
pub struct Engine {
    model: LlamaModel,
    info: ModelInfo,
    use_chat_template: bool,
}

impl Engine {
    /// Load a GGUF model. `gpu_layers` is always set explicitly (the bindings' default changed
    /// across versions): `Auto` means every layer when llama.cpp reports a GPU, none otherwise.
    pub fn load(path: &Path, gpu_layers: GpuLayers) -> Result<Engine> {
        let gpus = gpu_devices();
        let (layers, reason) = match gpu_layers {
            GpuLayers::Count(n) => (n, format!("--n-gpu-layers {n}")),
            GpuLayers::Auto if gpus.is_empty() => (
                0,
                if cfg!(feature = "cuda") {
                    format!(
                        "auto: no CUDA device ({}), running on the CPU",
                        gpu_absence(&gpus).unwrap_or_default()
                    )
                } else {
                    "auto: CPU-only build (`make build-cuda` builds for GPU offload)".to_string()
                },
            ),
            // More than any model has: llama.cpp clamps to n_layer + 1 (the output layer).
            GpuLayers::Auto => (
                u32::MAX / 2,
                format!("auto: all layers on {}", gpus[0].description),
            ),
        };
        Engine::load_placed(path, layers, reason)
    }

    /// Load a GGUF model with exactly `layers` layers offloaded (clamped by llama.cpp to
    /// `n_layer + 1`); `reason` says why that many and is stored with the run.
    pub fn load_placed(path: &Path, layers: u32, reason: String) -> Result<Engine> {
        backend();
        if !modules::any_device() {
            return Err(anyhow::anyhow!(
                "llama.cpp has no backend to run on: its backend modules (libggml-cpu*.so) must sit beside the binary; rebuild with `make build-cuda`"
            ));
        }
        let params = LlamaModelParams::default().with_n_gpu_layers(layers);
        let model = LlamaModel::load_from_file(backend(), path, &params).map_err(|e| {
            anyhow::anyhow!(
                "llama.cpp could not load {} ({e}); the file may be truncated, not a GGUF model, of an architecture this llama.cpp does not know, or too large for memory (try fewer --n-gpu-layers). RUST_LOG=llama_cpp_2=info shows llama.cpp's reason",
                path.display()
            )
        })?;
        let n_layer = model.n_layer();
        let use_chat_template = model
            .chat_template(None)
            .ok()
            .and_then(|template| {
                let probe = [LlamaChatMessage::new("user".into(), "x".into()).ok()?];
                model.apply_chat_template(&template, &probe, true).ok()
            })
            .is_some();
        let name = model
            .meta_val_str("general.name")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let info = ModelInfo {
            name,
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_default(),
            n_layer,
            n_ctx_train: model.n_ctx_train(),
            n_params: model.n_params(),
            size_bytes: model.size(),
            gpu_layers: layers.min(n_layer + 1),
            gpu_layers_reason: reason,
            prompt_format: if use_chat_template {
                "chat-template".into()
            } else {
                "fallback".into()
            },
        };
        log::info!(
            "loaded {} ({}, {} layers, {:.0}M parameters); GPU layers: {} ({}); prompt format: {}",
            crate::units::printable(&info.name, crate::units::Lines::Escape),
            crate::units::printable(&info.architecture, crate::units::Lines::Escape),
            info.n_layer,
            info.n_params as f64 / 1e6,
            info.gpu_layers,
            info.gpu_layers_reason,
            info.prompt_format
        );
        Ok(Engine {
            model,
            info,
            use_chat_template,
        })
    }

    /// Whether a sequence's KV cache can be copied to another (not for recurrent state models).
    /// Whether a shared prompt prefix can be computed once and copied into each sequence.
    /// Recurrent and hybrid models cannot copy a sequence. Sliding-window models (Gemma) can, but
    /// the copy changed the first question's greedy answer against computing its prompt whole
    /// (measured on Gemma-3 270M, with one KV stream per sequence and with a unified cache), so
    /// they compute each prompt whole.
    pub fn supports_sequence_copy(&self) -> bool {
        let sliding_window = self
            .model
            .meta_val_str(&format!(
                "{}.attention.sliding_window",
                self.info.architecture
            ))
            .ok()
            .and_then(|window| window.trim().parse::<u64>().ok())
            .is_some_and(|window| window > 0);
        !self.model.is_recurrent() && !self.model.is_hybrid() && !sliding_window
    }

    /// What was loaded.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// One question's prompt as the model receives it, as text and tokens. Only the chat
    /// template's own markers are read as special tokens: the system and user texts are
    /// tokenized as plain text, so a question containing `<|im_end|><|im_start|>system` cannot
    /// open a turn of its own.
    pub fn prompt(
        &self,
        system: Option<&str>,
        user: &str,
        chat: bool,
    ) -> Result<(String, Vec<Token>)> {
        let parts = self.prompt_parts(system, user, chat)?;
        Ok((parts.text, parts.tokens))
    }

    /// A multiple-choice question's prompt and the tokens of each continuation after it, split
    /// as lm-evaluation-harness splits them: prompt and continuation are tokenized together and
    /// the continuation is what lies past the prompt's own token count. Only the template's last
    /// piece (after the user message, e.g. `<|im_start|>assistant\n`) can merge with a
    /// continuation. A continuation containing special-token text is tokenized on its own as
    /// plain text, so a choice cannot place a control token. Without `chat`, the prompt is the
    /// plain text after BOS and nothing in it is read as a special token.
    pub fn scoring_prompt(
        &self,
        system: Option<&str>,
        user: &str,
        continuations: &[String],
        chat: bool,
    ) -> Result<(Vec<Token>, Vec<Vec<Token>>)> {
        let parts = self.prompt_parts(system, user, chat)?;
        let tail_tokens = parts.tokens.len() - parts.tail_start;
        let split = continuations
            .iter()
            .map(|continuation| {
                let plain = self.tokenize(continuation, false, false);
                if parts.tail_special && plain != self.tokenize(continuation, false, true) {
                    return plain;
                }
                let joint = self.tokenize(
                    &format!("{}{continuation}", parts.tail),
                    parts.tail_start == 0,
                    parts.tail_special,
                );
                joint.get(tail_tokens..).unwrap_or_default().to_vec()
            })
            .collect();
        Ok((parts.tokens, split))
    }

    /// The prompt as text and tokens, and its last piece (the text after the last message,
    /// tokenized with special tokens) with the index of its first token. Without `chat`: the
    /// system text, a blank line and the user text, after BOS, all plain text (as
    /// llama-perplexity and lm-evaluation-harness without a chat template).
    fn prompt_parts(&self, system: Option<&str>, user: &str, chat: bool) -> Result<PromptParts> {
        if !chat {
            let text = match system {
                Some(system) => format!("{system}\n\n{user}"),
                None => user.to_string(),
            };
            let tokens = self.tokenize(&text, true, false);
            return Ok(PromptParts {
                tail: text.clone(),
                text,
                tokens,
                tail_start: 0,
                tail_special: false,
            });
        }
        // Placeholders from Unicode's private use area, which no template rewrites.
        const SYSTEM: &str = "\u{F8F0}docent-system\u{F8F1}";
        const USER: &str = "\u{F8F0}docent-user\u{F8F1}";
        let template = self.render_prompt(system.map(|_| SYSTEM), USER)?;
        let contents = [(SYSTEM, system.unwrap_or_default()), (USER, user)];
        let placed_once = contents
            .iter()
            .filter(|(marker, _)| *marker == USER || system.is_some())
            .all(|(marker, _)| template.matches(marker).count() == 1);
        if !placed_once {
            // A template that drops or repeats a message cannot be split; its rendering with
            // the real texts is tokenized whole.
            log::warn!("the chat template rewrites its messages; question text is tokenized with the template's special tokens");
            let text = self.render_prompt(system, user)?;
            let tokens = self.tokenize(&text, true, true);
            return Ok(PromptParts {
                tail: text.clone(),
                text,
                tokens,
                tail_start: 0,
                tail_special: true,
            });
        }
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut rest = template.as_str();
        while let Some((at, marker, content)) = contents
            .iter()
            .filter_map(|(marker, content)| Some((rest.find(marker)?, *marker, *content)))
            .min_by_key(|(at, _, _)| *at)
        {
            text.push_str(&rest[..at]);
            tokens.extend(self.tokenize(&rest[..at], tokens.is_empty(), true));
            text.push_str(content);
            tokens.extend(self.tokenize(content, false, false));
            rest = &rest[at + marker.len()..];
        }
        text.push_str(rest);
        let tail_start = tokens.len();
        tokens.extend(self.tokenize(rest, false, true));
        Ok(PromptParts {
            text,
            tokens,
            tail: rest.to_string(),
            tail_start,
            tail_special: true,
        })
    }

    /// The chat template (or [`FALLBACK_FORMAT`] when the model has none llama.cpp can apply)
    /// around an optional system message and the user message.
    fn render_prompt(&self, system: Option<&str>, user: &str) -> Result<String> {
        if self.use_chat_template {
            let mut messages = Vec::with_capacity(2);
            if let Some(system) = system {
                messages.push(chat_message("system", system)?);
            }
            messages.push(chat_message("user", user)?);
            let template = self
                .model
                .chat_template(None)
                .map_err(|e| anyhow::anyhow!("chat template vanished: {e}"))?;
            return self
                .model
                .apply_chat_template(&template, &messages, true)
                .map_err(|e| anyhow::anyhow!("chat template failed: {e}"));
        }
        let system = system.map(|s| format!("{s}\n\n")).unwrap_or_default();
        Ok(format!("{system}Question: {user}\nAnswer:"))
    }

    /// Tokenize `text`; `add_bos` adds the model's start token where it wants one,
    /// `parse_special` reads special-token text (`<|im_start|>`) as those tokens.
    fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<Token> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_bos, parse_special)
            .into_iter()
            .map(|t| Token(t.0))
            .collect()
    }

    /// Whether `token` ends generation (EOS, EOT, ...).
    pub fn is_end_of_generation(&self, token: Token) -> bool {
        self.model.vocab().is_eog(LlamaToken(token.0))
    }

    /// The bytes of a token's text (a multi-byte character may span tokens).
    pub fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(token.0), false, None)
    }

    /// A sampler for one question. Greedy when the temperature is 0; otherwise top-p, temperature
    /// and a distribution seeded per question, so a question's answer does not depend on which
    /// other questions share its batch.
    pub fn sampler(&self, settings: &GenerationSettings, question_seed: u32) -> SequenceSampler {
        if settings.is_greedy() {
            return SequenceSampler::Greedy;
        }
        SequenceSampler::Chain(LlamaSampler::chain_simple([
            LlamaSampler::top_p(settings.top_p, 1),
            LlamaSampler::temp(settings.temperature),
            LlamaSampler::dist(question_seed),
        ]))
    }

    /// A context with `options.sequences` independent sequences of `options.ctx_per_sequence`
    /// tokens each. Unless `options.kv_unified`, the KV cache is not unified, so llama.cpp splits
    /// `n_ctx` evenly: every sequence is guaranteed its share and a long answer can never starve
    /// another.
    pub fn session(&self, options: SessionOptions) -> Result<Session<'_>> {
        if options.sequences > MAX_SEQUENCES {
            return Err(Error::Usage(format!(
                "this session needs {} sequences and llama.cpp holds at most {MAX_SEQUENCES} in a context; lower --parallel",
                options.sequences
            ))
            .into());
        }
        let n_ctx = options
            .ctx_per_sequence
            .checked_mul(options.sequences)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                Error::Usage("context x parallel overflows; lower --ctx or --parallel".into())
            })?;
        let threads = options.threads as i32;
        let sequences_per_token = if options.kv_unified {
            options.sequences as usize
        } else {
            1
        };
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_batch(options.batch_size)
            .with_n_ubatch(options.batch_size.min(512))
            .with_n_seq_max(options.sequences)
            .with_kv_unified(options.kv_unified)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context = self.model.new_context(backend(), params).map_err(|e| {
            anyhow::anyhow!(
                "llama.cpp could not create a context of {n_ctx} tokens ({} sequences x {}): {e}; this is usually memory: lower --parallel, --ctx or --n-gpu-layers",
                options.sequences, options.ctx_per_sequence
            )
        })?;
        Ok(Session {
            engine: self,
            context,
            batch: LlamaBatch::new(options.batch_size as usize, sequences_per_token as i32),
            batch_size: options.batch_size as usize,
            sequences_per_token,
        })
    }
}

/// A model's tokenizer alone: llama.cpp loads the GGUF's vocabulary without its weights (for the
/// tokenizer check, which compares it with the original model's Hugging Face tokenizer).
pub struct Vocabulary {
    model: LlamaModel,
}

impl Vocabulary {
    /// Load the vocabulary of a GGUF file (no weights are read).
    pub fn load(path: &Path) -> Result<Vocabulary> {
        backend();
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(backend(), path, &params).map_err(|e| {
            anyhow::anyhow!(
                "llama.cpp could not read the vocabulary of {} ({e}); RUST_LOG=llama_cpp_2=info shows llama.cpp's reason",
                path.display()
            )
        })?;
        Ok(Vocabulary { model })
    }

    /// Token ids of `text` as plain text: no BOS, and special-token text is not read as those
    /// tokens (the comparison is about the vocabulary, merges and pre-tokenizer).
    pub fn tokenize_text(&self, text: &str) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The bytes of a token's text.
    pub fn piece(&self, id: i32) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(id), false, None)
    }

    /// A token's text as the vocabulary stores it (byte-level BPE: `Ġ` is a space), empty for an
    /// id outside the vocabulary.
    pub fn token_text(&self, id: i32) -> String {
        let vocab = self.model.vocab();
        if id < 0 || id >= vocab.n_tokens() {
            return String::new();
        }
        vocab
            .text(LlamaToken(id))
            .map(|text| text.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The GGUF's `tokenizer.ggml.pre` (which pre-tokenizer llama.cpp applies), if any.
    pub fn pre_tokenizer(&self) -> Option<String> {
        self.model.meta_val_str("tokenizer.ggml.pre").ok()
    }
}

fn chat_message(role: &str, content: &str) -> Result<LlamaChatMessage> {
    LlamaChatMessage::new(role.into(), content.into())
        .map_err(|_| crate::error::usage(format!("the {role} text contains a NUL byte; remove it")))
}

/// Per-question sampler state.
pub enum SequenceSampler {
    /// The most likely token, read straight from the logits. llama.cpp's greedy sampler gives
    /// the same token but first copies the whole vocabulary into a candidate array, once per
    /// sequence per step, while the other decoding threads wait (measured: ≈0.5 % of a run's
    /// CPU time at `--parallel 16`, plus the threads' wait).
    Greedy,
    /// A llama.cpp sampler chain (top-p, temperature, seeded distribution).
    Chain(LlamaSampler),
}

/// A llama.cpp context with a reusable batch.
pub struct Session<'m> {
    engine: &'m Engine,
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    /// Most sequences one token of the batch can belong to: all of them with a unified KV
    /// cache, else one (llama.cpp shares a token only within one KV stream).
    sequences_per_token: usize,
}

impl<'m> Session<'m> {
    /// The engine this session decodes with.
    pub fn engine(&self) -> &'m Engine {
        self.engine
    }
}

impl Decoder for Session<'_> {
    type Sampler = SequenceSampler;

    fn batch_capacity(&self) -> usize {
        self.batch_size
    }

    fn clear_batch(&mut self) {
        self.batch.clear();
    }

    fn push_shared(
        &mut self,
        token: Token,
        position: u32,
        sequences: std::ops::Range<u32>,
        wants_logits: bool,
    ) -> Result<usize> {
        if sequences.len() > self.sequences_per_token {
            return Err(anyhow::anyhow!(
                "a token for {} sequences; this batch holds {} per token",
                sequences.len(),
                self.sequences_per_token
            ));
        }
        let ids: Vec<i32> = sequences.map(|s| s as i32).collect();
        let index = self.batch.n_tokens() as usize;
        self.batch
            .add(LlamaToken(token.0), position as i32, &ids, wants_logits)
            .map_err(|e| anyhow::anyhow!("batch overflow: {e}"))?;
        Ok(index)
    }

    fn decode(&mut self) -> Result<()> {
        self.context.decode(&mut self.batch).map_err(|e| {
            anyhow::anyhow!(
                "llama.cpp decode failed ({e}); if this is memory, lower --parallel or --n-gpu-layers and --resume"
            )
        })
    }

    /// A sampler chain also accepts the token (llama.cpp's `llama_sampler_sample` does both).
    fn sample(&mut self, sampler: &mut SequenceSampler, batch_index: usize) -> Token {
        let batch_index = batch_index as i32;
        match sampler {
            SequenceSampler::Greedy => Token(argmax(self.context.get_logits_ith(batch_index))),
            SequenceSampler::Chain(chain) => Token(chain.sample(&self.context, batch_index).0),
        }
    }

    fn is_end_of_generation(&self, token: Token) -> bool {
        self.engine.is_end_of_generation(token)
    }

    fn log_probs(&mut self, batch_index: usize, tokens: &[Token]) -> Vec<(f64, bool)> {
        log_probs(self.context.get_logits_ith(batch_index as i32), tokens)
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.engine.token_bytes(token)
    }

    /// llama.cpp copies a range only within one KV stream (`--kv-unified`); with a stream per
    /// sequence, the default, a partial copy aborts the process ("seq_cp() is only supported for
    /// full KV buffers"). So the whole sequence is copied and the destination then trimmed, which
    /// is right in both layouts. With separate streams the buffer copy happens at the next decode,
    /// before that batch writes its KV; with unified KV the cells are shared, not copied.
    fn copy_sequence(&mut self, source: u32, destination: u32, positions: u32) -> Result<()> {
        let failed =
            |e: KvCacheConversionError| anyhow::anyhow!("KV copy {source} -> {destination}: {e}");
        // Unified KV adds the source's cells to what the destination holds, so clear it first.
        self.context
            .clear_kv_cache_seq(Some(destination), None, None)
            .map_err(failed)?;
        self.context
            .copy_kv_cache_seq(source as i32, destination as i32, None, None)
            .map_err(failed)?;
        let trimmed = self
            .context
            .clear_kv_cache_seq(Some(destination), Some(positions), None)
            .map_err(failed)?;
        // Only recurrent state refuses a partial removal, and such models share no prefix.
        if !trimmed {
            return Err(anyhow::anyhow!(
                "llama.cpp could not trim sequence {destination} to {positions} positions"
            ));
        }
        Ok(())
    }

    fn max_sequences(&self) -> u32 {
        MAX_SEQUENCES
    }

    fn forget_sequence(&mut self, sequence: u32) {
        // Full-sequence removal cannot fail; the Result only guards id conversions.
        let _ = self.context.clear_kv_cache_seq(Some(sequence), None, None);
    }
}

/// Natural-log probabilities of `tokens` under `logits` (a log-softmax in f64, as
/// lm-evaluation-harness computes it), and whether each is the largest logit (the first of
/// equal maxima, as greedy decoding picks). A token outside the vocabulary gets -inf.
pub(crate) fn log_probs(logits: &[f32], tokens: &[Token]) -> Vec<(f64, bool)> {
    let best = argmax(logits);
    let max = logits.get(best as usize).copied().unwrap_or(0.0) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    tokens
        .iter()
        .map(
            |t| match usize::try_from(t.0).ok().and_then(|i| logits.get(i)) {
                Some(&l) => (l as f64 - log_sum, t.0 == best),
                None => (f64::NEG_INFINITY, false),
            },
        )
        .collect()
}

/// Index of the largest logit; the first one on ties, as llama.cpp's greedy sampler picks.
/// Greedy decoding calls this once per sequence and step over the whole vocabulary (128,256
/// logits for Llama-3), so it is two passes the compiler vectorizes: the maximum over 16 lanes,
/// then the first index holding it. NaN is never the maximum.
fn argmax(logits: &[f32]) -> i32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = if value > *lane { value } else { *lane };
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |max, &v| if v > max { v } else { max });
    logits.iter().position(|&l| l == max).unwrap_or(0) as i32
}

#[cfg(test)]
mod tests {
    use super::{argmax, log_probs, Token};

    #[test]
    fn log_probs_are_a_log_softmax_with_the_greedy_token_marked() {
        let logits = [1.0_f32, 3.0, 2.0, 3.0];
        let rows = log_probs(&logits, &[Token(0), Token(1), Token(3), Token(9)]);
        let norm: f64 = logits.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
        assert!((rows[0].0 - (1.0 - norm)).abs() < 1e-12);
        assert!((rows[1].0 - (3.0 - norm)).abs() < 1e-12);
        assert_eq!((rows[1].1, rows[2].1, rows[0].1), (true, false, false));
        assert_eq!(rows[3], (f64::NEG_INFINITY, false));
        // Probabilities of the whole vocabulary sum to one.
        let all: Vec<Token> = (0..4).map(Token).collect();
        let total: f64 = log_probs(&logits, &all).iter().map(|r| r.0.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima_like_llama_cpp_greedy() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[-3.0, -1.5, -2.0]), 1);
        assert_eq!(argmax(&[7.0]), 0);
        assert_eq!(argmax(&[1.0, f32::NEG_INFINITY, 1.0]), 0);
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN]), 1);
        assert_eq!(argmax(&[]), 0);
        // Across the lanes and the remainder.
        let mut long = vec![0.0_f32; 1000];
        long[997] = 3.0;
        long[18] = 3.0;
        assert_eq!(argmax(&long), 18);
        long[18] = 2.0;
        assert_eq!(argmax(&long), 997);
    }
}

//! Validated run settings, and the run identity that `--resume` checks.

use crate::dataset::mapping::Mapping;
use crate::dataset::shard::ShardSpec;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How many model layers to place on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GpuLayers {
    /// All layers when a GPU backend is built in and present, none otherwise.
    #[default]
    Auto,
    /// Exactly this many layers (0 = CPU only).
    Count(u32),
}

impl FromStr for GpuLayers {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(GpuLayers::Auto);
        }
        text.parse::<u32>()
            .map(GpuLayers::Count)
            .map_err(|_| format!("'{text}' is neither 'auto' nor a layer count"))
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => write!(f, "auto"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// How multiple-choice questions are scored (`run --mc-scoring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum McScoring {
    /// Generate an answer and read the chosen option from its text.
    #[default]
    Generate,
    /// Score every choice by the log-probability of its continuation (as lm-evaluation-harness);
    /// nothing is generated for multiple-choice questions.
    Loglik,
    /// Both: the generated answer and the per-choice log-probabilities, side by side.
    Both,
}

impl McScoring {
    fn is_generate(&self) -> bool {
        *self == McScoring::Generate
    }

    /// Whether choices are scored by log-likelihood.
    pub fn scores_choices(self) -> bool {
        self != McScoring::Generate
    }

    /// Whether a multiple-choice question is also answered by generation.
    pub fn generates_choices(self) -> bool {
        self != McScoring::Loglik
    }
}

/// Which shared prompt prefixes are computed once (`run --prefix-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefixCache {
    /// Every prefix two or more prompts share (a system prompt, a passage): the default.
    Tree,
    /// Only the prefix all prompts share (for comparison in benchmarks).
    Global,
    /// None: every prompt is computed in full.
    Off,
}

/// What log-likelihood scoring scores for each choice (`run --mc-continuation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum McContinuation {
    /// The prompt lists the choices as A, B, C, ... and each choice is scored as its letter
    /// (one logits row per question when the letters are single tokens; KMMLU's form).
    #[default]
    Letter,
    /// The prompt holds the question only and each choice is scored as its own text.
    Text,
}

impl McContinuation {
    fn is_letter(&self) -> bool {
        *self == McContinuation::Letter
    }
}

/// Every setting that shapes an answer. Two runs with equal settings, the same model file and
/// the same question file produce the same answers (greedy), so these form the run identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    /// Most tokens generated per question.
    pub max_tokens: u32,
    /// Context per sequence; `None` sizes it from the longest prompt plus `max_tokens`.
    pub ctx: Option<u32>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus sampling mass (ignored when greedy).
    pub top_p: f32,
    /// Base seed; each question's sampler is seeded from it and the question id.
    pub seed: u32,
    /// System prompt, if any.
    pub system_prompt: Option<String>,
    /// Only the first N questions of the set.
    pub limit: Option<usize>,
    /// Benchmark only: keep generating past end-of-sequence to exactly `max_tokens`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_eos: bool,
    /// How multiple-choice questions are scored (absent in runs from before it existed).
    #[serde(default, skip_serializing_if = "McScoring::is_generate")]
    pub mc_scoring: McScoring,
    /// What log-likelihood scoring scores for each choice.
    #[serde(default, skip_serializing_if = "McContinuation::is_letter")]
    pub mc_continuation: McContinuation,
    /// Wrap prompts in the model's chat template (`--no-chat-template`: plain text after BOS).
    #[serde(default = "chat_default", skip_serializing_if = "Clone::clone")]
    pub chat_template: bool,
    /// How the question file's columns become the question format (`--map`, `--map-file`),
    /// in its canonical text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Mapping>,
    /// The prompt template (`--template`): the user message of every question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRecord>,
    /// The label letter scoring scores for each choice (`--mc-label`, e.g. `({{letter}})`);
    /// `None` is the bare letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mc_label: Option<String>,
    /// The shard of the question set this run answers (`--shard`); `None` is the whole set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSpec>,
}

/// The placeholder of `--mc-label` that stands for each choice's letter.
pub const LETTER: &str = "{{letter}}";

/// A prompt template as stored with a run (part of its identity): its text and the sha256 of
/// that text. `prompt::template` reads and parses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// sha256 of `text` (lowercase hex): what `--resume` and `report` name.
    pub sha256: String,
    /// The template text, without the file's last line break.
    pub text: String,
}

fn chat_default() -> bool {
    true
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings {
            max_tokens: 256,
            ctx: None,
            temperature: 0.0,
            top_p: 1.0,
            seed: 42,
            system_prompt: None,
            limit: None,
            ignore_eos: false,
            mc_scoring: McScoring::Generate,
            mc_continuation: McContinuation::Letter,
            chat_template: true,
            mapping: None,
            template: None,
            mc_label: None,
            shard: None,
        }
    }
}

impl GenerationSettings {
    /// Check ranges; each problem is one sentence naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(Error::Usage("--max-tokens must be at least 1".into()).into());
        }
        if let Some(ctx) = self.ctx {
            if ctx < 32 {
                return Err(Error::Usage(format!(
                    "--ctx {ctx} is too small; use at least 32 tokens"
                ))
                .into());
            }
            if self.max_tokens >= ctx {
                return Err(Error::Usage(format!(
                    "--max-tokens {} leaves no room for a prompt in --ctx {ctx}; raise --ctx or lower --max-tokens",
                    self.max_tokens
                )).into());
            }
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::Usage(format!(
                "--temperature {} must be a number >= 0 (0 = greedy)",
                self.temperature
            ))
            .into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Usage(format!("--top-p {} must be in (0, 1]", self.top_p)).into());
        }
        if self.limit == Some(0) {
            return Err(Error::Usage("--limit must be at least 1".into()).into());
        }
        if let Some(form) = &self.mc_label {
            if !self.mc_scoring.scores_choices() || self.mc_continuation != McContinuation::Letter {
                return Err(Error::Usage(format!(
                    "--mc-label {form:?} names the label letter scoring scores; use it with --mc-scoring loglik (or both) and --mc-continuation letter"
                ))
                .into());
            }
            if form.matches(LETTER).count() != 1 {
                return Err(Error::Usage(format!(
                    "--mc-label {form:?} must contain {LETTER} once, e.g. \"({LETTER})\" scores (A), (B), ..."
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Whether decoding is greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// One line per setting that differs from `other` (the run being resumed).
    pub fn differences(&self, recorded: &GenerationSettings) -> Vec<String> {
        let now = compared(self);
        let then = compared(recorded);
        let mut keys: Vec<&String> = now
            .as_object()
            .into_iter()
            .chain(then.as_object())
            .flat_map(|o| o.keys())
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|key| {
                let a = then.get(key).cloned().unwrap_or(serde_json::Value::Null);
                let b = now.get(key).cloned().unwrap_or(serde_json::Value::Null);
                (a != b).then(|| format!("  {key}: run has {}, now {}", shown(&a), shown(&b)))
            })
            .collect()
    }
}

/// The settings as `differences` compares them: everything but the shard's host, which is
/// recorded and may change (a requeued task resumes from a copy on another node).
fn compared(settings: &GenerationSettings) -> serde_json::Value {
    let mut value = serde_json::to_value(settings).unwrap_or_default();
    if let Some(shard) = value.get_mut("shard").and_then(|s| s.as_object_mut()) {
        shard.remove("host");
    }
    value
}

/// A setting's value in a difference line: a template by its sha256 (its text can be long).
fn shown(value: &serde_json::Value) -> String {
    match value.get("sha256").and_then(|h| h.as_str()) {
        Some(hash) => format!("template with sha256 {}", short(hash)),
        None => value.to_string(),
    }
}

/// Settings that change speed and memory but not answers; they may change between sessions of
/// one run (for instance fewer GPU layers or fewer parallel sequences after an out-of-memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSettings {
    /// Sequences decoded together.
    pub parallel: u32,
    /// GPU layers.
    pub gpu_layers: GpuLayers,
    /// CPU threads for llama.cpp; `None` = available cores.
    pub threads: Option<u32>,
    /// Memory sample period.
    pub sample_interval_ms: u64,
    /// Tokens per llama.cpp batch.
    pub batch_size: u32,
    /// Prefill the prompt prefixes questions share once and copy their KV cache.
    #[serde(default = "enabled")]
    pub prefix_cache: bool,
    /// Only the prefix all questions share (`--prefix-cache global`), not the prefix tree.
    #[serde(default)]
    pub global_prefix_only: bool,
    /// One KV pool shared by all sequences instead of one stream per sequence.
    #[serde(default)]
    pub kv_unified: bool,
}

fn enabled() -> bool {
    true
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        ExecutionSettings {
            parallel: 1,
            gpu_layers: GpuLayers::Auto,
            threads: None,
            sample_interval_ms: 1000,
            batch_size: 512,
            prefix_cache: true,
            global_prefix_only: false,
            kv_unified: false,
        }
    }
}

/// Most sequences a llama.cpp context holds (`LLAMA_MAX_SEQ`): a larger `n_seq_max` fails
/// context creation, a larger sequence id fails the decode. Kept here with the other ranges
/// (`--parallel`); the engine re-exports it.
pub const MAX_SEQUENCES: u32 = 256;

impl ExecutionSettings {
    /// Check ranges; each problem is one sentence naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.parallel == 0 || self.parallel > MAX_SEQUENCES {
            return Err(Error::Usage(format!(
                "--parallel {} must be between 1 and {} (llama.cpp's sequences per context)",
                self.parallel, MAX_SEQUENCES
            ))
            .into());
        }
        if self.threads == Some(0) {
            return Err(Error::Usage("--threads must be at least 1".into()).into());
        }
        if self.sample_interval_ms < 50 {
            return Err(Error::Usage(format!(
                "--sample-interval-ms {} is too short; use at least 50",
                self.sample_interval_ms
            ))
            .into());
        }
        // llama.cpp allocates per-token batch arrays of this size up front, outside what the
        // preflight counts; 65,536 is far above any useful batch on a CPU or one GPU.
        if !(16..=65_536).contains(&self.batch_size) {
            return Err(Error::Usage(format!(
                "--batch-size {} must be between 16 and 65536",
                self.batch_size
            ))
            .into());
        }
        Ok(())
    }

    /// Threads to give llama.cpp.
    pub fn effective_threads(&self) -> u32 {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }
}

/// The identity of a run, as stored in `runs`: what `--resume` compares.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    /// sha256 of the model file.
    pub model_sha256: String,
    /// sha256 of the question file.
    pub questions_sha256: String,
    /// Generation settings.
    pub settings: GenerationSettings,
}

impl RunIdentity {
    /// Every difference between `self` (requested now) and a recorded run, one line each.
    pub fn differences(&self, recorded: &RunIdentity) -> Vec<String> {
        let mut lines = Vec::new();
        if self.model_sha256 != recorded.model_sha256 {
            lines.push(format!(
                "  model file: run has sha256 {}, now {}",
                short(&recorded.model_sha256),
                short(&self.model_sha256)
            ));
        }
        if self.questions_sha256 != recorded.questions_sha256 {
            lines.push(format!(
                "  question file: run has sha256 {}, now {}",
                short(&recorded.questions_sha256),
                short(&self.questions_sha256)
            ));
        }
        lines.extend(self.settings.differences(&recorded.settings));
        lines
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_layers_parse() {
        assert_eq!("auto".parse::<GpuLayers>(), Ok(GpuLayers::Auto));
        assert_eq!("AUTO".parse::<GpuLayers>(), Ok(GpuLayers::Auto));
        assert_eq!("33".parse::<GpuLayers>(), Ok(GpuLayers::Count(33)));
        assert!("-1".parse::<GpuLayers>().is_err());
        assert!("all".parse::<GpuLayers>().is_err());
    }

    #[test]
    fn validation_names_the_flag() {
        let bad = [
            GenerationSettings {
                max_tokens: 0,
                ..Default::default()
            },
            GenerationSettings {
                temperature: -1.0,
                ..Default::default()
            },
            GenerationSettings {
                top_p: 0.0,
                ..Default::default()
            },
            GenerationSettings {
                ctx: Some(128),
                max_tokens: 200,
                ..Default::default()
            },
            GenerationSettings {
                limit: Some(0),
                ..Default::default()
            },
        ];
        let flags = [
            "--max-tokens",
            "--temperature",
            "--top-p",
            "--max-tokens",
            "--limit",
        ];
        for (settings, flag) in bad.iter().zip(flags) {
            let message = settings.validate().unwrap_err().to_string();
            assert!(message.contains(flag), "{message} should name {flag}");
        }
        assert!(GenerationSettings::default().validate().is_ok());
        // Past llama.cpp's sequences per context the run would fail only after the model loads.
        for parallel in [0, MAX_SEQUENCES + 1] {
            let exec = ExecutionSettings {
                parallel,
                ..Default::default()
            };
            assert!(exec
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--parallel"));
        }
        let most = ExecutionSettings {
            parallel: MAX_SEQUENCES,
            ..Default::default()
        };
        assert!(most.validate().is_ok());
    }

    #[test]
    fn identity_differences_list_each_setting() {
        let recorded = RunIdentity {
            model_sha256: "a".repeat(64),
            questions_sha256: "b".repeat(64),
            settings: GenerationSettings::default(),
        };
        let mut now = recorded.clone();
        assert!(now.differences(&recorded).is_empty());
        now.model_sha256 = "c".repeat(64);
        now.settings.max_tokens = 128;
        now.settings.system_prompt = Some("hi".into());
        let lines = now.differences(&recorded);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("model file"));
        assert!(lines
            .iter()
            .any(|l| l.contains("max_tokens: run has 256, now 128")));
        assert!(lines.iter().any(|l| l.contains("system_prompt")));
    }

    #[test]
    fn mapping_and_template_differences_name_them_briefly_and_old_runs_read() {
        let mut recorded = GenerationSettings {
            mapping: crate::dataset::mapping::from_args(
                Some("choices=A|B,answer=gold:index1"),
                None,
            )
            .unwrap(),
            template: Some(TemplateRecord {
                sha256: "a".repeat(64),
                text: "{{question}}\n".repeat(50),
            }),
            ..Default::default()
        };
        let mut now = recorded.clone();
        now.mapping =
            crate::dataset::mapping::from_args(Some("choices=A|B,answer=gold:index0"), None)
                .unwrap();
        now.template = Some(TemplateRecord {
            sha256: "b".repeat(64),
            text: "{{question}}".into(),
        });
        let lines = now.differences(&recorded);
        assert_eq!(
            lines,
            [
                "  mapping: run has \"choices=A|B,answer=gold:index1\", now \"choices=A|B,answer=gold:index0\"",
                "  template: run has template with sha256 aaaaaaaaaaaa, now template with sha256 bbbbbbbbbbbb",
            ]
        );
        // A run stored before mappings and templates existed reads as having neither.
        recorded.mapping = None;
        recorded.template = None;
        let old: GenerationSettings =
            serde_json::from_str(r#"{"max_tokens":256,"ctx":null,"temperature":0.0,"top_p":1.0,"seed":42,"system_prompt":null,"limit":null}"#)
                .unwrap();
        assert_eq!(old, recorded);
    }

    #[test]
    fn mc_label_needs_letter_scoring_and_one_letter_placeholder() {
        let label = |form: &str, mc_scoring| GenerationSettings {
            mc_label: Some(form.into()),
            mc_scoring,
            ..Default::default()
        };
        assert!(label("({{letter}})", McScoring::Loglik).validate().is_ok());
        let cases = [
            ("(A)", McScoring::Loglik, "must contain {{letter}} once"),
            (
                "{{letter}}{{letter}}",
                McScoring::Both,
                "must contain {{letter}} once",
            ),
            (
                "({{letter}})",
                McScoring::Generate,
                "use it with --mc-scoring loglik",
            ),
        ];
        for (form, scoring, expected) in cases {
            let message = label(form, scoring).validate().unwrap_err().to_string();
            assert!(message.contains(expected), "{form}: {message}");
            assert!(message.starts_with("--mc-label"), "{message}");
        }
        let text = GenerationSettings {
            mc_continuation: McContinuation::Text,
            ..label("({{letter}})", McScoring::Loglik)
        };
        assert!(text.validate().is_err());
    }
}

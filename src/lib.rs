//! docent-eval: run a question set through a GGUF model in-process (llama.cpp) and store every
//! question, answer, timing and memory sample in SQLite, resumable after any interruption.
//!
//! Data flows one way: [`dataset`] → [`prompt`] → [`engine`] → [`run`] (scheduler, recorder) →
//! [`store`] → [`report`]. [`commands`] runs what [`cli`] parsed and is the only writer to
//! standard output.

#[cfg(test)]
mod alloc_probe;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod holder;
pub mod merge;
pub mod monitor;
pub mod preflight;
pub mod prompt;
pub mod record;
pub mod report;
pub mod run;
pub mod score;
pub mod store;
pub mod tokcheck;
pub mod units;

/// `--version` text: crate version, backend, llama.cpp bindings, build profile.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (backend: ",
    env!("DOCENT_BUILD_BACKEND"),
    ", llama-cpp-sys-2 ",
    env!("DOCENT_BUILD_LLAMA_CPP_SYS"),
    ", profile ",
    env!("DOCENT_BUILD_PROFILE"),
    ", ",
    env!("DOCENT_BUILD_TARGET"),
    ")"
);

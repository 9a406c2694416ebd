//! docent-eval: run a question set through a GGUF model in-process (llama.cpp) and store every
//! question, answer, timing and memory sample in SQLite, resumable after any interruption.
//!
//! Data flows one way: [`dataset`] → [`engine`] (driven by [`scheduler`]) → [`recorder`] /
//! [`store`] → [`report`]. [`run`] orchestrates one run; [`cli`] maps the command line onto it.

pub mod cli;
pub mod config;
pub mod control;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod monitor;
pub mod preflight;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scheduler;
pub mod score;
pub mod store;

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

/// What this binary was built with, as JSON (stored in each run's `host_json`).
pub fn build_info() -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backend": env!("DOCENT_BUILD_BACKEND"),
        "llama_cpp_sys_2": env!("DOCENT_BUILD_LLAMA_CPP_SYS"),
        "profile": env!("DOCENT_BUILD_PROFILE"),
        "target": env!("DOCENT_BUILD_TARGET"),
        "rustc": env!("DOCENT_BUILD_RUSTC"),
    })
}

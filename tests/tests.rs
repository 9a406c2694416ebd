//! The end-to-end tests, as one binary (as ripgrep does): every module runs the real
//! `docent-eval` binary on the real small models that `make models` fetches into `models/`.
//! Shared helpers live in `util`; each other module covers one area.

mod util;

// The CUDA build (`make test-cuda`): what it does on a machine without a GPU.
mod benchmarks;
#[cfg(feature = "cuda")]
mod cuda;
mod exit_codes;
mod faults;
mod hardening;
mod loglik;
mod operate;
mod parallel;
mod preflight;
mod report;
mod run;
mod shards;
mod slurm;
mod slurm_scripts;
mod tokenizer_check;

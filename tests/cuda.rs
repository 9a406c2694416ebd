//! The CUDA build on a machine without a GPU or NVIDIA driver (`make test-cuda`; compiled only with
//! the `cuda` feature). llama.cpp's CUDA backend is a module beside the binary that fails to load
//! without `libcuda.so.1`: the binary starts, says why it sees no CUDA device, plans for the CPU and
//! answers on the CPU. On a machine with a GPU these checks do not apply and return early.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

fn has_gpu() -> bool {
    Path::new("/dev/nvidia0").exists()
}

#[test]
fn the_cuda_binary_links_no_driver_and_keeps_its_backends_beside_it() {
    let folder = Path::new(BIN).parent().expect("the binary's folder");
    for module in ["libggml-cuda.so", "libggml-cpu.so"] {
        assert!(
            folder.join(module).exists(),
            "{module} is loaded from beside the binary: missing in {}",
            folder.display()
        );
    }
    // The binary itself must not need the driver: only the CUDA module does.
    let needed = std::process::Command::new("ldd")
        .arg(BIN)
        .output()
        .expect("ldd runs");
    let text = String::from_utf8_lossy(&needed.stdout);
    assert!(!text.contains("libcuda.so"), "{text}");
    assert!(!text.contains("not found"), "{text}");
}

#[test]
fn without_a_gpu_preflight_says_no_cuda_device_and_plans_for_the_cpu() {
    if has_gpu() {
        return;
    }
    let output = cli(&["preflight", "--model", &smollm().display().to_string()]);
    let text = ok_stdout(&output);
    assert!(text.contains("no CUDA device ("), "{text}");
    assert!(text.contains("planned for the CPU"), "{text}");
    // The reason is the loader's: the driver library is what is missing.
    assert!(text.contains("libcuda.so.1"), "{text}");
    assert!(text.contains("flags     --n-gpu-layers 0"), "{text}");
    let json = ok_stdout(&cli(&[
        "preflight",
        "--model",
        &smollm().display().to_string(),
        "--json",
    ]));
    let v: Value = serde_json::from_str(&json).expect("preflight --json");
    assert_eq!(v.pointer("/estimate/gpu_peak"), Some(&Value::from(0)));
}

#[test]
fn without_a_gpu_n_gpu_layers_auto_runs_the_bundled_set_on_the_cpu() {
    if has_gpu() {
        return;
    }
    let dir = tempdir();
    let db = dir.path().join("cuda.db");
    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[
            "--limit",
            "4",
            "--max-tokens",
            "8",
            "--n-gpu-layers",
            "auto",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let (done, layers, reason): (i64, i64, String) = open(&db)
        .query_row(
            "SELECT s.done, json_extract(r.engine_json, '$.placement.gpu_layers'),
                    json_extract(r.engine_json, '$.placement.reason')
             FROM run_summary s JOIN runs r ON r.id = s.run_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((done, layers), (4, 0));
    assert!(reason.contains("no CUDA device"), "{reason}");
}

//! The Slurm scripts run directly, without Slurm's daemons: `shards.sbatch` and `merge.sbatch` are
//! bash that take their configuration and the array variables (`SLURM_ARRAY_*`) from the
//! environment, so each test sets those itself and runs them with the real binary on SmolLM2 over
//! a few questions. What they check is what the scripts may delete: never a result they published,
//! whatever `LOCAL_DIR` names.

use crate::util::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ARRAY_JOB: &str = "4242";
const SHARDS: u32 = 2;
const RUN_ARGS: &str = "--limit 4 --max-tokens 4 --ctx 512";

/// `scripts/slurm/NAME` with nothing of this process's environment but PATH and HOME (no cluster
/// variables, no LOCAL_DIR or TMPDIR of the caller), and then `vars`.
fn script(name: &str, vars: &[(&str, OsString)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(root().join("scripts/slurm").join(name))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("bash runs")
}

/// Where a test's results go, and the scratch directories around them. The output directory is
/// where shards.sbatch's default local directory would be with `TMPDIR=tmp` (the last way a
/// local directory can be the output directory).
struct Layout {
    _dir: tempfile::TempDir,
    tmp: PathBuf,
    out: PathBuf,
    /// A symbolic link to `out`.
    link: PathBuf,
    /// A local directory apart from `out`.
    local: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempdir();
        let tmp = dir.path().join("tmp");
        let out = tmp.join(format!("docent-eval-{ARRAY_JOB}"));
        std::fs::create_dir_all(&out).unwrap();
        let link = dir.path().join("link-to-out");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        let local = dir.path().join("local");
        Layout {
            tmp,
            out,
            link,
            local,
            _dir: dir,
        }
    }

    /// shards.sbatch as array task `k` of SHARDS; `local` is LOCAL_DIR (None: unset, so the
    /// default under TMPDIR applies).
    fn shard(&self, k: u32, local: Option<&Path>) -> Output {
        let mut vars = vec![
            ("DOCENT_BIN", OsString::from(BIN)),
            ("DOCENT_MODEL", smollm().into()),
            ("DOCENT_QUESTIONS", bundled_questions().into()),
            ("DOCENT_OUT", self.out.clone().into()),
            ("DOCENT_RUN_ARGS", RUN_ARGS.into()),
            ("SNAPSHOT_SECONDS", "0".into()),
            ("TMPDIR", self.tmp.clone().into()),
            ("SLURM_ARRAY_JOB_ID", ARRAY_JOB.into()),
            ("SLURM_ARRAY_TASK_ID", k.to_string().into()),
            ("SLURM_ARRAY_TASK_COUNT", SHARDS.to_string().into()),
            ("SLURM_ARRAY_TASK_MIN", "0".into()),
            ("SLURM_ARRAY_TASK_MAX", (SHARDS - 1).to_string().into()),
            ("SLURM_JOB_ID", format!("{ARRAY_JOB}{k}").into()),
        ];
        if let Some(local) = local {
            vars.push(("LOCAL_DIR", local.into()));
        }
        script("shards.sbatch", &vars)
    }

    /// merge.sbatch over the SHARDS shards in `out`, with `local` as LOCAL_DIR.
    fn merge(&self, local: &Path) -> Output {
        script(
            "merge.sbatch",
            &[
                ("DOCENT_BIN", BIN.into()),
                ("DOCENT_OUT", self.out.clone().into()),
                ("DOCENT_SHARDS", SHARDS.to_string().into()),
                ("LOCAL_DIR", local.into()),
                ("TMPDIR", self.tmp.clone().into()),
                ("SLURM_JOB_ID", "4300".into()),
            ],
        )
    }
}

/// Name → contents of every file under `dir` (what a refusal must leave as it was).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    found
}

fn both(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

#[test]
fn shards_sbatch_refuses_a_local_dir_that_is_the_output_dir_and_deletes_nothing() {
    let layout = Layout::new();
    // A finished shard in the output directory, as a first session of the task leaves it.
    let output = layout.shard(0, Some(&layout.local));
    assert_eq!(code(&output), 0, "{}", both(&output));
    let published = layout.out.join("shard-0.db");
    assert_eq!(answer_count(&published), 2, "{}", both(&output));
    let before = files(&layout.out);

    // LOCAL_DIR the output directory itself, a symbolic link to it, or unset with the default
    // under TMPDIR landing on it: the requeued task must not delete the shard it resumes.
    for (how, local) in [
        ("LOCAL_DIR=out", Some(layout.out.as_path())),
        ("LOCAL_DIR=link to out", Some(layout.link.as_path())),
        ("default local dir", None),
    ] {
        let output = layout.shard(0, local);
        assert!(
            published.exists(),
            "{how}: the shard was deleted: {}",
            both(&output)
        );
        assert_eq!(
            files(&layout.out),
            before,
            "{how}: the output directory changed"
        );
        assert_eq!(code(&output), 2, "{how}: {}", both(&output));
        assert!(
            both(&output).contains("is the output directory DOCENT_OUT"),
            "{how}: {}",
            both(&output)
        );
    }
}

#[test]
fn the_shards_and_the_merge_publish_their_results_wherever_local_dir_points() {
    let layout = Layout::new();
    for k in 0..SHARDS {
        let output = layout.shard(k, Some(&layout.local));
        assert_eq!(code(&output), 0, "shard {k}: {}", both(&output));
        assert!(layout.out.join(format!("shard-{k}.db")).exists());
    }
    // The local copies are gone once published, and their directory with them.
    assert!(!layout.local.exists(), "the local directory stayed");

    // The merge's scratch directory is its own whatever LOCAL_DIR names: the output directory, a
    // link to it, or a directory apart.
    let separate = layout.tmp.join("merge-scratch");
    for local in [&layout.out, &layout.link, &separate] {
        let output = layout.merge(local);
        assert_eq!(
            code(&output),
            0,
            "LOCAL_DIR={}: {}",
            local.display(),
            both(&output)
        );
        for name in [
            "all.db",
            "report.md",
            "report.html",
            "shard-0.db",
            "shard-1.db",
        ] {
            assert!(
                layout.out.join(name).exists(),
                "LOCAL_DIR={}: {name} is gone: {}",
                local.display(),
                both(&output)
            );
        }
        assert_eq!(answer_count(&layout.out.join("all.db")), 4);
        assert!(std::fs::read_to_string(layout.out.join("report.md"))
            .unwrap()
            .contains("### Shards"));
        // Nothing left of the scratch directory it made.
        let left: Vec<_> = std::fs::read_dir(local)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("docent-eval-merge-"))
            .collect();
        assert!(
            left.is_empty(),
            "scratch left in {}: {left:?}",
            local.display()
        );
    }
}

#[test]
fn submit_sh_refuses_a_local_dir_that_is_the_output_dir_before_submitting() {
    let layout = Layout::new();
    // An sbatch that only records that it was called (no Slurm needed, none reached).
    let bin = layout.tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let called = layout.tmp.join("sbatch-called");
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", called.display()),
    )
    .unwrap();
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = OsString::from(&bin);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());

    for local in [&layout.out, &layout.link] {
        let output = Command::new(root().join("scripts/slurm/submit.sh"))
            .args(["--bin", BIN, "--shards", "2", "--gpus-per-task", "0"])
            .arg("--model")
            .arg(smollm())
            .arg("--questions")
            .arg(bundled_questions())
            .arg("--out")
            .arg(&layout.out)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("LOCAL_DIR", local)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&output), 2, "{}", both(&output));
        assert!(
            stderr(&output).contains("is the output directory"),
            "{}",
            both(&output)
        );
        assert!(!called.exists(), "sbatch was called");
    }
}

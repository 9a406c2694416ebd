//! The Slurm scripts on a real one-node Slurm cluster, not a mock: `scripts/slurm/cluster.sh`
//! starts munged, slurmctld and slurmd (as root; `make slurm-deps` installs Debian's packages),
//! `scripts/slurm/test-array.sh` submits a 4-task job array over the bundled set with its chained
//! merge, requeues one task mid-run, and waits. The checks are here. Where the daemons cannot
//! start (not root, no packages), the test says why and passes without checking anything, unless
//! REQUIRE_SLURM is set.

use crate::util::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A cluster started for one test, on its own ports and directory, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start it, or say why it cannot start.
    fn start() -> Result<Cluster, String> {
        if is_root() != Some(true) {
            return Err("the Slurm daemons need root".into());
        }
        let dir = tempdir();
        let output = Self::script("start", dir.path())
            .output()
            .map_err(|e| format!("cannot run cluster.sh: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cluster.sh start failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(Cluster { dir })
    }

    fn script(command: &str, dir: &Path) -> Command {
        let mut script = Command::new(root().join("scripts/slurm/cluster.sh"));
        // Ports of its own, so that a cluster someone runs on the defaults is left alone.
        script
            .args([command, &dir.display().to_string()])
            .env("SLURMCTLD_PORT", "6917")
            .env("SLURMD_PORT", "6918");
        script
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::script("stop", self.dir.path()).output();
    }
}

/// Whether this process runs as root (`id -u`).
fn is_root() -> Option<bool> {
    let output = Command::new("id").arg("-u").output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// question id → (status, answer, finished_at) of every answer in `db` (all runs).
fn committed(db: &Path) -> BTreeMap<String, (String, Option<String>, Option<String>)> {
    let connection = open(db);
    let mut statement = connection
        .prepare("SELECT question_id, status, answer, finished_at FROM answers")
        .unwrap();
    let rows = statement
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

#[test]
fn a_slurm_array_with_a_requeued_task_and_its_chained_merge_loses_nothing() {
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        // REQUIRE_SLURM=1 (a machine known to run the daemons) turns the skip into a failure.
        Err(reason) if std::env::var_os("REQUIRE_SLURM").is_none() => {
            eprintln!("SKIPPED: no Slurm cluster here: {reason}");
            return;
        }
        Err(reason) => panic!("REQUIRE_SLURM is set, but {reason}"),
    };
    let work = tempdir();
    let run_args = ["--max-tokens", "24", "--parallel", "2"];
    let output = Command::new(root().join("scripts/slurm/test-array.sh"))
        .arg(BIN)
        .arg(smollm())
        .arg(bundled_questions())
        .arg(work.path())
        .arg("--")
        .args(run_args)
        .env("SLURM_CONF", cluster.conf())
        .env("REQUEUE_AT", "3")
        .env("TIMEOUT", "1200")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let facts: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        facts.get("result"),
        Some(&"ok"),
        "{text}\n{}",
        stderr(&output)
    );
    assert_eq!(
        facts["requeued_state_before"], "RUNNING",
        "requeued mid-run"
    );
    let requeued = facts["requeued_task"];
    let restarts: u32 = facts[format!("task_{requeued}_restarts").as_str()]
        .parse()
        .unwrap();
    assert!(restarts >= 1, "the requeued task did not run again");

    // The requeued shard resumed its run: the rows it had committed are there, unchanged, and
    // its run counts a second session.
    let shard_db = PathBuf::from(facts[format!("task_{requeued}_db").as_str()]);
    let before = committed(Path::new(facts["requeued_snapshot"]));
    assert!(
        before.len() >= 3,
        "{} rows before the requeue",
        before.len()
    );
    let all_db = PathBuf::from(facts["all_db"]);
    let merged = committed(&all_db);
    for (id, row) in &before {
        assert_eq!(
            merged.get(id),
            Some(row),
            "{id} lost or changed by the requeue"
        );
    }
    let sessions: i64 = open(&shard_db)
        .query_row("SELECT sessions FROM runs", [], |r| r.get(0))
        .unwrap();
    assert!(
        sessions >= 2,
        "the requeued shard started over ({sessions} session)"
    );

    // Every question exactly once, with the ids and statuses of an unsharded run.
    let whole = work.path().join("whole.db");
    let output = run(&smollm(), &bundled_questions(), &whole, &run_args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let unsharded = committed(&whole);
    assert_eq!(merged.len(), 60);
    let statuses = |rows: &BTreeMap<String, (String, Option<String>, Option<String>)>| {
        rows.iter()
            .map(|(id, row)| (id.clone(), row.0.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(&merged), statuses(&unsharded));

    // The chained merge wrote the report; merging the same shards again changes nothing.
    assert!(std::fs::read_to_string(facts["report_md"])
        .unwrap()
        .contains("### Shards"));
    let before_again = dump(&all_db);
    let mut args = vec![
        "merge".to_string(),
        "--into".into(),
        all_db.display().to_string(),
    ];
    args.extend((0..4).map(|k| facts[format!("task_{k}_db").as_str()].to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = cli(&args);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(dump(&all_db), before_again, "a second merge changed all.db");
}

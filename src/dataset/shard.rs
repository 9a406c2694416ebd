//! Shards: which questions of a set one process of a cluster job answers (`run --shard K/N`).
//!
//! Every question gets a key — its id, or with `--shard-key context` its passage, so questions
//! sharing a passage stay together and keep their prefix reuse — and every key a SHA-256 hash.
//! Groups of questions with the same key are dealt to shards largest first, in hash order, each
//! to the shard holding the fewest questions so far. The partition therefore depends only on the
//! set of (key, id) pairs: not on the file's order, the machine, or the Rust release (SHA-256,
//! never `DefaultHasher`), and shards differ by at most one group in size.

use crate::dataset::{hex_sha256, Question};
use crate::error::{usage, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// What a question's shard is chosen by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ShardKey {
    /// The question id: the most even split.
    #[default]
    Id,
    /// The passage (`context`): questions on one passage share a shard; questions without a
    /// passage are split by id.
    Context,
}

impl std::fmt::Display for ShardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardKey::Id => "id",
            ShardKey::Context => "context",
        })
    }
}

/// One shard of N, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardIndex {
    /// This shard.
    pub index: u32,
    /// How many shards the set is split into.
    pub count: u32,
}

impl std::fmt::Display for ShardIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--shard` as given: `K/N`, or `auto` (from the cluster's environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `K/N`.
    Fixed(ShardIndex),
    /// `auto`: a Slurm array task or a Kubernetes Indexed Job pod.
    Auto,
}

impl std::str::FromStr for ShardArg {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(ShardArg::Auto);
        }
        let bad = || format!("`{text}` is not K/N (0-based, e.g. 0/4) or auto");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(format!(
                "`{text}`: K must be below N and N at least 1 (shards are numbered 0 to N-1)"
            ));
        }
        Ok(ShardArg::Fixed(ShardIndex { index, count }))
    }
}

/// Resolve `--shard` (and `--shards` for Kubernetes) to one shard. `env` reads a variable of the
/// process environment (a parameter so that tests give their own).
pub fn resolve(
    arg: ShardArg,
    shards: Option<u32>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ShardIndex> {
    match arg {
        ShardArg::Fixed(shard) => match shards.filter(|&n| n != shard.count) {
            Some(n) => Err(usage(format!(
                "--shards {n} disagrees with --shard {shard}; --shards is only for --shard auto"
            ))),
            None => Ok(shard),
        },
        ShardArg::Auto => match (env("SLURM_ARRAY_TASK_ID"), env("JOB_COMPLETION_INDEX")) {
            (Some(task), _) => from_slurm(&task, shards, &env),
            (None, Some(index)) => from_indexed_job(&index, shards),
            (None, None) => Err(usage(
                "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array task) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give --shard K/N",
            )),
        },
    }
}

/// A Slurm array task: K counts tasks from the array's first index in its step, N is the task
/// count. An array with gaps (`--array=0,2,5`) is refused: its shards would not cover the set.
fn from_slurm(
    task: &str,
    shards: Option<u32>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ShardIndex> {
    let number = |name: &str| -> Result<u32> {
        let text = env(name).ok_or_else(|| {
            usage(format!(
                "--shard auto: SLURM_ARRAY_TASK_ID is set but {name} is not; run under sbatch --array"
            ))
        })?;
        text.trim().parse().map_err(|_| {
            usage(format!(
                "--shard auto: {name}={text} is not a number; run under sbatch --array=0-(N-1)"
            ))
        })
    };
    let id: u32 = task.trim().parse().map_err(|_| {
        usage(format!(
            "--shard auto: SLURM_ARRAY_TASK_ID={task} is not a number"
        ))
    })?;
    let (count, min, max) = (
        number("SLURM_ARRAY_TASK_COUNT")?,
        number("SLURM_ARRAY_TASK_MIN")?,
        number("SLURM_ARRAY_TASK_MAX")?,
    );
    let step = match env("SLURM_ARRAY_TASK_STEP") {
        None => 1,
        Some(text) => match text.trim().parse::<u32>() {
            Ok(step) if step > 0 => step,
            _ => {
                return Err(usage(format!(
                    "--shard auto: SLURM_ARRAY_TASK_STEP={text} is not a positive number; run under sbatch --array=0-(N-1)"
                )))
            }
        },
    };
    // In u64, so that hostile values cannot overflow.
    let (id, count, min, max, step) = (
        u64::from(id),
        u64::from(count),
        u64::from(min),
        u64::from(max),
        u64::from(step),
    );
    let covers = count >= 1
        && min <= id
        && id <= max
        && (max - min).is_multiple_of(step)
        && (id - min).is_multiple_of(step)
        && (max - min) / step + 1 == count;
    if !covers {
        return Err(usage(format!(
            "--shard auto: Slurm array task {id} of {count} tasks between {min} and {max} (step {step}) does not number the tasks 0 to N-1 without gaps, so the shards would not cover the set; submit it as --array=0-{} (a %limit is fine)",
            count.saturating_sub(1)
        )));
    }
    let (index, count) = ((id - min) / step, count);
    if let Some(n) = shards.filter(|&n| u64::from(n) != count) {
        return Err(usage(format!(
            "--shards {n} disagrees with the Slurm array's {count} tasks; drop --shards under Slurm"
        )));
    }
    // Both fit: index < count, and count is a u32 environment value.
    Ok(ShardIndex {
        index: index as u32,
        count: count as u32,
    })
}

/// A Kubernetes Indexed Job pod: K is JOB_COMPLETION_INDEX, N comes from `--shards` (the Job's
/// `completions`, which Kubernetes does not pass to the pod).
fn from_indexed_job(index: &str, shards: Option<u32>) -> Result<ShardIndex> {
    let count = shards.ok_or_else(|| {
        usage("--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job); give --shards N with the Job's completions")
    })?;
    let index: u32 = index.trim().parse().map_err(|_| {
        usage(format!(
            "--shard auto: JOB_COMPLETION_INDEX={index} is not a number"
        ))
    })?;
    if count == 0 || index >= count {
        return Err(usage(format!(
            "--shard auto: JOB_COMPLETION_INDEX={index} is not below --shards {count}; set --shards to the Job's completions"
        )));
    }
    Ok(ShardIndex { index, count })
}

/// The shard (0..count) of every question of the set, in the set's order.
pub fn partition(questions: &[Question], key: ShardKey, count: u32) -> Vec<u32> {
    let groups = groups(questions, key);
    let mut order: Vec<(&[u8; 32], &Vec<usize>)> = groups.iter().collect();
    // Largest groups first (they are the hard ones to balance), then by hash: no input order.
    order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    // The lightest shard, ties to the lowest index. Only the first `groups` shards can receive a
    // group, so a huge N (a typo) costs nothing.
    let used = (count.max(1) as usize).min(order.len().max(1));
    let mut lightest: BinaryHeap<Reverse<(usize, u32)>> =
        (0..used as u32).map(|s| Reverse((0, s))).collect();
    let mut shard_of = vec![0u32; questions.len()];
    for (_, members) in order {
        let Some(Reverse((load, shard))) = lightest.pop() else {
            break;
        };
        for &i in members {
            shard_of[i] = shard;
        }
        lightest.push(Reverse((load + members.len(), shard)));
    }
    shard_of
}

/// Questions grouped by the SHA-256 of their key. A group's hash is that of its key, so the
/// grouping is the same whatever the order of the file.
fn groups(questions: &[Question], key: ShardKey) -> BTreeMap<[u8; 32], Vec<usize>> {
    let mut groups: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    for (i, q) in questions.iter().enumerate() {
        // Domain prefixes keep a passage from ever colliding with an id of the same text.
        let text = match (key, q.context.as_deref().filter(|c| !c.trim().is_empty())) {
            (ShardKey::Context, Some(context)) => format!("context\0{context}"),
            _ => format!("id\0{}", q.id),
        };
        groups
            .entry(Sha256::digest(text.as_bytes()).into())
            .or_default()
            .push(i);
    }
    groups
}

/// A shard as stored with its run (`config_json`, part of the run identity). A merged run keeps
/// `count` and `key` and has no `index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// This shard, 0-based; `None` in a run merged from every shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Shards the set is split into.
    pub count: u32,
    /// What the split is by.
    pub key: ShardKey,
    /// [`ids_sha256`] of the shard's questions (`None` in a merged run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids_sha256: Option<String>,
    /// Host the shard was started on (recorded, not compared: a requeued task may land on
    /// another node and resume from a copied database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl ShardSpec {
    /// What every shard of one split has in common: the identity `merge` matches runs by.
    pub fn split(&self) -> ShardSpec {
        ShardSpec {
            index: None,
            count: self.count,
            key: self.key,
            ids_sha256: None,
            host: None,
        }
    }

    /// `2/4 by id`, or `merged from 4 by id`.
    pub fn label(&self) -> String {
        match self.index {
            Some(index) => format!("shard {index}/{} by {}", self.count, self.key),
            None => format!("merged from {} shards by {}", self.count, self.key),
        }
    }
}

/// sha256 of a shard's question ids, sorted and newline-separated: what a shard stores so that a
/// merge can tell two copies of the same shard from two different selections.
pub fn ids_sha256<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    hex_sha256(ids.join("\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn questions(n: usize) -> Vec<Question> {
        (1..=n)
            .map(|i| Question {
                id: format!("q{i}"),
                ordinal: i,
                question: format!("question {i}"),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn shard_arg_parses_k_of_n_and_auto() {
        assert_eq!(
            "2/4".parse::<ShardArg>(),
            Ok(ShardArg::Fixed(ShardIndex { index: 2, count: 4 }))
        );
        assert_eq!("AUTO".parse::<ShardArg>(), Ok(ShardArg::Auto));
        assert!(resolve(
            ShardArg::Fixed(ShardIndex { index: 1, count: 4 }),
            Some(8),
            |_| None
        )
        .is_err());
        for bad in ["4/4", "1/0", "x/4", "3", "-1/4", ""] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_partition_is_pinned() {
        // Golden values, computed independently in Python (sort by sha256(b"id\0" + id), deal
        // round-robin): a change here moves questions between shards of runs already started,
        // which `merge` would then refuse. Change it only with a new shard-key name.
        let shards = partition(&questions(12), ShardKey::Id, 4);
        assert_eq!(shards, vec![2, 2, 3, 0, 3, 1, 2, 0, 3, 1, 0, 1]);
    }

    #[test]
    fn the_partition_ignores_file_order() {
        let set = questions(500);
        let forward = partition(&set, ShardKey::Id, 4);
        let mut reversed = set.clone();
        reversed.reverse();
        let backward = partition(&reversed, ShardKey::Id, 4);
        for (i, q) in set.iter().enumerate() {
            let j = reversed.iter().position(|r| r.id == q.id).unwrap();
            assert_eq!(forward[i], backward[j], "{}", q.id);
        }
        assert_eq!(
            forward,
            partition(&set, ShardKey::Id, 4),
            "stable across calls"
        );
    }

    #[test]
    fn two_thousand_ids_split_evenly_in_four() {
        let shards = partition(&questions(2000), ShardKey::Id, 4);
        let mut sizes = [0usize; 4];
        for s in shards {
            sizes[s as usize] += 1;
        }
        assert_eq!(sizes, [500, 500, 500, 500]);
        let shards = partition(&questions(2003), ShardKey::Id, 4);
        let mut sizes = [0usize; 4];
        for s in shards {
            sizes[s as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| n == 500 || n == 501), "{sizes:?}");
    }

    #[test]
    fn a_passage_keeps_its_questions_together_and_shards_stay_balanced() {
        let mut set = questions(2000);
        for (i, q) in set.iter_mut().enumerate() {
            // 400 passages of 5 questions, and every 7th question without a passage.
            if i % 7 != 0 {
                q.context = Some(format!("passage {}", i / 5));
            }
        }
        let shards = partition(&set, ShardKey::Context, 4);
        let mut passage_shard = std::collections::HashMap::new();
        for (q, &s) in set.iter().zip(&shards) {
            if let Some(c) = &q.context {
                assert_eq!(*passage_shard.entry(c.clone()).or_insert(s), s, "{c}");
            }
        }
        let mut sizes = [0i64; 4];
        for s in shards {
            sizes[s as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| (n - 500).abs() <= 25), "{sizes:?}");
    }

    #[test]
    fn more_shards_than_questions_leaves_shards_empty() {
        let shards = partition(&questions(3), ShardKey::Id, 8);
        let mut seen = shards.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 3, "each question in its own shard: {shards:?}");
        assert!(partition(&[], ShardKey::Id, 4).is_empty());
        let huge = partition(&questions(5), ShardKey::Id, u32::MAX);
        assert_eq!(
            huge,
            partition(&questions(5), ShardKey::Id, 5),
            "instant, and the same"
        );
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn slurm(
        id: &str,
        count: &str,
        min: &str,
        max: &str,
        step: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("SLURM_ARRAY_TASK_ID", id.into()),
            ("SLURM_ARRAY_TASK_COUNT", count.into()),
            ("SLURM_ARRAY_TASK_MIN", min.into()),
            ("SLURM_ARRAY_TASK_MAX", max.into()),
            ("SLURM_ARRAY_TASK_STEP", step.into()),
        ]
    }

    fn auto(vars: &[(&'static str, String)], shards: Option<u32>) -> Result<ShardIndex> {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        resolve(ShardArg::Auto, shards, env(&pairs))
    }

    #[test]
    fn auto_reads_slurm_arrays_and_indexed_jobs() {
        let shard = auto(&slurm("2", "4", "0", "3", "1"), None).unwrap();
        assert_eq!(shard, ShardIndex { index: 2, count: 4 });
        // --array=1-4 and --array=0-6:2 count tasks from MIN in steps of STEP.
        let shard = auto(&slurm("1", "4", "1", "4", "1"), None).unwrap();
        assert_eq!(shard, ShardIndex { index: 0, count: 4 });
        let shard = auto(&slurm("4", "4", "0", "6", "2"), None).unwrap();
        assert_eq!(shard, ShardIndex { index: 2, count: 4 });
        let k8s = [("JOB_COMPLETION_INDEX", "3".to_string())];
        assert_eq!(
            auto(&k8s, Some(5)).unwrap(),
            ShardIndex { index: 3, count: 5 }
        );
    }

    #[test]
    fn auto_refuses_what_would_not_cover_the_set() {
        type Vars = Vec<(&'static str, String)>;
        let cases: Vec<(Vars, Option<u32>, &str)> = vec![
            (slurm("5", "3", "0", "5", "1"), None, "gaps"), // --array=0,2,5
            (slurm("3", "2", "0", "6", "2"), None, "gaps"), // an id off the step
            (slurm("1", "4", "0", "3", "1"), Some(8), "disagrees"),
            (
                vec![("JOB_COMPLETION_INDEX", "1".into())],
                None,
                "--shards N",
            ),
            (
                vec![("JOB_COMPLETION_INDEX", "4".into())],
                Some(4),
                "not below",
            ),
            (vec![], None, "neither"),
            (slurm("10", "4", "0", "3", "1"), None, "gaps"), // an id past MAX
            (slurm("0", "0", "0", "4294967295", "1"), None, "gaps"), // would overflow
            (slurm("1", "4", "0", "3", "x"), None, "STEP=x"),
        ];
        for (vars, shards, expected) in cases {
            let message = auto(&vars, shards).unwrap_err().to_string();
            assert!(message.contains(expected), "{vars:?}: {message}");
        }
    }

    #[test]
    fn ids_hash_ignores_order() {
        assert_eq!(ids_sha256(["b", "a"]), ids_sha256(["a", "b"]));
        assert_ne!(ids_sha256(["a"]), ids_sha256(["a", "b"]));
    }
}

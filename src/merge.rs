//! `merge --into all.db SHARD.db ...`: the databases of a run's shards (`run --shard K/N`),
//! one run in the merged database, as named steps: read every shard run → check they are shards
//! of one run (identity, partition, each holding its own shard's questions) → find or create the
//! merged run → merge each shard run in its own transaction → name every question still
//! missing, by shard.
//!
//! Runs are matched by identity (model hash, question-set hash, every setting that shapes an
//! answer, shard count and key), never by `runs.id`. Merging is idempotent: merging a shard
//! again changes nothing unless it has answers the merged run lacks, or an `ok` answer where the
//! merged run holds an `error`.

use crate::config::{GenerationSettings, RunIdentity};
use crate::dataset::shard::{ShardKey, ShardSpec};
use crate::error::{exit_code, usage, Result};
use crate::store::{MergeableRun, PartCounts, PlannedQuestion, Store};
use crate::units::{printable, Lines};
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most missing ids listed per shard in the text summary (`--json` lists all).
const LISTED_MISSING: usize = 20;

/// One shard run found in a shard database.
struct Part {
    source: PathBuf,
    run: MergeableRun,
    shard: ShardSpec,
    plan: Vec<PlannedQuestion>,
    question_ids: BTreeSet<String>,
}

/// What merging one shard run did.
#[derive(Debug, Clone, Serialize)]
pub struct MergedPart {
    /// The database it came from.
    pub source: String,
    /// Its shard.
    pub shard_index: u32,
    /// Where it ran.
    pub host: String,
    /// Its status when merged.
    pub status: String,
    /// Questions of the shard.
    pub questions: i64,
    /// Answers it added, replaced and left unchanged.
    #[serde(flatten)]
    pub counts: PartCounts,
}

/// The questions of one shard the merged run has no answer for.
#[derive(Debug, Clone, Serialize)]
pub struct MissingShard {
    /// The shard.
    pub shard_index: u32,
    /// The databases given for it (none: the shard was not given at all).
    pub sources: Vec<String>,
    /// Every missing question id, in file order.
    pub ids: Vec<String>,
}

/// How a merge ended.
#[derive(Debug, Clone, Serialize)]
pub struct MergeOutcome {
    /// The merged database.
    pub into: String,
    /// The merged run in it.
    pub run_id: i64,
    /// Shards the set is split into.
    pub shard_count: u32,
    /// What the split is by.
    pub shard_key: ShardKey,
    /// Every shard run merged.
    pub parts: Vec<MergedPart>,
    /// Questions in the whole set.
    pub questions: usize,
    /// Questions without a complete answer, by shard.
    pub missing: Vec<MissingShard>,
    /// `error` answers in the merged run.
    pub errors: usize,
    /// 0 complete, 1 complete with `error` answers, 3 questions missing.
    pub exit_code: u8,
}

/// Merge the shard databases `shards` into `into`.
pub fn merge(into: &Path, shards: &[PathBuf]) -> Result<MergeOutcome> {
    refuse_merging_into_a_shard(into, shards)?;
    let parts = read_parts(shards)?;
    let (identity, split) = common_identity(&parts)?;
    check_partition(&parts)?;
    let store = Store::open(into)?;
    let run_id = merged_run(&store, &parts, &identity)?;
    let mut merged = Vec::with_capacity(parts.len());
    for part in &parts {
        merged.push(merge_part(&store, run_id, part)?);
    }
    let missing = missing_by_shard(&store, run_id, &parts)?;
    let errors = store
        .run_summary(run_id)?
        .map_or(0, |s| usize::try_from(s.errors).unwrap_or(0));
    if let Err(e) = store.checkpoint() {
        log::warn!("could not checkpoint {} ({e:#})", into.display());
    }
    let exit_code = match (missing.is_empty(), errors) {
        (false, _) => exit_code::STOPPED,
        (true, 0) => exit_code::OK,
        (true, _) => exit_code::SOME_FAILED,
    };
    Ok(MergeOutcome {
        into: into.display().to_string(),
        run_id,
        shard_count: split.count,
        shard_key: split.key,
        parts: merged,
        questions: parts[0].plan.len(),
        missing,
        errors,
        exit_code,
    })
}

/// The merged database must not be one of the shards, by any name (another spelling, a symbolic
/// or hard link: the same device and inode), nor any database that holds a shard run
/// (`--into out/shard-*.db` makes shard 0 the target): merging would write into a shard, and a
/// requeued task could no longer resume it. Checked before anything is written.
fn refuse_merging_into_a_shard(into: &Path, shards: &[PathBuf]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let file_id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let Some(target) = file_id(into) else {
        return Ok(()); // a new file is none of the shards
    };
    if let Some(shard) = shards.iter().find(|s| file_id(s) == Some(target)) {
        return Err(usage(format!(
            "--into {} is also given as a shard ({}); merge into a new file",
            into.display(),
            shard.display()
        )));
    }
    let Some(store) = Store::open_read_only_if_any(into)? else {
        return Ok(());
    };
    let shard_run = store.mergeable_runs()?.into_iter().find_map(|run| {
        let shard = run.settings?.shard?;
        shard.index.is_some().then(|| (run.run_id, shard.label()))
    });
    match shard_run {
        Some((run_id, label)) => Err(usage(format!(
            "--into {}: holds run {run_id}, a shard's run ({label}), so it is a shard database (did a pattern like shard-*.db make it the target?); it is left untouched. Merge into a new file",
            into.display()
        ))),
        None => Ok(()),
    }
}

/// Every shard run of every shard database, read-only, with its partition and question ids.
fn read_parts(shards: &[PathBuf]) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    for source in shards {
        let store = Store::open_read_only(source)?;
        let before = parts.len();
        for run in store.mergeable_runs()? {
            let Some(shard) = run.settings.as_ref().and_then(|s| s.shard.clone()) else {
                continue;
            };
            if shard.index.is_none() {
                continue; // a merged run: merge shards, not merges
            }
            parts.push(Part {
                source: source.clone(),
                plan: store.shard_plan(run.run_id)?,
                question_ids: store.question_ids(run.run_id)?.into_iter().collect(),
                shard,
                run,
            });
        }
        if parts.len() == before {
            return Err(usage(format!(
                "{}: holds no shard run (it was written without `run --shard K/N`); give the databases of a run's shards",
                source.display()
            )));
        }
    }
    Ok(parts)
}

/// The identity every part shares, with the split it belongs to; refused, naming each
/// difference, when two parts are shards of different runs or of different splits.
fn common_identity(parts: &[Part]) -> Result<(RunIdentity, ShardSpec)> {
    let first = &parts[0];
    let identity = split_identity(first)?;
    for part in &parts[1..] {
        let other = split_identity(part)?;
        let differences = identity.differences(&other);
        if differences.is_empty() {
            continue;
        }
        let kind = if part.shard.split() != first.shard.split() && differences.len() == 1 {
            "are shards of different splits, so their questions overlap"
        } else {
            "are shards of different runs"
        };
        return Err(usage(format!(
            "{} ({}) and {} ({}) {kind}:\n{}\nMerge the shards of one run (same model, question file, settings, shard count and key) into one database",
            first.source.display(),
            first.shard.label(),
            part.source.display(),
            part.shard.label(),
            differences.join("\n")
        )));
    }
    Ok((identity, first.shard.split()))
}

/// A part's identity with its shard reduced to the split (count and key).
fn split_identity(part: &Part) -> Result<RunIdentity> {
    let settings = part.run.settings.clone().ok_or_else(|| {
        usage(format!(
            "{}: run {} has settings this docent-eval cannot read; merge with the docent-eval that wrote it",
            part.source.display(),
            part.run.run_id
        ))
    })?;
    Ok(RunIdentity {
        model_sha256: part.run.model_sha256.clone(),
        questions_sha256: part.run.questions_sha256.clone(),
        settings: GenerationSettings {
            shard: Some(part.shard.split()),
            ..settings
        },
    })
}

/// Every part carries the same partition of the set, and holds exactly its own shard's
/// questions: two parts of different shards can then never hold the same question.
fn check_partition(parts: &[Part]) -> Result<()> {
    let first = &parts[0];
    for part in parts {
        if part.plan != first.plan {
            return Err(usage(format!(
                "{} and {} split the question set differently (written by different docent-eval versions?); run every shard with one version",
                first.source.display(),
                part.source.display()
            )));
        }
        let index = part.shard.index.unwrap_or_default();
        if index >= part.shard.count {
            return Err(usage(format!(
                "{}: shard {index} of {} does not exist; it was not written by `run --shard`",
                part.source.display(),
                part.shard.count
            )));
        }
        let own: BTreeSet<String> = part
            .plan
            .iter()
            .filter(|q| q.shard_index == index)
            .map(|q| q.question_id.clone())
            .collect();
        if own != part.question_ids {
            let stray = part.question_ids.difference(&own).next();
            return Err(usage(format!(
                "{} ({}): its questions are not its shard's{}; it overlaps other shards and is refused",
                part.source.display(),
                part.shard.label(),
                stray.map_or(String::new(), |id| format!(" (e.g. `{id}`)"))
            )));
        }
    }
    Ok(())
}

/// The merged run for this identity in `store`, created from the first part if there is none
/// yet. Its partition must be the parts' own.
fn merged_run(store: &Store, parts: &[Part], identity: &RunIdentity) -> Result<i64> {
    let existing = store.merged_run_id(
        &identity.model_sha256,
        &identity.questions_sha256,
        &identity.settings,
    )?;
    let Some(run_id) = existing else {
        let run_id = store.create_merged_run(&parts[0].run, &identity.settings, &parts[0].plan)?;
        log::info!("created merged run {run_id} in {}", store.path().display());
        return Ok(run_id);
    };
    if store.shard_plan(run_id)? != parts[0].plan {
        return Err(usage(format!(
            "{}: merged run {run_id} splits the question set differently from {}; merge into a new file",
            store.path().display(),
            parts[0].source.display()
        )));
    }
    log::info!(
        "adding to merged run {run_id} in {}",
        store.path().display()
    );
    Ok(run_id)
}

fn merge_part(store: &Store, run_id: i64, part: &Part) -> Result<MergedPart> {
    let index = part.shard.index.unwrap_or_default();
    let counts = store
        .merge_part(run_id, &part.source, &part.run, index)
        .with_context(|| {
            format!(
                "merging {} ({}); the shards merged before it stay merged, and merging again continues",
                part.source.display(),
                part.shard.label()
            )
        })?;
    log::debug!(
        "{} ({}, host {}, {}): {} answers added, {} errors replaced by ok, {} unchanged",
        part.source.display(),
        part.shard.label(),
        part.run.host,
        part.run.status,
        counts.added,
        counts.replaced_errors,
        counts.unchanged
    );
    Ok(MergedPart {
        source: part.source.display().to_string(),
        shard_index: index,
        host: part.run.host.clone(),
        status: part.run.status.to_string(),
        questions: part.run.question_count,
        counts,
    })
}

/// The merged run's missing questions grouped by shard, each with the databases given for it.
fn missing_by_shard(store: &Store, run_id: i64, parts: &[Part]) -> Result<Vec<MissingShard>> {
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for q in store.missing_questions(run_id)? {
        by_shard
            .entry(q.shard_index)
            .or_default()
            .push(q.question_id);
    }
    Ok(by_shard
        .into_iter()
        .map(|(shard_index, ids)| MissingShard {
            shard_index,
            sources: parts
                .iter()
                .filter(|p| p.shard.index == Some(shard_index))
                .map(|p| p.source.display().to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            ids,
        })
        .collect())
}

impl MergeOutcome {
    /// The summary for a person: one line per shard run, then what is missing, by shard. Paths,
    /// host names and question ids come from files the tool does not trust: each is shown with
    /// its control characters escaped.
    pub fn text(&self) -> String {
        let shown = |text: &str| printable(text, Lines::Escape).into_owned();
        let mut text = String::new();
        for p in &self.parts {
            text.push_str(&format!(
                "{}: shard {}/{} on {} ({}, {} questions): {} added, {} errors replaced, {} unchanged\n",
                shown(&p.source),
                p.shard_index,
                self.shard_count,
                if p.host.is_empty() { "?".to_string() } else { shown(&p.host) },
                shown(&p.status),
                p.questions,
                p.counts.added,
                p.counts.replaced_errors,
                p.counts.unchanged
            ));
        }
        let missing: usize = self.missing.iter().map(|m| m.ids.len()).sum();
        text.push_str(&format!(
            "{} run {}: {} of {} questions answered ({} errors), {} shards by {}\n",
            shown(&self.into),
            self.run_id,
            self.questions - missing,
            self.questions,
            self.errors,
            self.shard_count,
            self.shard_key
        ));
        for m in &self.missing {
            let from = if m.sources.is_empty() {
                "no database given for it".to_string()
            } else {
                let sources: Vec<String> = m.sources.iter().map(|s| shown(s)).collect();
                format!("in {}", sources.join(", "))
            };
            let listed: Vec<String> = m
                .ids
                .iter()
                .take(LISTED_MISSING)
                .map(|id| shown(id))
                .collect();
            let more = m.ids.len().saturating_sub(LISTED_MISSING);
            text.push_str(&format!(
                "missing from shard {} ({from}): {} questions: {}{}\n",
                m.shard_index,
                m.ids.len(),
                listed.join(", "),
                if more > 0 {
                    format!(" and {more} more (`merge --json` lists all)")
                } else {
                    String::new()
                }
            ));
        }
        if !self.missing.is_empty() {
            text.push_str("incomplete: run the missing shards (with --resume) and merge again\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_probe::property_config;
    use crate::dataset::shard::ShardKey;
    use crate::dataset::Question;
    use crate::record::HostRecord;
    use crate::store::{AnswerRow, Holder, NewRun, RunStatus};
    use std::collections::BTreeSet;
    use std::os::unix::ffi::OsStrExt;

    /// Suffixes of question ids and host names as a hostile or careless file may hold them.
    const HOSTILE: [&str; 8] = [
        "",
        "'; DROP TABLE answers; --",
        "\u{1b}[31m",
        "질문",
        "%3F?#",
        "\"",
        "\u{202e}",
        "\n",
    ];

    /// splitmix64: the case is drawn from one seed, so a failure names the seed that repeats it.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % n.max(1) as u64) as usize
        }

        fn hostile(&mut self) -> &'static str {
            HOSTILE[self.below(HOSTILE.len())]
        }
    }

    fn shard_settings(index: u32, count: u32) -> GenerationSettings {
        GenerationSettings {
            shard: Some(ShardSpec {
                index: Some(index),
                count,
                key: ShardKey::Id,
                ids_sha256: None,
                host: None,
            }),
            ..GenerationSettings::default()
        }
    }

    /// An answer whose every field follows from its id and status, as greedy decoding of one
    /// model would give in any shard run.
    fn answer(id: &str, ok: bool) -> AnswerRow {
        AnswerRow {
            question_id: id.to_string(),
            ok,
            answer: ok.then(|| format!("answer to {id}")),
            error: (!ok).then(|| "out of memory".to_string()),
            latency_ms: Some(id.len() as f64),
            ..AnswerRow::default()
        }
    }

    /// Shard `shard` of `plan` run on `host`, committing `answers` in order: the copies of its
    /// database taken before the first answer and after each, then the ended run's.
    fn shard_run(
        dir: &Path,
        name: &str,
        plan: &[PlannedQuestion],
        (shard, count): (u32, u32),
        host: &str,
        answers: &[(String, bool)],
    ) -> Vec<PathBuf> {
        let path = dir.join(format!("{name}.db"));
        let mut store = Store::open(&path).unwrap();
        let questions: Vec<Question> = plan
            .iter()
            .filter(|q| q.shard_index == shard)
            .map(|q| Question {
                id: q.question_id.clone(),
                ordinal: q.ordinal as usize,
                question: format!("question {}", q.question_id),
                ..Question::default()
            })
            .collect();
        let host = HostRecord {
            hostname: Some(host.to_string()),
            ..HostRecord::default()
        };
        let run_id = store
            .create_run(&NewRun {
                model_path: "m.gguf",
                model_name: "m",
                model_size_bytes: 1,
                model_sha256: "x",
                questions_path: "q.jsonl",
                questions_sha256: "y",
                settings: &shard_settings(shard, count),
                host: &host,
                questions: &questions,
                shard_plan: plan,
            })
            .unwrap();
        let holder = Holder {
            pid: 1,
            started_at: "1".into(),
        };
        store.claim_run(run_id, &holder, |_, _| false).unwrap();
        let mut copies = Vec::new();
        let mut snapshot = |store: &Store| {
            store.checkpoint().unwrap();
            let copy = dir.join(format!("{name}-{}.db", copies.len()));
            std::fs::copy(&path, &copy).unwrap();
            copies.push(copy);
        };
        snapshot(&store);
        for (id, ok) in answers {
            store.insert_answer(run_id, &answer(id, *ok)).unwrap();
            store.heartbeat(run_id, 10).unwrap();
            snapshot(&store);
        }
        let (status, reason) = if answers.len() == questions.len() {
            (RunStatus::Finished, None)
        } else {
            (RunStatus::Interrupted, Some("stopped"))
        };
        store.end_session(run_id, status, reason, 5).unwrap();
        snapshot(&store);
        copies
    }

    fn digest(path: &Path) -> Option<String> {
        std::fs::read(path)
            .ok()
            .map(|bytes| crate::dataset::hex_sha256(&bytes))
    }

    fn ok_answers(path: &Path) -> BTreeSet<(String, Option<String>)> {
        Store::open_read_only(path).unwrap().ok_answers()
    }

    /// One case: shard runs with copies, merged in random invocations (some refused), then
    /// compared with one merge of the furthest copies merged.
    fn merges_agree(seed: u64) {
        let mut rng = Rng(seed);
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        // Paths no text type can hold and a URI would misread.
        let dir = root
            .path()
            .join(std::ffi::OsStr::from_bytes(b"bad\xff #?%"));
        std::fs::create_dir(&dir).unwrap();
        let count = 1 + rng.below(3) as u32;
        let plan: Vec<PlannedQuestion> = (0..1 + rng.below(6))
            .map(|i| PlannedQuestion {
                question_id: format!("q{i}{}", rng.hostile()),
                ordinal: i as i64 + 1,
                shard_index: rng.below(count as usize) as u32,
            })
            .collect();
        let mut runs: Vec<Vec<PathBuf>> = Vec::new();
        for shard in 0..count {
            for r in 0..rng.below(3) {
                let mut ids: Vec<String> = plan
                    .iter()
                    .filter(|q| q.shard_index == shard)
                    .map(|q| q.question_id.clone())
                    .collect();
                for i in (1..ids.len()).rev() {
                    ids.swap(i, rng.below(i + 1));
                }
                let answered = rng.below(ids.len() + 1);
                let answers: Vec<(String, bool)> = ids[..answered]
                    .iter()
                    .map(|id| (id.clone(), rng.below(3) > 0))
                    .collect();
                let host = format!("node{shard}-{r}{}", rng.hostile());
                let name = format!("s{shard}-{r}#?%");
                runs.push(shard_run(
                    &dir,
                    &name,
                    &plan,
                    (shard, count),
                    &host,
                    &answers,
                ));
            }
        }
        if runs.is_empty() {
            return;
        }
        // What must be refused: a shard of another split, a database without a shard run, a
        // file that is no database, the target given as a shard, a shard given as the target.
        let other_plan: Vec<PlannedQuestion> = plan
            .iter()
            .map(|q| PlannedQuestion {
                shard_index: 0,
                ..q.clone()
            })
            .collect();
        let other_split = shard_run(&dir, "other", &other_plan, (0, count + 1), "n", &[])
            .pop()
            .unwrap();
        let not_shard = dir.join("whole.db");
        Store::open(&not_shard).unwrap().test_run("m", &[]);
        let foreign = dir.join("notes.txt");
        std::fs::write(&foreign, "not a database\n".repeat(300)).unwrap();
        let shard_copy = runs[0].last().unwrap().clone();
        let before = digest(&shard_copy);
        let error = merge(&shard_copy, &runs[0][..1]).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit_code::USAGE);
        assert_eq!(
            digest(&shard_copy),
            before,
            "a shard given as the target was written"
        );

        let into = dir.join("all #?%.db");
        let mut furthest: BTreeMap<usize, usize> = BTreeMap::new();
        let mut kept = BTreeSet::new();
        for _ in 0..1 + rng.below(4) {
            let inputs: Vec<(usize, usize)> = (0..1 + rng.below(4))
                .map(|_| {
                    let r = rng.below(runs.len());
                    (r, rng.below(runs[r].len()))
                })
                .collect();
            let mut paths: Vec<PathBuf> = inputs.iter().map(|&(r, c)| runs[r][c].clone()).collect();
            let refusal = rng.below(8);
            if refusal < 4 {
                let bad = [&other_split, &not_shard, &foreign, &into][refusal];
                paths.insert(rng.below(paths.len() + 1), bad.clone());
                let before = digest(&into);
                let error = merge(&into, &paths).unwrap_err();
                assert_eq!(
                    crate::error::exit_code_of(&error),
                    exit_code::USAGE,
                    "{error:#}"
                );
                assert_eq!(digest(&into), before, "a refused merge wrote: {error:#}");
                continue;
            }
            merge(&into, &paths).unwrap();
            for (r, c) in inputs {
                let entry = furthest.entry(r).or_insert(c);
                *entry = (*entry).max(c);
            }
            let now = ok_answers(&into);
            assert!(kept.is_subset(&now), "an ok answer was lost");
            for path in &paths {
                assert!(
                    ok_answers(path).is_subset(&now),
                    "an ok answer was not merged"
                );
            }
            kept = now;
        }
        if furthest.is_empty() {
            return;
        }
        let once = dir.join("once.db");
        let furthest: Vec<PathBuf> = furthest.iter().map(|(&r, &c)| runs[r][c].clone()).collect();
        merge(&once, &furthest).unwrap();
        assert_eq!(
            Store::open_read_only(&into).unwrap().merged_state(),
            Store::open_read_only(&once).unwrap().merged_state()
        );
    }

    #[test]
    fn property_merges_in_any_order_equal_one_merge_of_the_furthest_copies() {
        let mut config = property_config(32);
        // A case writes dozens of databases: `make fuzz`'s count, scaled down.
        if std::env::var_os("PROPTEST_CASES").is_some() {
            config.cases = (config.cases / 20).max(32);
        }
        proptest::test_runner::TestRunner::new(config)
            .run(&proptest::num::u64::ANY, |seed| {
                merges_agree(seed);
                Ok(())
            })
            .unwrap();
    }
}

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

/// The merged database must not be one of the shards: merging would write into its source.
fn refuse_merging_into_a_shard(into: &Path, shards: &[PathBuf]) -> Result<()> {
    let Ok(target) = std::fs::canonicalize(into) else {
        return Ok(()); // a new file is none of the shards
    };
    match shards
        .iter()
        .find(|s| std::fs::canonicalize(s).ok().as_ref() == Some(&target))
    {
        Some(shard) => Err(usage(format!(
            "--into {} is also given as a shard ({}); merge into a new file",
            into.display(),
            shard.display()
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
    /// The summary for a person: one line per shard run, then what is missing, by shard.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for p in &self.parts {
            text.push_str(&format!(
                "{}: shard {}/{} on {} ({}, {} questions): {} added, {} errors replaced, {} unchanged\n",
                p.source,
                p.shard_index,
                self.shard_count,
                if p.host.is_empty() { "?" } else { &p.host },
                p.status,
                p.questions,
                p.counts.added,
                p.counts.replaced_errors,
                p.counts.unchanged
            ));
        }
        let missing: usize = self.missing.iter().map(|m| m.ids.len()).sum();
        text.push_str(&format!(
            "{} run {}: {} of {} questions answered ({} errors), {} shards by {}\n",
            self.into,
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
                format!("in {}", m.sources.join(", "))
            };
            let listed: Vec<&str> = m
                .ids
                .iter()
                .take(LISTED_MISSING)
                .map(String::as_str)
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

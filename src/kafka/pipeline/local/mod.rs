//! The local copy of the state: written to the state directory
//! (`engine.state_dir`) at a graceful stop, read back at the next start in
//! place of what it covers, when nothing it covers has moved on meanwhile.
//!
//! Why: the changelog (see `changelog`, `restore`) is what every instance
//! shares, and reading it back costs a minute or more at a million accounts
//! (every record since the last whole checkpoint through librdkafka, at the
//! speed the brokers serve it: tansu here serves about 23 MB/s). A restart on
//! the same machine, a deploy, already has the state on its disk. This is Kafka
//! Streams' local store with its checkpoint file of changelog offsets: the
//! copy says where the changelog stood when it was written, and is used only
//! where the changelog still stands there.
//!
//! ## What a copy covers, and when it is used
//!
//! - **With the changelog** ([`ChangelogCover`]): per input partition owned
//!   at the stop, its positions and where its `state` partition ended after
//!   the last checkpoint; and what the shared payee and device tables had
//!   counted (the ledger) with where the observations reader stood. At start
//!   the payees and devices come from the copy when every `observations`
//!   partition still holds, at the offset before the reader's position, the
//!   message the copy saw there (the topic is the one it read, and nothing it
//!   has not counted is gone); the observations after it are then counted as
//!   always, once. A partition's accounts come from the copy when that
//!   partition is assigned here first and its `state` partition still ends
//!   where it did, with the copy's last record there: nobody has written
//!   that partition's state since (another owner in between always writes a
//!   whole checkpoint). Everything else is restored from the changelog, as
//!   without a copy, and accounts of partitions the copy cannot speak for are
//!   dropped.
//! - **Without the changelog** ([`Cover::Offsets`]): the group's committed
//!   offsets of every input partition, when this instance held them all;
//!   used only when the group's offsets are still exactly those, so nothing
//!   between them can be missing or counted twice. A crash leaves no copy
//!   newer than the committed offsets, and the instance starts empty.
//!
//! ## Guarantees
//!
//! - **Never half used, never silently misread.** One file, `state.local`:
//!   a header line (`FDSLOCAL`, a CRC-32 of the manifest, the manifest as
//!   JSON), then the state snapshot (see `crate::state`'s snapshots, record
//!   by record checksummed). A copy that does not read is refused whole,
//!   with the file and the reason logged and counted
//!   (`fds_state_restores_total{result="refused"}`); one that no longer
//!   matches is `stale`.
//! - **A failed write leaves the previous copy whole.** The file is written
//!   under a temporary name, synced and renamed over the old one (one
//!   rename, so the manifest and the snapshot always belong together); a full
//!   disk or a stop cut short leaves the previous copy as it was, and says so
//!   (`fds_state_local_copies_total{result="failed"}`, logged with the
//!   error). Decisions never depend on it: the copy is written after the
//!   last decision is acknowledged.
//!
//! `file` reads and writes the copy; `brokers` asks the brokers where the
//! topics stand now; this module decides, from both, what is used.

mod brokers;
mod file;

use std::path::Path;

use super::*;
use crate::input::order::partition_for;
use crate::state::SnapshotStats;
use brokers::*;
pub(super) use file::ChangelogCover;
use file::*;

/// At start, with the changelog on: the shared tables (and every account
/// the copy holds, each used only if its partition passes
/// [`keep_accounts`]) from the copy in `dir`, if it still matches; `None`
/// (with the reason logged and counted) to restore from the changelog.
pub(super) fn restore_shared(
    dir: &Path,
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
    health: &Health,
    groups: u32,
) -> Option<ChangelogCover> {
    health.set_restoring(true);
    let started = Instant::now();
    let result = (|| {
        let (manifest, snapshot) = open(dir)?;
        let Cover::Changelog(cover) = manifest.cover else {
            return Err(Skip::Stale("it was written with the changelog off".to_owned()));
        };
        if manifest.group != opts.group_id || cover.state_topic != opts.topics.state || cover.groups != groups {
            return Err(Skip::Stale(format!(
                "it is of group {:?}, topic {:?} with {} partitions; this run has {:?}, {:?} with {groups}",
                manifest.group, cover.state_topic, cover.groups, opts.group_id, opts.topics.state
            )));
        }
        // Every observations partition (as many as `state`'s), or a copy
        // could stand for a topic it never read.
        let mut observed: Vec<i32> = cover.observed.iter().map(|(p, _)| *p).collect();
        observed.sort_unstable();
        if observed != (0..groups as i32).collect::<Vec<_>>() {
            return Err(Skip::Stale(format!(
                "it knows where {} of the {groups} observations partitions were read to",
                observed.len()
            )));
        }
        {
            let reader =
                reader(opts, "state-restore", "local copy check", &[]).map_err(|e| Skip::Unchecked(e.to_string()))?;
            still(&reader, &opts.topics.observations, &cover.observed, false)?;
        }
        let stats = load(dir, engine, snapshot)?;
        // Accounts of partitions it does not speak for (held once, given up
        // before the stop) are not current.
        let covered: Vec<i32> = cover.partitions.iter().map(|c| c.partition).collect();
        engine.state().forget_accounts(|key| !covered.contains(&partition_for(key.as_bytes(), groups)));
        Ok((cover, stats))
    })();
    health.set_restoring(false);
    match result {
        Ok((cover, stats)) => {
            metrics.state_restores.with_label_values(&["local"]).inc();
            metrics.state_restore_seconds.set(started.elapsed().as_secs_f64());
            metrics.state_restore_bytes.set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
            log_snapshot(
                "state restored from the local copy; observations after it are read again",
                dir,
                &stats,
                started,
            );
            Some(cover)
        }
        Err(skip) => {
            skipped(metrics, &skip, "restoring from the changelog");
            None
        }
    }
}

/// When partitions are first assigned after a start from the copy: which
/// of `new` keep the copy's accounts (their `state` partition unchanged
/// since the copy was written). Every other account is dropped; those
/// partitions are restored from the changelog.
pub(super) fn keep_accounts(
    cover: &ChangelogCover,
    new: &[i32],
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
) -> Vec<i32> {
    let candidates: Vec<(i32, Seen)> =
        cover.partitions.iter().filter(|c| new.contains(&c.partition)).map(|c| (c.partition, c.state)).collect();
    // One check of them all: this runs in the rebalance callback.
    let verdicts = reader(opts, "state-restore", "local copy check", &[])
        .map_err(|e| e.to_string())
        .and_then(|r| check_each(&r, &cover.state_topic, &candidates, true));
    let mut kept = Vec::new();
    match verdicts {
        Ok(verdicts) => {
            let mut stale = Vec::new();
            for (p, verdict) in verdicts {
                match verdict {
                    Ok(()) => kept.push(p),
                    Err(why) => stale.push(why),
                }
            }
            if !stale.is_empty() {
                metrics.state_restores.with_label_values(&["stale"]).inc();
                tracing::info!(
                    "the local copy's accounts of {} partitions are stale ({}); restoring them from the changelog",
                    stale.len(),
                    stale.join("; ")
                );
            }
        }
        Err(e) => {
            metrics.state_restores.with_label_values(&["refused"]).inc();
            tracing::warn!(error = %e, "cannot check the local copy's accounts; restoring them from the changelog");
        }
    }
    kept.sort_unstable();
    let groups = cover.groups;
    let dropped = engine.state().forget_accounts(|key| !kept.contains(&partition_for(key.as_bytes(), groups)));
    if !kept.is_empty() {
        metrics.state_restores.with_label_values(&["local"]).inc();
    }
    let (accounts, _, _) = engine.state().entities();
    tracing::info!(partitions = ?kept, accounts, dropped, "accounts kept from the local copy");
    kept
}

/// At a graceful stop with the changelog on, after its last checkpoint
/// (`complete`: it completed): the copy of the partitions owned.
#[allow(clippy::too_many_arguments)] // each is a distinct part of what the copy covers
pub(super) fn write_changelog_copy(
    dir: &Path,
    complete: bool,
    engine: &Engine,
    changelog: &Changelog,
    positions: &Positions,
    shared: &SharedTables,
    opts: &PipelineOptions,
    metrics: &Metrics,
) {
    let count = |result: &str| metrics.state_local_copies.with_label_values(&[result]).inc();
    let started = Instant::now();
    let mut owned: Vec<i32> = shared.owned().collect();
    owned.sort_unstable();
    if owned.is_empty() {
        tracing::info!(dir = %dir.display(), "no local copy written: this instance holds no partition");
        return count("skipped");
    }
    if !complete {
        tracing::info!(dir = %dir.display(), "no local copy written: the last checkpoint did not complete");
        return count("skipped");
    }
    let cover = (|| {
        let reader = reader(opts, "local-copy", "local copy", &[]).map_err(|e| e.to_string())?;
        let state = seen(&reader, &opts.topics.state, &owned)?;
        let mut observed: Vec<(i32, Seen)> =
            seen_at(&reader, &opts.topics.observations, &shared.read_positions())?.into_iter().collect();
        observed.sort_unstable_by_key(|(p, _)| *p);
        let (counted, floors) = shared.ledger_parts();
        let partitions = owned
            .iter()
            .map(|&p| PartitionCover {
                partition: p,
                positions: [Feed::Transfers, Feed::Context]
                    .into_iter()
                    .filter_map(|f| positions.get(&(f, p)).map(|&o| (f.name().to_owned(), p, o)))
                    .collect(),
                state: state[&p],
            })
            .collect();
        Ok::<_, String>(ChangelogCover {
            state_topic: opts.topics.state.clone(),
            groups: changelog.partitions(),
            writer: changelog.writer(),
            last_id: changelog.last_id(),
            partitions,
            counted,
            floors,
            observed,
        })
    })();
    match cover {
        Ok(cover) => write_copy(dir, engine, &Manifest::new(&opts.group_id, Cover::Changelog(cover)), metrics, started),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no local copy written: cannot tell where the topics stand");
            count("failed");
        }
    }
}

/// At a graceful stop without the changelog: the copy, with the committed
/// offsets, when this instance holds every input partition (otherwise its
/// state is only part of the accounts, and the next owner could not tell
/// which).
pub(super) fn write_offsets_copy(
    dir: &Path,
    engine: &Engine,
    consumer: &BaseConsumer<GroupContext>,
    inputs: &[&str],
    opts: &PipelineOptions,
    metrics: &Metrics,
) {
    let count = |result: &str| metrics.state_local_copies.with_label_values(&[result]).inc();
    let all = match committed(consumer, inputs) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no local copy written: cannot read the committed offsets");
            return count("failed");
        }
    };
    let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    if owned < all.partitions {
        let partitions = all.partitions;
        tracing::info!(owned, partitions, "no local copy written: this instance holds only some input partitions");
        return count("skipped");
    }
    let offsets = all.offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect();
    write_copy(dir, engine, &Manifest::new(&opts.group_id, Cover::Offsets(offsets)), metrics, Instant::now());
}

fn write_copy(dir: &Path, engine: &Engine, manifest: &Manifest, metrics: &Metrics, started: Instant) {
    let result = write(dir, engine, manifest);
    metrics.state_local_copies.with_label_values(&[if result.is_ok() { "written" } else { "failed" }]).inc();
    match result {
        Ok(stats) => log_snapshot("local copy of the state written", dir, &stats, started),
        Err(e) => tracing::warn!(
            dir = %dir.display(), error = %e,
            "no local copy written; the previous one, if any, is left as it was (the next start checks it \
             against the brokers)"
        ),
    }
}

/// At start without the changelog: the state from the copy when it covers
/// exactly the group's committed offsets; otherwise say why and start
/// empty. Returns the input positions the restored state covers.
pub(super) fn restore_offsets(dir: &Path, engine: &Engine, opts: &PipelineOptions, metrics: &Metrics) -> Positions {
    let started = Instant::now();
    let result = (|| {
        let (manifest, snapshot) = open(dir)?;
        let Cover::Offsets(covered) = &manifest.cover else {
            return Err(Skip::Stale("it was written with the changelog on; this run has it off".to_owned()));
        };
        if manifest.group != opts.group_id {
            return Err(Skip::Stale(format!("it is of group {:?}, not {:?}", manifest.group, opts.group_id)));
        }
        // The consumer is closed before the load (closing takes a moment).
        let committed = {
            let consumer: BaseConsumer<Quiet> = opts
                .connection
                .client_config(&[("group.id", &opts.group_id), ("enable.auto.commit", "false")])
                .create_with_context(Quiet("local copy offsets"))
                .map_err(|e| Skip::Unchecked(format!("cannot read the committed offsets: {e}")))?;
            let inputs = [opts.topics.transfers.as_str(), opts.topics.context_events.as_str()];
            committed(&consumer, &inputs)
                .map_err(|e| Skip::Unchecked(format!("cannot read the committed offsets: {e}")))?
        };
        offsets_match(covered, &committed.offsets)?;
        let stats = load(dir, engine, snapshot)?;
        Ok((committed.offsets, stats))
    })();
    match result {
        Ok((offsets, stats)) => {
            metrics.state_restores.with_label_values(&["local"]).inc();
            metrics.state_restore_seconds.set(started.elapsed().as_secs_f64());
            metrics.state_restore_bytes.set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
            log_snapshot("state restored from the local copy", dir, &stats, started);
            offsets
                .iter()
                .map(|((topic, partition), &next)| ((feed_of(&opts.topics, topic), *partition), next))
                .collect()
        }
        Err(skip) => {
            skipped(metrics, &skip, "starting with empty state");
            Positions::new()
        }
    }
}

/// Log and count a copy not used.
fn skipped(metrics: &Metrics, skip: &Skip, instead: &str) {
    if let Some(result) = skip.result() {
        metrics.state_restores.with_label_values(&[result]).inc();
    }
    match skip {
        Skip::Missing(_) => tracing::info!("{skip}; {instead}"),
        _ => tracing::warn!("{skip}; {instead}"),
    }
}

fn log_snapshot(what: &str, dir: &Path, stats: &SnapshotStats, started: Instant) {
    tracing::info!(
        dir = %dir.display(),
        accounts = stats.accounts,
        payees = stats.payees,
        devices = stats.devices,
        bytes = stats.bytes,
        ms = started.elapsed().as_millis() as u64,
        "{what}"
    );
}

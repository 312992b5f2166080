//! Day summaries: the counts of every sealed partition that arrived on one UTC day,
//! merged once that day is over (`day-<day>.summary.zst`), so statistics over weeks read
//! one summary per day instead of one per hour of arrivals. Values repeat from hour to hour
//! (the same attackers, the same passwords), so a day's summary is far smaller than its
//! hours' together, and merging it is that much cheaper.
//!
//! Invariants:
//! - A day summary names the partitions it counts (by first id) in its header line; it is
//!   used only while every one of them is in the partition set, and only for a window that
//!   holds all of their events. A partition of that day sealed later (a clock stepped back)
//!   is simply counted on its own.
//! - Built by the sealing thread when it has nothing to seal, one day at a time, from the
//!   partitions' own summaries; a day with a summary missing or damaged is left without.
//! - Retention removes a day summary naming a dropped partition before that partition's
//!   files, holding the lock a build holds; at start, one naming a partition that is gone is
//!   removed.
//!
//! File: one JSON header line (`{"parts":[…],"min_timestamp":…,"max_timestamp":…}`), then
//! the counts as a partition summary holds them (zstd-compressed JSON).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::columnar::log::sync_directory_of;
use crate::columnar::sealed::SealedPartition;
use crate::columnar::stats::{
    encode_summary, merge_encoded_summary, merge_summary_file, summary_path, write_durably, Counts,
};
use crate::columnar::{lock, read, write, ColumnarError, Shared};

const MICROS_PER_DAY: i64 = 86_400_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// A header line longer than this is not one of ours.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// What a day summary covers, read from its header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DaySummary {
    #[serde(skip)]
    pub path: PathBuf,
    /// First ids of the partitions counted, ascending.
    pub parts: Vec<u64>,
    /// The oldest and newest own timestamp (micros) of the events counted.
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// The UTC day (days since the epoch) a sealed partition arrived on.
fn arrival_day(partition: &SealedPartition) -> i64 {
    partition.max_received_at.div_euclid(MICROS_PER_DAY)
}

fn day_summary_path(directory: &Path, day: i64) -> PathBuf {
    directory.join(format!("day-{day:06}.summary.zst"))
}

fn day_in(name: &str) -> Option<i64> {
    name.strip_prefix("day-")?
        .strip_suffix(".summary.zst")?
        .parse()
        .ok()
}

/// The day summaries of the directory whose partitions are all in `sealed`; the others
/// (left by a drop that stopped half-way, or unreadable) are removed.
pub(crate) fn load(
    directory: &Path,
    sealed: &[Arc<SealedPartition>],
) -> Result<Vec<Arc<DaySummary>>, ColumnarError> {
    let present: HashSet<u64> = sealed.iter().map(|part| part.first_id).collect();
    let entries = std::fs::read_dir(directory)
        .map_err(|source| ColumnarError::io("listing event directory", directory, source))?;
    let mut days = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|source| ColumnarError::io("listing event directory", directory, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if day_in(&name).is_none() {
            continue;
        }
        let path = entry.path();
        match read_header(&path) {
            Ok(day) if day.parts.iter().all(|part| present.contains(part)) => {
                days.push(Arc::new(day));
            }
            outcome => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "removing an unreadable day summary (it is rebuilt)");
                }
                remove(&path)?;
            }
        }
    }
    days.sort_unstable_by_key(|day| day.parts.first().copied());
    Ok(days)
}

fn read_header(path: &Path) -> Result<DaySummary, ColumnarError> {
    let file = File::open(path).map_err(|source| ColumnarError::io("reading", path, source))?;
    let mut line = String::new();
    BufReader::new(file)
        .take(MAX_HEADER_BYTES)
        .read_line(&mut line)
        .map_err(|source| ColumnarError::io("reading", path, source))?;
    let mut day: DaySummary =
        serde_json::from_str(&line).map_err(|error| ColumnarError::Corrupt {
            path: path.to_path_buf(),
            what: format!("header: {error}"),
        })?;
    day.path = path.to_path_buf();
    Ok(day)
}

/// Adds the counts of a day summary to `counts`; on error `counts` is unchanged.
pub(crate) fn merge_counts(day: &DaySummary, counts: &mut Counts) -> Result<(), ColumnarError> {
    let mut bytes = Vec::new();
    File::open(&day.path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|source| ColumnarError::io("reading", &day.path, source))?;
    let body = bytes
        .iter()
        .position(|byte| *byte == b'\n')
        .map(|end| &bytes[end + 1..])
        .ok_or_else(|| ColumnarError::Corrupt {
            path: day.path.clone(),
            what: "no header line".into(),
        })?;
    merge_encoded_summary(&day.path, body, counts)
}

fn remove(path: &Path) -> Result<(), ColumnarError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_directory_of(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ColumnarError::io("removing day summary", path, source)),
    }
}

/// Removes the day summaries naming any of `dropped` (first ids), files first.
pub(crate) fn forget_partitions(
    shared: &Shared,
    dropped: &HashSet<u64>,
) -> Result<(), ColumnarError> {
    let stale: Vec<Arc<DaySummary>> = read(&shared.day_summaries)
        .iter()
        .filter(|day| day.parts.iter().any(|part| dropped.contains(part)))
        .cloned()
        .collect();
    for day in &stale {
        remove(&day.path)?;
    }
    write(&shared.day_summaries).retain(|day| !stale.iter().any(|gone| Arc::ptr_eq(gone, day)));
    Ok(())
}

/// The bytes the day summaries take on disk.
pub(crate) fn disk_bytes(shared: &Shared) -> u64 {
    read(&shared.day_summaries)
        .iter()
        .map(|day| std::fs::metadata(&day.path).map_or(0, |metadata| metadata.len()))
        .sum()
}

/// The next day due a summary: over (no partition of it still hot, a later day has
/// arrivals), of two or more sealed partitions, without a summary, not failed before.
fn next_due_day(
    shared: &Shared,
    failed: &HashSet<i64>,
) -> Option<(i64, Vec<Arc<SealedPartition>>)> {
    let set = read(&shared.partitions);
    let hot_days: Vec<i64> = set
        .hot
        .iter()
        .filter_map(|hot| *read(&hot.arrival_hour))
        .map(|hour| hour.div_euclid(SECONDS_PER_DAY))
        .collect();
    let newest_day = set
        .sealed
        .iter()
        .map(|part| arrival_day(part))
        .chain(hot_days.iter().copied())
        .max()?;
    let summarized: HashSet<u64> = read(&shared.day_summaries)
        .iter()
        .flat_map(|day| day.parts.iter().copied())
        .collect();
    let mut by_day: BTreeMap<i64, Vec<Arc<SealedPartition>>> = BTreeMap::new();
    for part in &set.sealed {
        by_day
            .entry(arrival_day(part))
            .or_default()
            .push(part.clone());
    }
    by_day.into_iter().find(|(day, parts)| {
        *day < newest_day
            && !hot_days.contains(day)
            && !failed.contains(day)
            && parts.len() >= 2
            && !parts.iter().any(|part| summarized.contains(&part.first_id))
    })
}

/// Builds the summary of the next day due one (see [`next_due_day`]); `false` when no day
/// is due. A day that cannot be summarized is remembered in `failed` and not tried again
/// by this process.
pub(crate) fn summarize_next_day(shared: &Shared, failed: &mut HashSet<i64>) -> bool {
    let _one_at_a_time = lock(&shared.summarizing);
    let Some((day, parts)) = next_due_day(shared, failed) else {
        return false;
    };
    let directory = &shared.options.directory;
    let path = day_summary_path(directory, day);
    let started = std::time::Instant::now();
    match build(directory, &path, &parts) {
        Ok(summary) => {
            tracing::info!(
                day = %chrono::DateTime::from_timestamp(day * SECONDS_PER_DAY, 0).unwrap_or_default().date_naive(),
                partitions = parts.len(),
                seconds = started.elapsed().as_secs_f64(),
                "summarized a day of events"
            );
            // Retention waits for this lock, so they are all still here; checked anyway,
            // as a summary naming a missing partition would never be used.
            let present: HashSet<u64> = read(&shared.partitions)
                .sealed
                .iter()
                .map(|part| part.first_id)
                .collect();
            if summary.parts.iter().all(|part| present.contains(part)) {
                write(&shared.day_summaries).push(Arc::new(summary));
            } else if let Err(error) = remove(&path) {
                tracing::warn!(%error, "removing a day summary of dropped partitions failed");
            }
        }
        Err(error) => {
            tracing::warn!(%error, day, "summarizing a day of events failed; its partitions are counted one by one");
            failed.insert(day);
        }
    }
    true
}

fn build(
    directory: &Path,
    path: &Path,
    parts: &[Arc<SealedPartition>],
) -> Result<DaySummary, ColumnarError> {
    let mut counts = Counts::new();
    for part in parts {
        merge_summary_file(&summary_path(directory, part.first_id), &mut counts)?;
    }
    let summary = DaySummary {
        path: path.to_path_buf(),
        parts: parts.iter().map(|part| part.first_id).collect(),
        min_timestamp: parts
            .iter()
            .map(|part| part.min_timestamp)
            .min()
            .unwrap_or(0),
        max_timestamp: parts
            .iter()
            .map(|part| part.max_timestamp)
            .max()
            .unwrap_or(0),
    };
    let mut bytes = serde_json::to_vec(&summary).map_err(|error| ColumnarError::Corrupt {
        path: path.to_path_buf(),
        what: error.to_string(),
    })?;
    bytes.push(b'\n');
    bytes.extend(encode_summary(path, &counts)?);
    write_durably(path, &bytes)?;
    Ok(summary)
}

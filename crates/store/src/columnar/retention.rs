//! Dropping whole partitions — by age of arrival, by the disk the event files take, or up
//! to a time on an operator's request — without stopping ingest or queries.
//!
//! A drop takes the partitions out of the partition set (one write lock, as a seal does),
//! then unlinks their files. A query that took its snapshot before keeps reading them
//! through the handles it holds; the next one does not see them.
//!
//! Ids are never reused and a node's resend marks outlive its events: before the first
//! file goes, `dropped.json` records the next id past every dropped one and every node's
//! highest `seq`, and opening the store reads it back.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::columnar::log::sync_directory_of;
use crate::columnar::postings::postings_path;
use crate::columnar::sealed::SealedPartition;
use crate::columnar::stats::summary_path;
use crate::columnar::ColumnarError;
use crate::model::{DroppedEvents, RetentionRule};

/// What dropped partitions leave behind, in `dropped.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DroppedMarks {
    /// Every dropped event's id is below this.
    pub next_id: u64,
    /// Each node's highest `seq` ever stored (as text keys: JSON objects have no numbers).
    pub node_sequences: HashMap<String, u64>,
}

impl DroppedMarks {
    pub fn sequences(&self) -> HashMap<u64, u64> {
        self.node_sequences
            .iter()
            .filter_map(|(node, seq)| Some((node.parse().ok()?, *seq)))
            .collect()
    }
}

fn marks_path(directory: &Path) -> PathBuf {
    directory.join("dropped.json")
}

/// The marks of earlier drops; none when nothing was ever dropped.
pub(crate) fn read_marks(directory: &Path) -> Result<DroppedMarks, ColumnarError> {
    let path = marks_path(directory);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| ColumnarError::Corrupt {
            path,
            what: error.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(DroppedMarks::default()),
        Err(source) => Err(ColumnarError::io("reading", &path, source)),
    }
}

/// Writes the marks durably (temporary file, sync, rename, directory sync).
pub(crate) fn write_marks(directory: &Path, marks: &DroppedMarks) -> Result<(), ColumnarError> {
    let path = marks_path(directory);
    let temporary = path.with_extension("json.tmp");
    let json = serde_json::to_vec(marks).map_err(|error| ColumnarError::Corrupt {
        path: path.clone(),
        what: error.to_string(),
    })?;
    File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(&json)?;
            file.sync_all()
        })
        .map_err(|source| ColumnarError::io("writing", &temporary, source))?;
    std::fs::rename(&temporary, &path)
        .map_err(|source| ColumnarError::io("naming", &path, source))?;
    sync_directory_of(&path)
}

/// The files that belong to a sealed partition besides its Parquet file.
fn companion_paths(directory: &Path, first_id: u64) -> [PathBuf; 2] {
    [
        summary_path(directory, first_id),
        postings_path(directory, first_id),
    ]
}

/// The bytes a sealed partition takes: its file, its summary and its postings.
pub(crate) fn partition_disk_bytes(directory: &Path, partition: &SealedPartition) -> u64 {
    let companions: u64 = companion_paths(directory, partition.first_id)
        .iter()
        .map(|path| std::fs::metadata(path).map_or(0, |metadata| metadata.len()))
        .sum();
    partition.bytes + companions
}

/// The sealed partitions `rule` drops, from `sealed` (oldest first); `other_bytes` is what
/// the logs and day summaries take, which dropping a partition does not free (a day
/// summary goes with its partitions, so a cap may keep one partition less than it could).
pub(crate) fn choose_victims(
    directory: &Path,
    sealed: &[Arc<SealedPartition>],
    other_bytes: u64,
    rule: &RetentionRule,
) -> Vec<Arc<SealedPartition>> {
    let cutoff = rule.arrived_through.map(|time| time.timestamp_micros());
    let mut remaining = other_bytes;
    let mut victims = Vec::new();
    let mut kept = Vec::new();
    for partition in sealed {
        if cutoff.is_some_and(|cutoff| partition.max_received_at <= cutoff) {
            victims.push(partition.clone());
        } else {
            remaining += partition_disk_bytes(directory, partition);
            kept.push(partition.clone());
        }
    }
    if let Some(cap) = rule.max_disk_bytes {
        for partition in kept {
            if remaining <= cap {
                break;
            }
            remaining -= partition_disk_bytes(directory, &partition);
            victims.push(partition);
        }
    }
    victims
}

/// Unlinks a dropped partition's files: the partition file first, so a crash midway
/// leaves an orphan summary or postings, which opening removes.
pub(crate) fn remove_partition_files(
    directory: &Path,
    partition: &SealedPartition,
) -> Result<(), ColumnarError> {
    std::fs::remove_file(&partition.path).map_err(|source| {
        ColumnarError::io("removing dropped partition", &partition.path, source)
    })?;
    for companion in companion_paths(directory, partition.first_id) {
        match std::fs::remove_file(&companion) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ColumnarError::io(
                    "removing a dropped partition's companion file",
                    &companion,
                    source,
                ))
            }
        }
    }
    sync_directory_of(&partition.path)
}

/// Adds the victims to a drop's totals.
pub(crate) fn count_dropped(
    directory: &Path,
    victims: &[Arc<SealedPartition>],
    dropped: &mut DroppedEvents,
) {
    for partition in victims {
        dropped.partitions += 1;
        dropped.events += partition.rows;
        dropped.bytes += partition_disk_bytes(directory, partition);
    }
}

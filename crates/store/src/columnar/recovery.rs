//! Opening the event directory after a clean stop or a crash: sealed partitions are
//! opened, logs are read back (a torn tail cut off), logs whose events are already sealed
//! are removed, and what a seal left half-written is deleted.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::columnar::hot::{arrival_hour, HotPartition};
use crate::columnar::log::{cut_log, read_log, sync_directory_of};
use crate::columnar::retention::read_marks;
use crate::columnar::sealed::SealedPartition;
use crate::columnar::{write, ColumnarError};

/// What the directory held.
pub(crate) struct Recovered {
    pub sealed: Vec<Arc<SealedPartition>>,
    /// Partitions replayed from logs, to be sealed, oldest first.
    pub unsealed: Vec<Arc<HotPartition>>,
    /// Each unsealed partition's per-node highest `seq`.
    pub unsealed_sequences: Vec<HashMap<u64, u64>>,
    pub next_id: u64,
    pub next_log_number: u64,
    /// Each node's highest stored `seq`.
    pub node_sequences: HashMap<u64, u64>,
}

/// The path of hot log number `number`.
pub(crate) fn log_path(directory: &Path, number: u64) -> PathBuf {
    directory.join(format!("hot-{number:020}.log"))
}

fn number_in(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

fn merge_sequences(into: &mut HashMap<u64, u64>, from: &HashMap<u64, u64>) {
    for (node, seq) in from {
        let mark = into.entry(*node).or_insert(*seq);
        *mark = (*mark).max(*seq);
    }
}

pub(crate) fn recover(directory: &Path) -> Result<Recovered, ColumnarError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(|source| ColumnarError::io("creating event directory", directory, source))?;
    let entries = std::fs::read_dir(directory)
        .map_err(|source| ColumnarError::io("listing event directory", directory, source))?;
    let mut partition_files = Vec::new();
    let mut logs = Vec::new();
    // Summaries and postings: each belongs to the partition file of its first id.
    let mut companions = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|source| ColumnarError::io("listing event directory", directory, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".tmp") {
            tracing::info!(file = %path.display(), "removing a partition file a seal left unfinished");
            std::fs::remove_file(&path)
                .map_err(|source| ColumnarError::io("removing", &path, source))?;
        } else if let Some(first_id) = number_in(&name, "part-", ".parquet") {
            partition_files.push((first_id, path));
        } else if let Some(number) = number_in(&name, "hot-", ".log") {
            logs.push((number, path));
        } else if let Some(first_id) = number_in(&name, "part-", ".summary.zst")
            .or_else(|| number_in(&name, "part-", ".postings"))
        {
            companions.push((first_id, path));
        }
    }
    // A summary and postings are written before their partition file: one without it is
    // a seal that stopped half-way (its log is still here).
    for (first_id, path) in companions {
        if !partition_files.iter().any(|(id, _)| *id == first_id) {
            std::fs::remove_file(&path)
                .map_err(|source| ColumnarError::io("removing", &path, source))?;
        }
    }
    partition_files.sort_unstable();
    logs.sort_unstable();
    let mut sealed = Vec::with_capacity(partition_files.len());
    let mut node_sequences = HashMap::new();
    for (_, path) in partition_files {
        let partition = SealedPartition::open(&path)?;
        merge_sequences(&mut node_sequences, &partition.node_sequences);
        sealed.push(Arc::new(partition));
    }
    // Dropped partitions' ids stay used, and their nodes' marks stay.
    let marks = read_marks(directory)?;
    merge_sequences(&mut node_sequences, &marks.sequences());
    let sealed_through = sealed
        .iter()
        .map(|part| part.last_id)
        .max()
        .unwrap_or(0)
        .max(marks.next_id.saturating_sub(1));
    let mut next_id = sealed_through + 1;
    let mut unsealed = Vec::new();
    let mut unsealed_sequences = Vec::new();
    let next_log_number = logs.last().map_or(1, |(number, _)| number + 1);
    for (_, path) in logs {
        let recovered = read_log(&path)?;
        if recovered.intact_length < recovered.file_length {
            tracing::warn!(
                log = %path.display(),
                cut_bytes = recovered.file_length - recovered.intact_length,
                "cutting the torn end of an event log (a batch that was never acknowledged)"
            );
            cut_log(&path, recovered.intact_length)?;
        }
        let newest = recovered.events.last().map(|(logged, _)| logged.id);
        if newest.is_none_or(|newest| newest <= sealed_through) {
            // Empty, or sealed before the stop: the partition file holds its events.
            std::fs::remove_file(&path)
                .map_err(|source| ColumnarError::io("removing sealed log", &path, source))?;
            sync_directory_of(&path)?;
            continue;
        }
        let reader =
            File::open(&path).map_err(|source| ColumnarError::io("opening log", &path, source))?;
        let partition = HotPartition::new(path.clone(), reader);
        let mut sequences = HashMap::new();
        {
            let mut columns = write(&partition.columns);
            for (logged, position) in &recovered.events {
                columns.push(logged.id, &logged.event, *position);
                if let Some(seq) = logged.event.seq {
                    merge_sequences(
                        &mut sequences,
                        &HashMap::from([(logged.event.node_id, seq)]),
                    );
                }
                next_id = next_id.max(logged.id + 1);
            }
        }
        if let Some((first, _)) = recovered.events.first() {
            *write(&partition.arrival_hour) = Some(arrival_hour(first.event.received_at));
        }
        tracing::info!(log = %path.display(), events = recovered.events.len(), "replayed an event log");
        merge_sequences(&mut node_sequences, &sequences);
        unsealed.push(Arc::new(partition));
        unsealed_sequences.push(sequences);
    }
    Ok(Recovered {
        sealed,
        unsealed,
        unsealed_sequences,
        next_id,
        next_log_number,
        node_sequences,
    })
}

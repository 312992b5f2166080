//! The sealing thread: turns full hot partitions into sealed Parquet partitions beside
//! ingest, so the writer never waits for a seal; with nothing to seal, it builds the day
//! summaries that are due.
//!
//! A partition being sealed stays in the partition set, queryable from memory, until its
//! sealed file is open; the swap is one write lock of the set. A seal that fails (a full
//! disk) is logged and retried later; its log keeps every event safe meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::columnar::day_summary::summarize_next_day;
use crate::columnar::hot::HotPartition;
use crate::columnar::log::sync_directory_of;
use crate::columnar::partition_writer::write_sealed_partition;
use crate::columnar::postings::{postings_path, write_postings};
use crate::columnar::sealed::SealedPartition;
use crate::columnar::stats::{count_whole, summary_path, write_summary};
use crate::columnar::{lock, read, write, ColumnarError, Shared};

/// How long a failed seal waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A partition to seal, with its nodes' highest `seq`.
struct SealJob {
    partition: Arc<HotPartition>,
    node_sequences: HashMap<u64, u64>,
}

/// Counts the jobs handed over and not yet done, so a caller can wait for them.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    changed: Condvar,
}

/// Hands partitions to the sealing thread.
#[derive(Clone)]
pub(crate) struct SealerSender {
    jobs: Sender<SealJob>,
    pending: Arc<Pending>,
}

impl SealerSender {
    pub fn seal(&self, partition: Arc<HotPartition>, node_sequences: HashMap<u64, u64>) {
        *lock(&self.pending.count) += 1;
        let job = SealJob {
            partition,
            node_sequences,
        };
        if self.jobs.send(job).is_err() {
            // The thread is gone (the store is closing): the log stays and is sealed at
            // the next start.
            self.finished();
        }
    }

    fn finished(&self) {
        let mut count = lock(&self.pending.count);
        *count = count.saturating_sub(1);
        self.pending.changed.notify_all();
    }

    /// Waits until every partition handed over was sealed or failed.
    pub fn wait_idle(&self) {
        let mut count = lock(&self.pending.count);
        while *count > 0 {
            count = self
                .pending
                .changed
                .wait(count)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// The sealing thread; stopping it lets it finish the partitions it was given.
pub(crate) struct SealerThread {
    sender: Option<SealerSender>,
    thread: Option<JoinHandle<()>>,
}

impl SealerThread {
    pub fn start(shared: Arc<Shared>) -> Result<(SealerThread, SealerSender), ColumnarError> {
        let (jobs, receiver) = channel();
        let sender = SealerSender {
            jobs,
            pending: Arc::default(),
        };
        let thread_sender = sender.clone();
        let directory = shared.options.directory.clone();
        let thread = std::thread::Builder::new()
            .name("event-sealer".into())
            .spawn(move || run(shared, receiver, thread_sender))
            .map_err(|source| {
                ColumnarError::io("starting the sealing thread for", &directory, source)
            })?;
        Ok((
            SealerThread {
                sender: Some(sender.clone()),
                thread: Some(thread),
            },
            sender,
        ))
    }
}

impl Drop for SealerThread {
    fn drop(&mut self) {
        // The thread ends once every sender is gone; the store drops the others with it.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: Arc<Shared>, jobs: Receiver<SealJob>, sender: SealerSender) {
    let pending = sender.pending.clone();
    // The thread's own copy must not keep the channel open.
    drop(sender);
    let finished = || {
        let mut count = lock(&pending.count);
        *count = count.saturating_sub(1);
        pending.changed.notify_all();
    };
    let mut failed: Vec<SealJob> = Vec::new();
    let mut failed_days = HashSet::new();
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => Some(job),
            Err(TryRecvError::Disconnected) => return,
            // Nothing to seal: a day summary is built, one day at a time, so a seal never
            // waits behind more than one.
            Err(TryRecvError::Empty) if summarize_next_day(&shared, &mut failed_days) => continue,
            Err(TryRecvError::Empty) if failed.is_empty() => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            Err(TryRecvError::Empty) => match jobs.recv_timeout(RETRY_AFTER) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        match job {
            Some(job) => {
                if let Err(job) = seal(&shared, job) {
                    failed.push(job);
                }
                finished();
            }
            None => {
                for job in std::mem::take(&mut failed) {
                    if let Err(job) = seal(&shared, job) {
                        failed.push(job);
                    }
                }
            }
        }
    }
}

/// Seals one partition; gives the job back if it failed.
fn seal(shared: &Shared, job: SealJob) -> Result<(), SealJob> {
    let partition = &job.partition;
    let started = std::time::Instant::now();
    let sealed = {
        let columns = read(&partition.columns);
        if columns.len() == 0 {
            Ok(None)
        } else {
            let first_id = columns.ids[0];
            let summary = summary_path(&shared.options.directory, first_id);
            // The summary and postings first: once the partition file is in place, they
            // are too.
            write_summary(&summary, &count_whole(&columns))
                .and_then(|()| {
                    write_postings(
                        &postings_path(&shared.options.directory, first_id),
                        &columns,
                    )
                })
                .and_then(|()| {
                    write_sealed_partition(
                        &shared.options.directory,
                        &columns,
                        &partition.log_reader,
                        &partition.log_path,
                        &job.node_sequences,
                    )
                })
                .and_then(|path| SealedPartition::open(&path))
                .map(Some)
        }
    };
    let sealed = match sealed {
        Ok(sealed) => sealed,
        Err(error) => {
            tracing::error!(log = %partition.log_path.display(), %error, "sealing an event partition failed; its log keeps the events, retrying later");
            return Err(job);
        }
    };
    {
        let mut set = write(&shared.partitions);
        set.hot.retain(|hot| !Arc::ptr_eq(hot, partition));
        if let Some(sealed) = sealed {
            let events = sealed.rows;
            let bytes = sealed.bytes;
            let at = set
                .sealed
                .partition_point(|part| part.first_id < sealed.first_id);
            set.sealed.insert(at, Arc::new(sealed));
            tracing::info!(
                events,
                bytes,
                seconds = started.elapsed().as_secs_f64(),
                "sealed an event partition"
            );
        }
    }
    let removed = std::fs::remove_file(&partition.log_path)
        .map_err(|source| ColumnarError::io("removing sealed log", &partition.log_path, source))
        .and_then(|()| sync_directory_of(&partition.log_path));
    if let Err(error) = removed {
        // Harmless: at the next start a log whose events are sealed is removed.
        tracing::warn!(%error, "removing a sealed partition's log failed");
    }
    Ok(())
}

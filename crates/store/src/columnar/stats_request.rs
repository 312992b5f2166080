//! One statistics request: which summaries and partitions answer it, counted on two
//! threads.
//!
//! The sealed part of the window becomes a list of work: day summaries (for a window
//! without node, pot or type filter that holds all of a day's events), then partitions
//! (from their summary when they lie whole in such a window, else from their columns). The
//! list is dealt out to [`STATS_THREADS`] threads, each counting into maps of its own,
//! merged at the end; the hot partitions are counted from memory last. Merging summaries is
//! hash-map work that one core does at a few million values a second, and a 30-day request
//! holds millions.
//!
//! Every thread stops at the request's deadline, and memory is charged to one counter shared
//! by the threads as their maps grow: a value both threads hold is charged twice, so the
//! bound errs on the safe side.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::columnar::day_summary::{self, DaySummary};
use crate::columnar::filter::EventFilter;
use crate::columnar::sealed::SealedPartition;
use crate::columnar::stats::{self, Counts};
use crate::columnar::{read, ColumnarError, Shared};
use crate::model::{EventStats, StatsQuery};

/// Threads one request counts on. Two: the Core is built for small machines, where more
/// would only take cores from ingest; most of the gain is in the first split.
const STATS_THREADS: usize = 2;

/// One piece of a request's sealed work.
enum Work {
    /// A day summary, with its partitions to count one by one should it be unreadable.
    Day {
        day: Arc<DaySummary>,
        parts: Vec<Arc<SealedPartition>>,
    },
    Partition(Arc<SealedPartition>),
}

/// What every thread of a request must stay within.
struct Budget {
    deadline: Instant,
    time_limit: Duration,
    limit_bytes: usize,
    charged: AtomicUsize,
}

impl Budget {
    fn check_time(&self) -> Result<(), ColumnarError> {
        if Instant::now() >= self.deadline {
            return Err(ColumnarError::TimeLimit {
                limit: self.time_limit,
            });
        }
        Ok(())
    }

    /// Charges what `counts` grew by since `reported`, and stops the request past the limit.
    fn charge(&self, counts: &Counts, reported: &mut usize) -> Result<(), ColumnarError> {
        let grown = counts.memory_bytes.saturating_sub(*reported);
        *reported = counts.memory_bytes;
        let total = self.charged.fetch_add(grown, Ordering::Relaxed) + grown;
        if total > self.limit_bytes {
            return Err(ColumnarError::StatsTooLarge {
                limit_bytes: self.limit_bytes,
            });
        }
        Ok(())
    }
}

/// The answer to `query` over the partitions the store holds now.
pub(crate) fn count_window(
    shared: &Shared,
    query: &StatsQuery,
) -> Result<EventStats, ColumnarError> {
    let options = &shared.options;
    let budget = Budget {
        deadline: Instant::now() + options.query_time_limit,
        time_limit: options.query_time_limit,
        limit_bytes: options.stats_max_bytes,
        charged: AtomicUsize::new(0),
    };
    let filter = stats::stats_filter(query);
    let snapshot = read(&shared.partitions).clone();
    let days = read(&shared.day_summaries).clone();
    let mut shares: Vec<Vec<Work>> = (0..STATS_THREADS).map(|_| Vec::new()).collect();
    for (index, work) in plan(&filter, &snapshot.sealed, &days)
        .into_iter()
        .enumerate()
    {
        shares[index % STATS_THREADS].push(work);
    }
    let directory = options.directory.as_path();
    let mut shares = shares.into_iter();
    let own_share = shares.next().unwrap_or_default();
    let results: Vec<Result<Counts, ColumnarError>> = std::thread::scope(|scope| {
        let others: Vec<_> = shares
            .filter(|share| !share.is_empty())
            .map(|share| scope.spawn(|| count_share(directory, &filter, share, &budget)))
            .collect();
        let mut results = vec![count_share(directory, &filter, own_share, &budget)];
        for other in others {
            results.push(other.join().unwrap_or_else(|_| {
                Err(ColumnarError::StatsThread {
                    what: "a statistics thread panicked".into(),
                })
            }));
        }
        results
    });
    let mut counts = Counts::new();
    for result in results {
        let share = result?;
        // The larger maps take in the smaller.
        if share.memory_bytes > counts.memory_bytes {
            let smaller = std::mem::replace(&mut counts, share);
            counts.merge(smaller);
        } else {
            counts.merge(share);
        }
    }
    // The merged maps hold no more than the threads were charged for.
    let mut reported = counts.memory_bytes;
    for hot in &snapshot.hot {
        let columns = read(&hot.columns);
        counts.merge(stats::count_hot(&columns, &filter));
        budget.charge(&counts, &mut reported)?;
    }
    Ok(counts.into_stats(query))
}

/// The sealed work of a request: usable day summaries first, then every partition of the
/// window that none of them counts.
fn plan(
    filter: &EventFilter,
    sealed: &[Arc<SealedPartition>],
    days: &[Arc<DaySummary>],
) -> Vec<Work> {
    let mut work = Vec::new();
    let mut in_days: HashSet<u64> = HashSet::new();
    if filter.only_time() {
        let by_id: HashMap<u64, &Arc<SealedPartition>> =
            sealed.iter().map(|part| (part.first_id, part)).collect();
        for day in days {
            if !filter.holds_times(day.min_timestamp, day.max_timestamp) {
                continue;
            }
            let parts: Option<Vec<Arc<SealedPartition>>> = day
                .parts
                .iter()
                .map(|id| by_id.get(id).map(|part| Arc::clone(part)))
                .collect();
            if let Some(parts) = parts {
                in_days.extend(day.parts.iter().copied());
                work.push(Work::Day {
                    day: day.clone(),
                    parts,
                });
            }
        }
    }
    for part in sealed {
        if !in_days.contains(&part.first_id)
            && filter.may_match_times(part.min_timestamp, part.max_timestamp)
        {
            work.push(Work::Partition(part.clone()));
        }
    }
    work
}

/// Counts one thread's share of the work.
fn count_share(
    directory: &Path,
    filter: &EventFilter,
    share: Vec<Work>,
    budget: &Budget,
) -> Result<Counts, ColumnarError> {
    let mut counts = Counts::new();
    let mut reported = 0;
    for work in share {
        budget.check_time()?;
        match work {
            Work::Day { day, parts } => {
                if let Err(error) = day_summary::merge_counts(&day, &mut counts) {
                    tracing::warn!(%error, "day summary unreadable; counting its partitions one by one");
                    for part in parts {
                        budget.check_time()?;
                        count_partition(directory, filter, &part, &mut counts, budget)?;
                        budget.charge(&counts, &mut reported)?;
                    }
                }
            }
            Work::Partition(part) => {
                count_partition(directory, filter, &part, &mut counts, budget)?;
            }
        }
        budget.charge(&counts, &mut reported)?;
    }
    Ok(counts)
}

/// Counts one sealed partition: from its summary when that answers the filter exactly,
/// else from its columns.
fn count_partition(
    directory: &Path,
    filter: &EventFilter,
    part: &SealedPartition,
    counts: &mut Counts,
    budget: &Budget,
) -> Result<(), ColumnarError> {
    let summary = stats::summary_path(directory, part.first_id);
    let from_summary = filter.only_time()
        && filter.holds_times(part.min_timestamp, part.max_timestamp)
        && summary.exists()
        && stats::merge_summary_file(&summary, counts)
            .inspect_err(|error| {
                tracing::warn!(%error, "partition summary unreadable; counting the partition's columns instead");
            })
            .is_ok();
    if from_summary {
        return Ok(());
    }
    part.count(filter, counts, budget.deadline, budget.time_limit)
}

//! One statistics request: which summaries and partitions answer it.
//!
//! The sealed part of the window becomes a list of work: day summaries (for a window
//! without node, pot or type filter that holds all of a day's events), then partitions
//! (from their summary when they lie whole in such a window, else from their columns),
//! counted into one set of maps; the hot partitions are counted from memory last. The
//! request stops at its deadline, and once its maps outgrow the memory bound.
//!
//! One thread: dealing the work out to two threads, each with maps of its own merged at
//! the end, was measured and not kept (docs/performance.md): on two cores shared with
//! ingest and the API it made a 30-day request 12 % faster and a 24-hour one 35 % slower.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::columnar::day_summary::{self, DaySummary};
use crate::columnar::filter::EventFilter;
use crate::columnar::sealed::SealedPartition;
use crate::columnar::stats::{self, Counts};
use crate::columnar::{read, ColumnarError, Shared};
use crate::model::{EventStats, StatsQuery};

/// One piece of a request's sealed work.
enum Work {
    /// A day summary, with its partitions to count one by one should it be unreadable.
    Day {
        day: Arc<DaySummary>,
        parts: Vec<Arc<SealedPartition>>,
    },
    Partition(Arc<SealedPartition>),
}

/// What a request must stay within.
struct Budget {
    deadline: Instant,
    time_limit: Duration,
    limit_bytes: usize,
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

    /// Stops the request once `counts` hold more than the limit.
    fn check_memory(&self, counts: &Counts) -> Result<(), ColumnarError> {
        if counts.memory_bytes > self.limit_bytes {
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
    };
    let filter = stats::stats_filter(query);
    let snapshot = read(&shared.partitions).clone();
    let days = read(&shared.day_summaries).clone();
    let work = plan(&filter, &snapshot.sealed, &days);
    let mut counts = Counts::new();
    count_work(&options.directory, &filter, work, &budget, &mut counts)?;
    for hot in &snapshot.hot {
        let columns = read(&hot.columns);
        counts.merge(stats::count_hot(&columns, &filter));
        budget.check_memory(&counts)?;
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

/// Counts the sealed work into `counts`.
fn count_work(
    directory: &Path,
    filter: &EventFilter,
    work: Vec<Work>,
    budget: &Budget,
    counts: &mut Counts,
) -> Result<(), ColumnarError> {
    for work in work {
        budget.check_time()?;
        match work {
            Work::Day { day, parts } => {
                if let Err(error) = day_summary::merge_counts(&day, counts) {
                    tracing::warn!(%error, "day summary unreadable; counting its partitions one by one");
                    for part in parts {
                        budget.check_time()?;
                        count_partition(directory, filter, &part, counts, budget)?;
                        budget.check_memory(counts)?;
                    }
                }
            }
            Work::Partition(part) => count_partition(directory, filter, &part, counts, budget)?,
        }
        budget.check_memory(counts)?;
    }
    Ok(())
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

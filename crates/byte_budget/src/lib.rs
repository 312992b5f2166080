//! A byte budget for a bounded queue, shared by the Core's event queue and the Node's ingest
//! queue.
//!
//! A queue bounded only by its number of items holds anything from a few KiB to
//! items × largest item. A producer therefore takes byte permits for each item before
//! putting it on the queue, and the permits travel with the item until the consumer is done
//! with it (committed, spooled); waiting for permits is the backpressure, exactly like
//! waiting for a slot in a full queue. The count bound stays as well: it limits the per-item
//! overhead of many tiny items.
//!
//! An item bigger than the whole budget takes the whole budget rather than waiting forever:
//! it then travels alone, so the queue holds at most `max(budget, largest item)` bytes.

use std::sync::Arc;

use honeybee_telemetry::{Counter, Gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// How a budget shows itself to the operator: bytes held now, and how often a producer had
/// to wait because the budget was used up.
#[derive(Debug, Clone, Default)]
pub struct ByteBudgetMetrics {
    pub bytes_held: Arc<Gauge>,
    pub producer_waits: Arc<Counter>,
}

/// The bytes a queue may hold, shared by its producers (cheap to clone).
#[derive(Debug, Clone)]
pub struct ByteBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    // Private and never closed, so acquiring can only wait, never fail.
    semaphore: Arc<Semaphore>,
    max_bytes: usize,
    metrics: ByteBudgetMetrics,
}

/// Bytes of a budget held by one item; they return to the budget when this is dropped.
#[derive(Debug)]
pub struct BytePermit {
    permit: OwnedSemaphorePermit,
    budget: Arc<BudgetInner>,
}

impl ByteBudget {
    /// A budget of `max_bytes` (at least 1; the semaphore's own limit, 2^61, is far beyond
    /// any memory).
    pub fn new(max_bytes: usize, metrics: ByteBudgetMetrics) -> Self {
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
        ByteBudget {
            inner: Arc::new(BudgetInner {
                semaphore: Arc::new(Semaphore::new(max_bytes)),
                max_bytes,
                metrics,
            }),
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes
    }

    /// Bytes held by items not yet released.
    pub fn bytes_held(&self) -> usize {
        self.inner.max_bytes - self.inner.semaphore.available_permits()
    }

    /// Waits until `item_bytes` fit in the budget and takes them. Waiters are served in
    /// order (Tokio's semaphore is fair), so a big item is not starved by small ones.
    pub async fn acquire(&self, item_bytes: usize) -> BytePermit {
        if let Some(permit) = self.try_acquire(item_bytes) {
            return permit;
        }
        self.inner.metrics.producer_waits.increment();
        let charged = self.charge(item_bytes);
        match self
            .inner
            .semaphore
            .clone()
            .acquire_many_owned(charged)
            .await
        {
            Ok(permit) => self.held(permit),
            Err(_) => unreachable!("a byte budget's semaphore is private and never closed"),
        }
    }

    /// Takes `item_bytes` if they fit now (behind nobody already waiting).
    pub fn try_acquire(&self, item_bytes: usize) -> Option<BytePermit> {
        let charged = self.charge(item_bytes);
        match self.inner.semaphore.clone().try_acquire_many_owned(charged) {
            Ok(permit) => Some(self.held(permit)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    fn held(&self, permit: OwnedSemaphorePermit) -> BytePermit {
        self.inner
            .metrics
            .bytes_held
            .add(permit.num_permits() as i64);
        BytePermit {
            permit,
            budget: self.inner.clone(),
        }
    }

    /// What an item of `item_bytes` costs: at least one byte, so that an empty item is still
    /// held back by a full budget, and at most the whole budget (see the module comment).
    /// Tokio takes at most `u32::MAX` permits at once; no queued item comes near 4 GiB.
    fn charge(&self, item_bytes: usize) -> u32 {
        let bounded = item_bytes.clamp(1, self.inner.max_bytes);
        u32::try_from(bounded).unwrap_or(u32::MAX)
    }
}

impl BytePermit {
    /// The bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.budget
            .metrics
            .bytes_held
            .add(-(self.permit.num_permits() as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `acquire` completes without waiting: a zero timeout polls it once.
    async fn acquires_at_once(budget: &ByteBudget, bytes: usize) -> Option<BytePermit> {
        tokio::time::timeout(Duration::ZERO, budget.acquire(bytes))
            .await
            .ok()
    }

    #[test]
    fn try_acquire_takes_only_what_fits() {
        let budget = ByteBudget::new(10, ByteBudgetMetrics::default());
        let first = budget.try_acquire(7).unwrap();
        assert!(budget.try_acquire(4).is_none());
        assert_eq!(budget.try_acquire(3).unwrap().bytes(), 3);
        drop(first);
        assert_eq!(budget.bytes_held(), 0);
    }

    #[tokio::test]
    async fn a_producer_waits_until_the_bytes_it_needs_are_released() {
        let metrics = ByteBudgetMetrics::default();
        let budget = ByteBudget::new(100, metrics.clone());
        let first = acquires_at_once(&budget, 60).await.expect("fits");
        assert_eq!((budget.bytes_held(), metrics.bytes_held.get()), (60, 60));
        assert!(
            acquires_at_once(&budget, 50).await.is_none(),
            "60 + 50 > 100"
        );
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(50).await }
        });
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(second.bytes(), 50);
        assert_eq!(metrics.bytes_held.get(), 50);
        assert!(metrics.producer_waits.get() >= 1);
        drop(second);
        assert_eq!((budget.bytes_held(), metrics.bytes_held.get()), (0, 0));
    }

    #[tokio::test]
    async fn an_item_bigger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let budget = ByteBudget::new(100, ByteBudgetMetrics::default());
        let huge = acquires_at_once(&budget, 1_000_000).await.expect("passes");
        assert_eq!(huge.bytes(), 100);
        assert!(
            acquires_at_once(&budget, 0).await.is_none(),
            "it travels alone"
        );
        drop(huge);
        assert_eq!(acquires_at_once(&budget, 0).await.unwrap().bytes(), 1);
    }
}

//! Slows down guessing of TOTP codes, per source and per node id, in bounded memory.
//!
//! A million codes with up to three valid at a time fall to a few minutes of unchecked
//! guessing. Two budgets apply:
//! - per (node id, source): three invalid codes are free, then the source waits 30 s,
//!   doubling with every further invalid code up to an hour. A guesser elsewhere cannot lock
//!   the real node out this way.
//! - per node id, over every source: many sources (a botnet, or the 2^64 addresses of one
//!   IPv6 /64) would each get their free tries, so past [`NODE_FREE_FAILURES`] invalid codes
//!   the whole node id waits the same doubling time — except for the source the node last
//!   registered from, so the real node keeps reconnecting during an attack.
//!
//! Counts are kept for 24 h after a source's (or node id's) last invalid code: the lockout
//! ending does not hand out new free tries, so a guesser that waits out every lockout gets
//! one code per hour after its free ones.
//!
//! A source is the connection's [`AddressGroup`]: an IPv4 address or an IPv6 /64 (one host
//! usually holds a whole /64), and for a connection from this machine the unix user owning
//! its socket. On a sensor that runs the Core too (`honeybee up`) the real node and a pot's
//! user both connect from loopback: by address they would be one source, and the pot's user
//! would share the node's trusted source, exempt from the node-wide budget.
//! Memory is bounded: at most [`TRACKED_ENTRIES`] entries per map; expired entries are swept
//! when a map is full, at most once per [`SWEEP_INTERVAL`], so a flood of failures does not
//! sweep on every one. Past the bound new sources are not tracked per source, but still count
//! against their node id's budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Invalid codes from one source for one node id before it must wait.
pub(crate) const SOURCE_FREE_FAILURES: u32 = 3;
/// Invalid codes for one node id, from all sources together, before every source but the
/// node's own must wait.
pub(crate) const NODE_FREE_FAILURES: u32 = 10;
/// The first wait; it doubles with every further invalid code, up to [`LONGEST_LOCKOUT`].
pub(crate) const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const LONGEST_LOCKOUT: Duration = Duration::from_secs(3600);
/// A count is forgotten only after this long without an invalid code. It is much longer
/// than [`LONGEST_LOCKOUT`]: were counts forgotten as soon as a lockout ended, a guesser
/// would get its free tries back every two hours, for ever.
const FAILURE_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Entries per map.
const TRACKED_ENTRIES: usize = 100_000;
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

use honeybee_accept::AddressGroup;

/// Where guesses come from: the connection's address group.
type GuessSource = AddressGroup;

/// Invalid codes counted against one key, and until when the key must wait.
#[derive(Clone, Copy)]
struct Strikes {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

impl Strikes {
    fn new(now: Instant) -> Self {
        Strikes {
            failures: 0,
            last_failure: now,
            locked_until: None,
        }
    }

    fn strike(&mut self, now: Instant, free: u32) {
        if now.duration_since(self.last_failure) > FAILURE_MEMORY {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        if self.failures >= free {
            let doublings = (self.failures - free).min(16);
            self.locked_until =
                Some(now + (FIRST_LOCKOUT * 2u32.pow(doublings)).min(LONGEST_LOCKOUT));
        }
    }

    fn wait(&self, now: Instant) -> Option<Duration> {
        self.locked_until?.checked_duration_since(now)
    }

    fn forgettable(&self, now: Instant) -> bool {
        self.wait(now).is_none() && now.duration_since(self.last_failure) > FAILURE_MEMORY
    }
}

/// A node id's budget and the source it last registered from.
struct NodeGuesses {
    strikes: Strikes,
    trusted: Option<GuessSource>,
}

/// A map that never grows past [`TRACKED_ENTRIES`].
struct BoundedMap<K, V> {
    entries: HashMap<K, V>,
    last_sweep: Option<Instant>,
}

impl<K: std::hash::Hash + Eq, V> BoundedMap<K, V> {
    fn new() -> Self {
        BoundedMap {
            entries: HashMap::new(),
            last_sweep: None,
        }
    }

    /// The entry for `key`, created with `make` if there is room.
    fn entry_if_room(
        &mut self,
        key: K,
        now: Instant,
        forgettable: impl Fn(&V) -> bool,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        if !self.entries.contains_key(&key) && self.entries.len() >= TRACKED_ENTRIES {
            let due = self
                .last_sweep
                .is_none_or(|last| now.duration_since(last) >= SWEEP_INTERVAL);
            if due {
                self.last_sweep = Some(now);
                self.entries.retain(|_, value| !forgettable(value));
            }
            if self.entries.len() >= TRACKED_ENTRIES {
                return None;
            }
        }
        Some(self.entries.entry(key).or_insert_with(make))
    }
}

struct GuessState {
    per_source: BoundedMap<(u64, GuessSource), Strikes>,
    per_node: BoundedMap<u64, NodeGuesses>,
}

pub(crate) struct GuessLimiter {
    state: Mutex<GuessState>,
}

impl Default for GuessLimiter {
    fn default() -> Self {
        GuessLimiter {
            state: Mutex::new(GuessState {
                per_source: BoundedMap::new(),
                per_node: BoundedMap::new(),
            }),
        }
    }
}

impl GuessLimiter {
    fn state(&self) -> std::sync::MutexGuard<'_, GuessState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long registrations of `node_id` from `source` must still wait, if at all.
    pub fn locked_for(&self, node_id: u64, source: GuessSource) -> Option<Duration> {
        let now = Instant::now();
        let state = self.state();
        let own = state
            .per_source
            .entries
            .get(&(node_id, source))
            .and_then(|strikes| strikes.wait(now));
        let node_wide = state
            .per_node
            .entries
            .get(&node_id)
            .filter(|node| node.trusted != Some(source))
            .and_then(|node| node.strikes.wait(now));
        own.max(node_wide)
    }

    pub fn record_failure(&self, node_id: u64, source: GuessSource) {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(strikes) = state.per_source.entry_if_room(
            (node_id, source),
            now,
            |strikes| strikes.forgettable(now),
            || Strikes::new(now),
        ) {
            strikes.strike(now, SOURCE_FREE_FAILURES);
        }
        if let Some(node) = state.per_node.entry_if_room(
            node_id,
            now,
            |node| node.strikes.forgettable(now),
            || NodeGuesses {
                strikes: Strikes::new(now),
                trusted: None,
            },
        ) {
            node.strikes.strike(now, NODE_FREE_FAILURES);
        }
    }

    /// A valid code from `source`: its own strikes are cleared and it becomes the node's
    /// trusted source. The node-wide count stays, so the real node reconnecting does not
    /// hand a guesser elsewhere new free tries.
    pub fn record_success(&self, node_id: u64, source: GuessSource) {
        let now = Instant::now();
        let mut state = self.state();
        state.per_source.entries.remove(&(node_id, source));
        if let Some(node) = state.per_node.entry_if_room(
            node_id,
            now,
            |node| node.strikes.forgettable(now),
            || NodeGuesses {
                strikes: Strikes::new(now),
                trusted: None,
            },
        ) {
            node.trusted = Some(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> GuessSource {
        AddressGroup::of(text.parse().unwrap())
    }

    #[test]
    fn guessing_is_slowed_per_source_and_a_success_clears_it() {
        let limiter = GuessLimiter::default();
        let guesser = address("203.0.113.9");
        let node = address("198.51.100.4");
        for _ in 0..SOURCE_FREE_FAILURES - 1 {
            limiter.record_failure(7, guesser);
            assert_eq!(limiter.locked_for(7, guesser), None);
        }
        limiter.record_failure(7, guesser);
        let first = limiter.locked_for(7, guesser).expect("locked out");
        assert!(first <= FIRST_LOCKOUT && first > FIRST_LOCKOUT / 2);
        limiter.record_failure(7, guesser);
        assert!(
            limiter.locked_for(7, guesser).unwrap() > FIRST_LOCKOUT,
            "doubles"
        );
        // The real node elsewhere, and other node ids, are not affected.
        assert_eq!(limiter.locked_for(7, node), None);
        assert_eq!(limiter.locked_for(8, guesser), None);
        limiter.record_success(7, guesser);
        assert_eq!(limiter.locked_for(7, guesser), None);
    }

    #[test]
    fn many_sources_share_one_budget_per_node_id_but_the_nodes_own_source_keeps_going() {
        let limiter = GuessLimiter::default();
        let home = address("198.51.100.4");
        limiter.record_success(7, home);
        // A botnet: every address guesses once, never reaching its own lockout.
        for n in 0..NODE_FREE_FAILURES {
            let bot = address(&format!("203.0.113.{n}"));
            assert_eq!(limiter.locked_for(7, bot), None, "bot {n} still has tries");
            limiter.record_failure(7, bot);
        }
        let fresh_bot = address("192.0.2.200");
        assert!(
            limiter.locked_for(7, fresh_bot).is_some(),
            "node-wide budget spent"
        );
        assert_eq!(
            limiter.locked_for(7, home),
            None,
            "the node's own source is spared"
        );
        assert_eq!(
            limiter.locked_for(8, fresh_bot),
            None,
            "other node ids are not"
        );
    }

    #[test]
    fn counts_outlive_the_lockout_and_are_forgotten_after_a_day_without_failures() {
        let start = Instant::now();
        let mut strikes = Strikes::new(start);
        for _ in 0..SOURCE_FREE_FAILURES {
            strikes.strike(start, SOURCE_FREE_FAILURES);
        }
        // Two hours later the (longest possible) lockout is long over, but the count is
        // not: the next invalid code locks out again at once, for longer than the first.
        let later = start + LONGEST_LOCKOUT * 2;
        assert_eq!(strikes.wait(later), None);
        assert!(!strikes.forgettable(later));
        strikes.strike(later, SOURCE_FREE_FAILURES);
        assert_eq!(strikes.failures, SOURCE_FREE_FAILURES + 1);
        assert!(strikes.wait(later).unwrap() > FIRST_LOCKOUT);
        // A whole day without an invalid code: the count starts again.
        let next_day = later + FAILURE_MEMORY + Duration::from_secs(1);
        assert!(strikes.forgettable(next_day));
        strikes.strike(next_day, SOURCE_FREE_FAILURES);
        assert_eq!(strikes.failures, 1);
        assert_eq!(strikes.wait(next_day), None);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let limiter = GuessLimiter::default();
        for n in 1..=SOURCE_FREE_FAILURES {
            limiter.record_failure(7, address(&format!("2001:db8:1:2::{n:x}")));
        }
        assert!(limiter
            .locked_for(7, address("2001:db8:1:2:ffff::1"))
            .is_some());
        assert_eq!(limiter.locked_for(7, address("2001:db8:1:3::1")), None);
        assert_eq!(address("::ffff:192.0.2.1"), address("192.0.2.1"));
    }

    #[test]
    fn a_local_user_is_not_the_nodes_trusted_source_on_the_same_machine() {
        // The real node and a pot's user both connect from loopback on a `honeybee up`
        // sensor: the node's success must not exempt the pot's user from the node-wide budget.
        let limiter = GuessLimiter::default();
        let node = AddressGroup::LocalUser(0);
        let pot_user = AddressGroup::LocalUser(1001);
        limiter.record_success(7, node);
        for n in 0..NODE_FREE_FAILURES as u8 {
            limiter.record_failure(7, AddressGroup::V4(std::net::Ipv4Addr::new(203, 0, 113, n)));
        }
        assert!(limiter.locked_for(7, pot_user).is_some());
        assert_eq!(limiter.locked_for(7, node), None);
    }

    #[test]
    fn the_maps_stay_bounded_under_a_flood_of_sources() {
        let limiter = GuessLimiter::default();
        for n in 0..(TRACKED_ENTRIES as u32 + 1000) {
            limiter.record_failure(7, AddressGroup::V4(std::net::Ipv4Addr::from(n)));
        }
        let state = limiter.state();
        assert!(state.per_source.entries.len() <= TRACKED_ENTRIES);
        assert_eq!(state.per_node.entries.len(), 1);
    }
}

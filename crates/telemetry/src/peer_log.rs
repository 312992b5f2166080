//! Log limits for lines about untrusted peers: a rate limit per peer, so one hostile peer
//! flooding its own warnings cannot hide another peer's, and a cap on how much text a
//! peer gets into a log line.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::LimiterState;

/// Most bytes of peer-supplied text put into one log line by [`truncate_for_log`].
pub const MAX_LOGGED_PEER_TEXT_BYTES: usize = 512;

/// `text` cut to at most `max_bytes` bytes on a character boundary, with a note of how
/// much was left out; borrowed when it already fits.
pub fn truncate_for_log(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} more bytes not logged)",
        &text[..end],
        text.len() - end
    ))
}

/// One peer's window: as in [`LogRateLimiter`](crate::LogRateLimiter), kept inline so idle peers can be found
/// and forgotten.
#[derive(Debug)]
struct PeerWindow {
    limiter: LimiterState,
    /// When the peer last had a line: its key in `PeerWindows::by_use`.
    last_use: u64,
}

#[derive(Debug)]
struct PeerWindows<K> {
    by_peer: HashMap<K, PeerWindow>,
    /// Peers by their last use, oldest first: the one evicted when the map is full.
    by_use: BTreeMap<u64, K>,
    /// Counts uses, so every use has its own key in `by_use`.
    clock: u64,
}

/// Lets at most `burst` lines per `window` through for each peer. The map of peers is
/// bounded: when it is full the least recently used peer is evicted (its suppressed count
/// logged), so a new peer always gets its own limiter and peers that flooded once cannot
/// keep the map full.
#[derive(Debug)]
pub struct PeerLogRateLimiter<K> {
    window: Duration,
    burst: u32,
    max_peers: usize,
    peers: Mutex<PeerWindows<K>>,
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> PeerLogRateLimiter<K> {
    pub fn new(window: Duration, burst: u32, max_peers: usize) -> Self {
        PeerLogRateLimiter {
            window,
            burst,
            max_peers,
            peers: Mutex::new(PeerWindows {
                by_peer: HashMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
            }),
        }
    }

    /// `Some(suppressed_before)` when a line about `peer` may be logged (the count is how
    /// many of this peer's lines were suppressed since its last one), `None` when not.
    pub fn allow(&self, peer: &K) -> Option<u64> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let peers = &mut *peers;
        if !peers.by_peer.contains_key(peer) && peers.by_peer.len() >= self.max_peers.max(1) {
            if let Some((_, evicted)) = peers.by_use.pop_first() {
                if let Some(state) = peers.by_peer.remove(&evicted) {
                    if state.limiter.suppressed() > 0 {
                        tracing::info!(peer = ?evicted, suppressed = state.limiter.suppressed(), "log lines about a peer were suppressed; it is no longer tracked");
                    }
                }
            }
        }
        peers.clock += 1;
        let last_use = peers.clock;
        let state = peers
            .by_peer
            .entry(peer.clone())
            .or_insert_with(|| PeerWindow {
                limiter: LimiterState::new(now),
                last_use,
            });
        peers.by_use.remove(&state.last_use);
        state.last_use = last_use;
        peers.by_use.insert(last_use, peer.clone());
        state.limiter.admit(now, self.window, self.burst)
    }

    /// Peers with a window of their own right now.
    pub fn tracked_peers(&self) -> usize {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_peer
            .len()
    }
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Default for PeerLogRateLimiter<K> {
    /// Ten lines per ten seconds per peer, for up to 4096 peers.
    fn default() -> Self {
        PeerLogRateLimiter::new(Duration::from_secs(10), 10, 4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flooding_peer_does_not_silence_another() {
        let limiter = PeerLogRateLimiter::new(Duration::from_secs(3600), 2, 16);
        assert_eq!(limiter.allow(&"flooder"), Some(0));
        assert_eq!(limiter.allow(&"flooder"), Some(0));
        for _ in 0..100 {
            assert_eq!(limiter.allow(&"flooder"), None);
        }
        assert_eq!(limiter.allow(&"quiet"), Some(0));
    }

    #[test]
    fn a_map_full_of_flooding_peers_still_gives_a_new_peer_its_own_lines() {
        let limiter = PeerLogRateLimiter::new(Duration::from_secs(3600), 1, 2);
        // Two peers flood (lines suppressed) and fill the map.
        for flooder in [1, 2] {
            assert_eq!(limiter.allow(&flooder), Some(0));
            assert_eq!(limiter.allow(&flooder), None);
        }
        limiter.allow(&2);
        // New peers each get their own line: the least recently used peer makes room.
        assert_eq!(limiter.allow(&3), Some(0));
        assert_eq!(limiter.allow(&4), Some(0));
        assert_eq!(limiter.allow(&4), None);
        assert_eq!(limiter.tracked_peers(), 2);
    }

    #[test]
    fn idle_peers_are_forgotten_when_room_is_needed() {
        let limiter = PeerLogRateLimiter::new(Duration::ZERO, 1, 1);
        assert_eq!(limiter.allow(&1), Some(0));
        assert_eq!(limiter.allow(&2), Some(0));
        assert_eq!(limiter.tracked_peers(), 1);
    }

    #[test]
    fn truncation_keeps_whole_characters_and_says_what_was_cut() {
        assert_eq!(truncate_for_log("short", 16), "short");
        let text = "é".repeat(10); // 20 bytes
        let cut = truncate_for_log(&text, 5);
        assert!(cut.starts_with("éé…"), "{cut}");
        assert!(cut.contains("16 more bytes"), "{cut}");
    }
}

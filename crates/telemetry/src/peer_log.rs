//! Log limits for lines about untrusted peers: a rate limit per peer, so one hostile peer
//! flooding its own warnings cannot hide another peer's, and a cap on how much text a
//! peer gets into a log line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::LogRateLimiter;

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

/// One peer's window: as in [`LogRateLimiter`], kept inline so idle peers can be found
/// and forgotten.
#[derive(Debug)]
struct PeerWindow {
    window_start: Instant,
    allowed_in_window: u32,
    suppressed: u64,
}

#[derive(Debug)]
struct PeerWindows<K> {
    by_peer: HashMap<K, PeerWindow>,
    /// When idle peers were last looked for: at most once per window, so a flood of new
    /// peers into a full map costs one sweep per window, not one per line.
    last_sweep: Instant,
}

/// Lets at most `burst` lines per `window` through for each peer. The map of peers is
/// bounded: when it is full and no peer in it is idle, new peers share one fallback
/// limiter (with the same burst), so memory stays bounded whatever the number of peers.
#[derive(Debug)]
pub struct PeerLogRateLimiter<K> {
    window: Duration,
    burst: u32,
    max_peers: usize,
    peers: Mutex<PeerWindows<K>>,
    fallback: LogRateLimiter,
}

impl<K: Hash + Eq + Clone> PeerLogRateLimiter<K> {
    pub fn new(window: Duration, burst: u32, max_peers: usize) -> Self {
        PeerLogRateLimiter {
            window,
            burst,
            max_peers,
            peers: Mutex::new(PeerWindows {
                by_peer: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            fallback: LogRateLimiter::new(window, burst),
        }
    }

    /// `Some(suppressed_before)` when a line about `peer` may be logged (the count is how
    /// many of this peer's lines were suppressed since its last one), `None` when not.
    pub fn allow(&self, peer: &K) -> Option<u64> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if !peers.by_peer.contains_key(peer) && peers.by_peer.len() >= self.max_peers {
            if now.duration_since(peers.last_sweep) < self.window {
                drop(peers);
                return self.fallback.allow();
            }
            peers.last_sweep = now;
            let window = self.window;
            // A peer whose window ran out and that has nothing suppressed to report is
            // indistinguishable from one never seen.
            peers.by_peer.retain(|_, state| {
                now.duration_since(state.window_start) < window || state.suppressed > 0
            });
            if peers.by_peer.len() >= self.max_peers {
                drop(peers);
                return self.fallback.allow();
            }
        }
        let state = peers
            .by_peer
            .entry(peer.clone())
            .or_insert_with(|| PeerWindow {
                window_start: now,
                allowed_in_window: 0,
                suppressed: 0,
            });
        if now.duration_since(state.window_start) >= self.window {
            state.window_start = now;
            state.allowed_in_window = 0;
        }
        if state.allowed_in_window < self.burst {
            state.allowed_in_window += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
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

impl<K: Hash + Eq + Clone> Default for PeerLogRateLimiter<K> {
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
    fn a_full_map_sends_new_peers_to_the_fallback() {
        let limiter = PeerLogRateLimiter::new(Duration::from_secs(3600), 1, 2);
        assert_eq!(limiter.allow(&1), Some(0));
        assert_eq!(limiter.allow(&2), Some(0));
        // The map is full: 3 and 4 share the fallback's single line.
        assert_eq!(limiter.allow(&3), Some(0));
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

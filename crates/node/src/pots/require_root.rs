//! Tests that need root (files of another uid, another user's processes) fail with a clear
//! message when run without it, instead of passing without testing anything: CI runs them
//! as root, and a silently passing test would hide that they never ran.

/// Panics, naming `what` the test needs root for, unless this process is root.
pub(crate) fn require_root(what: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root ({what}); run the tests as root, as CI does"
    );
}

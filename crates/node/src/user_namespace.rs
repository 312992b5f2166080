//! Pots for a node that is not root: the process re-executes itself inside a user namespace
//! of its own, where it is root over two things only — its own user (uid 0 inside) and the
//! block of subordinate ids the system gave that user (`/etc/subuid`, `/etc/subgid`; inside
//! 1 up to the block's size). It is the layout rootless containers use, made by `unshare
//! --map-root-user --map-auto` with the setuid helpers `newuidmap`/`newgidmap` (Debian's
//! `uidmap` package).
//!
//! Each pot then runs as a subordinate id of its own: outside the namespace that is a uid
//! nobody else has, so a pot cannot read the node's files (its `totp.key`, spool, keys), cannot
//! signal the node or another pot, and its sockets name it to ingest — the same separation a
//! root node gets from a system user per pot, without root. The namespace gives the node no
//! power outside it: files it creates belong to the real user, and other users' files are
//! `nobody`'s inside.
//!
//! Nothing here runs unless the process is not root and wants pots; when the namespace
//! cannot be made (no `uidmap`, no subordinate ids, user namespaces disabled), the process
//! goes on as it is and its pots are refused with the reason and the fix.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Inside the namespace, pot ids start here: far from the ids the system's `/etc/passwd`
/// names (the namespace shares it), so a pot never shows up as a system account.
pub(crate) const FIRST_POT_ID: u32 = 20_000;
/// How many ids pots are spread over (by a hash of the pot id), when the block is as large
/// as usual (65,536).
const MOST_POT_IDS: u32 = 32_768;
/// Fewer than this many ids for pots and the block is taken to be too small.
const FEWEST_POT_IDS: u32 = 1_024;

/// What [`enter_user_namespace_for_pots`] did when it returned (on success it does not
/// return: the process is replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNamespaceEntry {
    /// Root already (in the system's namespace or in one of ours): nothing to do.
    NotNeeded,
    /// The namespace cannot be made here: why, and how to fix it.
    Unavailable(String),
}

/// The subordinate ids this process may give to pots: it runs as root in a user namespace
/// that maps its real user to 0 and a block of subordinate ids from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubordinateIds {
    /// Ids from [`FIRST_POT_ID`] on that pots are spread over.
    pub pot_id_span: u32,
}

/// Called first thing by a binary that will run pots: when the process is not root,
/// re-executes it, with the same arguments and environment, inside a new user namespace in
/// which it is root over its own user and its subordinate ids. Returns only when that is
/// not needed or not possible.
pub fn enter_user_namespace_for_pots() -> UserNamespaceEntry {
    if rustix::process::geteuid().is_root() {
        return UserNamespaceEntry::NotNeeded;
    }
    let reason = match probe() {
        Err(reason) => reason,
        Ok(()) => match std::env::current_exe() {
            Ok(program) => {
                let error = Command::new("unshare")
                    .args(["--map-root-user", "--map-auto", "--"])
                    .arg(program)
                    .args(std::env::args_os().skip(1))
                    .exec();
                format!("running unshare: {error}")
            }
            Err(error) => {
                format!("finding this program to run it again in a user namespace: {error}")
            }
        },
    };
    // Kept for the pot manager, which names it when it refuses pots.
    let _ = WHY_NOT_ENTERED.set(reason.clone());
    UserNamespaceEntry::Unavailable(reason)
}

/// Why [`enter_user_namespace_for_pots`] could not enter the namespace, once it tried.
static WHY_NOT_ENTERED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why this process is not in a user namespace of its own, when it tried to enter one.
pub(crate) fn why_not_entered() -> Option<&'static str> {
    WHY_NOT_ENTERED.get().map(String::as_str)
}

/// Makes a namespace the way the re-execution will, running `true` in it: its error is the
/// reason when it fails (the process itself must not die of a missing helper).
fn probe() -> Result<(), String> {
    let output = Command::new("unshare")
        .args(["--map-root-user", "--map-auto", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| format!("running unshare (util-linux) failed: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    Err(format!(
        "a user namespace with subordinate ids could not be made ({}); install newuidmap and newgidmap (Debian: apt install uidmap) and give this user subordinate ids (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER)",
        said.trim()
    ))
}

/// The subordinate ids pots may use when this process is root in a namespace made by
/// [`enter_user_namespace_for_pots`]; `None` in the system's namespace (real root) or any
/// other layout.
pub(crate) fn subordinate_ids_of_this_process() -> Option<SubordinateIds> {
    let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    subordinate_ids_in(&map)
}

/// Reads a `uid_map`: ours maps one real user to 0 (never root: that would be the system's
/// namespace or a container's) and a block to 1 onwards.
fn subordinate_ids_in(uid_map: &str) -> Option<SubordinateIds> {
    let mut root_is_a_user = false;
    let mut block = None;
    for line in uid_map.lines() {
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|field| field.parse().ok())
            .collect();
        match fields.as_slice() {
            [0, outside, 1] if *outside != 0 => root_is_a_user = true,
            [1, outside, count] if *outside != 0 => block = Some(*count),
            _ => {}
        }
    }
    let count = u32::try_from(block?).ok()?;
    if !root_is_a_user {
        return None;
    }
    // Inside, the block covers 1..=count; the last two ids are left alone (65534 is the
    // name of "nobody", which unmapped users also show up as).
    let usable = count.saturating_sub(FIRST_POT_ID + 2);
    let pot_id_span = usable.min(MOST_POT_IDS);
    (pot_id_span >= FEWEST_POT_IDS).then_some(SubordinateIds { pot_id_span })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_layout_gives_pot_ids() {
        assert_eq!(
            subordinate_ids_in(
                "         0       1001          1\n         1     100000      65536\n"
            ),
            Some(SubordinateIds {
                pot_id_span: MOST_POT_IDS
            })
        );
        // The system's namespace: real root.
        assert_eq!(subordinate_ids_in("0 0 4294967295\n"), None);
        // Root mapped to root (a container), or no block: not ours.
        assert_eq!(subordinate_ids_in("0 0 1\n1 100000 65536\n"), None);
        assert_eq!(subordinate_ids_in("0 1001 1\n"), None);
        // A block too small for pots past the system's ids.
        assert_eq!(subordinate_ids_in("0 1001 1\n1 100000 20000\n"), None);
        let small = subordinate_ids_in("0 1001 1\n1 100000 25000\n").unwrap();
        assert_eq!(small.pot_id_span, 25_000 - FIRST_POT_ID - 2);
    }
}

//! Least privilege for pots: whether this node may run pots at all, and as whom.
//!
//! A node running as root gives every pot a unix user of its own (see `pot_users.rs`). A
//! node that is not root re-executed itself in a user namespace at start where it can
//! (`user_namespace.rs`) and gives every pot a subordinate id of its own. Otherwise it could
//! only run pots as itself, and a pot would then read the node's `totp.key`, spool and TLS
//! keys: it refuses to run pots unless the operator opted in with
//! `honeypot.allow_unprivileged: true`.

use nix::unistd::Uid;

use crate::user_namespace::{self, SubordinateIds};

/// Who a pot's processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// How this node runs its pots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PotPrivilege {
    /// Root: each pot runs as its own system user, named from this prefix
    /// (`honeypot.run_as`) and the pot id.
    PerPotUsers { prefix: String },
    /// Root in the node's own user namespace: each pot runs as one of the user's
    /// subordinate ids (named from the prefix and the pot id for display only).
    SubordinateIds { prefix: String, ids: SubordinateIds },
    /// Not root, and the operator accepted that pots run as the node's own user.
    NodeUser,
}

/// Decides how pots run. `Err` (pots unavailable, with the fix in the message) when the node
/// is not root (nor root in its own user namespace: `namespace_unavailable` says why not)
/// and `allow_unprivileged` is off.
pub(crate) fn decide_pot_privilege(
    run_as_prefix: &str,
    allow_unprivileged: bool,
    namespace_unavailable: Option<&str>,
) -> Result<PotPrivilege, String> {
    if Uid::effective().is_root() {
        if let Some(ids) = user_namespace::subordinate_ids_of_this_process() {
            return Ok(PotPrivilege::SubordinateIds {
                prefix: run_as_prefix.to_owned(),
                ids,
            });
        }
        return Ok(PotPrivilege::PerPotUsers {
            prefix: run_as_prefix.to_owned(),
        });
    }
    if allow_unprivileged {
        tracing::warn!(
            uid = Uid::effective().as_raw(),
            "THE NODE IS NOT ROOT AND honeypot.allow_unprivileged IS SET: pots run as the node's own user and a compromised pot can read the node's totp.key, spool and TLS keys, and speak for any pot; run the node as root for per-pot users"
        );
        return Ok(PotPrivilege::NodeUser);
    }
    let namespace = namespace_unavailable.map_or_else(String::new, |reason| format!(" ({reason})"));
    Err(format!(
        "the node runs as uid {} (not root) without a user namespace of its own{namespace}, so its pots would run as the node's own user and could read its totp.key, spool and TLS keys; run the node as root or make the user namespace possible (each pot then gets a user of its own), or set honeypot.allow_unprivileged: true to accept that",
        Uid::effective().as_raw()
    ))
}

//! One unix user per pot: naming, creating and removing it (ending its processes is
//! `user_processes.rs`).
//!
//! A pot that broke out of its honeypot owns its user. With a user per pot it cannot touch
//! another pot's files, and stopping it does not depend on process groups it can leave
//! with `setsid()`: the node ends everything that user runs.

use std::sync::Mutex;

use nix::unistd::User;
use sha2::{Digest, Sha256};

use super::privilege::RunAs;
use crate::user_namespace::{SubordinateIds, FIRST_POT_ID};

/// Longest user name `useradd` accepts everywhere.
pub(crate) const MAX_USER_NAME: usize = 32;
/// Hex digits of the pot id's SHA-256 in the user name: short, yet unlikely to collide.
const HASH_DIGITS: usize = 10;
/// Longest `honeypot.run_as` prefix: prefix, `-` and the hash stay within 32 characters.
pub(crate) const MAX_PREFIX: usize = MAX_USER_NAME - HASH_DIGITS - 1;

/// `useradd`/`userdel` lock the user database; two at once would fail, so they take turns.
static USER_DATABASE: Mutex<()> = Mutex::new(());

/// `<prefix>-<first 10 hex digits of sha256(pot id)>`: valid for `useradd` whatever the
/// pot id (which may hold `.` and capitals), and the same for a pot id every time.
pub(crate) fn pot_user_name(prefix: &str, pot_id: &str) -> String {
    let digest = Sha256::digest(pot_id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{prefix}-{}", &hex[..HASH_DIGITS])
}

/// The subordinate id pot `pot_id` runs as in the node's own user namespace: picked by a
/// hash of the pot id, so the same every time (its files keep their owner across
/// restarts), and shown under the name a per-pot user would have. Two pot ids of one node
/// may hash to the same id: the install of the second is refused (`clashing_pot`).
pub(crate) fn subordinate_pot_user(prefix: &str, pot_id: &str, ids: SubordinateIds) -> RunAs {
    let digest = Sha256::digest(pot_id.as_bytes());
    let number = u64::from_be_bytes(digest[..8].try_into().expect("a digest has 8 bytes"));
    let offset = u32::try_from(number % u64::from(ids.pot_id_span)).expect("below a u32 span");
    let id = FIRST_POT_ID + offset;
    RunAs {
        name: pot_user_name(prefix, pot_id),
        uid: id,
        gid: id,
    }
}

/// Of `installed` pot ids, one whose subordinate id is the one `pot_id` would get.
pub(crate) fn clashing_pot<'a>(
    pot_id: &str,
    installed: impl IntoIterator<Item = &'a String>,
    ids: SubordinateIds,
) -> Option<&'a String> {
    let wanted = subordinate_pot_user("p", pot_id, ids).uid;
    installed.into_iter().find(|other| {
        other.as_str() != pot_id && subordinate_pot_user("p", other, ids).uid == wanted
    })
}

/// Whether `prefix` can start a user name `useradd` accepts (lowercase letters, digits,
/// `_` and `-`, starting with a letter or `_`), short enough for the hash to follow.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// Whether `name` has the shape of a pot user's name: a valid prefix, `-`, then the ten
/// lowercase hex digits of a pot id's hash. Root and ordinary accounts never do.
pub(crate) fn is_pot_user_name(name: &str) -> bool {
    name.rsplit_once('-').is_some_and(|(prefix, hash)| {
        valid_prefix(prefix)
            && hash.len() == HASH_DIGITS
            && hash
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn lookup(user_name: &str) -> Result<Option<User>, String> {
    User::from_name(user_name).map_err(|error| format!("looking up user {user_name:?}: {error}"))
}

/// The pot's user, created as a system user without home or login shell when missing.
pub(crate) fn ensure_pot_user(user_name: &str) -> Result<RunAs, String> {
    if lookup(user_name)?.is_none() {
        let _turn = USER_DATABASE.lock().unwrap_or_else(|p| p.into_inner());
        if lookup(user_name)?.is_none() {
            let status = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    user_name,
                ])
                .status()
                .map_err(|error| format!("running useradd for {user_name:?}: {error}"))?;
            if !status.success() {
                return Err(format!("useradd {user_name:?} failed with {status}"));
            }
            tracing::info!(user = user_name, "created a pot user");
        }
    }
    let user = lookup(user_name)?
        .ok_or_else(|| format!("user {user_name:?} still missing after useradd"))?;
    if user.uid.is_root() {
        return Err(format!(
            "pot user {user_name:?} is root; pots must not run as root"
        ));
    }
    Ok(RunAs {
        name: user_name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// The uid of an existing user, `None` when there is none.
/// Never root nor the node's own user: their processes are ended in its name, and a
/// misconfigured account must not make a stop kill the node and everything root runs.
pub(crate) fn existing_user(user_name: &str) -> Option<RunAs> {
    let node_user = nix::unistd::geteuid().as_raw();
    lookup(user_name)
        .ok()
        .flatten()
        .filter(|user| !user.uid.is_root() && user.uid.as_raw() != node_user)
        .map(|user| RunAs {
            name: user_name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
}

/// Removes a pot's user (after its processes were ended). A user that is already gone is
/// fine.
pub(crate) fn remove_pot_user(user_name: &str) -> Result<(), String> {
    let _turn = USER_DATABASE.lock().unwrap_or_else(|p| p.into_inner());
    if lookup(user_name)?.is_none() {
        return Ok(());
    }
    let status = std::process::Command::new("userdel")
        .arg(user_name)
        .status()
        .map_err(|error| format!("running userdel for {user_name:?}: {error}"))?;
    if !status.success() {
        return Err(format!("userdel {user_name:?} failed with {status}"));
    }
    tracing::info!(user = user_name, "removed a pot user");
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn root_is_never_taken_for_a_pot_user() {
        assert_eq!(existing_user("root"), None);
    }

    use super::*;

    #[test]
    fn subordinate_ids_are_stable_in_range_and_clashes_are_found() {
        let ids = SubordinateIds { pot_id_span: 1024 };
        let cowrie = subordinate_pot_user("honeybee", "cowrie-01", ids);
        assert_eq!(cowrie, subordinate_pot_user("honeybee", "cowrie-01", ids));
        assert_eq!(cowrie.uid, cowrie.gid);
        assert_eq!(cowrie.name, pot_user_name("honeybee", "cowrie-01"));
        let installed: Vec<String> = (0..2000).map(|n| format!("pot-{n}")).collect();
        for pot_id in &installed {
            let uid = subordinate_pot_user("honeybee", pot_id, ids).uid;
            assert!((FIRST_POT_ID..FIRST_POT_ID + 1024).contains(&uid), "{uid}");
        }
        // 2,000 pot ids over 1,024 ids: some share one, and each clash is named.
        let clash = clashing_pot("pot-0", &installed, ids);
        let first = subordinate_pot_user("x", "pot-0", ids).uid;
        match clash {
            Some(other) => assert_eq!(subordinate_pot_user("x", other, ids).uid, first),
            None => assert!(installed[1..]
                .iter()
                .all(|other| subordinate_pot_user("x", other, ids).uid != first)),
        }
        assert_eq!(
            clashing_pot("pot-0", &installed[..1], ids),
            None,
            "not with itself"
        );
    }

    #[test]
    fn user_names_are_valid_short_and_stable() {
        let name = pot_user_name("honeybee", "Cowrie.01_x");
        assert_eq!(name, pot_user_name("honeybee", "Cowrie.01_x"));
        assert_ne!(name, pot_user_name("honeybee", "cowrie.01_x"));
        assert!(name.starts_with("honeybee-") && name.len() == "honeybee-".len() + 10);
        let longest = pot_user_name(&"a".repeat(MAX_PREFIX), &"x".repeat(64));
        assert!(longest.len() <= MAX_USER_NAME);
        assert!(valid_prefix("honeybee") && valid_prefix("hb") && valid_prefix("_pots-1"));
        assert!(!valid_prefix("") && !valid_prefix("HoneyBee") && !valid_prefix("1abc"));
        assert!(!valid_prefix("a b") && !valid_prefix(&"a".repeat(MAX_PREFIX + 1)));
        assert!(is_pot_user_name(&name) && is_pot_user_name(&longest));
        for not_pot_user in [
            "root",
            "alice",
            "honeybee",
            "honeybee-xyz",
            "honeybee-ABCDEF0123",
        ] {
            assert!(!is_pot_user_name(not_pot_user), "{not_pot_user}");
        }
    }
}

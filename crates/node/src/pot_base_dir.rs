//! Where a node's pots live: `honeypot.base_dir`, or by default `<data dir>/pots` — unless
//! the pot users could not reach that (a root node whose data directory is under `/root`,
//! mode 0700, say), then a system location every pot user can pass through.
//!
//! Pots run as unprivileged users, so every directory above their own must be traversable
//! by others. A configured `base_dir` that is not is an error naming the directory to fix;
//! on a root node the default falls back to `/var/lib/honeybee/pots/<node id>`, created by
//! root with pass-through modes (0711) and checked to be root's own, never a link. A node
//! in its own user namespace cannot make that: its default out of reach is an error too.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::NodeConfig;
use crate::data_dir::TRAVERSE_ONLY;

/// Where the default goes when `<data dir>/pots` is out of the pot users' reach.
pub(crate) const SYSTEM_POT_ROOT: &str = "/var/lib/honeybee/pots";

/// The directory the pots of `node_id` live in, created and made pass-through, with the
/// reason when it is not the configured or default one. `per_pot_users`: pots run as other
/// users, who must reach it. `system_root`: where the default may move (only a root node
/// can make it).
pub(crate) fn resolve_pot_base_dir(
    config: &NodeConfig,
    node_id: u64,
    per_pot_users: bool,
    system_root: Option<&Path>,
) -> Result<(PathBuf, Option<String>), String> {
    let data_dir = &config.node.data_dir;
    let wanted = config.honeypot.base_dir(data_dir);
    let configured = config.honeypot.base_dir.is_some();
    prepare(&wanted)?;
    if !per_pot_users {
        return Ok((wanted, None));
    }
    let Some(closed) = first_closed_ancestor(&wanted)? else {
        return Ok((wanted, None));
    };
    let Some(system_root) = system_root.filter(|_| !configured) else {
        let setting = if configured {
            "honeypot.base_dir"
        } else {
            "the default honeypot.base_dir"
        };
        return Err(format!(
            "pot users cannot reach {setting} {}: {} is not traversable by others (chmod o+x it, or set honeypot.base_dir elsewhere)",
            wanted.display(),
            closed.display()
        ));
    };
    let fallback = system_root.join(node_id.to_string());
    prepare_system_root(system_root)?;
    prepare(&fallback)?;
    if let Some(closed) = first_closed_ancestor(&fallback)? {
        return Err(format!(
            "pot users cannot reach {} either: {} is not traversable by others",
            fallback.display(),
            closed.display()
        ));
    }
    let reason = format!(
        "the default {} is out of the pot users' reach ({} is not traversable by others), so pots live in {}",
        wanted.display(),
        closed.display(),
        fallback.display()
    );
    Ok((fallback, Some(reason)))
}

/// Creates `directory` if needed and makes it pass-through (0711).
fn prepare(directory: &Path) -> Result<(), String> {
    std::fs::create_dir_all(directory)
        .map_err(|error| format!("creating {}: {error}", directory.display()))?;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(TRAVERSE_ONLY))
        .map_err(|error| format!("restricting {}: {error}", directory.display()))
}

/// The system root and each directory above it that this creates must be root's own,
/// real directories nobody else may write: a pot user must not be able to plant one.
fn prepare_system_root(system_root: &Path) -> Result<(), String> {
    let mut created = Vec::new();
    for directory in system_root
        .ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        match std::fs::symlink_metadata(directory) {
            Ok(metadata) => {
                if !metadata.is_dir() {
                    return Err(format!(
                        "{} must be a directory, not a link or a file",
                        directory.display()
                    ));
                }
                let writable_by_others =
                    metadata.mode() & 0o022 != 0 && metadata.mode() & 0o1000 == 0;
                if metadata.uid() != 0 || writable_by_others {
                    return Err(format!(
                        "{} must belong to root and be writable by root alone",
                        directory.display()
                    ));
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(directory)
                    .map_err(|error| format!("creating {}: {error}", directory.display()))?;
                created.push(directory.to_path_buf());
            }
            Err(error) => return Err(format!("reading {}: {error}", directory.display())),
        }
    }
    for directory in created {
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(TRAVERSE_ONLY))
            .map_err(|error| format!("restricting {}: {error}", directory.display()))?;
    }
    Ok(())
}

/// The first directory from the root down to `directory` that others cannot pass through.
fn first_closed_ancestor(directory: &Path) -> Result<Option<PathBuf>, String> {
    let absolute = std::path::absolute(directory)
        .map_err(|error| format!("resolving {}: {error}", directory.display()))?;
    for ancestor in absolute.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let mode = std::fs::metadata(ancestor)
            .map_err(|error| format!("reading {}: {error}", ancestor.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Ok(Some(ancestor.to_path_buf()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(data_dir: &Path, base_dir: Option<&Path>) -> NodeConfig {
        let mut config = NodeConfig::default();
        config.node.data_dir = data_dir.to_path_buf();
        config.honeypot.base_dir = base_dir.map(Path::to_path_buf);
        config
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_default_out_of_reach_moves_to_the_system_root_and_a_configured_one_is_an_error() {
        let home = tempfile::tempdir().unwrap();
        // Like /root: nobody else passes through.
        set_mode(home.path(), 0o700);
        let data_dir = home.path().join("honeybee-data/node");
        let system = tempfile::tempdir().unwrap();
        set_mode(system.path(), 0o755);
        let system_root = system.path().join("lib/honeybee/pots");

        let (base, reason) =
            resolve_pot_base_dir(&config_in(&data_dir, None), 42, true, Some(&system_root))
                .unwrap();
        assert_eq!(base, system_root.join("42"));
        let reason = reason.expect("the move is explained");
        assert!(
            reason.contains(&home.path().display().to_string()),
            "{reason}"
        );
        for directory in [system.path().join("lib"), system_root.clone(), base.clone()] {
            let mode = std::fs::metadata(&directory).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, TRAVERSE_ONLY, "{}", directory.display());
        }

        let configured = home.path().join("my-pots");
        let error = resolve_pot_base_dir(
            &config_in(&data_dir, Some(&configured)),
            42,
            true,
            Some(&system_root),
        )
        .unwrap_err();
        assert!(error.contains("honeypot.base_dir"), "{error}");
        // A node that cannot make the system location (root in its own user namespace):
        // the default out of reach is an error that says what to do.
        let error = resolve_pot_base_dir(&config_in(&data_dir, None), 42, true, None).unwrap_err();
        assert!(
            error.contains("chmod o+x") && error.contains(&home.path().display().to_string()),
            "{error}"
        );

        // Reachable, or pots that run as the node itself: the default stays.
        set_mode(home.path(), 0o711);
        let (base, reason) =
            resolve_pot_base_dir(&config_in(&data_dir, None), 42, true, Some(&system_root))
                .unwrap();
        assert_eq!((base, reason), (data_dir.join("pots"), None));
        set_mode(home.path(), 0o700);
        let (base, _) =
            resolve_pot_base_dir(&config_in(&data_dir, None), 42, false, Some(&system_root))
                .unwrap();
        assert_eq!(base, data_dir.join("pots"));
    }

    #[test]
    fn a_planted_link_as_the_system_root_is_refused() {
        let system = tempfile::tempdir().unwrap();
        set_mode(system.path(), 0o755);
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), system.path().join("lib")).unwrap();
        let error = prepare_system_root(&system.path().join("lib/honeybee/pots")).unwrap_err();
        assert!(error.contains("not a link"), "{error}");
    }
}

//! Honeypot management on a Full node: the potstore manifest, installed pots and their
//! persistence, supervision of their processes, their users, logs and resource use.

mod caught;
mod git_source;
mod install;
mod logs;
mod manager;
pub(crate) mod manifest;
mod pot_users;
mod privilege;
mod procfs;
mod redact;
#[cfg(test)]
mod require_root;
pub(crate) mod safe_fs;
mod scheduling;
mod shared_temp;
mod state;
mod stopping;
mod supervisor;
mod user_processes;

pub(crate) use git_source::GitPolicy;
pub(crate) use manager::{PotManager, PotSettings};
pub(crate) use pot_users::valid_prefix as valid_user_prefix;
pub(crate) use privilege::{decide_pot_privilege, PotPrivilege};

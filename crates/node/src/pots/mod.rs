//! Honeypot management on a Full node: the potstore manifest, installed pots and their
//! persistence, supervision of their processes, their logs and resource use.

mod logs;
mod manager;
pub(crate) mod manifest;
mod privilege;
mod procfs;
mod state;
mod supervisor;

pub(crate) use manager::{PotManager, PotSettings};
pub(crate) use privilege::resolve_run_as;

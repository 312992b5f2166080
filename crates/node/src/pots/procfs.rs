//! Resource use of a pot's process group, read from `/proc`.

/// `/proc/<pid>/stat` counts CPU time in clock ticks, which Linux always exposes at 100 Hz.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct GroupUsage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub processes: u32,
}

/// Sums CPU time and resident memory over every process of process group `group`.
pub(crate) fn group_usage(group: u32) -> GroupUsage {
    let mut usage = GroupUsage::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name (field 2) may contain spaces: fields are counted after its ')'.
        let Some(after_name) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after_name.split(' ').collect();
        // After the name: state(3) ppid(4) pgrp(5) … utime(14) stime(15).
        let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
        if field(5) != Some(u64::from(group)) {
            continue;
        }
        let ticks = field(14).unwrap_or(0) + field(15).unwrap_or(0);
        usage.cpu_seconds += ticks as f64 / TICKS_PER_SECOND;
        usage.rss_bytes += resident_bytes(pid);
        usage.processes += 1;
    }
    usage
}

/// When process `pid` started (clock ticks after boot, `/proc/<pid>/stat` field 22): with the
/// pid, it identifies a process across pid reuse. `None` for a missing process or a zombie.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_process_group_uses_memory() {
        let group = nix::unistd::getpgrp().as_raw() as u32;
        let usage = group_usage(group);
        assert!(usage.processes >= 1);
        assert!(usage.rss_bytes > 0);
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(u32::MAX), None);
    }
}

//! Captured pot output: a size-rotated log file per pot, and reading its last lines.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Appends lines to `path`, moving it to `path.1` (… `path.N`) when it grows past a size.
#[derive(Debug)]
pub(crate) struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
    size: u64,
}

impl RotatingLog {
    pub fn new(path: PathBuf, max_bytes: u64, keep: usize) -> Self {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        RotatingLog {
            path,
            max_bytes,
            keep: keep.max(1),
            file: None,
            size,
        }
    }

    /// Writes one line; I/O errors are swallowed after being counted by the caller's
    /// absence of output: a full disk must not stop the pot.
    pub fn write_line(&mut self, line: &[u8]) {
        if self.size + line.len() as u64 + 1 > self.max_bytes && self.size > 0 {
            self.rotate();
        }
        if self.file.is_none() {
            // 0600: a pot's output may hold what attackers typed, and the node's own
            // directories are closed to everyone else.
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .ok();
            if let Some(file) = &self.file {
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
        }
        if let Some(file) = self.file.as_mut() {
            if file
                .write_all(line)
                .and_then(|_| file.write_all(b"\n"))
                .is_ok()
            {
                self.size += line.len() as u64 + 1;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        for index in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(&self.path, index), numbered(&self.path, index + 1));
        }
        let _ = std::fs::rename(&self.path, numbered(&self.path, 1));
        self.size = 0;
    }
}

fn numbered(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// The last `count` lines of the log, reaching into the previous file when needed.
pub(crate) fn tail(path: &Path, count: usize) -> Vec<String> {
    let mut lines = read_lines(path);
    if lines.len() < count {
        let mut older = read_lines(&numbered(path, 1));
        older.append(&mut lines);
        lines = older;
    }
    let skip = lines.len().saturating_sub(count);
    lines.split_off(skip)
}

fn read_lines(path: &Path) -> Vec<String> {
    match File::open(path) {
        Ok(file) => BufReader::new(file)
            .split(b'\n')
            .map_while(Result::ok)
            .map(|line| String::from_utf8_lossy(&line).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_the_tail_spans_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pot.log");
        let mut log = RotatingLog::new(path.clone(), 100, 2);
        for index in 0..30 {
            log.write_line(format!("line {index:02}").as_bytes());
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        for file in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        assert!(numbered(&path, 2).exists());
        assert!(
            !numbered(&path, 3).exists(),
            "only `keep` old files are kept"
        );
        let last = tail(&path, 12);
        assert_eq!(last.len(), 12);
        assert_eq!(last.last().unwrap(), "line 29");
        assert_eq!(last.first().unwrap(), "line 18");
    }
}

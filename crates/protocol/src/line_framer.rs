//! Splits the ingest byte stream into lines with a size cap.
//!
//! A line longer than the cap is reported once as `TooLong` and its remaining bytes are
//! discarded up to the next newline, so one hostile or buggy honeypot line never grows
//! memory and never desynchronises the lines after it.

/// Default maximum ingest line, per the contract (64 KiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum FramedLine<'a> {
    /// A complete line without its `\n` (a trailing `\r` is left for the parser to trim).
    Line(&'a [u8]),
    /// A line exceeded the cap and was dropped.
    TooLong,
}

#[derive(Debug)]
pub struct LineFramer {
    buffer: Vec<u8>,
    /// Index of the first byte not yet returned.
    start: usize,
    /// Bytes before this index are known to contain no newline.
    scanned: usize,
    /// True while skipping the rest of an over-long line.
    discarding: bool,
    max_line_bytes: usize,
}

impl LineFramer {
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            max_line_bytes,
        }
    }

    /// Appends received bytes. Lines returned earlier are dropped from the buffer here.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Returns the next complete line, or `None` when more bytes are needed.
    pub fn next_line(&mut self) -> Option<FramedLine<'_>> {
        loop {
            let newline = self.buffer[self.scanned..]
                .iter()
                .position(|&byte| byte == b'\n')
                .map(|offset| self.scanned + offset);
            match newline {
                Some(end) if self.discarding => {
                    self.discarding = false;
                    self.start = end + 1;
                    self.scanned = self.start;
                }
                Some(end) => {
                    let line_start = self.start;
                    self.start = end + 1;
                    self.scanned = self.start;
                    if end - line_start > self.max_line_bytes {
                        return Some(FramedLine::TooLong);
                    }
                    return Some(FramedLine::Line(&self.buffer[line_start..end]));
                }
                None if self.discarding => {
                    self.buffer.clear();
                    self.start = 0;
                    self.scanned = 0;
                    return None;
                }
                None => {
                    self.scanned = self.buffer.len();
                    if self.buffer.len() - self.start > self.max_line_bytes {
                        self.buffer.clear();
                        self.start = 0;
                        self.scanned = 0;
                        self.discarding = true;
                        return Some(FramedLine::TooLong);
                    }
                    return None;
                }
            }
        }
    }

    /// At end of stream: the last line when the sender closed without a final newline.
    pub fn finish(&mut self) -> Option<&[u8]> {
        let rest = &self.buffer[self.start..];
        if self.discarding || rest.is_empty() {
            return None;
        }
        Some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(framer: &mut LineFramer) -> Vec<Result<String, ()>> {
        let mut lines = Vec::new();
        while let Some(framed) = framer.next_line() {
            lines.push(match framed {
                FramedLine::Line(bytes) => Ok(String::from_utf8(bytes.to_vec()).unwrap()),
                FramedLine::TooLong => Err(()),
            });
        }
        lines
    }

    #[test]
    fn lines_split_across_pushes() {
        let mut framer = LineFramer::new(100);
        framer.push(b"ab");
        assert!(collect(&mut framer).is_empty());
        framer.push(b"c\nde\r\nf");
        assert_eq!(
            collect(&mut framer),
            vec![Ok("abc".into()), Ok("de\r".into())]
        );
        assert_eq!(framer.finish(), Some(&b"f"[..]));
    }

    #[test]
    fn over_long_line_is_reported_once_and_the_next_line_survives() {
        let mut framer = LineFramer::new(8);
        framer.push(b"0123456789");
        assert_eq!(collect(&mut framer), vec![Err(())]);
        framer.push(b"more bytes of the same line");
        assert!(collect(&mut framer).is_empty());
        framer.push(b"tail\nok\n");
        assert_eq!(collect(&mut framer), vec![Ok("ok".into())]);
        assert_eq!(framer.finish(), None);
    }

    #[test]
    fn over_long_line_arriving_whole_is_rejected() {
        let mut framer = LineFramer::new(4);
        framer.push(b"123456\nabc\n");
        assert_eq!(collect(&mut framer), vec![Err(()), Ok("abc".into())]);
    }
}

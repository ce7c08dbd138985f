//! The wire: reading bounded lines from a socket, and cleaning text.
//!
//! A [`LineReader`] turns a byte stream into [`Line`]s without ever holding more
//! than one maximum line (plus one read) in memory, whatever the peer sends.
//! [`sanitize`] removes the characters that could drive another user's terminal.

use std::io::{self, Read};

/// Bytes first asked of the socket per read: small, since a client waiting for
/// its next line holds its buffer all that time (thousands of idle clients).
const READ_CHUNK: usize = 256;
/// Largest read: a client that sends fast gets bigger reads, fewer calls.
const READ_CHUNK_MAX: usize = 16 * 1024;

/// One line as read from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line of valid UTF-8, without its `\n` or `\r\n`.
    Text(String),
    /// A line longer than the limit; it was dropped up to its `\n`.
    TooLong,
    /// A line that was not valid UTF-8; it was dropped.
    NotUtf8,
    /// A message of a framing transport (a WebSocket text frame) that held
    /// a line break: one message is one line, so it was dropped.
    HasLineBreak,
}

/// Reads `\n`-terminated lines of at most `max` bytes.
///
/// Promises:
/// 1. Memory stays below `max + READ_CHUNK + 1` bytes whatever the peer sends.
/// 2. A too-long line is reported once, as [`Line::TooLong`], and skipped up to
///    and including its `\n`; the next line reads normally.
/// 3. Bytes after a line stay buffered for the next call: nothing is lost when a
///    client sends many lines at once.
/// 4. At end of stream a last line without `\n` is still returned.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    /// Bytes of `buf[start..]` already searched for `\n`.
    scanned: usize,
    max: usize,
    /// Inside a too-long line: discard until its `\n`.
    discarding: bool,
    /// Bytes the next read asks for: doubles while reads come back full,
    /// back to [`READ_CHUNK`] once everything read was used.
    chunk: usize,
}

impl<R: Read> LineReader<R> {
    /// A reader of lines of at most `max` bytes (without the line ending).
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
            discarding: false,
            chunk: READ_CHUNK,
        }
    }

    /// The source the lines are read from.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next line; `Ok(None)` at end of stream. I/O errors (including read
    /// timeouts) are returned as they are, and the reader stays usable.
    pub fn read_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let pending = &self.buf[self.start..];
            if let Some(pos) = pending[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.start + self.scanned + pos;
                let line = self.take(end, end + 1);
                if std::mem::take(&mut self.discarding) {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(line));
            }
            self.scanned = pending.len();
            // `max + 1` leaves room for the `\r` of a `\r\n` ending.
            if self.scanned > self.max + 1 {
                self.discarding = true;
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
            }
            if self.fill()? == 0 {
                if self.start == self.buf.len() {
                    if std::mem::take(&mut self.discarding) {
                        return Ok(Some(Line::TooLong));
                    }
                    return Ok(None);
                }
                let end = self.buf.len();
                let line = self.take(end, end);
                if std::mem::take(&mut self.discarding) {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(line));
            }
        }
    }

    /// Removes `buf[start..consumed]` and returns `buf[start..end]` as a line.
    fn take(&mut self, end: usize, consumed: usize) -> Line {
        let mut raw = &self.buf[self.start..end];
        if raw.last() == Some(&b'\r') {
            raw = &raw[..raw.len() - 1];
        }
        let line = if raw.len() > self.max {
            Line::TooLong
        } else {
            match std::str::from_utf8(raw) {
                Ok(text) => Line::Text(text.to_string()),
                Err(_) => Line::NotUtf8,
            }
        };
        self.start = consumed;
        self.scanned = 0;
        if self.start == self.buf.len() {
            // All read was used: give a grown buffer back while the client idles.
            if self.buf.capacity() > READ_CHUNK * 4 {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
            self.chunk = READ_CHUNK;
        }
        line
    }

    /// Reads one chunk more; returns the bytes read (0 at end of stream).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        let chunk = self.chunk;
        self.buf.resize(old + chunk, 0);
        let read = loop {
            match self.inner.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(n) => {
                if n == chunk {
                    self.chunk = (chunk * 2).min(READ_CHUNK_MAX);
                }
                self.buf.truncate(old + n);
                if self.buf.is_empty() {
                    // Give an idle client's buffer back.
                    self.buf = Vec::new();
                }
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(e)
            }
        }
    }
}

/// True for the characters nobody may send: C0 controls but tab, DEL, and C1.
pub fn is_forbidden(c: char) -> bool {
    c != '\t' && c.is_control()
}

/// The text with every forbidden character removed, so that no user can move
/// another user's cursor, change colours or ring bells.
pub fn sanitize(text: &str) -> String {
    text.chars().filter(|&c| !is_forbidden(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.read_line().expect("reading from a slice") {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[test]
    fn lines_split_on_newline_and_crlf() {
        assert_eq!(
            lines(b"alice\r\nhello\n\nlast", 100),
            vec![text("alice"), text("hello"), text(""), text("last")]
        );
    }

    #[test]
    fn a_line_at_the_limit_passes_and_one_past_it_is_dropped() {
        let at = "a".repeat(10);
        let past = "b".repeat(11);
        let input = format!("{at}\n{past}\nnext\n");
        assert_eq!(
            lines(input.as_bytes(), 10),
            vec![text(&at), Line::TooLong, text("next")]
        );
    }

    #[test]
    fn crlf_does_not_count_against_the_limit() {
        assert_eq!(lines(b"abcd\r\n", 4), vec![text("abcd")]);
    }

    #[test]
    fn a_huge_line_is_reported_once_and_memory_stays_bounded() {
        let mut input = vec![b'x'; 1_000_000];
        input.extend_from_slice(b"\nafter\n");
        let mut reader = LineReader::new(&input[..], 100);
        assert_eq!(reader.read_line().unwrap(), Some(Line::TooLong));
        assert!(reader.buf.capacity() <= 2 * (100 + READ_CHUNK_MAX + 2));
        assert_eq!(reader.read_line().unwrap(), Some(text("after")));
        assert_eq!(reader.read_line().unwrap(), None);
    }

    #[test]
    fn a_huge_line_cut_by_end_of_stream_is_still_reported() {
        let input = vec![b'x'; 50_000];
        assert_eq!(lines(&input, 100), vec![Line::TooLong]);
    }

    #[test]
    fn invalid_utf8_is_dropped_and_the_next_line_reads() {
        assert_eq!(
            lines(b"ok\n\xff\xfe bad\nfine \xc3\xa9\n", 100),
            vec![text("ok"), Line::NotUtf8, text("fine é")]
        );
    }

    /// A reader that hands out one byte per call, as a slow network might.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.split_first() {
                Some((&b, rest)) if !buf.is_empty() => {
                    buf[0] = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn lines_arriving_byte_by_byte_are_whole() {
        let mut reader = LineReader::new(Trickle("héllo\nworld\n".as_bytes()), 100);
        assert_eq!(reader.read_line().unwrap(), Some(text("héllo")));
        assert_eq!(reader.read_line().unwrap(), Some(text("world")));
        assert_eq!(reader.read_line().unwrap(), None);
    }

    #[test]
    fn sanitize_removes_escapes_bells_del_and_c1_but_keeps_tabs_and_unicode() {
        assert_eq!(
            sanitize("\u{1b}[31mred\u{7}\u{7f}\u{9b}2J\tok ✓ é"),
            "[31mred2J\tok ✓ é"
        );
        assert_eq!(sanitize("plain"), "plain");
    }
}

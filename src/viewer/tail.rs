//! Tail and follow a CSV file that another process appends to: the one reader
//! both viewers use for `messages.csv` and `data.csv`.
//!
//! [`Tail`] keeps a byte offset into the file and reads every byte once. The
//! bytes go through a [`RowReader`], which splits them into rows with the `csv`
//! crate's own parser (`csv-core`, fed incrementally): a row that is still being
//! written stays inside the parser until its line end arrives, so a viewer never
//! shows half a row. Between reads the tail notices a file that was truncated
//! (shorter than what was read) or replaced (another inode at the path) and
//! starts over; a file that does not exist yet is waited for.
//!
//! Big files are opened at the end: [`find_start`] scans backward in chunks for
//! the last N rows (optionally only the rows a filter wants), so the cost of
//! opening a file depends on what is shown, not on the size of the file.
//!
//! The files have a header row, so the row at offset 0 is reported as
//! [`TailEvent::Header`], never as data.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes read from the file in one call: large enough for the streaming rate,
/// small enough that a viewer stays responsive between calls.
pub const READ_CHUNK: usize = 256 * 1024;

/// Bytes a row may take before it is reported as malformed and skipped: twice
/// the longest line the server accepts (`--max-line` up to 16 MiB), for quoting.
pub const MAX_ROW_BYTES: usize = 32 << 20;

/// Fields a row may have before it is reported as malformed: our files have 6.
pub const MAX_FIELDS: usize = 64;

/// Rows scanned in the first backward step of [`find_start`] beyond what was
/// asked for; each further step doubles, up to [`MAX_STEP_ROWS`].
const FIRST_STEP_EXTRA: usize = 16;

/// Largest backward step, in rows: bounds the bytes of one step (about 100 MB
/// of typical rows), so a filter that matches nothing still streams.
const MAX_STEP_ROWS: usize = 1 << 20;

/// One complete row, as the CSV parser split it.
#[derive(Debug, Clone, Copy)]
pub struct RawRow<'a> {
    /// Byte offset of the row's first byte in the file.
    pub offset: u64,
    /// Byte offset just past the row's line end.
    pub end: u64,
    fields: &'a [u8],
    ends: &'a [usize],
    oversized: bool,
}

impl<'a> RawRow<'a> {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True for a row with no fields (never produced by the parser; for completeness).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`, if the row has it.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.fields.get(start..end)
    }

    /// All fields' bytes, one after another (see [`RawRow::field_ends`]).
    pub fn concatenated(&self) -> &'a [u8] {
        self.fields
    }

    /// Where each field ends in [`RawRow::concatenated`].
    pub fn field_ends(&self) -> &'a [usize] {
        self.ends
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// True when the row was longer than [`MAX_ROW_BYTES`] or had more than
    /// [`MAX_FIELDS`] fields: its fields were not kept.
    pub fn is_oversized(&self) -> bool {
        self.oversized
    }
}

/// Splits a stream of bytes into CSV rows, keeping a row that is not complete
/// yet until the rest of it is fed.
///
/// Promises:
/// 1. Every byte is fed once; nothing is re-read.
/// 2. A row is handed out only once its line end has been fed.
/// 3. Memory is bounded by the longest row ([`MAX_ROW_BYTES`]), not by the input.
/// 4. Rows are split exactly as the `csv` crate splits them (same parser).
pub struct RowReader {
    core: csv_core::Reader,
    out: Vec<u8>,
    nout: usize,
    ends: Vec<usize>,
    nend: usize,
    /// Offset of the next byte to be fed.
    pos: u64,
    /// Offset of the row being parsed (or of the next row, between rows).
    row_start: u64,
    between_rows: bool,
    oversized: bool,
}

impl RowReader {
    /// A reader whose first byte fed is at offset `pos` of the file, which
    /// must be the start of a row.
    pub fn new(pos: u64) -> RowReader {
        RowReader {
            core: csv_core::Reader::new(),
            out: vec![0; 4096],
            nout: 0,
            ends: vec![0; 16],
            nend: 0,
            pos,
            row_start: pos,
            between_rows: true,
            oversized: false,
        }
    }

    /// Offset of the next byte to feed: everything before it has been read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Offset up to which rows are complete: where the row still being
    /// written (if any) starts.
    pub fn complete_to(&self) -> u64 {
        if self.between_rows {
            self.pos
        } else {
            self.row_start
        }
    }

    /// Feeds the next bytes; calls `on_row` for every row they complete.
    pub fn feed(&mut self, mut input: &[u8], on_row: &mut dyn FnMut(RawRow<'_>)) {
        while !input.is_empty() {
            if self.between_rows {
                // Blank lines and the `\n` of a `\r\n` are skipped here, as the
                // parser would skip them, so a row's offset is its first byte.
                let blank = input
                    .iter()
                    .take_while(|&&b| b == b'\n' || b == b'\r')
                    .count();
                input = &input[blank..];
                self.pos += blank as u64;
                if input.is_empty() {
                    return;
                }
                self.row_start = self.pos;
                self.between_rows = false;
            }
            let (result, nin, nout, nend) = self.core.read_record(
                input,
                &mut self.out[self.nout..],
                &mut self.ends[self.nend..],
            );
            input = &input[nin..];
            self.pos += nin as u64;
            self.nout += nout;
            self.nend += nend;
            match result {
                csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => {}
                csv_core::ReadRecordResult::OutputFull => {
                    if self.out.len() >= MAX_ROW_BYTES {
                        // Keep parsing to find the row's end, but drop its bytes.
                        self.oversized = true;
                        self.nout = 0;
                        self.nend = 0;
                    } else {
                        let bigger = (self.out.len() * 2).min(MAX_ROW_BYTES);
                        self.out.resize(bigger, 0);
                    }
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        self.oversized = true;
                        self.nend = 0;
                        self.nout = 0;
                    } else {
                        let more = (self.ends.len() * 2).min(MAX_FIELDS);
                        self.ends.resize(more, 0);
                    }
                }
                csv_core::ReadRecordResult::Record => {
                    let (fields, ends) = if self.oversized {
                        (&[][..], &[][..])
                    } else {
                        (&self.out[..self.nout], &self.ends[..self.nend])
                    };
                    on_row(RawRow {
                        offset: self.row_start,
                        end: self.pos,
                        fields,
                        ends,
                        oversized: self.oversized,
                    });
                    self.nout = 0;
                    self.nend = 0;
                    self.oversized = false;
                    self.between_rows = true;
                }
            }
        }
    }
}

/// What a [`Tail`] reports while it reads.
#[derive(Debug)]
pub enum TailEvent<'a> {
    /// The header row (the row at offset 0).
    Header(RawRow<'a>),
    /// A data row.
    Row(RawRow<'a>),
    /// The file was opened (it may have appeared only now); reading starts at `offset`.
    Opened {
        /// Where reading starts: 0, or the start of the last rows asked for.
        offset: u64,
        /// The file's size when it was opened.
        size: u64,
    },
    /// The file changed under the reader, which starts over; rows shown
    /// before may no longer be in the file.
    Restarted(Restart),
}

/// Why a [`Tail`] started over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// The file became shorter than what had been read.
    Truncated,
    /// Another file now stands at the path (moved, re-created, rotated).
    Replaced,
}

/// Where a [`Tail`] starts reading a file it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the first row.
    Beginning,
    /// From the last N rows the filter wants (all rows if there are fewer).
    LastRows(usize),
}

/// What one [`Tail::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes read from the file.
    pub read: u64,
    /// True when the budget ran out before the end of the file: poll again at once.
    pub more: bool,
}

/// A filter on raw rows, used to count the rows a viewer will show when it
/// looks for where the last N of them start.
pub type RowFilter = Box<dyn FnMut(&RawRow<'_>) -> bool + Send>;

struct OpenFile {
    file: File,
    identity: (u64, u64),
    rows: RowReader,
}

/// Follows one file by offset.
///
/// Promises:
/// 1. Reads every byte once, in order; memory does not grow with the file.
/// 2. Hands out only complete rows (see [`RowReader`]).
/// 3. Never fails because the file is missing: it waits for it. [`Start`]
///    applies to the file found at the first look; a file that appears later
///    is read from its first row, as all of it is new.
/// 4. Starts over, with [`TailEvent::Restarted`], when the file is truncated
///    or replaced (reading the new file from its first row); the rest of a
///    replaced file is read before the switch.
pub struct Tail {
    path: PathBuf,
    start: Start,
    filter: RowFilter,
    open: Option<OpenFile>,
    first_look: bool,
    buf: Vec<u8>,
    bytes_read: u64,
}

impl Tail {
    /// A tail of the file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>, start: Start) -> Tail {
        Tail {
            path: path.into(),
            start,
            filter: Box::new(|_| true),
            open: None,
            first_look: true,
            buf: vec![0; READ_CHUNK],
            bytes_read: 0,
        }
    }

    /// Counts only the rows `filter` accepts when it looks for the last N rows.
    pub fn with_filter(mut self, filter: RowFilter) -> Tail {
        self.filter = filter;
        self
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the file has been found and opened.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Bytes read from disk so far, backward scans included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Where the next read starts.
    pub fn position(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.rows.position())
    }

    /// Reads what the file holds now, up to about `budget` bytes, and reports
    /// rows and changes to `on`.
    pub fn poll(&mut self, budget: u64, on: &mut dyn FnMut(TailEvent<'_>)) -> io::Result<Progress> {
        let mut progress = Progress::default();
        if self.open.is_none() && !self.try_open(on)? {
            return Ok(progress);
        }
        self.read_available(budget, &mut progress, on)?;
        if progress.more {
            return Ok(progress);
        }
        // At the end of what we have: has the file changed under us?
        let Some(open) = self.open.as_mut() else {
            return Ok(progress);
        };
        let at_path = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(meta) = at_path
            && (meta.dev(), meta.ino()) != open.identity
        {
            on(TailEvent::Restarted(Restart::Replaced));
            self.open = None;
            if self.try_open(on)? {
                self.read_available(budget, &mut progress, on)?;
            }
            return Ok(progress);
        }
        // Removed files keep their inode open: nothing more comes, and the
        // next file at the path is a replacement.
        let size = open.file.metadata()?.len();
        if size < open.rows.position() {
            on(TailEvent::Restarted(Restart::Truncated));
            open.rows = RowReader::new(0);
            self.read_available(budget, &mut progress, on)?;
        }
        Ok(progress)
    }

    /// Reads the rows before offset `before` (a row start) of the open file,
    /// enough of them that `filter` accepts `n`, oldest first; returns the
    /// offset of the first row read (`before` if nothing was).
    pub fn read_before(
        &mut self,
        before: u64,
        n: usize,
        filter: &mut dyn FnMut(&RawRow<'_>) -> bool,
        on: &mut dyn FnMut(TailEvent<'_>),
    ) -> io::Result<u64> {
        let Some(open) = self.open.as_ref() else {
            return Ok(before);
        };
        let (start, scanned) = find_start(&open.file, before, n, filter)?;
        let read = read_range(&open.file, start, before, &mut self.buf, &mut |row| {
            if row.offset == 0 {
                on(TailEvent::Header(row));
            } else {
                on(TailEvent::Row(row));
            }
        })?;
        self.bytes_read += scanned + read;
        Ok(start)
    }

    fn try_open(&mut self, on: &mut dyn FnMut(TailEvent<'_>)) -> io::Result<bool> {
        let first_look = std::mem::replace(&mut self.first_look, false);
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let offset = match self.start {
            // A file that appears (or replaces another) after the first look
            // holds only rows written since: all of them are new.
            _ if !first_look => 0,
            Start::Beginning => 0,
            Start::LastRows(n) => {
                let (offset, scanned) = find_start(&file, meta.len(), n, &mut self.filter)?;
                self.bytes_read += scanned;
                offset
            }
        };
        on(TailEvent::Opened {
            offset,
            size: meta.len(),
        });
        self.open = Some(OpenFile {
            file,
            identity: (meta.dev(), meta.ino()),
            rows: RowReader::new(offset),
        });
        Ok(true)
    }

    fn read_available(
        &mut self,
        budget: u64,
        progress: &mut Progress,
        on: &mut dyn FnMut(TailEvent<'_>),
    ) -> io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        loop {
            if progress.read >= budget {
                progress.more = true;
                return Ok(());
            }
            let n = read_at_retrying(&open.file, &mut self.buf, open.rows.position())?;
            if n == 0 {
                return Ok(());
            }
            progress.read += n as u64;
            self.bytes_read += n as u64;
            open.rows.feed(&self.buf[..n], &mut |row| {
                if row.offset == 0 {
                    on(TailEvent::Header(row));
                } else {
                    on(TailEvent::Row(row));
                }
            });
        }
    }
}

fn read_at_retrying(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads the complete rows of `[start, end)` of `file` (`start` a row start)
/// and hands each to `on_row`; returns the bytes read.
pub fn read_range(
    file: &File,
    start: u64,
    end: u64,
    buf: &mut [u8],
    on_row: &mut dyn FnMut(RawRow<'_>),
) -> io::Result<u64> {
    let mut rows = RowReader::new(start);
    while rows.position() < end {
        let want = ((end - rows.position()) as usize).min(buf.len());
        let n = read_at_retrying(file, &mut buf[..want], rows.position())?;
        if n == 0 {
            break;
        }
        rows.feed(&buf[..n], on_row);
    }
    Ok(rows.position() - start)
}

/// Finds where the last `n` rows that `filter` accepts start, among the
/// complete rows before offset `end` of `file`; returns that offset and the
/// bytes read to find it.
///
/// It scans backward from `end` for line ends in chunks, parses the rows it
/// passes forward, and goes further back (in doubling steps) while the filter
/// has not accepted `n` of them. With `n == 0` it returns the end of the last
/// complete row. The header row (offset 0) is never counted.
///
/// A line end inside a quoted field (which the server never writes) is taken
/// for a row end here; at worst the first row then starts mid-field and is
/// shown as malformed.
pub fn find_start(
    file: &File,
    end: u64,
    n: usize,
    filter: &mut dyn FnMut(&RawRow<'_>) -> bool,
) -> io::Result<(u64, u64)> {
    let mut scanned = 0u64;
    let mut chunk = Vec::new();
    let mut region_end = end;
    if n == 0 {
        return back_lines(file, region_end, 1, &mut chunk);
    }
    let mut need = n;
    let mut step = n.saturating_add(FIRST_STEP_EXTRA).min(MAX_STEP_ROWS);
    let mut buf = vec![0u8; READ_CHUNK];
    // The oldest accepted row seen: where to start if fewer than `n` exist,
    // so the forward read skips the rows the filter refused.
    let mut oldest: Option<u64> = None;
    loop {
        // `step + 1` line ends back: the first ends the last row (or the
        // partial row being written starts after it).
        let (region_start, bytes) = back_lines(file, region_end, step + 1, &mut chunk)?;
        scanned += bytes;
        let mut accepted: VecDeque<u64> = VecDeque::with_capacity(need.min(4096));
        let mut count = 0usize;
        scanned += read_range(file, region_start, region_end, &mut buf, &mut |row| {
            if row.offset != 0 && filter(&row) {
                count += 1;
                if accepted.len() == need {
                    accepted.pop_front();
                }
                accepted.push_back(row.offset);
            }
        })?;
        if count >= need {
            return Ok((accepted.front().copied().unwrap_or(region_start), scanned));
        }
        need -= count;
        oldest = accepted.front().copied().or(oldest);
        if region_start == 0 {
            return match oldest {
                Some(offset) => Ok((offset, scanned)),
                // Nothing accepted: start after the last complete row.
                None => {
                    let (after, bytes) = back_lines(file, end, 1, &mut chunk)?;
                    Ok((after, scanned + bytes))
                }
            };
        }
        region_end = region_start;
        step = step.saturating_mul(2).min(MAX_STEP_ROWS);
    }
}

/// The offset just after the `lines`-th `\n` before `end` (0 if there are
/// fewer), and the bytes read to find it.
///
/// Chunks start small (a screenful of rows is a few KiB) and double up to
/// [`READ_CHUNK`], so short scans stay short and long ones stay fast.
fn back_lines(file: &File, end: u64, lines: usize, chunk: &mut Vec<u8>) -> io::Result<(u64, u64)> {
    let mut seen = 0usize;
    let mut hi = end;
    let mut read = 0u64;
    let mut size = 8 * 1024;
    while hi > 0 {
        if chunk.len() < size {
            chunk.resize(size, 0);
        }
        size = (size * 2).min(READ_CHUNK);
        let lo = hi.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(hi - lo) as usize];
        let mut filled = 0;
        while filled < part.len() {
            let n = read_at_retrying(file, &mut part[filled..], lo + filled as u64)?;
            if n == 0 {
                // The file shrank while we looked: start from its beginning.
                return Ok((0, read));
            }
            filled += n;
        }
        read += part.len() as u64;
        for (i, &b) in part.iter().enumerate().rev() {
            if b == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok((lo + i as u64 + 1, read));
                }
            }
        }
        hi = lo;
    }
    Ok((0, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rows_of(input: &[&[u8]]) -> Vec<(u64, Vec<String>)> {
        let mut reader = RowReader::new(0);
        let mut out = Vec::new();
        for part in input {
            reader.feed(part, &mut |row| {
                out.push((
                    row.offset,
                    row.iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                ))
            });
        }
        out
    }

    #[test]
    fn a_row_cut_anywhere_comes_out_whole_once_its_line_end_arrives() {
        let text = b"a,b\n1,\"x, \"\"y\"\"\nz\"\n2,q\r\n";
        for cut in 0..text.len() {
            let (head, tail) = text.split_at(cut);
            let rows = rows_of(&[head, tail]);
            assert_eq!(rows.len(), 3, "cut at {cut}: {rows:?}");
            assert_eq!(rows[1].1, ["1", "x, \"y\"\nz"], "cut at {cut}");
            assert_eq!(rows[2], (19, vec!["2".into(), "q".into()]), "cut at {cut}");
        }
    }

    #[test]
    fn a_row_without_its_line_end_is_held_back() {
        let mut reader = RowReader::new(0);
        let mut n = 0;
        reader.feed(b"a,b\n1,2", &mut |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(reader.complete_to(), 4);
        assert_eq!(reader.position(), 7);
        reader.feed(b"\n", &mut |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(reader.complete_to(), 8);
    }

    #[test]
    fn an_oversized_row_is_flagged_and_the_next_row_is_read() {
        let mut big = b"1,".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_ROW_BYTES + 10));
        big.extend_from_slice(b"\n2,ok\n");
        let mut seen = Vec::new();
        let mut reader = RowReader::new(0);
        for part in big.chunks(1 << 20) {
            reader.feed(part, &mut |row| {
                seen.push((row.is_oversized(), row.get(1).map(<[u8]>::to_vec)))
            });
        }
        assert_eq!(seen, [(true, None), (false, Some(b"ok".to_vec()))]);
    }

    fn collect(tail: &mut Tail) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let progress = tail
                .poll(1 << 20, &mut |event| match event {
                    TailEvent::Row(row) => {
                        out.push(String::from_utf8_lossy(row.get(0).unwrap_or(b"")).into_owned())
                    }
                    TailEvent::Restarted(why) => out.push(format!("{why:?}")),
                    TailEvent::Header(_) | TailEvent::Opened { .. } => {}
                })
                .unwrap();
            if !progress.more {
                return out;
            }
        }
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_file_that_appears_late_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut tail = Tail::new(&path, Start::LastRows(1));
        assert!(collect(&mut tail).is_empty());
        assert!(!tail.is_open());
        append(&path, "id,x\n0,z\n1,a\n");
        assert_eq!(collect(&mut tail), ["0", "1"], "all of a late file is new");
        append(&path, "2,b\n3,");
        assert_eq!(collect(&mut tail), ["2"]);
        append(&path, "c\n");
        assert_eq!(collect(&mut tail), ["3"]);
    }

    #[test]
    fn truncation_starts_over_from_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        append(&path, "id,x\n1,a\n2,b\n");
        let mut tail = Tail::new(&path, Start::Beginning);
        assert_eq!(collect(&mut tail), ["1", "2"]);
        std::fs::write(&path, "id,x\n").unwrap();
        assert_eq!(collect(&mut tail), ["Truncated"]);
        append(&path, "7,z\n");
        assert_eq!(collect(&mut tail), ["7"]);
    }

    #[test]
    fn a_replaced_file_is_finished_then_the_new_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        append(&path, "id,x\n1,a\n");
        let mut tail = Tail::new(&path, Start::Beginning);
        assert_eq!(collect(&mut tail), ["1"]);
        append(&path, "2,b\n");
        std::fs::rename(&path, dir.path().join("old.csv")).unwrap();
        append(&path, "id,x\n9,new\n");
        assert_eq!(collect(&mut tail), ["2", "Replaced", "9"]);
        // A deleted file is waited for like a missing one.
        std::fs::remove_file(&path).unwrap();
        assert!(collect(&mut tail).is_empty());
        append(&path, "id,x\n10,again\n");
        assert_eq!(collect(&mut tail), ["Replaced", "10"]);
    }

    #[test]
    fn the_last_rows_are_found_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut text = String::from("id,room\n");
        for i in 1..=10_000 {
            let room = if i % 100 == 0 { "rare" } else { "busy" };
            text.push_str(&format!("{i},{room}\n"));
        }
        text.push_str("10001,bu");
        append(&path, &text);
        let mut tail = Tail::new(&path, Start::LastRows(3));
        assert_eq!(collect(&mut tail), ["9998", "9999", "10000"]);
        assert!(tail.bytes_read() < 20_000, "read {}", tail.bytes_read());

        let only_rare: RowFilter = Box::new(|row| row.get(1) == Some(b"rare"));
        let mut tail = Tail::new(&path, Start::LastRows(3)).with_filter(only_rare);
        let rows = collect(&mut tail);
        assert_eq!(rows.first().map(String::as_str), Some("9800"));
        assert_eq!(rows.len(), 201);

        let nothing: RowFilter = Box::new(|_| false);
        let mut tail = Tail::new(&path, Start::LastRows(3)).with_filter(nothing);
        assert!(collect(&mut tail).is_empty());
        // It started after the last complete row: only the partial one was read forward.
        assert_eq!(tail.position(), text.len() as u64);

        let mut tail = Tail::new(&path, Start::LastRows(50_000));
        assert_eq!(collect(&mut tail).len(), 10_000);
        let mut tail = Tail::new(&path, Start::LastRows(0));
        assert!(collect(&mut tail).is_empty());
        append(&path, "sy\n");
        assert_eq!(collect(&mut tail), ["10001"]);
    }

    #[test]
    fn older_rows_are_read_before_a_row_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut text = String::from("id\n");
        for i in 1..=100 {
            text.push_str(&format!("{i}\n"));
        }
        append(&path, &text);
        let mut tail = Tail::new(&path, Start::LastRows(10));
        assert_eq!(collect(&mut tail).first().map(String::as_str), Some("91"));
        let offset_of_91 = text.find("\n91\n").unwrap() as u64 + 1;
        let mut older = Vec::new();
        let start = tail
            .read_before(offset_of_91, 5, &mut |_| true, &mut |event| {
                if let TailEvent::Row(row) = event {
                    older.push(String::from_utf8_lossy(row.get(0).unwrap()).into_owned());
                }
            })
            .unwrap();
        assert_eq!(older, ["86", "87", "88", "89", "90"]);
        let mut all = 0;
        tail.read_before(start, 1000, &mut |_| true, &mut |event| {
            all += matches!(event, TailEvent::Row(_)) as usize
        })
        .unwrap();
        assert_eq!(all, 85);
    }
}

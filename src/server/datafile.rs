//! One append-only CSV file of the store (`messages.csv`, `data.csv`,
//! `rooms.csv`), written a batch at a time so that a failure never leaves
//! damage behind.
//!
//! A batch is serialized into memory first ([`DataFile::rows`]), then
//! written with one `write_all` and, when durability is on, one `fdatasync`
//! (group commit: one sync for everything that arrived together). If the
//! write or the sync fails, the file is cut back to the end of the last good
//! batch, as if the failed batch had never been tried, and the batch's bytes
//! are handed back to the caller: nothing refused ever reaches the file
//! later. A file that cannot be cut back is *damaged*: every later commit
//! first tries the repair again and fails until it succeeds, so nothing is
//! ever appended after damage.
//!
//! Before each write the file is checked against its path: a file moved
//! away (`mv` rotation) or cut short (`copytruncate`) under the server is
//! noticed, and writing goes on in a fresh file with its header.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::server::metrics::{Metrics, metrics};
use crate::server::store::{StoreError, open_csv};

/// Environment variable naming a file of faults to inject, for tests of the
/// failure paths against the real binary: while that file exists, each of
/// its lines `FILE write`, `FILE sync` or `FILE cut` (FILE being
/// `messages.csv`, `data.csv` or `rooms.csv`) makes that step fail as a
/// full or broken disk would (a write fails halfway, with `ENOSPC`).
pub const FAULTS_ENV: &str = "CHATROOM_FAULTS";

/// Which step of a commit an injected fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Write,
    Sync,
    Cut,
}

/// The faults file named by [`FAULTS_ENV`], if any.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<PathBuf>);

impl Faults {
    /// Reads [`FAULTS_ENV`].
    pub fn from_env() -> Faults {
        Faults(std::env::var_os(FAULTS_ENV).map(PathBuf::from))
    }

    /// Whether `step` of writing `file` must fail now.
    fn hits(&self, file: &str, step: Step) -> bool {
        let Some(path) = &self.0 else {
            return false;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        let word = match step {
            Step::Write => "write",
            Step::Sync => "sync",
            Step::Cut => "cut",
        };
        text.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(file) && words.next() == Some(word)
        })
    }
}

/// What happened to the file at the start of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopened {
    /// The same file as before.
    No,
    /// The file was moved away or cut short under the server; a fresh one
    /// with its header was started.
    Fresh,
}

/// One CSV file the store appends to.
///
/// Promises:
/// 1. The file always ends at the end of a whole batch that was written
///    (and synced, when durability is on, or written and to be synced
///    within the interval of [`DataFile::sync_at_most_every`]): a failed
///    batch is cut back.
/// 2. Bytes of a failed batch are never written later by this type; the
///    caller decides whether to try them again.
/// 3. Nothing is appended to a file that could not be cut back.
pub struct DataFile {
    path: PathBuf,
    /// The file's name, for messages and faults.
    name: String,
    columns: &'static [&'static str],
    file: File,
    /// Length of the file after the last good batch.
    good_len: u64,
    /// The file could not be cut back after a failure: why.
    damaged: Option<String>,
    sync: bool,
    /// Synced at most this often rather than per batch (a cluster node's
    /// `messages.csv`, whose commit point is the cluster's log in Redis).
    sync_every: Option<Duration>,
    /// When it was last synced, and since when it holds batches that are
    /// not (with `sync_every`).
    synced_at: Instant,
    unsynced_since: Option<Instant>,
    faults: Faults,
    /// Its writes and syncs are timed for the metrics (`messages.csv`).
    timed: bool,
    /// The batch being gathered.
    pub rows: csv::Writer<Rows>,
}

/// The bytes of the rows of a batch being gathered. Taken out whole
/// ([`DataFile::take_rows`]) and given back emptied
/// ([`DataFile::give_back`]), so that one buffer serves batch after batch.
#[derive(Debug, Default)]
pub struct Rows(std::cell::RefCell<Vec<u8>>);

impl Write for Rows {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.get_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataFile {
    /// Opens (or creates) the file at `path`: its torn last row dropped, its
    /// header checked or written.
    pub fn open(
        path: &Path,
        columns: &'static [&'static str],
        sync: bool,
        faults: Faults,
    ) -> Result<DataFile, StoreError> {
        let file = open_csv(path, columns)?;
        if sync {
            sync_new(&file, path);
        }
        let good_len = file
            .metadata()
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Ok(DataFile {
            path: path.to_path_buf(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            columns,
            file,
            good_len,
            damaged: None,
            sync,
            sync_every: None,
            synced_at: Instant::now(),
            unsynced_since: None,
            faults,
            timed: false,
            rows: batch_writer(),
        })
    }

    /// The file's name (`messages.csv`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the file up to the end of the last good batch.
    pub fn good_len(&self) -> u64 {
        self.good_len
    }

    /// The open file (to tell which file it is).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The same file, its writes and syncs timed for the metrics.
    pub fn timed(mut self) -> DataFile {
        self.timed = true;
        self
    }

    /// Syncs the file at most once per `every` rather than after each batch
    /// (no effect without durability): for a file that is a copy of a log
    /// kept durable elsewhere. A batch not synced at once is synced at the
    /// next commit due, or by [`sync_pending`](DataFile::sync_pending).
    pub fn sync_at_most_every(&mut self, every: Duration) {
        self.sync_every = Some(every);
    }

    /// How long until batches written but not synced are due to be synced
    /// (zero: now); `None` if there are none.
    pub fn sync_due_in(&self) -> Option<Duration> {
        let every = self.sync_every?;
        self.unsynced_since?;
        Some(every.saturating_sub(self.synced_at.elapsed()))
    }

    /// Syncs the batches written but not synced yet, if any (see
    /// [`sync_at_most_every`](DataFile::sync_at_most_every)). A failure is
    /// logged and the sync tried again later: the batches are written, and
    /// were committed elsewhere first.
    pub fn sync_pending(&mut self) {
        if self.unsynced_since.is_none() {
            return;
        }
        let started = Instant::now();
        match self.sync_file() {
            Ok(()) => {
                if self.timed {
                    Metrics::observe(&metrics().store_sync, started.elapsed());
                }
            }
            Err(e) => {
                log::error!("cannot sync {}: {e}; trying again", self.name);
                // Not again at once: at the next due time.
                self.synced_at = Instant::now();
            }
        }
    }

    /// Why the file is damaged, if it is.
    pub fn damaged(&self) -> Option<&str> {
        self.damaged.as_deref()
    }

    /// Takes the rows gathered since the last call, as bytes (to be given
    /// back with [`give_back`](DataFile::give_back) once written).
    pub fn take_rows(&mut self) -> Vec<u8> {
        // Into memory: cannot fail.
        let _ = self.rows.flush();
        std::mem::take(&mut *self.rows.get_ref().0.borrow_mut())
    }

    /// Gives back the buffer [`take_rows`](DataFile::take_rows) returned,
    /// for the next batch's rows (its bytes are dropped, its room kept).
    pub fn give_back(&mut self, mut bytes: Vec<u8>) {
        let mut rows = self.rows.get_ref().0.borrow_mut();
        if rows.is_empty() && rows.capacity() < bytes.capacity() {
            bytes.clear();
            *rows = bytes;
        }
    }

    /// Writes `bytes` (whole rows) as one batch and syncs it. On failure the
    /// file is cut back to where it was, and the error says what failed.
    /// Returns whether a fresh file had to be started first.
    pub fn commit(&mut self, bytes: &[u8]) -> io::Result<Reopened> {
        if let Some(why) = &self.damaged {
            let why = why.clone();
            self.cut_back().map_err(|e| {
                io::Error::other(format!(
                    "{} is damaged ({why}) and still cannot be repaired: {e}",
                    self.name
                ))
            })?;
            log::warn!("{} repaired: cut back to its last good batch", self.name);
        }
        let reopened = self.follow_path()?;
        if bytes.is_empty() {
            return Ok(reopened);
        }
        let started = Instant::now();
        let written = if self.faults.hits(&self.name, Step::Write) {
            let half = &bytes[..bytes.len() / 2];
            let _ = self.file.write_all(half);
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            self.file.write_all(bytes)
        };
        let wrote = Instant::now();
        let synced = written.and_then(|()| self.sync_now());
        if self.timed
            && let Ok(did_sync) = synced
        {
            let metrics = metrics();
            Metrics::observe(&metrics.store_write, wrote - started);
            if did_sync {
                Metrics::observe(&metrics.store_sync, wrote.elapsed());
            }
        }
        match synced {
            Ok(_) => {
                self.good_len += bytes.len() as u64;
                Ok(reopened)
            }
            Err(e) => {
                if let Err(cut) = self.cut_back() {
                    log::error!(
                        "{}: cannot cut back the failed batch ({cut}); nothing more is written to it until it can be",
                        self.name
                    );
                }
                Err(e)
            }
        }
    }

    /// Syncs a batch just written, unless durability is off or the file is
    /// synced at most every so often and that is not due: whether it synced.
    fn sync_now(&mut self) -> io::Result<bool> {
        if !self.sync {
            return Ok(false);
        }
        if let Some(every) = self.sync_every
            && self.synced_at.elapsed() < every
        {
            self.unsynced_since.get_or_insert_with(Instant::now);
            return Ok(false);
        }
        self.sync_file()?;
        Ok(true)
    }

    /// Syncs the file (everything written to it so far).
    fn sync_file(&mut self) -> io::Result<()> {
        if self.faults.hits(&self.name, Step::Sync) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let started = Instant::now();
        self.file.sync_data()?;
        self.synced_at = started;
        self.unsynced_since = None;
        Ok(())
    }

    /// Cuts the file back to the end of the last good batch; marks it
    /// damaged if that fails.
    fn cut_back(&mut self) -> io::Result<()> {
        let cut = if self.faults.hits(&self.name, Step::Cut) {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            self.file.set_len(self.good_len).and_then(|()| {
                if self.sync {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            })
        };
        match cut {
            Ok(()) => {
                self.damaged = None;
                Ok(())
            }
            Err(e) => {
                self.damaged = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Notices a file moved away or cut short under the server and starts
    /// a fresh one with its header.
    fn follow_path(&mut self) -> io::Result<Reopened> {
        let open = self.file.metadata()?;
        let moved = match std::fs::metadata(&self.path) {
            Ok(at_path) => at_path.dev() != open.dev() || at_path.ino() != open.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if moved {
            log::warn!(
                "{} was moved away while the server ran (rotated?): starting a fresh one",
                self.path.display()
            );
        } else if open.len() < self.good_len {
            log::warn!(
                "{} was cut short while the server ran (copytruncate?): carrying on at its end",
                self.path.display()
            );
        } else {
            if open.len() > self.good_len {
                log::warn!(
                    "{} grew by {} bytes the server did not write; carrying on at its end",
                    self.path.display(),
                    open.len() - self.good_len
                );
                self.good_len = open.len();
            }
            return Ok(Reopened::No);
        }
        let file = match open_csv(&self.path, self.columns) {
            Ok(file) => file,
            // Rows landed at the start of a file cut to nothing between our
            // check and our write: set them aside rather than refuse all.
            Err(StoreError::Header { .. }) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = self.path.as_os_str().to_owned();
                aside.push(format!(".headerless-{stamp}"));
                std::fs::rename(&self.path, &aside)?;
                log::warn!(
                    "{} lost its header (cut short while written): moved to {} and started afresh",
                    self.path.display(),
                    PathBuf::from(&aside).display()
                );
                open_csv(&self.path, self.columns).map_err(|e| io::Error::other(e.to_string()))?
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        if self.sync {
            sync_new(&file, &self.path);
        }
        self.good_len = file.metadata()?.len();
        self.file = file;
        Ok(Reopened::Fresh)
    }

    /// Syncs whatever was written (at shutdown).
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Syncs a file just opened (maybe just made, with its header) and its
/// directory, so that a power cut cannot lose the file itself.
fn sync_new(file: &File, path: &Path) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let synced = file.sync_all().and_then(|()| File::open(dir)?.sync_all());
    if let Err(e) = synced {
        log::warn!("cannot sync {}: {e}", path.display());
    }
}

/// A CSV writer into memory, for the rows of batch after batch.
fn batch_writer() -> csv::Writer<Rows> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Rows(std::cell::RefCell::new(Vec::with_capacity(16 * 1024))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::MESSAGE_COLUMNS;

    fn faults(dir: &Path, text: &str) -> Faults {
        let path = dir.join("faults");
        std::fs::write(&path, text).unwrap();
        Faults(Some(path))
    }

    #[test]
    fn a_failed_write_is_cut_back_and_never_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        let f = faults(dir.path(), "");
        let mut file = DataFile::open(&path, &MESSAGE_COLUMNS, true, f.clone()).unwrap();
        file.commit(b"1,t,general,a,,one\n").unwrap();
        std::fs::write(dir.path().join("faults"), "messages.csv write\n").unwrap();
        assert!(file.commit(b"2,t,general,a,,refused\n").is_err());
        std::fs::write(dir.path().join("faults"), "").unwrap();
        file.commit(b"2,t,general,a,,two\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "id,timestamp,room,sender,recipient,text\n1,t,general,a,,one\n2,t,general,a,,two\n"
        );
    }

    #[test]
    fn a_failed_sync_is_cut_back_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        let f = faults(dir.path(), "messages.csv sync\n");
        let mut file = DataFile::open(&path, &MESSAGE_COLUMNS, true, f).unwrap();
        assert!(file.commit(b"1,t,general,a,,lost\n").is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "id,timestamp,room,sender,recipient,text\n");
    }

    #[test]
    fn a_file_synced_every_so_often_syncs_later_and_keeps_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        // Every sync fails: batches within the interval are not synced.
        let f = faults(dir.path(), "messages.csv sync\n");
        let mut file = DataFile::open(&path, &MESSAGE_COLUMNS, true, f).unwrap();
        file.sync_at_most_every(Duration::from_secs(3600));
        // Open counts as synced: the first batches wait for the interval.
        assert_eq!(file.sync_due_in(), None);
        file.commit(b"1,t,general,a,,one\n").unwrap();
        file.commit(b"2,t,general,a,,two\n").unwrap();
        assert!(file.sync_due_in().is_some_and(|d| !d.is_zero()));
        // A sync that fails keeps the rows (they were committed elsewhere)
        // and is tried again.
        file.sync_pending();
        assert!(file.sync_due_in().is_some());
        std::fs::write(dir.path().join("faults"), "").unwrap();
        file.sync_pending();
        assert_eq!(file.sync_due_in(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("1,t,general,a,,one\n2,t,general,a,,two\n"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_cut_back_takes_nothing_until_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        let f = faults(dir.path(), "messages.csv write\nmessages.csv cut\n");
        let mut file = DataFile::open(&path, &MESSAGE_COLUMNS, false, f).unwrap();
        assert!(file.commit(b"1,t,general,a,,torn\n").is_err());
        assert!(file.damaged().is_some());
        std::fs::write(dir.path().join("faults"), "messages.csv cut\n").unwrap();
        let err = file.commit(b"1,t,general,a,,after damage\n").unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        std::fs::write(dir.path().join("faults"), "").unwrap();
        file.commit(b"1,t,general,a,,repaired\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "id,timestamp,room,sender,recipient,text\n1,t,general,a,,repaired\n"
        );
    }

    #[test]
    fn rows_left_without_a_header_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        let mut file = DataFile::open(&path, &MESSAGE_COLUMNS, false, Faults::default()).unwrap();
        file.commit(b"1,t,general,a,,one\n2,t,general,a,,two\n")
            .unwrap();
        // Cut to nothing, then a row written at offset 0 before we looked.
        std::fs::write(&path, "3,t,general,a,,three\n").unwrap();
        assert_eq!(
            file.commit(b"4,t,general,a,,four\n").unwrap(),
            Reopened::Fresh
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "id,timestamp,room,sender,recipient,text\n4,t,general,a,,four\n"
        );
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("headerless"))
            .collect();
        assert_eq!(aside.len(), 1);
    }

    #[test]
    fn a_file_moved_or_truncated_under_the_server_is_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        let mut file = DataFile::open(&path, &MESSAGE_COLUMNS, false, Faults::default()).unwrap();
        file.commit(b"1,t,general,a,,one\n").unwrap();
        std::fs::rename(&path, dir.path().join("messages.csv.1")).unwrap();
        assert_eq!(
            file.commit(b"2,t,general,a,,two\n").unwrap(),
            Reopened::Fresh
        );
        let header = "id,timestamp,room,sender,recipient,text\n";
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{header}2,t,general,a,,two\n")
        );
        // copytruncate: copied away, then cut to nothing.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(
            file.commit(b"3,t,general,a,,three\n").unwrap(),
            Reopened::Fresh
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{header}3,t,general,a,,three\n")
        );
    }
}

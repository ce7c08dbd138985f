//! Small CSV tables the server reads often and writes rarely (`accounts.csv`,
//! `bans.csv`): re-read when the file changes on disk, rewritten atomically.
//!
//! The server's threads and the `server add-user`-style commands may all
//! write a table at once. Each change is a read-modify-write under an
//! exclusive `flock` on a lock file beside the table (`.bans.csv.lock`), so
//! changes never overwrite one another, across threads and processes alike;
//! each write replaces the whole file with a rename of a temporary file of
//! its own, so a reader never sees half a file, and a running server notices
//! the change at its next look.
//!
//! A table that cannot be read (a damaged row, a foreign header) never
//! silently becomes an empty one: the last good copy is used instead, kept
//! in memory and on disk (`.bans.csv.good`), and the damage is logged
//! loudly. A change to a damaged table starts from that copy and keeps the
//! damaged file aside (`bans.csv.damaged-TIMESTAMP`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{FlockOperation, flock};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a table could not be read or written.
#[derive(Debug)]
pub struct TableError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for TableError {}

/// What identifies one version of a file: a rename changes the inode, an edit
/// in place the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    inode: u64,
    len: u64,
    /// When the file was last modified, in nanoseconds since the epoch.
    pub(crate) modified_ns: i128,
}

/// The file's version; `None` when there is no file.
pub(crate) fn stamp(path: &Path) -> io::Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(Stamp {
            inode: meta.ino(),
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Numbers the temporary files of this process, so that no two writes, even
/// of two threads, ever share one.
static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What a table remembers of its file.
struct Cache<T> {
    /// The version of the file the rows were read from.
    stamp: Option<Stamp>,
    /// The rows of the last version that could be read: the last good copy.
    rows: Arc<Vec<T>>,
    /// Whether `rows` came from a good read (or write) at all.
    good: bool,
    /// The version of the file last found damaged, so it is reported once.
    damaged: Option<Stamp>,
}

/// A CSV file of `T` rows with a header, cached in memory.
///
/// Promises:
/// 1. [`rows`](Table::rows) reflects the file as it was at the call (re-read
///    only when its stamp changed); when the file cannot be read it returns
///    the last good copy (and logs the damage once), never an empty table.
/// 2. [`update`](Table::update) is a read-modify-write that excludes every
///    other update of the same file, by any thread or process, and replaces
///    the file atomically (a temporary file of its own, then rename), created
///    readable and writable by its owner only.
/// 3. A missing file is an empty table.
pub struct Table<T> {
    path: PathBuf,
    columns: &'static [&'static str],
    cache: Mutex<Cache<T>>,
    _rows: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned + Clone> Table<T> {
    /// The table kept in `path`, whose header is `columns`.
    pub fn new(path: PathBuf, columns: &'static [&'static str]) -> Table<T> {
        Table {
            path,
            columns,
            cache: Mutex::new(Cache {
                stamp: None,
                rows: Arc::new(Vec::new()),
                good: false,
                damaged: None,
            }),
            _rows: PhantomData,
        }
    }

    /// Where the table lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: impl std::fmt::Display) -> TableError {
        TableError {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn lock_cache(&self) -> MutexGuard<'_, Cache<T>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A file beside the table: `.NAME.SUFFIX`.
    fn beside(&self, suffix: &str) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("table");
        dir.join(format!(".{name}.{suffix}"))
    }

    /// The rows as the file holds them now; the last good copy if it cannot
    /// be read. An error only when there is no good copy at all.
    pub fn rows(&self) -> Result<Arc<Vec<T>>, TableError> {
        let mut cache = self.lock_cache();
        let now = stamp(&self.path).map_err(|e| self.error(e))?;
        if now.is_none() {
            cache.stamp = None;
            cache.rows = Arc::new(Vec::new());
            cache.good = true;
        } else if now != cache.stamp {
            match self.read() {
                Ok(rows) => {
                    cache.rows = Arc::new(rows);
                    cache.stamp = now;
                    cache.good = true;
                }
                Err(e) => return self.last_good(&mut cache, now, e),
            }
        }
        Ok(Arc::clone(&cache.rows))
    }

    /// Falls back on the last good copy of a table whose file is damaged:
    /// the one in memory, or else the one on disk.
    fn last_good(
        &self,
        cache: &mut Cache<T>,
        now: Option<Stamp>,
        damage: TableError,
    ) -> Result<Arc<Vec<T>>, TableError> {
        if !cache.good
            && let Ok(rows) = self.read_from(&self.beside("good"))
        {
            cache.rows = Arc::new(rows);
            cache.good = true;
        }
        if cache.damaged != now {
            cache.damaged = now;
            if cache.good {
                log::error!(
                    "{damage}; using the last good copy ({} rows) until the file is fixed",
                    cache.rows.len()
                );
            } else {
                log::error!(
                    "{damage}; there is no good copy to use, so nothing that needs it works until the file is fixed"
                );
            }
        }
        if cache.good {
            Ok(Arc::clone(&cache.rows))
        } else {
            Err(damage)
        }
    }

    fn read(&self) -> Result<Vec<T>, TableError> {
        self.read_from(&self.path)
    }

    fn read_from(&self, path: &Path) -> Result<Vec<T>, TableError> {
        let mut reader = csv::Reader::from_path(path).map_err(|e| self.error(e))?;
        let header = reader.headers().map_err(|e| self.error(e))?;
        if header.iter().ne(self.columns.iter().copied()) {
            return Err(self.error(format_args!(
                "its header is {:?}, expected {:?}",
                header.iter().collect::<Vec<_>>().join(","),
                self.columns.join(",")
            )));
        }
        reader
            .deserialize()
            .enumerate()
            .map(|(i, row)| row.map_err(|e| self.error(format_args!("row {}: {e}", i + 2))))
            .collect()
    }

    /// Holds the table's lock file until dropped: one change at a time, in
    /// this process and in every other.
    fn exclusive(&self) -> Result<File, TableError> {
        let file = open_lock_file(&self.path)
            .map_err(|e| self.error(format_args!("cannot open its lock file: {e}")))?;
        lock_exclusive(&file).map_err(|e| self.error(format_args!("cannot lock it: {e}")))?;
        Ok(file)
    }

    /// Reads the file afresh, lets `change` edit the rows, and writes them back
    /// atomically if `change` returns `Ok`; all under the table's lock.
    pub fn update<R, E: From<TableError>>(
        &self,
        change: impl FnOnce(&mut Vec<T>) -> Result<R, E>,
    ) -> Result<R, E> {
        let _lock = self.exclusive()?;
        let mut rows = if stamp(&self.path).map_err(|e| self.error(e))?.is_some() {
            match self.read() {
                Ok(rows) => rows,
                Err(damage) => self.repair(damage)?,
            }
        } else {
            Vec::new()
        };
        let result = change(&mut rows)?;
        self.write(&rows)?;
        let mut cache = self.lock_cache();
        cache.stamp = stamp(&self.path).ok().flatten();
        cache.rows = Arc::new(rows);
        cache.good = true;
        Ok(result)
    }

    /// The rows a change of a damaged file starts from: the last good copy.
    /// The damaged file is kept aside for a person to look at.
    fn repair(&self, damage: TableError) -> Result<Vec<T>, TableError> {
        let rows = {
            let mut cache = self.lock_cache();
            let now = stamp(&self.path).ok().flatten();
            self.last_good(&mut cache, now, damage)?
        };
        let aside = self.path.with_file_name(format!(
            "{}.damaged-{}",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("table"),
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ));
        match fs::copy(&self.path, &aside) {
            Ok(_) => log::error!(
                "{} was damaged: it is rewritten from its last good copy; the damaged file is kept as {}",
                self.path.display(),
                aside.display()
            ),
            Err(e) => log::error!(
                "{} was damaged: it is rewritten from its last good copy (keeping the damaged file failed: {e})",
                self.path.display()
            ),
        }
        Ok(rows.to_vec())
    }

    fn write(&self, rows: &[T]) -> Result<(), TableError> {
        self.write_to(&self.path, rows)?;
        // The last good copy on disk, for a server that starts to find the
        // table damaged. Losing it only loses that fallback.
        if let Err(e) = self.write_to(&self.beside("good"), rows) {
            log::warn!("{e}: cannot keep a last good copy");
        }
        Ok(())
    }

    fn write_to(&self, path: &Path, rows: &[T]) -> Result<(), TableError> {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        writer
            .write_record(self.columns)
            .map_err(|e| self.error(e))?;
        for row in rows {
            writer.serialize(row).map_err(|e| self.error(e))?;
        }
        let bytes = writer.into_inner().map_err(|e| self.error(e.error()))?;
        replace_table_file(path, Some(&bytes)).map_err(|e| self.error(e))
    }
}

/// Takes the lock that every change of the table kept in `path` takes (the
/// one [`Table::update`] takes, in any process), held until dropped: for
/// whoever replaces the whole file from elsewhere (a cluster's copy).
pub fn lock_table_file(path: &Path) -> io::Result<File> {
    let file = open_lock_file(path)?;
    lock_exclusive(&file)?;
    Ok(file)
}

/// Opens (creating it) the lock file beside the table kept in `path`
/// (`.bans.csv.lock`).
fn open_lock_file(path: &Path) -> io::Result<File> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("table");
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(format!(".{name}.lock")))
}

/// Waits for the exclusive `flock` of an open lock file.
fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        match flock(file, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Replaces the table file `path` with `bytes` as [`Table::update`] does
/// (a temporary file of its own, synced, then renamed), or removes it when
/// `bytes` is `None`. Call it holding [`lock_table_file`].
pub fn replace_table_file(path: &Path, bytes: Option<&[u8]>) -> io::Result<()> {
    let Some(bytes) = bytes else {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("table");
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::os::unix::fs::PermissionsExt;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        note: String,
    }

    const COLUMNS: &[&str] = &["name", "note"];

    fn row(name: &str, note: &str) -> Row {
        Row {
            name: name.into(),
            note: note.into(),
        }
    }

    #[test]
    fn a_missing_table_is_empty_and_an_update_creates_it_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let table: Table<Row> = Table::new(dir.path().join("t.csv"), COLUMNS);
        assert!(table.rows().unwrap().is_empty());
        table
            .update(|rows| {
                rows.push(row("a", "x, \"y\""));
                Ok::<_, TableError>(())
            })
            .unwrap();
        assert_eq!(*table.rows().unwrap(), vec![row("a", "x, \"y\"")]);
        let mode = fs::metadata(table.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn a_change_by_another_process_is_seen_at_the_next_look() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let server: Table<Row> = Table::new(path.clone(), COLUMNS);
        let tool: Table<Row> = Table::new(path, COLUMNS);
        assert!(server.rows().unwrap().is_empty());
        tool.update(|rows| {
            rows.push(row("b", ""));
            Ok::<_, TableError>(())
        })
        .unwrap();
        assert_eq!(server.rows().unwrap().len(), 1);
    }

    #[test]
    fn a_failed_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let table: Table<Row> = Table::new(dir.path().join("t.csv"), COLUMNS);
        let result: Result<(), TableError> = table.update(|rows| {
            rows.push(row("c", ""));
            Err(TableError {
                path: PathBuf::new(),
                reason: "no".into(),
            })
        });
        assert!(result.is_err());
        assert!(!table.path().exists());
    }

    #[test]
    fn a_foreign_header_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        fs::write(&path, "other,cols\n1,2\n").unwrap();
        let table: Table<Row> = Table::new(path, COLUMNS);
        let err = table.rows().unwrap_err();
        assert!(err.to_string().contains("t.csv") && err.to_string().contains("other,cols"));
    }

    #[test]
    fn concurrent_changes_from_many_threads_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // A table of its own per thread, as separate processes have.
                    let table: Table<Row> = Table::new(path, COLUMNS);
                    for i in 0..25 {
                        table
                            .update(|rows| {
                                rows.push(row(&format!("t{t}-{i}"), ""));
                                Ok::<_, TableError>(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let table: Table<Row> = Table::new(path, COLUMNS);
        assert_eq!(table.rows().unwrap().len(), 200);
    }

    #[test]
    fn a_damaged_file_reads_as_its_last_good_copy_and_a_change_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let table: Table<Row> = Table::new(path.clone(), COLUMNS);
        table
            .update(|rows| {
                rows.push(row("mallory", "banned"));
                Ok::<_, TableError>(())
            })
            .unwrap();
        // Damaged behind the table's back: a row with a missing column.
        fs::write(&path, "name,note\nmallory,banned\nbroken\n").unwrap();
        assert_eq!(*table.rows().unwrap(), vec![row("mallory", "banned")]);
        // A table that never saw a good read (a server starting now) finds
        // the copy on disk.
        let fresh: Table<Row> = Table::new(path.clone(), COLUMNS);
        assert_eq!(*fresh.rows().unwrap(), vec![row("mallory", "banned")]);
        // A change starts from the good copy and leaves a readable file.
        fresh
            .update(|rows| {
                rows.push(row("eve", ""));
                Ok::<_, TableError>(())
            })
            .unwrap();
        let again: Table<Row> = Table::new(path, COLUMNS);
        assert_eq!(
            *again.read().unwrap(),
            vec![row("mallory", "banned"), row("eve", "")]
        );
        let kept: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".damaged-")
            })
            .collect();
        assert_eq!(kept.len(), 1, "the damaged file is kept aside");
    }
}

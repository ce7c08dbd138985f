//! Small CSV tables the server reads often and writes rarely (`accounts.csv`,
//! `bans.csv`): re-read when the file changes on disk, rewritten atomically.
//!
//! The server and the `server add-user`-style commands may both write a table;
//! each write replaces the whole file with a rename, so a reader never sees
//! half a file, and a running server notices the change at its next look.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
struct Stamp {
    inode: u64,
    len: u64,
    modified_ns: i128,
}

fn stamp(path: &Path) -> io::Result<Option<Stamp>> {
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

/// A CSV file of `T` rows with a header, cached in memory.
///
/// Promises:
/// 1. [`rows`](Table::rows) reflects the file as it was at the call (re-read
///    only when its stamp changed).
/// 2. [`update`](Table::update) replaces the file atomically (temporary file,
///    then rename), created readable and writable by its owner only.
/// 3. A missing file is an empty table.
pub struct Table<T> {
    path: PathBuf,
    columns: &'static [&'static str],
    cache: Mutex<(Option<Stamp>, Arc<Vec<T>>)>,
    _rows: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    /// The table kept in `path`, whose header is `columns`.
    pub fn new(path: PathBuf, columns: &'static [&'static str]) -> Table<T> {
        Table {
            path,
            columns,
            cache: Mutex::new((None, Arc::new(Vec::new()))),
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

    /// The rows as the file holds them now.
    pub fn rows(&self) -> Result<Arc<Vec<T>>, TableError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path).map_err(|e| self.error(e))?;
        if now.is_none() {
            cache.0 = None;
            cache.1 = Arc::new(Vec::new());
        } else if now != cache.0 {
            cache.1 = Arc::new(self.read()?);
            cache.0 = now;
        }
        Ok(Arc::clone(&cache.1))
    }

    fn read(&self) -> Result<Vec<T>, TableError> {
        let mut reader = csv::Reader::from_path(&self.path).map_err(|e| self.error(e))?;
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

    /// Reads the file afresh, lets `change` edit the rows, and writes them back
    /// atomically if `change` returns `Ok`.
    pub fn update<R, E: From<TableError>>(
        &self,
        change: impl FnOnce(&mut Vec<T>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut rows = if stamp(&self.path).map_err(|e| self.error(e))?.is_some() {
            self.read()?
        } else {
            Vec::new()
        };
        let result = change(&mut rows)?;
        self.write(&rows)?;
        Ok(result)
    }

    fn write(&self, rows: &[T]) -> Result<(), TableError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("table");
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| -> Result<(), TableError> {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|e| self.error(e))?;
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(file);
            writer
                .write_record(self.columns)
                .map_err(|e| self.error(e))?;
            for row in rows {
                writer.serialize(row).map_err(|e| self.error(e))?;
            }
            let mut file = writer.into_inner().map_err(|e| self.error(e.error()))?;
            file.flush().map_err(|e| self.error(e))?;
            file.sync_all().map_err(|e| self.error(e))?;
            fs::rename(&temp, &self.path).map_err(|e| self.error(e))?;
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
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
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
}

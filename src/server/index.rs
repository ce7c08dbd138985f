//! The index of `messages.csv`: what `/history` pages through and `/search`
//! searches, kept beside it in `messages.index` (SQLite, with its FTS5
//! full-text engine).
//!
//! # Derived, never the truth
//! `messages.csv` stays the one source of truth. The index is read from it by
//! its own thread, the *indexer*, which follows the file by byte offset: the
//! store tells it after each batch how far the file has got ([`Feed`]), and
//! it reads the new rows and adds them, in transactions that also record the
//! offset reached. So the store never waits for it (delivery is never
//! delayed), a `kill -9` leaves a consistent index that carries on from its
//! last commit, and a missing, stale or damaged index is simply rebuilt from
//! the file while the server serves (queries then say how far it has got).
//!
//! # Words
//! Search is by words, without regard to case or accents (`größe` finds
//! `Größe`, `cafe` finds `café`): SQLite's `unicode61` tokenizer. Scripts
//! written without spaces (Chinese, Japanese, Korean) are indexed one
//! character a word, as Lucene's standard tokenizer does, and a query of such
//! characters becomes a phrase: `日本語` finds the three characters in a
//! row, and one or two characters work as well as three. A word ending in
//! `*` matches words that start with it.
//!
//! # Threads
//! One indexer thread writes; [`QUERY_THREADS`] threads answer queries, each
//! with its own read connection (WAL mode: readers never wait for the
//! writer). Sessions wait for their answer on their own thread.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, params};

use crate::names;
use crate::rows::{MESSAGES_FILE, Message};

/// The index's file in the data directory.
pub const INDEX_FILE: &str = "messages.index";
/// Bumped when the schema changes: an index of another version is rebuilt.
const SCHEMA_VERSION: i64 = 2;
/// Threads that answer queries.
pub const QUERY_THREADS: usize = 2;
/// Queries waiting for a thread at most; past that the asker is told the
/// server is busy.
pub const QUERY_QUEUE: usize = 256;
/// Rows the indexer adds per transaction: big ones build fastest (FTS5
/// writes one segment per transaction, which are merged later).
const CHUNK: usize = 50_000;
/// How long a query waits for the indexer to catch up with what was
/// written before it was asked.
pub const CATCH_UP: Duration = Duration::from_secs(3);
/// How often the indexer follows `messages.csv` at most, unless a query
/// waits for it: one transaction for many of the store's batches costs far
/// less CPU than one per batch (FTS5 writes a segment per transaction), and
/// nobody sees the index lag, since a query waits for it to catch up.
pub const SETTLE: Duration = Duration::from_millis(200);
/// How long a session waits for an answer at most.
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// The indexer's nice value: it yields the CPU to the threads that deliver
/// (weight 110 against their 1024), so that under a load that takes every
/// CPU the index lags, not the chat; it catches up as soon as there is room.
pub const INDEXER_NICE: i32 = 10;
/// Stack of the index threads: SQLite's, not a client's small one.
const INDEX_STACK: usize = 2 << 20;

/// How far `messages.csv` has been written (from the store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// The file's device.
    pub dev: u64,
    /// The file's inode: another inode is another file (rotation).
    pub ino: u64,
    /// Bytes of whole, synced batches.
    pub len: u64,
    /// The last id written (0: none).
    pub last_id: u64,
}

/// How far the index has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Indexed {
    dev: u64,
    ino: u64,
    /// Bytes of `messages.csv` read into the index.
    offset: u64,
    /// The highest id in the index.
    last_id: u64,
}

#[derive(Debug, Default)]
struct State {
    written: Written,
    indexed: Indexed,
    /// Rebuilding from the start of the file: the file's length then.
    building: Option<u64>,
    /// Bumped whenever the index file is replaced: readers reopen.
    generation: u64,
    /// The index cannot be used (and why); queries say so.
    broken: Option<String>,
    /// Queries waiting for the indexer to catch up: it goes now.
    waiting: usize,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store's way to tell the indexer how far `messages.csv` has got.
#[derive(Clone)]
pub struct Feed(Arc<Shared>);

impl Feed {
    /// `messages.csv` now holds this much (never blocks).
    pub fn written(&self, written: Written) {
        self.0.lock().written = written;
        self.0.changed.notify_all();
    }
}

/// A message found in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its id.
    pub id: u64,
    /// Its timestamp (RFC 3339).
    pub time: String,
    /// Its room; empty for a whisper.
    pub room: String,
    /// Who sent it.
    pub sender: String,
    /// Who a whisper is for.
    pub recipient: String,
    /// What was said.
    pub text: String,
}

/// A page of a room's history, newest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The messages, oldest first.
    pub messages: Vec<Found>,
    /// There are older ones.
    pub more: bool,
}

/// What `/search` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hits {
    /// The messages, newest first.
    pub messages: Vec<Found>,
    /// While the index is being built: how much of `messages.csv` it covers,
    /// in per cent.
    pub building: Option<u8>,
}

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The index is being built and does not reach the messages asked for
    /// yet: how far it has got, in per cent.
    Building(u8),
    /// Too many queries wait.
    Busy,
    /// The index cannot be used.
    Broken(String),
    /// Nothing to search for.
    NoWords,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Building(percent) => write!(
                f,
                "the message index is being rebuilt ({percent}% done); try again in a moment"
            ),
            QueryError::Busy => write!(
                f,
                "the server is busy answering other searches; try again in a moment"
            ),
            QueryError::Broken(why) => write!(
                f,
                "the message index cannot be used right now ({why}); it is being rebuilt, try again later"
            ),
            QueryError::NoWords => write!(
                f,
                "usage: /search WORDS [in ROOM]: give words of letters or digits"
            ),
        }
    }
}

/// What is asked.
enum Ask {
    Page {
        room: String,
        before: u64,
        limit: usize,
    },
    Search {
        query: String,
        user: String,
        room: Option<String>,
        limit: usize,
    },
}

enum Answer {
    Page(Page),
    Hits(Hits),
}

struct Query {
    ask: Ask,
    reply: Sender<Result<Answer, QueryError>>,
}

/// The index: its indexer and its query threads.
///
/// Promises:
/// 1. The store never waits for it: [`Feed::written`] only records a number.
/// 2. A query sees every message written before it was asked, or waits at
///    most [`CATCH_UP`] for the indexer and then answers with what it has.
/// 3. Whatever happened to `messages.index` (deleted, stale, damaged, cut
///    short by a crash), it is rebuilt from `messages.csv`.
pub struct Index {
    path: PathBuf,
    shared: Arc<Shared>,
    queries: Sender<Query>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Index {
    /// Starts the indexer and the query threads for the data directory
    /// `dir`. The store is to be given [`feed`](Index::feed).
    pub fn start(dir: &Path) -> io::Result<Index> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let (queries, asked) = crossbeam_channel::bounded::<Query>(QUERY_QUEUE);
        let mut threads = Vec::new();
        let path = dir.join(INDEX_FILE);
        let csv = dir.join(MESSAGES_FILE);
        {
            let shared = Arc::clone(&shared);
            let path = path.clone();
            threads.push(
                thread::Builder::new()
                    .name("indexer".into())
                    .stack_size(INDEX_STACK)
                    .spawn(move || {
                        yield_to_delivery();
                        Indexer::new(path, csv, shared).run()
                    })?,
            );
        }
        for n in 0..QUERY_THREADS {
            let shared = Arc::clone(&shared);
            let asked = asked.clone();
            let path = path.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("query{n}"))
                    .stack_size(INDEX_STACK)
                    .spawn(move || answer_queries(&path, &shared, &asked))?,
            );
        }
        Ok(Index {
            path,
            shared,
            queries,
            threads: Mutex::new(threads),
        })
    }

    /// How far the index has got: the highest id in it, and while it is
    /// being built from the start of `messages.csv`, how far in per cent.
    pub fn progress(&self) -> (u64, Option<u8>) {
        let state = self.shared.lock();
        (
            state.indexed.last_id,
            state
                .building
                .map(|total| percent(state.indexed.offset, total)),
        )
    }

    /// Messages written to `messages.csv` and not yet in the index.
    pub fn lag(&self) -> u64 {
        let state = self.shared.lock();
        state.written.last_id.saturating_sub(state.indexed.last_id)
    }

    /// The store's side.
    pub fn feed(&self) -> Feed {
        Feed(Arc::clone(&self.shared))
    }

    /// The messages of `room` before id `before`, at most `limit`, oldest
    /// first.
    pub fn page(&self, room: &str, before: u64, limit: usize) -> Result<Page, QueryError> {
        match self.ask(Ask::Page {
            room: names::fold(room),
            before,
            limit,
        })? {
            Answer::Page(page) => Ok(page),
            Answer::Hits(_) => Err(QueryError::Broken("a wrong answer".into())),
        }
    }

    /// The newest messages (at most `limit`) with all the words of `query`:
    /// room messages from every room (or only `room`), and the whispers
    /// `user` sent or received.
    pub fn search(
        &self,
        query: &str,
        user: &str,
        room: Option<&str>,
        limit: usize,
    ) -> Result<Hits, QueryError> {
        if fts_query(query).is_none() {
            return Err(QueryError::NoWords);
        }
        match self.ask(Ask::Search {
            query: query.to_owned(),
            user: names::fold(user),
            room: room.map(names::fold),
            limit,
        })? {
            Answer::Hits(hits) => Ok(hits),
            Answer::Page(_) => Err(QueryError::Broken("a wrong answer".into())),
        }
    }

    fn ask(&self, ask: Ask) -> Result<Answer, QueryError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        match self.queries.try_send(Query { ask, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(QueryError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(QueryError::Broken("the server is stopping".into()));
            }
        }
        answer
            .recv_timeout(ANSWER_WAIT)
            .map_err(|_| QueryError::Broken("no answer in time".into()))?
    }

    /// Stops the threads and waits for them (the indexer commits what it
    /// has read). Queries asked later are refused.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        // The last connection to close folds the WAL into the index and
        // removes it; the query threads' read-only ones cannot.
        if let Ok(db) = Connection::open(&self.path) {
            drop(db);
        }
    }
}

/// Lowers the calling thread's priority to [`INDEXER_NICE`] (on Linux a
/// nice value is a thread's own).
fn yield_to_delivery() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), INDEXER_NICE) {
        log::debug!("cannot lower the indexer's priority: {e}");
    }
}

/// Per cent of `done` in `of`, 0–99 while not done.
fn percent(done: u64, of: u64) -> u8 {
    if of == 0 {
        return 0;
    }
    u8::try_from((done.min(of) * 100 / of).min(99)).unwrap_or(99)
}

/// Writes the text as the index sees it: characters of scripts written
/// without spaces stand apart, one word each.
pub fn words_of(text: &str) -> String {
    let mut out = String::new();
    words_into(text, &mut out);
    out
}

/// [`words_of`] into `out` (emptied first).
fn words_into(text: &str, out: &mut String) {
    out.clear();
    out.reserve(text.len() + 8);
    let mut plain = 0;
    for (at, c) in text.char_indices() {
        if spaceless(c) {
            out.push_str(&text[plain..at]);
            out.push(' ');
            out.push(c);
            out.push(' ');
            plain = at + c.len_utf8();
        }
    }
    out.push_str(&text[plain..]);
}

/// The text as the index sees it ([`words_of`]), without a copy when it
/// has no character of a script written without spaces: those are all at
/// U+3040 or above, encoded in UTF-8 from the lead byte 0xE3 on.
fn words_in<'a>(text: &'a str, buffer: &'a mut String) -> &'a str {
    if text.bytes().all(|b| b < 0xE3) {
        return text;
    }
    words_into(text, buffer);
    buffer
}

/// Scripts written without spaces between words: Han, kana, Hangul.
fn spaceless(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x31F0..=0x31FF    // katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width katakana
        | 0x20000..=0x3FFFF  // CJK extensions B and on
    )
}

/// The FTS5 query for what a user typed: every word must be there (a word
/// of several tokens, or of CJK characters, as a phrase; `word*` as a
/// prefix). `None` if no word has a letter or digit.
pub fn fts_query(typed: &str) -> Option<String> {
    let mut parts = Vec::new();
    for word in typed.split_whitespace().take(MAX_WORDS) {
        let (word, prefix) = match word.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (word, false),
        };
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        let quoted = words_of(word).replace('"', "\"\"");
        parts.push(format!("\"{quoted}\"{}", if prefix { "*" } else { "" }));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(" AND "))
    }
}

/// Words of a query used at most.
pub const MAX_WORDS: usize = 16;

/// The number of the room of whispers, whose key is empty.
const WHISPERS: i64 = 0;

fn sql_err(e: rusqlite::Error) -> io::Error {
    io::Error::other(e)
}

/// Whether an SQLite error means the file is damaged (rebuild it).
fn damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Removes the index and its WAL files.
fn remove_index(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    -- Rooms by key (names::fold of the name), numbered: an index of
    -- numbers is cheaper to add to than one of names. 0 is the empty
    -- room of whispers.
    CREATE TABLE IF NOT EXISTS room(no INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
    INSERT OR IGNORE INTO room(no, key) VALUES (0, '');
    CREATE TABLE IF NOT EXISTS msg(
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        room TEXT NOT NULL,
        room_no INTEGER NOT NULL,
        sender TEXT NOT NULL,
        -- The names' keys, for whispers only (/search shows a whisper
        -- to its sender and recipient); empty for room messages.
        sender_key TEXT NOT NULL,
        recipient TEXT NOT NULL,
        recipient_key TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS msg_room ON msg(room_no, id);
    CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
        words, content='', columnsize=0,
        tokenize='unicode61 remove_diacritics 2'
    );
";

/// The indexer thread's state.
struct Indexer {
    path: PathBuf,
    csv: PathBuf,
    shared: Arc<Shared>,
}

impl Indexer {
    fn new(path: PathBuf, csv: PathBuf, shared: Arc<Shared>) -> Indexer {
        Indexer { path, csv, shared }
    }

    fn run(self) {
        let mut failures = 0u32;
        loop {
            match self.serve() {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    log::error!(
                        "the message index failed: {e}; rebuilding it from {MESSAGES_FILE}"
                    );
                    {
                        let mut state = self.shared.lock();
                        state.broken = Some(e.to_string());
                        state.indexed = Indexed::default();
                        state.generation += 1;
                        if state.stop {
                            return;
                        }
                    }
                    remove_index(&self.path);
                    // A disk that keeps failing is not hammered.
                    let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                    let state = self.shared.lock();
                    let _ = self.shared.changed.wait_timeout(state, pause);
                }
            }
        }
    }

    /// Opens (or makes) the index and keeps it up with `messages.csv` until
    /// stopped.
    fn serve(&self) -> io::Result<()> {
        self.shared.lock().broken = None;
        let mut db = self.open()?;
        let mut indexed = match self.check(&db)? {
            Some(indexed) => indexed,
            None => {
                drop(db);
                remove_index(&self.path);
                db = self.open()?;
                let meta = std::fs::metadata(&self.csv)?;
                Indexed {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    offset: 0,
                    last_id: 0,
                }
            }
        };
        {
            let mut state = self.shared.lock();
            state.indexed = indexed;
            state.generation += 1;
        }
        self.shared.changed.notify_all();
        let mut last_pass: Option<Instant> = None;
        loop {
            let written = {
                let mut state = self.shared.lock();
                loop {
                    if state.stop {
                        return Ok(());
                    }
                    if let Some(why) = &state.broken {
                        return Err(io::Error::other(why.clone()));
                    }
                    let w = state.written;
                    if w.ino != 0
                        && ((w.dev, w.ino) != (indexed.dev, indexed.ino) || w.len > indexed.offset)
                    {
                        // Something new: gather more for a moment, unless
                        // someone asks now (or the index is being built).
                        let due = last_pass.map(|at| at + SETTLE);
                        let left = due.map(|due| due.saturating_duration_since(Instant::now()));
                        match left {
                            Some(left)
                                if !left.is_zero() && state.waiting == 0 && indexed.offset > 0 =>
                            {
                                state = self
                                    .shared
                                    .changed
                                    .wait_timeout(state, left)
                                    .map(|(s, _)| s)
                                    .unwrap_or_else(|p| p.into_inner().0);
                                continue;
                            }
                            _ => break w,
                        }
                    }
                    state = self
                        .shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
            };
            if (written.dev, written.ino) != (indexed.dev, indexed.ino)
                || written.len < indexed.offset
            {
                if indexed.ino != 0 {
                    log::warn!(
                        "{MESSAGES_FILE} is another file now (rotated or replaced): rebuilding the message index from it"
                    );
                }
                drop(db);
                remove_index(&self.path);
                db = self.open()?;
                indexed = Indexed {
                    dev: written.dev,
                    ino: written.ino,
                    offset: 0,
                    last_id: 0,
                };
                let mut state = self.shared.lock();
                state.generation += 1;
                state.indexed = indexed;
            }
            if indexed.offset == 0 {
                self.shared.lock().building = Some(written.len);
            }
            indexed = self.read_into(&mut db, indexed, written.len)?;
            last_pass = Some(Instant::now());
            let mut state = self.shared.lock();
            if let Some(total) = state.building
                && indexed.offset >= total
            {
                state.building = None;
                log::info!(
                    "the message index is complete: {} bytes of {MESSAGES_FILE}, up to id {}",
                    indexed.offset,
                    indexed.last_id
                );
            }
        }
    }

    fn open(&self) -> io::Result<Connection> {
        let db = Connection::open(&self.path).map_err(sql_err)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_err)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql_err)?;
        db.pragma_update(None, "cache_size", -16_000)
            .map_err(sql_err)?;
        // Fewer, larger checkpoints (each one syncs the database file).
        db.pragma_update(None, "wal_autocheckpoint", 8192)
            .map_err(sql_err)?;
        let version: Option<i64> = db
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |row| {
                row.get(0)
            })
            .optional()
            .or_else(|e| match e {
                rusqlite::Error::SqliteFailure(_, Some(ref why))
                    if why.contains("no such table") =>
                {
                    Ok(None)
                }
                e => Err(e),
            })
            .map_err(sql_err)?;
        if version.is_some_and(|v| v != SCHEMA_VERSION) {
            drop(db);
            log::warn!("the message index is of another version: rebuilding it");
            remove_index(&self.path);
            return self.open();
        }
        db.execute_batch(SCHEMA).map_err(sql_err)?;
        // Merge segments 16 at a time, not 4: each row's words are
        // rewritten by fewer merges, building and following alike (a query
        // looks in a few more segments). And up to 4 MB of words in memory
        // before they are written as a segment, not 1 MB: building, fewer
        // and bigger segments to merge. FTS5 keeps both in the index; they
        // are set at every open so that an index made before has them too.
        db.execute_batch(
            "INSERT INTO fts(fts, rank) VALUES ('automerge', 16);
             INSERT INTO fts(fts, rank) VALUES ('hashsize', 4194304);",
        )
        .map_err(sql_err)?;
        db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('version', ?1)",
            [SCHEMA_VERSION],
        )
        .map_err(sql_err)?;
        Ok(db)
    }

    /// Where the index stands, checked against `messages.csv`; `None` for a
    /// stale one, to be built again (a damaged one is an error).
    fn check(&self, db: &Connection) -> io::Result<Option<Indexed>> {
        let get = |key: &str| -> io::Result<u64> {
            let value: Option<i64> = db
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(sql_err)?;
            Ok(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
        };
        let indexed = Indexed {
            dev: get("dev")?,
            ino: get("ino")?,
            offset: get("offset")?,
            last_id: get("last_id")?,
        };
        let last_row = get("last_row")?;
        let last_row_id = get("last_row_id")?;
        // A small index is checked before it is used; a big one (seconds
        // to check) is used at once and checked beside it.
        if std::fs::metadata(&self.path).map_or(0, |m| m.len()) <= CHECK_AT_ONCE {
            quick_check(db)?;
        } else {
            let path = self.path.clone();
            let shared = Arc::clone(&self.shared);
            let checker = thread::Builder::new()
                .name("index-check".into())
                .stack_size(INDEX_STACK)
                .spawn(move || check_beside(&path, &shared));
            if let Err(e) = checker {
                log::warn!("cannot check the message index: {e}");
            }
        }
        let meta = std::fs::metadata(&self.csv)?;
        let same_file = (meta.dev(), meta.ino()) == (indexed.dev, indexed.ino);
        let fits = indexed.offset <= meta.len();
        let row_matches =
            last_row == 0 || row_id_at(&self.csv, last_row, indexed.offset) == Some(last_row_id);
        if indexed.ino != 0 && same_file && fits && row_matches {
            return Ok(Some(indexed));
        }
        if indexed.ino != 0 {
            log::warn!("the message index does not match {MESSAGES_FILE}: rebuilding it");
        } else {
            log::info!("building the message index from {MESSAGES_FILE}");
        }
        Ok(None)
    }

    /// Reads `messages.csv` from `from.offset` up to `len` into the index,
    /// a transaction every [`CHUNK`] rows.
    fn read_into(&self, db: &mut Connection, from: Indexed, len: u64) -> io::Result<Indexed> {
        let mut file = File::open(&self.csv)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (from.dev, from.ino) {
            // Replaced since the store wrote: the next round sees it.
            return Ok(from);
        }
        file.seek(SeekFrom::Start(from.offset))?;
        // A big buffer for a rebuild, a small one for a batch: the buffer is
        // zeroed when made, and following the store makes one per batch.
        let buffer = usize::try_from(len - from.offset)
            .unwrap_or(usize::MAX)
            .clamp(8 << 10, 1 << 20);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(from.offset == 0)
            .flexible(true)
            .buffer_capacity(buffer)
            .from_reader(io::Read::take(file, len - from.offset));
        let mut at = from;
        let mut record = csv::ByteRecord::new();
        // The last row read (whole, if not one of ours): where it starts
        // and its id (0 if it has none), so that a restart can tell the
        // index still matches the file.
        let mut last_row = 0u64;
        let mut last_row_id = 0u64;
        let mut reused = Reused::default();
        let mut done = false;
        while !done {
            let tx = db.transaction().map_err(sql_err)?;
            {
                let mut adder = Adder::new(&tx).map_err(sql_err)?;
                let mut rows = 0;
                while rows < CHUNK {
                    let start = reader.position().byte();
                    match reader.read_byte_record(&mut record) {
                        Ok(false) => {
                            done = true;
                            break;
                        }
                        Ok(true) => {}
                        Err(e) if e.is_io_error() => return Err(io::Error::other(e)),
                        Err(_) => continue,
                    }
                    rows += 1;
                    last_row = from.offset + start;
                    let Some(row) = Message::from_record(&record) else {
                        last_row_id = 0;
                        continue;
                    };
                    last_row_id = row.id;
                    adder.add(&mut reused, &row).map_err(sql_err)?;
                    at.last_id = at.last_id.max(row.id);
                }
                at.offset = from.offset + reader.position().byte();
                let mut meta = tx
                    .prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)")
                    .map_err(sql_err)?;
                for (key, value) in [
                    ("dev", at.dev),
                    ("ino", at.ino),
                    ("offset", at.offset),
                    ("last_id", at.last_id),
                    ("last_row", last_row),
                    ("last_row_id", last_row_id),
                ] {
                    if key.starts_with("last_row") && last_row == 0 {
                        continue;
                    }
                    meta.execute(params![key, value as i64]).map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            self.shared.lock().indexed = at;
            self.shared.changed.notify_all();
            let state = self.shared.lock();
            if let Some(why) = &state.broken {
                return Err(io::Error::other(why.clone()));
            }
            if state.stop {
                break;
            }
        }
        Ok(at)
    }
}

/// What adding rows reuses from row to row and transaction to transaction.
#[derive(Default)]
struct Reused {
    /// Rooms as written in rows, with the number of their key.
    rooms: HashMap<String, i64>,
    words: String,
}

/// Adds rows to the index in a transaction.
struct Adder<'c> {
    db: &'c Connection,
    insert: CachedStatement<'c>,
    words: CachedStatement<'c>,
}

impl<'c> Adder<'c> {
    fn new(db: &'c Connection) -> rusqlite::Result<Adder<'c>> {
        Ok(Adder {
            db,
            insert: db.prepare_cached(
                "INSERT OR IGNORE INTO msg(id, time, room, room_no, sender, sender_key, recipient, recipient_key, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            words: db.prepare_cached("INSERT INTO fts(rowid, words) VALUES (?1, ?2)")?,
        })
    }

    /// Adds a row, unless its id is in the index already.
    fn add(&mut self, reused: &mut Reused, row: &Message<'_>) -> rusqlite::Result<()> {
        let room_no = match reused.rooms.get(row.room) {
            Some(&no) => no,
            None => {
                let no = room_no(self.db, row.room)?;
                reused.rooms.insert(row.room.to_owned(), no);
                no
            }
        };
        // The names' keys are only asked of whispers.
        let (sender_key, recipient_key) = if room_no == WHISPERS {
            (names::folded(row.from), names::folded(row.to))
        } else {
            (Cow::Borrowed(""), Cow::Borrowed(""))
        };
        let inserted = self.insert.execute(params![
            row.id as i64,
            row.time,
            row.room,
            room_no,
            row.from,
            &*sender_key,
            row.to,
            &*recipient_key,
            row.text
        ])?;
        if inserted == 1 {
            self.words.execute(params![
                row.id as i64,
                words_in(row.text, &mut reused.words)
            ])?;
        }
        Ok(())
    }
}

/// The number of a room's key, made if new.
fn room_no(db: &Connection, room: &str) -> rusqlite::Result<i64> {
    let key = names::fold(room);
    db.prepare_cached("INSERT OR IGNORE INTO room(key) VALUES (?1)")?
        .execute([&key])?;
    db.prepare_cached("SELECT no FROM room WHERE key = ?1")?
        .query_row([&key], |row| row.get(0))
}

/// Indexes up to this size are checked before they are used.
const CHECK_AT_ONCE: u64 = 64 << 20;

/// SQLite's structural check of the whole index.
fn quick_check(db: &Connection) -> io::Result<()> {
    let quick: String = db
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(sql_err)?;
    if quick == "ok" {
        Ok(())
    } else {
        Err(io::Error::other(format!("it is damaged: {quick}")))
    }
}

/// Checks a big index on a connection of its own while it is used; a
/// damaged one is marked broken, and the indexer rebuilds it.
fn check_beside(path: &Path, shared: &Shared) {
    let generation = shared.lock().generation;
    let checked = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql_err)
        .and_then(|db| quick_check(&db));
    match checked {
        Ok(()) => log::info!("the message index was checked: it is sound"),
        Err(e) => {
            let mut state = shared.lock();
            if state.generation <= generation + 1 && state.broken.is_none() {
                state.broken = Some(e.to_string());
            }
            drop(state);
            shared.changed.notify_all();
        }
    }
}

/// The id of the row of `csv` that starts at `at` and ends at `end` (0 for
/// a whole row that is not one of ours); `None` if no row is there.
fn row_id_at(csv: &Path, at: u64, end: u64) -> Option<u64> {
    let mut file = File::open(csv).ok()?;
    file.seek(SeekFrom::Start(at)).ok()?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(io::Read::take(file, end.checked_sub(at)?));
    let mut record = csv::ByteRecord::new();
    reader.read_byte_record(&mut record).ok()?;
    if reader.position().byte() != end - at {
        return None;
    }
    Some(Message::from_record(&record).map_or(0, |row| row.id))
}

/// A query thread: answers with its own read connection, reopened whenever
/// the index file was replaced.
fn answer_queries(path: &Path, shared: &Shared, asked: &Receiver<Query>) {
    let mut db: Option<(u64, Connection)> = None;
    loop {
        let query = match asked.recv_timeout(Duration::from_millis(200)) {
            Ok(query) => query,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if shared.lock().stop {
                    return;
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let answer = answer(path, shared, &mut db, &query.ask);
        if let Err(QueryError::Broken(why)) = &answer {
            log::warn!("a query of the message index failed: {why}");
            db = None;
        }
        let _ = query.reply.send(answer);
    }
}

fn answer(
    path: &Path,
    shared: &Shared,
    db: &mut Option<(u64, Connection)>,
    ask: &Ask,
) -> Result<Answer, QueryError> {
    // Wait (a little) for the indexer to reach what the asker may have seen.
    let deadline = Instant::now() + CATCH_UP;
    let mut state = shared.lock();
    let target = match ask {
        Ask::Page { before, .. } => before.saturating_sub(1).min(state.written.last_id),
        Ask::Search { .. } => state.written.last_id,
    };
    if state.indexed.last_id < target {
        // The indexer goes now rather than at its next SETTLE.
        state.waiting += 1;
        shared.changed.notify_all();
        while state.indexed.last_id < target && !state.stop && state.broken.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = shared
                .changed
                .wait_timeout(state, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        state.waiting -= 1;
    }
    let building = state
        .building
        .map(|total| percent(state.indexed.offset, total));
    let behind = state.indexed.last_id < target;
    let generation = state.generation;
    let broken = state.broken.clone();
    drop(state);
    if let Some(why) = broken {
        return Err(QueryError::Broken(why));
    }
    if let Ask::Page { .. } = ask
        && behind
    {
        return Err(QueryError::Building(building.unwrap_or(99)));
    }
    if db.as_ref().is_none_or(|(g, _)| *g != generation) {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| QueryError::Broken(e.to_string()))?;
        let _ = connection.busy_timeout(Duration::from_secs(5));
        let _ = connection.pragma_update(None, "cache_size", -2_000);
        *db = Some((generation, connection));
    }
    let Some((_, connection)) = db.as_ref() else {
        return Err(QueryError::Broken("no connection".into()));
    };
    let result = match ask {
        Ask::Page {
            room,
            before,
            limit,
        } => page(connection, room, *before, *limit).map(Answer::Page),
        Ask::Search {
            query,
            user,
            room,
            limit,
        } => search(connection, query, user, room.as_deref(), *limit).map(|messages| {
            Answer::Hits(Hits {
                messages,
                building: building.or(behind.then_some(99)),
            })
        }),
    };
    result.map_err(|e| {
        if damaged(&e) {
            shared.lock().broken = Some(e.to_string());
            shared.changed.notify_all();
        }
        QueryError::Broken(e.to_string())
    })
}

fn found(row: &rusqlite::Row<'_>) -> rusqlite::Result<Found> {
    Ok(Found {
        id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        time: row.get(1)?,
        room: row.get(2)?,
        sender: row.get(3)?,
        recipient: row.get(4)?,
        text: row.get(5)?,
    })
}

fn page(db: &Connection, room: &str, before: u64, limit: usize) -> rusqlite::Result<Page> {
    let mut statement = db.prepare_cached(
        "SELECT id, time, room, sender, recipient, text FROM msg
         WHERE room_no = (SELECT no FROM room WHERE key = ?1) AND id < ?2
         ORDER BY id DESC LIMIT ?3",
    )?;
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    let want = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut messages = statement
        .query_map(params![room, before, want], found)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = messages.len() > limit;
    messages.truncate(limit);
    messages.reverse();
    Ok(Page { messages, more })
}

fn search(
    db: &Connection,
    query: &str,
    user: &str,
    room: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<Found>> {
    let Some(fts) = fts_query(query) else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = "SELECT m.id, m.time, m.room, m.sender, m.recipient, m.text
         FROM fts JOIN msg m ON m.id = fts.rowid
         WHERE fts MATCH ?1
           AND (m.room_no <> 0 OR m.sender_key = ?2 OR m.recipient_key = ?2)
           AND (?3 IS NULL OR m.room_no = (SELECT no FROM room WHERE key = ?3))
         ORDER BY fts.rowid DESC LIMIT ?4";
    let mut statement = db.prepare_cached(sql)?;
    statement
        .query_map(params![fts, user, room, limit], found)?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_characters_stand_apart_and_other_text_is_kept() {
        assert_eq!(words_of("Größe 日本語 ok"), "Größe  日  本  語  ok");
        assert_eq!(words_of("hello"), "hello");
    }

    #[test]
    fn words_without_a_copy_are_the_same_words() {
        let mut buffer = String::new();
        for text in [
            "",
            "hello",
            "Größe café",
            "日本語",
            "a日b",
            "x 我们在东京见面吧 y",
            "회의는 내일입니다",
            "ｶﾀｶﾅ and ー〜",
            "\u{20000}\u{2FFFF}\u{3FFFF}\u{40000}",
            "ぁ\u{303F}\u{3040}\u{30FF}\u{3100}",
            "€ ☃ ⅷ \u{E000}",
        ] {
            assert_eq!(
                words_in(text, &mut buffer),
                words_of_by_char(text),
                "{text}"
            );
            assert_eq!(words_of(text), words_of_by_char(text), "{text}");
        }
    }

    /// `words_of` as it was first written: character by character.
    fn words_of_by_char(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if spaceless(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn queries_need_every_word_and_quote_what_users_type() {
        assert_eq!(
            fts_query("lunch MEETING").as_deref(),
            Some("\"lunch\" AND \"MEETING\"")
        );
        assert_eq!(fts_query("日本").as_deref(), Some("\" 日  本 \""));
        assert_eq!(fts_query("say\"hi\"").as_deref(), Some("\"say\"\"hi\"\"\""));
        assert_eq!(fts_query("deploy*").as_deref(), Some("\"deploy\"*"));
        assert_eq!(fts_query("!!! ..."), None);
        assert_eq!(fts_query(""), None);
    }

    #[test]
    fn an_index_finds_words_in_any_case_and_cjk_of_any_length() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(SCHEMA).unwrap();
        let rows = [
            (1, "general", "alice", "", "Die Größe passt"),
            (2, "general", "bob", "", "我们在东京见面吧"),
            (3, "", "alice", "bob", "secret größe"),
            (4, "dev", "carol", "", "deployment done"),
            (5, "General", "Dave", "", "Größe again"),
            (6, "", "Alice", "BOB", "hi Bob"),
        ];
        let mut reused = Reused::default();
        let mut adder = Adder::new(&db).unwrap();
        for (id, room, from, to, text) in rows {
            let row = Message {
                id,
                time: "t",
                room,
                from,
                to,
                text,
            };
            adder.add(&mut reused, &row).unwrap();
        }
        drop(adder);
        let ids = |q: &str, user: &str, room: Option<&str>| -> Vec<u64> {
            search(&db, q, user, room, 50)
                .unwrap()
                .iter()
                .map(|f| f.id)
                .collect()
        };
        assert_eq!(ids("größe", "carol", None), [5, 1]);
        assert_eq!(ids("GRÖSSE", "carol", None), Vec::<u64>::new());
        assert_eq!(ids("größe", "bob", None), [5, 3, 1]);
        assert_eq!(ids("größe", "bob", Some("general")), [5, 1]);
        assert_eq!(ids("hi", "bob", None), [6]);
        assert_eq!(ids("hi", "alice", None), [6]);
        assert_eq!(ids("hi", "carol", None), Vec::<u64>::new());
        assert_eq!(ids("hi", "bob", Some("general")), Vec::<u64>::new());
        assert_eq!(ids("größe", "bob", Some("nowhere")), Vec::<u64>::new());
        assert_eq!(ids("東京", "carol", None), Vec::<u64>::new());
        assert_eq!(ids("东京", "carol", None), [2]);
        assert_eq!(ids("东", "carol", None), [2]);
        assert_eq!(ids("东京见面", "carol", None), [2]);
        assert_eq!(ids("京东", "carol", None), Vec::<u64>::new());
        assert_eq!(ids("deploy*", "carol", None), [4]);
        assert_eq!(ids("deploy", "carol", None), Vec::<u64>::new());
        assert_eq!(ids("passt", "carol", Some("dev")), Vec::<u64>::new());
        let first = page(&db, "general", 3, 1).unwrap();
        assert_eq!(first.messages.len(), 1);
        assert_eq!(first.messages[0].id, 2);
        assert!(first.more);
        let all = page(&db, "general", 100, 10).unwrap();
        let ids: Vec<u64> = all.messages.iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 2, 5]);
        assert_eq!(all.messages[2].room, "General");
        assert!(!all.more);
        assert!(page(&db, "nowhere", 100, 10).unwrap().messages.is_empty());
    }
}

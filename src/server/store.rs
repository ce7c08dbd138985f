//! The store: `messages.csv`, `data.csv` and `rooms.csv`, and the one thread
//! that writes them.
//!
//! Room messages and whispers reach the store thread through a channel. It
//! appends a batch, writes it to the files, syncs it to the disk (group
//! commit: one `fdatasync` a file for everything that arrived together,
//! unless `--no-fsync`), and only then hands the batch to the recipients'
//! outboxes: nothing is shown before it is on the disk, and file order is
//! delivery order. Then it tells the [`index`](crate::server::index) how far
//! `messages.csv` has got.
//!
//! A message's fate follows `messages.csv` alone: if that file cannot take a
//! batch, the batch is cut back out of it ([`DataFile`]) and its senders are
//! told it was not sent. `data.csv` and `rooms.csv` are side files: rows they
//! cannot take are kept (bounded) and written again on the next batch, or
//! within [`SIDE_RETRY`], and at shutdown; a shutdown that still cannot write
//! them says so and exits non-zero.
//!
//! At start, [`Store::open`] takes the data directory's lock, repairs a torn
//! last row and rebuilds the rooms, their history and the next message id
//! (never below the one recorded in `messages.next-id`, so ids carry on after
//! `messages.csv` was archived).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use chrono::{DateTime, Local};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::format::{self, Line};
use crate::names;
use crate::rows::{
    EVENT_COLUMNS, EVENTS_FILE, EventRow, MESSAGE_COLUMNS, MESSAGES_FILE, Message, ROOM_COLUMNS,
    ROOMS_FILE, RoomRow,
};
use crate::server::cluster::{self, Claim, Cluster, Event, Logged, Mine, Pos};
use crate::server::datafile::{DataFile, Faults, Reopened};
use crate::server::index::{Feed, Written};
use crate::server::limits::{STORE_BATCH, STORE_BATCH_BYTES, STORE_QUEUE};
use crate::server::lock::DirLock;
use crate::server::metrics::metrics;
use crate::server::moderation::{Ban, Bans, Mutes};
use crate::server::outbox::Outbox;
use crate::server::registry::{Announcement, ClientId, Registry, RoomHistory, RoomMessage, Said};

/// The file that remembers the next message id, so that ids carry on after
/// `messages.csv` was archived or rotated.
pub const NEXT_ID_FILE: &str = "messages.next-id";

/// Rows of a side file (`data.csv`, `rooms.csv`) kept for a retry at most,
/// in bytes: past that the oldest are given up (and said so).
pub const SIDE_PENDING_MAX: usize = 16 << 20;

/// How often rows a side file could not take are tried again while nothing
/// else arrives.
pub const SIDE_RETRY: Duration = Duration::from_secs(1);
/// How often a cluster node syncs its `messages.csv` at most (see
/// [`Store::set_cluster`]): per batch, the nodes' syncs queued on the disk
/// behind one another and behind Redis's own, and made every message wait
/// for them.
pub const CLUSTER_SYNC: Duration = Duration::from_secs(1);

/// What the store is asked to do, in order.
pub enum Request {
    /// A message for a room.
    Say {
        /// The room's name.
        room: Arc<str>,
        /// Who said it.
        sender: Arc<str>,
        /// What they said (sanitised).
        text: String,
        /// The sender's connection: it sees its own message even if it moved
        /// on before the message was written.
        from_id: ClientId,
        /// The sender's outbox.
        from: Outbox,
    },
    /// A whisper.
    Whisper {
        /// Who whispers.
        sender: Arc<str>,
        /// To whom.
        recipient: Arc<str>,
        /// What (sanitised).
        text: String,
        /// The sender, for the confirmation.
        from: Outbox,
        /// The recipient, when connected here.
        to: Option<Outbox>,
    },
    /// A connection event for `data.csv`.
    Event(EventRow),
    /// A room made with `/create`.
    RoomCreated {
        /// The room's name.
        room: Arc<str>,
        /// Who made it.
        creator: Arc<str>,
    },
    /// Announcements to rooms, after everything asked before.
    Announce(Vec<Announcement>),
    /// Lines for one client after everything asked before (the goodbye of
    /// `/quit` comes after the echo of its last message); then maybe close.
    Then {
        /// The client.
        outbox: Outbox,
        /// What to send.
        lines: Vec<Line>,
        /// Close the connection after them.
        close: bool,
    },
    /// Write what is queued, then end the store thread (shutdown), even
    /// while some client threads still hold a sender.
    Stop,
    /// Cluster: an event for the log (a move, a quit, an admin's act).
    Log(Event),
    /// Cluster: a login's claim of its name (and the room it lands in);
    /// the answer goes to `reply`.
    Login {
        /// The name.
        name: Arc<str>,
        /// The room the user lands in; none: the lobby.
        room: Option<Arc<str>>,
        /// Take the name over from a connection on another node (the right
        /// password or a token).
        take: bool,
        /// Where the answer goes.
        reply: Sender<Claim>,
    },
    /// Cluster: entries read from the log, in log order.
    Logged(Vec<Logged>),
    /// Cluster: requests to handle once the log is delivered up to `pos`.
    After {
        /// The place.
        pos: Pos,
        /// The requests, in order.
        requests: Vec<Request>,
    },
}

impl Request {
    /// Bytes of message text it carries.
    fn text_len(&self) -> usize {
        match self {
            Request::Say { text, .. } | Request::Whisper { text, .. } => text.len(),
            _ => 0,
        }
    }
}

/// A failure to open or read the data directory.
#[derive(Debug)]
pub enum StoreError {
    /// The directory or a file in it cannot be used.
    Io {
        /// The path in question.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A file exists but is not one of ours.
    Header {
        /// The file.
        path: PathBuf,
        /// Its first line.
        found: String,
    },
    /// The cluster cannot be joined: why, and what to do.
    Cluster(String),
    /// Another server uses the data directory.
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The other server's process id, if it could be read.
        pid: Option<u32>,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => {
                write!(f, "cannot use {}: {source}", path.display())
            }
            StoreError::Header { path, found } => write!(
                f,
                "{} does not look like a chatroom file (its header is {found:?}); move it away or choose another --data-dir",
                path.display()
            ),
            StoreError::Cluster(why) => f.write_str(why),
            StoreError::Locked { dir, pid } => write!(
                f,
                "another server{} is using the data directory {}; stop it first, or choose another --data-dir",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                dir.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What was read back from the data directory at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The id the next message gets.
    pub next_id: u64,
    /// The number the next connection's thread gets.
    pub next_thread: u64,
    /// Every room known, with its last lines (oldest first), ready to send.
    pub rooms: Vec<RoomHistory>,
    /// Who made each room of `rooms.csv` (one entry per room made), for the
    /// limit on rooms per user.
    pub creators: Vec<String>,
    /// Rows of `messages.csv` read.
    pub messages: u64,
    /// Rows that could not be read and were skipped.
    pub skipped: u64,
}

/// How the store writes.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Sync each batch to the disk before delivering it (`--no-fsync` turns
    /// it off).
    pub fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { fsync: true }
    }
}

/// A side file's rows waiting to be written again.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Failing since the last success (said once per streak).
    failing: bool,
    /// Rows given up because too many waited.
    lost: u64,
}

/// The open files, before the store thread starts.
pub struct Store {
    messages: DataFile,
    events: DataFile,
    rooms: DataFile,
    next_id: u64,
    next_id_file: Option<File>,
    pending_events: Pending,
    pending_rooms: Pending,
    feed: Option<Feed>,
    cluster: Option<ClusterSide>,
    /// The clocks of the log's timestamps, read once a second.
    clocks: format::Clocks,
    _lock: DirLock,
}

/// What the store needs as a node of a cluster.
pub struct ClusterSide {
    /// This node.
    pub cluster: Arc<Cluster>,
    /// The node's bans (`bans.csv`), kept as the log says.
    pub bans: Bans,
    /// The node's mutes, shared with the client threads.
    pub mutes: Arc<Mutes>,
    /// The last place written and delivered.
    pub last: Pos,
    /// Requests waiting for the log to be delivered up to their place.
    pub after: VecDeque<(Pos, Vec<Request>)>,
}

/// How the store thread ended: `Err` says what could not be written.
pub type StoreEnd = Result<(), String>;

impl Store {
    /// Opens (or creates) the three files in `dir` with durable defaults;
    /// see [`open_with`](Store::open_with).
    pub fn open(dir: &Path, history: usize) -> Result<(Store, Recovered), StoreError> {
        Store::open_with(dir, history, &StoreOptions::default())
    }

    /// Takes the data directory's lock, opens (or creates) the three files in
    /// `dir`, repairs torn rows, and reads back rooms, the last `history`
    /// messages of each, and the next ids.
    pub fn open_with(
        dir: &Path,
        history: usize,
        options: &StoreOptions,
    ) -> Result<(Store, Recovered), StoreError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: io::Error::other(
                    "it is a file, not a directory; choose a directory with --data-dir",
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = DirLock::take(dir)?;
        let messages_path = dir.join(MESSAGES_FILE);
        let events_path = dir.join(EVENTS_FILE);
        let rooms_path = dir.join(ROOMS_FILE);
        let faults = Faults::from_env();
        let sync = options.fsync;
        let messages =
            DataFile::open(&messages_path, &MESSAGE_COLUMNS, sync, faults.clone())?.timed();
        let events = DataFile::open(&events_path, &EVENT_COLUMNS, sync, faults.clone())?;
        let rooms = DataFile::open(&rooms_path, &ROOM_COLUMNS, sync, faults)?;

        let mut recovered = read_messages(&messages_path, history)?;
        let next_id_path = dir.join(NEXT_ID_FILE);
        if let Some(recorded) = read_next_id(&next_id_path)
            && recorded > recovered.next_id
        {
            log::info!(
                "{} holds rows up to id {}, but ids carry on from {recorded} ({NEXT_ID_FILE})",
                MESSAGES_FILE,
                recovered.next_id - 1
            );
            recovered.next_id = recorded;
        }
        let next_id_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&next_id_path)
            .map_err(|e| log::warn!("cannot keep {}: {e}", next_id_path.display()))
            .ok();
        recovered.next_thread = read_max_thread(&events_path)? + 1;
        let mut known: std::collections::HashSet<String> = recovered
            .rooms
            .iter()
            .map(|room| names::fold(&room.name))
            .collect();
        for (room, creator) in read_rooms(&rooms_path)? {
            if known.insert(names::fold(&room)) {
                recovered.rooms.push(RoomHistory {
                    name: room,
                    lines: Vec::new(),
                    last_id: 0,
                });
            }
            recovered.creators.push(creator);
        }
        let mut store = Store {
            messages,
            events,
            rooms,
            next_id: recovered.next_id,
            next_id_file,
            pending_events: Pending::default(),
            pending_rooms: Pending::default(),
            feed: None,
            cluster: None,
            clocks: format::Clocks::default(),
            _lock: lock,
        };
        store.record_next_id();
        Ok((store, recovered))
    }

    /// Makes this store a cluster node's: it writes what the log says.
    ///
    /// Its `messages.csv` is then synced at most every [`CLUSTER_SYNC`]
    /// rather than per batch: the commit point of a message is the log in
    /// Redis (acknowledged, with `appendfsync always`, on Redis's disk)
    /// before any node shows it, and a node whose last second of writes was
    /// lost (a power cut) reads it again from the log when it restarts,
    /// since it carries on from where its file ends.
    pub fn set_cluster(&mut self, cluster: Arc<Cluster>, bans: Bans, mutes: Arc<Mutes>) {
        self.messages.sync_at_most_every(CLUSTER_SYNC);
        self.cluster = Some(ClusterSide {
            cluster,
            bans,
            mutes,
            last: Pos::message(self.next_id.saturating_sub(1)),
            after: VecDeque::new(),
        });
    }

    /// Where the store tells the index how far `messages.csv` has got.
    pub fn set_feed(&mut self, feed: Feed) {
        feed.written(self.written());
        self.feed = Some(feed);
    }

    /// How far `messages.csv` has got.
    fn written(&self) -> Written {
        let (dev, ino) = self
            .messages
            .file()
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or((0, 0));
        Written {
            dev,
            ino,
            len: self.messages.good_len(),
            last_id: self.next_id - 1,
        }
    }

    /// Records the next id beside `messages.csv` (not synced: it only
    /// matters once `messages.csv` has lost rows, to archiving).
    fn record_next_id(&mut self) {
        if let Some(file) = &self.next_id_file
            && let Err(e) = file.write_all_at(format!("{:>20}\n", self.next_id).as_bytes(), 0)
        {
            log::warn!("cannot record the next id in {NEXT_ID_FILE}: {e}");
            self.next_id_file = None;
        }
    }

    /// Starts the store thread. It delivers to `registry` and ends once every
    /// sender of the returned channel is dropped and all it was given is written.
    pub fn spawn(
        self,
        registry: Arc<Registry>,
    ) -> io::Result<(Sender<Request>, JoinHandle<StoreEnd>)> {
        // Bounded: a sender faster than the disk waits on its own thread
        // (which holds no lock) instead of growing the queue without end.
        let (tx, rx) = crossbeam_channel::bounded(STORE_QUEUE);
        let handle = thread::Builder::new()
            .name("store".into())
            .spawn(move || self.run(rx, &registry))?;
        Ok((tx, handle))
    }

    fn run(mut self, rx: Receiver<Request>, registry: &Registry) -> StoreEnd {
        let mut batch = Vec::with_capacity(STORE_BATCH);
        let mut lines: Vec<Prepared> = Vec::with_capacity(STORE_BATCH);
        let mut stopping = false;
        loop {
            let first = if stopping {
                match rx.try_recv() {
                    Ok(first) => first,
                    Err(_) => break,
                }
            } else if let Some(wait) = self.idle_work_in() {
                match rx.recv_timeout(wait) {
                    Ok(first) => first,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.side_rows_waiting() {
                            self.write_side_files();
                        }
                        if self.messages.sync_due_in().is_some_and(|d| d.is_zero()) {
                            self.messages.sync_pending();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(first) => first,
                    Err(_) => break,
                }
            };
            let mut bytes = first.text_len();
            batch.push(first);
            while batch.len() < STORE_BATCH && bytes < STORE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.text_len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            if batch.iter().any(|r| matches!(r, Request::Stop)) {
                stopping = true;
            }
            if self.cluster.is_some() {
                self.run_cluster(&mut batch, registry, &mut lines);
                continue;
            }
            let now = Local::now();
            let fate = self.write(&batch, &now, &mut lines);
            deliver_all(&mut batch, &mut lines, fate, registry);
        }
        self.finish()
    }

    /// How long the store may wait for requests before it has something of
    /// its own to do: side files' rows to write again, or `messages.csv` to
    /// sync (a cluster node's); `None` if nothing.
    fn idle_work_in(&self) -> Option<Duration> {
        let side = self.side_rows_waiting().then_some(SIDE_RETRY);
        match (side, self.messages.sync_due_in()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The last writes at shutdown: what the side files still owe, and a
    /// final sync. Says what could not be written.
    fn finish(&mut self) -> StoreEnd {
        self.write_side_files();
        let mut problems = Vec::new();
        if let Some(why) = self.messages.damaged() {
            problems.push(format!("{} is damaged ({why})", self.messages.name()));
        }
        for (file, pending) in [
            (&self.events, &self.pending_events),
            (&self.rooms, &self.pending_rooms),
        ] {
            let rows = pending.bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            if rows + pending.lost > 0 {
                problems.push(format!(
                    "{} rows of {} could not be written",
                    rows + pending.lost,
                    file.name()
                ));
            }
        }
        for file in [&mut self.messages, &mut self.events, &mut self.rooms] {
            if let Err(e) = file.sync_all() {
                problems.push(format!("{} could not be synced: {e}", file.name()));
            }
        }
        self.record_next_id();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn side_rows_waiting(&self) -> bool {
        !self.pending_events.bytes.is_empty() || !self.pending_rooms.bytes.is_empty()
    }

    /// Serializes the batch and writes it: `messages.csv` decides the fate
    /// of the batch's messages; `lines` receives, for each request, the
    /// lines a message is delivered as.
    fn write(
        &mut self,
        batch: &[Request],
        now: &DateTime<Local>,
        lines: &mut Vec<Prepared>,
    ) -> Fate {
        let timestamp = format::file_time(now);
        // One clock for the whole batch, as they share one time.
        let clock = format::Clock::of(now);
        let first_id = self.next_id;
        for request in batch {
            let mut line = Prepared::Nothing;
            let row = match request {
                Request::Say {
                    room, sender, text, ..
                } => {
                    let message = Message {
                        id: self.next_id,
                        time: &timestamp,
                        room,
                        from: sender,
                        to: "",
                        text,
                    };
                    line = Prepared::Chat(self.next_id, format::chat_at(&clock, &message));
                    self.next_id += 1;
                    self.messages.rows.serialize(message)
                }
                // A whisper to someone who has just left is not delivered,
                // so it is not recorded either.
                Request::Whisper { to, .. } if to.as_ref().is_none_or(Outbox::is_closed) => {
                    lines.push(Prepared::Gone);
                    continue;
                }
                Request::Whisper {
                    sender,
                    recipient,
                    text,
                    ..
                } => {
                    let message = Message {
                        id: self.next_id,
                        time: &timestamp,
                        room: "",
                        from: sender,
                        to: recipient,
                        text,
                    };
                    line = Prepared::Whisper {
                        received: format::whisper_received_at(&clock, &message),
                        sent: format::whisper_sent_at(&clock, &message),
                    };
                    self.next_id += 1;
                    self.messages.rows.serialize(message)
                }
                Request::Event(event) => {
                    let mut event = event.clone();
                    event.timestamp.clone_from(&timestamp);
                    self.events.rows.serialize(event)
                }
                Request::RoomCreated { room, creator } => self.rooms.rows.serialize(RoomRow {
                    timestamp: &timestamp,
                    room,
                    creator,
                }),
                _ => Ok(()),
            };
            if let Err(e) = row {
                // Serializing into memory fails only on a row that cannot
                // be written at all; it is left out.
                log::error!("a row could not be serialized: {e}");
            }
            lines.push(line);
        }
        let bytes = self.messages.take_rows();
        let fate = if bytes.is_empty() && self.messages.damaged().is_none() {
            Fate::Saved
        } else {
            match self.messages.commit(&bytes) {
                Ok(reopened) => {
                    if reopened == Reopened::Fresh {
                        log::warn!(
                            "{} started afresh; ids carry on from {first_id}",
                            self.messages.name()
                        );
                    }
                    if self.next_id != first_id {
                        self.record_next_id();
                    }
                    if let Some(feed) = &self.feed {
                        feed.written(self.written());
                    }
                    let metrics = metrics();
                    metrics.messages.inc_by(self.next_id - first_id);
                    metrics
                        .store_batch
                        .observe((self.next_id - first_id) as f64);
                    metrics.store_refusing.set(0);
                    Fate::Saved
                }
                Err(e) => {
                    self.next_id = first_id;
                    let damaged = self.messages.damaged().is_some();
                    log::error!(
                        "writing {} failed: {e}; the messages of this batch were not sent{}",
                        self.messages.name(),
                        if damaged {
                            ", and no message is taken until the file can be repaired"
                        } else {
                            ""
                        }
                    );
                    metrics().store_refusing.set(i64::from(damaged));
                    if damaged { Fate::Damaged } else { Fate::Failed }
                }
            }
        };
        self.messages.give_back(bytes);
        self.write_side_files();
        fate
    }

    /// Writes the side files' new rows after those still owed.
    fn write_side_files(&mut self) {
        write_side(&mut self.events, &mut self.pending_events);
        write_side(&mut self.rooms, &mut self.pending_rooms);
    }
}

impl Store {
    /// A batch of a cluster node: the log's entries are written, then
    /// delivered; requests wait for the log to be delivered up to their
    /// place (the appender's order).
    fn run_cluster(
        &mut self,
        batch: &mut Vec<Request>,
        registry: &Registry,
        lines: &mut Vec<Prepared>,
    ) {
        let mut entries: Vec<Logged> = Vec::new();
        let mut direct: Vec<Request> = Vec::new();
        for request in batch.drain(..) {
            match request {
                // Most often the one request of the batch: taken as it is.
                Request::Logged(logged) if entries.is_empty() => entries = logged,
                Request::Logged(logged) => entries.extend(logged),
                Request::After { pos, requests } => {
                    if let Some(side) = self.cluster.as_mut() {
                        side.after.push_back((pos, requests));
                    }
                }
                other => direct.push(other),
            }
        }
        if !entries.is_empty() {
            self.write_logged(entries, registry);
        }
        let stopping = direct.iter().any(|r| matches!(r, Request::Stop));
        let mut ready = Vec::new();
        if let Some(side) = self.cluster.as_mut() {
            // A node that found its log broken delivers nothing more: what
            // waited for the log (goodbyes, rows of data.csv) goes now
            // rather than never.
            let broken = side.cluster.broken().is_some();
            while let Some((pos, _)) = side.after.front() {
                if *pos > side.last && !stopping && !broken {
                    break;
                }
                if let Some((_, requests)) = side.after.pop_front() {
                    ready.extend(requests);
                }
            }
        }
        ready.extend(direct);
        if ready.is_empty() {
            return;
        }
        let now = Local::now();
        let fate = self.write(&ready, &now, lines);
        deliver_all(&mut ready, lines, fate, registry);
    }

    /// Writes the log's entries that follow the last place written, syncs,
    /// then delivers them. If `messages.csv` cannot take them, nothing is
    /// delivered and the follower reads them again.
    fn write_logged(&mut self, mut accepted: Vec<Logged>, registry: &Registry) {
        let Some(start) = self.cluster.as_ref().map(|side| side.last) else {
            return;
        };
        let mut last = start;
        let mut stopped = false;
        accepted.retain(|logged| {
            if stopped || logged.entry.pos <= last {
                return false;
            }
            if !logged.entry.pos.follows(last) {
                // The follower is being sent back to `last`; these come again.
                stopped = true;
                return false;
            }
            last = logged.entry.pos;
            true
        });
        if accepted.is_empty() {
            return;
        }
        for logged in &accepted {
            let event = &logged.entry.event;
            let row = match event {
                _ if let Some(message) = event.message() => self.messages.rows.serialize(message),
                Event::Create {
                    time,
                    room,
                    creator,
                } if !(logged.replay && registry.room_named(room).is_some()) => {
                    self.rooms.rows.serialize(RoomRow {
                        timestamp: time,
                        room,
                        creator,
                    })
                }
                _ => Ok(()),
            };
            if let Err(e) = row {
                log::error!("a row could not be serialized: {e}");
            }
        }
        let bytes = self.messages.take_rows();
        let committed = if !bytes.is_empty() || self.messages.damaged().is_some() {
            self.messages.commit(&bytes).map(|_| ())
        } else {
            Ok(())
        };
        self.messages.give_back(bytes);
        if let Err(e) = committed {
            log::error!(
                "writing {} failed: {e}; the cluster's messages after id {} are read again and written when it can take them (nothing is shown before)",
                self.messages.name(),
                start.msg
            );
            let refused = self.rooms.take_rows();
            self.rooms.give_back(refused);
            metrics()
                .store_refusing
                .set(i64::from(self.messages.damaged().is_some()));
            if let Some(side) = &self.cluster {
                side.cluster.rewind_to(start);
            }
            return;
        }
        let metrics = metrics();
        metrics.messages.inc_by(last.msg - start.msg);
        metrics.store_batch.observe((last.msg - start.msg) as f64);
        metrics.store_refusing.set(0);
        if last.msg != start.msg {
            self.next_id = last.msg + 1;
            self.record_next_id();
            if let Some(feed) = &self.feed {
                feed.written(self.written());
            }
            cluster::wrote(last.msg);
        }
        self.write_side_files();
        let Some(side) = self.cluster.as_mut() else {
            return;
        };
        side.last = last;
        deliver_all_logged(side, &mut self.clocks, &accepted, registry);
    }
}

/// Hands one written entry of the log to this node's clients, and keeps
/// who is where, bans and mutes as it says; all but a room message with a
/// readable time, which goes with its room's run ([`deliver_all_logged`]).
fn deliver_logged(
    side: &ClusterSide,
    clocks: &mut format::Clocks,
    logged: &Logged,
    registry: &Registry,
) {
    let own = logged.entry.node == side.cluster.node;
    let replay = logged.replay;
    if let Some(message) = logged.entry.event.message() {
        let Some(clock) = clocks.of_stamp(message.time) else {
            log::error!(
                "message {} of the cluster's log has the time {:?}; not shown",
                message.id,
                message.time
            );
            return;
        };
        if let Event::Whisper { .. } = logged.entry.event {
            if !replay && let Some((_, outbox)) = registry.find(message.to) {
                outbox.send(format::whisper_received_at(clock, &message));
            }
            if let Some(Mine::Whisper { from }) = &logged.mine {
                from.send(format::whisper_sent_at(clock, &message));
            }
        }
        // A room message: delivered with its room's run, not here.
        return;
    }
    match &logged.entry.event {
        // Handled above.
        Event::Say { .. } | Event::Whisper { .. } => {}
        // This node did the rest itself when it asked for it.
        _ if own => {}
        Event::Create { room, creator, .. } => {
            if registry.room_named(room).is_none() {
                registry.ensure_room(room);
                if !replay {
                    registry
                        .to_everyone(format::room_created(room, creator))
                        .deliver();
                }
            }
        }
        Event::Moderate(m) => moderate(side, m, registry, replay),
        _ if replay => {}
        Event::Online { name, room } => {
            for told in registry.remote_move(name, room.as_deref(), "join", true) {
                told.deliver();
            }
        }
        Event::Move { name, room, .. } => {
            for told in registry.remote_move(name, room.as_deref(), "join", false) {
                told.deliver();
            }
        }
        Event::Quit { name, .. } => {
            if let Some(told) = registry.remote_quit(name) {
                told.deliver();
            }
        }
        Event::Takeover { name, node } => {
            if *node == side.cluster.node {
                if let Some(taken) = registry.lose_name(name) {
                    log::info!(
                        "{name} logged in again on another node; closing their connection here (thread {})",
                        taken.id
                    );
                    taken.outbox.send(format::error(
                        "you logged in again from another connection; this one is closed",
                    ));
                    taken.outbox.close();
                    taken.outbox.stop_reading();
                    if let Some(told) = taken.told {
                        told.deliver();
                    }
                }
            } else if let Some(told) = registry.remote_quit(name) {
                told.deliver();
            }
        }
    }
}

/// A room message of the log as its room's members are given it, with
/// its room: `line` is its chat line.
fn logged_message<'a>(logged: &'a Logged, line: &'a Line) -> Option<(RoomMessage<'a>, &'a str)> {
    let Event::Say {
        id,
        room,
        from,
        text,
        ..
    } = &logged.entry.event
    else {
        return None;
    };
    let (from_id, outbox) = match &logged.mine {
        Some(Mine::Say { from_id, from }) => (*from_id, Some(from)),
        _ => (ClientId::MAX, None),
    };
    let message = RoomMessage {
        id: *id,
        line,
        from_id,
        from: outbox,
        said: Some(Said { sender: from, text }),
    };
    Some((message, room))
}

/// Hands written entries of the log to this node's clients, in order; the
/// messages of a run of them to one room go together
/// ([`Registry::deliver_run`]).
fn deliver_all_logged(
    side: &ClusterSide,
    clocks: &mut format::Clocks,
    entries: &[Logged],
    registry: &Registry,
) {
    let _held = Outbox::hold_handovers();
    // The chat line of each room message (none for the rest, or for a
    // message whose time cannot be read, which deliver_logged reports).
    let lines: Vec<Option<Line>> = entries
        .iter()
        .map(|logged| match &logged.entry.event {
            Event::Say { time, .. } => {
                let message = logged.entry.event.message()?;
                Some(format::chat_at(clocks.of_stamp(time)?, &message))
            }
            _ => None,
        })
        .collect();
    let mut run = Vec::new();
    let mut at = 0;
    while at < entries.len() {
        let first = lines[at]
            .as_ref()
            .and_then(|line| logged_message(&entries[at], line));
        let Some((first, room)) = first else {
            deliver_logged(side, clocks, &entries[at], registry);
            at += 1;
            continue;
        };
        run.clear();
        run.push(first);
        at += 1;
        while let Some(line) = lines.get(at).and_then(Option::as_ref)
            && let Some((next, next_room)) = logged_message(&entries[at], line)
            && next_room == room
        {
            run.push(next);
            at += 1;
        }
        registry.deliver_run(room, &run);
    }
}

/// An admin's act on another node, done here: bans in `bans.csv`, mutes,
/// and whoever it is about, if connected here, told (and dropped).
fn moderate(side: &ClusterSide, m: &cluster::Moderation, registry: &Registry, replay: bool) {
    let because = if m.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", m.reason)
    };
    match m.action.as_str() {
        "ban" => {
            let ban = Ban {
                timestamp: m.time.clone(),
                name: m.target.clone(),
                ip: m.ip.clone(),
                by: m.by.clone(),
                reason: m.reason.clone(),
            };
            if let Err(e) = side.bans.add(ban) {
                log::error!("cannot save the ban of {} from the cluster: {e}", m.target);
            }
        }
        "unban" => {
            if let Err(e) = side.bans.remove(&m.target) {
                log::error!("cannot lift the ban of {} from the cluster: {e}", m.target);
            }
        }
        "mute" if !replay => {
            let until = m
                .minutes
                .map(|min| std::time::Instant::now() + Duration::from_secs(u64::from(min) * 60));
            side.mutes.mute(&m.target, until);
        }
        "unmute" if !replay => {
            side.mutes.unmute(&m.target);
        }
        _ => {}
    }
    if replay {
        return;
    }
    let Some(found) = registry
        .find_user(&m.target)
        .filter(|f| f.id != crate::server::registry::REMOTE)
    else {
        return;
    };
    let notice = match m.action.as_str() {
        "kick" => format!("{} was kicked by {}{because}", found.name, m.by),
        "ban" => format!("{} was banned by {}{because}", found.name, m.by),
        "mute" => format!(
            "{} was muted by {}{}",
            found.name,
            m.by,
            m.minutes.map_or_else(
                || " until unmuted".to_string(),
                |n| format!(" for {n} minute{}", if n == 1 { "" } else { "s" })
            )
        ),
        "unmute" => format!("{} was unmuted by {}", found.name, m.by),
        _ => return,
    };
    let line = format::notice(notice);
    match &found.room {
        Some(room) => {
            if let Some(told) = registry.to_room(room, line) {
                told.deliver();
            }
        }
        None => {
            if let Some((_, outbox)) = registry.find(&found.name) {
                outbox.send(line);
            }
        }
    }
    match m.action.as_str() {
        "kick" => registry.drop_client(
            found.id,
            format::error(format_args!("you were kicked by {}{because}", m.by)),
        ),
        "ban" => registry.drop_client(
            found.id,
            format::error(format_args!("you were banned by {}{because}", m.by)),
        ),
        _ => {}
    }
}

/// Writes a side file's rows owed and new; keeps them for later on failure.
fn write_side(file: &mut DataFile, pending: &mut Pending) {
    let new = file.take_rows();
    if new.is_empty() && pending.bytes.is_empty() {
        file.give_back(new);
        return;
    }
    pending.bytes.extend_from_slice(&new);
    file.give_back(new);
    match file.commit(&pending.bytes) {
        Ok(_) => {
            if pending.failing {
                log::warn!(
                    "{} can be written again; the rows it owed are written",
                    file.name()
                );
            }
            pending.bytes.clear();
            pending.failing = false;
        }
        Err(e) => {
            if !std::mem::replace(&mut pending.failing, true) {
                log::error!(
                    "writing {} failed: {e}; its rows are kept and tried again every {}s (messages are not affected)",
                    file.name(),
                    SIDE_RETRY.as_secs()
                );
            }
            if pending.bytes.len() > SIDE_PENDING_MAX {
                let excess = pending.bytes.len() - SIDE_PENDING_MAX;
                let cut = pending.bytes[excess..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(pending.bytes.len(), |p| excess + p + 1);
                let rows = pending.bytes[..cut].iter().filter(|&&b| b == b'\n').count();
                pending.bytes.drain(..cut);
                pending.lost += rows as u64;
                log::error!(
                    "{}: gave up {rows} rows that waited too long to be written",
                    file.name()
                );
            }
        }
    }
}

/// What became of a batch's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// In `messages.csv`: deliver.
    Saved,
    /// Not written (cut back): tell the senders.
    Failed,
    /// Not written, and the file cannot be repaired for now.
    Damaged,
}

/// The lines a written message is delivered as.
enum Prepared {
    Nothing,
    /// A whisper whose recipient left before it was written.
    Gone,
    Chat(u64, Line),
    Whisper {
        received: Line,
        sent: Line,
    },
}

/// A written room message as its room's members are given it, with its
/// room.
fn room_message<'a>(
    request: &'a Request,
    line: &'a Prepared,
) -> Option<(RoomMessage<'a>, &'a str)> {
    let (
        Request::Say {
            room,
            sender,
            text,
            from_id,
            from,
        },
        Prepared::Chat(id, line),
    ) = (request, line)
    else {
        return None;
    };
    let message = RoomMessage {
        id: *id,
        line,
        from_id: *from_id,
        from: Some(from),
        said: Some(Said { sender, text }),
    };
    Some((message, room))
}

/// Hands a written batch to its recipients, in order (`lines` holds what
/// each request is delivered as); the messages of a run of them to one
/// room go together ([`Registry::deliver_run`]). Leaves both empty.
fn deliver_all(
    batch: &mut Vec<Request>,
    lines: &mut Vec<Prepared>,
    fate: Fate,
    registry: &Registry,
) {
    let _held = Outbox::hold_handovers();
    let mut at = 0;
    while at < batch.len() {
        if fate == Fate::Saved
            && let Some((first, room)) = room_message(&batch[at], &lines[at])
        {
            let mut end = at + 1;
            while end < batch.len()
                && room_message(&batch[end], &lines[end]).is_some_and(|(_, r)| r == room)
            {
                end += 1;
            }
            if end == at + 1 {
                registry.deliver_run(room, std::slice::from_ref(&first));
            } else {
                let run: Vec<RoomMessage<'_>> = (at..end)
                    .filter_map(|k| room_message(&batch[k], &lines[k]).map(|(m, _)| m))
                    .collect();
                registry.deliver_run(room, &run);
            }
            at = end;
            continue;
        }
        // Taken out; the batch is emptied below.
        let request = std::mem::replace(&mut batch[at], Request::Stop);
        let line = std::mem::replace(&mut lines[at], Prepared::Nothing);
        deliver(request, line, fate, registry);
        at += 1;
    }
    batch.clear();
    lines.clear();
}

/// Hands one written request to its recipients.
fn deliver(request: Request, line: Prepared, fate: Fate, registry: &Registry) {
    let saved = fate == Fate::Saved;
    match request {
        Request::Say {
            room,
            sender,
            text,
            from_id,
            from,
            ..
        } => match (fate, line) {
            (Fate::Saved, Prepared::Chat(id, line)) => {
                registry.deliver_to_room(
                    &room,
                    id,
                    line.clone(),
                    from_id,
                    Some(Said {
                        sender: &sender,
                        text: &text,
                    }),
                );
                from.send(line);
            }
            (Fate::Damaged, _) => {
                from.send(format::error(DAMAGED));
            }
            _ => {
                from.send(format::error(
                    "your message could not be saved (the server's disk failed), so it was not sent; try again later",
                ));
            }
        },
        Request::Whisper {
            recipient,
            from,
            to,
            ..
        } => {
            let Prepared::Whisper { received, sent } = line else {
                from.send(format::error(format_args!(
                    "{recipient} left before your whisper arrived"
                )));
                return;
            };
            if fate == Fate::Damaged {
                from.send(format::error(DAMAGED));
            } else if !saved {
                from.send(format::error(
                    "your whisper could not be saved (the server's disk failed), so it was not sent; try again later",
                ));
            } else if to.is_some_and(|to| to.send(received)) {
                from.send(sent);
                metrics().deliveries.inc_by(2);
            } else {
                from.send(format::error(format_args!(
                    "{recipient} left before your whisper arrived"
                )));
            }
        }
        Request::Then {
            outbox,
            lines,
            close,
        } => {
            for line in lines {
                outbox.send(line);
            }
            if close {
                outbox.close();
            }
        }
        Request::Announce(announcements) => {
            for announcement in &announcements {
                announcement.deliver();
            }
        }
        Request::Login { reply, .. } => {
            let _ = reply.send(Claim::Unavailable);
        }
        _ => {}
    }
}

/// What a sender is told while `messages.csv` cannot be repaired.
const DAMAGED: &str = "the server cannot save messages right now (its disk failed and messages.csv could not be repaired), so nothing you send is sent; an administrator must look at the server's log";

/// The next id recorded in [`NEXT_ID_FILE`], if it can be read.
fn read_next_id(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim().parse::<u64>() {
        Ok(id) => Some(id),
        Err(_) if text.trim().is_empty() => None,
        Err(_) => {
            log::warn!(
                "{} does not hold a number; ids go on from messages.csv",
                path.display()
            );
            None
        }
    }
}

/// Opens a CSV file for appending: created with its header when missing or
/// empty, its torn last row dropped, its header checked.
pub fn open_csv(path: &Path, columns: &[&str]) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err(path))?;
    if let Some(dropped) = repair_torn_tail(&mut file).map_err(io_err(path))? {
        eprintln!(
            "{}: dropped a partial last row ({dropped} bytes) left by a crash",
            path.display()
        );
    }
    let header = columns.join(",");
    let len = file.metadata().map_err(io_err(path))?.len();
    if len == 0 {
        file.write_all(format!("{header}\n").as_bytes())
            .map_err(io_err(path))?;
        return Ok(file);
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut first = String::new();
    BufReader::new((&file).take(4096))
        .read_line(&mut first)
        .map_err(io_err(path))?;
    let found = first
        .trim_end_matches(['\r', '\n'])
        .trim_start_matches('\u{feff}');
    if found != header {
        return Err(StoreError::Header {
            path: path.to_path_buf(),
            found: found.to_string(),
        });
    }
    Ok(file)
}

/// Cuts a file back to the end of its last complete line. Returns how many
/// bytes were dropped, if any. Rows never hold a raw newline (the server
/// removes control characters), so the last `\n` ends the last whole row.
pub fn repair_torn_tail(file: &mut File) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(pos) = part.iter().rposition(|&b| b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep == len {
                return Ok(None);
            }
            file.set_len(keep)?;
            return Ok(Some(len - keep));
        }
        if start == 0 {
            file.set_len(0)?;
            return Ok(Some(len));
        }
        end = start;
    }
}

/// Reads `messages.csv`: the next id, and the last `history` lines of each room.
pub fn read_messages(path: &Path, history: usize) -> Result<Recovered, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let mut rooms: HashMap<String, (String, VecDeque<csv::ByteRecord>, u64)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut recovered = Recovered::default();
    let mut max_id = 0u64;
    let mut record = csv::ByteRecord::new();
    let mut clocks = format::Clocks::default();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) if e.is_io_error() => {
                return Err(io_err(path)(io::Error::other(e.to_string())));
            }
            Err(_) => {
                recovered.skipped += 1;
                continue;
            }
        }
        let id = std::str::from_utf8(&record[0])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let (Some(id), 6) = (id, record.len()) else {
            recovered.skipped += 1;
            continue;
        };
        recovered.messages += 1;
        max_id = max_id.max(id);
        let room = &record[2];
        if room.is_empty() {
            continue;
        }
        let Ok(room) = std::str::from_utf8(room) else {
            recovered.skipped += 1;
            continue;
        };
        let key = names::fold(room);
        let entry = rooms.entry(key).or_insert_with_key(|key| {
            order.push(key.clone());
            (room.to_string(), VecDeque::new(), 0)
        });
        entry.2 = entry.2.max(id);
        if history > 0 {
            if entry.1.len() == history {
                entry.1.pop_front();
            }
            entry.1.push_back(record.clone());
        }
    }
    if recovered.skipped > 0 {
        eprintln!(
            "{}: skipped {} rows that could not be read",
            path.display(),
            recovered.skipped
        );
    }
    recovered.next_id = max_id + 1;
    for key in order {
        if let Some((name, records, last_id)) = rooms.remove(&key) {
            let lines = records
                .iter()
                .filter_map(|record| history_line(record, &mut clocks))
                .collect();
            recovered.rooms.push(RoomHistory {
                name,
                lines,
                last_id,
            });
        }
    }
    Ok(recovered)
}

/// A stored room message as it is replayed to a newcomer.
fn history_line(record: &csv::ByteRecord, clocks: &mut format::Clocks) -> Option<(u64, Line)> {
    let message = Message::from_record(record)?;
    let clock = clocks.of_stamp(message.time)?;
    Some((message.id, format::chat_at(clock, &message)))
}

/// The highest thread number in `data.csv`, so numbering carries on.
fn read_max_thread(path: &Path) -> Result<u64, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let mut record = csv::ByteRecord::new();
    let mut max = 0;
    while let Ok(more) = reader.read_byte_record(&mut record) {
        if !more {
            break;
        }
        if let Some(thread) = record
            .get(3)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|s| s.parse::<u64>().ok())
        {
            max = max.max(thread);
        }
    }
    Ok(max)
}

/// The rooms recorded in `rooms.csv`, each with who made it.
fn read_rooms(path: &Path) -> Result<Vec<(String, String)>, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    Ok(reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|r| Some((r.get(1)?.to_string(), r.get(2).unwrap_or("").to_string())))
        .filter(|(room, _)| names::room_name(room).is_ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_torn_last_row_is_dropped_and_earlier_rows_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            dir.path(),
            "m.csv",
            "id,timestamp,room,sender,recipient,text\n1,t,general,a,,hi\n2,t,gen",
        );
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(repair_torn_tail(&mut file).unwrap(), Some(7));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "id,timestamp,room,sender,recipient,text\n1,t,general,a,,hi\n"
        );
        assert_eq!(repair_torn_tail(&mut file).unwrap(), None);
    }

    #[test]
    fn a_file_torn_inside_its_header_is_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), MESSAGES_FILE, "id,time");
        open_csv(&path, &MESSAGE_COLUMNS).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "id,timestamp,room,sender,recipient,text\n"
        );
    }

    #[test]
    fn a_torn_tail_longer_than_one_chunk_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let tail = "x".repeat(200_000);
        let path = write_file(dir.path(), "m.csv", &format!("a,b\n1,2\n{tail}"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(repair_torn_tail(&mut file).unwrap(), Some(200_000));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,2\n");
    }

    #[test]
    fn a_foreign_file_is_refused_with_its_header_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), MESSAGES_FILE, "name,score\nx,1\n");
        let err = open_csv(&path, &MESSAGE_COLUMNS).unwrap_err();
        assert!(err.to_string().contains("name,score"), "{err}");
    }

    #[test]
    fn message_rows_quote_commas_quotes_and_keep_unicode() {
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        out.serialize(Message {
            id: 7,
            time: "2026-11-21T18:05:09.123+00:00",
            room: "general",
            from: "alice",
            to: "",
            text: "hi, \"bob\" — ça va?",
        })
        .unwrap();
        let bytes = out.into_inner().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "7,2026-11-21T18:05:09.123+00:00,general,alice,,\"hi, \"\"bob\"\" — ça va?\"\n"
        );
        let mut back = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&bytes[..]);
        let row = back.records().next().unwrap().unwrap();
        assert_eq!(&row[5], "hi, \"bob\" — ça va?");
    }

    #[test]
    fn history_is_rebuilt_per_room_with_the_last_lines_and_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = String::from("id,timestamp,room,sender,recipient,text\n");
        for id in 1..=10 {
            let room = if id % 2 == 0 { "even" } else { "Odd" };
            content.push_str(&format!(
                "{id},2026-11-21T12:00:0{}.000+00:00,{room},u{id},,\"m, {id}\"\n",
                id % 10
            ));
        }
        content.push_str("11,2026-11-21T12:00:00.000+00:00,,alice,bob,secret\n");
        content.push_str("this row is broken\n");
        let path = write_file(dir.path(), MESSAGES_FILE, &content);
        let recovered = read_messages(&path, 3).unwrap();
        assert_eq!(recovered.next_id, 12);
        assert_eq!(recovered.messages, 11);
        assert_eq!(recovered.skipped, 1);
        let names: Vec<&str> = recovered.rooms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Odd", "even"]);
        assert_eq!(recovered.rooms[1].last_id, 10);
        let even: Vec<&str> = recovered.rooms[1]
            .lines
            .iter()
            .map(|(_, l)| l.text())
            .collect();
        assert_eq!(even.len(), 3);
        assert!(even[0].ends_with("u6: m, 6\n"), "{even:?}");
        assert!(even[2].ends_with("u10: m, 10\n"), "{even:?}");
        assert!(
            recovered
                .rooms
                .iter()
                .all(|r| r.lines.iter().all(|(_, l)| !l.text().contains("secret")))
        );
    }

    #[test]
    fn an_empty_directory_starts_at_id_one_and_thread_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, recovered) = Store::open(dir.path(), 50).unwrap();
        assert_eq!(recovered.next_id, 1);
        assert_eq!(recovered.next_thread, 1);
        for (file, columns) in [
            (MESSAGES_FILE, MESSAGE_COLUMNS.join(",")),
            (EVENTS_FILE, EVENT_COLUMNS.join(",")),
            (ROOMS_FILE, ROOM_COLUMNS.join(",")),
        ] {
            let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert_eq!(text, format!("{columns}\n"));
        }
    }
}

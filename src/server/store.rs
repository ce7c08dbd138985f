//! The store: `messages.csv`, `data.csv` and `rooms.csv`, and the one thread
//! that writes them.
//!
//! Room messages and whispers reach the store thread through a channel. It
//! appends a batch, flushes it to the files, and only then hands the batch to
//! the recipients' outboxes: nothing is shown before it is written, and file
//! order is delivery order. At start, [`Store::open`] repairs a torn last row
//! and rebuilds the rooms, their history and the next message id.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use chrono::{DateTime, Local};
use crossbeam_channel::{Receiver, Sender};

use crate::format::{self, Line};
use crate::names;
use crate::rows::{
    EVENT_COLUMNS, EVENTS_FILE, EventRow, MESSAGE_COLUMNS, MESSAGES_FILE, Message, ROOM_COLUMNS,
    ROOMS_FILE, RoomRow,
};
use crate::server::limits::{STORE_BATCH, STORE_BATCH_BYTES, STORE_QUEUE};
use crate::server::outbox::Outbox;
use crate::server::registry::{Announcement, ClientId, Registry};

/// Bytes a CSV writer gathers before it writes: a whole batch in one call.
const WRITE_BUFFER: usize = 1 << 20;

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
        /// The recipient.
        to: Outbox,
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
    pub rooms: Vec<(String, Vec<Line>)>,
    /// Who made each room of `rooms.csv` (one entry per room made), for the
    /// limit on rooms per user.
    pub creators: Vec<String>,
    /// Rows of `messages.csv` read.
    pub messages: u64,
    /// Rows that could not be read and were skipped.
    pub skipped: u64,
}

/// The open files, before the store thread starts.
pub struct Store {
    messages: csv::Writer<File>,
    events: csv::Writer<File>,
    rooms: csv::Writer<File>,
    next_id: u64,
}

impl Store {
    /// Opens (or creates) the three files in `dir`, repairs torn rows, and reads
    /// back rooms, the last `history` messages of each, and the next ids.
    pub fn open(dir: &Path, history: usize) -> Result<(Store, Recovered), StoreError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: io::Error::other(
                    "it is a file, not a directory; choose a directory with --data-dir",
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let messages_path = dir.join(MESSAGES_FILE);
        let events_path = dir.join(EVENTS_FILE);
        let rooms_path = dir.join(ROOMS_FILE);
        let messages = open_csv(&messages_path, &MESSAGE_COLUMNS)?;
        let events = open_csv(&events_path, &EVENT_COLUMNS)?;
        let rooms = open_csv(&rooms_path, &ROOM_COLUMNS)?;

        let mut recovered = read_messages(&messages_path, history)?;
        recovered.next_thread = read_max_thread(&events_path)? + 1;
        let mut known: std::collections::HashSet<String> = recovered
            .rooms
            .iter()
            .map(|(name, _)| names::fold(name))
            .collect();
        for (room, creator) in read_rooms(&rooms_path)? {
            if known.insert(names::fold(&room)) {
                recovered.rooms.push((room, Vec::new()));
            }
            recovered.creators.push(creator);
        }
        let writer = |file| {
            csv::WriterBuilder::new()
                .has_headers(false)
                .buffer_capacity(WRITE_BUFFER)
                .from_writer(file)
        };
        let store = Store {
            messages: writer(messages),
            events: writer(events),
            rooms: writer(rooms),
            next_id: recovered.next_id,
        };
        Ok((store, recovered))
    }

    /// Starts the store thread. It delivers to `registry` and ends once every
    /// sender of the returned channel is dropped and all it was given is written.
    pub fn spawn(self, registry: Arc<Registry>) -> io::Result<(Sender<Request>, JoinHandle<()>)> {
        // Bounded: a sender faster than the disk waits on its own thread
        // (which holds no lock) instead of growing the queue without end.
        let (tx, rx) = crossbeam_channel::bounded(STORE_QUEUE);
        let handle = thread::Builder::new()
            .name("store".into())
            .spawn(move || self.run(rx, &registry))?;
        Ok((tx, handle))
    }

    fn run(mut self, rx: Receiver<Request>, registry: &Registry) {
        let mut batch = Vec::with_capacity(STORE_BATCH);
        let mut lines: Vec<Prepared> = Vec::with_capacity(STORE_BATCH);
        while let Ok(first) = rx.recv() {
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
            let now = Local::now();
            let written = self.write(&batch, &now, &mut lines);
            if let Err(e) = &written {
                log::error!(
                    "writing the data files failed: {e}; the messages of this batch were not sent"
                );
            }
            for (request, line) in batch.drain(..).zip(lines.drain(..)) {
                deliver(request, line, written.is_ok(), registry);
            }
        }
        if let Err(e) = self.flush() {
            log::error!("flushing the data files at exit failed: {e}");
        }
    }

    /// Appends the batch to the files and flushes them; `lines` receives, for
    /// each request, the lines a message is delivered as.
    fn write(
        &mut self,
        batch: &[Request],
        now: &DateTime<Local>,
        lines: &mut Vec<Prepared>,
    ) -> Result<(), csv::Error> {
        let timestamp = format::file_time(now);
        let mut result = Ok(());
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
                    line = Prepared::Chat(format::chat(now, &message));
                    self.next_id += 1;
                    self.messages.serialize(message)
                }
                // A whisper to someone who has just left is not delivered,
                // so it is not recorded either.
                Request::Whisper { to, .. } if to.is_closed() => {
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
                        received: format::whisper_received(now, &message),
                        sent: format::whisper_sent(now, &message),
                    };
                    self.next_id += 1;
                    self.messages.serialize(message)
                }
                Request::Event(event) => {
                    let mut event = event.clone();
                    event.timestamp.clone_from(&timestamp);
                    self.events.serialize(event)
                }
                Request::RoomCreated { room, creator } => self.rooms.serialize(RoomRow {
                    timestamp: &timestamp,
                    room,
                    creator,
                }),
                Request::Then { .. } | Request::Announce(_) => Ok(()),
            };
            lines.push(line);
            if result.is_ok() {
                result = row;
            }
        }
        let flushed = self.flush();
        result.and(flushed.map_err(csv::Error::from))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.messages.flush()?;
        self.events.flush()?;
        self.rooms.flush()
    }
}

/// The lines a written message is delivered as.
enum Prepared {
    Nothing,
    /// A whisper whose recipient left before it was written.
    Gone,
    Chat(Line),
    Whisper {
        received: Line,
        sent: Line,
    },
}

/// Hands one written request to its recipients.
fn deliver(request: Request, line: Prepared, saved: bool, registry: &Registry) {
    match request {
        Request::Say {
            room,
            from_id,
            from,
            ..
        } => match (saved, line) {
            (true, Prepared::Chat(line)) => {
                registry.deliver_to_room(&room, line.clone(), from_id);
                from.send(line);
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
            if !saved {
                from.send(format::error(
                    "your whisper could not be saved (the server's disk failed), so it was not sent; try again later",
                ));
            } else if to.send(received) {
                from.send(sent);
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
        Request::Event(_) | Request::RoomCreated { .. } => {}
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
    let mut rooms: HashMap<String, (String, VecDeque<csv::ByteRecord>)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut recovered = Recovered::default();
    let mut max_id = 0u64;
    let mut record = csv::ByteRecord::new();
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
            (room.to_string(), VecDeque::new())
        });
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
        if let Some((name, records)) = rooms.remove(&key) {
            let lines = records.iter().filter_map(history_line).collect();
            recovered.rooms.push((name, lines));
        }
    }
    Ok(recovered)
}

/// A stored room message as it is replayed to a newcomer.
fn history_line(record: &csv::ByteRecord) -> Option<Line> {
    let field = |i| std::str::from_utf8(&record[i]).ok();
    let stamp = field(1)?;
    let time = DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(format::chat(
        &time,
        &Message {
            id: field(0)?.parse().ok()?,
            time: stamp,
            room: field(2)?,
            from: field(3)?,
            to: "",
            text: field(5)?,
        },
    ))
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
        let names: Vec<&str> = recovered.rooms.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Odd", "even"]);
        let even: Vec<&str> = recovered.rooms[1].1.iter().map(|l| l.text()).collect();
        assert_eq!(even.len(), 3);
        assert!(even[0].ends_with("u6: m, 6\n"), "{even:?}");
        assert!(even[2].ends_with("u10: m, 10\n"), "{even:?}");
        assert!(
            recovered
                .rooms
                .iter()
                .all(|(_, lines)| lines.iter().all(|l| !l.text().contains("secret")))
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

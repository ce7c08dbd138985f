//! The rows of the data files, as both sides of the wire know them: the
//! server writes them, the viewers read them. Names of the files, their
//! columns, and the shapes that serialize in column order.

use serde::Serialize;

/// Columns of `messages.csv`.
pub const MESSAGE_COLUMNS: [&str; 6] = ["id", "timestamp", "room", "sender", "recipient", "text"];
/// Columns of `data.csv`.
pub const EVENT_COLUMNS: [&str; 6] = ["timestamp", "ip", "port", "thread", "name", "event"];
/// Columns of `rooms.csv`, the rooms made with `/create`.
pub const ROOM_COLUMNS: [&str; 3] = ["timestamp", "room", "creator"];

/// File names in the data directory.
pub const MESSAGES_FILE: &str = "messages.csv";
/// See [`MESSAGES_FILE`].
pub const EVENTS_FILE: &str = "data.csv";
/// See [`MESSAGES_FILE`].
pub const ROOMS_FILE: &str = "rooms.csv";

/// A row of `data.csv`: one connection event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// RFC 3339 with offset.
    pub timestamp: String,
    /// Peer address.
    pub ip: String,
    /// Peer port.
    pub port: u16,
    /// Number of the thread serving the connection.
    pub thread: u64,
    /// The user's name, once known.
    pub name: String,
    /// `connect`, `login`, `disconnect`, `login-failed`, `login-refused`,
    /// `flood`, or a moderation act with its target (`kick NAME reason`).
    pub event: String,
}

/// A row of `rooms.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomRow<'a> {
    /// When the room was made (RFC 3339).
    pub timestamp: &'a str,
    /// Its name.
    pub room: &'a str,
    /// Who made it.
    pub creator: &'a str,
}

/// A stored message, as the store and the history rebuild know it. Its fields
/// serialize in the order of the columns of `messages.csv` (`id, timestamp,
/// room, sender, recipient, text`), so the store writes it as a row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Message<'a> {
    /// Its id in `messages.csv`.
    pub id: u64,
    /// Its RFC 3339 timestamp.
    pub time: &'a str,
    /// Its room; empty for a whisper.
    pub room: &'a str,
    /// Who sent it.
    pub from: &'a str,
    /// Who a whisper is for; empty for a room message.
    pub to: &'a str,
    /// What was said.
    pub text: &'a str,
}

impl<'a> Message<'a> {
    /// A row of `messages.csv` as read: `None` unless it has the six
    /// columns, is UTF-8 and has a numeric id.
    pub fn from_record(record: &'a csv::ByteRecord) -> Option<Message<'a>> {
        if record.len() != MESSAGE_COLUMNS.len() {
            return None;
        }
        let field = |i| std::str::from_utf8(&record[i]).ok();
        Some(Message {
            id: field(0)?.parse().ok()?,
            time: field(1)?,
            room: field(2)?,
            from: field(3)?,
            to: field(4)?,
            text: field(5)?,
        })
    }
}

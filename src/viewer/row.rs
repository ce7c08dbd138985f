//! Rows of `messages.csv` and `data.csv` as typed values. A row that does not
//! fit its file's columns becomes a [`Malformed`] that says why, so a viewer
//! can show it as such and go on.

use std::fmt;

use chrono::DateTime;

use crate::rows::{EVENT_COLUMNS, MESSAGE_COLUMNS};
use crate::viewer::tail::RawRow;
use crate::viewer::text;

/// Characters of a malformed row quoted in its report.
const EXCERPT_CHARS: usize = 60;

/// A timestamp that parsed as RFC 3339, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(String);

/// True when `s` is RFC 3339 (`2026-11-21T18:05:09.123+00:00`).
fn is_timestamp(s: &str) -> bool {
    // RFC 3339 starts with `YYYY-MM-DDTHH:MM:SS` in ASCII, which the date
    // and clock slices rely on.
    s.get(..19).is_some() && DateTime::parse_from_rfc3339(s).is_ok()
}

impl Stamp {
    /// The timestamp if `s` is RFC 3339 (`2026-11-21T18:05:09.123+00:00`).
    pub fn parse(s: &str) -> Option<Stamp> {
        is_timestamp(s).then(|| Stamp(s.to_string()))
    }

    /// `2026-11-21`, as the server wrote it (its local date).
    pub fn date(&self) -> &str {
        &self.0[..10]
    }

    /// `18:05:09`, as the server wrote it (its local time).
    pub fn clock(&self) -> &str {
        &self.0[11..19]
    }

    /// The timestamp as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A row of `messages.csv`: a room message or a whisper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Where the row starts in the file.
    pub offset: u64,
    /// The message id.
    pub id: u64,
    /// When it was delivered.
    pub time: Stamp,
    /// The room; empty for a whisper.
    pub room: String,
    /// Who sent it.
    pub sender: String,
    /// Who a whisper is for; empty for a room message.
    pub recipient: String,
    /// What was said.
    pub text: String,
}

impl Message {
    /// True for a whisper (a message to one person, not to a room).
    pub fn is_whisper(&self) -> bool {
        self.room.is_empty()
    }

    /// The message as borrowed fields.
    pub fn borrowed(&self) -> MessageRef<'_> {
        MessageRef {
            offset: self.offset,
            id: self.id,
            time: &self.time.0,
            room: &self.room,
            sender: &self.sender,
            recipient: &self.recipient,
            text: &self.text,
        }
    }
}

/// A row of `messages.csv` borrowed from the reader's buffer: what streaming
/// output uses, so printing a row allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// Where the row starts in the file.
    pub offset: u64,
    /// The message id.
    pub id: u64,
    /// When it was delivered: RFC 3339, checked.
    pub time: &'a str,
    /// The room; empty for a whisper.
    pub room: &'a str,
    /// Who sent it.
    pub sender: &'a str,
    /// Who a whisper is for; empty for a room message.
    pub recipient: &'a str,
    /// What was said.
    pub text: &'a str,
}

impl MessageRef<'_> {
    /// True for a whisper (a message to one person, not to a room).
    pub fn is_whisper(&self) -> bool {
        self.room.is_empty()
    }

    /// `2026-11-21`, as the server wrote it.
    pub fn date(&self) -> &str {
        &self.time[..10]
    }

    /// `18:05:09`, as the server wrote it.
    pub fn clock(&self) -> &str {
        &self.time[11..19]
    }

    /// An owned copy.
    pub fn to_message(&self) -> Message {
        Message {
            offset: self.offset,
            id: self.id,
            time: Stamp(self.time.to_string()),
            room: self.room.to_string(),
            sender: self.sender.to_string(),
            recipient: self.recipient.to_string(),
            text: self.text.to_string(),
        }
    }
}

/// A row of `data.csv`: one connection event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Where the row starts in the file.
    pub offset: u64,
    /// When it happened.
    pub time: Stamp,
    /// The peer's address.
    pub ip: String,
    /// The peer's port.
    pub port: u16,
    /// The number of the connection's thread.
    pub thread: u64,
    /// The user's name, once known (empty before login).
    pub name: String,
    /// `connect`, `login`, `disconnect`, or a kind added later.
    pub kind: String,
}

impl Event {
    /// `ip:port`, with brackets around an IPv6 address.
    pub fn address(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// Why a row could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not the file's number of columns.
    Columns {
        /// Columns found.
        found: usize,
        /// Columns the file has.
        expected: usize,
    },
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// A field that does not hold what its column needs.
    BadField {
        /// The column's name.
        column: &'static str,
    },
    /// A message with neither a room nor a recipient, or with both.
    RoomAndRecipient,
    /// Longer than a row may be; its contents were not kept.
    Oversized,
    /// The first row is not this file's header.
    Header,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Columns { found, expected } => {
                write!(f, "{found} columns instead of {expected}")
            }
            Problem::NotUtf8 => f.write_str("not UTF-8"),
            Problem::BadField { column } => write!(f, "bad {column}"),
            Problem::RoomAndRecipient => {
                f.write_str("a message needs a room or a recipient, not both or neither")
            }
            Problem::Oversized => f.write_str("row too long"),
            Problem::Header => f.write_str("not the header this file should start with"),
        }
    }
}

/// A row that could not be read, with where it is and a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Where the row starts in the file.
    pub offset: u64,
    /// Why it was not read.
    pub problem: Problem,
    /// The start of the row, cleaned for the terminal.
    pub excerpt: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[malformed row at byte {}: {}",
            self.offset, self.problem
        )?;
        if !self.excerpt.is_empty() {
            write!(f, ": {}", self.excerpt)?;
        }
        f.write_str("]")
    }
}

impl Malformed {
    fn new(row: &RawRow<'_>, problem: Problem) -> Malformed {
        let mut joined = Vec::new();
        for (i, field) in row.iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(field);
            if joined.len() > EXCERPT_CHARS * 4 {
                break;
            }
        }
        let lossy = String::from_utf8_lossy(&joined);
        let clean = text::clean(&lossy);
        let mut excerpt: String = clean.chars().take(EXCERPT_CHARS).collect();
        if clean.chars().nth(EXCERPT_CHARS).is_some() {
            excerpt.push('…');
        }
        Malformed {
            offset: row.offset,
            problem,
            excerpt,
        }
    }
}

/// A row read from a file: a value, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The row.
    Row(T),
    /// A row that could not be read.
    Malformed(Malformed),
}

/// Checks a header row against the file's columns.
pub fn check_header(row: &RawRow<'_>, columns: &[&str]) -> Option<Malformed> {
    let same =
        row.len() == columns.len() && row.iter().zip(columns).all(|(f, c)| f == c.as_bytes());
    (!same).then(|| Malformed::new(row, Problem::Header))
}

/// The fields of a row with `N` columns, as text.
fn fields<'a, const N: usize>(row: &RawRow<'a>) -> Result<[&'a str; N], Problem> {
    if row.is_oversized() {
        return Err(Problem::Oversized);
    }
    if row.len() != N {
        return Err(Problem::Columns {
            found: row.len(),
            expected: N,
        });
    }
    // One UTF-8 check for the whole row, then each field's ends must fall
    // between characters: cheaper than a check per field.
    let all = std::str::from_utf8(row.concatenated()).map_err(|_| Problem::NotUtf8)?;
    let mut out = [""; N];
    let mut start = 0;
    for (slot, &end) in out.iter_mut().zip(row.field_ends()) {
        *slot = all.get(start..end).ok_or(Problem::NotUtf8)?;
        start = end;
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(field: &str, column: &'static str) -> Result<T, Problem> {
    field.parse().map_err(|_| Problem::BadField { column })
}

fn stamp(field: &str) -> Result<Stamp, Problem> {
    Stamp::parse(field).ok_or(Problem::BadField {
        column: "timestamp",
    })
}

/// Reads a data row of `messages.csv` (`id,timestamp,room,sender,recipient,text`).
pub fn parse_message(row: &RawRow<'_>) -> Parsed<Message> {
    match parse_message_ref(row) {
        Parsed::Row(m) => Parsed::Row(m.to_message()),
        Parsed::Malformed(bad) => Parsed::Malformed(bad),
    }
}

/// Reads a data row of `messages.csv` without copying its fields.
pub fn parse_message_ref<'a>(row: &RawRow<'a>) -> Parsed<MessageRef<'a>> {
    let read = || -> Result<MessageRef<'a>, Problem> {
        let [id, time, room, sender, recipient, text] = fields::<{ MESSAGE_COLUMNS.len() }>(row)?;
        if room.is_empty() == recipient.is_empty() {
            return Err(Problem::RoomAndRecipient);
        }
        if sender.is_empty() {
            return Err(Problem::BadField { column: "sender" });
        }
        if !is_timestamp(time) {
            return Err(Problem::BadField {
                column: "timestamp",
            });
        }
        Ok(MessageRef {
            offset: row.offset,
            id: number(id, "id")?,
            time,
            room,
            sender,
            recipient,
            text,
        })
    };
    match read() {
        Ok(message) => Parsed::Row(message),
        Err(problem) => Parsed::Malformed(Malformed::new(row, problem)),
    }
}

/// Reads a data row of `data.csv` (`timestamp,ip,port,thread,name,event`).
pub fn parse_event(row: &RawRow<'_>) -> Parsed<Event> {
    let read = || -> Result<Event, Problem> {
        let [time, ip, port, thread, name, kind] = fields::<{ EVENT_COLUMNS.len() }>(row)?;
        if ip.is_empty() {
            return Err(Problem::BadField { column: "ip" });
        }
        if kind.is_empty() {
            return Err(Problem::BadField { column: "event" });
        }
        Ok(Event {
            offset: row.offset,
            time: stamp(time)?,
            ip: ip.to_string(),
            port: number(port, "port")?,
            thread: number(thread, "thread")?,
            name: name.to_string(),
            kind: kind.to_string(),
        })
    };
    match read() {
        Ok(event) => Parsed::Row(event),
        Err(problem) => Parsed::Malformed(Malformed::new(row, problem)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::viewer::tail::RowReader;

    /// Parses `text` (rows without a header) with `parse`.
    pub(crate) fn parse_all<T>(text: &str, parse: fn(&RawRow<'_>) -> Parsed<T>) -> Vec<Parsed<T>> {
        let mut out = Vec::new();
        let mut reader = RowReader::new(1);
        reader.feed(text.as_bytes(), &mut |row| out.push(parse(&row)));
        out
    }

    #[test]
    fn a_room_message_and_a_whisper_are_read_with_quotes_and_unicode() {
        let rows = parse_all(
            "1,2026-11-21T18:05:09.123+00:00,general,alice,,\"hi, \"\"bob\"\" — ça va?\"\n\
             2,2026-11-21T18:05:10.000+01:00,,alice,bob,psst\n",
            parse_message,
        );
        let Parsed::Row(first) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(first.text, "hi, \"bob\" — ça va?");
        assert_eq!(first.time.date(), "2026-11-21");
        assert_eq!(first.time.clock(), "18:05:09");
        assert!(!first.is_whisper());
        let Parsed::Row(second) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert!(second.is_whisper());
        assert_eq!(second.recipient, "bob");
    }

    #[test]
    fn hand_edited_rows_are_malformed_with_a_reason_and_a_clean_excerpt() {
        let rows = parse_all(
            "1,2026-11-21T18:05:09.123+00:00,general,alice\n\
             x,2026-11-21T18:05:09.123+00:00,general,alice,,hi\n\
             3,yesterday,general,alice,,hi\n\
             4,2026-11-21T18:05:09.123+00:00,,alice,,to nobody\n\
             5,2026-11-21T18:05:09.123+00:00,general,alice,,\"\x1b[2Jboom\"\n",
            parse_message,
        );
        let problems: Vec<String> = rows
            .iter()
            .map(|r| match r {
                Parsed::Malformed(m) => m.to_string(),
                Parsed::Row(m) => format!("row {}", m.text),
            })
            .collect();
        assert!(problems[0].starts_with("[malformed row at byte 1: 4 columns instead of 6: 1,"));
        assert!(problems[1].contains("bad id"), "{}", problems[1]);
        assert!(problems[2].contains("bad timestamp"), "{}", problems[2]);
        assert!(
            problems[3].contains("room or a recipient"),
            "{}",
            problems[3]
        );
        // The text is kept as written; cleaning happens when it is shown.
        assert_eq!(problems[4], "row \u{1b}[2Jboom");
    }

    #[test]
    fn events_are_read_and_give_their_address() {
        let rows = parse_all(
            "2026-11-21T18:05:09.123+00:00,127.0.0.1,5000,3,alice,login\n\
             2026-11-21T18:05:09.123+00:00,::1,5001,4,,connect\n\
             2026-11-21T18:05:09.123+00:00,::1,port,4,,connect\n",
            parse_event,
        );
        let Parsed::Row(login) = &rows[0] else {
            panic!()
        };
        assert_eq!((login.thread, login.kind.as_str()), (3, "login"));
        assert_eq!(login.address(), "127.0.0.1:5000");
        let Parsed::Row(v6) = &rows[1] else { panic!() };
        assert_eq!(v6.address(), "[::1]:5001");
        assert!(
            matches!(&rows[2], Parsed::Malformed(m) if m.problem == Problem::BadField { column: "port" })
        );
    }
}

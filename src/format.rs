//! The lines the server sends, built once and shared by every recipient.
//!
//! A [`Line`] holds two renderings of the same event: the human text that
//! `nc` and `telnet` users read (`[12:00:01] alice: hi`, `* …`, `! …`), and
//! one JSON object for clients that asked for the machine-readable mode
//! (`/mode json`, see docs/PROTOCOL.md). Each recipient's outbox picks one at
//! write time; the line itself is one shared allocation, never copied per
//! recipient.

use std::fmt::Display;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Local, SecondsFormat, TimeZone};
use serde::Serialize;
use serde_json::json;

use crate::rows::Message;

/// A room as `/list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name.
    pub name: Arc<str>,
    /// How many are in it.
    pub members: usize,
}

/// A user as `/who` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's name.
    pub name: Arc<str>,
    /// The room they are in; `None` is the lobby.
    pub room: Option<Arc<str>>,
}

/// Bytes a transport's framing may add to each JSON line at most (a
/// WebSocket frame header: 10 bytes, less the `\n` it replaces).
pub const FRAME_OVERHEAD: usize = 10;

/// One event as sent to clients, in both renderings. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line(Arc<Rendered>);

#[derive(Debug)]
struct Rendered {
    /// The human text (zero or more lines, each ending in `\n`), then the
    /// JSON rendering (one object and `\n`, or empty when JSON clients get
    /// nothing): one allocation for both.
    both: String,
    /// Where the JSON rendering starts in `both`.
    split: usize,
    /// The bytes of a transport that frames events its own way (WebSocket),
    /// made once, the first time one of its clients needs them, and shared
    /// by every recipient like the two renderings above.
    framed: OnceLock<Box<[u8]>>,
    /// What [`Line::weight`] returns, worked out once when the line is made.
    weight: usize,
}

impl PartialEq for Rendered {
    fn eq(&self, other: &Self) -> bool {
        self.split == other.split && self.both == other.both
    }
}

impl Eq for Rendered {}

impl Line {
    /// A line from its two renderings (each empty or ending in `\n`).
    pub fn new(text: impl AsRef<str>, json: impl AsRef<str>) -> Line {
        let (text, json) = (text.as_ref(), json.as_ref());
        let mut both = String::with_capacity(text.len() + json.len());
        both.push_str(text);
        both.push_str(json);
        let json_lines = json.bytes().filter(|&b| b == b'\n').count();
        Line::of_both(both, text.len(), json_lines)
    }

    /// A line from both renderings in one string, the JSON one from `split`
    /// on, holding `json_lines` lines.
    fn of_both(both: String, split: usize, json_lines: usize) -> Line {
        // A frame replaces each JSON line's `\n` with its header, so the
        // framed rendering, made later, never weighs more than this.
        let weight = split.max(both.len() - split + FRAME_OVERHEAD * json_lines);
        Line(Arc::new(Rendered {
            both,
            split,
            framed: OnceLock::new(),
            weight,
        }))
    }

    /// A line that is only bytes for a framing transport (a WebSocket pong
    /// or close frame): text and JSON clients get nothing of it.
    pub fn framed_only(bytes: impl Into<Box<[u8]>>) -> Line {
        let bytes = bytes.into();
        Line(Arc::new(Rendered {
            both: String::new(),
            split: 0,
            weight: bytes.len(),
            framed: OnceLock::from(bytes),
        }))
    }

    /// The framed rendering, made from the JSON rendering by `frame` the
    /// first time it is asked for, then kept: one encoding per event,
    /// whatever the number of recipients.
    pub fn framed(&self, frame: impl FnOnce(&str) -> Box<[u8]>) -> &[u8] {
        self.0.framed.get_or_init(|| frame(self.json()))
    }

    /// A line from human text (without `\n`) and a JSON value.
    fn of(text: impl Display, json: serde_json::Value) -> Line {
        use std::fmt::Write as _;
        let mut both = String::new();
        let _ = writeln!(both, "{text}");
        let split = both.len();
        // Compact: no line breaks inside.
        let _ = writeln!(both, "{json}");
        Line::of_both(both, split, 1)
    }

    /// The human rendering.
    pub fn text(&self) -> &str {
        &self.0.both[..self.0.split]
    }

    /// The JSON rendering.
    pub fn json(&self) -> &str {
        &self.0.both[self.0.split..]
    }

    /// The rendering for a client in JSON mode or not.
    pub fn for_mode(&self, json: bool) -> &str {
        if json { self.json() } else { self.text() }
    }

    /// The bytes this line may take in a queue, whichever rendering is sent
    /// (a frame adds a few bytes of header to each JSON line). Fixed when
    /// the line is made, so a queue adds and takes away the same amount.
    pub fn weight(&self) -> usize {
        self.0.weight
    }
}

/// The clock shown in chat lines: the server's local time of day.
pub fn clock<Tz: TimeZone>(time: &DateTime<Tz>) -> impl Display + use<Tz>
where
    Tz::Offset: Display,
{
    time.with_timezone(&Local).format("%H:%M:%S")
}

/// The timestamp kept in the CSV files: RFC 3339 with milliseconds and offset.
pub fn file_time(time: &DateTime<Local>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// A clock as chat lines show it (`12:00:01`), made once and used for every
/// line of the same second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock(String);

impl Clock {
    /// The [`clock`] of `time`.
    pub fn of<Tz: TimeZone>(time: &DateTime<Tz>) -> Clock
    where
        Tz::Offset: Display,
    {
        Clock(clock(time).to_string())
    }

    /// As shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The clocks of stored timestamps (RFC 3339, as `messages.csv` and the
/// cluster's log have them): the last one is kept and used again for every
/// timestamp of the same second and offset, so that a timestamp is read
/// and its clock formatted once a second, not once a message.
#[derive(Debug, Default)]
pub struct Clocks {
    /// The kept timestamp up to its seconds, and what follows its fraction.
    second: String,
    zone: String,
    /// The kept clock, if `second` and `zone` name it.
    clock: Option<Clock>,
}

impl Clocks {
    /// The clock of `stamp`; `None` if it is no RFC 3339 timestamp.
    pub fn of_stamp(&mut self, stamp: &str) -> Option<&Clock> {
        let key = second_of(stamp);
        let kept = self.clock.is_some()
            && key.is_some_and(|(second, zone)| self.second == second && self.zone == zone);
        if !kept {
            let time = DateTime::parse_from_rfc3339(stamp).ok()?;
            self.second.clear();
            self.zone.clear();
            let clock = Clock::of(&time);
            match key {
                Some((second, zone)) => {
                    self.second.push_str(second);
                    self.zone.push_str(zone);
                    self.clock = Some(clock);
                }
                None => {
                    // Not one to keep: this one's clock, forgotten next time.
                    self.clock = None;
                    return Some(self.clock.insert(clock));
                }
            }
        }
        self.clock.as_ref()
    }
}

/// A timestamp's part up to its seconds and its part after the fraction of a
/// second (`2026-11-21T12:00:01` and `+00:00` of
/// `2026-11-21T12:00:01.500+00:00`): two timestamps that agree on both are
/// in the same second and have the same clock. `None` for a timestamp of
/// another shape (no fraction, or one of more than 9 digits).
fn second_of(stamp: &str) -> Option<(&str, &str)> {
    let bytes = stamp.as_bytes();
    if bytes.get(19) != Some(&b'.') {
        return None;
    }
    let digits = bytes[20..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if !(1..=9).contains(&digits) {
        return None;
    }
    Some((&stamp[..19], &stamp[20 + digits..]))
}

/// A stored message's JSON event (`type` `message` with its room, or
/// `whisper` with its recipient), the same live, in a history page and in
/// search results.
#[derive(Serialize)]
struct MessageJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    text: &'a str,
}

/// Bytes a message's two renderings take, about (escapes may add some).
fn message_size(message: &Message<'_>) -> usize {
    2 * (message.from.len() + message.text.len() + message.to.len())
        + message.time.len()
        + message.room.len()
        + 128
}

/// Appends the JSON event of a stored room message (or, `whisper`, of a
/// whisper) and its `\n`.
fn write_message_json(out: &mut Vec<u8>, message: &Message<'_>, whisper: bool) {
    let json = MessageJson {
        kind: if whisper { "whisper" } else { "message" },
        id: message.id,
        time: message.time,
        room: (!whisper).then_some(message.room),
        from: message.from,
        to: whisper.then_some(message.to),
        text: message.text,
    };
    let start = out.len();
    if serde_json::to_writer(&mut *out, &json).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
}

/// Text made of strings and serde_json's output (both UTF-8).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A message line: `[CLOCK] HOW FROM: TEXT` and its JSON event, in one
/// string made once.
fn message_line(clock: &Clock, how: &[&str], message: &Message<'_>, whisper: bool) -> Line {
    let mut both = Vec::with_capacity(message_size(message));
    both.push(b'[');
    both.extend_from_slice(clock.as_str().as_bytes());
    both.extend_from_slice(b"] ");
    for part in how {
        both.extend_from_slice(part.as_bytes());
    }
    both.extend_from_slice(message.from.as_bytes());
    both.extend_from_slice(b": ");
    both.extend_from_slice(message.text.as_bytes());
    both.push(b'\n');
    let split = both.len();
    write_message_json(&mut both, message, whisper);
    Line::of_both(into_text(both), split, 1)
}

/// A room message as everyone in the room sees it: `[12:00:01] alice: hi`.
pub fn chat<Tz: TimeZone>(time: &DateTime<Tz>, message: &Message<'_>) -> Line
where
    Tz::Offset: Display,
{
    chat_at(&Clock::of(time), message)
}

/// [`chat`] with its clock made already.
pub fn chat_at(clock: &Clock, message: &Message<'_>) -> Line {
    message_line(clock, &[], message, false)
}

/// A room message's JSON event, the same live, in a history page and in search
/// results.
fn message_json(message: &Message<'_>) -> String {
    let mut out = Vec::with_capacity(message_size(message));
    write_message_json(&mut out, message, false);
    into_text(out)
}

fn whisper_json(message: &Message<'_>) -> String {
    let mut out = Vec::with_capacity(message_size(message));
    write_message_json(&mut out, message, true);
    into_text(out)
}

/// A whisper as its recipient sees it: `[12:00:01] (whisper) alice: psst`.
pub fn whisper_received<Tz: TimeZone>(time: &DateTime<Tz>, message: &Message<'_>) -> Line
where
    Tz::Offset: Display,
{
    whisper_received_at(&Clock::of(time), message)
}

/// [`whisper_received`] with its clock made already.
pub fn whisper_received_at(clock: &Clock, message: &Message<'_>) -> Line {
    message_line(clock, &["(whisper) "], message, true)
}

/// A whisper as its sender sees it: `[12:00:01] (whisper to bob) alice: psst`.
pub fn whisper_sent<Tz: TimeZone>(time: &DateTime<Tz>, message: &Message<'_>) -> Line
where
    Tz::Offset: Display,
{
    whisper_sent_at(&Clock::of(time), message)
}

/// [`whisper_sent`] with its clock made already.
pub fn whisper_sent_at(clock: &Clock, message: &Message<'_>) -> Line {
    message_line(clock, &["(whisper to ", message.to, ") "], message, true)
}

/// A line about state: `* alice joined #general`.
pub fn notice(text: impl Display) -> Line {
    let text = text.to_string();
    Line::of(
        format_args!("* {text}"),
        json!({"type": "notice", "text": text}),
    )
}

/// An error line: `! unknown command /x`.
pub fn error(text: impl Display) -> Line {
    let text = text.to_string();
    Line::of(
        format_args!("! {text}"),
        json!({"type": "error", "text": text}),
    )
}

/// A notice with its own JSON event type (`bye`, `shutdown`).
pub fn notice_as(kind: &str, text: impl Display) -> Line {
    let text = text.to_string();
    Line::of(
        format_args!("* {text}"),
        json!({"type": kind, "text": text}),
    )
}

/// Flood control has started to slow this client's lines down (said once
/// per episode, never per line).
pub fn slowed(rate: f64) -> Line {
    let lines = if rate == 1.0 { "line" } else { "lines" };
    notice_as(
        "slowed",
        format_args!(
            "you are sending fast: your lines are now handled at most {rate} {lines} a second, in order; none is lost"
        ),
    )
}

/// The prompt for a name.
pub fn name_prompt() -> Line {
    Line::of("Name:", json!({"type": "prompt", "field": "name"}))
}

/// The prompt for a password, on a private server.
pub fn password_prompt() -> Line {
    Line::of("Password:", json!({"type": "prompt", "field": "password"}))
}

/// The greeting of a new connection; a private server asks for an account.
pub fn hello(online: usize, private: bool) -> Line {
    let how = if private {
        "this server is private: log in with your account name, then your password"
    } else {
        "choose a name: 1-32 characters, no spaces, or press Enter for a guest name"
    };
    let text = format!("welcome to chatroom ({online} connected); {how}");
    Line::of(
        format_args!("* {text}"),
        json!({"type": "hello", "text": text, "online": online, "private": private}),
    )
}

/// A name accepted.
pub fn welcome(name: &str, role: &str) -> Line {
    Line::of(
        format_args!("* hello {name}! type to chat, /help lists the commands"),
        json!({"type": "welcome", "name": name, "role": role}),
    )
}

/// A token to log in with later (`/token`); the text says how to use it.
pub fn token(name: &str, token: &str) -> Line {
    Line::of(
        format_args!(
            "* your token: {token} (log in later with /resume {token}; /logout forgets it)"
        ),
        json!({"type": "token", "name": name, "token": token}),
    )
}

/// Unread counts: rooms with how many messages came since the user last
/// read there, and how many of those mention them. `asked`: the reply to
/// `/unread` or `/read`, shown to text clients too; otherwise a live update
/// for JSON clients only.
pub fn unread(rooms: &[(Arc<str>, usize, usize)], asked: bool) -> Line {
    let list: Vec<_> = rooms
        .iter()
        .map(|(room, unread, mentions)| json!({"room": &**room, "unread": unread, "mentions": mentions}))
        .collect();
    let json = format!("{}\n", json!({"type": "unread", "rooms": list}));
    if !asked {
        return Line::new("", json);
    }
    let mut text = String::new();
    if rooms.is_empty() {
        text.push_str("* no unread counts yet: /read ROOM ID marks a room read\n");
    }
    for (room, unread, mentions) in rooms {
        text.push_str(&format!(
            "* #{room}: {unread} unread, {mentions} mentioning you\n"
        ));
    }
    Line::new(text, json)
}

/// The switch of protocol mode, confirmed.
pub fn mode(json_mode: bool) -> Line {
    let mode = if json_mode { "json" } else { "text" };
    Line::of(
        format_args!("* mode {mode}"),
        json!({"type": "mode", "mode": mode}),
    )
}

/// Where the user is now, with who is there: `* you joined #dev (2 here)`.
/// `verb` is `joined` or `created`; `None` for the room is the lobby. JSON
/// clients also get the member list, when there is one (`members`: rooms
/// past the announce limit send none).
pub fn you_are_in(
    room: Option<&str>,
    verb: &str,
    count: usize,
    members: Option<&[Arc<str>]>,
) -> Line {
    let (text, json) = match room {
        Some(room) => {
            let mut json = format!("{}\n", json!({"type": "room", "room": room}));
            if let Some(members) = members {
                let names: Vec<&str> = members.iter().map(|m| &**m).collect();
                json.push_str(&format!(
                    "{}\n",
                    json!({"type": "members", "room": room, "members": names})
                ));
            }
            (format!("* you {verb} #{room} ({count} here)\n"), json)
        }
        None => (
            "* you are in the lobby: /list shows the rooms, /join ROOM enters one\n".to_string(),
            format!("{}\n", json!({"type": "room", "room": null})),
        ),
    };
    Line::new(text, json)
}

/// The user left a room for the lobby.
pub fn you_left(room: &str) -> Line {
    Line::of(
        format_args!(
            "* you left #{room} and are in the lobby: /list shows the rooms, /join ROOM enters one"
        ),
        json!({"type": "room", "room": null}),
    )
}

/// The start of a history replay.
pub fn history_start(room: &str, count: usize) -> Line {
    Line::of(
        format_args!("* recent messages in #{room}:"),
        json!({"type": "history", "room": room, "count": count}),
    )
}

/// The end of a history replay.
pub fn history_end(room: &str) -> Line {
    Line::of(
        "* end of recent messages",
        json!({"type": "history_end", "room": room}),
    )
}

/// Lines joined into one, so that they are queued together and nothing
/// else comes between them (a `/history` page, `/search` results).
pub fn joined(lines: &[Line]) -> Line {
    let mut text = String::new();
    let mut json = String::new();
    for line in lines {
        text.push_str(line.text());
        json.push_str(line.json());
    }
    Line::new(text, json)
}

/// The date and time of a stored timestamp, in local time, for lines about
/// older messages: `2026-11-21 09:14:02`.
fn date_time(stamp: &str) -> String {
    DateTime::parse_from_rfc3339(stamp).map_or_else(
        |_| stamp.to_string(),
        |t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// A stored room message in a `/history` page:
/// `[2026-11-21 09:14:02, id 17] bob: hi` (JSON: a `message` event).
pub fn paged(message: &Message<'_>) -> Line {
    Line::new(
        format!(
            "[{}, id {}] {}: {}\n",
            date_time(message.time),
            message.id,
            message.from,
            message.text
        ),
        message_json(message),
    )
}

/// A message found by `/search`:
/// `[2026-11-21 09:14:02 #general, id 17] bob: lunch?`, or for a whisper
/// `[2026-11-21 09:15:00 (whisper to bob), id 18] alice: psst` (JSON: a
/// `message` or `whisper` event as live ones).
pub fn found(message: &Message<'_>) -> Line {
    if message.room.is_empty() {
        Line::new(
            format!(
                "[{} (whisper to {}), id {}] {}: {}\n",
                date_time(message.time),
                message.to,
                message.id,
                message.from,
                message.text
            ),
            whisper_json(message),
        )
    } else {
        Line::new(
            format!(
                "[{} #{}, id {}] {}: {}\n",
                date_time(message.time),
                message.room,
                message.id,
                message.from,
                message.text
            ),
            message_json(message),
        )
    }
}

/// The start of a `/history` page of `count` messages before id `before`.
pub fn page_start(room: &str, count: usize, before: u64) -> Line {
    Line::of(
        format_args!("* older messages in #{room} ({count}):"),
        json!({"type": "history", "room": room, "count": count, "before": before}),
    )
}

/// The end of a `/history` page; `more` if there are older messages still.
pub fn page_end(room: &str, more: bool) -> Line {
    let text = if more {
        "* end of older messages; /history shows more".to_string()
    } else {
        format!("* that is the start of #{room}: there are no older messages")
    };
    Line::new(
        format!("{text}\n"),
        format!(
            "{}\n",
            json!({"type": "history_end", "room": room, "more": more})
        ),
    )
}

/// A `/history` page with nothing in it: the start of the room's history.
pub fn page_empty(room: &str, before: u64) -> Line {
    Line::new(
        format!("* there are no older messages in #{room}: this is the start of its history\n"),
        format!(
            "{}\n{}\n",
            json!({"type": "history", "room": room, "count": 0, "before": before}),
            json!({"type": "history_end", "room": room, "more": false})
        ),
    )
}

/// The start of `/search` results: `count` found for `query` (in `room`);
/// `building` while the index is being built, how far it has got.
pub fn search_start(query: &str, room: Option<&str>, count: usize, building: Option<u8>) -> Line {
    let place = room.map(|r| format!(" in #{r}")).unwrap_or_default();
    let mut text = String::new();
    if let Some(percent) = building {
        text.push_str(&format!(
            "* the message index is still being built ({percent}% done): older or newer messages may be missing\n"
        ));
    }
    if count == 0 {
        text.push_str(&format!("* nothing found for \"{query}\"{place}\n"));
    } else {
        text.push_str(&format!(
            "* found {count} for \"{query}\"{place}, newest first:\n"
        ));
    }
    Line::new(
        text,
        format!(
            "{}\n",
            json!({"type": "search", "query": query, "room": room, "count": count, "building": building})
        ),
    )
}

/// The end of `/search` results.
pub fn search_end(count: usize) -> Line {
    Line::new(
        if count == 0 {
            String::new()
        } else {
            "* end of search results\n".to_string()
        },
        format!("{}\n", json!({"type": "search_end", "count": count})),
    )
}

/// Somebody came into, moved out of, or left the chat from a room.
/// `kind` is `join`, `leave` or `quit`.
pub fn moved(kind: &str, name: &str, room: &str) -> Line {
    let text = match kind {
        "join" => format!("{name} joined #{room}"),
        "leave" => format!("{name} left #{room}"),
        _ => format!("{name} left the chat"),
    };
    Line::of(
        format_args!("* {text}"),
        json!({"type": kind, "room": room, "name": name}),
    )
}

/// Which part of a long list a reply holds: lists are sent a page at a
/// time, so that a reply fits in a client's queue however big the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// This page, from 1.
    pub number: usize,
    /// How many pages there are (at least 1).
    pub pages: usize,
    /// How many items in all.
    pub total: usize,
}

impl Page {
    /// Page `number` of `total` items, `size` a page.
    pub fn of(number: usize, total: usize, size: usize) -> Page {
        Page {
            number,
            pages: total.div_ceil(size.max(1)).max(1),
            total,
        }
    }

    /// The first item of this page, counted from 0.
    pub fn start(&self, size: usize) -> usize {
        (self.number - 1).saturating_mul(size)
    }

    /// The heading's page part (empty when everything fits on one page) and
    /// the last line saying how to get the next page.
    fn text(&self, command: &str) -> (String, String) {
        if self.pages <= 1 {
            return (String::new(), String::new());
        }
        let more = if self.number < self.pages {
            format!(
                "* page {} of {}: {command} {} shows the next\n",
                self.number,
                self.pages,
                self.number + 1
            )
        } else {
            format!(
                "* page {} of {}, the last: {command} 1 shows the first\n",
                self.number, self.pages
            )
        };
        (format!(", page {} of {}", self.number, self.pages), more)
    }
}

/// The answer to `/list`: one page of the rooms.
pub fn rooms(rooms: &[RoomInfo], page: Page) -> Line {
    let mut text = String::new();
    if page.total == 0 {
        text.push_str("* there are no rooms yet; /create ROOM makes one\n");
    } else {
        let (heading, more) = page.text("/list");
        text.push_str(&format!("* rooms ({}){heading}:\n", page.total));
        for room in rooms {
            text.push_str(&format!("*   #{} ({} online)\n", room.name, room.members));
        }
        text.push_str(&more);
    }
    let list: Vec<_> = rooms
        .iter()
        .map(|r| json!({"name": &*r.name, "members": r.members}))
        .collect();
    Line::new(
        text,
        format!(
            "{}\n",
            json!({"type": "rooms", "rooms": list, "total": page.total, "page": page.number, "pages": page.pages})
        ),
    )
}

/// The answer to `/who`: one page of the people online.
pub fn users(users: &[UserInfo], page: Page) -> Line {
    let (heading, more) = page.text("/who");
    let mut text = format!("* online ({}){heading}:\n", page.total);
    for user in users {
        match &user.room {
            Some(room) => text.push_str(&format!("*   {} in #{room}\n", user.name)),
            None => text.push_str(&format!("*   {} in the lobby\n", user.name)),
        }
    }
    text.push_str(&more);
    let list: Vec<_> = users
        .iter()
        .map(|u| json!({"name": &*u.name, "room": u.room.as_deref()}))
        .collect();
    Line::new(
        text,
        format!(
            "{}\n",
            json!({"type": "users", "users": list, "total": page.total, "page": page.number, "pages": page.pages})
        ),
    )
}

/// A room was made, for clients in JSON mode (kept current without asking
/// `/list` again); people reading text are not told.
pub fn room_created(room: &str, by: &str) -> Line {
    Line::new(
        "",
        format!(
            "{}\n",
            json!({"type": "room_created", "room": room, "by": by})
        ),
    )
}

/// The answer to `/help`.
pub fn help(commands: &[(&str, &str)]) -> Line {
    let mut text = String::from("* commands:\n");
    for (usage, what) in commands {
        text.push_str(&format!("*   {usage:<16} {what}\n"));
    }
    let list: Vec<_> = commands
        .iter()
        .map(|(usage, what)| json!({"usage": usage, "text": what}))
        .collect();
    Line::new(
        text,
        format!("{}\n", json!({"type": "help", "commands": list})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn noon() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:01.500+00:00").unwrap()
    }

    fn message<'a>(text: &'a str) -> Message<'a> {
        Message {
            id: 7,
            time: "2026-11-21T12:00:01.500+00:00",
            room: "general",
            from: "alice",
            to: "",
            text,
        }
    }

    fn parse(line: &str) -> serde_json::Value {
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_chat_line_holds_name_colon_text_and_ends_in_newline() {
        let line = chat(&noon(), &message("hi, all"));
        assert!(line.text().starts_with('['));
        assert!(line.text().ends_with("] alice: hi, all\n"));
        assert_eq!(line.text().matches('\n').count(), 1);
    }

    #[test]
    fn a_chat_line_in_json_has_id_time_room_sender_and_text() {
        let line = chat(&noon(), &message("quote \" and \\ and ✓"));
        let value = parse(line.json());
        assert_eq!(value["type"], "message");
        assert_eq!(value["id"], 7);
        assert_eq!(value["room"], "general");
        assert_eq!(value["from"], "alice");
        assert_eq!(value["text"], "quote \" and \\ and ✓");
        assert_eq!(value["time"], "2026-11-21T12:00:01.500+00:00");
    }

    #[test]
    fn whispers_say_whisper_and_name_both_sides() {
        let mut m = message("psst");
        m.room = "";
        m.to = "bob";
        let got = whisper_received(&noon(), &m);
        assert!(got.text().contains("whisper") && got.text().contains("alice: psst"));
        let sent = whisper_sent(&noon(), &m);
        assert!(sent.text().contains("whisper to bob") && sent.text().contains("alice: psst"));
        let value = parse(got.json());
        assert_eq!(
            (value["type"].as_str(), value["to"].as_str()),
            (Some("whisper"), Some("bob"))
        );
    }

    #[test]
    fn notices_and_errors_are_marked() {
        assert_eq!(
            notice("alice joined #general").text(),
            "* alice joined #general\n"
        );
        assert_eq!(error("no such room").text(), "! no such room\n");
        assert_eq!(parse(error("no such room").json())["type"], "error");
    }

    #[test]
    fn entering_a_room_tells_json_clients_the_room_and_its_members() {
        let members: Vec<Arc<str>> = vec!["alice".into(), "bob".into()];
        let line = you_are_in(Some("dev"), "joined", 2, Some(&members));
        assert_eq!(line.text(), "* you joined #dev (2 here)\n");
        let mut events = line
            .json()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
        let room = events.next().unwrap();
        let who = events.next().unwrap();
        assert_eq!(
            (room["type"].as_str(), room["room"].as_str()),
            (Some("room"), Some("dev"))
        );
        assert_eq!(who["members"], json!(["alice", "bob"]));
        let lobby = you_are_in(None, "left", 0, None);
        assert_eq!(parse(lobby.json())["room"], serde_json::Value::Null);
    }

    #[test]
    fn lists_are_one_json_event_and_several_text_lines() {
        let rooms_line = rooms(
            &[
                RoomInfo {
                    name: "dev".into(),
                    members: 2,
                },
                RoomInfo {
                    name: "general".into(),
                    members: 0,
                },
            ],
            Page::of(1, 2, 100),
        );
        assert_eq!(rooms_line.text().lines().count(), 3);
        assert_eq!(parse(rooms_line.json())["rooms"][0]["members"], 2);
        let users_line = users(
            &[UserInfo {
                name: "bob".into(),
                room: None,
            }],
            Page::of(1, 1, 100),
        );
        assert!(users_line.text().contains("bob in the lobby"));
        assert_eq!(
            parse(users_line.json())["users"][0]["room"],
            serde_json::Value::Null
        );
    }

    #[derive(serde::Serialize)]
    struct MessageJson<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: u64,
        time: &'a str,
        room: &'a str,
        from: &'a str,
        text: &'a str,
    }

    #[derive(serde::Serialize)]
    struct WhisperJson<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: u64,
        time: &'a str,
        from: &'a str,
        to: &'a str,
        text: &'a str,
    }

    /// Texts with every ASCII byte, quotes, backslashes and non-ASCII.
    fn awkward_texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "",
            "plain",
            "quote \" and \\ and ✓",
            "\"",
            "\\\\\"\"",
            "tab\there\r\nend\u{0}\u{7f}\u{1f}\u{8}\u{c}",
            "ünïcødé — 🎉 \u{2028}\u{2029}",
            "trailing \\",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        texts.push((0u8..0x80).map(char::from).collect());
        texts.push((0u8..0x80).rev().map(char::from).collect());
        texts
    }

    #[test]
    fn message_json_is_what_serde_json_makes_of_the_message() {
        for text in awkward_texts() {
            for id in [0, 7, 10, 1234567890, u64::MAX] {
                let m = Message {
                    id,
                    time: "2026-11-21T12:00:01.500+00:00",
                    room: "gen\"eral",
                    from: &text,
                    to: "b\\ob",
                    text: &text,
                };
                let want = serde_json::to_string(&MessageJson {
                    kind: "message",
                    id,
                    time: m.time,
                    room: m.room,
                    from: m.from,
                    text: m.text,
                })
                .unwrap()
                    + "\n";
                assert_eq!(message_json(&m), want);
                assert_eq!(chat(&noon(), &m).json(), want);
                let want = serde_json::to_string(&WhisperJson {
                    kind: "whisper",
                    id,
                    time: m.time,
                    from: m.from,
                    to: m.to,
                    text: m.text,
                })
                .unwrap()
                    + "\n";
                assert_eq!(whisper_json(&m), want);
                assert_eq!(whisper_received(&noon(), &m).json(), want);
                assert_eq!(whisper_sent(&noon(), &m).json(), want);
            }
        }
    }

    #[test]
    fn message_lines_read_clock_sender_and_text() {
        for text in awkward_texts() {
            let mut m = message(&text);
            m.to = "bob";
            let clock = clock(&noon()).to_string();
            assert_eq!(
                chat(&noon(), &m).text(),
                format!("[{clock}] alice: {text}\n")
            );
            assert_eq!(
                whisper_received(&noon(), &m).text(),
                format!("[{clock}] (whisper) alice: {text}\n")
            );
            assert_eq!(
                whisper_sent(&noon(), &m).text(),
                format!("[{clock}] (whisper to bob) alice: {text}\n")
            );
            let line = chat(&noon(), &m);
            assert_eq!(
                line.weight(),
                line.text().len().max(line.json().len() + FRAME_OVERHEAD)
            );
            assert_eq!(line, Line::new(line.text(), line.json()));
        }
    }

    #[test]
    fn kept_clocks_are_the_clocks_of_their_timestamps() {
        let stamps = [
            "2026-11-21T12:00:01.500+00:00",
            "2026-11-21T12:00:01.999+00:00",
            "2026-11-21T12:00:01.000+00:00",
            "2026-11-21T12:00:01.5+00:00",
            "2026-11-21T12:00:01.500+05:30",
            "2026-11-21T12:00:01.500-08:00",
            "2026-11-21T12:00:02.001+00:00",
            "2026-11-21T12:00:01+00:00",
            "2026-11-21T12:00:01.+00:00",
            "2026-11-21T12:00:01.500Z",
            "2026-11-21T23:59:60.500+00:00",
            "2026-11-21T12:00:01.1234567891+00:00",
            "2026-11-21 12:00:01.500+00:00",
            "not a time",
            "2026-11-21T12:00:01.500+00:00",
        ];
        let mut clocks = Clocks::default();
        for _ in 0..2 {
            for stamp in stamps {
                let want = DateTime::parse_from_rfc3339(stamp)
                    .ok()
                    .map(|t| Clock::of(&t));
                assert_eq!(clocks.of_stamp(stamp).cloned(), want, "{stamp}");
            }
        }
    }

    #[test]
    fn lines_made_of_two_renderings_keep_them_apart() {
        let line = Line::new("two\nlines\n", "{}\n{}\n");
        assert_eq!((line.text(), line.json()), ("two\nlines\n", "{}\n{}\n"));
        assert_eq!(line.weight(), 6 + 2 * FRAME_OVERHEAD);
        let empty = Line::new("", "");
        assert_eq!((empty.text(), empty.json(), empty.weight()), ("", "", 0));
        assert_eq!(notice("x").text(), "* x\n");
        assert_eq!(notice("x").json(), "{\"type\":\"notice\",\"text\":\"x\"}\n");
    }

    #[test]
    fn file_times_are_rfc3339_with_millis_and_offset() {
        let t = Local::now();
        let s = file_time(&t);
        let back = DateTime::parse_from_rfc3339(&s).unwrap();
        assert_eq!(back.timestamp_millis(), t.timestamp_millis());
        assert_eq!(s.len(), "2026-11-21T18:05:09.123+00:00".len());
    }

    #[test]
    fn a_long_list_says_its_page_and_how_to_get_the_next() {
        let room = |name: &str| RoomInfo {
            name: name.into(),
            members: 1,
        };
        let first = rooms(&[room("a"), room("b")], Page::of(1, 5, 2));
        assert!(first.text().starts_with("* rooms (5), page 1 of 3:\n"));
        assert!(
            first
                .text()
                .ends_with("* page 1 of 3: /list 2 shows the next\n")
        );
        let value = parse(first.json());
        assert_eq!(
            (value["total"].as_u64(), value["pages"].as_u64()),
            (Some(5), Some(3))
        );
        let last = rooms(&[room("e")], Page::of(3, 5, 2));
        assert!(last.text().contains("the last"));
        assert_eq!(Page::of(3, 5, 2).start(2), 4);
        assert_eq!(Page::of(1, 0, 100).pages, 1);
    }
}

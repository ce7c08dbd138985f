//! The cluster's log as data: places in it ([`Pos`]), the events it holds
//! ([`Event`]) and how they become the fields of a Redis stream entry and
//! back. Pure functions, no Redis.
//!
//! # Places
//! Every entry of `chat:log` has the stream id `MSG-SUB`: `MSG` is the id of
//! the last message (room message or whisper) at or before it, `SUB` counts
//! the other events since that message. A message is `ID-0`; the events
//! after it are `ID-1`, `ID-2`, ... So the stream id of a message is its id
//! in `messages.csv`, a node resumes from the last id of its own file, and
//! a missing entry shows as a place that does not [follow](Pos::follows)
//! the one before.

use std::fmt;

use crate::names;
use crate::rows::Message;

/// A place in the log: the stream id `msg-sub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    /// The id of the last message at or before this place.
    pub msg: u64,
    /// Events after that message (0: the message itself).
    pub sub: u64,
}

impl Pos {
    /// The place of message `id`.
    pub fn message(id: u64) -> Pos {
        Pos { msg: id, sub: 0 }
    }

    /// Reads a stream id `msg-sub`.
    pub fn parse(text: &str) -> Option<Pos> {
        let (msg, sub) = text.split_once('-')?;
        Some(Pos {
            msg: msg.parse().ok()?,
            sub: sub.parse().ok()?,
        })
    }

    /// The place of the event right after this one: the next message id
    /// if it is a message, else the next `sub`.
    pub fn after(self, message: bool) -> Pos {
        if message {
            Pos {
                msg: self.msg.saturating_add(1),
                sub: 0,
            }
        } else {
            Pos {
                msg: self.msg,
                sub: self.sub.saturating_add(1),
            }
        }
    }

    /// True if `self` is the entry right after `before`: the next event
    /// after it, or the next message.
    pub fn follows(self, before: Pos) -> bool {
        // Checked: the ids come from Redis, and a bad one must not panic.
        (self.msg == before.msg && Some(self.sub) == before.sub.checked_add(1))
            || (Some(self.msg) == before.msg.checked_add(1) && self.sub == 0)
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.msg, self.sub)
    }
}

/// An admin's act, as every node applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderation {
    /// `kick`, `ban`, `unban`, `mute` or `unmute`.
    pub action: String,
    /// Whom it is about.
    pub target: String,
    /// Who did it.
    pub by: String,
    /// Why (may be empty).
    pub reason: String,
    /// A mute's length in minutes; none: until unmuted.
    pub minutes: Option<u32>,
    /// The address a ban holds (may be empty).
    pub ip: String,
    /// When (RFC 3339), for `bans.csv`.
    pub time: String,
}

/// What one entry of the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A room message (its id is given by Redis).
    Say {
        /// Its id (0 before Redis gave one).
        id: u64,
        /// When, RFC 3339 as `messages.csv` has it.
        time: String,
        /// The room.
        room: String,
        /// Who said it.
        from: String,
        /// What (sanitised).
        text: String,
    },
    /// A whisper.
    Whisper {
        /// Its id (0 before Redis gave one).
        id: u64,
        /// When.
        time: String,
        /// Who whispers.
        from: String,
        /// To whom.
        to: String,
        /// What.
        text: String,
    },
    /// A user logged in on a node and is now in `room` (none: the lobby).
    Online {
        /// The name.
        name: String,
        /// Where they landed.
        room: Option<String>,
    },
    /// A user moved: into `room` (joined or created it), or to the lobby.
    Move {
        /// The name.
        name: String,
        /// The room now; none: the lobby.
        room: Option<String>,
        /// The room was made by this move (`/create`).
        created: bool,
    },
    /// A user left the chat (quit, or their node died: `gone`).
    Quit {
        /// The name.
        name: String,
        /// Their node died and another node reaped its names.
        gone: bool,
    },
    /// A login on another node took the name over from `node`'s connection.
    Takeover {
        /// The name.
        name: String,
        /// The node that held it.
        node: String,
    },
    /// A room was made.
    Create {
        /// When.
        time: String,
        /// The room.
        room: String,
        /// Who made it.
        creator: String,
    },
    /// An admin's kick, ban, unban, mute or unmute.
    Moderate(Moderation),
}

impl Event {
    /// True for the events that get a message id.
    pub fn is_message(&self) -> bool {
        matches!(self, Event::Say { .. } | Event::Whisper { .. })
    }

    /// A room message's or a whisper's row of `messages.csv`.
    pub fn message(&self) -> Option<Message<'_>> {
        match self {
            Event::Say {
                id,
                time,
                room,
                from,
                text,
            } => Some(Message {
                id: *id,
                time,
                room,
                from,
                to: "",
                text,
            }),
            Event::Whisper {
                id,
                time,
                from,
                to,
                text,
            } => Some(Message {
                id: *id,
                time,
                room: "",
                from,
                to,
                text,
            }),
            _ => None,
        }
    }

    /// The entry's kind and fields, as the append script takes them (the
    /// script adds `k`, `n` and a message's `id`).
    pub fn fields(&self) -> (&'static str, Vec<(&'static str, String)>) {
        let key = |name: &str| names::fold(name);
        match self {
            Event::Say {
                time,
                room,
                from,
                text,
                ..
            } => (
                "say",
                vec![
                    ("t", time.clone()),
                    ("r", room.clone()),
                    ("f", from.clone()),
                    ("key", key(from)),
                    ("x", text.clone()),
                ],
            ),
            Event::Whisper {
                time,
                from,
                to,
                text,
                ..
            } => (
                "whisper",
                vec![
                    ("t", time.clone()),
                    ("f", from.clone()),
                    ("key", key(from)),
                    ("to", to.clone()),
                    ("tokey", key(to)),
                    ("x", text.clone()),
                ],
            ),
            Event::Online { name, room } => (
                "online",
                vec![
                    ("f", name.clone()),
                    ("key", key(name)),
                    ("r", room.clone().unwrap_or_default()),
                ],
            ),
            Event::Move {
                name,
                room,
                created,
            } => (
                "move",
                vec![
                    ("f", name.clone()),
                    ("key", key(name)),
                    ("r", room.clone().unwrap_or_default()),
                    ("c", if *created { "1" } else { "" }.to_string()),
                ],
            ),
            Event::Quit { name, gone } => (
                "quit",
                vec![
                    ("f", name.clone()),
                    ("key", key(name)),
                    ("w", if *gone { "gone" } else { "" }.to_string()),
                ],
            ),
            Event::Takeover { name, node } => (
                "takeover",
                vec![("f", name.clone()), ("key", key(name)), ("o", node.clone())],
            ),
            Event::Create {
                time,
                room,
                creator,
            } => (
                "create",
                vec![
                    ("t", time.clone()),
                    ("r", room.clone()),
                    ("f", creator.clone()),
                ],
            ),
            Event::Moderate(m) => (
                "mod",
                vec![
                    ("a", m.action.clone()),
                    ("f", m.target.clone()),
                    ("key", key(&m.target)),
                    ("b", m.by.clone()),
                    ("y", m.reason.clone()),
                    ("m", m.minutes.map(|m| m.to_string()).unwrap_or_default()),
                    ("ip", m.ip.clone()),
                    ("t", m.time.clone()),
                ],
            ),
        }
    }
}

/// The body of an entry: its fields as a JSON object, without those only
/// the append script needs (folded names, which are made again from the
/// names, and a login's `take`).
pub fn body(fields: &[(&str, String)]) -> String {
    let mut out = Vec::new();
    write_body(&mut out, fields);
    String::from_utf8(out).unwrap_or_else(|_| "{}".to_string())
}

/// Writes [`body`] at the end of `out`.
fn write_body(out: &mut Vec<u8>, fields: &[(&str, String)]) {
    /// The fields as a JSON object, written straight from the pairs.
    struct Object<'a>(&'a [(&'a str, String)]);
    impl serde::Serialize for Object<'_> {
        fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
            out.collect_map(
                self.0
                    .iter()
                    .filter(|(k, _)| !matches!(*k, "key" | "tokey" | "take"))
                    .map(|(k, v)| (k, v)),
            )
        }
    }
    let start = out.len();
    if serde_json::to_writer(&mut *out, &Object(fields)).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
}

/// The body of a packed entry, read straight into its fields (no map, no
/// pairs: the follower reads every entry of the cluster).
#[derive(serde::Deserialize, Default)]
struct Body {
    t: Option<String>,
    r: Option<String>,
    f: Option<String>,
    x: Option<String>,
    to: Option<String>,
    c: Option<String>,
    w: Option<String>,
    o: Option<String>,
    a: Option<String>,
    y: Option<String>,
    m: Option<String>,
    ip: Option<String>,
    b: Option<String>,
}

/// An entry's fields, to be taken one by one by name.
enum Fields {
    /// One stream field per value (the older shape).
    Pairs(Vec<(String, String)>),
    /// One field `e` = `KIND TAB NODE TAB UID TAB BODY`.
    Packed {
        kind: String,
        node: String,
        uid: String,
        body: Box<Body>,
    },
}

impl Fields {
    fn read(id: Pos, pairs: Vec<(String, String)>) -> Result<Fields, Unreadable> {
        match pairs.as_slice() {
            [(name, packed)] if name == "e" => Fields::packed(id, packed),
            _ => Ok(Fields::Pairs(pairs)),
        }
    }

    /// `KIND TAB NODE TAB UID TAB BODY`, of the entry (or batch line) at `id`.
    fn packed(id: Pos, packed: &str) -> Result<Fields, Unreadable> {
        let mut parts = packed.splitn(4, '\t');
        let (Some(kind), Some(node), Some(uid), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Unreadable(format!(
                "entry {id}: a packed entry of fewer than four parts"
            )));
        };
        let body = serde_json::from_str(body)
            .map_err(|e| Unreadable(format!("entry {id}: its body cannot be read ({e})")))?;
        Ok(Fields::Packed {
            kind: kind.to_string(),
            node: node.to_string(),
            uid: uid.to_string(),
            body,
        })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        match self {
            Fields::Pairs(pairs) => pairs
                .iter_mut()
                .find(|(k, _)| k == name)
                .map(|(_, v)| std::mem::take(v)),
            Fields::Packed {
                kind,
                node,
                uid,
                body,
            } => match name {
                "k" => Some(std::mem::take(kind)),
                "n" => Some(std::mem::take(node)),
                "u" => Some(std::mem::take(uid)),
                "t" => body.t.take(),
                "r" => body.r.take(),
                "f" => body.f.take(),
                "x" => body.x.take(),
                "to" => body.to.take(),
                "c" => body.c.take(),
                "w" => body.w.take(),
                "o" => body.o.take(),
                "a" => body.a.take(),
                "y" => body.y.take(),
                "m" => body.m.take(),
                "ip" => body.ip.take(),
                "b" => body.b.take(),
                _ => None,
            },
        }
    }
}

/// One entry as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place.
    pub pos: Pos,
    /// The node that appended it.
    pub node: String,
    /// The appending node's number for the request (finds the sender).
    pub uid: u64,
    /// What it says.
    pub event: Event,
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an event of this kind (as logged) is a message, which takes the
/// next message id.
pub fn is_message_kind(kind: &str) -> bool {
    matches!(kind, "say" | "whisper")
}

/// An event's line in a batch entry: `KIND TAB NODE TAB UID TAB BODY`.
pub fn line(kind: &str, node: &str, uid: u64, fields: &[(&str, String)]) -> String {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(
        kind.len() + node.len() + 24 + fields.iter().map(|(_, v)| v.len() + 8).sum::<usize>(),
    );
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(node.as_bytes());
    out.push(b'\t');
    // Into a Vec: cannot fail.
    let _ = write!(out, "{uid}");
    out.push(b'\t');
    write_body(&mut out, fields);
    // Only strings went in, and JSON is text.
    String::from_utf8(out).unwrap_or_default()
}

/// Reads one stream entry (its id and its field-value pairs, taken): the
/// events it holds, in the log's order. An entry is a batch (one field `b`:
/// a first line with the log's last place before it, then an event a line,
/// `KIND TAB NODE TAB UID TAB BODY`, each at the place after the one
/// before: see [`Pos::after`]; the entry's id is its last event's place),
/// or, as older nodes wrote, one event (one field `e` = `KIND TAB NODE TAB
/// UID TAB BODY`, or a field per value).
pub fn decode(id: &str, pairs: Vec<(String, String)>) -> Result<Vec<Entry>, Unreadable> {
    let batch = match pairs.as_slice() {
        [(name, batch)] if name == "b" => batch,
        _ => {
            let pos = Pos::parse(id).ok_or_else(|| Unreadable(format!("entry id {id:?}")))?;
            return Ok(vec![event_at(pos, Fields::read(pos, pairs)?)?]);
        }
    };
    let mut lines = batch.split('\n');
    let mut pos = lines
        .next()
        .and_then(Pos::parse)
        .ok_or_else(|| Unreadable(format!("entry {id}: a batch without its first place")))?;
    let mut entries = Vec::with_capacity(batch.len() / 128 + 1);
    for line in lines {
        let kind = line.split('\t').next().unwrap_or_default();
        pos = pos.after(is_message_kind(kind));
        entries.push(event_at(pos, Fields::packed(pos, line)?)?);
    }
    if entries.is_empty() || pos.to_string() != id {
        return Err(Unreadable(format!(
            "entry {id}: its events end at {pos}, not at its id"
        )));
    }
    Ok(entries)
}

/// Reads the event at place `pos` from its fields.
fn event_at(pos: Pos, fields: Fields) -> Result<Entry, Unreadable> {
    let id = pos;
    let fields = std::cell::RefCell::new(fields);
    let get = |name: &str| fields.borrow_mut().take(name);
    let need = |name: &str| get(name).ok_or_else(|| Unreadable(format!("entry {id}: no {name}")));
    let room = |text: String| (!text.is_empty()).then_some(text);
    let kind = need("k")?;
    let event = match kind.as_str() {
        "say" => Event::Say {
            id: pos.msg,
            time: need("t")?,
            room: need("r")?,
            from: need("f")?,
            text: need("x")?,
        },
        "whisper" => Event::Whisper {
            id: pos.msg,
            time: need("t")?,
            from: need("f")?,
            to: need("to")?,
            text: need("x")?,
        },
        "online" => Event::Online {
            name: need("f")?,
            room: room(get("r").unwrap_or_default()),
        },
        "move" => Event::Move {
            name: need("f")?,
            room: room(get("r").unwrap_or_default()),
            created: get("c").is_some_and(|c| c == "1"),
        },
        "quit" => Event::Quit {
            name: need("f")?,
            gone: get("w").is_some_and(|w| w == "gone"),
        },
        "takeover" => Event::Takeover {
            name: need("f")?,
            node: need("o")?,
        },
        "create" => Event::Create {
            time: need("t")?,
            room: need("r")?,
            creator: need("f")?,
        },
        "mod" => Event::Moderate(Moderation {
            action: need("a")?,
            target: need("f")?,
            by: get("b").unwrap_or_default(),
            reason: get("y").unwrap_or_default(),
            minutes: get("m").and_then(|m| m.parse().ok()),
            ip: get("ip").unwrap_or_default(),
            time: get("t").unwrap_or_default(),
        }),
        other => return Err(Unreadable(format!("entry {id}: unknown kind {other:?}"))),
    };
    if event.is_message() != (pos.sub == 0) {
        return Err(Unreadable(format!(
            "entry {id}: a {kind} at that place breaks the log's numbering"
        )));
    }
    Ok(Entry {
        pos,
        node: get("n").unwrap_or_default(),
        uid: get("u").and_then(|u| u.parse().ok()).unwrap_or(0),
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry that must hold exactly one event.
    fn one(id: &str, pairs: Vec<(String, String)>) -> Result<Entry, Unreadable> {
        decode(id, pairs).map(|mut entries| {
            assert_eq!(entries.len(), 1);
            entries.remove(0)
        })
    }

    fn pairs(event: &Event, node: &str, uid: u64) -> Vec<(String, String)> {
        let (kind, fields) = event.fields();
        let mut out = vec![
            ("k".to_string(), kind.to_string()),
            ("n".to_string(), node.to_string()),
            ("u".to_string(), uid.to_string()),
        ];
        out.extend(fields.into_iter().map(|(k, v)| (k.to_string(), v)));
        out
    }

    #[test]
    fn places_follow_one_another_without_gaps() {
        let p = Pos::parse("7-0").unwrap();
        assert!(Pos::parse("7-1").unwrap().follows(p));
        assert!(Pos::parse("8-0").unwrap().follows(p));
        assert!(!Pos::parse("9-0").unwrap().follows(p));
        assert!(!Pos::parse("7-2").unwrap().follows(p));
        assert!(
            Pos::parse("8-0")
                .unwrap()
                .follows(Pos::parse("7-5").unwrap())
        );
        assert!(Pos::parse("0-1").unwrap().follows(Pos::default()));
        assert!(Pos::parse("1-0").unwrap().follows(Pos::default()));
        assert_eq!(Pos::parse("x-1"), None);
        assert_eq!(Pos { msg: 3, sub: 2 }.to_string(), "3-2");
    }

    #[test]
    fn the_largest_ids_from_redis_are_followed_by_nothing_and_do_not_panic() {
        let max = u64::MAX;
        let last = Pos::parse(&format!("{max}-{max}")).unwrap();
        assert!(!Pos::parse("0-0").unwrap().follows(last));
        assert!(!last.follows(last));
        let sub_max = Pos::parse(&format!("5-{max}")).unwrap();
        assert!(Pos::parse("6-0").unwrap().follows(sub_max));
    }

    #[test]
    fn every_event_survives_the_round_trip_through_fields() {
        let events = [
            (
                "5-0",
                Event::Say {
                    id: 5,
                    time: "2026-01-01T00:00:00.000+00:00".into(),
                    room: "general".into(),
                    from: "Alice".into(),
                    text: "hi, \"bob\" — ça va?".into(),
                },
            ),
            (
                "6-0",
                Event::Whisper {
                    id: 6,
                    time: "t".into(),
                    from: "a".into(),
                    to: "b".into(),
                    text: "psst".into(),
                },
            ),
            (
                "6-1",
                Event::Online {
                    name: "bob".into(),
                    room: None,
                },
            ),
            (
                "6-2",
                Event::Move {
                    name: "bob".into(),
                    room: Some("x".into()),
                    created: true,
                },
            ),
            (
                "6-3",
                Event::Quit {
                    name: "bob".into(),
                    gone: true,
                },
            ),
            (
                "6-4",
                Event::Takeover {
                    name: "bob".into(),
                    node: "n1".into(),
                },
            ),
            (
                "6-5",
                Event::Create {
                    time: "t".into(),
                    room: "x".into(),
                    creator: "bob".into(),
                },
            ),
            (
                "6-6",
                Event::Moderate(Moderation {
                    action: "mute".into(),
                    target: "eve".into(),
                    by: "root".into(),
                    reason: "spam".into(),
                    minutes: Some(5),
                    ip: String::new(),
                    time: "t".into(),
                }),
            ),
        ];
        for (id, event) in events {
            let entry = one(id, pairs(&event, "n1", 42)).unwrap();
            assert_eq!(entry.event, event);
            assert_eq!(entry.node, "n1");
            assert_eq!(entry.uid, 42);
            assert_eq!(entry.pos.to_string(), id);
        }
    }

    #[test]
    fn a_packed_entry_reads_as_the_fields_it_was_made_from() {
        let say = Event::Say {
            id: 9,
            time: "2026-01-01T00:00:00.000+00:00".into(),
            room: "général".into(),
            from: "Alice".into(),
            text: "tab\there, \"quotes\" and \\ / slashes".into(),
        };
        let (kind, fields) = say.fields();
        let packed = format!("{kind}\tn7\t42\t{}", body(&fields));
        let entry = one("9-0", vec![("e".into(), packed)]).unwrap();
        assert_eq!(entry.event, say);
        assert_eq!((entry.node.as_str(), entry.uid), ("n7", 42));
        // As the Lua side writes a body (cjson escapes slashes).
        let quit = one(
            "9-1",
            vec![("e".into(), r#"quit	n2	0	{"f":"a\/b","w":"gone"}"#.into())],
        )
        .unwrap();
        assert_eq!(
            quit.event,
            Event::Quit {
                name: "a/b".into(),
                gone: true
            }
        );
        for bad in ["say\tn1", "say\tn1\t1\t[1]", "say\tn1\t1\t{\"x\":1}"] {
            assert!(one("9-0", vec![("e".into(), bad.into())]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_off_its_place_or_an_unknown_kind_is_unreadable() {
        let say = Event::Say {
            id: 0,
            time: "t".into(),
            room: "r".into(),
            from: "a".into(),
            text: "x".into(),
        };
        assert!(one("5-1", pairs(&say, "n", 1)).is_err());
        let mut odd = pairs(&say, "n", 1);
        odd[0].1 = "dance".into();
        assert!(one("5-0", odd).is_err());
        assert!(one("5-0", Vec::new()).is_err());
    }

    #[test]
    fn a_batch_reads_as_its_events_in_order_and_a_bad_one_is_unreadable() {
        let say = Event::Say {
            id: 10,
            time: "2026-01-01T00:00:00.000+00:00".into(),
            room: "general".into(),
            from: "Alice".into(),
            text: "tab\there and a\nnewline".into(),
        };
        let (kind, fields) = say.fields();
        let batch = [
            "9-2".to_string(),
            r#"quit	n1	0	{"f":"bob","w":""}"#.to_string(),
            line(kind, "n1", 7, &fields),
            r#"online	n2	8	{"f":"carol","r":"general"}"#.to_string(),
        ]
        .join("\n");
        let entries = decode("10-1", vec![("b".into(), batch.clone())]).unwrap();
        let places: Vec<String> = entries.iter().map(|e| e.pos.to_string()).collect();
        assert_eq!(places, ["9-3", "10-0", "10-1"]);
        assert_eq!(entries[1].event, say);
        assert_eq!((entries[1].node.as_str(), entries[1].uid), ("n1", 7));
        assert_eq!(
            entries[2].event,
            Event::Online {
                name: "carol".into(),
                room: Some("general".into())
            }
        );
        assert_eq!((entries[2].node.as_str(), entries[2].uid), ("n2", 8));
        // The entry's id must be its last event's place, it must start
        // with a place and hold an event, and every line must read.
        assert!(decode("10-2", vec![("b".into(), batch.clone())]).is_err());
        for bad in [
            "",
            "9-2",
            "x\nquit\tn1\t0\t{\"f\":\"a\"}",
            "9-2\nquit\tn1",
            "9-2\nquit\tn1\t0\t[1]",
            "9-2\ndance\tn1\t0\t{\"f\":\"a\"}",
        ] {
            assert!(
                decode("9-3", vec![("b".into(), bad.into())]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn places_after_one_another() {
        let p = Pos { msg: 7, sub: 2 };
        assert_eq!(p.after(true), Pos { msg: 8, sub: 0 });
        assert_eq!(p.after(false), Pos { msg: 7, sub: 3 });
        assert!(p.after(true).follows(p) && p.after(false).follows(p));
    }
}

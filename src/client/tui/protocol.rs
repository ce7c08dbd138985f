//! What the server says, read one line at a time.
//!
//! The full-screen client asks for the server's machine-readable mode
//! (`/mode json`) and then reads one JSON object per line, each tagged with a
//! `"type"`. Lines that were queued before the switch, and every line of a
//! server that does not know the mode, arrive as text; [`parse`] reads those
//! by their prefix (`* `, `! `, `Name:`, …) into the same [`Event`]s where it
//! can, so the rest of the client has one vocabulary.

use serde::Deserialize;

/// The request that switches the server to one JSON object per line.
pub const JSON_MODE_REQUEST: &str = "/mode json";

/// What a login prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The user's name.
    Name,
    /// The account's password (private servers).
    Password,
}

/// One room and how many are in it (reply to `/list`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoomCount {
    /// The room's name, without `#`.
    pub name: String,
    /// How many users are in it.
    pub members: usize,
}

/// One user and where they are (reply to `/who`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserPlace {
    /// The user's name.
    pub name: String,
    /// Their room; `None` is the lobby.
    pub room: Option<String>,
}

/// One command in the reply to `/help`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HelpEntry {
    /// How it is typed, e.g. `/msg NAME TEXT`.
    pub usage: String,
    /// What it does.
    pub text: String,
}

/// Something the server said. Strings are as received: whoever shows them
/// removes control characters first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The switch to JSON mode is done.
    Mode {
        /// The mode now in force.
        mode: String,
    },
    /// The greeting.
    Hello {
        /// The greeting's words.
        text: String,
    },
    /// A login prompt.
    Prompt {
        /// What is asked for.
        field: Field,
    },
    /// Logged in.
    Welcome {
        /// The name as the server accepted it.
        name: String,
        /// `admin` or `member`, when the server says.
        #[serde(default)]
        role: Option<String>,
    },
    /// The user is now in this room (`None`: the lobby).
    Room {
        /// The room.
        room: Option<String>,
    },
    /// Everyone in a room, the user included.
    Members {
        /// The room.
        room: Option<String>,
        /// Their names.
        members: Vec<String>,
    },
    /// The recent messages of a room follow (on joining it), or a page of
    /// older ones (`/history`: with `before`).
    History {
        /// The room.
        room: Option<String>,
        /// How many messages follow.
        #[serde(default)]
        count: usize,
        /// A `/history` page: the messages are older than this id.
        #[serde(default)]
        before: Option<u64>,
    },
    /// The recent messages, or the page, are over.
    HistoryEnd {
        /// The room.
        room: Option<String>,
        /// After a page: whether there are older messages still.
        #[serde(default)]
        more: Option<bool>,
    },
    /// `/search` results follow, newest first.
    Search {
        /// The words searched for.
        query: String,
        /// The room searched, if only one.
        #[serde(default)]
        room: Option<String>,
        /// How many follow.
        #[serde(default)]
        count: usize,
        /// While the server's index is being built: how far, in per cent.
        #[serde(default)]
        building: Option<u8>,
    },
    /// The `/search` results are over.
    SearchEnd {
        /// How many there were.
        #[serde(default)]
        count: usize,
    },
    /// A room message.
    Message {
        /// Its number in `messages.csv`.
        #[serde(default)]
        id: Option<u64>,
        /// When it was written (RFC 3339).
        time: String,
        /// The room it was said in.
        #[serde(default)]
        room: Option<String>,
        /// Who said it.
        from: String,
        /// What was said.
        text: String,
    },
    /// A whisper to the user, or the user's own whisper echoed.
    Whisper {
        /// Its number in `messages.csv`.
        #[serde(default)]
        id: Option<u64>,
        /// When it was written (RFC 3339).
        time: String,
        /// Who whispered.
        from: String,
        /// To whom.
        to: String,
        /// What was whispered.
        text: String,
    },
    /// Someone came into the user's room.
    Join {
        /// The room.
        room: Option<String>,
        /// Who.
        name: String,
    },
    /// Someone went to another room or the lobby.
    Leave {
        /// The room they left.
        room: Option<String>,
        /// Who.
        name: String,
    },
    /// Someone left the chat.
    Quit {
        /// The room they were in.
        room: Option<String>,
        /// Who.
        name: String,
    },
    /// Reply to `/list`: one page of the rooms.
    Rooms {
        /// The rooms of this page with their counts.
        rooms: Vec<RoomCount>,
        /// How many rooms there are in all.
        #[serde(default)]
        total: Option<usize>,
        /// This page, from 1.
        #[serde(default)]
        page: Option<usize>,
        /// How many pages there are.
        #[serde(default)]
        pages: Option<usize>,
    },
    /// A room was made.
    RoomCreated {
        /// Its name.
        room: String,
        /// Who made it.
        #[serde(default)]
        by: Option<String>,
    },
    /// Reply to `/who`: one page of the people online.
    Users {
        /// The people of this page and where they are.
        users: Vec<UserPlace>,
        /// How many are online in all.
        #[serde(default)]
        total: Option<usize>,
    },
    /// Reply to `/help`.
    Help {
        /// The commands.
        commands: Vec<HelpEntry>,
    },
    /// Any other state line.
    Notice {
        /// Its words.
        text: String,
    },
    /// An error; the connection goes on.
    Error {
        /// Its words.
        text: String,
    },
    /// The goodbye after `/quit`; the server closes next.
    Bye {
        /// Its words.
        text: String,
    },
    /// The server is stopping.
    Shutdown {
        /// Its words.
        text: String,
    },
    /// A text line that is none of the above (a chat line from a server
    /// that speaks only text, say): shown as it is.
    #[serde(skip)]
    Text {
        /// The line.
        line: String,
    },
}

/// Reads one line from the server (without its line ending) into events.
///
/// A line starting with `{` is JSON; one that does not parse, or has an
/// unknown type, is shown as text when it carries a `text` (so that a newer
/// server's new events are not lost) and dropped otherwise. Any other line is
/// text, read by its prefix.
pub fn parse(line: &str) -> Vec<Event> {
    if line.starts_with('{') {
        match serde_json::from_str::<Event>(line) {
            Ok(event) => vec![event],
            Err(e) => {
                log::debug!("unknown server event ({e}): {line}");
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|value| {
                        value
                            .get("text")
                            .and_then(|text| text.as_str())
                            .map(|text| Event::Notice {
                                text: text.to_owned(),
                            })
                    })
                    .into_iter()
                    .collect()
            }
        }
    } else {
        parse_text(line)
    }
}

/// Reads a line of the text protocol (docs/PROTOCOL.md) by its prefix.
fn parse_text(line: &str) -> Vec<Event> {
    let trimmed = line.trim();
    if trimmed == "Name:" {
        return vec![Event::Prompt { field: Field::Name }];
    }
    if trimmed == "Password:" {
        return vec![Event::Prompt {
            field: Field::Password,
        }];
    }
    if let Some(text) = line.strip_prefix("! ") {
        return vec![Event::Error {
            text: text.to_owned(),
        }];
    }
    let Some(text) = line.strip_prefix("* ") else {
        return vec![Event::Text {
            line: line.to_owned(),
        }];
    };
    let notice = Event::Notice {
        text: text.to_owned(),
    };
    if let Some(rest) = text.strip_prefix("hello ")
        && let Some((name, _)) = rest.split_once("! ")
    {
        return vec![
            Event::Welcome {
                name: name.to_owned(),
                role: None,
            },
            notice,
        ];
    }
    if text.starts_with("goodbye, ") {
        return vec![Event::Bye {
            text: text.to_owned(),
        }];
    }
    if text.starts_with("the server is shutting down") {
        return vec![Event::Shutdown {
            text: text.to_owned(),
        }];
    }
    let entered = ["you joined #", "you created #"]
        .iter()
        .find_map(|lead| text.strip_prefix(lead))
        .and_then(|rest| rest.split_whitespace().next());
    if let Some(room) = entered {
        return vec![
            Event::Room {
                room: Some(room.to_owned()),
            },
            notice,
        ];
    }
    if text.starts_with("you left #") && text.contains("lobby")
        || text.starts_with("you are in the lobby")
    {
        return vec![Event::Room { room: None }, notice];
    }
    vec![notice]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_of_the_json_mode_is_understood() {
        let cases = [
            r#"{"type":"mode","mode":"json"}"#,
            r#"{"type":"hello","text":"welcome to chatroom","online":3}"#,
            r#"{"type":"prompt","field":"name"}"#,
            r#"{"type":"prompt","field":"password"}"#,
            r#"{"type":"welcome","name":"alice","role":"member"}"#,
            r#"{"type":"room","room":"dev"}"#,
            r#"{"type":"room","room":null}"#,
            r#"{"type":"members","room":"dev","members":["alice","bob"]}"#,
            r#"{"type":"history","room":"dev","count":3}"#,
            r#"{"type":"history_end","room":"dev"}"#,
            r#"{"type":"history","room":"dev","count":2,"before":40}"#,
            r#"{"type":"history_end","room":"dev","more":false}"#,
            r#"{"type":"search","query":"lunch","room":null,"count":1,"building":null}"#,
            r#"{"type":"search_end","count":1}"#,
            r#"{"type":"message","id":7,"time":"2026-11-21T18:05:09.123+00:00","room":"dev","from":"alice","text":"hi"}"#,
            r#"{"type":"whisper","id":8,"time":"2026-11-21T18:05:09.123+00:00","from":"alice","to":"bob","text":"psst"}"#,
            r#"{"type":"join","room":"dev","name":"bob"}"#,
            r#"{"type":"leave","room":"dev","name":"bob"}"#,
            r#"{"type":"quit","room":"dev","name":"bob"}"#,
            r#"{"type":"rooms","rooms":[{"name":"dev","members":2}]}"#,
            r#"{"type":"rooms","rooms":[{"name":"dev","members":2}],"total":301,"page":1,"pages":4}"#,
            r#"{"type":"room_created","room":"dev","by":"alice"}"#,
            r#"{"type":"users","users":[{"name":"alice","room":"dev"},{"name":"bob","room":null}]}"#,
            r#"{"type":"help","commands":[{"usage":"/list","text":"the rooms"}]}"#,
            r#"{"type":"notice","text":"hi"}"#,
            r#"{"type":"error","text":"no"}"#,
            r#"{"type":"bye","text":"goodbye, alice"}"#,
            r#"{"type":"shutdown","text":"the server is shutting down; goodbye"}"#,
        ];
        for line in cases {
            let events = parse(line);
            assert_eq!(events.len(), 1, "{line}");
            assert!(!matches!(events[0], Event::Text { .. }), "{line}");
        }
        assert_eq!(
            parse(r#"{"type":"users","users":[{"name":"bob","room":null}]}"#),
            vec![Event::Users {
                users: vec![UserPlace {
                    name: "bob".into(),
                    room: None
                }],
                total: None
            }]
        );
    }

    #[test]
    fn an_unknown_event_with_words_is_shown_and_one_without_is_dropped() {
        assert_eq!(
            parse(r#"{"type":"motd","text":"be nice"}"#),
            vec![Event::Notice {
                text: "be nice".into()
            }]
        );
        assert!(parse(r#"{"type":"ping"}"#).is_empty());
        assert!(parse("{not json").is_empty());
    }

    #[test]
    fn text_lines_from_before_the_switch_are_read_by_their_prefix() {
        assert_eq!(parse("Name:"), vec![Event::Prompt { field: Field::Name }]);
        assert_eq!(
            parse("Password:"),
            vec![Event::Prompt {
                field: Field::Password
            }]
        );
        assert_eq!(
            parse("! name taken"),
            vec![Event::Error {
                text: "name taken".into()
            }]
        );
        assert_eq!(
            parse("* hello alice! type to chat, /help lists the commands")[0],
            Event::Welcome {
                name: "alice".into(),
                role: None
            }
        );
        assert_eq!(
            parse("* you joined #dev (2 here)")[0],
            Event::Room {
                room: Some("dev".into())
            }
        );
        assert_eq!(
            parse("* you left #dev and are in the lobby: /list shows the rooms")[0],
            Event::Room { room: None }
        );
        assert_eq!(
            parse("[12:00:00] bob: hi"),
            vec![Event::Text {
                line: "[12:00:00] bob: hi".into()
            }]
        );
    }
}

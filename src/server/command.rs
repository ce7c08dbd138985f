//! Commands: what a line from a named user asks for.
//!
//! [`parse`] is pure: it turns a line into a [`Command`] or a [`CommandError`]
//! that the session turns into a `! ` line. Handling lives in the session.

use std::fmt;

/// What one line from a user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Text for the user's room (a `//`-led line loses one `/`).
    Say(&'a str),
    /// `/help`, `/commands`.
    Help,
    /// `/list [PAGE]`: the rooms, a page at a time (the first by default).
    List(usize),
    /// `/create ROOM`.
    Create(&'a str),
    /// `/join ROOM`.
    Join(&'a str),
    /// `/leave`: back to the lobby.
    Leave,
    /// `/who [PAGE]`, `/clients [PAGE]`: who is online, a page at a time.
    Who(usize),
    /// `/msg NAME TEXT`, `/w NAME TEXT`.
    Whisper {
        /// The receiver's name.
        to: &'a str,
        /// What to tell them.
        text: &'a str,
    },
    /// `/quit`.
    Quit,
    /// `/kick NAME [reason]` (admins).
    Kick {
        /// Who.
        name: &'a str,
        /// Why (may be empty).
        reason: &'a str,
    },
    /// `/ban NAME [reason]` (admins).
    Ban {
        /// Who.
        name: &'a str,
        /// Why (may be empty).
        reason: &'a str,
    },
    /// `/unban NAME` (admins).
    Unban(&'a str),
    /// `/mute NAME [minutes]` (admins); no minutes: until unmuted.
    Mute {
        /// Who.
        name: &'a str,
        /// For how long.
        minutes: Option<u32>,
    },
    /// `/unmute NAME` (admins).
    Unmute(&'a str),
    /// `/mode json` or `/mode text`: how the server's lines are written.
    Mode(bool),
    /// `/history [N]`, `/history before ID [N]`: older messages of the room.
    History {
        /// Before this id; `None`: before the oldest this connection was shown.
        before: Option<u64>,
        /// How many.
        count: usize,
    },
    /// `/search WORDS [in ROOM]`.
    Search(&'a str),
    /// `/token`: a token this device may log in with later.
    Token,
    /// `/resume TOKEN`, at the name prompt: log in with a kept token.
    Resume(&'a str),
    /// `/logout`: forget this device's token and leave.
    Logout,
    /// `/read ROOM ID`: the user has read ROOM up to message ID.
    Read {
        /// The room.
        room: &'a str,
        /// The last message id read.
        id: u64,
    },
    /// `/unread`: the unread counts, and live ones from now on (JSON).
    Unread,
}

/// Messages a `/history` page has when no number is given.
pub const HISTORY_PAGE: usize = 50;
/// The most messages a `/history` page may have.
pub const HISTORY_PAGE_MAX: usize = 200;
const HISTORY_USAGE: &str =
    "/history [N] or /history before ID [N], N from 1 (at most 200 are shown)";

/// A line that is not a usable command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No such command.
    Unknown(String),
    /// A known command without what it needs; holds its usage.
    Usage(&'static str),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(name) => {
                write!(f, "unknown command /{name}; /help lists the commands")
            }
            CommandError::Usage(usage) => write!(f, "usage: {usage}"),
        }
    }
}

/// The commands and what they do, as `/help` shows them.
pub const HELP: &[(&str, &str)] = &[
    ("/help", "this list (also /commands)"),
    (
        "/list",
        "the rooms and how many are in each (/list 2: the next page)",
    ),
    ("/create ROOM", "make a room and go into it"),
    ("/join ROOM", "go into a room"),
    ("/leave", "leave your room for the lobby"),
    (
        "/who",
        "who is online and where (also /clients; /who 2: the next page)",
    ),
    ("/msg NAME TEXT", "whisper to one person (also /w)"),
    (
        "/history [N]",
        "N older messages of your room (50); again for more",
    ),
    (
        "/search WORDS",
        "the newest messages with all the words (add: in ROOM)",
    ),
    ("/quit", "leave the chat"),
    (
        "/token",
        "a token to stay logged in on this device (/resume TOKEN)",
    ),
    ("/logout", "forget this device's token and leave"),
    ("/unread", "unread messages and mentions per room"),
    ("/read ROOM ID", "mark ROOM read up to message ID"),
    (
        "/mode json|text",
        "one JSON object per line, for programs (or back)",
    ),
    ("//TEXT", "say something that starts with /"),
];

/// The moderation commands, shown by `/help` to admins.
pub const ADMIN_HELP: &[(&str, &str)] = &[
    ("/kick NAME [WHY]", "disconnect someone"),
    ("/ban NAME [WHY]", "disconnect and keep out for good"),
    ("/unban NAME", "lift a ban"),
    (
        "/mute NAME [MIN]",
        "silence in rooms, for MIN minutes or until unmuted",
    ),
    ("/unmute NAME", "lift a mute"),
];

/// Reads a line from a named user.
pub fn parse(line: &str) -> Result<Command<'_>, CommandError> {
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Command::Say(line));
    };
    if rest.starts_with('/') {
        return Ok(Command::Say(rest));
    }
    let (word, args) = match rest.split_once(char::is_whitespace) {
        Some((word, args)) => (word, args.trim()),
        None => (rest, ""),
    };
    let word_lower = word.to_lowercase();
    let one_arg = |usage: &'static str| -> Result<&str, CommandError> {
        match args.split_whitespace().collect::<Vec<_>>()[..] {
            [arg] => Ok(arg),
            _ => Err(CommandError::Usage(usage)),
        }
    };
    let page = |usage: &'static str| -> Result<usize, CommandError> {
        match args.split_whitespace().collect::<Vec<_>>()[..] {
            [] => Ok(1),
            [page] => match page.parse::<usize>() {
                Ok(page) if page > 0 => Ok(page),
                _ => Err(CommandError::Usage(usage)),
            },
            _ => Err(CommandError::Usage(usage)),
        }
    };
    match word_lower.as_str() {
        "help" | "commands" => Ok(Command::Help),
        "list" => page("/list [PAGE, a number from 1]").map(Command::List),
        "create" => one_arg("/create ROOM").map(Command::Create),
        "join" => one_arg("/join ROOM").map(Command::Join),
        "leave" => Ok(Command::Leave),
        "who" | "clients" => page("/who [PAGE, a number from 1]").map(Command::Who),
        "msg" | "w" => match args.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Ok(Command::Whisper {
                to,
                text: text.trim_start(),
            }),
            _ => Err(CommandError::Usage("/msg NAME TEXT")),
        },
        "quit" => Ok(Command::Quit),
        "token" => Ok(Command::Token),
        "resume" => one_arg("/resume TOKEN").map(Command::Resume),
        "logout" => Ok(Command::Logout),
        "unread" => Ok(Command::Unread),
        "read" => match args.split_whitespace().collect::<Vec<_>>()[..] {
            [room, id] => match id.parse::<u64>() {
                Ok(id) => Ok(Command::Read { room, id }),
                Err(_) => Err(CommandError::Usage("/read ROOM ID")),
            },
            _ => Err(CommandError::Usage("/read ROOM ID")),
        },
        "kick" | "ban" => {
            let usage = if word_lower == "kick" {
                "/kick NAME [reason]"
            } else {
                "/ban NAME [reason]"
            };
            let (name, reason) = match args.split_once(char::is_whitespace) {
                Some((name, reason)) => (name, reason.trim()),
                None => (args, ""),
            };
            if name.is_empty() {
                return Err(CommandError::Usage(usage));
            }
            Ok(if word_lower == "kick" {
                Command::Kick { name, reason }
            } else {
                Command::Ban { name, reason }
            })
        }
        "unban" => one_arg("/unban NAME").map(Command::Unban),
        "mode" => match one_arg("/mode json|text")?.to_lowercase().as_str() {
            "json" => Ok(Command::Mode(true)),
            "text" => Ok(Command::Mode(false)),
            _ => Err(CommandError::Usage("/mode json|text")),
        },
        "unmute" => one_arg("/unmute NAME").map(Command::Unmute),
        "history" => parse_history(args),
        "search" => {
            if args.is_empty() {
                Err(CommandError::Usage("/search WORDS [in ROOM]"))
            } else {
                Ok(Command::Search(args))
            }
        }
        "mute" => match args.split_whitespace().collect::<Vec<_>>()[..] {
            [name] => Ok(Command::Mute {
                name,
                minutes: None,
            }),
            [name, minutes] => match minutes.parse::<u32>() {
                Ok(minutes) if minutes > 0 => Ok(Command::Mute {
                    name,
                    minutes: Some(minutes),
                }),
                _ => Err(CommandError::Usage(
                    "/mute NAME [minutes, a whole number above 0]",
                )),
            },
            _ => Err(CommandError::Usage("/mute NAME [minutes]")),
        },
        _ => Err(CommandError::Unknown(word.to_string())),
    }
}

/// `/history [N]`, `/history before ID [N]`.
fn parse_history(args: &str) -> Result<Command<'_>, CommandError> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let number = |word: &str| word.parse::<u64>().ok();
    let count = |word: Option<&&str>| -> Result<usize, CommandError> {
        match word {
            None => Ok(HISTORY_PAGE),
            // More than the most is the most.
            Some(word) => match number(word) {
                Some(n) if n >= 1 => Ok(usize::try_from(n)
                    .unwrap_or(HISTORY_PAGE_MAX)
                    .min(HISTORY_PAGE_MAX)),
                _ => Err(CommandError::Usage(HISTORY_USAGE)),
            },
        }
    };
    match words.first() {
        Some(word) if word.eq_ignore_ascii_case("before") => {
            let before = words
                .get(1)
                .and_then(|w| number(w))
                .ok_or(CommandError::Usage(HISTORY_USAGE))?;
            if words.len() > 3 {
                return Err(CommandError::Usage(HISTORY_USAGE));
            }
            Ok(Command::History {
                before: Some(before),
                count: count(words.get(2))?,
            })
        }
        _ if words.len() > 1 => Err(CommandError::Usage(HISTORY_USAGE)),
        first => Ok(Command::History {
            before: None,
            count: count(first)?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_said() {
        assert_eq!(parse("hello, all"), Ok(Command::Say("hello, all")));
        assert_eq!(parse(""), Ok(Command::Say("")));
    }

    #[test]
    fn a_double_slash_says_the_text_with_one_slash() {
        assert_eq!(parse("//shrug"), Ok(Command::Say("/shrug")));
        assert_eq!(parse("///x"), Ok(Command::Say("//x")));
    }

    #[test]
    fn commands_are_case_insensitive_and_have_aliases() {
        assert_eq!(parse("/HELP"), Ok(Command::Help));
        assert_eq!(parse("/commands"), Ok(Command::Help));
        assert_eq!(parse("/List"), Ok(Command::List(1)));
        assert_eq!(parse("/who"), Ok(Command::Who(1)));
        assert_eq!(parse("/clients"), Ok(Command::Who(1)));
        assert_eq!(parse("/leave"), Ok(Command::Leave));
        assert_eq!(parse("/Quit"), Ok(Command::Quit));
    }

    #[test]
    fn lists_take_an_optional_page_from_one() {
        assert_eq!(parse("/list 3"), Ok(Command::List(3)));
        assert_eq!(parse("/who  2 "), Ok(Command::Who(2)));
        assert!(parse("/list 0").is_err());
        assert!(parse("/who two").is_err());
        assert!(parse("/list 1 2").is_err());
    }

    #[test]
    fn room_commands_take_exactly_one_room() {
        assert_eq!(parse("/create #dev"), Ok(Command::Create("#dev")));
        assert_eq!(parse("/JOIN  dev "), Ok(Command::Join("dev")));
        assert_eq!(parse("/join"), Err(CommandError::Usage("/join ROOM")));
        assert_eq!(
            parse("/create a b"),
            Err(CommandError::Usage("/create ROOM"))
        );
    }

    #[test]
    fn whispers_keep_their_text_whole() {
        assert_eq!(
            parse("/msg bob hi there,  bob"),
            Ok(Command::Whisper {
                to: "bob",
                text: "hi there,  bob"
            })
        );
        assert_eq!(
            parse("/w bob x"),
            Ok(Command::Whisper {
                to: "bob",
                text: "x"
            })
        );
        assert_eq!(
            parse("/msg bob"),
            Err(CommandError::Usage("/msg NAME TEXT"))
        );
        assert_eq!(
            parse("/msg bob   "),
            Err(CommandError::Usage("/msg NAME TEXT"))
        );
        assert_eq!(parse("/msg"), Err(CommandError::Usage("/msg NAME TEXT")));
    }

    #[test]
    fn moderation_commands_take_a_name_and_maybe_more() {
        assert_eq!(
            parse("/kick bob spamming links"),
            Ok(Command::Kick {
                name: "bob",
                reason: "spamming links"
            })
        );
        assert_eq!(
            parse("/ban bob"),
            Ok(Command::Ban {
                name: "bob",
                reason: ""
            })
        );
        assert_eq!(
            parse("/kick"),
            Err(CommandError::Usage("/kick NAME [reason]"))
        );
        assert_eq!(parse("/unban bob"), Ok(Command::Unban("bob")));
        assert_eq!(
            parse("/mute bob 10"),
            Ok(Command::Mute {
                name: "bob",
                minutes: Some(10)
            })
        );
        assert_eq!(
            parse("/MUTE bob"),
            Ok(Command::Mute {
                name: "bob",
                minutes: None
            })
        );
        assert!(parse("/mute bob ten").is_err());
        assert!(parse("/mute bob 0").is_err());
        assert_eq!(parse("/unmute bob"), Ok(Command::Unmute("bob")));
    }

    #[test]
    fn mode_switches_between_json_and_text() {
        assert_eq!(parse("/mode json"), Ok(Command::Mode(true)));
        assert_eq!(parse("/MODE Text"), Ok(Command::Mode(false)));
        assert!(parse("/mode xml").is_err());
    }

    #[test]
    fn history_takes_a_count_and_maybe_an_id() {
        assert_eq!(
            parse("/history"),
            Ok(Command::History {
                before: None,
                count: 50
            })
        );
        assert_eq!(
            parse("/HISTORY 200"),
            Ok(Command::History {
                before: None,
                count: 200
            })
        );
        assert_eq!(
            parse("/history before 77 5"),
            Ok(Command::History {
                before: Some(77),
                count: 5
            })
        );
        assert_eq!(
            parse("/history 5000"),
            Ok(Command::History {
                before: None,
                count: 200
            })
        );
        for bad in [
            "/history 0",
            "/history -3",
            "/history x",
            "/history before",
            "/history before x",
            "/history 5 6",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("/search  größe  "), Ok(Command::Search("größe")));
        assert!(parse("/search").is_err());
    }

    #[test]
    fn unknown_commands_are_named_in_the_error() {
        let err = parse("/frobnicate now").unwrap_err();
        assert_eq!(err, CommandError::Unknown("frobnicate".into()));
        assert!(err.to_string().contains("/frobnicate"));
        assert!(err.to_string().contains("/help"));
    }
}

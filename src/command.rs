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
    /// `/list`: the rooms.
    List,
    /// `/create ROOM`.
    Create(&'a str),
    /// `/join ROOM`.
    Join(&'a str),
    /// `/leave`: back to the lobby.
    Leave,
    /// `/who`, `/clients`.
    Who,
    /// `/msg NAME TEXT`, `/w NAME TEXT`.
    Whisper {
        /// The receiver's name.
        to: &'a str,
        /// What to tell them.
        text: &'a str,
    },
    /// `/quit`.
    Quit,
}

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
    ("/list", "the rooms and how many are in each"),
    ("/create ROOM", "make a room and go into it"),
    ("/join ROOM", "go into a room"),
    ("/leave", "leave your room for the lobby"),
    ("/who", "who is online and where (also /clients)"),
    ("/msg NAME TEXT", "whisper to one person (also /w)"),
    ("/quit", "leave the chat"),
    ("//TEXT", "say something that starts with /"),
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
    match word_lower.as_str() {
        "help" | "commands" => Ok(Command::Help),
        "list" => Ok(Command::List),
        "create" => one_arg("/create ROOM").map(Command::Create),
        "join" => one_arg("/join ROOM").map(Command::Join),
        "leave" => Ok(Command::Leave),
        "who" | "clients" => Ok(Command::Who),
        "msg" | "w" => match args.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Ok(Command::Whisper {
                to,
                text: text.trim_start(),
            }),
            _ => Err(CommandError::Usage("/msg NAME TEXT")),
        },
        "quit" => Ok(Command::Quit),
        _ => Err(CommandError::Unknown(word.to_string())),
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
        assert_eq!(parse("/List"), Ok(Command::List));
        assert_eq!(parse("/who"), Ok(Command::Who));
        assert_eq!(parse("/clients"), Ok(Command::Who));
        assert_eq!(parse("/leave"), Ok(Command::Leave));
        assert_eq!(parse("/Quit"), Ok(Command::Quit));
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
    fn unknown_commands_are_named_in_the_error() {
        let err = parse("/frobnicate now").unwrap_err();
        assert_eq!(err, CommandError::Unknown("frobnicate".into()));
        assert!(err.to_string().contains("/frobnicate"));
        assert!(err.to_string().contains("/help"));
    }
}

//! The rules for user names and room names.

use std::borrow::Cow;
use std::fmt;

use crate::wire::is_forbidden;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// No characters.
    Empty,
    /// More than [`MAX_NAME_CHARS`] characters.
    TooLong,
    /// Contains a space, tab or other white space.
    WhiteSpace,
    /// Contains a control character.
    Control,
    /// Starts with `/`, which would read as a command.
    SlashLed,
    /// Somebody online already has it (compared without case).
    Taken(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "a name needs at least one character"),
            NameError::TooLong => write!(f, "a name has at most {MAX_NAME_CHARS} characters"),
            NameError::WhiteSpace => write!(f, "a name cannot contain spaces"),
            NameError::Control => write!(f, "a name cannot contain control characters"),
            NameError::SlashLed => write!(f, "a name cannot start with /"),
            NameError::Taken(name) => write!(f, "the name {name} is taken; choose another"),
        }
    }
}

/// Checks a proposed user name (already trimmed of its line ending).
/// Uniqueness is the registry's business; this checks the form only.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_whitespace) {
        return Err(NameError::WhiteSpace);
    }
    if name.chars().any(is_forbidden) {
        return Err(NameError::Control);
    }
    if name.starts_with('/') {
        return Err(NameError::SlashLed);
    }
    Ok(())
}

/// The key under which a name or room is unique: names and rooms compare
/// without regard to case.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// [`fold`], without a copy when the name is folded already (ASCII without
/// capitals, the common case): for looking up, where no key is kept.
pub fn folded(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(fold(name))
    }
}

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomNameError {
    /// No characters (after the optional `#`).
    Empty,
    /// More than [`MAX_ROOM_CHARS`] characters.
    TooLong,
    /// A character other than a letter, digit, `-` or `_`.
    BadCharacter(char),
}

impl fmt::Display for RoomNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomNameError::Empty => write!(f, "a room needs a name"),
            RoomNameError::TooLong => {
                write!(f, "a room name has at most {MAX_ROOM_CHARS} characters")
            }
            RoomNameError::BadCharacter(c) => write!(
                f,
                "a room name may hold only letters, digits, - and _ (not {:?})",
                c
            ),
        }
    }
}

/// The room name a user typed, without its leading `#`, if it is a valid one.
pub fn room_name(typed: &str) -> Result<&str, RoomNameError> {
    let name = typed.strip_prefix('#').unwrap_or(typed);
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.chars().count() > MAX_ROOM_CHARS {
        return Err(RoomNameError::TooLong);
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(RoomNameError::BadCharacter(bad));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in ["alice", "Bob_2", "ünïcødé", "a", &"x".repeat(32), "o'neil"] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_name_of_33_characters_is_too_long() {
        assert_eq!(check_name(&"x".repeat(33)), Err(NameError::TooLong));
        // characters, not bytes
        assert_eq!(check_name(&"é".repeat(32)), Ok(()));
    }

    #[test]
    fn names_with_space_control_or_slash_are_refused() {
        assert_eq!(check_name("a b"), Err(NameError::WhiteSpace));
        assert_eq!(check_name("a\tb"), Err(NameError::WhiteSpace));
        assert_eq!(check_name("a\u{1b}b"), Err(NameError::Control));
        assert_eq!(check_name("/quit"), Err(NameError::SlashLed));
        assert_eq!(check_name("a/b"), Ok(()));
    }

    #[test]
    fn names_fold_without_case() {
        assert_eq!(fold("Alice"), fold("aLICE"));
    }

    #[test]
    fn folded_is_fold_and_copies_only_what_changes() {
        for name in [
            "alice",
            "Alice",
            "ÄLICE",
            "ärger",
            "o'neil",
            "ΣΑΣ",
            "",
            "x_9-",
            // The cases of the index's former copy of this function.
            "ALICE_2",
            "élodie",
            "Élodie",
            "ΣΟΦΙΑΣ",
            "σοφίας",
            "ǅemal",
            "ǆemal",
            "İstanbul",
            "straße",
            "ẞ",
            "dev-ops",
            "日本",
        ] {
            assert_eq!(folded(name), fold(name), "{name}");
        }
        assert!(matches!(folded("alice_2"), Cow::Borrowed(_)));
        assert!(matches!(folded("Alice"), Cow::Owned(_)));
    }

    #[test]
    fn room_names_drop_their_hash_and_keep_to_letters_digits_dash_underscore() {
        assert_eq!(room_name("#dev-ops_2"), Ok("dev-ops_2"));
        assert_eq!(room_name("general"), Ok("general"));
        assert_eq!(room_name("#"), Err(RoomNameError::Empty));
        assert_eq!(room_name(""), Err(RoomNameError::Empty));
        assert_eq!(room_name(&"r".repeat(32)), Ok(&*"r".repeat(32)));
        assert_eq!(room_name(&"r".repeat(33)), Err(RoomNameError::TooLong));
        assert_eq!(room_name("a.b"), Err(RoomNameError::BadCharacter('.')));
        assert_eq!(room_name("a b"), Err(RoomNameError::BadCharacter(' ')));
    }
}

//! Which messages a viewer shows: a room and a search text, both optional.

use crate::names;
use crate::viewer::row::MessageRef;

/// A room and a search, as the user typed them.
///
/// Promises:
/// 1. The room matches as the server matches rooms: case-insensitive, a
///    leading `#` ignored. Whispers belong to no room.
/// 2. The search matches text, sender, recipient and room, ignoring case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    room: Option<(String, String)>,
    search: Option<(String, String)>,
}

impl Filter {
    /// Only `room`'s messages (`None` or empty: every room and whisper).
    pub fn with_room(mut self, room: Option<&str>) -> Filter {
        self.room = room
            .map(|r| r.trim().trim_start_matches('#'))
            .filter(|r| !r.is_empty())
            .map(|r| (r.to_string(), names::fold(r)));
        self
    }

    /// Only messages containing `text` (`None` or empty: all).
    pub fn with_search(mut self, text: Option<&str>) -> Filter {
        self.search = text
            .filter(|t| !t.is_empty())
            .map(|t| (t.to_string(), t.to_lowercase()));
        self
    }

    /// The room, as typed (without `#`).
    pub fn room(&self) -> Option<&str> {
        self.room.as_ref().map(|(typed, _)| typed.as_str())
    }

    /// The search, as typed.
    pub fn search(&self) -> Option<&str> {
        self.search.as_ref().map(|(typed, _)| typed.as_str())
    }

    /// The search in lower case, for highlighting.
    pub fn search_folded(&self) -> Option<&str> {
        self.search.as_ref().map(|(_, folded)| folded.as_str())
    }

    /// True when it lets everything through.
    pub fn is_empty(&self) -> bool {
        self.room.is_none() && self.search.is_none()
    }

    /// True when `m` is to be shown.
    pub fn matches(&self, m: &MessageRef<'_>) -> bool {
        if let Some((_, room)) = &self.room
            && (m.is_whisper() || names::fold(m.room) != *room)
        {
            return false;
        }
        if let Some((_, needle)) = &self.search {
            return [m.text, m.sender, m.recipient, m.room]
                .iter()
                .any(|field| contains_folded(field, needle));
        }
        true
    }
}

/// True when `haystack` contains `needle` (already lower case), ignoring case.
fn contains_folded(haystack: &str, needle: &str) -> bool {
    if !(haystack.is_ascii() && needle.is_ascii()) {
        return haystack.to_lowercase().contains(needle);
    }
    // No allocation on the common path: look for the first byte in either
    // case, then compare the rest ignoring case.
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some(&first) = n.first() else {
        return true;
    };
    let upper = first.to_ascii_uppercase();
    h.len() >= n.len()
        && (0..=h.len() - n.len())
            .any(|i| (h[i] == first || h[i] == upper) && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::row::{Message, Stamp};

    fn message(room: &str, recipient: &str, text: &str) -> Message {
        Message {
            offset: 1,
            id: 1,
            time: Stamp::parse("2026-11-21T18:05:09.123+00:00").unwrap(),
            room: room.into(),
            sender: "alice".into(),
            recipient: recipient.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_room_filter_ignores_case_and_hash_and_leaves_out_whispers() {
        let filter = Filter::default().with_room(Some("#General"));
        assert!(filter.matches(&message("general", "", "hi").borrowed()));
        assert!(!filter.matches(&message("dev", "", "hi").borrowed()));
        assert!(!filter.matches(&message("", "bob", "hi").borrowed()));
    }

    #[test]
    fn a_search_finds_text_and_names_in_any_case() {
        let filter = Filter::default().with_search(Some("HeLLo"));
        assert!(filter.matches(&message("general", "", "well hello there").borrowed()));
        assert!(!filter.matches(&message("general", "", "bye").borrowed()));
        let by_name = Filter::default().with_search(Some("bob"));
        assert!(by_name.matches(&message("", "Bob", "psst").borrowed()));
        let accented = Filter::default().with_search(Some("ÇA"));
        assert!(accented.matches(&message("general", "", "ça va").borrowed()));
    }
}

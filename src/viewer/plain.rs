//! Plain lines: what the viewers print into a pipe, a file or a terminal that
//! is not taken over. One row is one line (continued on indented lines only
//! when a wrap width is given), with fixed columns so the output lines up and
//! `grep`, `cut` and `awk` work on it.

use crate::viewer::row::{Event, Malformed, MessageRef};
use crate::viewer::text::{self, clean, push_padded};

/// Columns kept for the room (`#general`, or `whisper`); longer ones push the rest right.
pub const ROOM_WIDTH: usize = 12;
/// Columns kept for the sender (`alice`, or `alice → bob` for a whisper).
pub const WHO_WIDTH: usize = 12;
/// Columns kept for an event's kind.
pub const KIND_WIDTH: usize = 10;
/// Columns kept for `ip:port`.
pub const ADDRESS_WIDTH: usize = 21;
/// The narrowest text column a wrapped line gets, however wide the prefix.
const MIN_TEXT_WIDTH: usize = 20;

/// Appends the room column of a message: `#general`, or `whisper`.
pub fn push_room_label(out: &mut String, m: &MessageRef<'_>) {
    if m.is_whisper() {
        out.push_str("whisper");
    } else {
        out.push('#');
        out.push_str(&clean(m.room));
    }
}

/// Appends the sender column of a message: `alice`, or `alice → bob` for a whisper.
pub fn push_who_label(out: &mut String, m: &MessageRef<'_>) {
    out.push_str(&clean(m.sender));
    if m.is_whisper() {
        out.push_str(" → ");
        out.push_str(&clean(m.recipient));
    }
}

/// Appends `label` written by `push`, then spaces up to `columns`.
fn push_column(out: &mut String, columns: usize, push: impl FnOnce(&mut String)) {
    let start = out.len();
    push(out);
    let used = text::width(&out[start..]);
    out.extend(std::iter::repeat_n(' ', columns.saturating_sub(used)));
}

/// Appends a message as a line (or, with `wrap`, lines of at most that many
/// columns, the text continued under itself), ending in `\n`:
/// `2026-11-21 18:05:09  #general     alice         hello`.
pub fn message(out: &mut String, m: &MessageRef<'_>, wrap: Option<usize>) {
    let line_start = out.len();
    out.push_str(m.date());
    out.push(' ');
    out.push_str(m.clock());
    out.push_str("  ");
    push_column(out, ROOM_WIDTH, |out| push_room_label(out, m));
    out.push(' ');
    push_column(out, WHO_WIDTH, |out| push_who_label(out, m));
    out.push_str("  ");
    let body = clean(m.text);
    match wrap {
        None => out.push_str(&body),
        Some(columns) => {
            let indent = text::width(&out[line_start..]);
            let room = columns.saturating_sub(indent).max(MIN_TEXT_WIDTH);
            for (i, range) in text::wrap(&body, room).into_iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                    out.extend(std::iter::repeat_n(' ', indent));
                }
                out.push_str(&body[range]);
            }
        }
    }
    out.push('\n');
}

/// ANSI colours for the kinds of events, used only on a terminal.
struct Paint {
    on: &'static str,
    off: &'static str,
}

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

fn paint_for(kind: &str) -> Paint {
    let on = match kind {
        "connect" => "\x1b[36m",    // cyan: someone knocks
        "login" => "\x1b[32m",      // green: someone is in
        "disconnect" => "\x1b[33m", // yellow: someone left
        _ => "\x1b[35m",            // magenta: a kind added later
    };
    Paint { on, off: RESET }
}

/// Appends an event as one line, ending in `\n`; with `colour`, the time is
/// dimmed and the rest coloured by the event's kind:
/// `2026-11-21 18:05:09  login      127.0.0.1:53422       thread 3      alice`.
pub fn event(out: &mut String, e: &Event, colour: bool) {
    if colour {
        out.push_str(DIM);
    }
    out.push_str(e.time.date());
    out.push(' ');
    out.push_str(e.time.clock());
    if colour {
        out.push_str(RESET);
    }
    out.push_str("  ");
    let paint = colour.then(|| paint_for(&e.kind));
    if let Some(p) = &paint {
        out.push_str(p.on);
    }
    push_padded(out, &clean(&e.kind), KIND_WIDTH);
    out.push(' ');
    push_padded(out, &clean(&e.address()), ADDRESS_WIDTH);
    out.push_str(" thread ");
    // The space keeps a long thread number apart from the name.
    push_padded(out, &format!("{} ", e.thread), 6);
    out.push_str(if e.name.is_empty() { "-" } else { &e.name });
    if let Some(p) = &paint {
        out.push_str(p.off);
    }
    out.push('\n');
}

/// Appends the report of a malformed row, ending in `\n`; red with `colour`.
pub fn malformed(out: &mut String, m: &Malformed, colour: bool) {
    if colour {
        out.push_str("\x1b[31m");
    }
    out.push_str(&m.to_string());
    if colour {
        out.push_str(RESET);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::row::{Message, Parsed, parse_event, parse_message, tests::parse_all};

    fn messages(text: &str) -> Vec<Message> {
        parse_all(text, parse_message)
            .into_iter()
            .filter_map(|p| match p {
                Parsed::Row(m) => Some(m),
                Parsed::Malformed(_) => None,
            })
            .collect()
    }

    #[test]
    fn messages_line_up_in_columns_and_whispers_name_their_recipient() {
        let rows = messages(
            "1,2026-11-21T18:05:09.123+00:00,general,alice,,hello\n\
             2,2026-11-21T18:05:10.000+00:00,,bob,alice,psst\n",
        );
        let mut out = String::new();
        for m in &rows {
            message(&mut out, &m.borrowed(), None);
        }
        assert_eq!(
            out,
            "2026-11-21 18:05:09  #general     alice         hello\n\
             2026-11-21 18:05:10  whisper      bob → alice   psst\n"
        );
    }

    #[test]
    fn a_long_text_wraps_under_its_own_column() {
        let rows = messages(
            "1,2026-11-21T18:05:09.123+00:00,general,alice,,one two three four five six seven eight nine ten\n",
        );
        let mut out = String::new();
        message(&mut out, &rows[0].borrowed(), Some(70));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines.iter().all(|l| text::width(l) <= 70), "{out}");
        assert!(lines[1].starts_with(&" ".repeat(48)), "{out}");
        assert_eq!(lines[1].trim_start(), "five six seven eight");
    }

    #[test]
    fn escape_sequences_in_a_file_are_not_printed() {
        let rows = messages(
            "1,2026-11-21T18:05:09.123+00:00,general,ali\u{1b}ce,,\"\u{1b}]0;owned\u{7}hi\"\n",
        );
        let mut out = String::new();
        message(&mut out, &rows[0].borrowed(), None);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    }

    #[test]
    fn events_are_coloured_by_kind_only_when_asked() {
        let rows = parse_all(
            "2026-11-21T18:05:09.123+00:00,127.0.0.1,5000,3,alice,login\n",
            parse_event,
        );
        let Parsed::Row(e) = &rows[0] else { panic!() };
        let mut plain = String::new();
        event(&mut plain, e, false);
        assert_eq!(
            plain,
            "2026-11-21 18:05:09  login      127.0.0.1:5000        thread 3     alice\n"
        );
        let mut coloured = String::new();
        event(&mut coloured, e, true);
        assert!(coloured.contains("\x1b[32mlogin"), "{coloured:?}");
    }

    #[test]
    fn a_long_thread_number_stays_apart_from_the_name() {
        let rows = parse_all(
            "2026-11-21T18:05:09.123+00:00,127.0.0.1,5000,3333333,alice,login\n",
            parse_event,
        );
        let Parsed::Row(e) = &rows[0] else { panic!() };
        let mut plain = String::new();
        event(&mut plain, e, false);
        assert!(plain.ends_with("thread 3333333 alice\n"), "{plain:?}");
    }
}

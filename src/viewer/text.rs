//! Text for the terminal: cleaning what a file may hold, measuring it in
//! columns, padding and wrapping it. Both the plain lines and the full-screen
//! view use these, so they wrap alike.

use std::borrow::Cow;
use std::ops::Range;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Text made safe to print: tabs and line ends become spaces, other control
/// characters (ESC, BEL, DEL, C1) are removed, so a hand-edited file cannot
/// drive the terminal.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .filter_map(|c| match c {
                '\t' | '\n' | '\r' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .collect(),
    )
}

/// Columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Appends `s` to `out`, then spaces up to `columns` (nothing is cut).
pub fn push_padded(out: &mut String, s: &str, columns: usize) {
    out.push_str(s);
    for _ in width(s)..columns {
        out.push(' ');
    }
}

/// `s` cut to at most `columns` columns, with `…` where it was cut.
pub fn truncate(s: &str, columns: usize) -> Cow<'_, str> {
    if width(s) <= columns {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > columns {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    Cow::Owned(out)
}

/// Splits `text` into lines of at most `columns` columns: at spaces where it
/// can, inside a word when a word is longer than a line. Returns byte ranges
/// of `text`; the spaces at a break are left out. An empty text is one empty
/// line.
pub fn wrap(text: &str, columns: usize) -> Vec<Range<usize>> {
    let columns = columns.max(1);
    let mut lines = Vec::new();
    // The line being filled: its byte range and the columns it takes.
    let mut line: Option<(usize, usize, usize)> = None;
    for word in words(text) {
        let word_width = width(&text[word.clone()]);
        if let Some((start, end, used)) = line {
            let gap = word.start - end; // spaces, one column each
            if used + gap + word_width <= columns {
                line = Some((start, word.end, used + gap + word_width));
                continue;
            }
            lines.push(start..end);
        }
        if word_width <= columns {
            line = Some((word.start, word.end, word_width));
            continue;
        }
        // A word longer than a line: cut it into pieces that fit.
        let mut start = word.start;
        let mut used = 0;
        for (i, c) in text[word.clone()].char_indices() {
            let w = c.width().unwrap_or(0);
            let at = word.start + i;
            if used + w > columns && at > start {
                lines.push(start..at);
                start = at;
                used = 0;
            }
            used += w;
        }
        line = Some((start, word.end, used));
    }
    if let Some((start, end, _)) = line {
        lines.push(start..end);
    }
    if lines.is_empty() {
        lines.push(0..0);
    }
    lines
}

/// Byte ranges of the runs of non-space characters in `text`.
fn words(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut rest = 0;
    std::iter::from_fn(move || {
        let start = rest + text[rest..].find(|c| c != ' ')?;
        let end = text[start..].find(' ').map_or(text.len(), |n| start + n);
        rest = end;
        Some(start..end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(text: &str, columns: usize) -> Vec<&str> {
        wrap(text, columns).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn long_text_wraps_at_spaces_and_long_words_are_split() {
        assert_eq!(wrapped("hello there world", 11), ["hello there", "world"]);
        assert_eq!(wrapped("hello there world", 8), ["hello", "there", "world"]);
        assert_eq!(wrapped("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrapped("a bbbbbbbbbb c", 4), ["a", "bbbb", "bbbb", "bb c"]);
        assert_eq!(wrapped("", 4), [""]);
        assert_eq!(wrapped("fits", 4), ["fits"]);
    }

    #[test]
    fn wrapping_counts_columns_not_bytes() {
        assert_eq!(wrapped("ça va très bien", 7), ["ça va", "très", "bien"]);
        assert_eq!(wrapped("日本語のテキスト", 6), ["日本語", "のテキ", "スト"]);
    }

    #[test]
    fn every_wrapped_line_fits() {
        let text = "the quick  brown fox   jumps over the lazy dog again and again";
        for columns in 1..30 {
            for line in wrapped(text, columns) {
                assert!(width(line) <= columns, "{line:?} in {columns}");
            }
        }
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\tb\nc\u{1b}[2Jd\u{7}\u{9b}"), "a b c[2Jd");
        assert!(matches!(clean("plain ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("general", 10), "general");
        assert_eq!(truncate("a-very-long-room", 8), "a-very-…");
    }
}

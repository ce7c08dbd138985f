//! The chat pane's contents: the lines received, how each looks, how long
//! lines wrap, and the scrollback.
//!
//! Nothing here touches a terminal: a [`ChatLine`] becomes ratatui [`Line`]s
//! for a given width, which the view draws and the tests read.

use std::collections::{HashSet, VecDeque};

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

/// Lines kept in the scrollback (and in `/save`'s transcript): a long day
/// of a busy room, in a few megabytes at most.
pub const SCROLLBACK_LINES: usize = 5000;

/// Colours a name can get: easy to tell apart on dark and light terminals;
/// red is kept for errors and magenta for whispers.
const NAME_COLOURS: [Color; 10] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::LightCyan,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::Indexed(208), // orange
    Color::Indexed(141), // lavender
];

/// The colour of a name: the same name always gets the same colour, in
/// every run, whatever its case.
pub fn name_colour(name: &str) -> Color {
    // FNV-1a: stable across runs, unlike the standard library's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.to_lowercase().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let index = usize::try_from(hash).unwrap_or(0) % NAME_COLOURS.len();
    NAME_COLOURS[index]
}

/// Whether `text` mentions `name` as a word of its own, in any case
/// (`alice,` and `@alice` do; `malice` does not).
pub fn mentions(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    let name = name.to_lowercase();
    let part_of_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(&name).any(|(at, _)| {
        !part_of_word(text[..at].chars().next_back())
            && !part_of_word(text[at + name.len()..].chars().next())
    })
}

/// What kind of line it is, which decides how it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A room message.
    Message {
        /// Who said it.
        from: String,
    },
    /// A whisper, to the user or from the user.
    Whisper {
        /// Who whispered.
        from: String,
        /// To whom.
        to: String,
    },
    /// A state line (`* `).
    Notice,
    /// An error (`! `).
    Error,
    /// A line shown as it came.
    Text,
}

/// One line of the chat pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    /// The time of day, `HH:MM:SS`: the pane shows `HH:MM`, `/save` all.
    pub clock: String,
    /// What kind of line.
    pub kind: Kind,
    /// The words, free of control characters.
    pub text: String,
    /// Whether it mentions the user (highlighted).
    pub mention: bool,
    /// Its number in the server's `messages.csv`, to show it only once
    /// when history is replayed after a reconnect.
    pub id: Option<u64>,
}

const TIME_STYLE: Style = Style::new().fg(Color::DarkGray);
const NOTICE_STYLE: Style = Style::new().fg(Color::Gray).add_modifier(Modifier::ITALIC);
const ERROR_STYLE: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const WHISPER_STYLE: Style = Style::new()
    .fg(Color::Magenta)
    .add_modifier(Modifier::ITALIC);
/// A line that mentions the user.
pub const MENTION_STYLE: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::Yellow)
    .add_modifier(Modifier::BOLD);

impl ChatLine {
    /// The line as plain text, as `/save` writes it.
    pub fn plain(&self) -> String {
        let body = match &self.kind {
            Kind::Message { from } => format!("{from}: {}", self.text),
            Kind::Whisper { from, to } => format!("{from} -> {to} (whisper): {}", self.text),
            Kind::Notice => format!("* {}", self.text),
            Kind::Error => format!("! {}", self.text),
            Kind::Text => self.text.clone(),
        };
        format!("[{}] {body}", self.clock)
    }

    /// The line in styled pieces, before wrapping.
    fn spans(&self) -> Vec<Span<'static>> {
        let clock: String = self.clock.chars().take(5).collect();
        let mut spans = vec![Span::styled(format!("{clock} "), TIME_STYLE)];
        match &self.kind {
            Kind::Message { from } => {
                spans.push(Span::styled(
                    from.clone(),
                    Style::new()
                        .fg(name_colour(from))
                        .add_modifier(Modifier::BOLD),
                ));
                spans.push(Span::raw(": "));
                let style = if self.mention {
                    MENTION_STYLE
                } else {
                    Style::new()
                };
                spans.push(Span::styled(self.text.clone(), style));
            }
            Kind::Whisper { from, to } => {
                spans.push(Span::styled(
                    format!("{from} → {to}: "),
                    WHISPER_STYLE.add_modifier(Modifier::BOLD),
                ));
                spans.push(Span::styled(self.text.clone(), WHISPER_STYLE));
            }
            Kind::Notice => spans.push(Span::styled(format!("* {}", self.text), NOTICE_STYLE)),
            Kind::Error => spans.push(Span::styled(format!("! {}", self.text), ERROR_STYLE)),
            Kind::Text => spans.push(Span::raw(self.text.clone())),
        }
        spans
    }

    /// The line as rows of at most `width` columns. Long lines break at
    /// spaces where they can, and rows after the first are indented under
    /// the text, past the time.
    pub fn rows(&self, width: usize) -> Vec<Line<'static>> {
        let indent = if width >= 20 { 6 } else { 0 };
        wrap(&self.spans(), width, indent)
    }
}

/// Wraps styled text into rows of at most `width` columns.
pub fn wrap(spans: &[Span<'_>], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = if indent + 2 > width { 0 } else { indent };
    let mut rows: Vec<Vec<(char, Style)>> = Vec::new();
    let mut row: Vec<(char, Style)> = Vec::new();
    let mut used = 0;
    // Index in `row` just after the last space, where the row may break,
    // and the width of the word that starts there.
    let mut can_break: Option<(usize, usize)> = None;
    let cells: Vec<(char, Style)> = spans
        .iter()
        .flat_map(|span| span.content.chars().map(move |c| (c, span.style)))
        .map(|(c, style)| (if c == '\t' { ' ' } else { c }, style))
        .collect();
    // The width of the word starting at each cell (0 at a space).
    let mut word_width = vec![0; cells.len() + 1];
    for i in (0..cells.len()).rev() {
        let (c, _) = cells[i];
        word_width[i] = if c == ' ' {
            0
        } else {
            word_width[i + 1] + c.width().unwrap_or(0)
        };
    }
    for (i, &(c, style)) in cells.iter().enumerate() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            // Move the word begun on this row to the next, unless it would
            // not fit there either: then it is cut here.
            let carry = match can_break {
                Some((at, word)) if c != ' ' && at < row.len() && indent + word <= width => {
                    row.split_off(at)
                }
                _ => Vec::new(),
            };
            rows.push(std::mem::take(&mut row));
            row.extend(std::iter::repeat_n((' ', Style::new()), indent));
            row.extend(carry);
            used = row.iter().map(|(c, _)| c.width().unwrap_or(0)).sum();
            can_break = None;
            if c == ' ' && row.len() == indent {
                continue;
            }
        }
        row.push((c, style));
        used += w;
        if c == ' ' {
            can_break = Some((row.len(), word_width[i + 1]));
        }
    }
    rows.push(row);
    rows.into_iter().map(to_line).collect()
}

/// Groups cells of the same style into spans.
fn to_line(cells: Vec<(char, Style)>) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut text = String::new();
    let mut current: Option<Style> = None;
    for (c, style) in cells {
        if current.is_some_and(|s| s != style) {
            spans.push(Span::styled(
                std::mem::take(&mut text),
                current.unwrap_or_default(),
            ));
        }
        current = Some(style);
        text.push(c);
    }
    if let Some(style) = current {
        spans.push(Span::styled(text, style));
    }
    Line::from(spans)
}

/// The lines received, and where the pane is scrolled to.
///
/// Promises:
/// 1. At most [`SCROLLBACK_LINES`] lines are kept; the oldest go first.
/// 2. A message id is shown once: a replayed message already shown is not
///    added again.
/// 3. `/clear` empties the pane but not the transcript that `/save` writes.
/// 4. While the pane is scrolled up, new lines do not move what is shown.
#[derive(Debug, Default)]
pub struct Chat {
    lines: VecDeque<ChatLine>,
    /// Lines before this index were cleared from the pane.
    cleared: usize,
    ids: HashSet<u64>,
    /// How many rows the pane is scrolled up from the newest line.
    pub scroll: usize,
    /// Lines that arrived while scrolled up.
    pub unseen: usize,
}

impl Chat {
    /// Adds a line; `width` is the pane's width now, to keep a scrolled
    /// pane still. Returns false if it was a message already shown.
    pub fn push(&mut self, line: ChatLine, width: usize) -> bool {
        if let Some(id) = line.id
            && !self.ids.insert(id)
        {
            return false;
        }
        if self.scroll > 0 {
            self.scroll += line.rows(width).len();
            self.unseen += 1;
        }
        self.lines.push_back(line);
        if self.lines.len() > SCROLLBACK_LINES
            && let Some(old) = self.lines.pop_front()
        {
            self.cleared = self.cleared.saturating_sub(1);
            if let Some(id) = old.id {
                self.ids.remove(&id);
            }
        }
        true
    }

    /// Puts older lines (oldest first) above everything, as loaded when the
    /// user scrolls past the oldest line. What is shown does not move: the
    /// scroll counts rows from the newest line. Messages already shown, and
    /// lines past [`SCROLLBACK_LINES`], are left out. Returns how many were
    /// added.
    pub fn prepend(&mut self, older: Vec<ChatLine>) -> usize {
        let room = SCROLLBACK_LINES.saturating_sub(self.lines.len());
        let fresh: Vec<ChatLine> = older
            .into_iter()
            .filter(|line| line.id.is_none_or(|id| !self.ids.contains(&id)))
            .collect();
        let skip = fresh.len().saturating_sub(room);
        let added = fresh.len() - skip;
        for line in fresh.into_iter().skip(skip).rev() {
            if let Some(id) = line.id {
                self.ids.insert(id);
            }
            self.lines.push_front(line);
        }
        // Cleared lines stay cleared; the new ones are above them, shown
        // only if nothing was cleared.
        if self.cleared > 0 {
            self.cleared += added;
        }
        added
    }

    /// Whether the scrollback is full (older lines cannot be added).
    pub fn is_full(&self) -> bool {
        self.lines.len() >= SCROLLBACK_LINES
    }

    /// Whether a pane of `width` × `height` scrolled as it is shows the
    /// oldest line at its top (or the scroll asks for more than there is).
    pub fn at_top(&self, width: usize, height: usize) -> bool {
        let want = self.scroll.saturating_add(height);
        let mut rows = 0;
        for line in self.visible().rev() {
            rows += line.rows(width).len();
            if rows > want {
                return false;
            }
        }
        true
    }

    /// The lines the pane shows (since the last `/clear`).
    pub fn visible(&self) -> impl DoubleEndedIterator<Item = &ChatLine> {
        self.lines.iter().skip(self.cleared)
    }

    /// Every line kept, `/clear`ed ones included.
    pub fn transcript(&self) -> impl Iterator<Item = &ChatLine> {
        self.lines.iter()
    }

    /// `/clear`: empties the pane.
    pub fn clear(&mut self) {
        self.cleared = self.lines.len();
        self.scroll = 0;
        self.unseen = 0;
    }

    /// Scrolls up by `rows` (PgUp, the mouse wheel); kept in range when drawn.
    pub fn scroll_up(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_add(rows);
    }

    /// Scrolls down by `rows`; at the bottom the pane is live again.
    pub fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
        if self.scroll == 0 {
            self.unseen = 0;
        }
    }

    /// End: back to the newest line.
    pub fn to_live(&mut self) {
        self.scroll = 0;
        self.unseen = 0;
    }

    /// The rows to draw in a pane of `width` × `height`, oldest first, and
    /// the scroll kept within what there is to see.
    pub fn window(&mut self, width: usize, height: usize) -> Vec<Line<'static>> {
        let want = self.scroll.saturating_add(height);
        let mut rows: Vec<Line<'static>> = Vec::new();
        for line in self.visible().rev() {
            let mut these = line.rows(width);
            these.reverse();
            rows.extend(these);
            if rows.len() >= want {
                break;
            }
        }
        // Scrolled past the oldest line: stop at it.
        self.scroll = self.scroll.min(rows.len().saturating_sub(height));
        if self.scroll == 0 {
            self.unseen = 0;
        }
        let shown: Vec<Line<'static>> = rows.into_iter().skip(self.scroll).take(height).collect();
        shown.into_iter().rev().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, text: &str) -> ChatLine {
        ChatLine {
            clock: "12:34:56".into(),
            kind: Kind::Message { from: from.into() },
            text: text.into(),
            mention: false,
            id: None,
        }
    }

    fn text_of(line: &Line<'_>) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn a_name_keeps_its_colour_in_any_case_and_names_differ() {
        assert_eq!(name_colour("alice"), name_colour("Alice"));
        assert_eq!(name_colour("alice"), name_colour("alice"));
        let colours: HashSet<String> = ["alice", "bob", "carol", "dave", "erin", "frank"]
            .iter()
            .map(|n| format!("{:?}", name_colour(n)))
            .collect();
        assert!(colours.len() >= 4, "{colours:?}");
        assert!(!NAME_COLOURS.contains(&Color::Red));
    }

    #[test]
    fn a_mention_is_the_name_as_a_word_in_any_case() {
        assert!(mentions("hi alice", "alice"));
        assert!(mentions("ALICE: lunch?", "alice"));
        assert!(mentions("@alice, there?", "alice"));
        assert!(!mentions("malice aforethought", "alice"));
        assert!(!mentions("alice_b is here", "alice"));
        assert!(!mentions("anything", ""));
        assert!(mentions("ünï and ünï", "ÜNÏ"));
    }

    #[test]
    fn long_lines_wrap_at_spaces_and_indent_under_the_text() {
        let line = message("bob", "the quick brown fox jumps over the lazy dog");
        let rows: Vec<String> = line.rows(24).iter().map(text_of).collect();
        assert_eq!(
            rows,
            vec![
                "12:34 bob: the quick ",
                "      brown fox jumps ",
                "      over the lazy dog",
            ]
        );
        for row in &rows {
            assert!(row.chars().count() <= 24);
        }
    }

    #[test]
    fn a_word_longer_than_the_pane_is_cut() {
        let line = message("bob", &"x".repeat(30));
        let rows: Vec<String> = line.rows(20).iter().map(text_of).collect();
        assert_eq!(rows[0], format!("12:34 bob: {}", "x".repeat(9)));
        assert!(rows.iter().all(|r| r.chars().count() <= 20));
        assert_eq!(rows.concat().matches('x').count(), 30);
    }

    #[test]
    fn wide_characters_count_two_columns() {
        let rows = wrap(&[Span::raw("日本語日本語")], 5, 0);
        let texts: Vec<String> = rows.iter().map(text_of).collect();
        assert_eq!(texts, vec!["日本", "語日", "本語"]);
    }

    #[test]
    fn replayed_messages_are_shown_once() {
        let mut chat = Chat::default();
        let mut line = message("bob", "hi");
        line.id = Some(7);
        assert!(chat.push(line.clone(), 80));
        assert!(!chat.push(line, 80));
        assert_eq!(chat.visible().count(), 1);
    }

    #[test]
    fn scrolled_up_pane_stays_still_while_lines_arrive() {
        let mut chat = Chat::default();
        for i in 0..20 {
            chat.push(message("bob", &format!("line {i}")), 80);
        }
        chat.scroll_up(5);
        let before = chat.window(80, 5);
        chat.push(message("bob", "new"), 80);
        assert_eq!(chat.window(80, 5), before);
        assert_eq!(chat.unseen, 1);
        chat.to_live();
        let live = chat.window(80, 5);
        assert_eq!(text_of(&live[4]), "12:34 bob: new");
    }

    #[test]
    fn scrolling_stops_at_the_oldest_line() {
        let mut chat = Chat::default();
        for i in 0..3 {
            chat.push(message("bob", &format!("line {i}")), 80);
        }
        chat.scroll_up(100);
        let rows = chat.window(80, 2);
        assert_eq!(text_of(&rows[0]), "12:34 bob: line 0");
        assert_eq!(chat.scroll, 1);
    }

    #[test]
    fn older_lines_go_on_top_without_moving_the_view() {
        let mut chat = Chat::default();
        for i in 10..20 {
            let mut line = message("bob", &format!("line {i}"));
            line.id = Some(i);
            chat.push(line, 80);
        }
        chat.scroll_up(6);
        let before = chat.window(80, 4);
        assert!(chat.at_top(80, 4));
        let older: Vec<ChatLine> = (5..12)
            .map(|i| {
                let mut line = message("bob", &format!("line {i}"));
                line.id = Some(i);
                line
            })
            .collect();
        assert_eq!(chat.prepend(older), 5, "10 and 11 were there");
        assert_eq!(chat.window(80, 4), before);
        assert!(!chat.at_top(80, 4));
        let first = chat.visible().next().unwrap();
        assert_eq!(first.text, "line 5");
    }

    #[test]
    fn clear_empties_the_pane_but_not_the_transcript() {
        let mut chat = Chat::default();
        chat.push(message("bob", "hi"), 80);
        chat.clear();
        assert_eq!(chat.visible().count(), 0);
        assert_eq!(chat.transcript().count(), 1);
        assert!(chat.window(80, 3).is_empty());
    }

    #[test]
    fn the_scrollback_is_bounded() {
        let mut chat = Chat::default();
        for i in 0..SCROLLBACK_LINES + 10 {
            let mut line = message("bob", "x");
            line.id = Some(u64::try_from(i).unwrap_or(0));
            chat.push(line, 80);
        }
        assert_eq!(chat.transcript().count(), SCROLLBACK_LINES);
        assert_eq!(chat.ids.len(), SCROLLBACK_LINES);
    }

    #[test]
    fn the_saved_transcript_is_plain_text() {
        let mut whisper = message("alice", "psst");
        whisper.kind = Kind::Whisper {
            from: "alice".into(),
            to: "bob".into(),
        };
        assert_eq!(whisper.plain(), "[12:34:56] alice -> bob (whisper): psst");
        assert_eq!(message("bob", "hi").plain(), "[12:34:56] bob: hi");
    }
}

//! The full-screen chat view of `list_messages`: its state ([`App`]), what
//! keys do to it, and how it is drawn into a ratatui [`Frame`].
//!
//! No I/O happens here. The loop in [`crate::viewer::live`] feeds the app rows
//! from the tail and keys from the terminal, and asks it whether it wants
//! older rows; tests feed it the same way and draw it on ratatui's
//! `TestBackend`.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::ops::Range;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::names;
use crate::viewer::filter::Filter;
use crate::viewer::row::{Malformed, Message};
use crate::viewer::tail::Restart;
use crate::viewer::text::{self, clean};

/// Rows kept in memory: past this, the oldest are dropped as new ones come,
/// so a viewer left open for weeks stays small (about 200 bytes a row).
pub const MAX_KEPT: usize = 100_000;

/// Rows loaded at once when the view is scrolled past the oldest row loaded.
pub const OLDER_PAGE: usize = 500;

/// Narrowest and widest room column (`#general`); longer names are cut with `…`.
const ROOM_COLUMNS: Range<usize> = 8..16;
/// Narrowest and widest sender column (`alice → bob`).
const WHO_COLUMNS: Range<usize> = 6..22;
/// Below this many columns for the text, it goes on its own lines.
const MIN_TEXT_COLUMNS: usize = 16;

/// One row of `messages.csv` as the view holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A message or whisper.
    Message(Message),
    /// A row that could not be read, shown as such.
    Malformed(Malformed),
}

impl Item {
    fn offset(&self) -> u64 {
        match self {
            Item::Message(m) => m.offset,
            Item::Malformed(m) => m.offset,
        }
    }

    fn date(&self) -> Option<&str> {
        match self {
            Item::Message(m) => Some(m.time.date()),
            Item::Malformed(_) => None,
        }
    }
}

/// What the user is typing into the bottom line, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing: keys scroll and switch modes.
    None,
    /// A room to show (empty: all rooms).
    Room(String),
    /// A text to search for (empty: no search).
    Search(String),
}

/// What the loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep going.
    Continue,
    /// Restore the terminal and exit.
    Quit,
}

/// The state of the chat view.
///
/// Promises:
/// 1. Rows are kept in file order, newest last; at most [`MAX_KEPT`] of them.
/// 2. `scroll` counts screen lines up from the newest: 0 follows new rows, and
///    a view scrolled up stays on the same lines while new rows arrive.
/// 3. Changing the filter never drops a row: hidden rows come back when the
///    filter is cleared.
pub struct App {
    title: String,
    items: VecDeque<Item>,
    /// Sequence number of `items[0]`; each pushed row gets the next one.
    first_seq: u64,
    /// Sequence numbers of the rows the filter shows, in order.
    shown: VecDeque<u64>,
    filter: Filter,
    rooms: Vec<String>,
    room_width: usize,
    who_width: usize,
    messages: u64,
    malformed: u64,
    scroll: usize,
    input: Input,
    status: Option<String>,
    waiting: bool,
    /// Where the oldest row read starts; older rows are before it.
    origin: Option<u64>,
    older_exhausted: bool,
    want_older: bool,
    /// Size of the message area at the last draw.
    body: Rect,
}

impl App {
    /// An empty view titled `title` (the file's path), showing what `filter` lets through.
    pub fn new(title: impl Into<String>, filter: Filter) -> App {
        App {
            title: title.into(),
            items: VecDeque::new(),
            first_seq: 0,
            shown: VecDeque::new(),
            filter,
            rooms: Vec::new(),
            room_width: ROOM_COLUMNS.start,
            who_width: WHO_COLUMNS.start,
            messages: 0,
            malformed: 0,
            scroll: 0,
            input: Input::None,
            status: None,
            waiting: true,
            origin: None,
            older_exhausted: false,
            want_older: false,
            body: Rect::new(0, 0, 80, 22),
        }
    }

    /// The current filter (room and search).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The file was opened and is read from `offset` on.
    pub fn opened(&mut self, offset: u64) {
        self.waiting = false;
        self.origin = Some(offset);
        self.older_exhausted = offset == 0;
    }

    /// The file is not there (yet).
    pub fn set_waiting(&mut self) {
        self.waiting = true;
    }

    /// The file was truncated or replaced: what was shown is gone from it.
    pub fn restarted(&mut self, why: Restart) {
        self.items.clear();
        self.shown.clear();
        self.messages = 0;
        self.malformed = 0;
        self.rooms.clear();
        self.room_width = ROOM_COLUMNS.start;
        self.who_width = WHO_COLUMNS.start;
        self.first_seq = 0;
        self.scroll = 0;
        self.origin = None;
        self.older_exhausted = false;
        self.status = Some(match why {
            Restart::Truncated => "the file was truncated; showing it from the start".into(),
            Restart::Replaced => "the file was replaced; showing the new one".into(),
        });
    }

    /// Adds the newest row.
    pub fn push(&mut self, item: Item) {
        self.count(&item);
        let seq = self.first_seq + self.items.len() as u64;
        if self.passes(&item) {
            if self.scroll > 0 {
                // Keep a scrolled view still: the new lines are below it.
                let prev = self.shown.back().and_then(|&s| self.get(s));
                let lines = self.lines_for(&item, prev, self.body.width as usize).len();
                self.scroll += lines;
            }
            self.shown.push_back(seq);
        }
        self.items.push_back(item);
        if self.items.len() > MAX_KEPT {
            self.items.pop_front();
            if self.shown.front() == Some(&self.first_seq) {
                self.shown.pop_front();
            }
            self.first_seq += 1;
            self.origin = self.items.front().map(Item::offset);
            self.older_exhausted = false;
        }
    }

    /// True when the view was scrolled past its oldest row and there may be
    /// older rows in the file; [`App::push_older`] answers it.
    pub fn wants_older(&self) -> bool {
        self.want_older
    }

    /// Where the rows [`App::wants_older`] asks for end.
    pub fn older_before(&self) -> Option<u64> {
        self.origin
    }

    /// Adds rows from before the oldest one, oldest first, read from `start`.
    pub fn push_older(&mut self, older: Vec<Item>, start: u64) {
        self.want_older = false;
        if older.is_empty() || start == 0 {
            self.older_exhausted = true;
        }
        self.origin = Some(start);
        let room = MAX_KEPT.saturating_sub(self.items.len());
        if older.len() > room {
            self.older_exhausted = true;
            self.status = Some(format!(
                "{MAX_KEPT} rows are kept in memory; older ones are not loaded"
            ));
        }
        let skip = older.len().saturating_sub(room);
        let older: Vec<Item> = older.into_iter().skip(skip).collect();
        for item in older.iter().rev() {
            self.count(item);
            self.items.push_front(item.clone());
            self.first_seq = self.first_seq.wrapping_sub(1);
        }
        self.refilter();
    }

    fn count(&mut self, item: &Item) {
        match item {
            Item::Message(m) => {
                self.messages += 1;
                let room = if m.is_whisper() {
                    "whisper".to_string()
                } else {
                    format!("#{}", clean(&m.room))
                };
                self.room_width = self
                    .room_width
                    .max(text::width(&room).min(ROOM_COLUMNS.end));
                let mut who = String::new();
                crate::viewer::plain::push_who_label(&mut who, &m.borrowed());
                self.who_width = self.who_width.max(text::width(&who).min(WHO_COLUMNS.end));
                if !m.is_whisper() {
                    let folded = names::fold(&m.room);
                    if !self.rooms.iter().any(|r| names::fold(r) == folded) {
                        self.rooms.push(m.room.clone());
                    }
                }
            }
            Item::Malformed(_) => self.malformed += 1,
        }
    }

    fn passes(&self, item: &Item) -> bool {
        match item {
            Item::Message(m) => self.filter.matches(&m.borrowed()),
            Item::Malformed(_) => self.filter.is_empty(),
        }
    }

    fn get(&self, seq: u64) -> Option<&Item> {
        self.items.get(seq.wrapping_sub(self.first_seq) as usize)
    }

    fn refilter(&mut self) {
        self.shown = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, item)| self.passes(item))
            .map(|(i, _)| self.first_seq.wrapping_add(i as u64))
            .collect();
    }

    fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
        self.scroll = 0;
        self.older_exhausted = self.origin == Some(0);
        self.refilter();
    }

    /// Handles one key.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        let page = (self.body.height as usize).saturating_sub(1).max(1);
        match &mut self.input {
            Input::None => match key.code {
                KeyCode::Char('q') => return Action::Quit,
                KeyCode::Up | KeyCode::Char('k') => self.scroll += 1,
                KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_sub(1),
                KeyCode::PageUp | KeyCode::Char('b') => self.scroll += page,
                KeyCode::PageDown | KeyCode::Char(' ') => {
                    self.scroll = self.scroll.saturating_sub(page)
                }
                KeyCode::Home | KeyCode::Char('g') => self.scroll = usize::MAX / 2,
                KeyCode::End | KeyCode::Char('G') => self.scroll = 0,
                KeyCode::Char('r') => {
                    self.input = Input::Room(self.filter.room().unwrap_or("").to_string())
                }
                KeyCode::Char('/') => {
                    self.input = Input::Search(self.filter.search().unwrap_or("").to_string())
                }
                KeyCode::Tab => self.next_room(1),
                KeyCode::BackTab => self.next_room(-1),
                KeyCode::Esc => {
                    self.status = None;
                    self.set_filter(Filter::default());
                }
                _ => {}
            },
            Input::Room(typed) | Input::Search(typed) => match key.code {
                KeyCode::Esc => self.input = Input::None,
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char(c) if !c.is_control() => typed.push(c),
                KeyCode::Enter => {
                    let input = std::mem::replace(&mut self.input, Input::None);
                    let filter = self.filter.clone();
                    self.set_filter(match &input {
                        Input::Room(room) => filter.with_room(Some(room)),
                        Input::Search(search) => filter.with_search(Some(search)),
                        Input::None => filter,
                    });
                }
                _ => {}
            },
        }
        Action::Continue
    }

    /// Shows the next (or previous) room seen, and all rooms after the last.
    fn next_room(&mut self, step: isize) {
        let current = self
            .filter
            .room()
            .and_then(|r| {
                let folded = names::fold(r);
                self.rooms.iter().position(|x| names::fold(x) == folded)
            })
            .map_or(-1, |i| i as isize);
        let count = self.rooms.len() as isize + 1; // the rooms, then "all"
        let next = (current + 1 + step).rem_euclid(count) - 1;
        let room = usize::try_from(next)
            .ok()
            .and_then(|i| self.rooms.get(i))
            .cloned();
        let filter = self.filter.clone().with_room(room.as_deref());
        self.set_filter(filter);
    }

    /// Draws the view: a title bar, the messages (newest at the bottom), and
    /// a bottom line with the keys or what is being typed.
    pub fn render(&mut self, frame: &mut Frame<'_>) {
        let [top, body, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.body = body;
        let lines = self.visible_lines(body.width as usize, body.height as usize);
        frame.render_widget(Paragraph::new(lines), body);
        frame.render_widget(
            Paragraph::new(self.title_line()).style(Style::new().add_modifier(Modifier::REVERSED)),
            top,
        );
        frame.render_widget(Paragraph::new(self.bottom_line()), bottom);
    }

    /// The lines of the message area, scrolled; notes when older rows are wanted.
    fn visible_lines(&mut self, width: usize, height: usize) -> Vec<Line<'static>> {
        let want = self.scroll.saturating_add(height);
        let mut reversed: Vec<Line<'static>> = Vec::new();
        let mut k = self.shown.len();
        while k > 0 && reversed.len() < want {
            k -= 1;
            let Some(item) = self.get(self.shown[k]) else {
                continue;
            };
            let prev = match k.checked_sub(1) {
                Some(p) => self.shown.get(p).and_then(|&s| self.get(s)),
                // The row before the oldest loaded is not known yet: no date
                // line until it is, or until it is known there is none.
                None if !self.older_exhausted => Some(item),
                None => None,
            };
            let lines = self.lines_for(item, prev, width);
            reversed.extend(lines.into_iter().rev());
        }
        let at_top = k == 0 && reversed.len() <= want;
        let mut scroll = self.scroll;
        if at_top {
            let highest = reversed.len().saturating_sub(height);
            self.want_older = !self.older_exhausted && !self.waiting;
            scroll = highest;
            // A line or a page past the top is kept while older rows load, so
            // the key is not lost; Home (far past it) stops at the top.
            if !self.want_older || self.scroll > highest + height {
                self.scroll = highest;
            }
        }
        let end = reversed.len().min(scroll + height);
        let mut lines: Vec<Line<'static>> = reversed[scroll.min(end)..end]
            .iter()
            .rev()
            .cloned()
            .collect();
        if !lines.is_empty() {
            // Newest at the bottom, as in a chat, even when the rows are few.
            let blank = height.saturating_sub(lines.len());
            lines.splice(0..0, std::iter::repeat_n(Line::raw(""), blank));
        } else {
            lines.push(Line::styled(
                if self.waiting {
                    format!("waiting for {} to appear…", self.title)
                } else if self.filter.is_empty() {
                    "no messages yet".to_string()
                } else {
                    "no messages match; Esc clears the room and search".to_string()
                },
                Style::new().fg(Color::DarkGray),
            ));
        }
        lines
    }

    /// The screen lines of one row: a date line when the day changes, then
    /// the row, its text wrapped under its own column.
    fn lines_for(&self, item: &Item, prev: Option<&Item>, width: usize) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        if let Some(date) = item.date()
            && prev.and_then(Item::date) != Some(date)
        {
            let rule = "─".repeat(width.saturating_sub(date.len() + 6).min(60) / 2);
            lines.push(Line::styled(
                format!("{rule}  {date}  {rule}"),
                Style::new().fg(Color::DarkGray),
            ));
        }
        match item {
            Item::Malformed(m) => {
                let report = m.to_string();
                for range in text::wrap(&report, width.max(1)) {
                    lines.push(Line::styled(
                        report[range].to_string(),
                        Style::new().fg(Color::Red),
                    ));
                }
            }
            Item::Message(m) => self.message_lines(m, width, &mut lines),
        }
        lines
    }

    fn message_lines(&self, m: &Message, width: usize, lines: &mut Vec<Line<'static>>) {
        let whisper = m.is_whisper();
        let room = if whisper {
            "whisper".to_string()
        } else {
            format!("#{}", clean(&m.room))
        };
        let mut who = String::new();
        crate::viewer::plain::push_who_label(&mut who, &m.borrowed());
        let mut prefix = vec![
            Span::styled(m.time.clock().to_string(), Style::new().fg(Color::DarkGray)),
            Span::raw(" "),
        ];
        let room_style = if whisper {
            Style::new()
                .fg(Color::Magenta)
                .add_modifier(Modifier::ITALIC)
        } else {
            Style::new().fg(Color::Cyan)
        };
        prefix.push(Span::styled(
            padded(&text::truncate(&room, self.room_width), self.room_width),
            room_style,
        ));
        prefix.push(Span::raw(" "));
        prefix.push(Span::styled(
            padded(&text::truncate(&who, self.who_width), self.who_width),
            Style::new()
                .fg(sender_colour(&m.sender))
                .add_modifier(Modifier::BOLD),
        ));
        prefix.push(Span::raw(" "));
        let prefix_width = 8 + 1 + self.room_width + 1 + self.who_width + 1;
        let body = clean(&m.text);
        let text_style = if whisper {
            Style::new().fg(Color::Magenta)
        } else {
            Style::new()
        };
        let matches = self
            .filter
            .search_folded()
            .map(|needle| find_all(&body, needle))
            .unwrap_or_default();
        let (indent, columns) = if width >= prefix_width + MIN_TEXT_COLUMNS {
            (prefix_width, width - prefix_width)
        } else {
            lines.push(Line::from(prefix.clone()));
            prefix.clear();
            (2, width.saturating_sub(2).max(1))
        };
        for (i, range) in text::wrap(&body, columns).into_iter().enumerate() {
            let mut spans = if i == 0 && !prefix.is_empty() {
                std::mem::take(&mut prefix)
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            spans.extend(highlighted(&body, range, &matches, text_style));
            lines.push(Line::from(spans));
        }
    }

    fn title_line(&self) -> Line<'static> {
        let mut parts = vec![format!(" {}", self.title)];
        // The state first: it must survive a narrow window.
        parts.push(if self.waiting {
            "waiting for the file".into()
        } else if self.scroll > 0 {
            format!("scrolled up {} lines", self.scroll)
        } else {
            "live".into()
        });
        if let Some(status) = &self.status {
            parts.push(status.clone());
        }
        parts.push(match self.filter.room() {
            Some(typed) => {
                // The room as the server spells it, once a message shows it.
                let folded = names::fold(typed);
                let known = self.rooms.iter().find(|r| names::fold(r) == folded);
                format!("room #{}", known.map_or(typed, String::as_str))
            }
            None => "all rooms".into(),
        });
        if let Some(search) = self.filter.search() {
            parts.push(format!("search {search:?}"));
        }
        if self.filter.is_empty() {
            parts.push(format!("{} messages loaded", self.messages));
        } else {
            let shown = self
                .shown
                .iter()
                .filter(|&&seq| matches!(self.get(seq), Some(Item::Message(_))))
                .count();
            parts.push(format!("{shown} of {} messages loaded", self.messages));
        }
        if self.malformed > 0 {
            parts.push(format!("{} malformed", self.malformed));
        }
        Line::raw(parts.join(" · "))
    }

    fn bottom_line(&self) -> Line<'static> {
        let key = Style::new().add_modifier(Modifier::BOLD);
        let typing = |label: &str, typed: &str| {
            Line::from(vec![
                Span::styled(format!("{label}: "), key),
                Span::raw(typed.to_string()),
                Span::styled("▏", Style::new().add_modifier(Modifier::SLOW_BLINK)),
                Span::styled(
                    "   Enter apply · empty clears · Esc cancel",
                    Style::new().fg(Color::DarkGray),
                ),
            ])
        };
        match &self.input {
            Input::Room(typed) => typing("room", typed),
            Input::Search(typed) => typing("search", typed),
            Input::None => {
                let mut spans = Vec::new();
                for (k, what) in [
                    ("q", "quit"),
                    ("↑↓ PgUp PgDn Home End", "scroll"),
                    ("r", "room"),
                    ("Tab", "next room"),
                    ("/", "search"),
                    ("Esc", "clear"),
                ] {
                    spans.push(Span::styled(k, key));
                    spans.push(Span::styled(
                        format!(" {what}  "),
                        Style::new().fg(Color::DarkGray),
                    ));
                }
                Line::from(spans)
            }
        }
    }
}

fn padded(s: &str, columns: usize) -> String {
    let mut out = String::with_capacity(columns);
    text::push_padded(&mut out, s, columns);
    out
}

/// A colour per sender, the same every time, so a conversation is easy to follow.
fn sender_colour(name: &str) -> Color {
    const PALETTE: [Color; 6] = [
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::LightCyan,
        Color::LightGreen,
        Color::LightBlue,
    ];
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    names::fold(name).hash(&mut hasher);
    PALETTE[(hasher.finish() % PALETTE.len() as u64) as usize]
}

/// Byte ranges of `text` where `needle` (lower case) occurs, ignoring case;
/// empty when lower-casing changes byte lengths (then nothing is highlighted).
fn find_all(text: &str, needle: &str) -> Vec<Range<usize>> {
    let lower = text.to_lowercase();
    if needle.is_empty() || lower.len() != text.len() {
        return Vec::new();
    }
    lower
        .match_indices(needle)
        .filter(|(i, _)| text.is_char_boundary(*i) && text.is_char_boundary(i + needle.len()))
        .map(|(i, m)| i..i + m.len())
        .collect()
}

/// The spans of `text[range]`, with the parts inside `matches` highlighted.
fn highlighted(
    text: &str,
    range: Range<usize>,
    matches: &[Range<usize>],
    style: Style,
) -> Vec<Span<'static>> {
    let mark = Style::new().fg(Color::Black).bg(Color::Yellow);
    let mut spans = Vec::new();
    let mut at = range.start;
    for m in matches {
        let start = m.start.max(range.start);
        let end = m.end.min(range.end);
        if start >= end || start < at {
            continue;
        }
        if start > at {
            spans.push(Span::styled(text[at..start].to_string(), style));
        }
        spans.push(Span::styled(text[start..end].to_string(), mark));
        at = end;
    }
    if at < range.end || spans.is_empty() {
        spans.push(Span::styled(text[at..range.end].to_string(), style));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::row::Stamp;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn message(id: u64, day: u32, room: &str, sender: &str, recipient: &str, text: &str) -> Item {
        Item::Message(Message {
            offset: id * 100,
            id,
            time: Stamp::parse(&format!("2026-11-{day:02}T18:05:{:02}.000+00:00", id % 60))
                .unwrap(),
            room: room.into(),
            sender: sender.into(),
            recipient: recipient.into(),
            text: text.into(),
        })
    }

    fn screen(app: &mut App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| app.render(f)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    fn chat(rows: usize) -> App {
        let mut app = App::new("messages.csv", Filter::default());
        app.opened(0);
        for i in 1..=rows as u64 {
            let room = if i % 3 == 0 { "dev" } else { "general" };
            app.push(message(i, 21, room, "alice", "", &format!("message {i}")));
        }
        app
    }

    #[test]
    fn the_newest_message_is_at_the_bottom_with_time_room_and_sender() {
        let mut app = chat(30);
        let lines = screen(&mut app, 70, 8);
        assert!(
            lines[0].contains("messages.csv · live · all rooms · 30 messages loaded"),
            "{lines:#?}"
        );
        assert_eq!(
            lines[6], "18:05:30 #dev     alice  message 30",
            "{lines:#?}"
        );
        assert_eq!(lines[5], "18:05:29 #general alice  message 29");
        assert!(lines[7].starts_with("q quit"), "{lines:#?}");
    }

    #[test]
    fn whispers_are_marked_and_name_their_recipient() {
        let mut app = chat(2);
        app.push(message(3, 21, "", "bob", "alice", "psst"));
        let lines = screen(&mut app, 70, 8);
        assert_eq!(lines[6], "18:05:03 whisper  bob → alice psst", "{lines:#?}");
    }

    #[test]
    fn a_long_message_wraps_under_its_text_column() {
        let mut app = App::new("messages.csv", Filter::default());
        app.opened(0);
        app.push(message(
            1,
            21,
            "general",
            "alice",
            "",
            "one two three four five six seven eight nine ten eleven twelve",
        ));
        let lines = screen(&mut app, 50, 8);
        assert_eq!(
            &lines[4..7],
            [
                "18:05:01 #general alice  one two three four five",
                "                         six seven eight nine ten",
                "                         eleven twelve",
            ],
            "{lines:#?}"
        );
    }

    #[test]
    fn arrows_and_pages_scroll_and_end_follows_again() {
        let mut app = chat(30);
        screen(&mut app, 70, 8);
        app.key(KeyEvent::from(KeyCode::Up));
        let lines = screen(&mut app, 70, 8);
        assert!(lines[6].ends_with("message 29"), "{lines:#?}");
        assert!(lines[0].contains("scrolled up 1 lines"));
        // New rows do not move a scrolled view.
        app.push(message(31, 21, "general", "alice", "", "message 31"));
        assert!(screen(&mut app, 70, 8)[6].ends_with("message 29"));
        app.key(KeyEvent::from(KeyCode::PageUp));
        assert!(screen(&mut app, 70, 8)[6].ends_with("message 24"));
        app.key(KeyEvent::from(KeyCode::End));
        assert!(screen(&mut app, 70, 8)[6].ends_with("message 31"));
        app.key(KeyEvent::from(KeyCode::Home));
        let top = screen(&mut app, 70, 8);
        assert!(top[2].ends_with("message 1"), "{top:#?}");
    }

    #[test]
    fn the_room_filter_is_typed_or_cycled_while_it_runs() {
        let mut app = chat(9);
        for key in [KeyCode::Char('r'), KeyCode::Char('d'), KeyCode::Char('e')] {
            app.key(KeyEvent::from(key));
        }
        let typing = screen(&mut app, 70, 8);
        assert!(typing[7].starts_with("room: de▏"), "{typing:#?}");
        app.key(KeyEvent::from(KeyCode::Char('v')));
        app.key(KeyEvent::from(KeyCode::Enter));
        let lines = screen(&mut app, 70, 8);
        assert!(
            lines[0].contains("room #dev · 3 of 9 messages loaded"),
            "{lines:#?}"
        );
        assert!(lines[6].ends_with("message 9") && lines[5].ends_with("message 6"));
        assert!(lines.iter().all(|l| !l.contains("#general")));
        // Tab goes to the next room seen (dev → all), Shift-Tab back.
        app.key(KeyEvent::from(KeyCode::Tab));
        assert!(screen(&mut app, 70, 8)[0].contains("all rooms"));
        app.key(KeyEvent::from(KeyCode::Tab));
        assert!(screen(&mut app, 70, 8)[0].contains("room #general"));
    }

    #[test]
    fn a_search_shows_only_matching_messages_and_esc_clears_it() {
        let mut app = chat(12);
        app.key(KeyEvent::from(KeyCode::Char('/')));
        for c in "MESSAGE 1".chars() {
            app.key(KeyEvent::from(KeyCode::Char(c)));
        }
        app.key(KeyEvent::from(KeyCode::Enter));
        let lines = screen(&mut app, 70, 8);
        assert!(lines[0].contains("search \"MESSAGE 1\""), "{lines:#?}");
        let shown: Vec<&String> = lines[1..7]
            .iter()
            .filter(|l| l.contains("message"))
            .collect();
        assert_eq!(shown.len(), 4, "{lines:#?}"); // 1, 10, 11, 12
        app.key(KeyEvent::from(KeyCode::Esc));
        assert!(screen(&mut app, 70, 8)[0].contains("all rooms · 12 messages loaded"));
    }

    #[test]
    fn a_new_day_gets_a_date_line() {
        let mut app = App::new("messages.csv", Filter::default());
        app.opened(0);
        app.push(message(1, 21, "general", "alice", "", "late"));
        app.push(message(2, 22, "general", "bob", "", "early"));
        let lines = screen(&mut app, 60, 8);
        assert!(lines[5].contains("2026-11-22"), "{lines:#?}");
        assert!(lines[3].contains("2026-11-21"), "{lines:#?}");
    }

    #[test]
    fn malformed_rows_are_shown_as_such() {
        let mut app = chat(1);
        app.push(Item::Malformed(Malformed {
            offset: 4242,
            problem: crate::viewer::row::Problem::Columns {
                found: 2,
                expected: 6,
            },
            excerpt: "oops,row".into(),
        }));
        let lines = screen(&mut app, 80, 6);
        assert_eq!(
            lines[4],
            "[malformed row at byte 4242: 2 columns instead of 6: oops,row]"
        );
        assert!(lines[0].contains("1 malformed"));
    }

    #[test]
    fn scrolling_past_the_oldest_row_asks_for_older_ones() {
        let mut app = App::new("messages.csv", Filter::default());
        app.opened(5000);
        for i in 50..=60 {
            app.push(message(
                i,
                21,
                "general",
                "alice",
                "",
                &format!("message {i}"),
            ));
        }
        screen(&mut app, 70, 8);
        assert!(!app.wants_older());
        app.key(KeyEvent::from(KeyCode::PageUp));
        app.key(KeyEvent::from(KeyCode::PageUp));
        screen(&mut app, 70, 8);
        assert!(app.wants_older());
        assert_eq!(app.older_before(), Some(5000));
        let older = (40..50)
            .map(|i| message(i, 21, "general", "alice", "", &format!("message {i}")))
            .collect();
        app.push_older(older, 4000);
        assert!(!app.wants_older());
        app.key(KeyEvent::from(KeyCode::Home));
        let lines = screen(&mut app, 70, 8);
        assert!(lines[1].ends_with("message 40"), "{lines:#?}");
        assert!(app.wants_older());
        app.push_older(Vec::new(), 0);
        screen(&mut app, 70, 8);
        assert!(!app.wants_older());
    }

    #[test]
    fn the_view_waits_for_a_missing_file() {
        let mut app = App::new("/tmp/x/messages.csv", Filter::default());
        let lines = screen(&mut app, 70, 6);
        assert!(
            lines[1].contains("waiting for /tmp/x/messages.csv to appear"),
            "{lines:#?}"
        );
        assert!(lines[0].contains("waiting for the file"));
    }
}

//! `list_messages`: `messages.csv` as a chat, full-screen on a terminal,
//! plain lines anywhere else.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use crate::rows::{MESSAGE_COLUMNS, MESSAGES_FILE};
use crate::viewer::filter::Filter;
use crate::viewer::row::{Parsed, check_header, parse_message_ref};
use crate::viewer::screen::App;
use crate::viewer::tail::{RowFilter, Start, Tail, TailEvent};
use crate::viewer::{
    Count, Mode, ViewError, live, plain, plain_start, print_plain, screenful, terminal_width,
};

/// Lines of the full-screen view that are not messages (title and keys).
const SCREEN_CHROME: u16 = 2;

/// What `list_messages` was asked for.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Only this room's messages.
    pub room: Option<String>,
    /// Only messages containing this text (any case).
    pub grep: Option<String>,
    /// How many rows to show first.
    pub tail: Option<Count>,
    /// Follow or not.
    pub mode: Mode,
    /// Plain lines even on a terminal.
    pub plain: bool,
}

/// Runs `list_messages`.
pub fn list_messages(options: ListOptions) -> Result<(), ViewError> {
    let path = options.data_dir.join(MESSAGES_FILE);
    let filter = Filter::default()
        .with_room(options.room.as_deref())
        .with_search(options.grep.as_deref());
    let on_terminal = io::stdout().is_terminal();
    let full_screen =
        !options.plain && options.mode != Mode::Once && on_terminal && io::stdin().is_terminal();
    if full_screen {
        let start = match options.tail {
            Some(Count::Rows(n)) => Start::LastRows(n),
            Some(Count::All) => Start::Beginning,
            None => Start::LastRows(screenful(SCREEN_CHROME)),
        };
        let mut tail = Tail::new(&path, start).with_filter(row_filter(&filter));
        let mut app = App::new(path.display().to_string(), filter);
        return live::run(&mut tail, &mut app);
    }
    let follow = match options.mode {
        Mode::Follow => true,
        Mode::Once => false,
        Mode::Auto => on_terminal,
    };
    let start = plain_start(options.tail, follow, screenful(1));
    let mut tail = Tail::new(&path, start).with_filter(row_filter(&filter));
    let wrap = terminal_width();
    let mut out = io::stdout().lock();
    let shown = path.display().to_string();
    print_plain(&mut tail, follow, &mut out, &mut |event, buf| {
        plain_message_lines(event, &filter, wrap, &shown, buf)
    })
}

/// Counts, for `--tail`, the rows the filter shows (malformed rows only
/// without a filter, as they are shown only then).
pub fn row_filter(filter: &Filter) -> RowFilter {
    if filter.is_empty() {
        return Box::new(|_| true);
    }
    let filter = filter.clone();
    Box::new(move |row| matches!(parse_message_ref(row), Parsed::Row(m) if filter.matches(&m)))
}

/// Formats one event of `messages.csv` as plain lines into `buf`.
pub fn plain_message_lines(
    event: TailEvent<'_>,
    filter: &Filter,
    wrap: Option<usize>,
    file: &str,
    buf: &mut String,
) {
    match event {
        TailEvent::Header(row) => {
            if check_header(&row, &MESSAGE_COLUMNS).is_some() {
                eprintln!(
                    "warning: {file} does not start with the header of messages.csv; is it the right file?"
                );
            }
        }
        TailEvent::Row(row) => match parse_message_ref(&row) {
            Parsed::Row(m) => {
                if filter.matches(&m) {
                    plain::message(buf, &m, wrap);
                }
            }
            Parsed::Malformed(bad) => {
                if filter.is_empty() {
                    plain::malformed(buf, &bad, false);
                }
            }
        },
        TailEvent::Opened { .. } | TailEvent::Restarted(_) => {}
    }
}

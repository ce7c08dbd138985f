//! The viewer side: `list_messages` shows `messages.csv` as a chat,
//! `message_logs` shows `data.csv` as a live log. Both read through [`tail`], so both
//! start at the end of a big file, follow it by offset, wait for half-written
//! rows, and start over when the file is truncated or replaced.
//!
//! - [`tail`] follows a CSV file by byte offset (half-written rows wait for
//!   their line end; truncation, replacement and a late file are handled) and
//!   finds the last N rows of a big file by scanning back from its end.
//! - [`row`] turns raw rows into typed [`row::Message`]s and [`row::Event`]s,
//!   or [`row::Malformed`] reports.
//! - [`text`] cleans, measures and wraps text for the terminal.
//! - [`plain`] formats rows as plain lines for pipes and scripts.
//! - [`filter`] decides which messages are shown (room, search).
//! - [`screen`] is the full-screen chat view (state, keys, drawing); [`live`]
//!   runs it on the real terminal.
//! - [`messages`] and [`logs`] are the two programs, called by their thin binaries.
//! - [`stats`] is the summary line of `message_logs --stats`.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tail::{Restart, Tail, TailEvent};

pub mod filter;
pub mod live;
pub mod logs;
pub mod messages;
pub mod plain;
pub mod row;
pub mod screen;
pub mod stats;
pub mod tail;
pub mod text;

/// How often a follower looks at the file again when nothing was new: short
/// enough to feel live, long enough to cost nothing.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Bytes read between two writes of plain output: bounds the memory of a
/// streaming read and lets a closed pipe stop it early.
pub const PLAIN_BUDGET: u64 = 4 << 20;

/// Rows shown before following when neither `--tail` nor a window says how many.
pub const DEFAULT_TAIL: usize = 50;

/// How many rows to show first (`--tail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The last N rows.
    Rows(usize),
    /// The whole file.
    All,
}

impl FromStr for Count {
    type Err = String;

    fn from_str(s: &str) -> Result<Count, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Count::All);
        }
        s.parse()
            .map(Count::Rows)
            .map_err(|_| format!("{s:?} is not a number of rows (or `all`)"))
    }
}

/// Whether to keep reading once the end of the file is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Follow on a terminal, stop at the end otherwise.
    Auto,
    /// Print what is there and exit (`--once`).
    Once,
    /// Keep printing new rows as they come (`--follow`).
    Follow,
}

impl Mode {
    /// The mode the `--follow` and `--once` flags ask for.
    pub fn from_flags(follow: bool, once: bool) -> Mode {
        match (follow, once) {
            (true, _) => Mode::Follow,
            (_, true) => Mode::Once,
            _ => Mode::Auto,
        }
    }
}

/// A failure of a viewer, reported once, in one line.
#[derive(Debug)]
pub enum ViewError {
    /// `--once` and the file is not there.
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// The file is there but cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The terminal could not be set up or drawn on.
    Terminal(io::Error),
    /// Standard output failed (other than a closed pipe, which ends quietly).
    Output(io::Error),
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewError::Missing { path } => write!(
                f,
                "{} does not exist; pass the server's --data-dir with --data-dir DIR, or --follow to wait for it",
                path.display()
            ),
            ViewError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ViewError::Terminal(source) => write!(
                f,
                "the terminal cannot show the full-screen view ({source}); use --once or --plain for plain lines"
            ),
            ViewError::Output(source) => write!(f, "cannot write the output: {source}"),
        }
    }
}

impl std::error::Error for ViewError {}

/// Where a plain viewer starts, from `--tail` and whether it follows:
/// `--once` without `--tail` reads the whole file; following starts with the
/// last `screenful` rows.
pub fn plain_start(
    count: Option<Count>,
    follow: bool,
    screenful: usize,
) -> crate::viewer::tail::Start {
    use crate::viewer::tail::Start;
    match (count, follow) {
        (Some(Count::Rows(n)), _) => Start::LastRows(n),
        (Some(Count::All), _) | (None, false) => Start::Beginning,
        (None, true) => Start::LastRows(screenful),
    }
}

/// Rows that fit the terminal (less `reserved` lines), or [`DEFAULT_TAIL`]
/// when there is no terminal.
pub fn screenful(reserved: u16) -> usize {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        // The size would be the controlling terminal's, not the output's.
        return DEFAULT_TAIL;
    }
    match crossterm::terminal::size() {
        Ok((_, rows)) if rows > reserved => usize::from(rows - reserved),
        _ => DEFAULT_TAIL,
    }
}

/// Columns of the terminal standard output is, if it is one.
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        return None;
    }
    crossterm::terminal::size()
        .ok()
        .map(|(cols, _)| usize::from(cols))
        .filter(|&c| c > 0)
}

/// Prints rows of `tail` as plain lines: `on_row` formats each data row (or
/// the header) into the buffer it is given. Ends at the end of the file, or,
/// with `follow`, never (until the output is closed).
pub fn print_plain(
    tail: &mut Tail,
    follow: bool,
    out: &mut dyn Write,
    on_row: &mut dyn FnMut(TailEvent<'_>, &mut String),
) -> Result<(), ViewError> {
    let mut buf = String::new();
    let mut said_waiting = false;
    let path = tail.path().to_path_buf();
    loop {
        let progress = tail
            .poll(PLAIN_BUDGET, &mut |event| match event {
                TailEvent::Restarted(why) => {
                    let what = match why {
                        Restart::Truncated => "was truncated",
                        Restart::Replaced => "was replaced",
                    };
                    eprintln!("{} {what}; reading it from the start", path.display());
                }
                TailEvent::Opened { .. } => {}
                event => on_row(event, &mut buf),
            })
            .map_err(|source| ViewError::Read {
                path: tail.path().to_path_buf(),
                source,
            })?;
        if !tail.is_open() {
            if !follow {
                return Err(ViewError::Missing {
                    path: tail.path().to_path_buf(),
                });
            }
            if !said_waiting {
                eprintln!("waiting for {} to appear…", tail.path().display());
                said_waiting = true;
            }
        }
        if !buf.is_empty() {
            if let Err(e) = out.write_all(buf.as_bytes()) {
                return closed_pipe_is_fine(e);
            }
            buf.clear();
        }
        if progress.more {
            continue;
        }
        if let Err(e) = out.flush() {
            return closed_pipe_is_fine(e);
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A reader that went away (`| head`) ends the output quietly; anything else is an error.
fn closed_pipe_is_fine(e: io::Error) -> Result<(), ViewError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(ViewError::Output(e))
    }
}

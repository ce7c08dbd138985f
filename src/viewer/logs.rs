//! `message_logs`: `data.csv` as a live log, one line per connection event,
//! coloured by kind on a terminal; or, with `--stats`, one summary line.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::names;
use crate::rows::{EVENT_COLUMNS, EVENTS_FILE, MESSAGES_FILE};
use crate::viewer::row::{Event, Parsed, check_header, parse_event, parse_message_ref};
use crate::viewer::stats::Stats;
use crate::viewer::tail::{RowFilter, Start, Tail, TailEvent};
use crate::viewer::{
    Count, Mode, PLAIN_BUDGET, POLL_INTERVAL, ViewError, plain, plain_start, print_plain, screenful,
};

/// What `message_logs` was asked for.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// How many rows to show first.
    pub tail: Option<Count>,
    /// Follow or not.
    pub mode: Mode,
    /// Only events of this user (any case).
    pub name: Option<String>,
    /// Only events from this address.
    pub ip: Option<String>,
    /// Print the summary line instead of the log.
    pub stats: bool,
}

/// Which events are shown: `--name` and `--ip`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    name: Option<String>,
    ip: Option<String>,
}

impl EventFilter {
    /// A filter on a name (case-insensitive) and an address (`::1` or `[::1]`).
    pub fn new(name: Option<&str>, ip: Option<&str>) -> EventFilter {
        EventFilter {
            name: name.filter(|n| !n.is_empty()).map(names::fold),
            ip: ip
                .filter(|i| !i.is_empty())
                .map(|i| i.trim_start_matches('[').trim_end_matches(']').to_string()),
        }
    }

    /// True when it lets everything through.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.ip.is_none()
    }

    /// True when `e` is to be shown. Rows without a name (a `connect`, before
    /// the user named themselves) do not match a name.
    pub fn matches(&self, e: &Event) -> bool {
        self.name
            .as_ref()
            .is_none_or(|n| names::fold(&e.name) == *n)
            && self.ip.as_ref().is_none_or(|ip| e.ip == *ip)
    }

    fn rows(&self) -> RowFilter {
        if self.is_empty() {
            return Box::new(|_| true);
        }
        let filter = self.clone();
        Box::new(move |row| matches!(parse_event(row), Parsed::Row(e) if filter.matches(&e)))
    }
}

/// True when lines may be coloured: a terminal, and `NO_COLOR` unset or empty.
pub fn use_colour() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs `message_logs`.
pub fn message_logs(options: LogOptions) -> Result<(), ViewError> {
    let on_terminal = io::stdout().is_terminal();
    let follow = match options.mode {
        Mode::Follow => true,
        Mode::Once => false,
        Mode::Auto => on_terminal && !options.stats,
    };
    let mut out = io::stdout().lock();
    if options.stats {
        return print_stats(&options.data_dir, follow, &mut out);
    }
    let path = options.data_dir.join(EVENTS_FILE);
    let filter = EventFilter::new(options.name.as_deref(), options.ip.as_deref());
    let start = plain_start(options.tail, follow, screenful(1));
    let mut tail = Tail::new(&path, start).with_filter(filter.rows());
    let colour = use_colour();
    let shown = path.display().to_string();
    print_plain(&mut tail, follow, &mut out, &mut |event, buf| match event {
        TailEvent::Header(row) => {
            if check_header(&row, &EVENT_COLUMNS).is_some() {
                eprintln!(
                    "warning: {shown} does not start with the header of data.csv; is it the right file?"
                );
            }
        }
        TailEvent::Row(row) => match parse_event(&row) {
            Parsed::Row(e) => {
                if filter.matches(&e) {
                    plain::event(buf, &e, colour);
                }
            }
            Parsed::Malformed(bad) => {
                if filter.is_empty() {
                    plain::malformed(buf, &bad, colour);
                }
            }
        },
        TailEvent::Opened { .. } | TailEvent::Restarted(_) => {}
    })
}

/// Reads both files whole (streaming) into `stats`; with `follow`, keeps
/// reading and prints a new line whenever the summary changes.
fn print_stats(dir: &Path, follow: bool, out: &mut dyn Write) -> Result<(), ViewError> {
    let mut events = Tail::new(dir.join(EVENTS_FILE), Start::Beginning);
    let mut messages = Tail::new(dir.join(MESSAGES_FILE), Start::Beginning);
    let mut stats = Stats::default();
    let mut last = String::new();
    loop {
        read_all(&mut events, &mut stats, |stats, event| match event {
            TailEvent::Row(row) => match parse_event(&row) {
                Parsed::Row(e) => stats.add_event(&e),
                Parsed::Malformed(_) => stats.add_malformed(),
            },
            TailEvent::Restarted(_) => stats.reset_events(),
            TailEvent::Header(_) | TailEvent::Opened { .. } => {}
        })?;
        read_all(&mut messages, &mut stats, |stats, event| match event {
            TailEvent::Row(row) => match parse_message_ref(&row) {
                Parsed::Row(m) => stats.add_message(&m),
                Parsed::Malformed(_) => stats.add_malformed(),
            },
            TailEvent::Restarted(_) => stats.reset_messages(),
            TailEvent::Header(_) | TailEvent::Opened { .. } => {}
        })?;
        if !follow && !events.is_open() {
            return Err(ViewError::Missing {
                path: events.path().to_path_buf(),
            });
        }
        let line = stats.line();
        if line != last {
            let written = writeln!(out, "{line}").and_then(|()| out.flush());
            if let Err(e) = written {
                return if e.kind() == io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(ViewError::Output(e))
                };
            }
            last = line;
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn read_all(
    tail: &mut Tail,
    stats: &mut Stats,
    mut on: impl FnMut(&mut Stats, TailEvent<'_>),
) -> Result<(), ViewError> {
    loop {
        let progress = tail
            .poll(PLAIN_BUDGET, &mut |event| on(stats, event))
            .map_err(|source| ViewError::Read {
                path: tail.path().to_path_buf(),
                source,
            })?;
        if !progress.more {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::row::Stamp;

    fn event(name: &str, ip: &str) -> Event {
        Event {
            offset: 1,
            time: Stamp::parse("2026-11-21T18:05:09.123+00:00").unwrap(),
            ip: ip.into(),
            port: 4000,
            thread: 1,
            name: name.into(),
            kind: "login".into(),
        }
    }

    #[test]
    fn name_and_ip_filters_narrow_the_log() {
        let by_name = EventFilter::new(Some("ALICE"), None);
        assert!(by_name.matches(&event("alice", "::1")));
        assert!(!by_name.matches(&event("bob", "::1")));
        assert!(!by_name.matches(&event("", "::1")));
        let by_ip = EventFilter::new(None, Some("[::1]"));
        assert!(by_ip.matches(&event("bob", "::1")));
        assert!(!by_ip.matches(&event("bob", "127.0.0.1")));
        assert!(EventFilter::new(Some(""), None).is_empty());
    }
}

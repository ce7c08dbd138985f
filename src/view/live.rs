//! The terminal side of the full-screen view: take the terminal over, feed
//! the [`App`] rows from the tail and keys from the user, draw, and give the
//! terminal back exactly as it was, on every way out (`q`, Ctrl-C, SIGTERM,
//! an error, a panic).

use std::io::{self, Stdout};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::cursor::{Hide, Show};
use crossterm::event::{self, Event as TermEvent};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use crate::store::MESSAGE_COLUMNS;
use crate::tail::{Progress, Tail, TailEvent};
use crate::view::row::{Parsed, check_header, parse_message, parse_message_ref};
use crate::view::screen::{Action, App, Item, OLDER_PAGE};
use crate::view::{POLL_INTERVAL, ViewError};

/// Bytes read from the file between two looks at the keyboard, so keys stay
/// responsive while a big backlog is read.
const SCREEN_BUDGET: u64 = 1 << 20;

/// True while this process has the terminal in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back: main screen, cursor shown, cooked mode. Safe to
/// call more than once and from a panic hook.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Raw mode first: it has more side effects than the screen switch.
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// Holds the terminal while the view runs; dropping it restores the terminal.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Restore first, so the panic message lands on the real screen.
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let guard = TerminalGuard;
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// The view's row for a raw row of `messages.csv`.
pub fn item_of(row: &crate::tail::RawRow<'_>) -> Item {
    match parse_message(row) {
        Parsed::Row(m) => Item::Message(m),
        Parsed::Malformed(m) => Item::Malformed(m),
    }
}

/// Reads what is new in the file into `app`.
pub fn feed(tail: &mut Tail, app: &mut App, budget: u64) -> io::Result<Progress> {
    let progress = tail.poll(budget, &mut |event| match event {
        TailEvent::Opened { offset, .. } => app.opened(offset),
        TailEvent::Header(row) => {
            if let Some(bad) = check_header(&row, &MESSAGE_COLUMNS) {
                app.push(Item::Malformed(bad));
            }
        }
        TailEvent::Row(row) => app.push(item_of(&row)),
        TailEvent::Restarted(why) => app.restarted(why),
    })?;
    if !tail.is_open() {
        app.set_waiting();
    }
    Ok(progress)
}

/// Loads the rows before the oldest one shown, as the app asked.
pub fn load_older(tail: &mut Tail, app: &mut App) -> io::Result<()> {
    let Some(before) = app.older_before() else {
        app.push_older(Vec::new(), 0);
        return Ok(());
    };
    let filter = app.filter().clone();
    let mut older = Vec::new();
    let start = tail.read_before(
        before,
        OLDER_PAGE,
        &mut |row| {
            filter.is_empty()
                || matches!(parse_message_ref(row), Parsed::Row(m) if filter.matches(&m))
        },
        &mut |event| {
            if let TailEvent::Row(row) = event {
                older.push(item_of(&row));
            }
        },
    )?;
    app.push_older(older, start);
    Ok(())
}

/// Runs the full-screen view until the user quits.
pub fn run(tail: &mut Tail, app: &mut App) -> Result<(), ViewError> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&stop);
    // SIGTERM (and SIGINT from another process) end the view cleanly. In raw
    // mode Ctrl-C arrives as a key instead. A second handler cannot be set
    // (a test harness may hold it); the keys still work then.
    let _ = ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst));
    let guard = TerminalGuard::enter().map_err(ViewError::Terminal)?;
    let result = event_loop(tail, app, &stop);
    drop(guard);
    result
}

fn event_loop(tail: &mut Tail, app: &mut App, stop: &AtomicBool) -> Result<(), ViewError> {
    let mut terminal: Terminal<CrosstermBackend<Stdout>> =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(ViewError::Terminal)?;
    terminal.clear().map_err(ViewError::Terminal)?;
    let path = tail.path().to_path_buf();
    let read_error = |source| ViewError::Read {
        path: path.clone(),
        source,
    };
    let mut dirty = true;
    let mut next_poll = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next_poll {
            let progress = feed(tail, app, SCREEN_BUDGET).map_err(&read_error)?;
            dirty |= progress.read > 0;
            next_poll = if progress.more {
                now
            } else {
                now + POLL_INTERVAL
            };
        }
        if app.wants_older() {
            load_older(tail, app).map_err(&read_error)?;
            dirty = true;
        }
        if dirty {
            terminal
                .draw(|frame| app.render(frame))
                .map_err(ViewError::Terminal)?;
            dirty = false;
            if app.wants_older() {
                continue;
            }
        }
        let wait = next_poll
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if event::poll(wait).map_err(ViewError::Terminal)? {
            match event::read().map_err(ViewError::Terminal)? {
                TermEvent::Key(key) => {
                    if app.key(key) == Action::Quit {
                        return Ok(());
                    }
                    dirty = true;
                }
                TermEvent::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
    Ok(())
}

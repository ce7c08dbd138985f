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

use crate::rows::MESSAGE_COLUMNS;
use crate::viewer::row::{Parsed, check_header, parse_message, parse_message_ref};
use crate::viewer::screen::{Action, App, Item, OLDER_PAGE};
use crate::viewer::tail::{Progress, Tail, TailEvent};
use crate::viewer::{POLL_INTERVAL, ViewError};

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
pub fn item_of(row: &crate::viewer::tail::RawRow<'_>) -> Item {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::filter::Filter;
    use crate::viewer::tail::Start;
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::backend::TestBackend;

    const HEADER: &str = "id,timestamp,room,sender,recipient,text\n";

    fn rows(from: u64, to: u64) -> String {
        (from..=to)
            .map(|i| format!("{i},2026-11-21T18:05:09.123+00:00,general,alice,,row {i}\n"))
            .collect()
    }

    fn draw(app: &mut App) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(60, 10)).unwrap();
        terminal.draw(|f| app.render(f)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..10)
            .map(|y| (0..60).map(|x| buffer[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    #[test]
    fn scrolling_up_loads_older_rows_from_the_file_and_truncation_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.csv");
        std::fs::write(&path, format!("{HEADER}{}", rows(1, 1000))).unwrap();
        let mut tail = Tail::new(&path, Start::LastRows(8));
        let mut app = App::new("messages.csv", Filter::default());
        feed(&mut tail, &mut app, 1 << 20).unwrap();
        assert!(draw(&mut app)[8].contains("row 1000"));
        for _ in 0..3 {
            app.key(KeyEvent::from(KeyCode::PageUp));
            draw(&mut app);
            while app.wants_older() {
                load_older(&mut tail, &mut app).unwrap();
                draw(&mut app);
            }
        }
        let screen = draw(&mut app);
        assert!(screen[8].contains("row 979"), "{screen:#?}");
        app.key(KeyEvent::from(KeyCode::Home));
        draw(&mut app);
        while app.wants_older() {
            load_older(&mut tail, &mut app).unwrap();
            app.key(KeyEvent::from(KeyCode::Home));
            draw(&mut app);
        }
        let top = draw(&mut app);
        assert!(top[2].contains("row 1 "), "{top:#?}");

        std::fs::write(&path, format!("{HEADER}{}", rows(1, 2))).unwrap();
        feed(&mut tail, &mut app, 1 << 20).unwrap();
        app.key(KeyEvent::from(KeyCode::End));
        let after = draw(&mut app);
        assert!(after[0].contains("truncated"), "{after:#?}");
        assert!(
            after[1..7].iter().all(|l| l.trim().is_empty()),
            "{after:#?}"
        );
        assert!(after[8].contains("row 2"), "{after:#?}");
    }
}

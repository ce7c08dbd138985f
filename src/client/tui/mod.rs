//! The full-screen client, in the class of weechat, irssi or senpai: a chat
//! pane with scrollback, a side pane with the rooms and the people in the
//! user's room, a status bar and an input line with editing, history and
//! Tab completion. It reconnects by itself when the connection drops.
//!
//! # Modules
//! - [`protocol`]: the server's lines (JSON events, or text) as [`protocol::Event`]s;
//! - [`app`]: the whole state as a plain struct, driven by [`app::Input`]s,
//!   answering with [`app::Action`]s — no socket, no terminal, no clock;
//! - [`chat`]: the chat pane's lines, colours, wrapping and scrollback;
//! - [`editor`]: the input line;
//! - [`view`]: drawing the state with ratatui.
//!
//! # Threads
//! This module is the edge where events come from and actions go to:
//! - the **terminal** thread reads keys, the mouse wheel, pastes and resizes;
//! - one **reader** thread per connection reads the server's lines (and
//!   opens the connection, for a reconnect);
//! - the **main** thread owns the [`app::App`], the terminal and the sending
//!   half of the connection: it takes one input at a time from one channel
//!   (and a tick of the clock), hands it to the app, carries out the
//!   actions, and draws.
//!
//! # The terminal is always given back
//! Raw mode, the alternate screen, mouse reporting and bracketed paste are
//! switched on by [`ScreenGuard::enter`] and switched off by its `Drop` and by
//! a panic hook, whichever comes first (the second does nothing). A panic in
//! any thread restores the terminal, prints the panic, and ends the process,
//! so that no thread is left waiting for one that died.

pub mod app;
pub mod chat;
pub mod editor;
pub mod protocol;
pub mod view;

use std::io::{self, BufReader, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::event::{
    self, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

use crate::client::link::{self as client, ClientError, LostReason, Options, Stream};
use app::{Action, App, Ending, Input};

/// How often the clock ticks: often enough for the reconnect countdown and
/// the leave deadline, rarely enough to cost nothing.
const TICK: Duration = Duration::from_millis(250);

/// How long the terminal thread waits for a key before it checks whether
/// the client is ending.
const KEY_POLL: Duration = Duration::from_millis(100);

/// Time allowed for the terminal thread to notice that the client ends.
const KEYS_RELEASE: Duration = Duration::from_millis(300);

/// Inputs handled in a row before the screen is drawn: a history replay is
/// drawn once, not fifty times, yet the screen never lags far behind.
const BATCH: usize = 256;

/// What the threads tell the main thread.
enum News {
    /// Something for the app.
    Input(Input),
    /// A connection is open; its sending half is here.
    Opened {
        /// Its number.
        conn: u64,
        /// The connection to send on.
        stream: Stream,
    },
    /// The terminal cannot be read.
    TerminalFailed(io::Error),
}

/// Whether the terminal is in the client's hands (raw, alternate screen).
static SCREEN_TAKEN: AtomicBool = AtomicBool::new(false);

/// The terminal, taken over for the full screen.
///
/// Promises:
/// 1. Dropping it puts the terminal back as it was: cooked mode with echo,
///    the normal screen, no mouse reporting, no bracketed paste, a cursor.
/// 2. A panic anywhere does the same before the panic is printed.
/// 3. Putting the terminal back twice is harmless.
pub struct ScreenGuard {
    _private: (),
}

impl ScreenGuard {
    /// Takes over the terminal.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        SCREEN_TAKEN.store(true, Ordering::SeqCst);
        let guard = Self { _private: () };
        execute!(
            io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        )?;
        Ok(guard)
    }
}

impl Drop for ScreenGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Gives the terminal back, if the client has it. Errors are ignored: there
/// is nothing better to do with a terminal that cannot be written.
pub fn restore_terminal() {
    if SCREEN_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = execute!(
            io::stdout(),
            DisableBracketedPaste,
            DisableMouseCapture,
            LeaveAlternateScreen,
            Show
        );
        let _ = disable_raw_mode();
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let had_screen = SCREEN_TAKEN.load(Ordering::SeqCst);
            restore_terminal();
            previous(info);
            if had_screen {
                // A thread that died may be one the others wait for.
                std::process::exit(101);
            }
        }));
    });
}

/// The sending half of the current connection.
///
/// Promises:
/// 1. [`send`](Uplink::send) never blocks the window: lines go to a writer
///    thread of the connection's own, which may wait as long as the server
///    takes to read them (its flood control reads a fast sender's lines
///    later instead of refusing them).
/// 2. Lines are written whole and in order.
/// 3. A failed write shuts the connection, so that its reader reports it
///    closed; dropping the uplink lets the writer finish what is queued.
struct Uplink {
    conn: u64,
    lines: Sender<Vec<u8>>,
}

impl Uplink {
    /// Starts the writer thread of connection `conn`.
    fn new(conn: u64, stream: Stream) -> Uplink {
        let (lines, queued) = crossbeam_channel::unbounded::<Vec<u8>>();
        thread::spawn(move || {
            let mut stream = stream;
            for buf in queued {
                if let Err(e) = stream.write_all(&buf) {
                    log::debug!("sending on connection {conn}: {e}");
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        });
        Uplink { conn, lines }
    }

    /// Queues one line for the server.
    fn send(&mut self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if self.lines.send(buf).is_err() {
            log::debug!("connection {} is closed; not sent: {line:?}", self.conn);
        }
    }
}

/// A short reason for the status line, without the advice meant for the
/// first connection.
fn short_reason(error: &ClientError) -> String {
    match error {
        ClientError::Connect { source, .. } | ClientError::Resolve { source, .. } => {
            client::plain(source)
        }
        other => other.to_string(),
    }
}

/// Reads the server's lines and passes them on, then says how it ended.
fn read_lines(conn: u64, stream: Stream, news: &Sender<News>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let reason = loop {
        match client::read_piece(&mut reader, &mut buf) {
            Ok(true) => {
                let line = String::from_utf8_lossy(client::trim_line_end(&buf)).into_owned();
                if news.send(News::Input(Input::Line { conn, line })).is_err() {
                    return;
                }
            }
            Ok(false) => break "the server closed the connection".to_owned(),
            Err(e) => break client::plain(&e),
        }
    };
    let _ = news.send(News::Input(Input::Closed { conn, reason }));
}

fn prepare(stream: &Stream) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY: {e}");
    }
}

/// Starts the reader of an open connection; returns its sending half.
fn adopt(conn: u64, stream: Stream, news: &Sender<News>) -> io::Result<Uplink> {
    prepare(&stream);
    let read_half = stream.try_clone()?;
    let news = news.clone();
    thread::spawn(move || read_lines(conn, read_half, &news));
    Ok(Uplink::new(conn, stream))
}

/// Opens connection `conn` in a thread of its own, then reads it.
fn reconnect(conn: u64, options: &Options, news: &Sender<News>) {
    let options = options.clone();
    let news = news.clone();
    thread::spawn(move || match client::connect(&options, false) {
        Ok(stream) => {
            prepare(&stream);
            match stream.try_clone() {
                Ok(send_half) => {
                    if news
                        .send(News::Opened {
                            conn,
                            stream: send_half,
                        })
                        .is_ok()
                    {
                        read_lines(conn, stream, &news);
                    }
                }
                Err(e) => {
                    let reason = client::plain(&e);
                    let _ = news.send(News::Input(Input::ConnectFailed { conn, reason }));
                }
            }
        }
        Err(e) => {
            let reason = short_reason(&e);
            let _ = news.send(News::Input(Input::ConnectFailed { conn, reason }));
        }
    });
}

/// The terminal thread: keys, mouse, pastes and resizes, until `stop`.
fn read_terminal(news: &Sender<News>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let ready = match event::poll(KEY_POLL) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = news.send(News::TerminalFailed(e));
                return;
            }
        };
        if !ready {
            continue;
        }
        let input = match event::read() {
            Ok(event::Event::Key(key)) => Input::Key(key),
            Ok(event::Event::Mouse(mouse)) => Input::Mouse(mouse),
            Ok(event::Event::Paste(text)) => Input::Paste(text),
            Ok(event::Event::Resize(width, height)) => Input::Resize(width, height),
            Ok(_) => continue,
            Err(e) => {
                let _ = news.send(News::TerminalFailed(e));
                return;
            }
        };
        if news.send(News::Input(input)).is_err() {
            return;
        }
    }
}

/// Runs the full-screen client until the user leaves (`Ok`), the server
/// cannot be reached, or stays away for good.
pub fn run(options: &Options) -> Result<(), ClientError> {
    let address = client::address(&options.host, options.port);
    // Connect before taking the screen: an unreachable server is one line
    // in the normal terminal, like the plain client.
    let first = client::connect(options, true)?;
    let (news_tx, news) = crossbeam_channel::unbounded::<News>();
    let mut uplink = Some(adopt(1, first, &news_tx).map_err(|e| ClientError::Lost {
        address: address.clone(),
        reason: LostReason::Read(e),
    })?);

    let signals = news_tx.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signals.send(News::Input(Input::Interrupted));
    }) {
        log::warn!("cannot handle SIGTERM and SIGHUP: {e}");
    }

    let guard = ScreenGuard::enter().map_err(ClientError::Screen)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Dropped when the terminal thread ends.
    let (keys_done_tx, keys_done) = crossbeam_channel::bounded::<()>(0);
    {
        let news = news_tx.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let _done = keys_done_tx;
            read_terminal(&news, &stop);
        });
    }
    let result = (|| {
        let mut terminal =
            Terminal::new(CrosstermBackend::new(io::stdout())).map_err(ClientError::Screen)?;
        let mut app = App::new(address.clone(), options.name.clone(), Instant::now());
        let size = terminal.size().map_err(ClientError::Screen)?;
        let mut pending = app.handle(Input::Resize(size.width, size.height), Instant::now());
        pending.extend(app.handle(Input::Connected { conn: 1 }, Instant::now()));
        main_loop(
            &mut app,
            &mut terminal,
            &news,
            &news_tx,
            &mut uplink,
            options,
            pending,
        )
    })();
    stop.store(true, Ordering::SeqCst);
    drop(guard);
    // Not joined without a limit: on a terminal that hung up (its window
    // closed), crossterm's read never returns, and the exit must not wait.
    let _ = keys_done.recv_timeout(KEYS_RELEASE);
    match result? {
        Ending::Left => Ok(()),
        Ending::Lost { reason } => Err(ClientError::Lost {
            address,
            reason: LostReason::Other(reason),
        }),
        Ending::GaveUp { reason } => Err(ClientError::GaveUp {
            address,
            attempts: app::RECONNECT_ATTEMPTS,
            reason,
        }),
    }
}

type Screen = Terminal<CrosstermBackend<io::Stdout>>;

fn main_loop(
    app: &mut App,
    terminal: &mut Screen,
    news: &Receiver<News>,
    news_tx: &Sender<News>,
    uplink: &mut Option<Uplink>,
    options: &Options,
    mut pending: Vec<Action>,
) -> Result<Ending, ClientError> {
    let ticks = crossbeam_channel::tick(TICK);
    loop {
        let mut handled = 0;
        loop {
            for action in pending.drain(..) {
                if let Some(ending) = act(action, app, terminal, news_tx, uplink, options)? {
                    return Ok(ending);
                }
            }
            handled += 1;
            if handled > BATCH {
                break;
            }
            let next = if handled == 1 {
                // Nothing to draw before the first input of a batch.
                crossbeam_channel::select! {
                    recv(news) -> news => news.ok(),
                    recv(ticks) -> _ => Some(News::Input(Input::Tick)),
                }
            } else {
                news.try_recv().ok()
            };
            let Some(next) = next else {
                break;
            };
            let input = match next {
                News::Input(input) => input,
                News::Opened { conn, stream } => {
                    if conn != app.conn() {
                        continue;
                    }
                    *uplink = Some(Uplink::new(conn, stream));
                    Input::Connected { conn }
                }
                News::TerminalFailed(e) => return Err(ClientError::Screen(e)),
            };
            if let Input::Closed { conn, .. } = &input
                && uplink.as_ref().is_some_and(|u| u.conn == *conn)
            {
                *uplink = None;
            }
            pending = app.handle(input, Instant::now());
        }
        terminal
            .draw(|frame| view::draw(frame, app))
            .map_err(ClientError::Screen)?;
    }
}

/// Carries out one action; returns the ending if it is time to go.
fn act(
    action: Action,
    app: &mut App,
    terminal: &mut Screen,
    news_tx: &Sender<News>,
    uplink: &mut Option<Uplink>,
    options: &Options,
) -> Result<Option<Ending>, ClientError> {
    match action {
        Action::Send { conn, line } => match uplink {
            Some(link) if link.conn == conn => link.send(&line),
            _ => log::debug!("not sent, connection {conn} is gone: {line:?}"),
        },
        Action::Connect { conn } => reconnect(conn, options, news_tx),
        Action::Bell => {
            let mut stdout = io::stdout();
            let _ = stdout.write_all(b"\x07");
            let _ = stdout.flush();
        }
        Action::Save { path, text } => {
            let result = std::fs::write(&path, &text)
                .map(|()| text.lines().count())
                .map_err(|e| client::plain(&e));
            let more = app.handle(Input::Saved { path, result }, Instant::now());
            for action in more {
                if let Some(ending) = act(action, app, terminal, news_tx, uplink, options)? {
                    return Ok(Some(ending));
                }
            }
        }
        Action::Redraw => terminal.clear().map_err(ClientError::Screen)?,
        Action::Exit(ending) => return Ok(Some(ending)),
    }
    Ok(None)
}

//! The line client: one TCP connection to the chat server, and a person
//! (or a script) on the other side, for pipes and `--plain`.
//!
//! This module owns everything the `client` binary does once its flags are
//! parsed: connecting (with a time limit), the name exchange, sending what is
//! typed, showing what the server sends (sanitised, so the network can never
//! drive the terminal), local commands (`/clear`), and deciding how the
//! program ends: a clean exit when the user left, an error when the
//! connection was lost or never made.
//!
//! # Two modes
//! - **Terminal** (stdin and stdout are both terminals): the typed line is
//!   edited with rustyline (editing keys, history). Server lines are printed
//!   from the reader thread through rustyline's external printer, which
//!   redraws the prompt and the half-typed text below them. The server's
//!   `Name:` prompt is replaced by a local prompt.
//! - **Pipe** (anything else): scriptable. Every input line is sent as it is
//!   read, every server line is printed to stdout as it arrives, and the end
//!   of input shuts down the write half of the socket so the server ends the
//!   session.
//!
//! # Threads
//! - the **reader** reads the server's lines and shows them on the `Screen`;
//! - the **input** thread reads what the user types and sends it through the
//!   `Uplink`;
//! - the **supervisor** (the caller of [`run`]) waits for the `Event`s of
//!   both, and of Ctrl-C, and lets a `Session` decide when and how the
//!   program ends.
//!
//! # Leaving
//! `/quit`, Ctrl-D and Ctrl-C (also SIGTERM and SIGHUP) send `/quit` (only
//! once a name was accepted) and shut down the write half, then wait up to
//! [`LEAVE_GRACE`] for the server to close: exit 0. The end of piped input
//! shuts down the write half and waits for the server without a time limit:
//! exit 0. The server closing first, or a read or send failure, is a lost
//! connection: one line on stderr, exit 1.

use std::io::{self, BufReader, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::link::{
    ClientError, LEAVE_GRACE, LostReason, Options, Stream, address, connect, read_piece, sanitise,
    trim_line_end,
};
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor, ExternalPrinter};

/// Time allowed for one line to be taken by the socket: a server that stops
/// reading must not freeze the client.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for the input thread to hand the terminal back at the end.
const TERMINAL_RELEASE: Duration = Duration::from_secs(1);

/// How often the input thread is nudged while the terminal is being released.
const RELEASE_NUDGE: Duration = Duration::from_millis(50);

/// The local prompt for a name, shown in terminal mode instead of the
/// server's `Name:` line.
const NAME_PROMPT: &str = "Your name (Enter for a guest name): ";

/// The prompt for chat lines in terminal mode.
const CHAT_PROMPT: &str = "> ";

/// The server's name prompt, as the contract sends it.
const SERVER_NAME_PROMPT: &str = "Name:";

/// The server's password prompt (private servers).
const SERVER_PASSWORD_PROMPT: &str = "Password:";

/// The local prompt for a password in terminal mode; what is typed is not
/// shown.
const PASSWORD_PROMPT: &str = "Password (not shown): ";

/// Drawn through the external printer to learn that every server line before
/// it has been taken by the line editor. It moves the cursor up one row and
/// back down, so the screen does not change.
const PRINT_BARRIER: &str = "\x1b[A\n";

/// Switches bracketed paste off: the line editor switches it on while it
/// reads a line, and a terminal taken back without the editor's help must not
/// keep it.
const BRACKETED_PASTE_OFF: &str = "\x1b[?2004l";

/// What a line the user typed asks the client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed {
    /// Send the line to the server.
    Send,
    /// `/quit`: ask the server to end the session, then leave.
    Quit,
    /// `/clear`: clear the screen locally; nothing is sent.
    Clear,
}

/// Decides what a typed line asks for. Commands are case-insensitive, like
/// the server's, and must start the line (` /quit` is a message).
pub fn classify(line: &str) -> Typed {
    let word = line.split(char::is_whitespace).next().unwrap_or_default();
    if word.eq_ignore_ascii_case("/quit") {
        Typed::Quit
    } else if word.eq_ignore_ascii_case("/clear") {
        Typed::Clear
    } else {
        Typed::Send
    }
}

/// News about the name exchange, read from the server's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameNews {
    /// The server asks for a name (the first time, or again after a refusal).
    Asked,
    /// The server asks for the password of the name just sent.
    PasswordAsked,
    /// The server accepted a name.
    Accepted,
}

/// Follows the name exchange in the lines the server sends.
///
/// The contract's order: a greeting, `Name:`, then either an error line and
/// `Name:` again, or a `* ` line that accepts the name. So the first `* `
/// line after a `Name:` is the acceptance, and nothing is news after it.
#[derive(Debug, Default)]
struct NameWatch {
    asked: bool,
    named: bool,
}

impl NameWatch {
    fn observe(&mut self, line: &str) -> Option<NameNews> {
        if self.named {
            None
        } else if line.trim() == SERVER_NAME_PROMPT {
            self.asked = true;
            Some(NameNews::Asked)
        } else if self.asked && line.trim() == SERVER_PASSWORD_PROMPT {
            Some(NameNews::PasswordAsked)
        } else if self.asked && line.starts_with("* ") {
            self.named = true;
            Some(NameNews::Accepted)
        } else {
            None
        }
    }
}

/// How the other side of the connection ended.
#[derive(Debug)]
enum ConnectionEnd {
    /// The server closed it (end of stream).
    Closed,
    /// Reading failed.
    Failed(io::Error),
}

/// What the supervisor hears from the threads and from the signal handler.
#[derive(Debug)]
enum Event {
    /// The reader has shown every line and the connection has ended.
    ServerClosed(ConnectionEnd),
    /// The user asked to leave (`/quit`, Ctrl-D, Ctrl-C in the line editor).
    /// Sent just before the request goes out, so that it arrives before the
    /// server's answer.
    Left,
    /// Standard input ended without `/quit`. Sent just before the write
    /// half is shut down.
    InputEnded,
    /// Ctrl-C, SIGTERM or SIGHUP outside the line editor.
    Interrupted,
    /// Standard output cannot be written any more (`client | head -1`).
    OutputClosed,
    /// A line could not be sent.
    SendFailed(io::Error),
    /// The input side failed; it then asks the server to end the session.
    Failed(ClientError),
}

/// Why the user is leaving, which sets how long the client waits for the
/// server to close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// `/quit` was sent: the server closes at once, so wait [`LEAVE_GRACE`] at most.
    Quit,
    /// The input ended: the server sees the end of the stream and closes;
    /// everything it sends until then is shown, however long it takes.
    InputEnded,
}

/// What the supervisor does next.
#[derive(Debug)]
enum Step {
    /// Keep waiting, as long as before.
    Wait,
    /// Keep waiting, but from now on no longer than [`LEAVE_GRACE`].
    WaitBriefly,
    /// Ask the server to end the session (send `/quit`), then wait briefly.
    Quit,
    /// The session is over.
    Finish(Result<(), ClientError>),
}

/// The supervisor's decisions, apart from channels and clocks so that tests
/// can drive them.
///
/// Promises:
/// 1. Once the user is leaving, the end of the connection is never an error.
/// 2. `/quit` is asked for at most once.
/// 3. The first failure decides the error; nothing is reported twice.
#[derive(Debug)]
struct Session {
    address: String,
    leaving: Option<Leaving>,
}

impl Session {
    fn new(address: String) -> Self {
        Self {
            address,
            leaving: None,
        }
    }

    fn on(&mut self, event: Event) -> Step {
        match event {
            Event::ServerClosed(end) => Step::Finish(match (self.leaving, end) {
                (Some(_), _) => Ok(()),
                (None, ConnectionEnd::Closed) => Err(self.lost(LostReason::ServerClosed)),
                (None, ConnectionEnd::Failed(e)) => Err(self.lost(LostReason::Read(e))),
            }),
            Event::Left => {
                self.leaving = Some(Leaving::Quit);
                Step::WaitBriefly
            }
            Event::InputEnded => {
                self.leaving.get_or_insert(Leaving::InputEnded);
                Step::Wait
            }
            Event::Interrupted | Event::OutputClosed => match self.leaving {
                Some(Leaving::Quit) => Step::Wait,
                Some(Leaving::InputEnded) => {
                    // The write half is already shut: nothing more can be
                    // sent, but the user no longer wants to wait.
                    self.leaving = Some(Leaving::Quit);
                    Step::WaitBriefly
                }
                None => {
                    self.leaving = Some(Leaving::Quit);
                    Step::Quit
                }
            },
            Event::SendFailed(e) => match self.leaving {
                Some(_) => Step::Wait,
                None => Step::Finish(Err(self.lost(LostReason::Send(e)))),
            },
            Event::Failed(error) => Step::Finish(Err(error)),
        }
    }

    fn lost(&self, reason: LostReason) -> ClientError {
        ClientError::Lost {
            address: self.address.clone(),
            reason,
        }
    }
}

/// The sending half of the connection, shared by every thread that sends.
///
/// Promises:
/// 1. A line is written whole, under one lock: lines from two threads never
///    interleave.
/// 2. After the write half is shut down nothing more is sent, and asking
///    again is harmless.
/// 3. [`Uplink::leave`] sends `/quit` only once the server has accepted a
///    name: before that, `/quit` would be taken as a name and refused.
/// 4. Never panics; a poisoned lock is recovered.
#[derive(Debug)]
struct Uplink {
    stream: Mutex<Stream>,
    shut: AtomicBool,
    named: AtomicBool,
}

impl Uplink {
    fn new(stream: Stream) -> Self {
        Self {
            stream: Mutex::new(stream),
            shut: AtomicBool::new(false),
            named: AtomicBool::new(false),
        }
    }

    /// Notes that the server has accepted a name.
    fn mark_named(&self) {
        self.named.store(true, Ordering::SeqCst);
    }

    /// Sends one line; the `\n` is added here.
    fn send_line(&self, line: &[u8]) -> io::Result<()> {
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shut.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        stream.write_all(&buf)
    }

    /// Shuts down the write half: the server sees the end of the stream.
    fn shut_write(&self) {
        let stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.shut.swap(true, Ordering::SeqCst)
            && let Err(e) = stream.shutdown(Shutdown::Write)
        {
            log::debug!("shutting down the write half: {e}");
        }
    }

    /// Asks the server to end the session: `/quit` if a name has been
    /// accepted, then the end of the stream, which also ends a session still
    /// at the name prompt. A failure is not reported: the connection is
    /// ending anyway.
    fn leave(&self) {
        if self.named.load(Ordering::SeqCst)
            && let Err(e) = self.send_line(b"/quit")
        {
            log::debug!("sending /quit: {e}");
        }
        self.shut_write();
    }
}

/// Where the server's lines are shown.
enum Screen {
    /// Standard output, one line at a time (pipe mode).
    Plain(io::Stdout),
    /// The terminal, above the line being typed (terminal mode).
    Terminal {
        printer: Printer,
        /// Tells the input thread when to ask for a name; dropped with the
        /// screen, which tells it that the server is gone.
        news: Sender<NameNews>,
    },
}

impl Screen {
    /// Shows one line (already sanitised), with what it says about the
    /// name exchange.
    fn show(&mut self, line: &str, seen: Option<NameNews>) -> io::Result<()> {
        match self {
            Self::Plain(stdout) => write_line(stdout, line),
            Self::Terminal { printer, news } => {
                // The server's `Name:` is replaced by the local name prompt.
                // With its `\n`: while no line is being edited, the printer
                // writes the text as it is.
                if !matches!(seen, Some(NameNews::Asked | NameNews::PasswordAsked))
                    && let Err(e) = printer.print(format!("{line}\n"))
                {
                    log::debug!("external printer failed ({e}); writing directly");
                    write_line(&mut io::stdout(), line)?;
                }
                if let Some(seen) = seen {
                    // The input thread is gone only when the client is ending.
                    let _ = news.send(seen);
                }
                Ok(())
            }
        }
    }
}

fn write_line(out: &mut impl Write, line: &str) -> io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The reader thread: shows every line the server sends, then reports how
/// the connection ended.
fn read_server(stream: Stream, mut screen: Screen, uplink: &Uplink, events: &Sender<Event>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut names = NameWatch::default();
    let mut showing = true;
    let end = loop {
        match read_piece(&mut reader, &mut buf) {
            Ok(false) => break ConnectionEnd::Closed,
            Ok(true) => {
                let text = String::from_utf8_lossy(trim_line_end(&buf));
                let text = sanitise(&text);
                let seen = names.observe(&text);
                if seen == Some(NameNews::Accepted) {
                    uplink.mark_named();
                }
                if !showing {
                    continue;
                }
                if let Err(e) = screen.show(&text, seen) {
                    log::debug!("standard output failed: {e}");
                    // Keep reading, so that the end of the connection is
                    // still seen and reported.
                    showing = false;
                    let _ = events.send(Event::OutputClosed);
                }
            }
            Err(e) => break ConnectionEnd::Failed(e),
        }
    };
    // Drop the screen first: in terminal mode that tells an input thread
    // waiting for name news that no more will come.
    drop(screen);
    let _ = events.send(Event::ServerClosed(end));
}

/// The input thread of pipe mode: sends every line of stdin.
///
/// Leaving is announced to the supervisor before it is done: the server
/// answers `/quit` or the end of the stream by closing, and that news must
/// not overtake the news that the user is leaving.
fn read_stdin(uplink: &Uplink, events: &Sender<Event>) {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        match read_piece(&mut stdin, &mut buf) {
            Ok(false) => {
                let _ = events.send(Event::InputEnded);
                uplink.shut_write();
                return;
            }
            Ok(true) => {
                let line = trim_line_end(&buf);
                match classify(&String::from_utf8_lossy(line)) {
                    Typed::Clear => {}
                    Typed::Quit => {
                        let _ = events.send(Event::Left);
                        // Sent as typed, even if the reply to the name has
                        // not been read yet: a script's lines keep their order.
                        if let Err(e) = uplink.send_line(line) {
                            log::debug!("sending {:?}: {e}", String::from_utf8_lossy(line));
                        }
                        uplink.shut_write();
                        return;
                    }
                    Typed::Send => {
                        if let Err(e) = uplink.send_line(line) {
                            let _ = events.send(Event::SendFailed(e));
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                let _ = events.send(Event::Failed(ClientError::Input(e)));
                uplink.leave();
                return;
            }
        }
    }
}

/// Whether the input thread goes on after a line.
enum Flow {
    Go,
    Stop,
}

/// The input side of terminal mode: the line editor and what it sends.
struct Keyboard {
    editor: DefaultEditor,
    uplink: Arc<Uplink>,
    events: Sender<Event>,
    /// Set by the supervisor when the client is ending: an interrupted
    /// `readline` then means "stop", not "the user pressed Ctrl-C".
    stopping: Arc<AtomicBool>,
}

impl Keyboard {
    /// The input thread of terminal mode. `answered` counts name prompts
    /// already answered by `--name`, sent before the server asked.
    fn run(mut self, news: &Receiver<NameNews>, mut answered: u32) {
        loop {
            match news.recv() {
                Err(_) => return,
                Ok(NameNews::Accepted) => break,
                Ok(NameNews::Asked) if answered > 0 => answered -= 1,
                Ok(NameNews::Asked) => {
                    if let Flow::Stop = self.ask(NAME_PROMPT, false) {
                        return;
                    }
                }
                Ok(NameNews::PasswordAsked) => {
                    if let Flow::Stop = self.ask_password() {
                        return;
                    }
                }
            }
        }
        while let Flow::Go = self.ask(CHAT_PROMPT, true) {}
    }

    /// Reads one line and acts on it. A name may be empty (a guest name);
    /// an empty chat line is not sent.
    fn ask(&mut self, prompt: &str, chatting: bool) -> Flow {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Flow::Stop;
            }
            match self.editor.readline(prompt) {
                Ok(line) => match classify(&line) {
                    Typed::Clear => {
                        if let Err(e) = self.editor.clear_screen() {
                            log::debug!("clearing the screen: {e}");
                        }
                    }
                    Typed::Quit => return self.leave(Event::Left),
                    Typed::Send if chatting && line.trim().is_empty() => {}
                    Typed::Send => {
                        if chatting && let Err(e) = self.editor.add_history_entry(line.as_str()) {
                            log::debug!("adding to history: {e}");
                        }
                        if let Err(e) = self.uplink.send_line(line.as_bytes()) {
                            let _ = self.events.send(Event::SendFailed(e));
                            return Flow::Stop;
                        }
                        return Flow::Go;
                    }
                },
                Err(ReadlineError::Interrupted) if self.stopping.load(Ordering::SeqCst) => {
                    return Flow::Stop;
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => {
                    return self.leave(Event::Left);
                }
                Err(e) => return self.leave(Event::Failed(ClientError::Terminal(e))),
            }
        }
    }

    /// Reads the password without echo and sends it; it never enters the
    /// line editor's history.
    fn ask_password(&mut self) -> Flow {
        if self.stopping.load(Ordering::SeqCst) {
            return Flow::Stop;
        }
        match rpassword::prompt_password(PASSWORD_PROMPT) {
            Ok(password) => {
                if let Err(e) = self.uplink.send_line(password.as_bytes()) {
                    let _ = self.events.send(Event::SendFailed(e));
                    return Flow::Stop;
                }
                Flow::Go
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.leave(Event::Left),
            Err(e) => self.leave(Event::Failed(ClientError::Terminal(ReadlineError::Io(e)))),
        }
    }

    fn leave(&self, event: Event) -> Flow {
        // Announced first: see `read_stdin`.
        let _ = self.events.send(event);
        self.uplink.leave();
        Flow::Stop
    }
}

/// The terminal's settings from before the line editor touched it, to put
/// back if the editor cannot do it itself.
struct SavedTerminal(Option<rustix::termios::Termios>);

impl SavedTerminal {
    fn capture() -> Self {
        Self(rustix::termios::tcgetattr(io::stdin()).ok())
    }

    fn restore(&self) {
        if let Some(termios) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                io::stdin(),
                rustix::termios::OptionalActions::Now,
                termios,
            );
        }
        let mut stdout = io::stdout();
        let _ = writeln!(stdout, "{BRACKETED_PASTE_OFF}");
        let _ = stdout.flush();
    }
}

/// Installs the handler of Ctrl-C, SIGTERM and SIGHUP for the whole process.
/// Returns whether it is in place (it can be set once per process).
fn watch_interrupts(events: Sender<Event>) -> bool {
    match ctrlc::set_handler(move || {
        let _ = events.send(Event::Interrupted);
    }) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("cannot handle Ctrl-C: {e}");
            false
        }
    }
}

/// Waits for events and lets the [`Session`] decide, until it finishes.
fn supervise(
    session: &mut Session,
    events: &Receiver<Event>,
    uplink: &Uplink,
) -> Result<(), ClientError> {
    let mut deadline: Option<Instant> = None;
    loop {
        let event = match deadline {
            Some(deadline) => match events.recv_deadline(deadline) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    log::debug!("the server did not close the connection in time; leaving anyway");
                    return Ok(());
                }
                Err(RecvTimeoutError::Disconnected) => Event::ServerClosed(ConnectionEnd::Closed),
            },
            None => events
                .recv()
                .unwrap_or(Event::ServerClosed(ConnectionEnd::Closed)),
        };
        log::debug!("event: {event:?}");
        match session.on(event) {
            Step::Wait => {}
            Step::WaitBriefly => {
                deadline.get_or_insert_with(|| Instant::now() + LEAVE_GRACE);
            }
            Step::Quit => {
                uplink.leave();
                deadline.get_or_insert_with(|| Instant::now() + LEAVE_GRACE);
            }
            Step::Finish(result) => return result,
        }
    }
}

/// Runs the client until the session ends: `Ok` when the user left (or the
/// input ended and the server closed), an error when the server could not be
/// reached or the connection was lost.
pub fn run(options: &Options, terminal: bool) -> Result<(), ClientError> {
    let stream = connect(options, terminal)?;
    let address = address(&options.host, options.port);
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY: {e}");
    }
    if let Err(e) = stream.set_write_timeout(Some(SEND_TIMEOUT)) {
        log::debug!("write timeout: {e}");
    }
    let read_half = stream.try_clone().map_err(|e| ClientError::Lost {
        address: address.clone(),
        reason: LostReason::Read(e),
    })?;
    let (events_tx, events) = crossbeam_channel::unbounded();
    // Once connected: Ctrl-C during the connect keeps its usual meaning
    // (stop the program now); from here on it means "leave the chat".
    let interrupts = watch_interrupts(events_tx.clone());
    let link = Link {
        session: Session::new(address),
        events_tx,
        events,
        uplink: Arc::new(Uplink::new(stream)),
        interrupts,
    };
    if terminal {
        match LineEditor::new() {
            Ok(line_editor) => return run_terminal(link, read_half, options, line_editor),
            Err(e) => log::debug!("no line editing ({e}); reading lines as from a pipe"),
        }
    }
    run_pipe(link, read_half, options)
}

/// What both modes share once the connection is open.
struct Link {
    session: Session,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    uplink: Arc<Uplink>,
    /// Whether our Ctrl-C handler is in place.
    interrupts: bool,
}

impl Link {
    /// Starts the reader thread on the read half of the connection.
    fn start_reader(&self, read_half: Stream, screen: Screen) {
        let uplink = Arc::clone(&self.uplink);
        let events = self.events_tx.clone();
        thread::spawn(move || read_server(read_half, screen, &uplink, &events));
    }

    /// Sends `--name`, if given, without waiting for the prompt (the contract
    /// allows it). Returns whether a name was sent.
    fn send_name(&self, options: &Options) -> bool {
        let Some(name) = &options.name else {
            return false;
        };
        match self.uplink.send_line(name.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                let _ = self.events_tx.send(Event::SendFailed(e));
                false
            }
        }
    }
}

fn run_pipe(mut link: Link, read_half: Stream, options: &Options) -> Result<(), ClientError> {
    link.start_reader(read_half, Screen::Plain(io::stdout()));
    link.send_name(options);
    let uplink = Arc::clone(&link.uplink);
    let events = link.events_tx.clone();
    // Not joined: it may be blocked reading stdin when the session ends.
    thread::spawn(move || read_stdin(&uplink, &events));
    supervise(&mut link.session, &link.events, &link.uplink)
}

type Printer = Box<dyn ExternalPrinter + Send>;

/// The line editor and two printers into it: one for the reader thread, one
/// for the barrier drawn when the client ends.
struct LineEditor {
    editor: DefaultEditor,
    printer: Printer,
    barrier: Printer,
}

impl LineEditor {
    fn new() -> Result<Self, ReadlineError> {
        let config = Config::builder()
            .auto_add_history(false)
            .history_ignore_dups(true)?
            .max_history_size(1000)?
            .build();
        let mut editor = DefaultEditor::with_config(config)?;
        let printer = Box::new(editor.create_external_printer()?);
        let barrier = Box::new(editor.create_external_printer()?);
        Ok(Self {
            editor,
            printer,
            barrier,
        })
    }
}

fn run_terminal(
    mut link: Link,
    read_half: Stream,
    options: &Options,
    line_editor: LineEditor,
) -> Result<(), ClientError> {
    let saved = SavedTerminal::capture();
    let (news_tx, news) = crossbeam_channel::unbounded();
    link.start_reader(
        read_half,
        Screen::Terminal {
            printer: line_editor.printer,
            news: news_tx,
        },
    );
    let answered = u32::from(link.send_name(options));
    let stopping = Arc::new(AtomicBool::new(false));
    let keyboard = Keyboard {
        editor: line_editor.editor,
        uplink: Arc::clone(&link.uplink),
        events: link.events_tx.clone(),
        stopping: Arc::clone(&stopping),
    };
    // Dropped when the input thread ends, however it ends: that is how the
    // supervisor learns that the terminal is free.
    let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
    let input = thread::spawn(move || {
        let _done = done_tx;
        keyboard.run(&news, answered);
    });

    let result = supervise(&mut link.session, &link.events, &link.uplink);

    stopping.store(true, Ordering::SeqCst);
    if done.try_recv() == Err(TryRecvError::Empty) {
        release_terminal(&done, line_editor.barrier, link.interrupts, &saved);
    }
    if matches!(done.try_recv(), Err(TryRecvError::Disconnected)) {
        let _ = input.join();
    }
    result
}

/// Makes the input thread leave the line editor, so that the editor puts
/// the terminal back as it found it, before the client exits.
///
/// rustyline has no call to end a `readline` from another thread; what it
/// does offer is its SIGINT handler, installed while it reads a line, which
/// ends the read as "interrupted". Before that, a barrier line through the
/// external printer makes sure that the server's last lines have been drawn.
/// If all that fails, the terminal settings saved at the start are put back.
fn release_terminal(
    done: &Receiver<()>,
    mut barrier: Printer,
    interrupts: bool,
    saved: &SavedTerminal,
) {
    // The barrier may block while the user is in a mode that holds back
    // printed lines (history search); it must not hold up the exit.
    let (drawn_tx, drawn) = crossbeam_channel::bounded::<()>(1);
    thread::spawn(move || {
        if barrier.print(PRINT_BARRIER.to_owned()).is_ok() {
            let _ = drawn_tx.send(());
        }
    });
    let _ = drawn.recv_timeout(TERMINAL_RELEASE);

    let give_up = Instant::now() + TERMINAL_RELEASE;
    while Instant::now() < give_up {
        if interrupts {
            // SIGINT is handled by the line editor while it reads, and by our
            // Ctrl-C handler otherwise.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::INT,
            );
        }
        match done.recv_timeout(RELEASE_NUDGE) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
    log::debug!("the line editor did not stop; restoring the terminal directly");
    saved.restore();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_is_handled_locally_and_quit_ends_the_session() {
        assert_eq!(classify("/clear"), Typed::Clear);
        assert_eq!(classify("/CLEAR"), Typed::Clear);
        assert_eq!(classify("/quit"), Typed::Quit);
        assert_eq!(classify("/Quit see you"), Typed::Quit);
        assert_eq!(classify("/quit\t"), Typed::Quit);
    }

    #[test]
    fn messages_and_server_commands_are_sent() {
        assert_eq!(classify("hello"), Typed::Send);
        assert_eq!(classify(""), Typed::Send);
        assert_eq!(classify("/join rust"), Typed::Send);
        assert_eq!(classify("//clear"), Typed::Send);
        assert_eq!(classify(" /quit"), Typed::Send);
        assert_eq!(classify("/quitting"), Typed::Send);
        assert_eq!(classify("/clearly"), Typed::Send);
    }

    #[test]
    fn name_prompt_is_news_until_a_name_is_accepted() {
        let mut watch = NameWatch::default();
        assert_eq!(watch.observe("* welcome to chatroom"), None);
        assert_eq!(watch.observe("Name:"), Some(NameNews::Asked));
        assert_eq!(watch.observe("! name taken"), None);
        assert_eq!(watch.observe("Name:"), Some(NameNews::Asked));
        assert_eq!(watch.observe("* you are alice"), Some(NameNews::Accepted));
        assert_eq!(watch.observe("Name:"), None);
        assert_eq!(watch.observe("* bob joined"), None);
    }

    #[test]
    fn password_prompt_is_news_only_during_the_login() {
        let mut watch = NameWatch::default();
        assert_eq!(watch.observe("Password:"), None);
        assert_eq!(watch.observe("Name:"), Some(NameNews::Asked));
        assert_eq!(watch.observe("Password:"), Some(NameNews::PasswordAsked));
        assert_eq!(watch.observe("! wrong name or password"), None);
        assert_eq!(watch.observe("Name:"), Some(NameNews::Asked));
        assert_eq!(watch.observe("Password:"), Some(NameNews::PasswordAsked));
        assert_eq!(
            watch.observe("* hello carol! type to chat"),
            Some(NameNews::Accepted)
        );
        assert_eq!(watch.observe("Password:"), None);
    }

    fn session() -> Session {
        Session::new("127.0.0.1:6622".to_owned())
    }

    #[test]
    fn server_closing_while_the_user_stays_is_a_lost_connection() {
        let mut session = session();
        let step = session.on(Event::ServerClosed(ConnectionEnd::Closed));
        let Step::Finish(Err(error)) = step else {
            panic!("expected a lost connection, got {step:?}");
        };
        assert_eq!(
            error.to_string(),
            "connection to 127.0.0.1:6622 lost: server closed the connection"
        );
    }

    #[test]
    fn read_error_while_chatting_names_the_cause() {
        let mut session = session();
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let step = session.on(Event::ServerClosed(ConnectionEnd::Failed(reset)));
        let Step::Finish(Err(error)) = step else {
            panic!("expected a lost connection, got {step:?}");
        };
        assert!(error.to_string().contains("lost: read failed"), "{error}");
    }

    #[test]
    fn quitting_then_the_server_closing_is_a_clean_exit() {
        let mut session = session();
        assert!(matches!(session.on(Event::Left), Step::WaitBriefly));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            session.on(Event::ServerClosed(ConnectionEnd::Failed(reset))),
            Step::Finish(Ok(()))
        ));
    }

    #[test]
    fn ctrl_c_asks_the_server_to_end_the_session_once() {
        let mut session = session();
        assert!(matches!(session.on(Event::Interrupted), Step::Quit));
        assert!(matches!(session.on(Event::Interrupted), Step::Wait));
        assert!(matches!(
            session.on(Event::ServerClosed(ConnectionEnd::Closed)),
            Step::Finish(Ok(()))
        ));
    }

    #[test]
    fn end_of_input_waits_for_the_server_without_a_time_limit() {
        let mut session = session();
        assert!(matches!(session.on(Event::InputEnded), Step::Wait));
        assert!(matches!(
            session.on(Event::ServerClosed(ConnectionEnd::Closed)),
            Step::Finish(Ok(()))
        ));
    }

    #[test]
    fn ctrl_c_after_end_of_input_stops_waiting_soon() {
        let mut session = session();
        assert!(matches!(session.on(Event::InputEnded), Step::Wait));
        assert!(matches!(session.on(Event::Interrupted), Step::WaitBriefly));
    }

    #[test]
    fn closed_output_leaves_quietly() {
        let mut session = session();
        assert!(matches!(session.on(Event::OutputClosed), Step::Quit));
        assert!(matches!(
            session.on(Event::ServerClosed(ConnectionEnd::Closed)),
            Step::Finish(Ok(()))
        ));
    }

    #[test]
    fn send_failure_while_chatting_is_a_lost_connection_but_not_after_leaving() {
        let pipe = || io::Error::from(io::ErrorKind::BrokenPipe);
        let mut chatting = session();
        let step = chatting.on(Event::SendFailed(pipe()));
        let Step::Finish(Err(error)) = step else {
            panic!("expected a lost connection, got {step:?}");
        };
        assert!(error.to_string().contains("lost: send failed"), "{error}");

        let mut leaving = session();
        assert!(matches!(leaving.on(Event::Left), Step::WaitBriefly));
        assert!(matches!(leaving.on(Event::SendFailed(pipe())), Step::Wait));
    }
}

//! The full-screen client's state: a plain struct driven by events.
//!
//! [`App::handle`] takes one [`Input`] (a key, a mouse wheel, a resize, a
//! line from the server, a connection opened or lost, a tick of the clock)
//! and returns the [`Action`]s the caller must carry out (send a line, open a
//! connection, ring the bell, write a file, exit). It never touches a socket,
//! a file or the terminal, and it is told the time, so tests drive it
//! without either.
//!
//! # Connections
//! Each connection attempt has a number (`conn`); news about an older one
//! is ignored. A connection starts with `/mode json`; the login prompts are
//! answered from what the user typed before (`--name`, or the name and
//! password of the last login) or else asked for. When the connection drops
//! after a login, the client waits ([`backoff`]), connects again, logs in
//! again and returns to the room it was in, while the line being typed stays
//! where it is.
//!
//! # The side pane
//! Kept current from the server's events, without polling: the room list
//! comes once after login (`/list`, not shown in the chat pane) and then
//! grows with `room_created` events; the people in the room and the room's
//! count follow `members`, `join`, `leave` and `quit` events. Other rooms'
//! counts are as of the last `/list` (typing `/list` refreshes them). A
//! server with thousands of rooms or people thus costs the client nothing
//! every few seconds, and no reply can grow past what a client may queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::chat::{Chat, ChatLine, Kind, mentions};
use super::editor::Editor;
use super::protocol::{self, Event, Field, HelpEntry};
use crate::client::link::sanitise;

/// Time allowed for the server to close the connection after `/quit`.
pub const LEAVE_GRACE: Duration = crate::client::link::LEAVE_GRACE;

/// The first wait before reconnecting: long enough not to hammer a server
/// that is restarting.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to reconnect.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Attempts to reconnect, one after the other, before the client decides the
/// server is gone for good: about three minutes with [`backoff`].
pub const RECONNECT_ATTEMPTS: u32 = 10;

/// Rows the mouse wheel scrolls at a time.
const WHEEL_ROWS: usize = 3;

/// Commands offered to Tab before the server's `/help` has answered.
const KNOWN_COMMANDS: [&str; 13] = [
    "/help", "/list", "/create", "/join", "/leave", "/who", "/msg", "/quit", "/mode", "/clear",
    "/save", "/history", "/search",
];

/// Messages asked for at a time when the user scrolls past the oldest line.
pub const OLDER_PAGE: usize = 50;

/// The wait before reconnect attempt `attempt` (1 for the first): doubling
/// from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`].
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// Something that happened, for [`App::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A key was pressed.
    Key(KeyEvent),
    /// The mouse did something (only the wheel matters).
    Mouse(MouseEvent),
    /// Text was pasted.
    Paste(String),
    /// The terminal is now this many columns and rows.
    Resize(u16, u16),
    /// Connection `conn` is open.
    Connected {
        /// Its number.
        conn: u64,
    },
    /// Connection `conn` could not be opened.
    ConnectFailed {
        /// Its number.
        conn: u64,
        /// Why, in words.
        reason: String,
    },
    /// Connection `conn` brought a line (without its line ending).
    Line {
        /// Its number.
        conn: u64,
        /// The line.
        line: String,
    },
    /// Connection `conn` ended.
    Closed {
        /// Its number.
        conn: u64,
        /// How, in words.
        reason: String,
    },
    /// Ctrl-C from outside the terminal's keys: SIGINT, SIGTERM, SIGHUP.
    Interrupted,
    /// The clock moved on.
    Tick,
    /// `/save` was carried out: the lines written, or why not.
    Saved {
        /// The file.
        path: String,
        /// How many lines were written, or the failure in words.
        result: Result<usize, String>,
    },
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one line (the `\n` is added by the caller) on connection `conn`.
    Send {
        /// The connection.
        conn: u64,
        /// The line.
        line: String,
    },
    /// Open connection number `conn`.
    Connect {
        /// Its number.
        conn: u64,
    },
    /// Ring the terminal bell.
    Bell,
    /// Write `text` to the file `path`, then report [`Input::Saved`].
    Save {
        /// The file.
        path: String,
        /// The transcript.
        text: String,
    },
    /// Clear the terminal and draw everything again (Ctrl-L).
    Redraw,
    /// Restore the terminal and end the program.
    Exit(Ending),
}

/// How the program ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The user left: exit 0.
    Left,
    /// The connection was lost before a login, so there is nothing to go
    /// back to: exit 1.
    Lost {
        /// Why, in words.
        reason: String,
    },
    /// The server stayed away for [`RECONNECT_ATTEMPTS`] attempts: exit 1.
    GaveUp {
        /// Why the last attempt failed.
        reason: String,
    },
}

/// The state of the connection, as the status bar tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Opening a connection.
    Connecting,
    /// Connected, not logged in yet.
    LoggingIn,
    /// Logged in.
    Online,
    /// Lost; the next attempt is at `until`.
    Waiting {
        /// When to try again.
        until: Instant,
        /// The attempt that will be made then.
        attempt: u32,
    },
    /// `/quit` sent; the server should close the connection by `until`.
    Leaving {
        /// When to stop waiting.
        until: Instant,
    },
}

/// What the input line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Chat lines and commands.
    Chat,
    /// The name to log in with.
    Name,
    /// The password, shown as `*`.
    Password,
}

/// The login exchange of one connection.
#[derive(Debug, Default)]
struct Handshake {
    /// Whether the server speaks JSON: unknown until it confirms the switch
    /// or refuses `/mode json` as a name (a server without the mode).
    json: Option<bool>,
    /// A prompt that came before the mode was known.
    held: Option<Field>,
    /// The prompt answered last, while its reply has not come: a second
    /// prompt of the same field without an error in between is the same one.
    answered: Option<Field>,
    /// The name to send at the prompt without asking (once).
    auto_name: Option<String>,
    /// The password to send at the prompt without asking (once).
    auto_password: Option<String>,
    /// The password sent in this login, kept for reconnects once it works.
    sent_password: Option<String>,
    /// Logged in on this connection.
    welcomed: bool,
    /// The last error before the login, to tell if the server closes.
    last_error: Option<String>,
    /// A login prompt was answered on this connection: an error after it
    /// is about the login, one before it is the door (server full).
    answered_any: bool,
    /// The last time the bye or shutdown text arrived: the server closing
    /// after it is expected.
    goodbye: bool,
}

/// Replies the client asked for itself, in the order they were asked: each
/// entry says whether the user asked (show it) or the client did (do not).
#[derive(Debug, Default)]
struct Asked {
    rooms: VecDeque<bool>,
    users: VecDeque<bool>,
    help: VecDeque<bool>,
}

/// Older messages of the room, loaded when the user scrolls past the oldest
/// line (`/history before ID`).
#[derive(Debug, Default)]
struct Older {
    /// The oldest message id of the user's room in the pane.
    floor: Option<u64>,
    /// A page was asked for and has not come yet.
    asked: bool,
    /// The page being received.
    page: Option<Vec<ChatLine>>,
    /// The room's first message is in the pane: nothing older to load.
    start: bool,
}

/// One message `/search` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Its id.
    pub id: Option<u64>,
    /// When, as `YYYY-MM-DD HH:MM`, local time.
    pub when: String,
    /// Where: `#room`, or `whisper to NAME`.
    pub place: String,
    /// Who said it.
    pub from: String,
    /// What was said.
    pub text: String,
}

/// The results of the last `/search`, in a pane above the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPane {
    /// The words searched for.
    pub query: String,
    /// The room searched, if only one.
    pub room: Option<String>,
    /// While the server's index was being built: how far, in per cent.
    pub building: Option<u8>,
    /// What was found, newest first.
    pub hits: Vec<Hit>,
    /// Rows scrolled down from the first hit (Ctrl-N, Ctrl-P).
    pub scroll: usize,
    /// The results are still arriving.
    filling: bool,
}

/// The whole state of the full-screen client.
#[derive(Debug)]
pub struct App {
    /// The server's address, for the status bar.
    pub server: String,
    /// The connection's state.
    pub link: Link,
    /// The name logged in with (kept while reconnecting).
    pub name: Option<String>,
    /// `admin` or `member`.
    pub role: Option<String>,
    /// The room the user is in (`None`: the lobby or not known yet).
    pub room: Option<String>,
    /// Everyone in the user's room.
    pub members: Vec<String>,
    /// Every room and how many are in it.
    pub rooms: Vec<(String, usize)>,
    /// Everyone online (for Tab).
    pub online: Vec<String>,
    /// The chat pane.
    pub chat: Chat,
    /// The search pane, while open (Esc closes it).
    pub search: Option<SearchPane>,
    /// The chat line being typed.
    pub input: Editor,
    /// The login line being typed (name or password).
    pub login: Editor,
    /// What the input line is for.
    pub entry: Entry,
    /// The terminal's size.
    pub size: (u16, u16),
    /// The time of the last input.
    pub now: Instant,
    /// The time of day for lines that carry none, `HH:MM:SS`; replaceable
    /// so that tests see a fixed clock.
    pub wall_clock: fn() -> String,
    conn: u64,
    handshake: Handshake,
    /// The password that logged in last; re-sent on reconnect, never shown.
    password: Option<String>,
    /// The room to return to once logged in again.
    rejoin: Option<Option<String>>,
    /// Skip the history of this room (the default room passed through on
    /// the way back to the user's room after a reconnect).
    skip_history: Option<String>,
    /// Inside a history replay of this room.
    in_history: Option<Option<String>>,
    /// Logged in at least once: a lost connection is then worth retrying.
    ever_online: bool,
    /// Failed attempts since the last login.
    attempts: u32,
    asked: Asked,
    older: Older,
    commands: Vec<String>,
    help: Vec<HelpEntry>,
}

fn local_clock() -> String {
    Local::now().format("%H:%M:%S").to_string()
}

fn clean(text: &str) -> String {
    sanitise(text).into_owned()
}

fn same(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn same_room(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The date and time of an RFC 3339 timestamp, in local time.
fn date_of(time: &str) -> String {
    DateTime::parse_from_rfc3339(time).map_or_else(
        |_| time.to_owned(),
        |t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string(),
    )
}

/// The time of day of an RFC 3339 timestamp, in local time.
fn clock_of(time: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
}

/// A room as the user reads it: `#dev`, or `the lobby`.
pub fn room_label(room: Option<&str>) -> String {
    room.map_or_else(|| "the lobby".to_owned(), |r| format!("#{r}"))
}

impl App {
    /// A client for the server at `server` (`host:port`), about to open its
    /// first connection, which will have number 1; `name` is sent at the
    /// first name prompt instead of asking.
    pub fn new(server: String, name: Option<String>, now: Instant) -> Self {
        Self {
            server,
            link: Link::Connecting,
            name: None,
            role: None,
            room: None,
            members: Vec::new(),
            rooms: Vec::new(),
            online: Vec::new(),
            chat: Chat::default(),
            search: None,
            input: Editor::default(),
            login: Editor::default(),
            entry: Entry::Chat,
            size: (80, 24),
            now,
            wall_clock: local_clock,
            conn: 1,
            handshake: Handshake {
                auto_name: name,
                ..Handshake::default()
            },
            password: None,
            rejoin: None,
            skip_history: None,
            in_history: None,
            ever_online: false,
            attempts: 0,
            asked: Asked::default(),
            older: Older::default(),
            commands: KNOWN_COMMANDS.iter().map(|c| (*c).to_owned()).collect(),
            help: Vec::new(),
        }
    }

    /// The number of the current connection.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Whether the server speaks JSON on this connection (the side pane is
    /// kept only then).
    pub fn json(&self) -> bool {
        self.handshake.json == Some(true)
    }

    /// The commands Tab completes.
    pub fn commands(&self) -> &[String] {
        &self.commands
    }

    /// Handles one input at time `now`; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        self.now = now;
        let mut actions = Vec::new();
        match input {
            Input::Key(key) => self.key(key, &mut actions),
            Input::Mouse(mouse) => match mouse.kind {
                MouseEventKind::ScrollUp => {
                    self.chat.scroll_up(WHEEL_ROWS);
                    self.load_older(&mut actions);
                }
                MouseEventKind::ScrollDown => self.chat.scroll_down(WHEEL_ROWS),
                _ => {}
            },
            Input::Paste(text) => self.editor().insert_str(&text),
            Input::Resize(width, height) => self.size = (width, height),
            Input::Connected { conn } if conn == self.conn => {
                self.link = Link::LoggingIn;
                let auto_name = self
                    .handshake
                    .auto_name
                    .take()
                    .or_else(|| self.name.clone());
                self.handshake = Handshake {
                    auto_name,
                    auto_password: self.password.clone(),
                    ..Handshake::default()
                };
                self.asked = Asked::default();
                self.send(protocol::JSON_MODE_REQUEST, &mut actions);
            }
            Input::ConnectFailed { conn, reason } if conn == self.conn => {
                self.lost(&reason, &mut actions);
            }
            Input::Line { conn, line } if conn == self.conn => {
                for event in protocol::parse(&line) {
                    self.event(event, &mut actions);
                }
            }
            Input::Closed { conn, reason } if conn == self.conn => {
                self.closed(reason, &mut actions)
            }
            Input::Interrupted => self.quit(&mut actions),
            Input::Tick => self.tick(&mut actions),
            Input::Saved { path, result } => match result {
                Ok(lines) => self.notice(format!("saved {lines} lines to {path}")),
                Err(why) => self.error(format!("cannot save to {path}: {why}")),
            },
            Input::Connected { .. }
            | Input::ConnectFailed { .. }
            | Input::Line { .. }
            | Input::Closed { .. } => {}
        }
        actions
    }

    /// The editor the keys go to.
    fn editor(&mut self) -> &mut Editor {
        match self.entry {
            Entry::Chat => &mut self.input,
            Entry::Name | Entry::Password => &mut self.login,
        }
    }

    /// The width of the chat pane, as the view lays it out.
    pub fn chat_width(&self) -> usize {
        usize::from(super::view::chat_width(self.size.0))
    }

    fn chat_height(&self) -> usize {
        usize::from(super::view::chat_pane_height(
            self.size.1,
            self.search.is_some(),
        ))
    }

    /// Asks for older messages of the room when the pane shows its oldest
    /// line and the user scrolls further up.
    fn load_older(&mut self, actions: &mut Vec<Action>) {
        if self.link != Link::Online
            || !self.json()
            || self.room.is_none()
            || self.older.asked
            || self.older.start
            || self.chat.is_full()
            || !self.chat.at_top(self.chat_width(), self.chat_height())
        {
            return;
        }
        self.older.asked = true;
        let line = match self.older.floor {
            Some(id) => format!("/history before {id} {OLDER_PAGE}"),
            None => format!("/history {OLDER_PAGE}"),
        };
        self.send(&line, actions);
    }

    /// A page of older messages has come: on top of the pane.
    fn older_page_done(&mut self, more: Option<bool>) {
        let Some(page) = self.older.page.take() else {
            return;
        };
        let asked = std::mem::replace(&mut self.older.asked, false);
        let mut lines = Vec::new();
        if more == Some(false) {
            self.older.start = true;
            lines.push(self.line(
                Kind::Notice,
                format!("the start of {}", room_label(self.room.as_deref())),
            ));
        }
        let count = page.len();
        lines.extend(page);
        self.chat.prepend(lines);
        if !asked {
            self.notice(format!(
                "{count} older messages of {} added above (PgUp)",
                room_label(self.room.as_deref())
            ));
        }
    }

    fn push(&mut self, line: ChatLine) -> bool {
        let width = self.chat_width();
        self.chat.push(line, width)
    }

    fn line(&self, kind: Kind, text: String) -> ChatLine {
        ChatLine {
            clock: (self.wall_clock)(),
            kind,
            text,
            mention: false,
            id: None,
        }
    }

    /// Shows a `* ` line.
    fn notice(&mut self, text: String) {
        let line = self.line(Kind::Notice, clean(&text));
        self.push(line);
    }

    /// Shows a `! ` line.
    fn error(&mut self, text: String) {
        let line = self.line(Kind::Error, clean(&text));
        self.push(line);
    }

    fn send(&self, line: &str, actions: &mut Vec<Action>) {
        actions.push(Action::Send {
            conn: self.conn,
            line: line.to_owned(),
        });
    }

    fn key(&mut self, key: KeyEvent, actions: &mut Vec<Action>) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => self.quit(actions),
            KeyCode::Char('d') if ctrl => {
                if self.editor().is_empty() {
                    self.quit(actions);
                } else {
                    self.editor().delete();
                }
            }
            KeyCode::Char('l') if ctrl => actions.push(Action::Redraw),
            KeyCode::Char('n') if ctrl => {
                if let Some(pane) = &mut self.search {
                    pane.scroll = (pane.scroll + 1).min(pane.hits.len().saturating_sub(1));
                }
            }
            KeyCode::Char('p') if ctrl => {
                if let Some(pane) = &mut self.search {
                    pane.scroll = pane.scroll.saturating_sub(1);
                }
            }
            KeyCode::Esc => self.search = None,
            KeyCode::Char('w') if ctrl => self.editor().delete_word(),
            KeyCode::Char('u') if ctrl => self.editor().delete_to_start(),
            KeyCode::Char('a') if ctrl => self.editor().home(),
            KeyCode::Char('e') if ctrl => self.editor().end(),
            KeyCode::Char(_) if ctrl => {}
            KeyCode::Char(c) => self.editor().insert(c),
            KeyCode::Backspace => self.editor().backspace(),
            KeyCode::Delete => self.editor().delete(),
            KeyCode::Left => self.editor().left(),
            KeyCode::Right => self.editor().right(),
            KeyCode::Home => self.editor().home(),
            KeyCode::End => {
                self.editor().end();
                self.chat.to_live();
            }
            KeyCode::PageUp => {
                let rows = self.chat_height().saturating_sub(1).max(1);
                self.chat.scroll_up(rows);
                self.load_older(actions);
            }
            KeyCode::PageDown => {
                let rows = self.chat_height().saturating_sub(1).max(1);
                self.chat.scroll_down(rows);
            }
            KeyCode::Up if self.entry == Entry::Chat => self.input.history_up(),
            KeyCode::Down if self.entry == Entry::Chat => self.input.history_down(),
            KeyCode::Tab | KeyCode::BackTab if self.entry == Entry::Chat => {
                let mut names = self.online.clone();
                names.extend(self.members.iter().cloned());
                let backwards = key.code == KeyCode::BackTab;
                self.input.complete(&self.commands, &names, backwards);
            }
            KeyCode::Enter => self.enter(actions),
            _ => {}
        }
    }

    /// Enter: sends the line, or answers the login prompt.
    fn enter(&mut self, actions: &mut Vec<Action>) {
        match self.entry {
            Entry::Name => {
                let name = self.login.take(false);
                self.entry = Entry::Chat;
                self.handshake.answered = Some(Field::Name);
                self.send(&name, actions);
            }
            Entry::Password => {
                let password = self.login.take(false);
                self.entry = Entry::Chat;
                self.handshake.answered = Some(Field::Password);
                self.send(&password, actions);
                self.handshake.sent_password = Some(password);
            }
            Entry::Chat => self.enter_chat(actions),
        }
    }

    fn enter_chat(&mut self, actions: &mut Vec<Action>) {
        let text = self.input.text();
        if text.trim().is_empty() {
            self.input.clear();
            return;
        }
        let mut words = text.split_whitespace();
        let command = words.next().unwrap_or_default().to_lowercase();
        match command.as_str() {
            "/clear" => {
                self.input.take(true);
                self.chat.clear();
                return;
            }
            "/save" => {
                self.input.take(true);
                let path = text.trim_start()["/save".len()..].trim().to_owned();
                if path.is_empty() {
                    self.error("usage: /save FILE".to_owned());
                } else {
                    let mut transcript = String::new();
                    for line in self.chat.transcript() {
                        transcript.push_str(&line.plain());
                        transcript.push('\n');
                    }
                    actions.push(Action::Save {
                        path,
                        text: transcript,
                    });
                }
                return;
            }
            "/quit" if self.link == Link::Online => {
                self.input.take(true);
                self.quit(actions);
                return;
            }
            "/quit" => {
                self.input.take(true);
                actions.push(Action::Exit(Ending::Left));
                return;
            }
            _ => {}
        }
        if self.link != Link::Online {
            // Kept in the input line: it can be sent once logged in again.
            self.error("not connected; the line is kept and can be sent once reconnected".into());
            return;
        }
        let line = self.input.take(true);
        if self.json() {
            match command.as_str() {
                "/list" => self.asked.rooms.push_back(true),
                "/who" | "/clients" => self.asked.users.push_back(true),
                "/help" | "/commands" => self.asked.help.push_back(true),
                _ => {}
            }
        }
        self.chat.to_live();
        self.send(&line, actions);
    }

    /// Leaves: `/quit` if logged in, and waits for the server to close;
    /// otherwise at once.
    fn quit(&mut self, actions: &mut Vec<Action>) {
        match self.link {
            Link::Online => {
                self.send("/quit", actions);
                self.link = Link::Leaving {
                    until: self.now + LEAVE_GRACE,
                };
            }
            Link::Leaving { .. } => {}
            _ => actions.push(Action::Exit(Ending::Left)),
        }
    }

    fn tick(&mut self, actions: &mut Vec<Action>) {
        match self.link {
            Link::Leaving { until } if self.now >= until => {
                actions.push(Action::Exit(Ending::Left));
            }
            Link::Waiting { until, .. } if self.now >= until => {
                self.conn += 1;
                self.link = Link::Connecting;
                actions.push(Action::Connect { conn: self.conn });
            }
            _ => {}
        }
    }

    /// The connection ended.
    fn closed(&mut self, reason: String, actions: &mut Vec<Action>) {
        if matches!(self.link, Link::Leaving { .. }) {
            actions.push(Action::Exit(Ending::Left));
            return;
        }
        if !self.handshake.welcomed
            && let Some(error) = self.handshake.last_error.take()
        {
            if self.ever_online && !self.handshake.answered_any {
                // Turned away at the door (server full): worth another try.
                self.lost(&error, actions);
                return;
            }
            // The login refused (banned, wrong password too often, no
            // name in time): trying again would only be refused again.
            actions.push(Action::Exit(Ending::Lost { reason: error }));
            return;
        }
        let reason = if self.handshake.goodbye {
            "the server has stopped".to_owned()
        } else {
            reason
        };
        self.lost(&reason, actions);
    }

    /// The connection was lost or could not be made: try again later, or
    /// give up.
    fn lost(&mut self, reason: &str, actions: &mut Vec<Action>) {
        if !self.ever_online {
            actions.push(Action::Exit(Ending::Lost {
                reason: reason.to_owned(),
            }));
            return;
        }
        if self.link == Link::Online {
            self.rejoin = Some(self.room.clone());
        }
        // A search cut off by the loss ends here: what comes after the
        // reconnect is chat, not results.
        if let Some(pane) = &mut self.search {
            pane.filling = false;
        }
        if self.entry != Entry::Chat {
            self.entry = Entry::Chat;
            self.login.clear();
        }
        self.attempts += 1;
        if self.attempts > RECONNECT_ATTEMPTS {
            actions.push(Action::Exit(Ending::GaveUp {
                reason: reason.to_owned(),
            }));
            return;
        }
        let wait = backoff(self.attempts);
        self.link = Link::Waiting {
            until: self.now + wait,
            attempt: self.attempts,
        };
        self.error(format!(
            "connection lost ({reason}); trying again in {}s",
            wait.as_secs()
        ));
    }

    /// Answers a login prompt, or asks the user.
    fn prompt(&mut self, field: Field, actions: &mut Vec<Action>) {
        if self.handshake.json.is_none() {
            self.handshake.held = Some(field);
            return;
        }
        if self.handshake.answered == Some(field) {
            return;
        }
        self.handshake.answered = Some(field);
        self.handshake.answered_any = true;
        let known = match field {
            Field::Name => self.handshake.auto_name.take(),
            Field::Password => self.handshake.auto_password.take(),
        };
        match known {
            Some(answer) => {
                if field == Field::Password {
                    self.handshake.sent_password = Some(answer.clone());
                }
                self.send(&answer, actions);
            }
            None => {
                self.login.clear();
                self.entry = match field {
                    Field::Name => Entry::Name,
                    Field::Password => Entry::Password,
                };
            }
        }
    }

    fn event(&mut self, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::Mode { mode } => {
                self.handshake.json = Some(mode == "json");
                if let Some(field) = self.handshake.held.take() {
                    self.prompt(field, actions);
                }
            }
            Event::Prompt { field } => self.prompt(field, actions),
            Event::Error { text } if self.handshake.json.is_none() => {
                // A server without the JSON mode refused `/mode json` as a
                // name: it speaks text, and the prompt seen was spent.
                log::debug!("no JSON mode: {text}");
                self.handshake.json = Some(false);
                self.handshake.held = None;
                // Or turned away at the door: said if the server closes now.
                self.handshake.last_error = Some(clean(&text));
            }
            Event::Error { text } => {
                // A `/history` asked for may have been refused (the index
                // being rebuilt): the next scroll asks again.
                self.older.asked = false;
                if !self.handshake.welcomed {
                    self.handshake.answered = None;
                    self.handshake.last_error = Some(clean(&text));
                }
                self.error(text);
            }
            // Said once: a reconnect need not greet again.
            Event::Hello { text } if !self.ever_online => self.notice(text),
            Event::Hello { .. } => {}
            Event::Welcome { name, role } => self.welcome(&clean(&name), role, actions),
            Event::Room { room } => self.entered(room.map(|r| clean(&r)), actions),
            Event::Members { room, members } => {
                if same_room(room.as_deref(), self.room.as_deref()) {
                    self.members = members.iter().map(|m| clean(m)).collect();
                    self.members.sort_by_key(|m| m.to_lowercase());
                    for name in self.members.clone() {
                        self.seen_online(&name);
                    }
                    self.count_members();
                }
            }
            Event::History {
                before: Some(_), ..
            } => self.older.page = Some(Vec::new()),
            Event::History { room, .. } => self.in_history = Some(room),
            Event::HistoryEnd { more, .. } if self.older.page.is_some() => {
                self.older_page_done(more);
            }
            Event::HistoryEnd { .. } => self.in_history = None,
            Event::Search {
                query,
                room,
                building,
                ..
            } => {
                self.search = Some(SearchPane {
                    query: clean(&query),
                    room: room.map(|r| clean(&r)),
                    building,
                    hits: Vec::new(),
                    scroll: 0,
                    filling: true,
                });
            }
            Event::SearchEnd { .. } => {
                if let Some(pane) = &mut self.search {
                    pane.filling = false;
                }
            }
            Event::Message {
                id,
                time,
                room,
                from,
                text,
            } if self.search.as_ref().is_some_and(|p| p.filling) => {
                if let Some(pane) = &mut self.search {
                    pane.hits.push(Hit {
                        id,
                        when: date_of(&time),
                        place: room_label(room.as_deref().map(clean).as_deref()),
                        from: clean(&from),
                        text: clean(&text),
                    });
                }
            }
            Event::Whisper {
                id,
                time,
                from,
                to,
                text,
            } if self.search.as_ref().is_some_and(|p| p.filling) => {
                if let Some(pane) = &mut self.search {
                    pane.hits.push(Hit {
                        id,
                        when: date_of(&time),
                        place: format!("whisper to {}", clean(&to)),
                        from: clean(&from),
                        text: clean(&text),
                    });
                }
            }
            Event::Message {
                id,
                time,
                room,
                from,
                text,
            } => {
                if self.in_history.is_some() && self.skip_history.is_some() {
                    return;
                }
                if let Some(id) = id
                    && same_room(room.as_deref(), self.room.as_deref())
                {
                    self.older.floor = Some(self.older.floor.map_or(id, |f| f.min(id)));
                }
                let from = clean(&from);
                let text = clean(&text);
                let me = self.name.clone().unwrap_or_default();
                let mention = !same(&from, &me) && mentions(&text, &me);
                let line = ChatLine {
                    clock: clock_of(&time).unwrap_or_else(|| (self.wall_clock)()),
                    kind: Kind::Message { from },
                    text,
                    mention,
                    id,
                };
                if let Some(page) = &mut self.older.page {
                    page.push(line);
                    return;
                }
                // Only news rings: not replayed history, not a repeat.
                if self.push(line) && mention && self.in_history.is_none() {
                    actions.push(Action::Bell);
                }
            }
            Event::Whisper {
                id,
                time,
                from,
                to,
                text,
            } => {
                let line = ChatLine {
                    clock: clock_of(&time).unwrap_or_else(|| (self.wall_clock)()),
                    kind: Kind::Whisper {
                        from: clean(&from),
                        to: clean(&to),
                    },
                    text: clean(&text),
                    mention: false,
                    id,
                };
                self.push(line);
            }
            Event::Join { room, name } => {
                let name = clean(&name);
                if same_room(room.as_deref(), self.room.as_deref())
                    && !self.members.iter().any(|m| same(m, &name))
                {
                    self.members.push(name.clone());
                    self.members.sort_by_key(|m| m.to_lowercase());
                }
                self.seen_online(&name);
                if same_room(room.as_deref(), self.room.as_deref()) {
                    self.count_members();
                }
                self.notice(format!("{name} joined {}", room_label(room.as_deref())));
            }
            Event::Leave { room, name } => {
                let name = clean(&name);
                self.members.retain(|m| !same(m, &name));
                if let Some(room) = &room {
                    self.count_room(room, |count| count.saturating_sub(1));
                }
                self.notice(format!("{name} left {}", room_label(room.as_deref())));
            }
            Event::Quit { room, name } => {
                let name = clean(&name);
                self.members.retain(|m| !same(m, &name));
                self.online.retain(|m| !same(m, &name));
                if let Some(room) = &room {
                    self.count_room(room, |count| count.saturating_sub(1));
                }
                self.notice(format!("{name} left the chat"));
            }
            Event::Rooms {
                rooms,
                total,
                page,
                pages,
            } => {
                let listed: Vec<(String, usize)> =
                    rooms.iter().map(|r| (clean(&r.name), r.members)).collect();
                // The pane keeps every room it has heard of; a page updates
                // the ones on it.
                for (name, count) in &listed {
                    match self.rooms.iter_mut().find(|(known, _)| same(known, name)) {
                        Some(known) => known.1 = *count,
                        None => self.rooms.push((name.clone(), *count)),
                    }
                }
                self.rooms.sort_by_key(|(name, _)| name.to_lowercase());
                if self.asked.rooms.pop_front().unwrap_or(true) {
                    if listed.is_empty() {
                        self.notice("there are no rooms yet; /create ROOM makes one".into());
                    } else {
                        let total = total.unwrap_or(listed.len());
                        match (page, pages) {
                            (Some(page), Some(pages)) if pages > 1 => {
                                self.notice(format!("rooms ({total}), page {page} of {pages}:"))
                            }
                            _ => self.notice(format!("rooms ({total}):")),
                        }
                        for (name, count) in listed {
                            self.notice(format!("  #{name} ({count} online)"));
                        }
                        if let (Some(page), Some(pages)) = (page, pages)
                            && page < pages
                        {
                            self.notice(format!("/list {} shows the next page", page + 1));
                        }
                    }
                }
            }
            Event::RoomCreated { room, .. } => {
                let room = clean(&room);
                if !self.rooms.iter().any(|(known, _)| same(known, &room)) {
                    self.rooms.push((room, 0));
                    self.rooms.sort_by_key(|(name, _)| name.to_lowercase());
                }
            }
            Event::Users { users, .. } => {
                for user in &users {
                    self.seen_online(&clean(&user.name));
                }
                let here: Vec<String> = users
                    .iter()
                    .filter(|u| {
                        self.room.is_some() && same_room(u.room.as_deref(), self.room.as_deref())
                    })
                    .map(|u| clean(&u.name))
                    .collect();
                if self.room.is_some() {
                    self.members = here;
                    self.members.sort_by_key(|m| m.to_lowercase());
                }
                if self.asked.users.pop_front().unwrap_or(true) {
                    self.notice(format!("online ({}):", users.len()));
                    for user in &users {
                        self.notice(format!(
                            "  {} in {}",
                            clean(&user.name),
                            room_label(user.room.as_deref().map(clean).as_deref())
                        ));
                    }
                }
            }
            Event::Help { commands } => {
                let mut known: Vec<String> = commands
                    .iter()
                    .filter_map(|c| c.usage.split_whitespace().next())
                    .filter(|w| w.starts_with('/') && !w.starts_with("//"))
                    .map(|w| clean(&w.to_lowercase()))
                    .collect();
                known.extend(["/clear".to_owned(), "/save".to_owned()]);
                known.sort();
                known.dedup();
                self.commands = known;
                self.help = commands;
                if self.asked.help.pop_front().unwrap_or(true) {
                    self.show_help();
                }
            }
            Event::Notice { text } => self.notice(text),
            Event::Bye { text } => {
                self.handshake.goodbye = true;
                if !matches!(self.link, Link::Leaving { .. }) {
                    // Sent away by the server: leaving all the same.
                    self.link = Link::Leaving {
                        until: self.now + LEAVE_GRACE,
                    };
                }
                self.notice(text);
            }
            Event::Shutdown { text } => {
                self.handshake.goodbye = true;
                self.notice(text);
            }
            Event::Text { line } => {
                let line = self.line(Kind::Text, clean(&line));
                self.push(line);
            }
        }
    }

    fn show_help(&mut self) {
        self.notice("commands:".into());
        let width = self
            .help
            .iter()
            .map(|c| c.usage.chars().count())
            .max()
            .unwrap_or(0)
            .max(10);
        for entry in self.help.clone() {
            self.notice(format!("  {:width$}  {}", entry.usage, entry.text));
        }
        self.notice(format!(
            "  {:width$}  {}",
            "/clear", "clear this pane (this client only)"
        ));
        self.notice(format!(
            "  {:width$}  {}",
            "/save FILE", "write what was received to FILE as plain text"
        ));
    }

    fn welcome(&mut self, name: &str, role: Option<String>, actions: &mut Vec<Action>) {
        self.name = Some(name.to_owned());
        self.role = role.map(|r| clean(&r));
        self.link = Link::Online;
        self.attempts = 0;
        self.handshake.welcomed = true;
        self.handshake.answered = None;
        self.handshake.last_error = None;
        if let Some(password) = self.handshake.sent_password.take() {
            self.password = Some(password);
        }
        if self.json() {
            let again = self.ever_online;
            self.notice(if again {
                format!("logged in again as {name}")
            } else {
                format!("hello {name}! type to chat; /help lists the commands, Tab completes")
            });
            // The server's commands, for Tab (an admin has more), and the
            // rooms, kept current from events after this.
            self.asked.help.push_back(false);
            self.send("/help", actions);
            self.asked.rooms.push_back(false);
            self.send("/list", actions);
        }
        self.ever_online = true;
    }

    fn entered(&mut self, room: Option<String>, actions: &mut Vec<Action>) {
        if let Some(old) = self.room.take() {
            self.count_room(&old, |count| count.saturating_sub(1));
        }
        if let Some(new) = &room {
            // Counted in; a members event (small rooms) then gives the count.
            self.count_room(new, |count| count + 1);
        }
        self.room = room.clone();
        self.older = Older::default();
        self.members.clear();
        self.skip_history = None;
        if let Some(target) = self.rejoin.take()
            && !same_room(target.as_deref(), room.as_deref())
        {
            // Passing through the default room on the way back.
            self.skip_history = room.clone();
            match &target {
                Some(target) => self.send(&format!("/join {target}"), actions),
                None => self.send("/leave", actions),
            }
            return;
        }
        if self.json() {
            self.notice(format!("you are in {}", room_label(room.as_deref())));
        }
    }

    /// Notes a name as online, for Tab.
    fn seen_online(&mut self, name: &str) {
        if !self.online.iter().any(|m| same(m, name)) {
            self.online.push(name.to_owned());
        }
    }

    /// Changes the count of a room in the side pane.
    fn count_room(&mut self, room: &str, change: impl FnOnce(usize) -> usize) {
        match self.rooms.iter_mut().find(|(known, _)| same(known, room)) {
            Some(known) => known.1 = change(known.1),
            None => {
                self.rooms.push((room.to_owned(), change(0)));
                self.rooms.sort_by_key(|(name, _)| name.to_lowercase());
            }
        }
    }

    /// The user's room counts the members the client knows of.
    fn count_members(&mut self) {
        if let Some(room) = self.room.clone() {
            let count = self.members.len();
            self.count_room(&room, |_| count);
        }
    }

    /// The status bar's words about the connection.
    pub fn link_label(&self) -> String {
        match self.link {
            Link::Connecting if self.ever_online => "reconnecting…".to_owned(),
            Link::Connecting => "connecting…".to_owned(),
            Link::LoggingIn => "logging in".to_owned(),
            Link::Online => "connected".to_owned(),
            Link::Waiting { until, attempt } => {
                let secs = until
                    .saturating_duration_since(self.now)
                    .as_secs_f32()
                    .ceil();
                format!("disconnected, retry {attempt} in {secs:.0}s")
            }
            Link::Leaving { .. } => "leaving".to_owned(),
        }
    }

    /// The label of the input line.
    pub fn prompt_label(&self) -> &'static str {
        match self.entry {
            Entry::Chat => "> ",
            Entry::Name => "name: ",
            Entry::Password => "password: ",
        }
    }
}

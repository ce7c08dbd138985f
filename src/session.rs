//! One client's thread: the greeting, the name prompt, then its lines and
//! commands until it leaves. Its cleanup sits in `Drop`, so it runs on every
//! way out, a panic included.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::command::{self, Command, HELP};
use crate::format;
use crate::limits::LINGER;
use crate::names::{self, NameError};
use crate::outbox::Outbox;
use crate::registry::{ClientId, Enter};
use crate::server::Context;
use crate::store::{EventRow, Request};
use crate::wire::{Line, LineReader, sanitize};

/// Serves one connection from greeting to goodbye. `_alive` is dropped when the
/// thread ends, which is how shutdown knows every client is done.
pub(crate) fn serve(
    context: Arc<Context>,
    stream: TcpStream,
    addr: SocketAddr,
    id: ClientId,
    alive: Sender<()>,
) {
    let stream = Arc::new(stream);
    let outbox = match Outbox::spawn(
        Arc::clone(&stream),
        context.config.outbox_bytes(),
        format!("writer-{id}"),
    ) {
        Ok(outbox) => outbox,
        Err(e) => {
            log::warn!("{addr} dropped: cannot start its writer: {e}");
            context.live.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    context
        .registry
        .connect(id, outbox.clone(), Arc::clone(&stream));
    log::info!("connect {} port {} thread {id}", addr.ip(), addr.port());
    let mut session = Session {
        context,
        stream,
        addr,
        id,
        outbox,
        name: None,
        gone: false,
        _alive: alive,
    };
    session.event("connect");
    session.run();
}

/// One connection and what the server knows of it.
struct Session {
    context: Arc<Context>,
    stream: Arc<TcpStream>,
    addr: SocketAddr,
    id: ClientId,
    outbox: Outbox,
    name: Option<Arc<str>>,
    /// Already taken out of the registry (after `/quit`).
    gone: bool,
    _alive: Sender<()>,
}

/// Whether the session goes on after a line.
enum Next {
    Continue,
    Quit,
}

impl Session {
    fn run(&mut self) {
        let online = self.context.registry.connections();
        self.notice(format_args!(
            "welcome to chatroom ({online} connected); choose a name: 1-32 characters, no spaces, or press Enter for a guest name"
        ));
        self.outbox.send(format::NAME_PROMPT.into());
        let stream = Arc::clone(&self.stream);
        let mut reader = LineReader::new(&*stream, self.context.config.max_line);
        if !self.ask_name(&mut reader) {
            return;
        }
        if let Err(e) = self.stream.set_read_timeout(None) {
            log::debug!("thread {}: {e}", self.id);
            return;
        }
        loop {
            let next = match reader.read_line() {
                Ok(Some(Line::Text(text))) => self.handle(&text),
                Ok(Some(Line::TooLong)) => {
                    self.error(format_args!(
                        "line too long (the limit is {} bytes); it was not sent",
                        self.context.config.max_line
                    ));
                    Next::Continue
                }
                Ok(Some(Line::NotUtf8)) => {
                    self.error("that line was not valid UTF-8 text; it was not sent");
                    Next::Continue
                }
                Ok(None) => return,
                Err(e) => {
                    log::debug!("thread {}: reading failed: {e}", self.id);
                    return;
                }
            };
            if let Next::Quit = next {
                self.linger(&mut reader);
                return;
            }
        }
    }

    /// The name prompt. Returns false if the client left or took too long.
    fn ask_name(&mut self, reader: &mut LineReader<&TcpStream>) -> bool {
        let timeout = self.context.config.name_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return self.name_timed_out(timeout);
            }
            let refused = match reader.read_line() {
                Ok(Some(Line::Text(text))) => match self.take_name(&text) {
                    Ok(()) => return true,
                    Err(e) => e.to_string(),
                },
                Ok(Some(Line::TooLong)) => NameError::TooLong.to_string(),
                Ok(Some(Line::NotUtf8)) => "a name must be UTF-8 text".to_string(),
                Ok(None) => return false,
                Err(e) if is_timeout(&e) => return self.name_timed_out(timeout),
                Err(_) => return false,
            };
            self.error(refused);
            self.outbox.send(format::NAME_PROMPT.into());
        }
    }

    fn name_timed_out(&self, timeout: std::time::Duration) -> bool {
        self.error(format_args!(
            "no name was given within {} seconds; reconnect to try again",
            timeout.as_secs()
        ));
        false
    }

    /// Claims the typed name (or a guest name), then puts the user in the
    /// default room.
    fn take_name(&mut self, typed: &str) -> Result<(), NameError> {
        let clean = sanitize(typed);
        let wanted = clean.trim();
        let registry = &self.context.registry;
        let name = if wanted.is_empty() {
            loop {
                let n = self.context.guests.fetch_add(1, Ordering::Relaxed);
                if let Ok(name) = registry.claim_name(self.id, &format!("Guest{n}")) {
                    break name;
                }
            }
        } else {
            names::check_name(wanted)?;
            registry.claim_name(self.id, wanted)?
        };
        self.name = Some(Arc::clone(&name));
        log::info!(
            "login {} port {} thread {} {name}",
            self.addr.ip(),
            self.addr.port(),
            self.id
        );
        self.event("login");
        self.notice(format_args!(
            "hello {name}! type to chat, /help lists the commands"
        ));
        match &self.context.config.default_room {
            Some(room) => {
                if let Err(e) = registry.enter(self.id, room, Enter::Join) {
                    self.error(e);
                }
            }
            None => {
                self.notice("you are in the lobby: /list shows the rooms, /join ROOM enters one")
            }
        }
        Ok(())
    }

    /// Acts on one line from a named user.
    fn handle(&mut self, line: &str) -> Next {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => {
                self.error(e);
                return Next::Continue;
            }
        };
        let registry = Arc::clone(&self.context.registry);
        match command {
            Command::Say(text) => self.say(text),
            Command::Help => {
                self.notice("commands:");
                for (usage, what) in HELP {
                    self.notice(format_args!("  {usage:<16} {what}"));
                }
            }
            Command::List => {
                let rooms = registry.rooms();
                if rooms.is_empty() {
                    self.notice("there are no rooms yet; /create ROOM makes one");
                } else {
                    self.notice(format_args!("rooms ({}):", rooms.len()));
                    for room in rooms {
                        self.notice(format_args!("  #{} ({} online)", room.name, room.members));
                    }
                }
            }
            Command::Create(room) | Command::Join(room) => {
                let how = if matches!(command, Command::Create(_)) {
                    Enter::Create
                } else {
                    Enter::Join
                };
                match names::room_name(room) {
                    Err(e) => self.error(e),
                    Ok(room) => match registry.enter(self.id, room, how) {
                        Ok(room) if how == Enter::Create => {
                            let creator = self.name.clone().unwrap_or_else(|| "?".into());
                            let _ = self.context.store.send(Request::RoomCreated { room, creator });
                        }
                        Ok(_) => {}
                        Err(e) => self.error(e),
                    },
                }
            }
            Command::Leave => match registry.leave(self.id) {
                Ok(room) => self.notice(format_args!(
                    "you left #{room} and are in the lobby: /list shows the rooms, /join ROOM enters one"
                )),
                Err(e) => self.error(e),
            },
            Command::Who => {
                let users = registry.users();
                self.notice(format_args!("online ({}):", users.len()));
                for user in users {
                    match user.room {
                        Some(room) => self.notice(format_args!("  {} in #{room}", user.name)),
                        None => self.notice(format_args!("  {} in the lobby", user.name)),
                    }
                }
            }
            Command::Whisper { to, text } => self.whisper(to, text),
            Command::Quit => {
                self.quit();
                return Next::Quit;
            }
        }
        Next::Continue
    }

    fn say(&self, text: &str) {
        let text = sanitize(text);
        if text.trim().is_empty() {
            return;
        }
        let Some(room) = self.context.registry.room_of(self.id) else {
            self.error("you are in the lobby, where nobody hears you: /join ROOM or /create ROOM first (/list shows the rooms)");
            return;
        };
        let Some(sender) = self.name.clone() else {
            return;
        };
        let _ = self.context.store.send(Request::Say {
            room,
            sender,
            text,
            from_id: self.id,
            from: self.outbox.clone(),
        });
    }

    fn whisper(&self, to: &str, text: &str) {
        let text = sanitize(text);
        if text.trim().is_empty() {
            self.error("usage: /msg NAME TEXT");
            return;
        }
        let Some((recipient, outbox)) = self.context.registry.find(to) else {
            self.error(format_args!(
                "nobody named {} is online; /who lists who is",
                sanitize(to)
            ));
            return;
        };
        let Some(sender) = self.name.clone() else {
            return;
        };
        let _ = self.context.store.send(Request::Whisper {
            sender,
            recipient,
            text,
            from: self.outbox.clone(),
            to: outbox,
        });
    }

    /// Leaves the chat: the room is told now; the goodbye goes through the store
    /// so that it follows the echo of everything this user sent before.
    fn quit(&mut self) {
        self.leave_registry();
        let name = self.name.as_deref().unwrap_or("");
        self.close_after(vec![format::notice(format_args!("goodbye, {name}"))]);
    }

    /// Sends `lines` and closes the connection once the store has delivered
    /// everything this client asked for before.
    fn close_after(&self, lines: Vec<Arc<str>>) {
        let request = Request::Then {
            outbox: self.outbox.clone(),
            lines,
            close: true,
        };
        if let Err(unsent) = self.context.store.send(request) {
            if let Request::Then { lines, .. } = unsent.0 {
                for line in lines {
                    self.outbox.send(line);
                }
            }
            self.outbox.close();
        }
    }

    /// After `/quit`, reads and drops what the client still sends until it
    /// closes or [`LINGER`] passes, so that closing does not reset the goodbye.
    fn linger(&self, reader: &mut LineReader<&TcpStream>) {
        let deadline = Instant::now() + LINGER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match reader.read_line() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn leave_registry(&mut self) {
        if !std::mem::replace(&mut self.gone, true) {
            self.context.registry.disconnect(self.id);
        }
    }

    fn notice(&self, text: impl std::fmt::Display) {
        self.outbox.send(format::notice(text));
    }

    fn error(&self, text: impl std::fmt::Display) {
        self.outbox.send(format::error(text));
    }

    /// Records a connection event in `data.csv`.
    fn event(&self, event: &'static str) {
        let _ = self.context.store.send(Request::Event(EventRow {
            timestamp: String::new(),
            ip: self.addr.ip().to_string(),
            port: self.addr.port(),
            thread: self.id,
            name: self.name.as_deref().unwrap_or("").to_string(),
            event,
        }));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.leave_registry();
        self.close_after(Vec::new());
        self.event("disconnect");
        log::info!(
            "disconnect {} port {} thread {} {}",
            self.addr.ip(),
            self.addr.port(),
            self.id,
            self.name.as_deref().unwrap_or("(no name)")
        );
        self.context.live.fetch_sub(1, Ordering::AcqRel);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

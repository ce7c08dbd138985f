//! One client's thread: the greeting, the name prompt, then its lines and
//! commands until it leaves. Its cleanup sits in `Drop`, so it runs on every
//! way out, a panic included.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{RecvTimeoutError, Sender};

use std::time::Duration;

use crate::format;
use crate::names;
use crate::names::NameError;
use crate::rows::EventRow;
use crate::rows::Message;
use crate::server::accounts::Role;
use crate::server::cluster::{Claim, Event, LOGIN_WAIT, Moderation};
use crate::server::command::{self, ADMIN_HELP, Command, HELP};
use crate::server::context::{Context, Slot};
use crate::server::limits::{LINGER, REPLY_BYTES, SEARCH_RESULTS};
use crate::server::limits::{LIST_PAGE, LOGIN_ATTEMPTS};
use crate::server::metrics::{Open, metrics};
use crate::server::moderation::{Ban, RateLimit};
use crate::server::outbox::Outbox;
use crate::server::registry::{Announcement, ClientId, Enter, Taken};
use crate::server::stack;
use crate::server::store::Request;
use crate::server::transport::{Accept, Input};
use crate::wire::{Line, sanitize};

/// Serves one connection from greeting to goodbye. `_alive` is dropped when the
/// thread ends, which is how shutdown knows every client is done.
pub(crate) fn serve(
    context: Arc<Context>,
    accept: &dyn Accept,
    stream: TcpStream,
    addr: SocketAddr,
    id: ClientId,
    alive: Sender<()>,
    slot: Slot,
) {
    let max_line = context.config().max_line;
    let deadline = Instant::now() + context.config().name_timeout;
    let connection = match accept.open(stream, addr, deadline, max_line) {
        Ok(Some(connection)) => connection,
        // Served without a session (the web page): no chat, no rows.
        Ok(None) => return,
        Err(e) => {
            log::info!(
                "{addr} dropped: its {} connection did not open: {e}",
                accept.kind()
            );
            record(&context, addr, id, "connect");
            record(&context, addr, id, "disconnect");
            return;
        }
    };
    let mut input = connection.input;
    let outbox =
        match context
            .flushers
            .outbox(connection.output, context.config().outbox_bytes(), id)
        {
            Ok(outbox) => outbox,
            Err(e) => {
                log::warn!("{addr} dropped: cannot watch its socket: {e}");
                record(&context, addr, id, "connect");
                record(&context, addr, id, "disconnect");
                return;
            }
        };
    let open = metrics().open(accept.kind());
    let for_input = outbox.clone();
    input.attach(Box::new(move |line| for_input.send(line)));
    context.registry.connect(id, outbox.clone(), addr.ip());
    log::info!("connect {} port {} thread {id}", addr.ip(), addr.port());
    let limit = RateLimit::new(
        context.config().rate,
        f64::from(context.config().burst),
        Instant::now(),
    );
    let mut session = Session {
        context,
        addr,
        id,
        outbox,
        name: None,
        role: Role::Member,
        limit,
        slowed: false,
        _open: open,
        token: None,
        gone: false,
        _slot: slot,
        _alive: alive,
    };
    session.event("connect");
    session.run(input);
}

/// How long a login whose name is held on another node waits before it
/// asks again (to see whether that node still renews its lease, every
/// second), and how often it asks while waiting for a dead node's names.
const STALE_RETRY: Duration = Duration::from_millis(1200);

/// Said of a WebSocket message that held a line break.
const LINE_BREAK_REFUSED: &str =
    "a message may not hold a line break: send one line per message; it was not sent";

/// Records an event of a connection that never became a session.
fn record(context: &Context, addr: SocketAddr, id: ClientId, event: &str) {
    let _ = context.store.send(Request::Event(EventRow {
        timestamp: String::new(),
        ip: addr.ip().to_string(),
        port: addr.port(),
        thread: id,
        name: String::new(),
        event: event.to_string(),
    }));
}

/// One connection and what the server knows of it.
struct Session {
    context: Arc<Context>,
    addr: SocketAddr,
    id: ClientId,
    outbox: Outbox,
    name: Option<Arc<str>>,
    role: Role,
    /// Flood control of the lines after login.
    limit: RateLimit,
    /// Told that its lines are being slowed, and not calm since.
    slowed: bool,
    /// Counted as an open connection of its transport while it lives.
    _open: Open,
    /// The token this connection logged in with or was given, for `/logout`.
    token: Option<String>,
    /// Already taken out of the registry (after `/quit`).
    gone: bool,
    _slot: Slot,
    _alive: Sender<()>,
}

/// Whether the session goes on after a line.
enum Next {
    Continue,
    Quit,
}

impl Session {
    fn run(&mut self, mut input: Box<dyn Input>) {
        let online = self.context.registry.everyone();
        let private = self.context.accounts.is_private().unwrap_or(false);
        self.outbox.send(format::hello(online, private));
        self.outbox.send(format::name_prompt());
        let reader = &mut *input;
        if !self.ask_name(reader) {
            return;
        }
        if let Err(e) = reader.set_read_timeout(None) {
            log::debug!("thread {}: {e}", self.id);
            return;
        }
        // Logging in runs deep (formatting, JSON, logs); most clients then
        // wait on a read for hours. Give those stack pages back.
        stack::trim_stack();
        loop {
            // Kicked, banned, dropped as too slow, or the server is stopping:
            // whatever is still unread is not this session's to handle.
            if self.outbox.is_closed() {
                return;
            }
            let line = reader.read_line();
            if matches!(line, Ok(Some(_))) && !self.take_turn() {
                return;
            }
            let next = match line {
                Ok(Some(Line::Text(text))) => self.handle(&text),
                Ok(Some(Line::TooLong)) => {
                    self.error(format_args!(
                        "line too long (the limit is {} bytes); it was not sent",
                        self.context.config().max_line
                    ));
                    Next::Continue
                }
                Ok(Some(Line::NotUtf8)) => {
                    self.error("that line was not valid UTF-8 text; it was not sent");
                    Next::Continue
                }
                Ok(Some(Line::HasLineBreak)) => {
                    self.error(LINE_BREAK_REFUSED);
                    Next::Continue
                }
                Ok(None) => return,
                Err(e) => {
                    log::debug!("thread {}: reading failed: {e}", self.id);
                    return;
                }
            };
            if let Next::Quit = next {
                self.linger(reader);
                return;
            }
        }
    }

    /// Flood control ("fakelag"): a line over `--rate` is not refused but
    /// handled later. This thread waits before it handles it, reading
    /// nothing meanwhile, so the kernel's socket buffers and TCP flow control
    /// hold the rest on the sender's side. The sender is told once when the
    /// slowing starts. Returns false if the session must end instead
    /// (shutdown, kick) while it waited.
    fn take_turn(&mut self) -> bool {
        let now = Instant::now();
        // A reload may have changed the rate.
        let config = self.context.config();
        self.limit.retune(config.rate, f64::from(config.burst));
        let rested = self.limit.is_rested(now);
        let wait = self.limit.wait(now);
        if wait.is_zero() {
            if rested {
                self.slowed = false;
            }
            return true;
        }
        if !std::mem::replace(&mut self.slowed, true) {
            metrics().slowed.inc();
            let rate = config.rate;
            log::info!(
                "thread {}: sending faster than {rate} lines a second; slowed down",
                self.id
            );
            // Through the store, so it follows the echo of the lines before.
            self.then(vec![format::slowed(rate)], false);
        }
        // The stop channel never carries anything: it is closed at shutdown,
        // which ends the wait at once.
        match self.context.stopping.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => !self.outbox.is_closed(),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// The name prompt (and the password prompt on a private server).
    /// Returns false if the client left, took too long or failed too often.
    fn ask_name(&mut self, reader: &mut dyn Input) -> bool {
        let timeout = self.context.config().name_timeout;
        let deadline = Instant::now() + timeout;
        let mut failures = 0;
        loop {
            let typed = match self.read_login_line(reader, deadline, format::name_prompt) {
                Ok(typed) => typed,
                Err(end) => return self.login_ended(end, timeout),
            };
            // A program may ask for JSON lines before it names itself, or
            // log in with a token it kept.
            let attempt = match command::parse(typed.trim()) {
                Ok(Command::Mode(json)) => {
                    self.outbox.set_json(json);
                    self.outbox.send(format::mode(json));
                    self.outbox.send(format::name_prompt());
                    continue;
                }
                Ok(Command::Resume(token)) => self.resume(token),
                _ => self.take_name(&typed, reader, deadline),
            };
            let refused = match attempt {
                Ok(()) => return true,
                Err(Refusal::Say(why) | Refusal::Taken(why)) => why,
                Err(Refusal::WrongPassword) => {
                    failures += 1;
                    if failures >= LOGIN_ATTEMPTS {
                        self.error("wrong name or password; too many attempts, goodbye");
                        return false;
                    }
                    "wrong name or password".to_string()
                }
                Err(Refusal::End(end)) => return self.login_ended(end, timeout),
            };
            self.error(refused);
            self.outbox.send(format::name_prompt());
        }
    }

    /// Reads one line of the login, within the deadline.
    /// An unreadable line gets an error and `prompt` again.
    fn read_login_line(
        &self,
        reader: &mut dyn Input,
        deadline: Instant,
        prompt: fn() -> format::Line,
    ) -> Result<String, LoginEnd> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || reader.set_read_timeout(Some(left)).is_err() {
                return Err(LoginEnd::TimedOut);
            }
            match reader.read_line() {
                Ok(Some(Line::Text(text))) => return Ok(text),
                Ok(Some(Line::TooLong)) => {
                    self.error("that line is too long");
                    self.outbox.send(prompt());
                }
                Ok(Some(Line::NotUtf8)) => {
                    self.error("that line was not UTF-8 text");
                    self.outbox.send(prompt());
                }
                Ok(Some(Line::HasLineBreak)) => {
                    self.error(LINE_BREAK_REFUSED);
                    self.outbox.send(prompt());
                }
                Ok(None) => return Err(LoginEnd::Left),
                Err(e) if is_timeout(&e) => return Err(LoginEnd::TimedOut),
                Err(_) => return Err(LoginEnd::Left),
            }
        }
    }

    fn login_ended(&self, end: LoginEnd, timeout: std::time::Duration) -> bool {
        if let LoginEnd::TimedOut = end {
            self.error(format_args!(
                "no name was given within {} seconds; reconnect to try again",
                timeout.as_secs()
            ));
        }
        false
    }

    /// Claims the typed name (or a guest name), checking the password on a
    /// private server, then puts the user in the default room.
    fn take_name(
        &mut self,
        typed: &str,
        reader: &mut dyn Input,
        deadline: Instant,
    ) -> Result<(), Refusal> {
        let clean = sanitize(typed);
        let wanted = clean.trim();
        let context = Arc::clone(&self.context);
        let registry = &context.registry;
        let private = context.accounts.is_private().map_err(|e| {
            log::error!("cannot read the accounts: {e}");
            Refusal::Say("the server cannot check accounts right now; try again later".into())
        })?;
        let name = if private {
            if wanted.is_empty() {
                return Err(Refusal::Say(
                    "this server is private: log in with your account name".into(),
                ));
            }
            self.outbox.send(format::password_prompt());
            let password = self
                .read_login_line(reader, deadline, format::password_prompt)
                .map_err(Refusal::End)?;
            let account = context.accounts.check(wanted, &password).map_err(|e| {
                log::error!("cannot read the accounts: {e}");
                Refusal::Say("the server cannot check accounts right now; try again later".into())
            })?;
            drop(password);
            let Some(account) = account else {
                self.login_failed(wanted);
                return Err(Refusal::WrongPassword);
            };
            self.refuse_if_banned(&account.name)?;
            self.role = account.role;
            self.take_over(&account.name)?
        } else if wanted.is_empty() {
            loop {
                let n = context.guests.fetch_add(1, Ordering::Relaxed);
                if let Ok(name) = registry.claim_name(self.id, &format!("Guest{n}")) {
                    match self.cluster_claim(&name, false, false) {
                        Ok(()) => break name,
                        Err(Refusal::Taken(_)) => {
                            registry.unclaim(self.id);
                        }
                        Err(refusal) => {
                            registry.unclaim(self.id);
                            return Err(refusal);
                        }
                    }
                }
            }
        } else {
            names::check_name(wanted).map_err(|e| Refusal::Say(e.to_string()))?;
            let ban = context.bans.of_name(wanted).map_err(|e| {
                log::error!("cannot read the bans: {e}");
                Refusal::Say("the server cannot check bans right now; try again later".into())
            })?;
            if ban.is_some() {
                return Err(Refusal::Say(format!("the name {wanted} is banned here")));
            }
            let name = registry
                .claim_name(self.id, wanted)
                .map_err(|e| Refusal::Say(e.to_string()))?;
            if let Err(refusal) = self.cluster_claim(&name, false, true) {
                registry.unclaim(self.id);
                return Err(refusal);
            }
            name
        };
        self.enter_chat(name);
        Ok(())
    }

    /// Logs in with a token a device kept (`/resume TOKEN`), as the name it
    /// was made for, without a password.
    fn resume(&mut self, token: &str) -> Result<(), Refusal> {
        let context = Arc::clone(&self.context);
        let stale =
            || Refusal::Say("that token is not valid (any more); log in with your name".into());
        let unreadable = |e: &dyn std::fmt::Display| {
            log::error!("cannot check a token: {e}");
            Refusal::Say("the server cannot check tokens right now; try again later".into())
        };
        let Some(name) = context.tokens.name_of(token).map_err(|e| unreadable(&e))? else {
            self.login_failed("");
            return Err(stale());
        };
        let private = context.accounts.is_private().map_err(|e| unreadable(&e))?;
        if private {
            // An account removed since keeps no token alive.
            let Some(account) = context.accounts.find(&name).map_err(|e| unreadable(&e))? else {
                return Err(stale());
            };
            self.role = account.role;
        }
        self.refuse_if_banned(&name)?;
        let name = self.take_over(&name)?;
        self.token = Some(token.trim().to_string());
        self.enter_chat(name);
        Ok(())
    }

    /// Ends the login of an account (by password or token) that is banned:
    /// recorded, and told why.
    fn refuse_if_banned(&self, name: &str) -> Result<(), Refusal> {
        let ban = self.context.bans.of_name(name).map_err(|e| {
            log::error!("cannot read the bans: {e}");
            Refusal::Say("the server cannot check bans right now; try again later".into())
        })?;
        if let Some(ban) = ban {
            self.event_named("login-refused", name);
            self.error(format_args!(
                "you are banned from this server{}",
                because(&ban.reason)
            ));
            return Err(Refusal::End(LoginEnd::Left));
        }
        Ok(())
    }

    /// Claims `name` for this connection, taking it over from a connection
    /// that holds it (the right password or a token wins: the older
    /// connection may be a laptop that went to sleep).
    fn take_over(&mut self, name: &str) -> Result<Arc<str>, Refusal> {
        let (name, taken) = self
            .context
            .registry
            .take_name(self.id, name)
            .map_err(|_| Refusal::Say(format!("{name} is online already")))?;
        let had_local_holder = taken.is_some();
        if let Some(Taken {
            id: old,
            outbox,
            told,
        }) = taken
        {
            log::info!(
                "{name} logged in again from {} port {}; closing their older connection (thread {old})",
                self.addr.ip(),
                self.addr.port()
            );
            outbox.send(format::error(
                "you logged in again from another connection; this one is closed",
            ));
            outbox.close();
            outbox.stop_reading();
            self.announce(told);
        }
        if let Err(refusal) = self.cluster_claim(&name, true, true) {
            self.context.registry.unclaim(self.id);
            // The connection taken over held the name for this node in
            // the cluster, and nobody here holds it now: freed there too
            // (when Redis can be reached again), or the other nodes would
            // list it forever. A name held on another node is left alone
            // (the log's quit is skipped for a node that does not hold it).
            if had_local_holder {
                self.log(Event::Quit {
                    name: name.to_string(),
                    gone: false,
                });
            }
            return Err(refusal);
        }
        Ok(name)
    }

    /// In a cluster, claims the name in Redis too (and says where the user
    /// lands): `take` takes it over from a connection on another node.
    /// Alone, there is nothing to ask.
    ///
    /// A name held on another node is asked for again after
    /// [`STALE_RETRY`]: if that node renewed its lease meanwhile, the name
    /// is taken; if not, the node has died (the person is reconnecting
    /// here) and the name is waited for, since it is freed within seconds.
    /// Guests (`patient` false) are refused at once: they take the next
    /// number.
    fn cluster_claim(&self, name: &Arc<str>, take: bool, patient: bool) -> Result<(), Refusal> {
        let Some(cluster) = &self.context.cluster else {
            return Ok(());
        };
        let deadline = Instant::now() + cluster.freed_within();
        let mut first: Option<(String, i64, Instant)> = None;
        let mut told = false;
        loop {
            let (reply, answer) = crossbeam_channel::bounded(1);
            let room = self.context.config().default_room.as_deref().map(Arc::from);
            let asked = self.context.store.send(Request::Login {
                name: Arc::clone(name),
                room,
                take,
                reply,
            });
            let answer = asked.map(|()| answer.recv_timeout(LOGIN_WAIT));
            let gone = match (&answer, &first) {
                (Ok(Ok(Claim::Taken { node, ttl_ms })), Some((was, ttl, at))) => {
                    // Not renewed since the first look: its lease only
                    // ran down.
                    let ran = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
                    node == was && ttl_ms.saturating_add(ran) < ttl + 300
                }
                _ => false,
            };
            match answer {
                Ok(Ok(Claim::Granted)) => return Ok(()),
                Ok(Ok(Claim::Taken { node, ttl_ms })) if patient && first.is_none() => {
                    first = Some((node, ttl_ms, Instant::now()));
                    match self.context.stopping.recv_timeout(STALE_RETRY) {
                        Err(RecvTimeoutError::Timeout) if !self.outbox.is_closed() => {}
                        _ => return Err(Refusal::End(LoginEnd::Left)),
                    }
                }
                Ok(Ok(Claim::Taken { .. })) if gone && Instant::now() < deadline => {
                    if !std::mem::replace(&mut told, true) {
                        self.outbox.send(format::notice(format_args!(
                            "{name} is still held on a server of this cluster that stopped answering; it is freed within {} seconds: waiting",
                            cluster.freed_within().as_secs()
                        )));
                    }
                    // Closed at shutdown: then the wait ends at once.
                    match self.context.stopping.recv_timeout(STALE_RETRY) {
                        Err(RecvTimeoutError::Timeout) if !self.outbox.is_closed() => {}
                        _ => return Err(Refusal::End(LoginEnd::Left)),
                    }
                }
                Ok(Ok(Claim::Taken { .. })) => {
                    return Err(Refusal::Taken(
                        NameError::Taken(name.to_string()).to_string(),
                    ));
                }
                _ => {
                    return Err(Refusal::Say(
                        "this server cannot reach the rest of its cluster right now; try again in a moment"
                            .into(),
                    ));
                }
            }
        }
    }

    /// In a cluster, appends `event` to the log (through the appender, in
    /// order with this user's messages).
    fn log(&self, event: Event) {
        if self.context.cluster.is_some() {
            let _ = self.context.store.send(Request::Log(event));
        }
    }

    /// The name is this connection's: record the login, welcome the user and
    /// put them in the default room.
    fn enter_chat(&mut self, name: Arc<str>) {
        let context = Arc::clone(&self.context);
        let registry = &context.registry;
        self.name = Some(Arc::clone(&name));
        log::info!(
            "login {} port {} thread {} {name}",
            self.addr.ip(),
            self.addr.port(),
            self.id
        );
        self.event("login");
        metrics().logins.inc();
        let role = if self.role == Role::Admin {
            "admin"
        } else {
            "member"
        };
        if self.role == Role::Admin {
            registry.set_unlimited(self.id);
        }
        self.outbox.send(format::welcome(&name, role));
        match &context.config().default_room.clone() {
            Some(room) => match registry.enter(self.id, room, Enter::Join) {
                Ok((_, told)) => self.announce(told),
                Err(e) => self.error(e),
            },
            None => {
                self.outbox.send(format::you_are_in(None, "are", 0, None));
            }
        }
    }

    /// A wrong name or password: recorded, and answered only after a pause
    /// that holds up nobody but this connection. The name tried is recorded
    /// only if it is an account's: a name that is none may be a password
    /// typed on the wrong line.
    fn login_failed(&self, tried: &str) {
        metrics().failed_logins.inc();
        let known = self
            .context
            .accounts
            .find(tried)
            .ok()
            .flatten()
            .map(|account| account.name)
            .unwrap_or_default();
        log::warn!(
            "failed login {} port {} thread {} as {}",
            self.addr.ip(),
            self.addr.port(),
            self.id,
            if known.is_empty() {
                "an unknown name"
            } else {
                &known
            }
        );
        self.event_named("login-failed", &known);
        self.context.failures.record(self.addr.ip(), Instant::now());
        // The stop channel is closed at shutdown, which ends the pause at
        // once: a shutdown never waits for it.
        let _ = self
            .context
            .stopping
            .recv_timeout(self.context.config().login_delay);
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
                let mut commands = HELP.to_vec();
                if self.role == Role::Admin {
                    commands.extend_from_slice(ADMIN_HELP);
                }
                self.outbox.send(format::help(&commands));
            }
            Command::List(page) => {
                let (rooms, page) = registry.rooms(page, LIST_PAGE);
                if page.number > page.pages {
                    self.error(format_args!(
                        "there are {} pages of rooms; /list {} shows the last",
                        page.pages, page.pages
                    ));
                } else {
                    self.outbox.send(format::rooms(&rooms, page));
                }
            }
            Command::Mode(json) => {
                self.outbox.set_json(json);
                self.outbox.send(format::mode(json));
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
                        Ok((room, told)) => {
                            if let Some(name) = &self.name
                                && how == Enter::Join
                            {
                                self.log(Event::Move {
                                    name: name.to_string(),
                                    room: Some(room.to_string()),
                                    created: false,
                                });
                            }
                            if how == Enter::Create {
                                let creator = self.name.clone().unwrap_or_else(|| "?".into());
                                let everyone =
                                    registry.to_everyone(format::room_created(&room, &creator));
                                let _ = self.context.store.send(Request::RoomCreated {
                                    room: Arc::clone(&room),
                                    creator: Arc::clone(&creator),
                                });
                                self.log(Event::Move {
                                    name: creator.to_string(),
                                    room: Some(room.to_string()),
                                    created: true,
                                });
                                self.announce(told.into_iter().chain([everyone]));
                            } else {
                                self.announce(told);
                            }
                        }
                        Err(e) => self.error(e),
                    },
                }
            }
            Command::Leave => match registry.leave(self.id) {
                Ok((room, told)) => {
                    if let Some(name) = &self.name {
                        self.log(Event::Move {
                            name: name.to_string(),
                            room: None,
                            created: false,
                        });
                    }
                    self.announce(told);
                    self.outbox.send(format::you_left(&room));
                }
                Err(e) => self.error(e),
            },
            Command::Who(page) => {
                let (users, page) = registry.users(page, LIST_PAGE);
                if page.number > page.pages {
                    self.error(format_args!(
                        "there are {} pages of people online; /who {} shows the last",
                        page.pages, page.pages
                    ));
                } else {
                    self.outbox.send(format::users(&users, page));
                }
            }
            Command::Whisper { to, text } => self.whisper(to, text),
            Command::History { before, count } => self.history(before, count),
            Command::Search(words) => self.search(words),
            Command::Quit => {
                self.quit();
                return Next::Quit;
            }
            Command::Token => {
                if let Some(name) = self.name.clone() {
                    match self.context.tokens.issue(&name) {
                        Ok(token) => {
                            self.outbox.send(format::token(&name, &token));
                            self.token = Some(token);
                        }
                        Err(e) => {
                            log::error!("cannot keep a token: {e}");
                            self.error("the server cannot keep a token right now; try again later");
                        }
                    }
                }
            }
            Command::Resume(_) => self.error("you are logged in already"),
            Command::Unread => match registry.follow_unread(self.id) {
                Some(line) => {
                    self.outbox.send(line);
                }
                None => self.error("this server keeps no unread counts"),
            },
            Command::Read { room, id } => match names::room_name(room) {
                Err(e) => self.error(e),
                Ok(room) => match registry.mark_read(self.id, room, id) {
                    Some(line) => {
                        self.outbox.send(line);
                    }
                    None => self.error(format_args!(
                        "there is no room #{room}; /list shows the rooms"
                    )),
                },
            },
            Command::Logout => {
                if let Some(token) = self.token.take()
                    && let Err(e) = self.context.tokens.forget(&token)
                {
                    log::error!("cannot forget a token: {e}");
                }
                self.quit();
                return Next::Quit;
            }
            Command::Kick { .. }
            | Command::Ban { .. }
            | Command::Unban(_)
            | Command::Mute { .. }
            | Command::Unmute(_) => {
                if self.role != Role::Admin {
                    self.error("only admins can do that");
                } else if let Err(why) = self.moderate(command) {
                    self.error(why);
                }
            }
        }
        Next::Continue
    }

    /// An admin's kick, ban, unban, mute or unmute: done, announced to the
    /// room, and recorded in `data.csv` with who did it.
    fn moderate(&self, command: Command<'_>) -> Result<(), String> {
        let context = &self.context;
        let me = self.name.clone().unwrap_or_else(|| "?".into());
        let target_name = match command {
            Command::Kick { name, .. }
            | Command::Ban { name, .. }
            | Command::Unban(name)
            | Command::Mute { name, .. }
            | Command::Unmute(name) => sanitize(name),
            _ => return Ok(()),
        };
        let online = context.registry.find_user(&target_name);
        if online.as_ref().is_some_and(|f| f.id == self.id) {
            return Err("you cannot do that to yourself".into());
        }
        let shown = online
            .as_ref()
            .map_or_else(|| target_name.clone(), |f| f.name.to_string());
        // Who to disconnect, once the act is recorded and announced, so that
        // the room hears "kicked" before "left the chat".
        let mut to_drop = None;
        let (announcement, record) = match command {
            Command::Kick { reason, .. } => {
                let found = online.as_ref().ok_or_else(|| {
                    format!("nobody named {target_name} is online; /who lists who is")
                })?;
                let reason = sanitize(reason);
                to_drop = Some((
                    found.id,
                    format::error(format_args!("you were kicked by {me}{}", because(&reason))),
                ));
                (
                    format!("{shown} was kicked by {me}{}", because(&reason)),
                    format!("kick {shown} {reason}"),
                )
            }
            Command::Ban { reason, .. } => {
                let reason = sanitize(reason);
                let ban = Ban {
                    timestamp: format::file_time(&chrono::Local::now()),
                    name: shown.clone(),
                    ip: online
                        .as_ref()
                        .map(|f| f.ip.to_string())
                        .unwrap_or_default(),
                    by: me.to_string(),
                    reason: reason.clone(),
                };
                context.bans.add(ban).map_err(|e| {
                    log::error!("cannot save the ban: {e}");
                    "the ban could not be saved; try again".to_string()
                })?;
                if let Some(found) = &online {
                    to_drop = Some((
                        found.id,
                        format::error(format_args!("you were banned by {me}{}", because(&reason))),
                    ));
                }
                (
                    format!("{shown} was banned by {me}{}", because(&reason)),
                    format!("ban {shown} {reason}"),
                )
            }
            Command::Unban(_) => {
                let lifted = context.bans.remove(&target_name).map_err(|e| {
                    log::error!("cannot save the bans: {e}");
                    "the ban could not be lifted; try again".to_string()
                })?;
                if !lifted {
                    return Err(format!("{target_name} is not banned"));
                }
                (
                    format!("{shown} was unbanned by {me}"),
                    format!("unban {shown}"),
                )
            }
            Command::Mute { minutes, .. } => {
                let until =
                    minutes.map(|m| Instant::now() + Duration::from_secs(u64::from(m) * 60));
                context.mutes.mute(&shown, until);
                let how_long = minutes.map_or_else(
                    || " until unmuted".to_string(),
                    |m| format!(" for {m} minute{}", if m == 1 { "" } else { "s" }),
                );
                (
                    format!("{shown} was muted by {me}{how_long}"),
                    format!(
                        "mute {shown} {}",
                        minutes.map_or_else(String::new, |m| m.to_string())
                    ),
                )
            }
            Command::Unmute(_) => {
                if !context.mutes.unmute(&shown) {
                    return Err(format!("{shown} is not muted"));
                }
                (
                    format!("{shown} was unmuted by {me}"),
                    format!("unmute {shown}"),
                )
            }
            _ => return Ok(()),
        };
        log::info!("{announcement}");
        self.event_named(record.trim_end().to_string(), &me);
        if let Some(action) = record.split_whitespace().next() {
            let (reason, minutes, ip) = match command {
                Command::Kick { reason, .. } | Command::Ban { reason, .. } => (
                    sanitize(reason),
                    None,
                    online
                        .as_ref()
                        .filter(|f| !f.ip.is_unspecified())
                        .map(|f| f.ip.to_string())
                        .unwrap_or_default(),
                ),
                Command::Mute { minutes, .. } => (String::new(), minutes, String::new()),
                _ => (String::new(), None, String::new()),
            };
            self.log(Event::Moderate(Moderation {
                action: action.to_string(),
                target: shown.clone(),
                by: me.to_string(),
                reason,
                minutes,
                ip,
                time: format::file_time(&chrono::Local::now()),
            }));
        }
        let line = format::notice(announcement);
        let line_for_target = line.clone();
        let target_room = online.and_then(|f| f.room);
        let my_room = context.registry.room_of(self.id);
        let mut told = Vec::new();
        if let Some(room) = &target_room {
            told.extend(context.registry.to_room(room, line.clone()));
        }
        match my_room {
            Some(room) if target_room.as_deref() != Some(&*room) => {
                told.extend(context.registry.to_room(&room, line));
            }
            Some(_) => {}
            None => {
                self.outbox.send(line);
            }
        }
        // A muted or unmuted user in the lobby hears of it directly.
        if matches!(command, Command::Mute { .. } | Command::Unmute(_))
            && target_room.is_none()
            && let Some((_, outbox)) = context.registry.find(&shown)
        {
            told.extend(context.registry.to_client(outbox, line_for_target));
        }
        // Through the store: the room hears of it once data.csv has it.
        self.announce(told);
        if let Some((id, line)) = to_drop {
            context.registry.drop_client(id, line);
        }
        Ok(())
    }

    /// `/history`: the messages of the user's room before the oldest this
    /// connection has been shown there (or before `before`).
    fn history(&self, before: Option<u64>, count: usize) {
        let registry = &self.context.registry;
        let Some((room, floor)) = registry.history_floor(self.id) else {
            self.error("you are in the lobby, which has no history: /join ROOM first");
            return;
        };
        let from = before.unwrap_or(floor);
        let page = match self.context.index.page(&room, from, count) {
            Ok(page) => page,
            Err(e) => {
                self.error(e);
                return;
            }
        };
        let mut lines: Vec<format::Line> = page
            .messages
            .iter()
            .map(|m| {
                format::paged(&Message {
                    id: m.id,
                    time: &m.time,
                    room: &m.room,
                    from: &m.sender,
                    to: "",
                    text: &m.text,
                })
            })
            .collect();
        // A page fits the outbox with room to spare: the oldest give way.
        let mut more = page.more;
        let mut bytes: usize = lines.iter().map(format::Line::weight).sum();
        while bytes > REPLY_BYTES && lines.len() > 1 {
            bytes -= lines[0].weight();
            lines.remove(0);
            more = true;
        }
        let oldest = page.messages[page.messages.len() - lines.len()..]
            .first()
            .map(|m| m.id);
        if lines.is_empty() {
            self.outbox.send(format::page_empty(&room, from));
            return;
        }
        self.outbox
            .send(format::page_start(&room, lines.len(), from));
        for line in lines {
            self.outbox.send(line);
        }
        self.outbox.send(format::page_end(&room, more));
        if before.is_none()
            && let Some(oldest) = oldest
        {
            registry.lower_history_floor(self.id, &room, oldest);
        }
    }

    /// `/search WORDS [in ROOM]`: the newest messages with all the words,
    /// from every room and the user's own whispers.
    fn search(&self, typed: &str) {
        let Some(me) = self.name.clone() else {
            return;
        };
        let typed = sanitize(typed);
        let words: Vec<&str> = typed.split_whitespace().collect();
        // `in ROOM` at the end names a room only if there is one.
        let (query, room) = match words[..] {
            [ref rest @ .., last_but_one, room]
                if !rest.is_empty() && last_but_one.eq_ignore_ascii_case("in") =>
            {
                match names::room_name(room)
                    .ok()
                    .and_then(|r| self.context.registry.room_named(r))
                {
                    Some(room) => (rest.join(" "), Some(room)),
                    None => (words.join(" "), None),
                }
            }
            _ => (words.join(" "), None),
        };
        let hits = match self
            .context
            .index
            .search(&query, &me, room.as_deref(), SEARCH_RESULTS)
        {
            Ok(hits) => hits,
            Err(e) => {
                self.error(e);
                return;
            }
        };
        let mut lines = Vec::new();
        let mut bytes = 0;
        for m in &hits.messages {
            let line = format::found(&Message {
                id: m.id,
                time: &m.time,
                room: &m.room,
                from: &m.sender,
                to: &m.recipient,
                text: &m.text,
            });
            bytes += line.weight();
            if bytes > REPLY_BYTES && !lines.is_empty() {
                break;
            }
            lines.push(line);
        }
        let count = lines.len();
        let mut reply = vec![format::search_start(
            &query,
            room.as_deref(),
            count,
            hits.building,
        )];
        reply.extend(lines);
        reply.push(format::search_end(count));
        // One line for all: no live message comes between.
        self.outbox.send(format::joined(&reply));
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
        if self.context.mutes.is_muted(&sender, Instant::now()) {
            self.error("you are muted: you can read, but what you send to a room is refused");
            return;
        }
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
        let found = match self.context.registry.find(to) {
            Some((recipient, outbox)) => Some((recipient, Some(outbox))),
            // On another node of the cluster: delivered there.
            None => self.context.registry.find_user(to).map(|f| (f.name, None)),
        };
        let Some((recipient, outbox)) = found else {
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
        self.close_after(vec![format::notice_as(
            "bye",
            format_args!("goodbye, {name}"),
        )]);
    }

    /// Sends `lines` and closes the connection once the store has delivered
    /// everything this client asked for before.
    fn close_after(&self, lines: Vec<format::Line>) {
        self.then(lines, true);
    }

    /// Sends `lines` once the store has delivered everything this client
    /// asked for before; then closes the connection if `close`.
    fn then(&self, lines: Vec<format::Line>, close: bool) {
        let request = Request::Then {
            outbox: self.outbox.clone(),
            lines,
            close,
        };
        if let Err(unsent) = self.context.store.send(request) {
            if let Request::Then { lines, .. } = unsent.0 {
                for line in lines {
                    self.outbox.send(line);
                }
            }
            if close {
                self.outbox.close();
            }
        }
    }

    /// After `/quit`, reads and drops what the client still sends until it
    /// closes or [`LINGER`] passes, so that closing does not reset the goodbye.
    fn linger(&self, reader: &mut dyn Input) {
        let deadline = Instant::now() + LINGER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || reader.set_read_timeout(Some(left)).is_err() {
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
            // Still ours (not taken over by a login elsewhere): freed in
            // the cluster too.
            let held = self.name.clone().filter(|name| {
                self.context
                    .registry
                    .find_user(name)
                    .is_some_and(|f| f.id == self.id)
            });
            let told = self.context.registry.disconnect(self.id);
            self.announce(told);
            if let Some(name) = held {
                self.log(Event::Quit {
                    name: name.to_string(),
                    gone: false,
                });
            }
        }
    }

    /// Passes announcements through the store, so that they reach each room
    /// after this user's earlier messages.
    fn announce(&self, told: impl IntoIterator<Item = Announcement>) {
        let told: Vec<Announcement> = told.into_iter().collect();
        if told.is_empty() {
            return;
        }
        if let Err(unsent) = self.context.store.send(Request::Announce(told))
            && let Request::Announce(told) = unsent.0
        {
            told.iter().for_each(Announcement::deliver);
        }
    }

    fn error(&self, text: impl std::fmt::Display) {
        self.outbox.send(format::error(text));
    }

    /// Records a connection event in `data.csv`.
    fn event(&self, event: &'static str) {
        self.event_named(event, self.name.as_deref().unwrap_or(""));
    }

    /// Records an event in `data.csv` under a given name (never a password).
    fn event_named(&self, event: impl Into<String>, name: &str) {
        let _ = self.context.store.send(Request::Event(EventRow {
            timestamp: String::new(),
            ip: self.addr.ip().to_string(),
            port: self.addr.port(),
            thread: self.id,
            name: name.to_string(),
            event: event.into(),
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
    }
}

/// How a login ended without a user.
enum LoginEnd {
    /// The client closed the connection or reading failed.
    Left,
    /// The name timeout passed.
    TimedOut,
}

/// Why a name was not taken.
enum Refusal {
    /// Say why and ask again.
    Say(String),
    /// The name is held on another node of the cluster (why, to say): a
    /// guest takes the next number instead.
    Taken(String),
    /// Wrong name or password: counts as a failure.
    WrongPassword,
    /// The connection ends.
    End(LoginEnd),
}

/// ` (reason)` or nothing.
fn because(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

//! The registry: who is connected, which room each is in, and each room's
//! recent history. One `Mutex`, short critical sections, no socket I/O under it.
//!
//! Fan-out never waits: recipients are picked under the lock as a shared
//! snapshot (`Arc<[Member]>`), the lock is released, then one shared line is
//! queued to each recipient's [`Outbox`], which never blocks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format::{self, Line, Page, RoomInfo, UserInfo};
use crate::names::{self, NameError};
use crate::server::outbox::Outbox;
use crate::server::unread::{self, Reads, Recent};

/// A connection's number: the number of the server thread that serves it.
pub type ClientId = u64;

/// A member of a room as fan-out sees it.
#[derive(Clone)]
struct Member {
    id: ClientId,
    name: Arc<str>,
    outbox: Outbox,
}

/// A room: its members and its recent messages.
struct Room {
    /// The name as it was created (rooms are found without regard to case).
    name: Arc<str>,
    /// Copy-on-write list of members: fan-out clones the `Arc`, a join or leave
    /// copies the list only while a fan-out still holds the old one.
    members: Arc<Vec<Member>>,
    /// The last messages, oldest first, with their ids, as sent to clients.
    history: VecDeque<(u64, Line)>,
    /// The id of the room's last message (0: none yet).
    last_id: u64,
    /// The last messages' ids, senders and mentions, for unread counts.
    recent: Recent,
    /// Members connected to other nodes of a cluster (their names).
    remote: Vec<Arc<str>>,
}

impl Room {
    fn new(name: &str) -> Room {
        Room {
            name: name.into(),
            members: Arc::new(Vec::new()),
            history: VecDeque::new(),
            last_id: 0,
            recent: Recent::default(),
            remote: Vec::new(),
        }
    }

    /// Members on this node and on the others.
    fn count(&self) -> usize {
        self.members.len() + self.remote.len()
    }

    /// The oldest id a newcomer is shown: the first of the replay, or, with
    /// none, the id after the room's last message.
    fn floor(&self) -> u64 {
        self.history
            .front()
            .map_or(self.last_id.saturating_add(1), |(id, _)| *id)
    }
}

/// A room read back from `messages.csv` at start.
#[derive(Debug, Clone, Default)]
pub struct RoomHistory {
    /// Its name as it was created.
    pub name: String,
    /// Its last messages, oldest first, with their ids.
    pub lines: Vec<(u64, Line)>,
    /// The id of its last message (0: none).
    pub last_id: u64,
}

/// One connection, named or not yet.
struct Client {
    name: Option<Arc<str>>,
    /// Key of the room the client is in; `None` is the lobby.
    room: Option<String>,
    /// The oldest message id of its room this connection has been shown
    /// (where `/history` goes on from).
    floor: u64,
    outbox: Outbox,
    ip: IpAddr,
    /// Not held to the limit on rooms per user (admins).
    unlimited: bool,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<ClientId, Client>,
    /// Folded name to client.
    names: HashMap<String, ClientId>,
    /// Folded room name to room.
    rooms: BTreeMap<String, Room>,
    /// Rooms made with `/create`, by folded creator name.
    created: HashMap<String, usize>,
    /// Users connected to other nodes of a cluster, by folded name.
    remote: HashMap<String, RemoteUser>,
    /// Clients that follow unread counts (`/unread`), so a message looks at
    /// them only, not at every client.
    followers: HashSet<ClientId>,
}

impl Inner {
    /// Records a message in room `key` (made, named `name`, if needed): its
    /// last id, its history (`keep` lines), and for the unread counts who
    /// said it and whom it mentions. Returns the room's members and the
    /// new counts for those who follow them.
    fn record(
        &mut self,
        reads: Option<&Reads>,
        keep: usize,
        key: &str,
        name: &str,
        message: &RoomMessage<'_>,
    ) -> (Arc<Vec<Member>>, Vec<(Outbox, Line)>) {
        if !self.rooms.contains_key(key) {
            self.rooms.insert(key.to_string(), Room::new(name));
        }
        let Some(room) = self.rooms.get_mut(key) else {
            return (Arc::default(), Vec::new());
        };
        let id = message.id;
        room.last_id = room.last_id.max(id);
        if keep > 0 {
            room.history.push_back((id, message.line.clone()));
        }
        while room.history.len() > keep {
            room.history.pop_front();
        }
        let members = Arc::clone(&room.members);
        // Unread counts: remember the message, then tell those who follow
        // counts and have read this room before.
        let mut counts = Vec::new();
        if let (Some(reads), Some(said)) = (reads, message.said) {
            let known = reads.known();
            let mentioned =
                unread::mentions(said.text, |w| self.names.contains_key(w) || known.knows(w));
            drop(known);
            room.recent.push(id, said.sender, mentioned);
            let room_name = Arc::clone(&room.name);
            for client in self.followers.iter().filter_map(|f| self.clients.get(f)) {
                let Some(name) = &client.name else { continue };
                let Some(mark) = reads.mark_of(name, key) else {
                    continue;
                };
                let (unread, mentions) = room.recent.count(&names::folded(name), mark);
                counts.push((
                    client.outbox.clone(),
                    format::unread(&[(Arc::clone(&room_name), unread, mentions)], false),
                ));
            }
        }
        (members, counts)
    }
}

/// A user connected to another node of the cluster.
struct RemoteUser {
    name: Arc<str>,
    /// Key of their room; `None` is the lobby.
    room: Option<String>,
}

/// The id [`Registry::find_user`] gives a user on another node.
pub const REMOTE: ClientId = ClientId::MAX - 2;

/// How many rooms may be made: in all, and by one name (admins excepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms there may be in all; past it `/create` is refused.
    pub rooms: usize,
    /// Rooms one name may make.
    pub per_user: usize,
}

/// How [`Registry::enter`] treats the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enter {
    /// `/join`: the room must exist.
    Join,
    /// `/create`: the room must not exist yet.
    Create,
}

/// Why a room move was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomError {
    /// `/join` of a room that does not exist.
    NoSuchRoom(String),
    /// `/create` of a room that exists.
    Exists(String),
    /// Moving into the room one is in.
    AlreadyIn(String),
    /// `/leave` from the lobby.
    InLobby,
    /// `/create` with as many rooms as the server allows.
    TooMany(usize),
    /// `/create` by someone who made as many rooms as one may.
    TooManyOfYours(usize),
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomError::NoSuchRoom(room) => {
                write!(
                    f,
                    "there is no room #{room}; /create {room} makes it, /list shows the rooms"
                )
            }
            RoomError::Exists(room) => {
                write!(f, "room #{room} exists already; /join {room} to go in")
            }
            RoomError::AlreadyIn(room) => write!(f, "you are in #{room} already"),
            RoomError::InLobby => {
                write!(f, "you are in the lobby already; /join ROOM to go in one")
            }
            RoomError::TooMany(limit) => write!(
                f,
                "this server has as many rooms as it allows ({limit}); /join one of them (/list shows them)"
            ),
            RoomError::TooManyOfYours(limit) => write!(
                f,
                "you have made as many rooms as one may ({limit}); /join an existing one (/list shows them)"
            ),
        }
    }
}

/// A line for the members a room had at one moment (a join, a leave), all
/// but the one it is about. The registry returns it instead of sending it, so
/// that the session can pass it through the store and it reaches the room
/// after the messages that person sent before.
pub struct Announcement {
    members: Arc<Vec<Member>>,
    except: ClientId,
    line: Line,
}

impl Announcement {
    /// Queues the line to each member.
    pub fn deliver(&self) {
        let _ = tell(&self.members, self.except, &self.line);
    }
}

/// A room message as it was written, for the unread counts.
#[derive(Debug, Clone, Copy)]
pub struct Said<'a> {
    /// Who said it.
    pub sender: &'a str,
    /// What was said.
    pub text: &'a str,
}

/// A room message on its way to the room's members: see
/// [`Registry::deliver_run`].
#[derive(Clone, Copy)]
pub struct RoomMessage<'a> {
    /// Its id.
    pub id: u64,
    /// As it is sent.
    pub line: &'a Line,
    /// The sender's connection (`ClientId::MAX`: none here).
    pub from_id: ClientId,
    /// The sender's outbox, which is given the line wherever the sender is
    /// now; none: no own copy to give.
    pub from: Option<&'a Outbox>,
    /// Who said what, for the unread counts.
    pub said: Option<Said<'a>>,
}

/// A connection whose name another login took over.
pub struct Taken {
    /// The connection.
    pub id: ClientId,
    /// Its outbox, to tell it why and close it.
    pub outbox: Outbox,
    /// The announcement to its room that it left the chat.
    pub told: Option<Announcement>,
}

/// An online user, as moderation finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Their connection.
    pub id: ClientId,
    /// Their exact name.
    pub name: Arc<str>,
    /// Their address.
    pub ip: IpAddr,
    /// Their room; `None` is the lobby.
    pub room: Option<Arc<str>>,
}

/// Who is online and where.
///
/// Promises:
/// 1. Names are unique among connected clients, without regard to case.
/// 2. Nothing under the lock blocks: only map updates and [`Outbox::send`].
/// 3. A newcomer to a room receives the room's history before any live message
///    of that room, and each message exactly once.
/// 4. A poisoned lock is recovered: one panicking client does not take the
///    others down.
pub struct Registry {
    inner: Mutex<Inner>,
    /// Messages kept per room for newcomers; a reload may change it.
    history: AtomicUsize,
    /// See [`Registry::new`]; a reload may change it.
    announce_limit: AtomicUsize,
    /// Limits on `/create`; a reload may change them.
    limits: Mutex<RoomLimits>,
    /// Everyone's read marks; none: no unread counts (benchmarks).
    reads: Option<Arc<Reads>>,
}

impl Registry {
    /// A registry with the given rooms (name and recent lines, oldest first),
    /// keeping `history` lines per room and announcing moves in rooms of at most
    /// `announce_limit` members.
    pub fn new(
        rooms: impl IntoIterator<Item = RoomHistory>,
        history: usize,
        announce_limit: usize,
    ) -> Registry {
        let mut inner = Inner::default();
        for RoomHistory {
            name,
            lines,
            last_id,
        } in rooms
        {
            let room = inner
                .rooms
                .entry(names::fold(&name))
                .or_insert_with(|| Room::new(&name));
            room.last_id = room.last_id.max(last_id);
            room.history.extend(lines);
            while room.history.len() > history {
                room.history.pop_front();
            }
        }
        Registry {
            inner: Mutex::new(inner),
            history: AtomicUsize::new(history),
            announce_limit: AtomicUsize::new(announce_limit),
            limits: Mutex::new(RoomLimits {
                rooms: usize::MAX,
                per_user: usize::MAX,
            }),
            reads: None,
        }
    }

    /// The same registry keeping unread counts with these read marks.
    pub fn with_reads(mut self, reads: Arc<Reads>) -> Registry {
        self.reads = Some(reads);
        self
    }

    /// The same registry with limits on `/create`; `creators` names who made
    /// each room made so far (from `rooms.csv`).
    pub fn with_room_limits(
        mut self,
        limits: RoomLimits,
        creators: impl IntoIterator<Item = String>,
    ) -> Registry {
        *self.limits.get_mut().unwrap_or_else(|p| p.into_inner()) = limits;
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        for creator in creators {
            *inner.created.entry(names::fold(&creator)).or_insert(0) += 1;
        }
        self
    }

    /// Keeps `history` messages per room from now on (a reload): a smaller
    /// number cuts every room's ring now; a larger one lets them grow as
    /// messages come.
    pub fn set_history(&self, history: usize) {
        self.history.store(history, Ordering::Relaxed);
        for room in self.lock().rooms.values_mut() {
            while room.history.len() > history {
                room.history.pop_front();
            }
        }
    }

    /// Rooms with more members than this announce no joins and leaves.
    pub fn set_announce_limit(&self, limit: usize) {
        self.announce_limit.store(limit, Ordering::Relaxed);
    }

    fn announce_limit(&self) -> usize {
        self.announce_limit.load(Ordering::Relaxed)
    }

    /// New limits on `/create` (a reload).
    pub fn set_room_limits(&self, limits: RoomLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Frees a client from the limit on rooms per user (an admin).
    pub fn set_unlimited(&self, id: ClientId) {
        if let Some(client) = self.lock().clients.get_mut(&id) {
            client.unlimited = true;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes sure a room exists (the default room, or one read back from disk).
    pub fn ensure_room(&self, name: &str) {
        self.lock()
            .rooms
            .entry(names::fold(name))
            .or_insert_with(|| Room::new(name));
    }

    /// Records a new connection, not named yet.
    pub fn connect(&self, id: ClientId, outbox: Outbox, ip: IpAddr) {
        self.lock().clients.insert(
            id,
            Client {
                name: None,
                room: None,
                floor: 0,
                outbox,
                ip,
                unlimited: false,
            },
        );
    }

    /// How many connections there are here, named or not.
    pub fn connections(&self) -> usize {
        self.lock().clients.len()
    }

    /// How many are connected to the chat: this server's connections, named
    /// or not, and the people logged in on the cluster's other nodes.
    pub fn everyone(&self) -> usize {
        let inner = self.lock();
        inner.clients.len() + inner.remote.len()
    }

    /// Gives the client its name, if nobody online has it.
    pub fn claim_name(&self, id: ClientId, name: &str) -> Result<Arc<str>, NameError> {
        let mut inner = self.lock();
        let key = names::fold(name);
        // Names held on other nodes of a cluster are the cluster's to
        // grant or refuse (one may be a dead node's, free again).
        if inner.names.contains_key(&key) {
            return Err(NameError::Taken(name.to_string()));
        }
        let Some(client) = inner.clients.get_mut(&id) else {
            return Err(NameError::Taken(name.to_string()));
        };
        let name: Arc<str> = name.into();
        client.name = Some(Arc::clone(&name));
        inner.names.insert(key, id);
        Ok(name)
    }

    /// Gives the client `name` even if another connection holds it: a login
    /// with the right password on a private server wins over a connection
    /// that may be a vanished laptop. The other connection leaves the chat
    /// (its room is told, in the returned announcement) and is named no more;
    /// its outbox is returned for the caller to tell it why and close it.
    pub fn take_name(
        &self,
        id: ClientId,
        name: &str,
    ) -> Result<(Arc<str>, Option<Taken>), NameError> {
        let mut inner = self.lock();
        let key = names::fold(name);
        let mut taken = None;
        if let Some(&old) = inner.names.get(&key)
            && old != id
        {
            if let Some(client) = inner.clients.get(&old) {
                let old_name = client.name.clone().unwrap_or_else(|| name.into());
                let outbox = client.outbox.clone();
                let told = self.leave_locked(&mut inner, old, &old_name, "quit");
                if let Some(client) = inner.clients.get_mut(&old) {
                    client.name = None;
                }
                taken = Some(Taken {
                    id: old,
                    outbox,
                    told,
                });
            }
            inner.names.remove(&key);
        }
        let Some(client) = inner.clients.get_mut(&id) else {
            return Err(NameError::Taken(name.to_string()));
        };
        let name: Arc<str> = name.into();
        client.name = Some(Arc::clone(&name));
        inner.names.insert(key, id);
        Ok((name, taken))
    }

    /// Moves a named client into a room (creating it for [`Enter::Create`]),
    /// out of the room it was in. The client receives a line saying where it is
    /// and the room's history; the rooms it left and entered are told.
    /// Returns the room's name.
    /// The announcements to the rooms are returned, for the caller to deliver
    /// in order with the client's messages (see [`Announcement`]).
    pub fn enter(
        &self,
        id: ClientId,
        room: &str,
        how: Enter,
    ) -> Result<(Arc<str>, Vec<Announcement>), RoomError> {
        let key = names::fold(room);
        let mut inner = self.lock();
        let exists = inner.rooms.contains_key(&key);
        match how {
            Enter::Join if !exists => return Err(RoomError::NoSuchRoom(room.to_string())),
            Enter::Create if exists => return Err(RoomError::Exists(room.to_string())),
            _ => {}
        }
        let Some(client) = inner.clients.get(&id) else {
            return Err(RoomError::NoSuchRoom(room.to_string()));
        };
        if how == Enter::Create {
            let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
            if inner.rooms.len() >= limits.rooms {
                return Err(RoomError::TooMany(limits.rooms));
            }
            let made = client
                .name
                .as_deref()
                .and_then(|name| inner.created.get(&names::fold(name)))
                .copied()
                .unwrap_or(0);
            if !client.unlimited && made >= limits.per_user {
                return Err(RoomError::TooManyOfYours(limits.per_user));
            }
        }
        if client.room.as_deref() == Some(key.as_str()) {
            let name = inner
                .rooms
                .get(&key)
                .map_or_else(|| room.into(), |r| Arc::clone(&r.name));
            return Err(RoomError::AlreadyIn(name.to_string()));
        }
        let name = client.name.clone().unwrap_or_else(|| "?".into());
        let outbox = client.outbox.clone();
        let left = self.leave_locked(&mut inner, id, &name, "leave");
        if how == Enter::Create {
            *inner.created.entry(names::fold(&name)).or_insert(0) += 1;
        }

        let room = inner
            .rooms
            .entry(key.clone())
            .or_insert_with(|| Room::new(room));
        let members = Arc::make_mut(&mut room.members);
        members.push(Member {
            id,
            name: Arc::clone(&name),
            outbox: outbox.clone(),
        });
        let count = members.len() + room.remote.len();
        let verb = if how == Enter::Create {
            "created"
        } else {
            "joined"
        };
        // The member list is for JSON clients, who keep it current from join
        // and leave events; past the announce limit there are none, so no list.
        let present: Option<Vec<Arc<str>>> = (count <= self.announce_limit()).then(|| {
            members
                .iter()
                .map(|m| Arc::clone(&m.name))
                .chain(room.remote.iter().cloned())
                .collect()
        });
        outbox.send(format::you_are_in(
            Some(&room.name),
            verb,
            count,
            present.as_deref(),
        ));
        if !room.history.is_empty() {
            outbox.send(format::history_start(&room.name, room.history.len()));
            for (_, line) in &room.history {
                outbox.send(line.clone());
            }
            outbox.send(format::history_end(&room.name));
        }
        let floor = room.floor();
        let arrived = (count <= self.announce_limit()).then(|| Announcement {
            members: Arc::clone(&room.members),
            except: id,
            line: format::moved("join", &name, &room.name),
        });
        let room_name = Arc::clone(&room.name);
        if let Some(client) = inner.clients.get_mut(&id) {
            client.room = Some(key);
            client.floor = floor;
        }
        drop(inner);
        Ok((room_name, left.into_iter().chain(arrived).collect()))
    }

    /// Takes a client out of its room, back to the lobby. Returns the room left
    /// and the announcement to it.
    pub fn leave(&self, id: ClientId) -> Result<(Arc<str>, Option<Announcement>), RoomError> {
        let mut inner = self.lock();
        let Some(client) = inner.clients.get(&id) else {
            return Err(RoomError::InLobby);
        };
        let Some(key) = client.room.clone() else {
            return Err(RoomError::InLobby);
        };
        let name = client.name.clone().unwrap_or_else(|| "?".into());
        let left = self.leave_locked(&mut inner, id, &name, "leave");
        let room_name = inner
            .rooms
            .get(&key)
            .map_or_else(|| key.as_str().into(), |r| Arc::clone(&r.name));
        drop(inner);
        Ok((room_name, left))
    }

    /// Removes the client from its room (if any) and returns who to tell
    /// that `name` did `verb` (`leave` the room, `quit` the chat).
    fn leave_locked(
        &self,
        inner: &mut Inner,
        id: ClientId,
        name: &str,
        verb: &str,
    ) -> Option<Announcement> {
        let key = inner.clients.get_mut(&id)?.room.take()?;
        let room = inner.rooms.get_mut(&key)?;
        Arc::make_mut(&mut room.members).retain(|m| m.id != id);
        (room.count() < self.announce_limit()).then(|| Announcement {
            members: Arc::clone(&room.members),
            except: id,
            line: format::moved(verb, name, &room.name),
        })
    }

    /// Forgets a connection. Returns the announcement that it left the chat,
    /// for its room.
    pub fn disconnect(&self, id: ClientId) -> Option<Announcement> {
        let mut inner = self.lock();
        let name = inner.clients.get(&id)?.name.clone();
        let mut told = None;
        if let Some(name) = &name {
            told = self.leave_locked(&mut inner, id, name, "quit");
            inner.names.remove(&names::fold(name));
        }
        inner.clients.remove(&id);
        inner.followers.remove(&id);
        told
    }

    /// Records a message in its room's history and queues it to every member
    /// but its sender (who is given it by the store wherever they are now).
    /// Returns how many members it was queued to. Creates the room if needed.
    pub fn deliver_to_room(
        &self,
        room: &str,
        id: u64,
        line: Line,
        sender: ClientId,
        said: Option<Said<'_>>,
    ) -> usize {
        let message = RoomMessage {
            id,
            line: &line,
            from_id: sender,
            from: None,
            said,
        };
        let keep = self.history.load(Ordering::Relaxed);
        let key = names::folded(room);
        let (members, counts) =
            self.lock()
                .record(self.reads.as_deref(), keep, &key, room, &message);
        // Queued without the lock: outboxes take their own.
        let sent = tell(&members, sender, &line);
        // The sender's own copy comes from the store, wherever they are now.
        crate::server::metrics::metrics()
            .deliveries
            .inc_by(sent + 1);
        for (outbox, line) in counts {
            outbox.send(line);
        }
        members.len()
    }

    /// Delivers messages of one room, in order, as [`deliver_to_room`]
    /// each followed by its sender's own copy (to `from`) would: with one
    /// lock for them all, and each member given all its lines at once (one
    /// lock of its outbox instead of one a line). The members are those of
    /// one moment, as if the messages had come together. While anyone
    /// follows unread counts, whose lines come between the messages, the
    /// messages go one by one.
    ///
    /// [`deliver_to_room`]: Registry::deliver_to_room
    pub fn deliver_run(&self, room: &str, run: &[RoomMessage<'_>]) {
        if run.len() > 1 {
            let keep = self.history.load(Ordering::Relaxed);
            let key = names::folded(room);
            let mut inner = self.lock();
            if self.reads.is_none() || inner.followers.is_empty() {
                let mut members = Arc::default();
                for message in run {
                    // No follower: no counts to send.
                    (members, _) = inner.record(self.reads.as_deref(), keep, &key, room, message);
                }
                drop(inner);
                self.tell_run(&members, run);
                return;
            }
        }
        for message in run {
            self.deliver_to_room(
                room,
                message.id,
                message.line.clone(),
                message.from_id,
                message.said,
            );
            if let Some(from) = message.from {
                from.send(message.line.clone());
            }
        }
    }

    /// Queues a run of messages to the members (each its lines at once, its
    /// own messages as their own copies), then their own copies to senders
    /// who are no members.
    fn tell_run(&self, members: &[Member], run: &[RoomMessage<'_>]) {
        let mut sent = 0;
        for member in members {
            let own = |m: &&RoomMessage<'_>| m.from_id == member.id && m.from.is_some();
            let lines = run
                .iter()
                .filter(|m| m.from_id != member.id || m.from.is_some())
                .map(|m| m.line);
            let queued = member.outbox.send_all(lines);
            // As deliver_to_room counts: a sender's own copy once per message.
            sent += queued.saturating_sub(run.iter().filter(own).count()) as u64;
        }
        for message in run {
            if let Some(from) = message.from
                && !members.iter().any(|m| m.id == message.from_id)
            {
                from.send(message.line.clone());
            }
        }
        crate::server::metrics::metrics()
            .deliveries
            .inc_by(sent + run.len() as u64);
    }

    /// Marks `room` read by the client up to message `id`; its counts now.
    pub fn mark_read(&self, id: ClientId, room: &str, upto: u64) -> Option<Line> {
        let reads = self.reads.as_ref()?;
        let inner = self.lock();
        let name = inner.clients.get(&id)?.name.clone()?;
        let room = inner.rooms.get(&names::fold(room))?;
        reads.mark(&name, &room.name, upto);
        let mark = reads.mark_of(&name, &room.name)?;
        let (unread, mentions) = room.recent.count(&names::fold(&name), mark);
        Some(format::unread(
            &[(Arc::clone(&room.name), unread, mentions)],
            true,
        ))
    }

    /// Counts of every room the client has read before, and from now on a
    /// new count whenever a message arrives in one of them.
    pub fn follow_unread(&self, id: ClientId) -> Option<Line> {
        let reads = self.reads.as_ref()?;
        let mut inner = self.lock();
        let name = inner.clients.get(&id)?.name.clone()?;
        inner.followers.insert(id);
        let user = names::fold(&name);
        let mut rooms: Vec<(Arc<str>, usize, usize)> = reads
            .marks_of(&name)
            .into_iter()
            .filter_map(|(room, mark)| {
                let room = inner.rooms.get(&names::fold(&room))?;
                let (unread, mentions) = room.recent.count(&user, mark);
                Some((Arc::clone(&room.name), unread, mentions))
            })
            .collect();
        rooms.sort_by_key(|(room, ..)| names::fold(room));
        Some(format::unread(&rooms, true))
    }

    /// The outbox and exact name of the user with this name (any case).
    pub fn find(&self, name: &str) -> Option<(Arc<str>, Outbox)> {
        let inner = self.lock();
        let id = inner.names.get(&names::fold(name))?;
        let client = inner.clients.get(id)?;
        Some((client.name.clone()?, client.outbox.clone()))
    }

    /// The online user with this name (any case); one on another node of a
    /// cluster has the id [`REMOTE`] and an unspecified address.
    pub fn find_user(&self, name: &str) -> Option<Found> {
        let inner = self.lock();
        let key = names::fold(name);
        if let Some(user) = inner.remote.get(&key) {
            return Some(Found {
                id: REMOTE,
                name: Arc::clone(&user.name),
                ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                room: user
                    .room
                    .as_ref()
                    .and_then(|k| inner.rooms.get(k))
                    .map(|r| Arc::clone(&r.name)),
            });
        }
        let id = *inner.names.get(&key)?;
        let client = inner.clients.get(&id)?;
        Some(Found {
            id,
            name: client.name.clone()?,
            ip: client.ip,
            room: client
                .room
                .as_ref()
                .and_then(|k| inner.rooms.get(k))
                .map(|r| Arc::clone(&r.name)),
        })
    }

    /// Sends `line` to a client, then ends its connection (kick, ban).
    pub fn drop_client(&self, id: ClientId, line: Line) {
        let found = self.lock().clients.get(&id).map(|c| c.outbox.clone());
        if let Some(outbox) = found {
            outbox.send(line);
            outbox.close();
            outbox.stop_reading();
        }
    }

    /// An announcement to one client only.
    pub fn to_client(&self, outbox: Outbox, line: Line) -> Option<Announcement> {
        Some(Announcement {
            members: Arc::new(vec![Member {
                id: ClientId::MAX - 1,
                name: "".into(),
                outbox,
            }]),
            except: ClientId::MAX,
            line,
        })
    }

    /// An announcement to everyone now in `room`, for the caller to deliver
    /// (through the store, after what it records).
    pub fn to_room(&self, room: &str, line: Line) -> Option<Announcement> {
        let members = Arc::clone(&self.lock().rooms.get(&names::fold(room))?.members);
        Some(Announcement {
            members,
            except: ClientId::MAX,
            line,
        })
    }

    /// The room the client is in and the oldest message id of it this
    /// connection has been shown; `None` in the lobby.
    pub fn history_floor(&self, id: ClientId) -> Option<(Arc<str>, u64)> {
        let inner = self.lock();
        let client = inner.clients.get(&id)?;
        let room = inner.rooms.get(client.room.as_ref()?)?;
        Some((Arc::clone(&room.name), client.floor))
    }

    /// Records that the client has now been shown its room's messages from
    /// `floor` on, if it is still in `room`.
    pub fn lower_history_floor(&self, id: ClientId, room: &str, floor: u64) {
        let key = names::fold(room);
        let mut inner = self.lock();
        if let Some(client) = inner.clients.get_mut(&id)
            && client.room.as_deref() == Some(key.as_str())
        {
            client.floor = client.floor.min(floor);
        }
    }

    /// The name of the room called `room` (any case), if there is one.
    pub fn room_named(&self, room: &str) -> Option<Arc<str>> {
        self.lock()
            .rooms
            .get(&names::fold(room))
            .map(|r| Arc::clone(&r.name))
    }

    /// The name of the room the client is in; `None` in the lobby.
    pub fn room_of(&self, id: ClientId) -> Option<Arc<str>> {
        let inner = self.lock();
        let key = inner.clients.get(&id)?.room.as_ref()?;
        inner.rooms.get(key).map(|r| Arc::clone(&r.name))
    }

    /// One page of the rooms, in name order, with how many are in each.
    pub fn rooms(&self, page: usize, size: usize) -> (Vec<RoomInfo>, Page) {
        let inner = self.lock();
        let page = Page::of(page, inner.rooms.len(), size);
        let rooms = inner
            .rooms
            .values()
            .skip(page.start(size))
            .take(size)
            .map(|r| RoomInfo {
                name: Arc::clone(&r.name),
                members: r.count(),
            })
            .collect();
        (rooms, page)
    }

    /// One page of the named users, in name order, with the room each is in.
    pub fn users(&self, page: usize, size: usize) -> (Vec<UserInfo>, Page) {
        let inner = self.lock();
        let mut named: Vec<(String, Arc<str>, Option<&String>)> = inner
            .clients
            .values()
            .filter_map(|c| {
                let name = c.name.clone()?;
                Some((names::fold(&name), name, c.room.as_ref()))
            })
            .chain(
                inner
                    .remote
                    .iter()
                    .map(|(key, u)| (key.clone(), Arc::clone(&u.name), u.room.as_ref())),
            )
            .collect();
        let page = Page::of(page, named.len(), size);
        named.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let users = named
            .iter()
            .skip(page.start(size))
            .take(size)
            .map(|(_, name, room)| UserInfo {
                name: Arc::clone(name),
                room: room
                    .and_then(|k| inner.rooms.get(k))
                    .map(|r| Arc::clone(&r.name)),
            })
            .collect();
        (users, page)
    }

    /// An announcement to every connection: a room was made (JSON clients
    /// keep their room list current with it).
    pub fn to_everyone(&self, line: Line) -> Announcement {
        let members: Vec<Member> = self
            .lock()
            .clients
            .iter()
            .filter(|(_, c)| c.name.is_some())
            .map(|(id, c)| Member {
                id: *id,
                name: Arc::from(""),
                outbox: c.outbox.clone(),
            })
            .collect();
        Announcement {
            members: Arc::new(members),
            except: ClientId::MAX,
            line,
        }
    }

    /// Cluster: the users of the other nodes as a snapshot of the cluster
    /// says (name and room), replacing what was known of them.
    pub fn remote_snapshot(&self, users: Vec<(String, Option<String>)>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.remote.clear();
        for room in inner.rooms.values_mut() {
            room.remote.clear();
        }
        for (name, room) in users {
            let key = names::fold(&name);
            if inner.names.contains_key(&key) {
                continue;
            }
            let name: Arc<str> = name.into();
            let room = room.map(|shown| {
                let room_key = names::fold(&shown);
                inner
                    .rooms
                    .entry(room_key.clone())
                    .or_insert_with(|| Room::new(&shown))
                    .remote
                    .push(Arc::clone(&name));
                room_key
            });
            inner.remote.insert(key, RemoteUser { name, room });
        }
    }

    /// Cluster: a user of another node moved (or logged in: `login`) into
    /// `room` (none: the lobby). Returns the announcements to the members
    /// here of the rooms left and entered.
    pub fn remote_move(
        &self,
        name: &str,
        room: Option<&str>,
        verb: &str,
        login: bool,
    ) -> Vec<Announcement> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let key = names::fold(name);
        let mut told = Vec::new();
        let shown: Arc<str> = inner
            .remote
            .get(&key)
            .map_or_else(|| name.into(), |u| Arc::clone(&u.name));
        if let Some(old) = inner.remote.get(&key).and_then(|u| u.room.clone())
            && let Some(room) = inner.rooms.get_mut(&old)
        {
            room.remote.retain(|n| names::fold(n) != key);
            if !login && room.count() < self.announce_limit() {
                told.push(Announcement {
                    members: Arc::clone(&room.members),
                    except: ClientId::MAX,
                    line: format::moved("leave", &shown, &room.name),
                });
            }
        }
        let room_key = room.map(names::fold);
        if let (Some(room_key), Some(room_name)) = (&room_key, room) {
            let room = inner
                .rooms
                .entry(room_key.clone())
                .or_insert_with(|| Room::new(room_name));
            room.remote.push(Arc::clone(&shown));
            if room.count() <= self.announce_limit() {
                told.push(Announcement {
                    members: Arc::clone(&room.members),
                    except: ClientId::MAX,
                    line: format::moved(verb, &shown, &room.name),
                });
            }
        }
        inner.remote.insert(
            key,
            RemoteUser {
                name: shown,
                room: room_key,
            },
        );
        told
    }

    /// Cluster: a user of another node left the chat. Returns the
    /// announcement to the members here of their room.
    pub fn remote_quit(&self, name: &str) -> Option<Announcement> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let key = names::fold(name);
        let user = inner.remote.remove(&key)?;
        let room = inner.rooms.get_mut(user.room.as_ref()?)?;
        room.remote.retain(|n| names::fold(n) != key);
        (room.count() < self.announce_limit()).then(|| Announcement {
            members: Arc::clone(&room.members),
            except: ClientId::MAX,
            line: format::moved("quit", &user.name, &room.name),
        })
    }

    /// Cluster: the connection here named `name` lost it to a login on
    /// another node. It is named no more; its outbox (to tell it and close
    /// it) and the announcement to its room are returned.
    pub fn lose_name(&self, name: &str) -> Option<Taken> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let key = names::fold(name);
        let id = inner.names.remove(&key)?;
        let client = inner.clients.get_mut(&id)?;
        let shown = client.name.take().unwrap_or_else(|| name.into());
        let outbox = client.outbox.clone();
        let told = self.leave_locked(inner, id, &shown, "quit");
        Some(Taken { id, outbox, told })
    }

    /// Gives back a name claimed here that the cluster refused.
    pub fn unclaim(&self, id: ClientId) {
        let mut inner = self.lock();
        if let Some(name) = inner.clients.get_mut(&id).and_then(|c| c.name.take()) {
            inner.names.remove(&names::fold(&name));
        }
    }

    /// Tells every connection `line`, closes its outbox after it, and wakes its
    /// reader, so that every client thread ends. Used at shutdown.
    pub fn close_all(&self, line: Line) {
        let clients: Vec<Outbox> = self
            .lock()
            .clients
            .values()
            .map(|c| c.outbox.clone())
            .collect();
        for outbox in clients {
            outbox.send(line.clone());
            outbox.close();
            outbox.stop_reading();
        }
    }
}

/// Queues `line` to every member but `except`.
fn tell(members: &[Member], except: ClientId, line: &Line) -> u64 {
    let mut sent = 0;
    for member in members.iter().filter(|m| m.id != except) {
        sent += u64::from(member.outbox.send(line.clone()));
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use crate::server::outbox::Flushers;
    use crate::server::transport::Accept;
    use crate::server::transport::tcp::Tcp;

    /// A client's outbox and the other end of its connection.
    fn client(flushers: &Flushers, token: u64) -> (Outbox, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reader = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let connection = Tcp.open(server, peer, Instant::now(), 4096).unwrap();
        let outbox = flushers
            .outbox(connection.unwrap().output, 1 << 20, token)
            .unwrap();
        (outbox, reader)
    }

    /// What a client was sent, once its outbox is closed.
    fn lines_of(outbox: &Outbox, reader: TcpStream) -> Vec<String> {
        outbox.close();
        BufReader::new(reader).lines().map(Result::unwrap).collect()
    }

    /// A registry with `dev` and `general`, the first three clients in
    /// `dev`, the fourth in `general`, the fifth in the lobby; what they
    /// were sent by then is read and dropped.
    fn five(flushers: &Flushers, reads: bool) -> (Registry, Vec<(Outbox, TcpStream)>) {
        let mut registry = Registry::new(Vec::new(), 10, 100);
        if reads {
            let dir = tempfile::tempdir().unwrap();
            registry = registry.with_reads(Arc::new(Reads::open(dir.path())));
        }
        registry.ensure_room("dev");
        registry.ensure_room("general");
        let mut clients = Vec::new();
        for id in 1..=5 {
            let (outbox, reader) = client(flushers, id);
            registry.connect(id, outbox.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST));
            registry.claim_name(id, &format!("user{id}")).unwrap();
            let room = match id {
                1..=3 => Some("dev"),
                4 => Some("general"),
                _ => None,
            };
            if let Some(room) = room {
                registry.enter(id, room, Enter::Join).unwrap();
            }
            clients.push((outbox, reader));
        }
        (registry, clients)
    }

    #[test]
    fn a_run_reaches_everyone_as_its_messages_one_by_one_would() {
        let flushers = Flushers::start(2).unwrap();
        // Without unread counts, with them, and with someone following them
        // (then the messages go one by one).
        for (reads, follow) in [(false, false), (true, false), (true, true)] {
            let (registry, clients) = five(&flushers, reads);
            if follow {
                assert!(registry.follow_unread(2).is_some());
            }
            let outbox = |id: usize| &clients[id - 1].0;
            let line = |i: u64| format::notice(format_args!("m{i}"));
            let lines: Vec<Line> = (1..=5).map(line).collect();
            // From members, from one in another room, from one in the
            // lobby, from another node.
            let from = [
                (1, Some(1)),
                (2, Some(2)),
                (4, Some(4)),
                (5, Some(5)),
                (0, None),
            ];
            let run: Vec<RoomMessage<'_>> = lines
                .iter()
                .zip(from)
                .enumerate()
                .map(|(i, (line, (from_id, outbox_of)))| RoomMessage {
                    id: i as u64 + 1,
                    line,
                    from_id: if from_id == 0 { ClientId::MAX } else { from_id },
                    from: outbox_of.map(|id: usize| outbox(id)),
                    said: Some(Said {
                        sender: "someone",
                        text: "hi @user3",
                    }),
                })
                .collect();
            {
                let _held = Outbox::hold_handovers();
                registry.deliver_run("Dev", &run);
            }
            let got: Vec<Vec<String>> = clients
                .into_iter()
                .map(|(outbox, reader)| lines_of(&outbox, reader))
                .collect();
            let all: Vec<String> = (1..=5).map(|i| format!("* m{i}")).collect();
            for (id, got) in got.iter().enumerate() {
                let live: Vec<&String> = got.iter().filter(|l| l.starts_with("* m")).collect();
                let want: Vec<&String> = match id + 1 {
                    1..=3 => all.iter().collect(),
                    4 => vec![&all[2]],
                    _ => vec![&all[3]],
                };
                assert_eq!(live, want, "client {} ({reads}, {follow})", id + 1);
            }
            let inner = registry.lock();
            let dev = &inner.rooms["dev"];
            let ids: Vec<u64> = dev.history.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, [1, 2, 3, 4, 5]);
            assert_eq!(dev.last_id, 5);
            if reads {
                assert_eq!(dev.recent.count("user3", 0), (5, 5));
            }
        }
        flushers.stop();
    }
}

//! The appender: in a cluster, what the client threads ask the store goes
//! here first. Messages, whispers, logins, moves, quits, rooms made and
//! admins' acts are appended to the log in batches (one script call per
//! batch); everything else (rows of `data.csv`, goodbyes, announcements to
//! this node's clients) is passed to the store to be done once the store
//! has delivered the log up to this batch, so that it keeps its order with
//! the sender's messages.
//!
//! Redis unreachable: the batch in flight is sent again, with the same
//! number (the script answers a batch it has seen with its first answer,
//! so nothing is appended twice) until Redis answers; its senders are told
//! their lines wait. Lines sent meanwhile are refused with a word to send
//! them again: never silently lost.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use chrono::Local;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::Connection;

use crate::format;
use crate::server::Shutdown;
use crate::server::cluster::scripts::{self, Answer, Outgoing};
use crate::server::cluster::{BACKOFF_MAX, BACKOFF_MIN, Claim, Cluster, Event, Mine, Pos};
use crate::server::limits::{STORE_BATCH, STORE_QUEUE};
use crate::server::outbox::Outbox;
use crate::server::store::Request;

/// Said to a sender whose line waits for Redis.
const WAITING: &str = "this server cannot reach the cluster's Redis right now: your message waits and is sent as soon as Redis answers";
/// Said to a sender while a batch waits for Redis or the node is fenced.
const NOT_SENT: &str = "this server cannot reach the rest of the cluster right now, so your message was not sent; send it again in a moment";

/// How long a batch the script refused as fenced waits before it is sent
/// again (for a lease that lapsed while Redis was paused to be taken again).
const FENCED_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// How often events held while fenced are tried again.
const HELD_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Starts the appender; returns the channel the client threads send to.
///
/// The requests it keeps aside (taken while a batch waited for Redis, or
/// events held while fenced) are bounded by [`STORE_QUEUE`] each: when full,
/// it takes nothing more, so senders wait on their own threads as with the
/// single-node store's queue; until `shutdown`, after which it takes
/// everything again so that the store's last request reaches it.
pub fn spawn(
    cluster: Arc<Cluster>,
    store: Sender<Request>,
    shutdown: Shutdown,
) -> io::Result<(Sender<Request>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(STORE_QUEUE);
    let handle = thread::Builder::new()
        .name("cluster-append".into())
        .spawn(move || {
            Appender {
                cluster,
                store,
                con: None,
                batch_no: 0,
                own: Pos::default(),
                backlog: VecDeque::new(),
                held: Vec::new(),
                stopping: false,
                shutdown,
            }
            .run(&rx)
        })?;
    Ok((tx, handle))
}

/// Who waits for an entry's answer.
enum Waiter {
    Say { uid: u64, from: Outbox },
    Whisper { uid: u64, from: Outbox, to: String },
    Login { reply: Sender<Claim>, name: String },
    Event(Event),
}

struct Appender {
    cluster: Arc<Cluster>,
    store: Sender<Request>,
    con: Option<Connection>,
    batch_no: u64,
    /// The last place this node appended.
    own: Pos,
    /// Requests taken while a batch waited, to handle next.
    backlog: VecDeque<Request>,
    /// Events not appended while this node was fenced, for when it is not.
    held: Vec<Event>,
    stopping: bool,
    /// Once triggered, requests are taken whatever is kept aside.
    shutdown: Shutdown,
}

impl Appender {
    fn run(mut self, rx: &Receiver<Request>) {
        let mut batch = Vec::with_capacity(STORE_BATCH);
        loop {
            if !self.held.is_empty() && !self.cluster.is_fenced() {
                self.backlog.extend(self.held.drain(..).map(Request::Log));
            }
            // Fenced with as many events held as the queue holds: take no
            // more (senders wait) until the node may append again.
            if self.backlog.is_empty()
                && self.held.len() >= STORE_QUEUE
                && self.cluster.is_fenced()
                && !self.shutdown.is_triggered()
            {
                self.cluster.pause(HELD_RETRY);
                continue;
            }
            let first = match self.backlog.pop_front() {
                Some(first) => first,
                None if self.stopping => break,
                None => match rx.recv_timeout(HELD_RETRY) {
                    Ok(first) => first,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            batch.push(first);
            while batch.len() < STORE_BATCH {
                if let Some(next) = self.backlog.pop_front() {
                    batch.push(next);
                    continue;
                }
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.handle(&mut batch, rx);
        }
        let _ = self.store.send(Request::Stop);
    }

    /// Appends the batch's entries, then passes the rest to the store.
    fn handle(&mut self, batch: &mut Vec<Request>, rx: &Receiver<Request>) {
        let own_before = self.own;
        let mut outgoing: Vec<Outgoing> = Vec::new();
        let mut waiters: Vec<Waiter> = Vec::new();
        // Local requests, each with how many entries came before it.
        let mut locals: Vec<(usize, Request)> = Vec::new();
        let time = format::file_time(&Local::now());
        for request in batch.drain(..) {
            let uid = self.cluster.next_uid();
            let (event, waiter) = match request {
                Request::Say {
                    room,
                    sender,
                    text,
                    from_id,
                    from,
                } => {
                    self.cluster.expect(
                        uid,
                        Mine::Say {
                            from_id,
                            from: from.clone(),
                        },
                    );
                    (
                        Event::Say {
                            id: 0,
                            time: time.clone(),
                            room: room.to_string(),
                            from: sender.to_string(),
                            text,
                        },
                        Waiter::Say { uid, from },
                    )
                }
                Request::Whisper {
                    sender,
                    recipient,
                    text,
                    from,
                    ..
                } => {
                    self.cluster
                        .expect(uid, Mine::Whisper { from: from.clone() });
                    (
                        Event::Whisper {
                            id: 0,
                            time: time.clone(),
                            from: sender.to_string(),
                            to: recipient.to_string(),
                            text,
                        },
                        Waiter::Whisper {
                            uid,
                            from,
                            to: recipient.to_string(),
                        },
                    )
                }
                Request::RoomCreated { room, creator } => {
                    let event = Event::Create {
                        time: time.clone(),
                        room: room.to_string(),
                        creator: creator.to_string(),
                    };
                    (event.clone(), Waiter::Event(event))
                }
                Request::Log(event) => (event.clone(), Waiter::Event(event)),
                Request::Login {
                    name,
                    room,
                    take,
                    reply,
                } => {
                    let event = Event::Online {
                        name: name.to_string(),
                        room: room.map(|r| r.to_string()),
                    };
                    let (_, mut fields) = event.fields();
                    fields.push(("take", if take { "1" } else { "" }.to_string()));
                    outgoing.push(Outgoing {
                        kind: "login",
                        uid,
                        fields,
                    });
                    waiters.push(Waiter::Login {
                        reply,
                        name: name.to_string(),
                    });
                    continue;
                }
                Request::Stop => {
                    self.stopping = true;
                    continue;
                }
                other => {
                    locals.push((outgoing.len(), other));
                    continue;
                }
            };
            let (kind, fields) = event.fields();
            outgoing.push(Outgoing { kind, uid, fields });
            waiters.push(waiter);
        }
        let answers = if outgoing.is_empty() {
            Some(Vec::new())
        } else {
            self.batch_no += 1;
            self.append(&outgoing, &waiters, rx)
        };
        let mut places = Vec::with_capacity(waiters.len());
        match answers {
            Some(answers) => {
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    if let Answer::At(pos) = answer {
                        self.own = self.own.max(pos);
                    }
                    places.push(self.own);
                    self.answered(waiter, answer);
                }
            }
            None => {
                for waiter in waiters {
                    places.push(self.own);
                    self.refused(waiter);
                }
            }
        }
        // Each local request after the entries before it.
        let mut after: Vec<Request> = Vec::new();
        let mut at = own_before;
        for (before, request) in locals {
            let pos = before
                .checked_sub(1)
                .and_then(|i| places.get(i).copied())
                .unwrap_or(own_before);
            if pos != at && !after.is_empty() {
                let _ = self.store.send(Request::After {
                    pos: at,
                    requests: std::mem::take(&mut after),
                });
            }
            at = pos;
            after.push(request);
        }
        if !after.is_empty() {
            let _ = self.store.send(Request::After {
                pos: at,
                requests: after,
            });
        }
    }

    /// Sends the batch until Redis answers; `None` if this node is fenced
    /// (or stopping while Redis does not answer).
    fn append(
        &mut self,
        outgoing: &[Outgoing],
        waiters: &[Waiter],
        rx: &Receiver<Request>,
    ) -> Option<Vec<Answer>> {
        if self.cluster.is_fenced() {
            return None;
        }
        let mut backoff = BACKOFF_MIN;
        let mut told = false;
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let cluster = Arc::clone(&self.cluster);
            let batch_no = self.batch_no;
            let result = match self.connection() {
                Ok(con) => scripts::append(&cluster, con, batch_no, outgoing),
                Err(e) => Err(e),
            };
            match result {
                // Fenced by Redis: the lease lapsed (Redis paused or
                // restarted). The heartbeat takes it again within a second
                // or two unless the node was reaped; wait that long.
                Ok(None) if !self.stopping && tries * FENCED_RETRY < self.cluster.config.lease => {
                    self.con = None;
                    self.wait(rx, Instant::now() + FENCED_RETRY);
                }
                Ok(answers) => {
                    if told {
                        log::warn!("Redis answers again; the messages that waited are sent");
                    }
                    return answers;
                }
                Err(e) => {
                    self.con = None;
                    if !told {
                        told = true;
                        log::warn!("cannot append to the cluster's log: {e}; trying again");
                        for waiter in waiters {
                            if let Waiter::Say { from, .. } | Waiter::Whisper { from, .. } = waiter
                            {
                                from.send(format::error(WAITING));
                            }
                        }
                    }
                    if self.stopping && tries >= 3 {
                        log::error!(
                            "stopping while the cluster's Redis does not answer: a batch of {} entries may not have been appended",
                            outgoing.len()
                        );
                        return None;
                    }
                    let until = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    self.wait(rx, until);
                }
            }
        }
    }

    /// Takes the requests that come until `until` while a batch waits for
    /// Redis; once [`STORE_QUEUE`] of them are kept aside, takes no more
    /// (senders wait on their own threads) until shutdown.
    fn wait(&mut self, rx: &Receiver<Request>, until: Instant) {
        loop {
            if self.backlog.len() >= STORE_QUEUE && !self.shutdown.is_triggered() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                thread::sleep(left.min(std::time::Duration::from_millis(50)));
                continue;
            }
            match rx.recv_deadline(until) {
                Ok(request) => self.meanwhile(request),
                Err(_) => return,
            }
        }
    }

    /// A request that came while a batch waited for Redis.
    fn meanwhile(&mut self, request: Request) {
        match request {
            Request::Say { from, .. } | Request::Whisper { from, .. } => {
                from.send(format::error(NOT_SENT));
            }
            Request::Login { reply, .. } => {
                let _ = reply.send(Claim::Unavailable);
            }
            Request::Stop => {
                self.stopping = true;
                self.backlog.push_back(Request::Stop);
            }
            other => self.backlog.push_back(other),
        }
    }

    fn connection(&mut self) -> redis::RedisResult<&mut Connection> {
        if self.con.is_none() {
            self.con = Some(self.cluster.connect()?);
        }
        match self.con.as_mut() {
            Some(con) => Ok(con),
            None => Err(redis::RedisError::from(io::Error::other("no connection"))),
        }
    }

    fn answered(&mut self, waiter: Waiter, answer: Answer) {
        match (waiter, answer) {
            // The login gave up waiting: free the name again.
            (Waiter::Login { reply, name }, Answer::At(_))
                if reply.send(Claim::Granted).is_err() =>
            {
                self.backlog
                    .push_back(Request::Log(Event::Quit { name, gone: false }));
            }
            (Waiter::Login { .. }, Answer::At(_)) => {}
            (Waiter::Login { reply, .. }, Answer::Taken { node, ttl_ms }) => {
                let _ = reply.send(Claim::Taken { node, ttl_ms });
            }
            (Waiter::Login { reply, .. }, _) => {
                let _ = reply.send(Claim::Unavailable);
            }
            (Waiter::Say { uid, from }, Answer::Refused(why)) => {
                self.cluster.claim_mine(uid);
                from.send(format::error(match why.as_str() {
                    "muted" => {
                        "you are muted: you can read, but what you send to a room is refused"
                    }
                    "banned" => "you are banned from this server; your message was not sent",
                    _ => "your message was refused by the cluster",
                }));
            }
            (Waiter::Whisper { uid, from, to }, Answer::Refused(why)) => {
                self.cluster.claim_mine(uid);
                if why == "gone" {
                    from.send(format::error(format_args!(
                        "{to} left before your whisper arrived"
                    )));
                } else {
                    from.send(format::error("your whisper was refused by the cluster"));
                }
            }
            _ => {}
        }
    }

    /// A waiter whose entry was not appended: this node is fenced.
    fn refused(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::Say { uid, from } | Waiter::Whisper { uid, from, .. } => {
                self.cluster.claim_mine(uid);
                from.send(format::error(NOT_SENT));
            }
            Waiter::Login { reply, .. } => {
                let _ = reply.send(Claim::Unavailable);
            }
            // Kept for when the node may append again (a quit must free
            // its name).
            Waiter::Event(event) => {
                if !self.stopping {
                    self.held.push(event);
                }
            }
        }
    }
}

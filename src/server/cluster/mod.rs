//! More than one server: a cluster on Redis (`--cluster redis://HOST:PORT`).
//!
//! # The design (after Centrifugo's Redis engine and Socket.IO's
//! Redis-streams adapter; docs/cluster.md has the longer story)
//! - **One log.** One Redis stream, `chat:log`, holds every room message,
//!   whisper, login, move, quit, room made and admin's act of the whole
//!   cluster. A Lua script per batch (see [`scripts`]) checks the
//!   node's fencing token, bans and mutes, names and presence, deduplicates
//!   a batch sent again after a lost answer, gives each message its id from
//!   one counter and appends. Stream order is id order is file order. Redis
//!   acknowledges (with AOF and `appendfsync always`, on its disk) before
//!   any node shows anything.
//! - **Every node reads everything.** One [`follower`] thread per node
//!   follows the stream from the last id of its own `messages.csv`; the
//!   [store](crate::server::store) appends each entry to the node's files,
//!   syncs, then delivers to its own clients. Every node's `messages.csv`
//!   is a full, identical copy. A place that does not follow the one
//!   before is a gap: the node stops loudly, it never skips.
//! - **State as events.** Logins, moves and quits are entries of the same
//!   log, so every node knows who is where (the
//!   [registry](crate::server::registry)'s remote users),
//!   and `/who` and `/list` stay local.
//! - **Names and liveness.** The [`heartbeat`] thread renews the node's
//!   lease every second. A node that cannot renew it for longer than the
//!   lease is *fenced*: it keeps its clients but takes no login and sends
//!   nothing until Redis answers again. A node whose lease has been gone
//!   for a while, seen by a node whose own lease is sound, is reaped: its
//!   names are freed and its people announced as gone, in the log.
//! - **Connections.** Four per node: the [`appender`] (the store's side),
//!   the follower, the heartbeat, and one for starting and stopping. None
//!   per client. Each reconnects with backoff; reads time out.
//!
//! [`cluster_lag`] says how many messages this node is behind the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Connection, RedisResult, Value};

use crate::server::outbox::Outbox;
use crate::server::registry::ClientId;

pub mod appender;
pub mod follower;
pub mod heartbeat;
pub mod record;
pub mod scripts;
pub mod tables;

pub use record::{Entry, Event, Moderation, Pos};

/// How long a node holds its lease without renewing it, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6);
/// Messages the log keeps, by default (`--cluster-keep`), with the events
/// between them: a node away for longer than it takes the cluster to write
/// these must copy `messages.csv` from another node.
pub const DEFAULT_KEEP: u64 = 1_000_000;
/// How often the lease is renewed and dead nodes looked for.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long another node's lease must be seen gone, by a node whose own
/// lease holds, before its names are reaped: long enough for every node to
/// renew after Redis was paused (all leases lapse together then).
pub const REAP_GRACE: Duration = Duration::from_secs(3);
/// How long XREAD waits for new entries before asking again.
pub const BLOCK: Duration = Duration::from_millis(1000);
/// A Redis reply slower than this counts as a failure (longer than
/// [`BLOCK`]); the connection is then dropped and made again.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to connect to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between two tries to reach Redis.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// First pause after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Entries read from the log at once.
pub const READ_COUNT: usize = 1000;
/// How long a batch's answer is kept in Redis, to answer the same batch
/// sent again after a lost connection.
pub const DEDUPE_SECS: u64 = 600;
/// How long a login waits for the cluster to grant its name.
pub const LOGIN_WAIT: Duration = Duration::from_secs(5);

/// How a node joins a cluster (the `--cluster` flags).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` or `redis+unix:///PATH`.
    pub url: String,
    /// The node's lease.
    pub lease: Duration,
    /// Messages the log keeps (with the events between them).
    pub keep: u64,
}

/// The highest message id known to be in the log (for [`cluster_lag`]).
static HEAD: AtomicU64 = AtomicU64::new(0);
/// The highest message id this node has written.
static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// Whether this process is a node of a cluster.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Messages this node is behind the cluster's log (`None` when it is no
/// node of a cluster): the highest id Redis has given minus the highest
/// this node has written to `messages.csv`. For metrics.
pub fn cluster_lag() -> Option<u64> {
    ACTIVE.load(Ordering::Acquire).then(|| {
        HEAD.load(Ordering::Acquire)
            .saturating_sub(WRITTEN.load(Ordering::Acquire))
    })
}

/// Records that the log holds messages up to `id`.
pub(crate) fn saw_head(id: u64) {
    HEAD.fetch_max(id, Ordering::AcqRel);
}

/// The highest message id this node has written.
pub(crate) fn written() -> u64 {
    WRITTEN.load(Ordering::Acquire)
}

/// Records that this node has written messages up to `id`.
pub(crate) fn wrote(id: u64) {
    WRITTEN.fetch_max(id, Ordering::AcqRel);
    saw_head(id);
}

/// Who sent a request this node appended: found again when the entry comes
/// back, to give the sender its echo or confirmation.
pub enum Mine {
    /// A room message.
    Say {
        /// The sender's connection.
        from_id: ClientId,
        /// Its outbox.
        from: Outbox,
    },
    /// A whisper.
    Whisper {
        /// The sender's outbox.
        from: Outbox,
    },
}

/// An entry of the log on its way to the store.
pub struct Logged {
    /// The entry.
    pub entry: Entry,
    /// This node's sender, if it is one of ours.
    pub mine: Option<Mine>,
    /// Read while catching up, before the snapshot of who is online: its
    /// presence is in the snapshot already.
    pub replay: bool,
}

/// A login's claim of its name, as the cluster answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is this connection's.
    Granted,
    /// Someone on another node has it: that node, and how long its lease
    /// has left (a node that stopped renewing it is gone: its names are
    /// freed within [`Cluster::freed_within`]).
    Taken {
        /// The node that holds it.
        node: String,
        /// Its lease's time to live, in milliseconds.
        ttl_ms: i64,
    },
    /// Redis could not be asked (or this node is fenced).
    Unavailable,
}

/// This node of the cluster: what its threads share.
pub struct Cluster {
    /// The flags.
    pub config: ClusterConfig,
    /// This run's node id (random: a restarted node is a new node).
    pub node: String,
    /// The fencing token of the lease.
    pub token: String,
    client: redis::Client,
    /// Set while the lease could not be renewed for longer than it lasts:
    /// nothing is sent and nobody logs in.
    fenced: AtomicBool,
    /// Set when the log cannot be followed (a gap, lost writes): why.
    broken: Mutex<Option<String>>,
    pending: Mutex<HashMap<u64, Mine>>,
    uids: AtomicU64,
    stop: AtomicBool,
    /// Where the follower must read from again (the store could not write
    /// what it was given); 0: nowhere.
    rewind: Mutex<Option<Pos>>,
    /// The shared tables, synced once at start, then by the heartbeat.
    tables: Mutex<Option<tables::Tables>>,
}

/// Why a node cannot join.
#[derive(Debug)]
pub struct JoinError(pub String);

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // Unique enough for a node id: the time and the process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{:x}{:x}", nanos, std::process::id());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Joins the cluster at `config.url` as a new node whose `messages.csv`
    /// holds messages up to `last_id`: checks that the log goes on from
    /// there (refusing to start otherwise, saying what to do), and takes a
    /// lease.
    pub fn join(
        config: ClusterConfig,
        last_id: u64,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Cluster>, JoinError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            JoinError(format!(
                "--cluster {}: {e} (expected redis://HOST:PORT or redis+unix:///PATH)",
                shown_url(&config.url)
            ))
        })?;
        let cluster = Cluster {
            node: random_hex(6),
            token: random_hex(16),
            client,
            config,
            fenced: AtomicBool::new(false),
            broken: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            uids: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            rewind: Mutex::new(None),
            tables: Mutex::new(None),
        };
        let mut con = cluster.connect().map_err(|e| {
            JoinError(format!(
                "cannot reach the cluster's Redis at {}: {e}; start redis-server first (see docs/cluster.md)",
                shown_url(&cluster.config.url)
            ))
        })?;
        let head = scripts::head(&mut con)
            .map_err(|e| JoinError(format!("cannot read the cluster's log: {e}")))?;
        if let Some(why) = check_resume(&mut con, last_id, head, data_dir)
            .map_err(|e| JoinError(format!("cannot read the cluster's log: {e}")))?
        {
            return Err(JoinError(why));
        }
        scripts::register(&cluster, &mut con)
            .map_err(|e| JoinError(format!("cannot take a lease in the cluster: {e}")))?;
        // Accounts, bans and tokens as the cluster has them before anyone
        // logs in here.
        let mut shared = tables::Tables::new(data_dir);
        shared
            .sync(&mut con)
            .map_err(|e| JoinError(format!("cannot read the cluster's accounts: {e}")))?;
        *cluster.tables.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared);
        ACTIVE.store(true, Ordering::Release);
        saw_head(head);
        wrote(last_id);
        log::info!(
            "joined the cluster at {} as node {} (messages.csv ends at id {last_id}, the log at id {head})",
            shown_url(&cluster.config.url),
            cluster.node
        );
        Ok(Arc::new(cluster))
    }

    /// A new connection to Redis, with the read timeout set.
    pub(crate) fn connect(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(READ_TIMEOUT))?;
        con.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(con)
    }

    /// How long a name held by a node that stopped answering may take to be
    /// freed: what is left of its lease, the reapers' grace and a heartbeat.
    pub fn freed_within(&self) -> Duration {
        self.config.lease + REAP_GRACE + HEARTBEAT * 2
    }

    /// True while this node may not send or log anyone in.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire) || self.broken().is_some()
    }

    pub(crate) fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::Release);
        crate::server::metrics::metrics()
            .cluster_fenced
            .set(i64::from(self.is_fenced()));
    }

    /// Why the log cannot be followed, if it cannot.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_broken(&self, why: String) {
        log::error!("{why}");
        *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        crate::server::metrics::metrics().cluster_fenced.set(1);
    }

    /// A number for a request of this node, unique in this run.
    pub(crate) fn next_uid(&self) -> u64 {
        self.uids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn expect(&self, uid: u64, mine: Mine) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, mine);
    }

    pub(crate) fn claim_mine(&self, uid: u64) -> Option<Mine> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid)
    }

    /// The shared tables, for the heartbeat to keep in step.
    pub(crate) fn take_tables(&self) -> Option<tables::Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Asks the follower to read again from `pos` (the store could not write
    /// what came after it).
    pub(crate) fn rewind_to(&self, pos: Pos) {
        *self.rewind.lock().unwrap_or_else(|p| p.into_inner()) = Some(pos);
    }

    pub(crate) fn take_rewind(&self) -> Option<Pos> {
        self.rewind.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Asks the cluster threads to end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Leaves the cluster at shutdown: the lease is given back and any
    /// name still held here is freed (announced as quits).
    pub fn leave(&self) {
        match self
            .connect()
            .and_then(|mut con| scripts::leave(self, &mut con))
        {
            Ok(()) => log::info!("left the cluster"),
            Err(e) => log::warn!(
                "could not leave the cluster cleanly ({e}); the others reap this node's names when its lease ends"
            ),
        }
    }

    /// Sleeps `pause` in short steps, returning early when stopping.
    pub(crate) fn pause(&self, pause: Duration) {
        let end = std::time::Instant::now() + pause;
        while !self.stopping() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// The Redis URL as logs and errors show it: without its password
/// (`redis://:PASSWORD@HOST` or `redis://USER:PASSWORD@HOST`).
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Whether the log goes on from a `messages.csv` that ends at `last_id`,
/// when the log's last message is `head`. `Some` says why not, and what to do.
fn check_resume(
    con: &mut Connection,
    last_id: u64,
    head: u64,
    data_dir: &std::path::Path,
) -> RedisResult<Option<String>> {
    let dir = data_dir.display();
    if head < last_id {
        return Ok(Some(format!(
            "the cluster's Redis has messages up to id {head} only, but {dir}/messages.csv has them up to id {last_id}: Redis lost acknowledged writes (restarted without its AOF file, or a failover) or this is another cluster; restore Redis's data, or point --cluster at the right Redis"
        )));
    }
    if head == last_id {
        return Ok(None);
    }
    let first = first_after(con, Pos::message(last_id))?;
    match first {
        Some(pos) if pos.msg <= last_id + 1 && (pos.msg == last_id || pos.sub == 0) => Ok(None),
        found => Ok(Some(format!(
            "{dir}/messages.csv ends at id {last_id}, but the cluster's log no longer holds the messages after it ({}): this node was away longer than Redis keeps the log (--cluster-keep); copy messages.csv from another node's data directory into {dir}, then start this server again",
            match found {
                Some(pos) => format!("it starts at id {}", pos.msg),
                None => "it is empty".to_string(),
            }
        ))),
    }
}

/// The place of the first event after `pos` in the log, if any (an entry
/// that cannot be read gives its own place: the caller then finds a gap or
/// the follower says what it cannot read).
fn first_after(con: &mut Connection, pos: Pos) -> RedisResult<Option<Pos>> {
    let value: Value = redis::cmd("XRANGE")
        .arg("chat:log")
        .arg(format!("({pos}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(con)?;
    Ok(into_stream_entries(value)
        .into_iter()
        .next()
        .and_then(|(id, pairs)| match record::decode(&id, pairs) {
            Ok(entries) => entries.into_iter().map(|e| e.pos).find(|&p| p > pos),
            Err(_) => Pos::parse(&id),
        }))
}

/// The text of a bulk or simple string value, taken without a copy.
pub(crate) fn into_text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        Value::SimpleString(s) => Some(s),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The entries of an XRANGE reply (or of one stream of an XREAD reply),
/// taken apart without copies: each id with its field-value pairs.
pub(crate) fn into_stream_entries(value: Value) -> Vec<RawEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let mut parts = parts.into_iter();
            let id = into_text(parts.next()?)?;
            let Some(Value::Array(flat)) = parts.next() else {
                return Some((id, Vec::new()));
            };
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let (Some(k), Some(v)) = (into_text(k), into_text(v)) {
                    pairs.push((k, v));
                }
            }
            Some((id, pairs))
        })
        .collect()
}

/// A stream entry as Redis gives it: its id and its field-value pairs.
pub(crate) type RawEntry = (String, Vec<(String, String)>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_reaches_a_log() {
        assert_eq!(
            shown_url("redis://:hunter2@10.0.0.5:6379"),
            "redis://:***@10.0.0.5:6379"
        );
        assert_eq!(
            shown_url("redis://chat:hunter2@10.0.0.5:6379/0"),
            "redis://chat:***@10.0.0.5:6379/0"
        );
        assert_eq!(
            shown_url("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
        assert_eq!(shown_url("redis://10.0.0.5"), "redis://10.0.0.5");
    }
}

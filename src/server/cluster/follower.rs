//! The follower: one thread per node that reads the cluster's log
//! (`XREAD BLOCK`) from where this node's `messages.csv` ends and hands the
//! entries, in order, to the store, which writes and then delivers them.
//!
//! First it takes a snapshot of who is online on the other nodes (and the
//! log's place at that moment); entries up to that place are a replay:
//! their messages are written, their presence is in the snapshot already.
//! An entry whose place does not follow the one before is a gap: the node
//! stops taking messages and says so loudly; it never skips.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;
use redis::{Connection, Value};

use crate::server::cluster::scripts;
use crate::server::cluster::{
    BACKOFF_MAX, BACKOFF_MIN, BLOCK, Cluster, Logged, Pos, READ_COUNT, RawEntry,
    into_stream_entries, record, saw_head,
};
use crate::server::registry::Registry;
use crate::server::store::Request;

/// Starts the follower from `from` (the place of the last message in
/// `messages.csv`).
pub fn spawn(
    cluster: Arc<Cluster>,
    store: Sender<Request>,
    registry: Arc<Registry>,
    from: Pos,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("cluster-follow".into())
        .spawn(move || run(&cluster, &store, &registry, from))
}

fn run(cluster: &Cluster, store: &Sender<Request>, registry: &Registry, from: Pos) {
    let mut con: Option<Connection> = None;
    let mut backoff = BACKOFF_MIN;
    let snapshot = loop {
        if cluster.stopping() {
            return;
        }
        let taken = match con.take() {
            Some(c) => Ok(c),
            None => cluster.connect(),
        }
        .and_then(|mut c| scripts::snapshot(&mut c).map(|snap| (c, snap)));
        match taken {
            Ok((c, (pos, users))) => {
                con = Some(c);
                let others = users
                    .into_iter()
                    .filter(|(node, ..)| *node != cluster.node)
                    .map(|(_, name, room)| (name, (!room.is_empty()).then_some(room)))
                    .collect();
                registry.remote_snapshot(others);
                break pos;
            }
            Err(e) => {
                log::warn!("cannot read who is online in the cluster: {e}; trying again");
                cluster.pause(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    let mut pos = from;
    let mut fresh = true;
    while !cluster.stopping() {
        if let Some(back) = cluster.take_rewind() {
            pos = back;
        }
        if cluster.broken().is_some() {
            cluster.pause(BLOCK);
            continue;
        }
        if con.is_none() {
            match cluster.connect() {
                Ok(c) => {
                    con = Some(c);
                    fresh = true;
                }
                Err(e) => {
                    log::warn!("cannot reach the cluster's Redis to read the log: {e}");
                    cluster.pause(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        if fresh {
            // A Redis that lost what this node has already written (a
            // restart without its AOF, a failover) must not give the same
            // ids again unnoticed.
            match scripts::head(c) {
                Ok(head) if head < pos.msg => {
                    cluster.set_broken(format!(
                        "the cluster's Redis now has messages up to id {head} only, but this node has written them up to id {}: Redis lost acknowledged writes (a restart without its AOF file, or a failover); this node takes no messages until Redis's data is restored and it is restarted",
                        pos.msg
                    ));
                    continue;
                }
                Ok(head) => saw_head(head),
                Err(e) => {
                    log::warn!("cannot read the cluster's log: {e}");
                    con = None;
                    continue;
                }
            }
            fresh = false;
        }
        let read: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg("chat:log")
            .arg(pos.to_string())
            .query(c);
        let value = match read {
            Ok(value) => {
                backoff = BACKOFF_MIN;
                value
            }
            Err(e) => {
                log::warn!("lost the cluster's Redis while reading the log: {e}; reconnecting");
                con = None;
                cluster.pause(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let Some(raw) = first_stream(value) else {
            continue;
        };
        let mut batch = Vec::with_capacity(raw.len());
        'entries: for (id, pairs) in raw {
            let entries = match record::decode(&id, pairs) {
                Ok(entries) => entries,
                Err(e) => {
                    cluster.set_broken(format!(
                        "the cluster's log holds an entry this server cannot read ({e}); it takes no messages until it is upgraded or the entry is looked at"
                    ));
                    break;
                }
            };
            for entry in entries {
                // A batch holding `pos` itself: its events up to `pos` are
                // written already.
                if entry.pos <= pos {
                    continue;
                }
                if !entry.pos.follows(pos) {
                    cluster.set_broken(format!(
                        "the cluster's log skips from {pos} to {}: entries this node had not read yet are gone (trimmed: --cluster-keep, or lost by Redis); it takes no messages now. Stop it, copy messages.csv from another node's data directory into its own, and start it again",
                        entry.pos
                    ));
                    break 'entries;
                }
                pos = entry.pos;
                if entry.event.is_message() {
                    saw_head(pos.msg);
                }
                let mine = (entry.node == cluster.node)
                    .then(|| cluster.claim_mine(entry.uid))
                    .flatten();
                batch.push(Logged {
                    replay: entry.pos <= snapshot,
                    entry,
                    mine,
                });
            }
        }
        // Once broken, the store is told even with nothing to write: what
        // waits there for the log is let go (see the store's run_cluster).
        if (!batch.is_empty() || cluster.broken().is_some())
            && store.send(Request::Logged(batch)).is_err()
        {
            return;
        }
    }
}

/// The entries of the one stream of an XREAD reply (none on a timeout).
fn first_stream(value: Value) -> Option<Vec<RawEntry>> {
    let stream = match value {
        Value::Array(streams) => streams.into_iter().next()?,
        Value::Map(streams) => {
            return streams
                .into_iter()
                .next()
                .map(|(_, v)| into_stream_entries(v));
        }
        _ => return None,
    };
    let Value::Array(parts) = stream else {
        return None;
    };
    Some(into_stream_entries(parts.into_iter().nth(1)?))
}

//! The heartbeat: renews this node's lease every [`HEARTBEAT`], fences the
//! node while it cannot, and reaps the names of nodes whose lease is gone.
//!
//! Fencing: a node that has not renewed its lease for as long as the lease
//! lasts (counted from before its last renewal was sent, so never later
//! than Redis lets the lease go) takes no login and sends nothing, but
//! keeps its clients. When Redis answers again and nobody reaped the node,
//! it takes its lease again and goes on: a paused Redis (every lease
//! lapses at once) costs nobody their connection. A node that was reaped
//! meanwhile signs its people out (their names may be someone else's by
//! now) and joins again as a new node.
//!
//! Reaping: another node's lease must be seen gone for [`REAP_GRACE`] by
//! this node, with its own lease renewed all along, before the reap script
//! runs; then its names are freed and its people announced as gone, in the
//! log, by one script that a second reaper finds nothing left to do for.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use redis::Connection;

use crate::format;
use crate::server::cluster::scripts::{self, Renewed};
use crate::server::cluster::tables::Tables;
use crate::server::cluster::{Cluster, HEARTBEAT, REAP_GRACE, saw_head};
use crate::server::registry::Registry;

/// Starts the heartbeat.
pub fn spawn(
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    data_dir: PathBuf,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("cluster-lease".into())
        .spawn(move || run(&cluster, &registry, &data_dir))
}

fn run(cluster: &Cluster, registry: &Registry, data_dir: &Path) {
    let mut tables = cluster
        .take_tables()
        .unwrap_or_else(|| Tables::new(data_dir));
    let mut con: Option<Connection> = None;
    let mut last_ok = Instant::now();
    let mut missing: HashMap<String, Instant> = HashMap::new();
    while !cluster.stopping() {
        let started = Instant::now();
        let renewed = match con.take() {
            Some(c) => Ok(c),
            None => cluster.connect(),
        }
        .and_then(|mut c| scripts::renew(cluster, &mut c).map(|r| (c, r)));
        match renewed {
            Ok((mut c, renewed)) => {
                if renewed == Renewed::Reaped {
                    log::error!(
                        "this node was reaped by the cluster (its lease lapsed while it could not reach Redis): signing everyone on it out and joining again"
                    );
                    registry.close_all(format::error(
                        "this server lost touch with the cluster for too long and everyone on it was signed out; reconnect",
                    ));
                    if let Err(e) = scripts::register(cluster, &mut c) {
                        log::warn!("cannot join the cluster again: {e}");
                        // Not at once: the pause at the loop's end is skipped.
                        cluster.pause(HEARTBEAT.saturating_sub(started.elapsed()));
                        continue;
                    }
                    missing.clear();
                } else if renewed == Renewed::Retaken {
                    log::warn!("the lease had lapsed (Redis paused or restarted); taken again");
                }
                last_ok = started;
                if cluster.is_fenced() && cluster.broken().is_none() {
                    log::warn!("Redis answers again: this node serves again");
                }
                cluster.set_fenced(false);
                if let Ok(head) = scripts::head(&mut c) {
                    saw_head(head);
                }
                let looked = look_for_dead(cluster, &mut c, &mut missing, started)
                    .and_then(|()| tables.sync(&mut c));
                match looked {
                    Ok(()) => con = Some(c),
                    Err(e) => log::warn!("cannot look after the cluster: {e}"),
                }
            }
            Err(e) => {
                // What this node saw of the others while it could not
                // renew its own lease counts for nothing.
                missing.clear();
                if started.duration_since(last_ok) >= cluster.config.lease && !cluster.is_fenced() {
                    log::error!(
                        "cannot renew this node's lease for {:?} ({e}): fenced, nothing is sent and nobody logs in until Redis answers",
                        cluster.config.lease
                    );
                    cluster.set_fenced(true);
                } else {
                    log::warn!("cannot renew this node's lease: {e}");
                }
            }
        }
        cluster.pause(HEARTBEAT.saturating_sub(started.elapsed()));
    }
}

/// Reaps the nodes whose lease has been gone for [`REAP_GRACE`].
fn look_for_dead(
    cluster: &Cluster,
    con: &mut Connection,
    missing: &mut HashMap<String, Instant>,
    now: Instant,
) -> redis::RedisResult<()> {
    let nodes = scripts::nodes(con)?;
    missing.retain(|node, _| nodes.contains(node));
    for node in nodes.iter().filter(|n| **n != cluster.node) {
        if scripts::alive(con, node)? {
            missing.remove(node);
            continue;
        }
        let since = *missing.entry(node.clone()).or_insert(now);
        if now.duration_since(since) >= REAP_GRACE {
            let freed = scripts::reap(cluster, con, node)?;
            if freed >= 0 {
                log::warn!("node {node} is gone (its lease ended): freed its {freed} names");
            }
            missing.remove(node);
        }
    }
    Ok(())
}

//! The small tables every node of a cluster shares: `accounts.csv`,
//! `bans.csv` and `tokens.csv`. Each node keeps its own file (its sessions
//! and the `server add-user`-style tools read and change it as alone);
//! the heartbeat keeps the files the same on every node through Redis.
//!
//! Newest wins, a whole file at a time: a node whose file changed (a tool,
//! a `/token`, a `/ban`) publishes it as the cluster's (`chat:table:NAME`:
//! its bytes, a version, and when it changed); the others replace theirs
//! with it within a second. At start, a node's file is published if it
//! changed after the cluster's copy (an account added while the node was
//! stopped), else replaced by it. Replacing takes the table's own lock, so
//! it never overwrites a change made meanwhile, which is published next.
//! Two changes on two nodes within the same second: the later wins.

use std::fs;
use std::path::{Path, PathBuf};

use redis::{Connection, RedisResult};

use crate::server::accounts::ACCOUNTS_FILE;
use crate::server::moderation::BANS_FILE;
use crate::server::table::{self, Stamp, lock_table_file, replace_table_file};
use crate::server::tokens::TOKENS_FILE;

/// The tables a cluster shares.
pub const SHARED: [&str; 3] = [ACCOUNTS_FILE, BANS_FILE, TOKENS_FILE];

/// The file's version; one that cannot be looked at counts as none.
fn stamp(path: &Path) -> Option<Stamp> {
    table::stamp(path).ok().flatten()
}

/// What a node knows of one shared table.
struct Known {
    path: PathBuf,
    key: String,
    /// The file as last published or replaced here.
    seen: Option<Stamp>,
    /// The cluster's version it matches.
    version: Option<i64>,
    started: bool,
}

/// The shared tables of one node.
pub struct Tables {
    known: Vec<Known>,
}

/// Publishes a table: a new version, its bytes (none: no file) and when it
/// changed. ARGV: body, has-file, changed-at ns. Returns the version.
const PUBLISH: &str = r#"
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'file', ARGV[2], 'at', ARGV[3])
return v
"#;

impl Tables {
    /// The shared tables of the node whose data directory is `dir`.
    pub fn new(dir: &Path) -> Tables {
        Tables {
            known: SHARED
                .iter()
                .map(|name| Known {
                    path: dir.join(name),
                    key: format!("chat:table:{name}"),
                    seen: None,
                    version: None,
                    started: false,
                })
                .collect(),
        }
    }

    /// One look at every table: publish what changed here, take what
    /// changed elsewhere.
    pub fn sync(&mut self, con: &mut Connection) -> RedisResult<()> {
        for table in &mut self.known {
            table.sync(con)?;
        }
        Ok(())
    }
}

impl Known {
    fn sync(&mut self, con: &mut Connection) -> RedisResult<()> {
        let (version, at): (Option<i64>, Option<i128>) = redis::cmd("HMGET")
            .arg(&self.key)
            .arg("v")
            .arg("at")
            .query::<(Option<i64>, Option<String>)>(con)
            .map(|(v, at)| (v, at.and_then(|a| a.parse().ok())))?;
        let local = stamp(&self.path);
        if !self.started {
            self.started = true;
            let newer_here = match (local, version) {
                (Some(_), None) => true,
                (Some(local), Some(_)) => at.is_none_or(|at| local.modified_ns > at),
                (None, _) => false,
            };
            return if newer_here {
                self.publish(con)
            } else if version.is_some() {
                self.adopt(con)
            } else {
                Ok(())
            };
        }
        if local != self.seen {
            self.publish(con)
        } else if version != self.version {
            self.adopt(con)
        } else {
            Ok(())
        }
    }

    /// Makes this node's file the cluster's.
    fn publish(&mut self, con: &mut Connection) -> RedisResult<()> {
        // The lock is held only to read a consistent stamp and body, never
        // across the call to Redis (the store thread may wait on it): a
        // change made after it is released gives the file another stamp,
        // so it is published at the next look.
        let (local, body) = {
            let Ok(_lock) = lock_table_file(&self.path) else {
                return Ok(());
            };
            let local = stamp(&self.path);
            let body = match local {
                Some(_) => match fs::read(&self.path) {
                    Ok(body) => Some(body),
                    Err(_) => return Ok(()),
                },
                None => None,
            };
            (local, body)
        };
        let at = local.map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128)
            },
            |s| s.modified_ns,
        );
        let version: i64 = redis::Script::new(PUBLISH)
            .key(&self.key)
            .arg(body.as_deref().unwrap_or_default())
            .arg(if body.is_some() { "1" } else { "" })
            .arg(at.to_string())
            .invoke(con)?;
        log::info!(
            "{} changed on this node: the cluster's copy now (version {version})",
            self.path.display()
        );
        self.seen = local;
        self.version = Some(version);
        Ok(())
    }

    /// Replaces this node's file with the cluster's, unless it changed
    /// meanwhile (then it is published at the next look).
    fn adopt(&mut self, con: &mut Connection) -> RedisResult<()> {
        let (version, body, file): (Option<i64>, Option<Vec<u8>>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&self.key)
                .arg("v")
                .arg("body")
                .arg("file")
                .query(con)?;
        let Ok(_lock) = lock_table_file(&self.path) else {
            return Ok(());
        };
        let local = stamp(&self.path);
        if self.seen.is_some() && local != self.seen {
            return Ok(());
        }
        let body = body.filter(|_| file.as_deref() == Some("1"));
        let same = match (&body, local) {
            (None, None) => true,
            (Some(body), Some(_)) => fs::read(&self.path).is_ok_and(|here| here == *body),
            _ => false,
        };
        if !same {
            if let Err(e) = replace_table_file(&self.path, body.as_deref()) {
                log::warn!(
                    "cannot take the cluster's copy of {}: {e}; trying again",
                    self.path.display()
                );
                return Ok(());
            }
            log::info!(
                "{} changed on another node: taken from the cluster",
                self.path.display()
            );
        }
        self.seen = stamp(&self.path);
        self.version = version;
        Ok(())
    }
}

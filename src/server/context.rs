//! What the client threads share: the settings, the registry, the store's
//! channel, the counts of connections, accounts, bans, mutes, the tally of
//! failed logins and the flushers; and each connection's place in the counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::server::accounts::Accounts;
use crate::server::cluster::Cluster;
use crate::server::config::{Config, Settings};
use crate::server::index::Index;
use crate::server::moderation::{Bans, LoginFailures, Mutes};
use crate::server::outbox::Flushers;
use crate::server::registry::Registry;
use crate::server::store::Request;
use crate::server::tokens::Tokens;

/// What client threads share.
pub struct Context {
    pub(crate) settings: Arc<Settings>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) store: Sender<Request>,
    pub(crate) guests: AtomicU64,
    /// Connections being served, counted from accept to the end of the thread.
    pub(crate) live: AtomicUsize,
    /// Connections being served per address.
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Who may log in; none means an open server.
    pub(crate) accounts: Accounts,
    /// Who may not.
    pub(crate) bans: Bans,
    /// The devices that stay logged in.
    pub(crate) tokens: Tokens,
    /// Who may read but not talk.
    pub(crate) mutes: Arc<Mutes>,
    /// This node of a cluster; none when the server serves alone.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Failed logins per address.
    pub(crate) failures: LoginFailures,
    /// The threads that write to the sockets.
    pub(crate) flushers: Flushers,
    /// What `/history` and `/search` ask.
    pub(crate) index: Arc<Index>,
    /// Closed when the server stops (nothing is ever sent on it), so that a
    /// client thread waiting out flood control wakes at once.
    pub(crate) stopping: Receiver<()>,
}

/// One connection's place in the counts of [`Context`]; given back on drop,
/// whichever way the connection ends.
pub struct Slot {
    context: Arc<Context>,
    ip: IpAddr,
}

impl Slot {
    pub(crate) fn take(context: &Arc<Context>, ip: IpAddr) -> Slot {
        context.live.fetch_add(1, Ordering::AcqRel);
        *context.lock_per_ip().entry(ip).or_insert(0) += 1;
        Slot {
            context: Arc::clone(context),
            ip,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.context.live.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.context.lock_per_ip();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Context {
    /// The settings in force now (a reload may change them).
    pub(crate) fn config(&self) -> Arc<Config> {
        self.settings.get()
    }

    fn lock_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why a new connection from `ip` must be turned away, if it must.
    pub(crate) fn refusal(&self, ip: IpAddr) -> Option<String> {
        let config = self.config();
        if self.live.load(Ordering::Acquire) >= config.max_clients {
            return Some("server full; try again later".into());
        }
        let max_per_ip = config.max_per_ip;
        if max_per_ip > 0 && self.lock_per_ip().get(&ip).copied().unwrap_or(0) >= max_per_ip {
            return Some(format!(
                "too many connections from your address (at most {max_per_ip}); close one and try again"
            ));
        }
        if let Some(left) = self.failures.blocked_for(ip, Instant::now()) {
            return Some(format!(
                "too many failed logins from your address; try again in {} minutes",
                left.as_secs().div_ceil(60).max(1)
            ));
        }
        // In an open server anyone can pick a new name, so a ban holds the address.
        if !self.accounts.is_private().unwrap_or(true) {
            match self.bans.of_ip(ip) {
                Ok(Some(ban)) => {
                    return Some(format!("you are banned from this server ({})", ban.name));
                }
                Ok(None) => {}
                // Fail closed: a ban list that cannot be read lets nobody in.
                Err(_) => {
                    return Some("the server cannot check bans right now; try again later".into());
                }
            }
        }
        None
    }
}

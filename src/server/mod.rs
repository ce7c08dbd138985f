//! The server side of the wire: everything the `server` binary runs.
//!
//! # A tour
//! A line from a client travels like this:
//!
//! 1. [`accept`] takes the connection on one of the listeners and starts its
//!    thread (one per client), with a small stack.
//! 2. On that thread, the listener's kind of [`transport`] opens the
//!    connection (plain TCP; the TLS handshake runs here; a WebSocket upgrade
//!    would too) and splits it into an input and an output.
//! 3. [`session`] greets the client, reads its name (and on a private server
//!    its password, checked against [`accounts`]), then reads its lines from
//!    the input. [`command`] turns each into a command; [`moderation`] holds
//!    bans, mutes and flood control, which makes this thread wait before it
//!    reads a fast sender's next line.
//! 4. Commands about rooms and people ask the [`registry`]: who is online,
//!    who is in which room, each room's recent history, behind one `Mutex`.
//! 5. A message or whisper goes to the [`store`] thread, which appends it to
//!    `messages.csv`, flushes, and only then hands it to the registry for
//!    delivery. So nothing is shown before it is written.
//! 6. Delivery puts one shared [`Line`](crate::format::Line) into each
//!    recipient's [`outbox::Outbox`], a queue bounded in bytes that never
//!    blocks. A few shared flusher threads ([`outbox::Flushers`]) drain the
//!    queues through each connection's transport output, without ever
//!    blocking on a slow client.
//!
//! 7. After each batch the store tells the [`index`] how far `messages.csv`
//!    has got; its own thread reads the new rows into `messages.index`
//!    (SQLite FTS5), which `/history` and `/search` ask.
//!
//! 8. As a node of a [`cluster`] (`--cluster`), step 5 goes through Redis:
//!    the store's channel leads to the cluster's appender, which appends
//!    messages and events to one Redis stream shared by every node; the
//!    node's follower reads the stream back into the store, which writes
//!    and delivers as above. So every node's `messages.csv` is the same.
//!
//! [`context`] is what the client threads share; [`limits`] names every
//! bound; [`config`] holds what the flags set; [`table`] keeps the small CSV
//! tables (`accounts.csv`, `bans.csv`) that are rewritten atomically;
//! [`datafile`] writes the store's files a batch at a time and cuts back a
//! batch that failed; [`lock`] keeps a second server off the data directory;
//! [`certs`] reads, reloads and makes (`tls-init`) the TLS certificate;
//! [`stack`] is the one module with `unsafe` code.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crossbeam_channel::RecvTimeoutError;

use crate::format;
use crate::server::accounts::Accounts;
use crate::server::cluster::Cluster;
use crate::server::config::{Config, Settings};
use crate::server::context::Context;
use crate::server::index::Index;
use crate::server::limits::{
    FLUSHERS, LOGIN_FAILURE_WINDOW, LOGIN_FAILURES_PER_IP, SHUTDOWN_GRACE,
};
use crate::server::moderation::{Bans, LoginFailures, Mutes};
use crate::server::outbox::Flushers;
use crate::server::registry::{Registry, RoomLimits};
use crate::server::store::{Recovered, Request, Store, StoreError, StoreOptions};
use crate::server::tokens::Tokens;
use crate::server::transport::Accept;
use crate::server::unread::Reads;

pub mod accept;
pub mod accounts;
pub mod certs;
pub mod cluster;
pub mod command;
pub mod config;
pub mod context;
pub mod datafile;
pub mod index;
pub mod limits;
pub mod lock;
pub mod metrics;
pub mod moderation;
pub mod outbox;
pub mod registry;
pub mod session;
pub mod settings;
pub mod stack;
pub mod store;
pub mod table;
pub mod tokens;
pub mod transport;
pub mod unread;

/// A bound listening socket and the kind of connection it hands out.
pub struct Listener {
    /// The socket, bound and listening.
    pub socket: TcpListener,
    /// What its connections are (plain TCP, TLS, ...).
    pub accept: Arc<dyn Accept>,
}

impl Listener {
    /// A listener of plain TCP connections, the contract's own.
    pub fn plain(socket: TcpListener) -> Listener {
        Listener {
            socket,
            accept: Arc::new(transport::tcp::Tcp),
        }
    }

    /// A listener of TLS connections served `tls`'s certificate.
    pub fn tls(socket: TcpListener, tls: Arc<transport::tls::Tls>) -> Listener {
        Listener {
            socket,
            accept: tls,
        }
    }
}

/// Asks a running server to stop. Cheap to clone; safe from a signal handler's
/// thread.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the server to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once [`trigger`](Shutdown::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A server with its data read back, ready to serve.
pub struct Server {
    config: Config,
    store: Store,
    recovered: Recovered,
    settings: Arc<Settings>,
    registry: Arc<OnceLock<Arc<Registry>>>,
    cluster: Option<Arc<Cluster>>,
}

/// Puts new settings in force in a running server (SIGHUP): what can change
/// live does at once; what cannot is named.
#[derive(Clone)]
pub struct Reloader {
    settings: Arc<Settings>,
    registry: Arc<OnceLock<Arc<Registry>>>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// The settings that changed, `name old → new`.
    pub changed: Vec<String>,
    /// Those that differ but only take effect after a restart.
    pub need_restart: Vec<String>,
}

impl Reloader {
    /// Puts `new` in force: rates, bursts, limits, history size, announce
    /// limit, room limits at once (history rings grow as messages come, or
    /// are cut to a smaller size now); the data directory, the line limit
    /// and fsync need a restart and keep their values.
    pub fn apply(&self, mut new: Config) -> Reloaded {
        let old = self.settings.get();
        let (changed, need_restart) = old.changes(&new);
        new.data_dir = old.data_dir.clone();
        new.max_line = old.max_line;
        new.fsync = old.fsync;
        new.cluster = old.cluster.clone();
        if let Some(registry) = self.registry.get() {
            registry.set_history(new.history);
            registry.set_announce_limit(new.announce_limit);
            registry.set_room_limits(RoomLimits {
                rooms: new.max_rooms,
                per_user: new.max_rooms_per_user,
            });
            if let Some(room) = &new.default_room {
                registry.ensure_room(room);
            }
        }
        self.settings.set(new);
        Reloaded {
            changed,
            need_restart,
        }
    }
}

impl Server {
    /// Opens the data directory: repairs torn rows, rebuilds rooms, history and
    /// the next ids.
    pub fn open(config: Config) -> Result<Server, StoreError> {
        let options = StoreOptions {
            fsync: config.fsync,
        };
        let (store, recovered) = Store::open_with(&config.data_dir, config.history, &options)?;
        log::info!(
            "{} messages in {} rooms read back from {}; next message id {}",
            recovered.messages,
            recovered.rooms.len(),
            config.data_dir.display(),
            recovered.next_id
        );
        let cluster = match &config.cluster {
            Some(settings) => Some(
                Cluster::join(
                    settings.clone(),
                    recovered.next_id.saturating_sub(1),
                    &config.data_dir,
                )
                .map_err(|e| StoreError::Cluster(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Server {
            settings: Arc::new(Settings::new(config.clone())),
            config,
            store,
            recovered,
            registry: Arc::new(OnceLock::new()),
            cluster,
        })
    }

    /// A handle that puts new settings in force once the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            settings: Arc::clone(&self.settings),
            registry: Arc::clone(&self.registry),
        }
    }

    /// What was read back from the data directory.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Serves `listeners` until `shutdown` is triggered; then tells every
    /// client, writes what the store was given, and returns. An error says
    /// what could not be written.
    pub fn run(self, listeners: Vec<Listener>, shutdown: Shutdown) -> io::Result<()> {
        let Server {
            config,
            mut store,
            recovered,
            settings,
            registry: registry_slot,
            cluster,
        } = self;
        let mutes = Arc::new(Mutes::default());
        let last_id = recovered.next_id.saturating_sub(1);
        if let Some(cluster) = &cluster {
            store.set_cluster(
                Arc::clone(cluster),
                Bans::open(&config.data_dir),
                Arc::clone(&mutes),
            );
        }
        let index = Arc::new(Index::start(&config.data_dir)?);
        let lagging = Arc::downgrade(&index);
        metrics::metrics().on_scrape(move |m| {
            if let Some(index) = lagging.upgrade() {
                m.index_lag
                    .set(i64::try_from(index.lag()).unwrap_or(i64::MAX));
            }
        });
        if cluster.is_some() {
            metrics::metrics().set_clustered();
            metrics::metrics().on_scrape(|m| {
                if let Some(lag) = cluster::cluster_lag() {
                    m.cluster_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
            });
        }
        store.set_feed(index.feed());
        let reads = Arc::new(Reads::open(&config.data_dir));
        let registry = Arc::new(
            Registry::new(recovered.rooms, config.history, config.announce_limit)
                .with_reads(Arc::clone(&reads))
                .with_room_limits(
                    RoomLimits {
                        rooms: config.max_rooms,
                        per_user: config.max_rooms_per_user,
                    },
                    recovered.creators,
                ),
        );
        if let Some(room) = &config.default_room {
            registry.ensure_room(room);
        }
        let _ = registry_slot.set(Arc::clone(&registry));
        let (store_tx, store_thread) = store.spawn(Arc::clone(&registry))?;
        // A cluster node: the client threads ask the appender, which asks
        // Redis; the follower brings the log to the store.
        let mut cluster_threads = Vec::new();
        let store_tx = match &cluster {
            Some(cluster) => {
                let (append_tx, appender) = cluster::appender::spawn(
                    Arc::clone(cluster),
                    store_tx.clone(),
                    shutdown.clone(),
                )?;
                cluster_threads.push(appender);
                cluster_threads.push(cluster::follower::spawn(
                    Arc::clone(cluster),
                    store_tx,
                    Arc::clone(&registry),
                    cluster::Pos::message(last_id),
                )?);
                cluster_threads.push(cluster::heartbeat::spawn(
                    Arc::clone(cluster),
                    Arc::clone(&registry),
                    config.data_dir.clone(),
                )?);
                append_tx
            }
            None => store_tx,
        };
        let data_dir = config.data_dir.clone();
        let (stop_tx, stopping) = crossbeam_channel::bounded::<()>(0);
        let context = Arc::new(Context {
            settings,
            registry: Arc::clone(&registry),
            store: store_tx,
            guests: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            accounts: Accounts::open(&data_dir),
            bans: Bans::open(&data_dir),
            tokens: Tokens::open(&data_dir),
            mutes,
            cluster: cluster.clone(),
            failures: LoginFailures::new(LOGIN_FAILURES_PER_IP, LOGIN_FAILURE_WINDOW),
            flushers: Flushers::start(FLUSHERS)?,
            index: Arc::clone(&index),
            stopping,
        });
        // Every client thread holds a clone; when all are dropped, all are done.
        let (alive_tx, alive_rx) = crossbeam_channel::bounded::<()>(0);
        let reads_writer = write_reads_behind(Arc::clone(&reads), context.stopping.clone())?;

        accept::accept_loop(
            &listeners,
            &context,
            &alive_tx,
            recovered.next_thread,
            &shutdown,
        )?;
        drop(listeners);

        log::info!("shutting down: telling {} clients", registry.connections());
        registry.close_all(format::notice_as(
            "shutdown",
            "the server is shutting down; goodbye",
        ));
        drop(stop_tx);
        drop(alive_tx);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        if alive_rx.recv_deadline(deadline) == Err(RecvTimeoutError::Timeout) {
            log::warn!(
                "{} connections did not end within {SHUTDOWN_GRACE:?}; their disconnect rows are not in data.csv",
                context.live.load(Ordering::Acquire)
            );
        }
        let flushers_done = context.flushers.wait_idle(Instant::now() + SHUTDOWN_GRACE);
        // Always: the store writes everything it was given before this, then
        // ends, however many client threads still hold a sender.
        let _ = context.store.send(Request::Stop);
        let ended = store_thread.join();
        if let Some(cluster) = &cluster {
            cluster.stop();
            for thread in cluster_threads {
                let _ = thread.join();
            }
            cluster.leave();
        }
        index.stop();
        // The store may have delivered the last messages after the goodbyes;
        // the flushers finish what they can, then stop.
        if !flushers_done {
            log::warn!("some clients were not sent everything before exit");
        }
        context.flushers.stop();
        // It writes the marks a last time as it ends.
        let _ = reads_writer.join();
        match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(what)) => Err(io::Error::other(format!(
                "not everything could be written at exit: {what}"
            ))),
            Err(_) => Err(io::Error::other("the store thread panicked")),
        }
    }
}

/// How often the read marks are written to `reads.csv` when they changed.
const READS_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Starts the thread that writes the read marks behind, until `stopping`
/// closes: marking a room read costs a client no disk write.
fn write_reads_behind(
    reads: Arc<Reads>,
    stopping: crossbeam_channel::Receiver<()>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reads".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopping.recv_timeout(READS_EVERY) {
                if let Err(e) = reads.flush() {
                    log::warn!("{e}: read marks not saved yet; trying again");
                }
            }
            if let Err(e) = reads.flush() {
                log::error!("{e}: the last read marks were not saved");
            }
        })
}

//! The server: the accept loop, one thread per client, and an orderly shutdown.
//!
//! [`Server::open`] reads the data directory back; [`Server::run`] serves a
//! bound listener until the [`Shutdown`] is triggered, then tells every client,
//! lets the store drain and flush, and returns.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use std::sync::{Arc, Mutex};

use crate::accounts::Accounts;
use crate::config::Config;
use crate::format;
use crate::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, ACCEPT_POLL, READER_STACK, SHUTDOWN_GRACE,
};
use crate::limits::{FLUSHERS, LOGIN_FAILURE_WINDOW, LOGIN_FAILURES_PER_IP};
use crate::moderation::{Bans, LoginFailures, Mutes};
use crate::outbox::Flushers;
use crate::registry::Registry;
use crate::session;
use crate::store::{Recovered, Request, Store, StoreError};

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

/// What client threads share.
pub(crate) struct Context {
    pub(crate) config: Config,
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
    /// Who may read but not talk.
    pub(crate) mutes: Mutes,
    /// Failed logins per address.
    pub(crate) failures: LoginFailures,
    /// The threads that write to the sockets.
    pub(crate) flushers: Flushers,
    /// Closed when the server stops (nothing is ever sent on it), so that a
    /// client thread waiting out flood control wakes at once.
    pub(crate) stopping: Receiver<()>,
}

/// One connection's place in the counts of [`Context`]; given back on drop,
/// whichever way the connection ends.
pub(crate) struct Slot {
    context: Arc<Context>,
    ip: IpAddr,
}

impl Slot {
    fn take(context: &Arc<Context>, ip: IpAddr) -> Slot {
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
    fn lock_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why a new connection from `ip` must be turned away, if it must.
    fn refusal(&self, ip: IpAddr) -> Option<String> {
        if self.live.load(Ordering::Acquire) >= self.config.max_clients {
            return Some("server full; try again later".into());
        }
        let max_per_ip = self.config.max_per_ip;
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
        if !self.accounts.is_private().unwrap_or(true)
            && let Ok(Some(ban)) = self.bans.of_ip(ip)
        {
            return Some(format!("you are banned from this server ({})", ban.name));
        }
        None
    }
}

/// A server with its data read back, ready to serve.
pub struct Server {
    config: Config,
    store: Store,
    recovered: Recovered,
}

impl Server {
    /// Opens the data directory: repairs torn rows, rebuilds rooms, history and
    /// the next ids.
    pub fn open(config: Config) -> Result<Server, StoreError> {
        let (store, recovered) = Store::open(&config.data_dir, config.history)?;
        log::info!(
            "{} messages in {} rooms read back from {}; next message id {}",
            recovered.messages,
            recovered.rooms.len(),
            config.data_dir.display(),
            recovered.next_id
        );
        Ok(Server {
            config,
            store,
            recovered,
        })
    }

    /// What was read back from the data directory.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Serves `listener` until `shutdown` is triggered; then tells every client,
    /// flushes the files and returns.
    pub fn run(self, listener: TcpListener, shutdown: Shutdown) -> io::Result<()> {
        let Server {
            config,
            store,
            recovered,
        } = self;
        let registry = Arc::new(Registry::new(
            recovered.rooms,
            config.history,
            config.announce_limit,
        ));
        if let Some(room) = &config.default_room {
            registry.ensure_room(room);
        }
        let (store_tx, store_thread) = store.spawn(Arc::clone(&registry))?;
        let data_dir = config.data_dir.clone();
        let (stop_tx, stopping) = crossbeam_channel::bounded::<()>(0);
        let context = Arc::new(Context {
            config,
            registry: Arc::clone(&registry),
            store: store_tx,
            guests: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            accounts: Accounts::open(&data_dir),
            bans: Bans::open(&data_dir),
            mutes: Mutes::default(),
            failures: LoginFailures::new(LOGIN_FAILURES_PER_IP, LOGIN_FAILURE_WINDOW),
            flushers: Flushers::start(FLUSHERS)?,
            stopping,
        });
        // Every client thread holds a clone; when all are dropped, all are done.
        let (alive_tx, alive_rx) = crossbeam_channel::bounded::<()>(0);

        accept_loop(
            &listener,
            &context,
            &alive_tx,
            recovered.next_thread,
            &shutdown,
        )?;
        drop(listener);

        log::info!("shutting down: telling {} clients", registry.connections());
        registry.close_all(format::notice_as(
            "shutdown",
            "the server is shutting down; goodbye",
        ));
        drop(stop_tx);
        drop(alive_tx);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        if alive_rx.recv_deadline(deadline) == Err(RecvTimeoutError::Timeout) {
            log::warn!("some clients did not finish within {SHUTDOWN_GRACE:?}");
        }
        let flushers_done = context.flushers.wait_idle(Instant::now() + SHUTDOWN_GRACE);
        let Ok(context) = Arc::try_unwrap(context) else {
            log::warn!("a client thread is still running at exit");
            return Ok(());
        };
        let Context {
            store, flushers, ..
        } = context;
        drop(store);
        if store_thread.join().is_err() {
            log::error!("the store thread panicked");
        }
        // The store may have delivered the last messages after the goodbyes;
        // the flushers finish what they can, then stop.
        if !flushers_done {
            log::warn!("some clients were not sent everything before exit");
        }
        flushers.stop();
        Ok(())
    }
}

/// Takes connections until shutdown. Accept errors (out of descriptors) back
/// off instead of spinning.
fn accept_loop(
    listener: &TcpListener,
    context: &Arc<Context>,
    alive: &Sender<()>,
    first_thread: u64,
    shutdown: &Shutdown,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut next_thread = first_thread;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    while !shutdown.is_triggered() {
        match listener.accept() {
            Ok((stream, addr)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let thread = next_thread;
                next_thread += 1;
                admit(stream, addr, thread, context, alive);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(listener, ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if backoff == ACCEPT_BACKOFF_MIN {
                    log::warn!("accepting a connection failed: {e}; backing off");
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    Ok(())
}

/// Starts the thread of one accepted connection, or turns it away.
fn admit(
    stream: TcpStream,
    addr: SocketAddr,
    thread: u64,
    context: &Arc<Context>,
    alive: &Sender<()>,
) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    if let Some(why) = context.refusal(addr.ip()) {
        log::warn!("{addr} turned away: {why}");
        refuse(stream, &why);
        return;
    }
    let slot = Slot::take(context, addr.ip());
    let context_for_thread = Arc::clone(context);
    let alive = alive.clone();
    let spawned = thread::Builder::new()
        .name(format!("client-{thread}"))
        .stack_size(READER_STACK)
        .spawn(move || session::serve(context_for_thread, stream, addr, thread, alive, slot));
    if let Err(e) = spawned {
        log::warn!("{addr} turned away: cannot start a thread: {e}");
    }
}

/// Says why a connection is refused, without waiting on it, and closes it.
fn refuse(mut stream: TcpStream, why: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(format::error(why).text().as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Read what the newcomer already sent (its name, say), so that closing does
    // not reset the connection before it reads why.
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 1024];
        for _ in 0..16 {
            match stream.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

/// Waits until the listener has a connection or `timeout` passes.
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is one valid pollfd that lives across the call.
    unsafe {
        libc::poll(&mut fds, 1, millis);
    }
}

//! Accepting: one loop over every listener, which takes connections, turns
//! away those over a limit, and starts a thread for each of the others.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::format;
use crate::server::Listener;
use crate::server::Shutdown;
use crate::server::context::{Context, Slot};
use crate::server::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, ACCEPT_POLL, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES, READER_STACK,
};
use crate::server::session;
use crate::server::transport::Accept;

/// Connections taken from one listener in a row before the others get a
/// turn, so that a rush on one port does not starve another.
const ACCEPTS_PER_TURN: usize = 64;

/// Takes connections from every listener until shutdown. Accept errors (out
/// of descriptors) back off instead of spinning.
pub(crate) fn accept_loop(
    listeners: &[Listener],
    context: &Arc<Context>,
    alive: &Sender<()>,
    first_thread: u64,
    shutdown: &Shutdown,
) -> io::Result<()> {
    for listener in listeners {
        listener.socket.set_nonblocking(true)?;
    }
    let mut next_thread = first_thread;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    while !shutdown.is_triggered() {
        crate::server::metrics::metrics().beat();
        let mut idle = true;
        let mut failed = None;
        for listener in listeners {
            for _ in 0..ACCEPTS_PER_TURN {
                match listener.socket.accept() {
                    Ok((stream, addr)) => {
                        idle = false;
                        let thread = next_thread;
                        next_thread += 1;
                        admit(stream, addr, thread, &listener.accept, context, alive);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            // Some were taken this turn: descriptors come and go, so the
            // wait starts short again (as it did before the failure).
            if !idle {
                backoff = ACCEPT_BACKOFF_MIN;
            }
            if backoff == ACCEPT_BACKOFF_MIN {
                log::warn!("accepting a connection failed: {e}; backing off");
            }
            thread::sleep(backoff);
            backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
        } else if idle {
            backoff = ACCEPT_BACKOFF_MIN;
            wait_readable(listeners, ACCEPT_POLL);
        } else {
            backoff = ACCEPT_BACKOFF_MIN;
        }
    }
    Ok(())
}

/// Starts the thread of one accepted connection, or turns it away.
fn admit(
    stream: TcpStream,
    addr: SocketAddr,
    thread: u64,
    accept: &Arc<dyn Accept>,
    context: &Arc<Context>,
    alive: &Sender<()>,
) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    if let Err(e) = keep_alive(&stream) {
        log::debug!("{addr}: cannot turn TCP keepalive on: {e}");
    }
    if let Some(why) = context.refusal(addr.ip()) {
        log::warn!("{addr} turned away: {why}");
        accept.refuse(stream, &why);
        return;
    }
    let slot = Slot::take(context, addr.ip());
    let context_for_thread = Arc::clone(context);
    let accept = Arc::clone(accept);
    let alive = alive.clone();
    let spawned = thread::Builder::new()
        .name(format!("client-{thread}"))
        .stack_size(READER_STACK)
        .spawn(move || {
            session::serve(
                context_for_thread,
                &*accept,
                stream,
                addr,
                thread,
                alive,
                slot,
            )
        });
    if let Err(e) = spawned {
        log::warn!("{addr} turned away: cannot start a thread: {e}");
    }
}

/// Turns TCP keepalive on, so that a peer that vanished (a laptop asleep, a
/// lost Wi-Fi) is noticed within [`KEEPALIVE_IDLE`] + [`KEEPALIVE_PROBES`] ×
/// [`KEEPALIVE_INTERVAL`] of silence, and its session ends and frees its name.
fn keep_alive(stream: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(stream, true)?;
    sockopt::set_tcp_keepidle(stream, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(stream, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(stream, KEEPALIVE_PROBES)?;
    Ok(())
}

/// Says why a connection is refused, in a plain text line, without waiting
/// on it, and closes it. What [`Accept::refuse`] does unless a transport
/// knows better.
pub fn refuse_plain(stream: TcpStream, why: &str) {
    refuse_with(stream, format::error(why).text().as_bytes());
}

/// Sends `bytes` (a refusal already rendered for the connection's protocol)
/// without waiting on the connection, and closes it: the accept loop calls
/// this, so a newcomer that does not read holds up nobody.
pub fn refuse_with(mut stream: TcpStream, bytes: &[u8]) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(bytes);
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

/// Waits until a listener has a connection or `timeout` passes.
fn wait_readable(listeners: &[Listener], timeout: Duration) {
    let mut fds: Vec<PollFd<'_>> = listeners
        .iter()
        .map(|l| PollFd::new(&l.socket, PollFlags::IN))
        .collect();
    let timeout = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // Woken early or interrupted: the loop simply looks again.
    let _ = poll(&mut fds, Some(&timeout));
}

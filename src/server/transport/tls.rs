//! TLS (rustls, TLS 1.2 and 1.3, the `ring` provider): the same lines as
//! plain TCP, encrypted.
//!
//! - **Handshake**: [`Tls::open`] runs it blocking on the client's own thread,
//!   with the socket's timeouts set to what is left until the deadline (the
//!   name timeout's), so a peer that never finishes costs its thread that
//!   long and nothing after, and holds up nobody else.
//! - **Input**: the client's thread waits for ciphertext *without* any lock
//!   (a blocking one-byte peek, which honours the read timeout and wakes on
//!   `shutdown(Read)`), then locks the connection state to read what arrived
//!   without blocking into rustls, process it and take the plaintext. Records
//!   rustls must answer with (a key update, an alert) are written there and
//!   then, non-blocking, under the same lock.
//! - **Output**: the flusher locks the state, first writes any records rustls
//!   still holds, and only if they all went encrypts the next lines (one
//!   vectored write, so a batch of lines becomes few records) and writes them
//!   with a non-blocking `sendmsg`. What the socket did not take stays in
//!   rustls and is reported by [`Output::pending`]; the flusher comes back
//!   when the socket has room.
//!
//! Every socket write of ciphertext happens under the one lock, from rustls's
//! one queue of records, so records leave in the order rustls made them (a
//! key update reply never overtakes the records encrypted before it). The
//! lock is never held across a blocking call.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, recv, send, sendmsg};
use rustls::{ServerConfig, ServerConnection};

use super::{Accept, Connection, Stream, StreamInput, StreamOutput};
use crate::server::certs::{self, Certificates};
use crate::server::limits::READER_STACK;

/// Plaintext and records rustls may hold per connection: a batch of lines
/// in flight to a slow socket, and no more (the outbox holds the rest).
const TLS_BUFFER: usize = 64 * 1024;

/// TLS connections, with the server's certificate.
pub struct Tls {
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
    /// Refusals being told right now (see [`Accept::refuse`]).
    refusing: Arc<AtomicUsize>,
}

impl Tls {
    /// TLS 1.2 and 1.3 with the certificate `certificates` serves.
    pub fn new(certificates: Arc<Certificates>) -> Result<Tls, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(certs::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificates) as _);
        // Nothing to resume: a chat connection lives for hours. No tickets
        // keeps the handshake short and the server's memory flat.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Tls {
            config: Arc::new(config),
            certificates,
            refusing: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The certificate these connections are served.
    pub fn certificates(&self) -> &Arc<Certificates> {
        &self.certificates
    }

    /// Runs the handshake on `stream` (blocking, until `deadline`) and gives
    /// the encrypted connection as a plain byte stream, for the web port to
    /// speak HTTP and WebSocket in.
    pub fn open_stream(&self, stream: TcpStream, deadline: Instant) -> io::Result<Arc<dyn Stream>> {
        Ok(self.handshake(stream, deadline)?)
    }

    fn handshake(&self, mut stream: TcpStream, deadline: Instant) -> io::Result<Arc<Shared>> {
        let mut tls = ServerConnection::new(Arc::clone(&self.config)).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(TLS_BUFFER));
        handshake(&mut tls, &mut stream, deadline)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok(Arc::new(Shared {
            socket: stream,
            tls: Mutex::new(tls),
        }))
    }
}

/// Runs the handshake to its end, blocking, each read and write waiting at
/// most the time left until `deadline`: a peer that trickles bytes gains
/// nothing.
fn handshake(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timed_out())
        } else {
            Ok(left)
        }
    };
    let late = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
        _ => e,
    };
    loop {
        while tls.wants_write() {
            stream.set_write_timeout(Some(left()?))?;
            tls.write_tls(stream).map_err(late)?;
        }
        if !tls.is_handshaking() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left()?))?;
        match tls.read_tls(stream) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // Tell the peer why (an alert), if it still listens.
                    if let Ok(left) = left() {
                        let _ = stream.set_write_timeout(Some(left.min(Duration::from_secs(1))));
                        let _ = tls.write_tls(stream);
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(late(e)),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the TLS handshake did not finish in time",
    )
}

impl Accept for Tls {
    fn kind(&self) -> &'static str {
        "tls"
    }

    fn open(
        &self,
        stream: TcpStream,
        _peer: SocketAddr,
        deadline: Instant,
        max_line: usize,
    ) -> io::Result<Option<Connection>> {
        let shared = self.handshake(stream, deadline)?;
        Ok(Some(Connection {
            input: Box::new(StreamInput::new(Arc::clone(&shared), max_line)),
            output: Arc::new(StreamOutput::new(shared)),
        }))
    }

    /// A TLS client can only read the `! ` line inside TLS, so the refusal
    /// runs the handshake on a short-lived thread of its own (at most
    /// [`REFUSALS`] at once, each within [`REFUSAL_TIME`]) and says why there;
    /// past that many the connection is just closed. The accept loop never
    /// waits for either.
    fn refuse(&self, stream: TcpStream, why: &str) {
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= REFUSALS {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let config = Arc::clone(&self.config);
        let refusing = Arc::clone(&self.refusing);
        let line = crate::format::error(why);
        let spawned = thread::Builder::new()
            .name("tls-refusal".into())
            .stack_size(READER_STACK)
            .spawn(move || {
                refuse_in_tls(stream, &config, line.text().as_bytes());
                refusing.fetch_sub(1, Ordering::AcqRel);
            });
        // If no thread could start, the stream went down with the closure.
        if spawned.is_err() {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Refusals told inside TLS at once, at most; more are just closed.
const REFUSALS: usize = 16;
/// Time a refusal may take, handshake included.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Runs the handshake and sends `line`, then closes: how a TLS connection
/// is turned away.
fn refuse_in_tls(mut stream: TcpStream, config: &Arc<ServerConfig>, line: &[u8]) {
    let Ok(mut tls) = ServerConnection::new(Arc::clone(config)) else {
        return;
    };
    if handshake(&mut tls, &mut stream, Instant::now() + REFUSAL_TIME).is_err() {
        return;
    }
    if tls.writer().write_all(line).is_err() {
        return;
    }
    tls.send_close_notify();
    let _ = stream.set_write_timeout(Some(REFUSAL_TIME));
    while tls.wants_write() {
        if tls.write_tls(&mut stream).is_err() {
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Read what the newcomer still sends, so that closing does not reset
    // the connection before it reads why.
    super::drain(&stream);
}

/// What both halves share: the socket and the rustls state.
struct Shared {
    socket: TcpStream,
    tls: Mutex<ServerConnection>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.tls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The socket, read or written without ever blocking: what rustls is given
/// while the lock is held.
struct NonBlocking<'a>(BorrowedFd<'a>);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match recv(self.0, &mut *buf, RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match send(self.0, buf, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match sendmsg(
                self.0,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the records rustls holds, as far as the socket takes them now.
/// Returns true when none are left.
fn send_records(tls: &mut ServerConnection, fd: BorrowedFd<'_>) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut NonBlocking(fd)) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Waits, without any lock, until ciphertext (or the end) can be read.
/// Returns false at the end of the stream.
fn wait_readable(shared: &Shared) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match recv(shared.fd(), &mut byte, RecvFlags::PEEK) {
            Ok((n, _)) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads plaintext: waits for ciphertext without any lock, then locks the
/// state to take it in and read what it decrypts to.
fn read_plaintext(shared: &Shared, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        {
            let mut tls = shared.lock();
            match tls.reader().read(&mut *buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: the end, as over TCP.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        if !wait_readable(shared)? {
            return Ok(0);
        }
        let fd = shared.fd();
        let mut tls = shared.lock();
        loop {
            match tls.read_tls(&mut NonBlocking(fd)) {
                Ok(0) => break,
                Ok(_) => {
                    let state = tls.process_new_packets();
                    // Whatever rustls must answer (a key update, an alert).
                    let sent = send_records(&mut tls, fd);
                    let state = state.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    sent?;
                    if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Stream for Shared {
    fn socket(&self) -> BorrowedFd<'_> {
        self.fd()
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_plaintext(self, buf)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    fn send(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = self.fd();
        let mut tls = self.lock();
        if !send_records(&mut tls, fd)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if slices.is_empty() {
            return Ok(0);
        }
        let taken = tls.writer().write_vectored(slices)?;
        send_records(&mut tls, fd)?;
        Ok(taken)
    }

    fn pending(&self) -> bool {
        self.lock().wants_write()
    }

    fn shutdown(&self, how: Shutdown) {
        if how != Shutdown::Read {
            let mut tls = self.lock();
            tls.send_close_notify();
            let _ = send_records(&mut tls, self.fd());
        }
        let _ = self.socket.shutdown(how);
    }
}

//! The transport seam: the one place that knows how a connection carries
//! bytes. Plain TCP ([`tcp`]), TLS ([`tls`]) and WebSocket ([`web`]) are its
//! implementations. Sessions, the registry, the store and the outboxes only
//! ever see the traits below, so a new kind of connection is a new file here
//! and a new listener, nothing else.
//!
//! A connection has two halves:
//!
//! - its [`Input`], owned by the client's own thread: where the session's
//!   lines come from. Reads block, with a timeout the session sets (the name
//!   timeout, the linger after `/quit`); flood control makes this thread wait
//!   before it reads on. Nothing else ever reads.
//! - its [`Output`], shared (`Arc`) by the client's [`Outbox`], the flusher
//!   thread that drains it, and the registry: how queued [`Line`]s become
//!   bytes on the wire, written without ever blocking.
//!
//! An [`Accept`] turns a freshly accepted TCP stream into a [`Connection`].
//! It runs on the client's own thread, so a slow handshake (TLS, an HTTP
//! upgrade) holds up nobody else, and gives up at the deadline it is given.
//!
//! # How TLS and WebSocket fit
//! - **TLS** ([`tls`], rustls): `open` runs the handshake, blocking, until
//!   the deadline. The input waits for ciphertext *without* any lock, then
//!   locks the shared connection state to feed it in and take the plaintext
//!   out, and unlocks. The output locks the same state to encrypt the
//!   rendering and sends the records with a non-blocking `sendmsg`; records
//!   the socket did not take stay inside rustls and are reported by
//!   [`Output::pending`], so the flusher keeps the connection until they are
//!   out. The lock is never held across a blocking read.
//! - **WebSocket** (tungstenite): `open` reads the HTTP request and answers
//!   the upgrade. The input reads one text frame per line; its own writes
//!   (pongs, close replies) go to the outbox ([`Input::attach`]). The output's
//!   [`Output::rendering`] is the event's frame, encoded once per event and
//!   shared by every recipient like the text and JSON renderings are.
//!
//! [`Outbox`]: crate::server::outbox::Outbox

use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::format::Line;
use crate::wire::{self, LineReader};

pub mod tcp;
pub mod tls;
pub mod web;

/// A kind of connection a listener hands out: plain TCP, TLS, WebSocket.
pub trait Accept: Send + Sync {
    /// Its short name, for logs and the ready line (`tcp`, `tls`, `web`).
    fn kind(&self) -> &'static str;

    /// Makes a connection of the stream a listener accepted from `peer`. Runs
    /// on the client's own thread; a handshake gives up at `deadline`.
    /// `max_line` bounds the lines its [`Input`] returns. `Ok(None)` when
    /// the connection was served without becoming a chat session (a request
    /// for the web page).
    fn open(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
        max_line: usize,
    ) -> io::Result<Option<Connection>>;

    /// Tells a connection it is turned away (server full, too many from its
    /// address, ...) and closes it, without waiting on it: runs on the accept
    /// loop's thread. Plain text by default.
    fn refuse(&self, stream: TcpStream, why: &str) {
        crate::server::accept::refuse_plain(stream, why);
    }
}

/// An open connection, split into the half its thread reads from and the
/// half the flushers write to.
pub struct Connection {
    /// Where the session's lines come from.
    pub input: Box<dyn Input>,
    /// Where its outbox's lines go.
    pub output: Arc<dyn Output>,
}

/// The reading half of a connection, owned by the client's thread.
///
/// Promises:
/// 1. Lines come whole, in order, each at most the `max_line` given to
///    [`Accept::open`]; a longer one is [`wire::Line::TooLong`], bytes that are
///    not UTF-8 [`wire::Line::NotUtf8`]. Memory stays bounded whatever the
///    peer sends.
/// 2. `Ok(None)` is the end of the stream, also after
///    [`Output::shutdown`]`(Read)` from another thread, which wakes a
///    blocked read.
/// 3. A read waits at most the timeout set last (a `WouldBlock` or
///    `TimedOut` error after it); `None` waits for ever.
pub trait Input: Send {
    /// The next line the client sent; `Ok(None)` at the end.
    fn read_line(&mut self) -> io::Result<Option<wire::Line>>;

    /// How long reads may wait from now on.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Gives the input a way to queue bytes of its own in the connection's
    /// outbox, in order with everything else sent (a WebSocket answers pings
    /// and closes this way). Called once the outbox exists; plain TCP needs
    /// none.
    fn attach(&mut self, _send: Box<dyn Fn(Line) -> bool + Send>) {}
}

/// The writing half of a connection, shared by its outbox, its flusher and
/// the registry.
///
/// Promises:
/// 1. [`write`](Output::write) never blocks: it writes what the connection
///    takes now and says how much that was.
/// 2. Only the connection's flusher calls `write`, one call at a time, so
///    what it writes keeps its order.
/// 3. Bytes a `write` reported taken reach the peer in order, before any
///    taken later, unless the connection fails.
/// 4. [`shutdown`](Output::shutdown) may be called from any thread, any
///    number of times.
pub trait Output: Send + Sync {
    /// The socket whose room to write the flushers wait for (edge-triggered).
    fn socket(&self) -> BorrowedFd<'_>;

    /// The bytes `line` is on this connection's wire, for a client in JSON
    /// mode or not. Empty when such a client is sent nothing for it.
    fn rendering<'a>(&self, line: &'a Line, json: bool) -> &'a [u8];

    /// Writes as much as the connection takes now, without blocking, of the
    /// renderings of `lines` one after the other, the first from byte
    /// `offset` on. Returns how many of those bytes were taken; an error of
    /// kind `WouldBlock` when none were and the socket is full.
    fn write(&self, lines: &[Line], offset: usize, json: bool) -> io::Result<usize>;

    /// True while bytes that [`write`](Output::write) took still wait inside
    /// the transport for room in the socket (TLS records): the flusher calls
    /// `write` again, with no lines, when the socket has room. Plain TCP
    /// never holds any.
    fn pending(&self) -> bool {
        false
    }

    /// Ends reading (waking the client's thread), writing, or both.
    fn shutdown(&self, how: Shutdown);
}

/// A connection's bytes below any framing of lines or frames: plain TCP, or
/// TLS once its handshake is done. The web port builds HTTP and WebSocket on
/// it, so that it serves HTTPS and WSS with the TLS listener's certificate.
///
/// Promises: as [`Input`] for `read` (one reader, the client's thread;
/// blocking up to the read timeout; woken by `shutdown(Read)`), as
/// [`Output`] for `send`, `pending` and `shutdown` (never blocking).
pub trait Stream: Send + Sync {
    /// The socket, to wait for room to write.
    fn socket(&self) -> BorrowedFd<'_>;

    /// Reads what the peer sent (plaintext); 0 at the end.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// How long reads may wait from now on.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Writes as much of `slices` as the connection takes now; the bytes
    /// taken (a `WouldBlock` error when none and the socket is full).
    fn send(&self, slices: &[IoSlice<'_>]) -> io::Result<usize>;

    /// True while bytes taken still wait inside the stream (TLS records).
    fn pending(&self) -> bool {
        false
    }

    /// Ends reading, writing, or both.
    fn shutdown(&self, how: Shutdown);
}

/// The reading half of a connection over any [`Stream`]: lines read from
/// what the stream gives (plaintext, for TLS).
pub struct StreamInput<S: Stream> {
    lines: LineReader<Reader<S>>,
}

impl<S: Stream> StreamInput<S> {
    /// Reads lines of at most `max_line` bytes from `stream`.
    pub fn new(stream: Arc<S>, max_line: usize) -> StreamInput<S> {
        StreamInput {
            lines: LineReader::new(Reader(stream), max_line),
        }
    }
}

/// A shared stream as a `Read` of its own, for the line reader.
struct Reader<S>(Arc<S>);

impl<S: Stream> Read for Reader<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Stream> Input for StreamInput<S> {
    fn read_line(&mut self) -> io::Result<Option<wire::Line>> {
        self.lines.read_line()
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.lines.get_ref().0.set_read_timeout(timeout)
    }
}

/// The writing half of a connection over any [`Stream`]: a line's text or
/// JSON rendering, a batch in one [`Stream::send`].
pub struct StreamOutput<S: Stream> {
    stream: Arc<S>,
}

impl<S: Stream> StreamOutput<S> {
    /// Writes to `stream`.
    pub fn new(stream: Arc<S>) -> StreamOutput<S> {
        StreamOutput { stream }
    }
}

impl<S: Stream> Output for StreamOutput<S> {
    fn socket(&self) -> BorrowedFd<'_> {
        self.stream.socket()
    }

    fn rendering<'a>(&self, line: &'a Line, json: bool) -> &'a [u8] {
        line.for_mode(json).as_bytes()
    }

    fn write(&self, lines: &[Line], offset: usize, json: bool) -> io::Result<usize> {
        self.stream.send(&slices(lines, offset, |line| {
            line.for_mode(json).as_bytes()
        }))
    }

    fn pending(&self) -> bool {
        self.stream.pending()
    }

    fn shutdown(&self, how: Shutdown) {
        self.stream.shutdown(how);
    }
}

/// The slices of the renderings of `lines`, the first from byte `offset` on
/// (at most `UIO_MAXIOV` of them): what one write of a batch sends.
pub fn slices<'a>(
    lines: &'a [Line],
    offset: usize,
    render: impl Fn(&'a Line) -> &'a [u8],
) -> Vec<IoSlice<'a>> {
    const MAX_SLICES: usize = 1024;
    let mut slices = Vec::with_capacity(lines.len().min(MAX_SLICES));
    for (i, line) in lines.iter().take(MAX_SLICES).enumerate() {
        let bytes = render(line);
        let bytes = if i == 0 {
            &bytes[offset.min(bytes.len())..]
        } else {
            bytes
        };
        if !bytes.is_empty() {
            slices.push(IoSlice::new(bytes));
        }
    }
    slices
}

/// Reads what the peer still sends for a moment, so that closing does not
/// reset the connection before it has read the last response (a refusal, an
/// HTTP error).
pub(super) fn drain(stream: &dyn Stream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

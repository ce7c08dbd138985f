//! The connection to the server, as both front ends of the client use it:
//! the command-line options, opening the connection (plain TCP or TLS, one
//! [`Stream`] either way), reading the server's lines in bounded pieces, and
//! the errors a person is told about.
//!
//! [`super::plain`] (the line client) and [`super::tui`] (the full-screen
//! client) both build on this module and never on each other.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use rustyline::error::ReadlineError;

use super::trust::{self, Refusal, Trust, Verifier};

/// The host the client connects to when `--host` is not given: the server's default.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The port the client connects to when `--port` is not given: the server's default.
pub const DEFAULT_PORT: u16 = 6622;

/// The port `--tls` connects to when `--port` is not given: the server's
/// default TLS port.
pub const DEFAULT_TLS_PORT: u16 = 6697;

/// Time allowed to open the connection: long enough for a distant server,
/// short enough that a wrong `--host` does not hang the client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for the server to close the connection after the client asked
/// to leave (`/quit`, Ctrl-C, Ctrl-D): leaving must not hang on a dead server.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// Longest piece of a line handled at once, from the server or from stdin.
/// Longer lines are handled in pieces of this size, so that a broken peer
/// cannot make the client's memory grow without bound; the server's own
/// limit (4096 bytes by default) is far below it.
pub const MAX_LINE_PIECE: usize = 64 * 1024;

/// What the user asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Host name or IP address of the server (an IPv6 address may be in brackets).
    pub host: String,
    /// TCP port of the server.
    pub port: u16,
    /// Name to send as soon as the connection is made (in the full-screen
    /// mode: at the first name prompt); `None` asks the user.
    pub name: Option<String>,
    /// `--plain`: the line-by-line client even on a terminal.
    pub plain: bool,
    /// TLS, and whom to trust (`--tls`, `--tls-ca`, `--tls-fingerprint`);
    /// `None` is plain TCP.
    pub tls: Option<Trust>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            name: None,
            plain: false,
            tls: None,
        }
    }
}

/// Why the client stopped with an error. Each variant is reported once, by
/// the binary, as one line that says what to check.
#[derive(Debug)]
pub enum ClientError {
    /// `--host` did not resolve to any address.
    Resolve {
        /// The address as the user wrote it (`host:port`).
        address: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// No server answered at the address.
    Connect {
        /// The address as the user wrote it (`host:port`).
        address: String,
        /// Why the last attempt failed.
        source: io::Error,
    },
    /// The connection ended although the user did not ask to leave.
    Lost {
        /// The address as the user wrote it (`host:port`).
        address: String,
        /// How it ended.
        reason: LostReason,
    },
    /// Standard input could not be read (pipe mode).
    Input(io::Error),
    /// The terminal could not be used for line editing.
    Terminal(ReadlineError),
    /// The terminal could not be used for the full screen.
    Screen(io::Error),
    /// The TLS handshake failed, or the server's certificate is not trusted.
    Tls {
        /// The address as the user wrote it (`host:port`).
        address: String,
        /// What went wrong, and what to do.
        problem: TlsProblem,
    },
    /// The connection was lost and did not come back.
    GaveUp {
        /// The address as the user wrote it (`host:port`).
        address: String,
        /// How many times the client tried again.
        attempts: u32,
        /// Why the last attempt failed.
        reason: String,
    },
}

/// Why a TLS connection could not be made.
#[derive(Debug)]
pub enum TlsProblem {
    /// The flags could not be used (an unreadable `--tls-ca`, ...).
    Setup(String),
    /// Nobody vouches for the certificate and nobody here said to trust it.
    Untrusted {
        /// Its SHA-256 fingerprint.
        fingerprint: String,
        /// Why the trusted roots did not vouch for it.
        why: String,
    },
    /// The certificate differs from the one trusted here before.
    Changed {
        /// The one remembered.
        known: String,
        /// The one presented now.
        now: String,
        /// Where it is remembered.
        file: String,
    },
    /// The certificate is not the one `--tls-fingerprint` pins.
    NotPinned {
        /// The one presented.
        now: String,
    },
    /// The person said no.
    Declined,
    /// Anything else during the handshake, in words.
    Handshake(String),
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(why) => f.write_str(why),
            Self::Untrusted { fingerprint, why } => write!(
                f,
                "its certificate is not trusted ({why}); its SHA-256 fingerprint is {fingerprint}: if your server's operator confirms it, connect with --tls-fingerprint {fingerprint}, or with --tls-ca and your organisation's CA file"
            ),
            Self::Changed { known, now, file } => write!(
                f,
                "WARNING: ITS CERTIFICATE CHANGED since you trusted it (was {known}, now {now}); someone may be intercepting the connection. Refusing to connect. If the operator replaced the certificate, remove its line from {file} and connect again"
            ),
            Self::NotPinned { now } => write!(
                f,
                "its certificate is not the one --tls-fingerprint names (it is {now}); refusing to connect"
            ),
            Self::Declined => f.write_str("its certificate was not trusted; nothing was sent"),
            Self::Handshake(why) => write!(f, "{why} (is it the server's TLS port? check --port)"),
        }
    }
}

/// How a connection was lost.
#[derive(Debug)]
pub enum LostReason {
    /// The server closed the connection.
    ServerClosed,
    /// Reading from the server failed.
    Read(io::Error),
    /// Sending to the server failed.
    Send(io::Error),
    /// Anything else, in words (the server's own, when it said why).
    Other(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resolve { address, source } => write!(
                f,
                "cannot resolve {address}: {} (check --host)",
                plain(source)
            ),
            Self::Connect { address, source } => write!(
                f,
                "cannot connect to {address}: {} (is the server running? check --host and --port)",
                plain(source)
            ),
            Self::Lost { address, reason } => write!(f, "connection to {address} lost: {reason}"),
            Self::Input(source) => write!(f, "cannot read standard input: {}", plain(source)),
            Self::Terminal(source) => write!(f, "cannot use the terminal: {source}"),
            Self::Screen(source) => write!(f, "cannot use the terminal: {}", plain(source)),
            Self::Tls { address, problem } => write!(f, "TLS with {address} failed: {problem}"),
            Self::GaveUp {
                address,
                attempts,
                reason,
            } => write!(
                f,
                "connection to {address} lost; gave up after {attempts} attempts to reconnect (last: {reason}); is the server running?"
            ),
        }
    }
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServerClosed => f.write_str("server closed the connection"),
            Self::Read(source) => write!(f, "read failed: {}", plain(source)),
            Self::Send(source) => write!(f, "send failed: {}", plain(source)),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Resolve { source, .. }
            | Self::Connect { source, .. }
            | Self::Input(source)
            | Self::Screen(source) => Some(source),
            Self::Lost { reason, .. } => match reason {
                LostReason::ServerClosed | LostReason::Other(_) => None,
                LostReason::Read(source) | LostReason::Send(source) => Some(source),
            },
            Self::Terminal(source) => Some(source),
            Self::GaveUp { .. } | Self::Tls { .. } => None,
        }
    }
}

/// An I/O error in words, without the `(os error N)` suffix that only a
/// programmer needs.
pub(crate) fn plain(error: &io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}

/// The host as the resolver wants it: without the brackets an IPv6 address
/// may be written in.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

/// The address to name in messages, `host:port`, with an IPv6 host in brackets.
pub fn address(host: &str, port: u16) -> String {
    let host = bare_host(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a `--name` value: one line without control characters (a line
/// break would send a second line; the server would strip the rest).
pub fn parse_name(value: &str) -> Result<String, String> {
    if value.chars().any(char::is_control) {
        Err("a name cannot contain line breaks or other control characters".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

/// Removes what could drive the terminal from a line received from the
/// network: ESC, the other C0 controls except tab, DEL and the C1 controls.
///
/// The server already strips them; this is defence in depth, since the
/// client cannot know that it talks to a well-behaved server.
pub fn sanitise(line: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\t';
    if line.chars().any(unsafe_char) {
        Cow::Owned(line.chars().filter(|&c| !unsafe_char(c)).collect())
    } else {
        Cow::Borrowed(line)
    }
}

/// Reads up to [`MAX_LINE_PIECE`] bytes of one line into `buf` (cleared
/// first), its `\n` included if it fits. Returns `false` at the end of the
/// stream.
pub(crate) fn read_piece(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE_PIECE).unwrap_or(u64::MAX);
    let n = reader.take(limit).read_until(b'\n', buf)?;
    Ok(n > 0)
}

/// A line without its `\n` or `\r\n` ending.
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Opens a TCP connection, trying each address the host resolves to.
fn connect_tcp(options: &Options) -> Result<TcpStream, ClientError> {
    let address = address(&options.host, options.port);
    let candidates: Vec<SocketAddr> = (bare_host(&options.host), options.port)
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            address: address.clone(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    if candidates.is_empty() {
        return Err(ClientError::Resolve {
            address,
            source: last,
        });
    }
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                log::debug!("connecting to {candidate}: {e}");
                last = e;
            }
        }
    }
    Err(ClientError::Connect {
        address,
        source: last,
    })
}

/// Opens the connection: TCP, then the TLS handshake if asked for. With
/// `ask` (a person at a terminal, before the screen is taken), a
/// certificate nobody vouches for is shown and trusted only if the person
/// says so; otherwise it is an error that says what to do.
pub fn connect(options: &Options, ask: bool) -> Result<Stream, ClientError> {
    let Some(trust) = &options.tls else {
        return Ok(Stream::plain(connect_tcp(options)?));
    };
    let address = address(&options.host, options.port);
    let fail = |problem| ClientError::Tls {
        address: address.clone(),
        problem,
    };
    let ask = ask && io::stdin().is_terminal() && io::stderr().is_terminal();
    let name = ServerName::try_from(bare_host(&options.host).to_owned()).map_err(|e| {
        fail(TlsProblem::Setup(format!(
            "--host {} cannot be checked against a certificate: {e}",
            options.host
        )))
    })?;
    let mut asked = false;
    loop {
        let verifier = Arc::new(
            Verifier::new(trust.clone(), &address).map_err(|e| fail(TlsProblem::Setup(e)))?,
        );
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| fail(TlsProblem::Setup(e.to_string())))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as _)
            .with_no_client_auth();
        let tcp = connect_tcp(options)?;
        let handshake = handshake(tcp, Arc::new(config), name.clone());
        let error = match handshake {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        match verifier.take_refusal() {
            Some(Refusal::Unknown { fingerprint, why }) if ask && !asked => {
                asked = true;
                if !ask_to_trust(&address, &fingerprint, &why, verifier.known_hosts())? {
                    return Err(fail(TlsProblem::Declined));
                }
                // Connect again; the certificate is trusted now.
                if verifier.known_hosts().is_none() {
                    let pin = crate::tls::parse_fingerprint(&fingerprint)
                        .map_err(|e| fail(TlsProblem::Setup(e)))?;
                    let mut pinned = options.clone();
                    pinned.tls = Some(Trust::Pin(pin));
                    return connect(&pinned, false);
                }
            }
            Some(Refusal::Unknown { fingerprint, why }) => {
                return Err(fail(TlsProblem::Untrusted { fingerprint, why }));
            }
            Some(Refusal::Changed { known, now }) => {
                let file = verifier
                    .known_hosts()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                return Err(fail(TlsProblem::Changed { known, now, file }));
            }
            Some(Refusal::NotPinned { now }) => return Err(fail(TlsProblem::NotPinned { now })),
            None => {
                let why = match error
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                {
                    Some(tls) => match tls {
                        rustls::Error::InvalidCertificate(_) => {
                            format!("the server's certificate: {}", trust::describe(tls))
                        }
                        rustls::Error::InvalidMessage(_) => {
                            "the server did not answer in TLS".to_string()
                        }
                        other => other.to_string(),
                    },
                    None => plain(&error),
                };
                return Err(fail(TlsProblem::Handshake(why)));
            }
        }
    }
}

/// Shows an untrusted certificate to the person and asks; a yes is
/// remembered in `known_hosts` (when there is one).
fn ask_to_trust(
    address: &str,
    fingerprint: &str,
    why: &str,
    known_hosts: Option<&std::path::Path>,
) -> Result<bool, ClientError> {
    let mut err = io::stderr();
    let _ = writeln!(
        err,
        "The certificate of {address} is not trusted: {why}.\nIts SHA-256 fingerprint is\n  {fingerprint}\nCompare it with the one the server's operator gave you (`server tls-init` prints it)."
    );
    let _ = write!(err, "Trust this certificate for {address}? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(ClientError::Input)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        return Ok(false);
    }
    if let Some(file) = known_hosts {
        match trust::remember(file, address, fingerprint) {
            Ok(()) => {
                let _ = writeln!(err, "Remembered in {}.", file.display());
            }
            Err(e) => {
                let _ = writeln!(
                    err,
                    "Cannot remember it in {} ({}); trusting it this time only.",
                    file.display(),
                    plain(&e)
                );
            }
        }
    }
    Ok(true)
}

/// Runs the TLS handshake on `tcp`, within [`CONNECT_TIMEOUT`].
fn handshake(
    mut tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<Stream> {
    let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)?;
    }
    tcp.set_read_timeout(None)?;
    tcp.set_write_timeout(None)?;
    Ok(Stream {
        socket: Arc::new(tcp),
        tls: Some(Arc::new(TlsState {
            connection: Mutex::new(tls),
            sending: Mutex::new(()),
        })),
    })
}

/// The connection to the server as one byte stream, plain TCP or TLS: what
/// both front ends read lines from and write lines to. Cheap to clone: a
/// reading thread and a writing thread each hold one.
///
/// Promises:
/// 1. Reading never holds a lock while it waits for the network: a writer
///    blocked on a slow server never stops the reader, nor the other way.
/// 2. Bytes written leave in the order written, and TLS records leave in
///    the order rustls made them (a key update reply never overtakes).
/// 3. `shutdown(Write)` over TLS says `close_notify` first, if it can
///    without waiting.
#[derive(Clone)]
pub struct Stream {
    socket: Arc<TcpStream>,
    tls: Option<Arc<TlsState>>,
}

/// The rustls state both halves share.
struct TlsState {
    connection: Mutex<ClientConnection>,
    /// Held while records go to the socket, so they leave in order.
    sending: Mutex<()>,
}

impl TlsState {
    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("socket", &self.socket)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Stream {
    /// A plain TCP stream.
    pub fn plain(socket: TcpStream) -> Stream {
        Stream {
            socket: Arc::new(socket),
            tls: None,
        }
    }

    /// Another handle on the same connection.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(self.clone())
    }

    /// The TCP socket under the stream (for timeouts and shutdown; never
    /// read or write it directly over TLS).
    pub fn tcp(&self) -> io::Result<TcpStream> {
        self.socket.try_clone()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// See [`TcpStream::set_nodelay`].
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.set_nodelay(nodelay)
    }

    /// See [`TcpStream::set_write_timeout`].
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_write_timeout(timeout)
    }

    /// See [`TcpStream::set_read_timeout`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    /// Ends reading, writing or both, on every handle.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read
            && let Some(tls) = &self.tls
        {
            tls.lock().send_close_notify();
            let _ = self.send_records(tls, false);
        }
        self.socket.shutdown(how)
    }

    /// Writes the records rustls holds. With `wait`, waits its turn; without,
    /// leaves them to whoever is sending now (who looks again when done).
    fn send_records(&self, tls: &TlsState, wait: bool) -> io::Result<()> {
        loop {
            let turn = if wait {
                tls.sending.lock().unwrap_or_else(|p| p.into_inner())
            } else {
                match tls.sending.try_lock() {
                    Ok(turn) => turn,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
                }
            };
            loop {
                let mut records = Vec::new();
                {
                    let mut connection = tls.lock();
                    while connection.wants_write() {
                        connection.write_tls(&mut records)?;
                    }
                }
                if records.is_empty() {
                    break;
                }
                (&*self.socket).write_all(&records)?;
            }
            drop(turn);
            // Records queued while the turn was being given up are sent by
            // the next round, not left behind.
            if !tls.lock().wants_write() {
                return Ok(());
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.clone() else {
            return (&*self.socket).read(buf);
        };
        let mut raw = [0u8; 8 * 1024];
        loop {
            {
                let mut connection = tls.lock();
                match connection.reader().read(&mut *buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Closed without close_notify (a killed server): the end.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            // Wait for the network without any lock.
            let n = loop {
                match (&*self.socket).read(&mut raw) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            {
                let mut connection = tls.lock();
                let mut fresh = &raw[..n];
                loop {
                    connection.read_tls(&mut fresh)?;
                    connection
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if fresh.is_empty() {
                        break;
                    }
                }
            }
            // A key update or an alert to answer.
            self.send_records(&tls, false)?;
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.clone() else {
            return (&*self.socket).write(buf);
        };
        let taken = tls.lock().writer().write(buf)?;
        self.send_records(&tls, true)?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_names_host_and_port() {
        assert_eq!(address("127.0.0.1", 6622), "127.0.0.1:6622");
        assert_eq!(address("chat.example.org", 7000), "chat.example.org:7000");
    }

    #[test]
    fn ipv6_host_is_named_in_brackets_with_or_without_them_on_the_command_line() {
        assert_eq!(address("::1", 6622), "[::1]:6622");
        assert_eq!(address("[::1]", 6622), "[::1]:6622");
        assert_eq!(bare_host("[::1]"), "::1");
        assert_eq!(bare_host("localhost"), "localhost");
    }

    #[test]
    fn default_options_point_at_the_default_server() {
        let options = Options::default();
        assert_eq!(address(&options.host, options.port), "127.0.0.1:6622");
        assert_eq!(options.name, None);
    }

    #[test]
    fn name_flag_with_a_line_break_is_refused() {
        assert_eq!(parse_name("alice"), Ok("alice".to_owned()));
        assert_eq!(parse_name(""), Ok(String::new()));
        assert!(parse_name("alice\n/quit").is_err());
        assert!(parse_name("al\x1bice").is_err());
    }

    #[test]
    fn plain_text_is_shown_unchanged() {
        let line = "[12:00:01] alice: héllo\tworld ✓";
        assert!(matches!(sanitise(line), Cow::Borrowed(_)));
        assert_eq!(sanitise(line), line);
    }

    #[test]
    fn escape_sequences_from_the_network_cannot_reach_the_terminal() {
        assert_eq!(sanitise("a\x1b[2Jb"), "a[2Jb");
        assert_eq!(sanitise("bell\x07 cr\r nul\0 del\x7f"), "bell cr nul del");
        // C1 controls, including the single-character CSI (U+009B).
        assert_eq!(sanitise("x\u{9b}31my\u{85}z\u{80}"), "x31myz");
        assert_eq!(sanitise("tab\tstays"), "tab\tstays");
    }

    #[test]
    fn long_server_lines_are_read_in_bounded_pieces() {
        let mut input = vec![b'x'; MAX_LINE_PIECE + 10];
        input.extend_from_slice(b"\r\nnext");
        let mut reader = io::Cursor::new(input);
        let mut buf = Vec::new();
        assert!(read_piece(&mut reader, &mut buf).unwrap_or(false));
        assert_eq!(buf.len(), MAX_LINE_PIECE);
        assert!(read_piece(&mut reader, &mut buf).unwrap_or(false));
        assert_eq!(trim_line_end(&buf), vec![b'x'; 10].as_slice());
        assert!(read_piece(&mut reader, &mut buf).unwrap_or(false));
        assert_eq!(trim_line_end(&buf), b"next");
        assert!(!read_piece(&mut reader, &mut buf).unwrap_or(true));
    }

    #[test]
    fn os_error_numbers_are_left_out_of_messages() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!plain(&refused).contains("os error"));
        let error = ClientError::Connect {
            address: "127.0.0.1:6622".to_owned(),
            source: refused,
        };
        let text = error.to_string();
        assert!(
            text.starts_with("cannot connect to 127.0.0.1:6622: "),
            "{text}"
        );
        assert!(text.ends_with("(is the server running? check --host and --port)"));
        assert!(!text.contains('\n'));
    }
}

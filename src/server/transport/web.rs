//! The web port: the page and a WebSocket, on one listener.
//!
//! [`Web::open`] reads the HTTP request head (bounded, with the
//! connection's deadline) and parses it with `httparse`. `GET /` and the
//! page's assets (embedded in the binary, see `web/`) are answered at once
//! and the connection closes: no session, no rows in `data.csv`. `GET /ws`
//! with an `Origin` that is the page's own (or listed with `--web-origin`)
//! is upgraded to a WebSocket that speaks the JSON mode: one event per text
//! frame out, one command or chat line per text frame in.
//!
//! - The input is a `tungstenite` `WebSocket` the client's thread owns: it
//!   reads frames from the socket, and its write side (pongs, the closing
//!   handshake, our pings) goes through the connection's outbox, in order
//!   with everything else sent, so only the flusher ever writes the socket.
//!   Idle connections are pinged every [`PING_EVERY`]; one that answered
//!   nothing by the next ping is dropped.
//! - The output writes each event's frame, made by `tungstenite` from the
//!   JSON rendering once per event and shared by every recipient
//!   ([`Line::framed`]).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::tls::Tls;
use super::{Accept, Connection, Input, Output, Stream, slices};
use crate::format::Line;
use crate::server::accept;
use crate::wire;

/// The longest request head read: a browser's is well under 2 KiB.
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 48;
/// Bytes first asked of the socket while reading a request head.
const HEAD_CHUNK: usize = 1024;
/// How long a response may take to be written before the connection is
/// given up (the page is small; this is for a client that stopped reading).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the server pings a WebSocket, by default; a
/// connection that has answered nothing by the next ping is dropped as dead.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// What a WebSocket reads at once: small, since an idle client holds it for
/// hours (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 4 * 1024;

/// The headers every response carries: no inline script, no sniffing, no
/// referrer leaving the page.
const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\n\
X-Frame-Options: DENY\r\n\
Cross-Origin-Opener-Policy: same-origin\r\n";

/// One file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page, embedded in the binary: the one server binary is all an
/// operator deploys.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../web/app.css"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../web/icon.svg"),
    },
];

/// The web port's kind of connection.
pub struct Web {
    /// Origins allowed to open a WebSocket besides the page's own
    /// (`--web-origin`), e.g. `https://chat.example.org`; a reload may
    /// change them.
    pub origins: std::sync::RwLock<Vec<String>>,
    /// Silence after which an idle WebSocket is pinged ([`PING_EVERY`]).
    pub ping_every: Duration,
    /// With TLS on: HTTPS and WSS, with the TLS listener's certificate
    /// (reloaded with it).
    pub tls: Option<Arc<Tls>>,
    /// Serves the page and the WebSocket (false: a port for the metrics only).
    pub page: bool,
    /// Serves `/metrics` and `/healthz`; to any address when `public`, to
    /// loopback only otherwise.
    pub probes: Option<Probes>,
}

/// Who may read `/metrics` and `/healthz`.
#[derive(Debug, Clone, Copy)]
pub struct Probes {
    /// From any address (`--metrics-public`); otherwise from loopback only.
    pub public: bool,
}

impl Accept for Web {
    fn kind(&self) -> &'static str {
        "web"
    }

    fn open(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
        max_line: usize,
    ) -> io::Result<Option<Connection>> {
        let stream: Arc<dyn Stream> = match &self.tls {
            Some(tls) => tls.open_stream(stream, deadline)?,
            None => Arc::new(stream),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let (head, rest) = match read_head(&*stream) {
            Ok(read) => read,
            Err(Refused(status, why)) => {
                respond_error(&*stream, status, why);
                return Ok(None);
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
            respond_error(&*stream, 400, "a request this server cannot read");
            return Ok(None);
        }
        let method = request.method.unwrap_or("");
        let path = request.path.unwrap_or("/");
        let path = path.split('?').next().unwrap_or("/");
        if path == "/metrics" || path == "/healthz" {
            match self.probes {
                Some(probes) if probes.public || peer.ip().is_loopback() => {
                    respond_probe(&*stream, path == "/metrics", method == "HEAD");
                }
                Some(_) => respond_error(
                    &*stream,
                    403,
                    "the metrics are for this machine only; the operator can open them with --metrics-public",
                ),
                None => respond_error(&*stream, 404, "there is nothing here"),
            }
            return Ok(None);
        }
        if !self.page {
            respond_error(&*stream, 404, "this port serves /metrics and /healthz only");
            return Ok(None);
        }
        if path == "/ws" {
            return self.upgrade(stream, peer, &request, rest, max_line);
        }
        let Some(asset) = ASSETS
            .iter()
            .find(|a| a.path == path || (path == "/index.html" && a.path == "/"))
        else {
            respond_error(&*stream, 404, "there is nothing here; the chat is at /");
            return Ok(None);
        };
        match method {
            "GET" => respond(&*stream, asset, host(&request), true),
            "HEAD" => respond(&*stream, asset, host(&request), false),
            _ => respond_error(&*stream, 405, "only GET and HEAD are answered"),
        }
        Ok(None)
    }

    fn refuse(&self, stream: TcpStream, why: &str) {
        match &self.tls {
            // Said inside TLS, without holding up the accept loop.
            Some(tls) => tls.refuse(stream, why),
            None => accept::refuse_with(stream, error_response(503, why).as_bytes()),
        }
    }
}

impl Web {
    /// Answers the WebSocket upgrade and makes the connection.
    fn upgrade(
        &self,
        stream: Arc<dyn Stream>,
        peer: SocketAddr,
        request: &httparse::Request<'_, '_>,
        rest: Vec<u8>,
        max_line: usize,
    ) -> io::Result<Option<Connection>> {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let has_token = |name: &str, token: &str| {
            header(name).is_some_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        };
        if request.method != Some("GET")
            || !has_token("Upgrade", "websocket")
            || !has_token("Connection", "upgrade")
        {
            respond_error(&*stream, 400, "this address is for WebSocket upgrades");
            return Ok(None);
        }
        if header("Sec-WebSocket-Version") != Some("13") {
            respond_error(&*stream, 426, "only WebSocket version 13 is spoken here");
            return Ok(None);
        }
        let Some(key) = header("Sec-WebSocket-Key") else {
            respond_error(&*stream, 400, "a WebSocket upgrade needs a key");
            return Ok(None);
        };
        if let Some(origin) = header("Origin")
            && !self.allows(origin, header("Host"))
        {
            log::warn!("{peer}: WebSocket from origin {origin:?} refused");
            respond_error(
                &*stream,
                403,
                "this page's origin may not open the chat; the server's operator can allow it with --web-origin",
            );
            return Ok(None);
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{SECURITY_HEADERS}\r\n"
        );
        write_all(&*stream, response.as_bytes())?;
        let sink: Arc<Mutex<Sink>> = Arc::new(Mutex::new(None));
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            // A frame longer than a line is refused as too long by us; one
            // far longer ends the connection before it fills memory.
            .max_message_size(Some(max_line.saturating_mul(4).saturating_add(1024)))
            .max_frame_size(Some(max_line.saturating_mul(4).saturating_add(1024)));
        let duplex = Duplex {
            socket: Arc::clone(&stream),
            sink: Arc::clone(&sink),
        };
        let socket = WebSocket::from_partially_read(duplex, rest, Role::Server, Some(config));
        Ok(Some(Connection {
            input: Box::new(WsInput {
                socket,
                stream: Arc::clone(&stream),
                sink,
                max_line,
                deadline: None,
                awaiting_pong: false,
                ping_every: self.ping_every,
            }),
            output: Arc::new(WsOutput { stream }),
        }))
    }

    /// Whether a page from `origin` may open the chat: the page's own
    /// origin (the host it was served from), or one the operator listed.
    fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/');
        if self
            .origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")))
    }
}

/// A request refused before it could be parsed: its status and why.
struct Refused(u16, &'static str);

/// Reads the request head (up to the blank line), at most [`MAX_HEAD`]
/// bytes. Returns it and whatever came after it.
fn read_head(stream: &dyn Stream) -> Result<(Vec<u8>, Vec<u8>), Refused> {
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_CHUNK);
    loop {
        if let Some(end) = find_blank_line(&buf) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() >= MAX_HEAD {
            return Err(Refused(431, "the request head is too long"));
        }
        let old = buf.len();
        buf.resize((old + HEAD_CHUNK).min(MAX_HEAD), 0);
        match stream.read(&mut buf[old..]) {
            Ok(0) => return Err(Refused(400, "the request ended early")),
            Ok(n) => buf.truncate(old + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(old),
            Err(_) => return Err(Refused(408, "the request took too long")),
        }
    }
}

/// The end of the head (after `\r\n\r\n`), if it has come.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The `Host` header.
fn host<'a>(request: &'a httparse::Request<'_, 'a>) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// The Content-Security-Policy of the page: scripts, styles and images from
/// the page's own origin only (no inline script), and WebSockets to it.
fn content_security_policy(host: Option<&str>) -> String {
    let sockets = host
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'{sockets}; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Writes all of `bytes`, waiting at most [`RESPONSE_TIMEOUT`] for room
/// (the client's own thread writes its page; only it waits).
fn write_all(stream: &dyn Stream, mut bytes: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    while !bytes.is_empty() || stream.pending() {
        let slice = [IoSlice::new(bytes)];
        let parts: &[IoSlice<'_>] = if bytes.is_empty() { &[] } else { &slice };
        match stream.send(parts) {
            Ok(n) => {
                bytes = &bytes[n.min(bytes.len())..];
                if n > 0 || !stream.pending() {
                    continue;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let socket = stream.socket();
        let mut fds = [PollFd::new(&socket, PollFlags::OUT)];
        let wait = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let _ = poll(&mut fds, Some(&wait));
    }
    Ok(())
}

/// Writes an asset (the body only for GET), then closes.
fn respond(stream: &dyn Stream, asset: &Asset, host: Option<&str>, body: bool) {
    let head = head(
        "200 OK",
        asset.content_type,
        "no-cache",
        host,
        asset.body.len(),
    );
    send(stream, &head, if body { asset.body } else { b"" });
}

/// Answers `/metrics` (Prometheus's text format) or `/healthz` (200 while the
/// server takes messages, 503 with the reason while it refuses them: the
/// store cannot write, or this cluster node is fenced), then closes.
fn respond_probe(stream: &dyn Stream, metrics: bool, head_only: bool) {
    let state = crate::server::metrics::metrics();
    let (status, content_type, body) = if metrics {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            state.render(),
        )
    } else if let Some(why) = state.unhealthy() {
        (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            format!("{why}\n"),
        )
    } else {
        ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string())
    };
    let head = head(status, content_type, "no-store", None, body.len());
    send(stream, &head, if head_only { b"" } else { body.as_bytes() });
}

/// Writes an error response whose body says why in one line, then closes.
fn respond_error(stream: &dyn Stream, status: u16, why: &str) {
    send(stream, &error_response(status, why), b"");
}

/// The head of a response that closes the connection after `length`
/// bytes of body.
fn head(
    status: &str,
    content_type: &str,
    cache: &str,
    host: Option<&str>,
    length: usize,
) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nCache-Control: {cache}\r\nContent-Security-Policy: {}\r\n{SECURITY_HEADERS}Connection: close\r\n\r\n",
        content_security_policy(host)
    )
}

/// Writes a response (its head, then `body`), closes the writing side and
/// reads what the client still sends, so that closing does not reset the
/// response.
fn send(stream: &dyn Stream, head: &str, body: &[u8]) {
    let written = write_all(stream, head.as_bytes()).and_then(|()| write_all(stream, body));
    if written.is_ok() {
        stream.shutdown(Shutdown::Write);
        super::drain(stream);
    }
}

/// The HTTP error response whose body says why in one line.
fn error_response(status: u16, why: &str) -> String {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let body = format!("{why}\n");
    let head = head(
        &format!("{status} {reason}"),
        "text/plain; charset=utf-8",
        "no-store",
        None,
        body.len(),
    );
    head + &body
}

/// Where the WebSocket's own writes (pongs, close replies, pings) go: the
/// outbox, once attached. The session attaches it before its first read,
/// and only reads write, so nothing is ever written before.
type Sink = Option<Box<dyn Fn(Line) -> bool + Send>>;

/// The socket as the WebSocket sees it: reads come from the socket, writes
/// go to the outbox (never to the socket: only the flusher writes there).
struct Duplex {
    socket: Arc<dyn Stream>,
    sink: Arc<Mutex<Sink>>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        match &*sink {
            Some(send) if send(Line::framed_only(buf)) => Ok(buf.len()),
            _ => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading half of a WebSocket connection.
struct WsInput {
    socket: WebSocket<Duplex>,
    stream: Arc<dyn Stream>,
    sink: Arc<Mutex<Sink>>,
    max_line: usize,
    /// When reads give up, as the session asked; `None`: never.
    deadline: Option<Instant>,
    /// A ping went out and nothing came back since.
    awaiting_pong: bool,
    /// Silence after which the client is pinged.
    ping_every: Duration,
}

impl Input for WsInput {
    fn read_line(&mut self) -> io::Result<Option<wire::Line>> {
        loop {
            // Wake for the next ping or the session's deadline, whichever is first.
            let ping_at = Instant::now() + self.ping_every;
            let wake = self.deadline.map_or(ping_at, |d| d.min(ping_at));
            let wait = wake.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(wait))?;
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    self.awaiting_pong = false;
                    let text = text.as_str();
                    let line = if text.len() > self.max_line {
                        wire::Line::TooLong
                    } else if text.contains(['\n', '\r']) {
                        wire::Line::HasLineBreak
                    } else {
                        wire::Line::Text(text.to_string())
                    };
                    return Ok(Some(line));
                }
                Ok(Message::Binary(_)) => {
                    self.awaiting_pong = false;
                    return Ok(Some(wire::Line::NotUtf8));
                }
                Ok(Message::Close(_)) => return Ok(None),
                Ok(_) => self.awaiting_pong = false,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(e);
                    }
                    if self.awaiting_pong {
                        // Silent through a whole ping interval: gone.
                        return Ok(None);
                    }
                    self.awaiting_pong = true;
                    if self.socket.send(Message::Ping(Vec::new().into())).is_err() {
                        return Ok(None);
                    }
                }
                Err(tungstenite::Error::Io(e)) => return Err(e),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(None);
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.deadline = timeout.map(|t| Instant::now() + t);
        Ok(())
    }

    fn attach(&mut self, send: Box<dyn Fn(Line) -> bool + Send>) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(send);
    }
}

/// The writing half of a WebSocket connection.
struct WsOutput {
    stream: Arc<dyn Stream>,
}

/// The WebSocket frames of a JSON rendering: one text frame per line.
fn frames(json: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(json.len() + 16);
    for event in json.lines().filter(|l| !l.is_empty()) {
        let frame = Frame::message(event.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
        // Writing into a Vec cannot fail.
        let _ = frame.format(&mut out);
    }
    out.into_boxed_slice()
}

impl Output for WsOutput {
    fn socket(&self) -> BorrowedFd<'_> {
        self.stream.socket()
    }

    fn rendering<'a>(&self, line: &'a Line, _json: bool) -> &'a [u8] {
        line.framed(frames)
    }

    fn write(&self, lines: &[Line], offset: usize, _json: bool) -> io::Result<usize> {
        self.stream
            .send(&slices(lines, offset, |line| line.framed(frames)))
    }

    fn pending(&self) -> bool {
        self.stream.pending()
    }

    fn shutdown(&self, how: Shutdown) {
        self.stream.shutdown(how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_json_line_becomes_one_unmasked_text_frame() {
        let bytes = frames("{\"a\":1}\n{\"b\":2}\n");
        // FIN + text opcode, no mask bit, length 7.
        assert_eq!(&bytes[..2], &[0x81, 7]);
        assert_eq!(&bytes[2..9], b"{\"a\":1}");
        assert_eq!(&bytes[9..11], &[0x81, 7]);
        assert_eq!(bytes.len(), 18);
        assert!(frames("").is_empty());
    }

    #[test]
    fn a_lines_frames_never_weigh_more_than_its_weight() {
        // The queues count a line's weight when it is queued and again when
        // it is sent; its frames, made in between, must fit in it.
        let long = "x".repeat(70_000);
        for json in ["{}\n", "{\"a\":1}\n{\"b\":2}\n", &format!("\"{long}\"\n")] {
            let line = Line::new("", json);
            let weight = line.weight();
            assert!(line.framed(frames).len() <= weight, "{json:.20}");
            assert_eq!(line.weight(), weight);
        }
    }

    #[test]
    fn the_pages_own_origin_and_listed_ones_are_allowed() {
        let web = Web {
            origins: std::sync::RwLock::new(vec!["https://chat.example.org".into()]),
            ping_every: PING_EVERY,
            tls: None,
            page: true,
            probes: None,
        };
        assert!(web.allows("http://localhost:8080", Some("localhost:8080")));
        assert!(web.allows("https://chat.example.org/", Some("10.0.0.1:8080")));
        assert!(!web.allows("https://evil.example", Some("localhost:8080")));
        assert!(!web.allows("http://localhost:9999", Some("localhost:8080")));
        assert!(!web.allows("http://localhost:8080", None));
    }

    #[test]
    fn the_policy_names_the_sockets_of_a_sane_host_only() {
        assert!(content_security_policy(Some("localhost:8080")).contains("ws://localhost:8080"));
        assert!(!content_security_policy(Some("a b;script-src *")).contains("a b"));
        assert!(!content_security_policy(None).contains("unsafe-inline"));
    }
}

//! loadgen: a load generator for chatroom (and, to compare, for IRC servers).
//!
//! It opens N clients, all in one room, paces S of them as senders at a total
//! rate, and measures end to end: every message carries its send time, and
//! every receiver records the latency of every delivery into a histogram.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:6622 \
//!     --clients 1000 --senders 100 --rate 2000 --duration 15 --pid "$(pgrep -n server)"
//! ```
//!
//! Modes:
//! - default: one measured step at `--rate` for `--duration` seconds;
//! - `--search`: the highest sustained rate: steps the rate up by `--factor`
//!   until a step fails (more than `--max-missing-pct` missing, or p99 over
//!   `--max-p99-ms`), then bisects `--bisect` times; `--half` then measures the
//!   latency at half the best rate. All steps reuse the same connections.
//! - `--idle`: holds N registered clients for `--duration` seconds, reports the
//!   connect time and the server's memory and threads per client (`--pid`),
//!   then sends one message and checks that it reaches every client.
//!
//! The server must not throttle the generator: start chatroom with
//! `--rate 0 --max-per-ip 0 --max-clients 20000`.
//!
//! `--tls` speaks TLS to the server's TLS port (chatroom's, or an IRC
//! server's), with rustls on the same non-blocking sockets: each client's
//! TLS state sits beside its socket and the event loop feeds it. The
//! certificate is not checked against any authority (a benchmark on
//! loopback), but the handshake is complete and every byte is encrypted.
//!
//! `--ws` speaks chatroom's WebSocket instead of lines (`server --web-port`,
//! `--addr` the web port): each client upgrades at `/ws` (tungstenite's
//! client handshake, resumed on each readiness event), logs in by sending
//! its name as a text frame, and is ready once the `welcome` and then the
//! `room` event came. It sends each message as one text frame (the payload
//! of the line mode without its `\n`) and finds the payloads in the text of
//! the events it receives as the line mode finds them in lines. tungstenite
//! frames and masks; the event loop only feeds it. `--ws --tls` is WSS.
//! A sender's backlog (`max_backlog_bytes`) is not seen with `--ws`:
//! tungstenite holds what the socket did not take, so it reads 0.
//!
//! Output: a human report on stdout, then one JSON line (the last line) for
//! scripts. Progress goes to stderr.
//!
//! # How it stays out of the way
//! On two cores the generator competes with the server, so it is lean: one
//! epoll loop (mio) per generator thread (`--threads`, default 1), one 256 KiB
//! read buffer per thread, pre-formatted send lines whose fields are patched in
//! place, and receivers that do not parse lines at all: they search the bytes
//! they read for the payload marker (SIMD `memmem`) and read two fixed-width
//! hex fields after it. Latencies go into an HDR histogram (microseconds).
//!
//! # The payload
//! Every message's text starts with `~LG`, 8 hex digits of step id (a random
//! run nonce and the step number; 0 for warm-up messages, which are not
//! counted) and 16 hex digits of send time (nanoseconds since the generator
//! started), padded with `x` to `--size` bytes. Lines with another step id
//! (history replays, late deliveries from an earlier step) are not counted.
//!
//! # Counting
//! Expected deliveries of a step = measured messages sent × receivers: every
//! connected client in chatroom (the sender gets its own echo), all but the
//! sender in IRC. After the send phase the generator waits up to `--drain`
//! seconds (less if everything arrived) before it counts what is missing.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;
use memchr::memmem;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Measures a chat server end to end: deliveries per second, missing
/// deliveries, latency percentiles, and the server's memory and threads.
#[derive(Parser, Debug, Clone)]
#[command(about, long_about = None)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:6622")]
    addr: SocketAddr,
    /// More addresses of the same chat (the other nodes of a cluster): the
    /// clients connect round-robin to --addr and these.
    #[arg(long = "also-addr", value_name = "HOST:PORT")]
    also_addr: Vec<SocketAddr>,
    /// Protocol the server speaks.
    #[arg(long, value_enum, default_value_t = Proto::Chatroom)]
    proto: Proto,
    /// Clients to open, all in one room.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How many of the clients send (the first ones).
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages a second, all senders together.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Bytes of message text (at least 27: the marker, step id and send time).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of each measured step (in --idle: seconds to hold the clients).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent before each measured step, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after sending for the last deliveries (at most).
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// The server's process id: its RSS, threads and CPU time are read from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Hold the clients idle, report memory per client, then check one message
    /// reaches all of them.
    #[arg(long, conflicts_with = "search")]
    idle: bool,
    /// Search the highest rate that passes (see --max-missing-pct, --max-p99-ms).
    #[arg(long)]
    search: bool,
    /// Rate multiplier between search steps before the first failure.
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Bisection steps after the first failure.
    #[arg(long, default_value_t = 3)]
    bisect: u32,
    /// Highest rate the search tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Lowest rate the search tries when even --rate fails.
    #[arg(long, default_value_t = 10.0)]
    min_rate: f64,
    /// A step passes with at most this share of deliveries missing, in percent.
    #[arg(long, default_value_t = 0.1)]
    max_missing_pct: f64,
    /// A step passes with a p99 latency of at most this, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    max_p99_ms: f64,
    /// After --search, measure the latency at half the best rate.
    #[arg(long, requires = "search")]
    half: bool,
    /// Seconds of the --half step (default: --duration).
    #[arg(long)]
    half_duration: Option<f64>,
    /// Handshakes (connect to registered and in the room) in flight at once.
    #[arg(long, default_value_t = 50)]
    handshakes: usize,
    /// Seconds one handshake may take before it is retried.
    #[arg(long, default_value_t = 30.0)]
    handshake_timeout: f64,
    /// Retries of a failed handshake.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Seconds the whole connect phase may take.
    #[arg(long, default_value_t = 600.0)]
    connect_timeout: f64,
    /// Generator threads (each its own epoll loop and share of the clients).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Names are PREFIX0, PREFIX1, … (IRC nicks: keep PREFIX short).
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// IRC channel to join.
    #[arg(long, default_value = "#bench")]
    channel: String,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Speak TLS (1.3 unless the server offers only 1.2).
    #[arg(long)]
    tls: bool,
    /// Speak chatroom's WebSocket: --addr is the web port (`server
    /// --web-port`); each client upgrades at /ws and sends one text frame a
    /// line. With --tls: WSS.
    #[arg(long)]
    ws: bool,
    /// chatroom line clients switch to JSON mode (`/mode json`) once logged
    /// in: the events a WebSocket client gets, over lines (the baseline that
    /// tells the WebSocket's cost from the JSON's).
    #[arg(long, conflicts_with = "ws")]
    json: bool,
}

// ---------------------------------------------------------------------------
// TLS on the generator's non-blocking sockets.
// ---------------------------------------------------------------------------

/// Accepts any certificate (loopback benchmarks only) but checks the
/// handshake's signatures, so the work of a real client is done.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = chatroom::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS 1.2 and 1.3 are supported")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// One client's connection: a non-blocking socket, and its TLS state when
/// `--tls`. Reads and writes are of plaintext either way; over TLS each call
/// also moves whatever records are due (the handshake included), so the
/// event loop above (and tungstenite, with `--ws`) needs no TLS states of
/// its own.
struct Link {
    tcp: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    /// Plaintext bytes read so far: with `--ws` the event loop learns from
    /// it that tungstenite read the socket (a new arrival time).
    read_bytes: u64,
}

impl Link {
    fn new(tcp: TcpStream, tls: Option<Box<rustls::ClientConnection>>) -> Link {
        Link {
            tcp,
            tls,
            read_bytes: 0,
        }
    }

    /// Sends the records rustls holds, as far as the socket takes them.
    fn flush_tls(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => send_records(tls, &mut self.tcp),
            None => Ok(()),
        }
    }
}

impl Write for Link {
    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.tcp.write(data);
        };
        let taken = tls.writer().write(data)?;
        send_records(tls, &mut self.tcp)?;
        if taken == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_plaintext(buf)?;
        self.read_bytes += n as u64;
        Ok(n)
    }
}

impl Link {
    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.tcp.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Handshake messages, and the login written before it ended.
            send_records(tls, &mut self.tcp)?;
        }
    }
}

/// What a client's socket carries.
enum Wire {
    /// Bytes: chatroom's or IRC's lines; with `--ws`, the socket until its
    /// TCP connect completes.
    Raw(Link),
    /// `--ws`: the upgrade under way, resumed on each readiness event.
    Upgrading(Box<MidHandshake<ClientHandshake<Link>>>),
    /// `--ws`: upgraded; tungstenite owns the link and does the framing.
    Ws(Box<WebSocket<Link>>),
}

impl Wire {
    fn link(&mut self) -> &mut Link {
        match self {
            Wire::Raw(link) => link,
            Wire::Upgrading(mid) => mid.get_mut().get_mut(),
            Wire::Ws(ws) => ws.get_mut(),
        }
    }
}

/// Why an upgrade failed, in one line: a refusal's status and the server's
/// one-line reason (its body), else tungstenite's error.
fn upgrade_error(e: &tungstenite::Error, tls: bool) -> String {
    match e {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            format!("WebSocket upgrade refused: {} {body}", response.status())
        }
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HttparseError(_))
            if !tls =>
        {
            format!("WebSocket upgrade: {e} (does the web port speak TLS? then add --tls)")
        }
        e => format!("WebSocket upgrade: {e}"),
    }
}

fn send_records(tls: &mut rustls::ClientConnection, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// chatroom's line protocol.
    Chatroom,
    /// IRC (RFC 1459/2812): NICK/USER, JOIN, PRIVMSG.
    Irc,
}

/// What the payload starts with.
const MARKER: &[u8] = b"~LG";
/// Hex digits of the step id after the marker.
const ID_HEX: usize = 8;
/// Hex digits of the send time after the step id.
const TIME_HEX: usize = 16;
/// Smallest payload: marker, step id, send time.
const MIN_SIZE: usize = MARKER.len() + ID_HEX + TIME_HEX;
/// Read buffer of one generator thread.
const READ_BUFFER: usize = 256 * 1024;
/// A partial line longer than this is dropped (no line we count is that long).
const MAX_TAIL: usize = 64 * 1024;
/// How often a `--ws` client that scans its bytes pings the server.
const WS_PING_EVERY: Duration = Duration::from_secs(5);
/// Latencies are recorded in microseconds up to this (10 minutes).
const MAX_LATENCY_US: u64 = 600_000_000;
/// What one `--ws` client's tungstenite reads at once. tungstenite
/// zero-fills this much before every read (the one that ends in WouldBlock
/// too), which at 16 KiB is a tenth of the generator's time at 200,000
/// deliveries a second; but every read is a recv(2), and at 1.5 M deliveries
/// a second those cost more: with 4 KiB the generator fell further behind
/// (p50 55-90 ms) than with 16 KiB (45 ms), and 64 KiB was no better.
const WS_READ_BUFFER: usize = 16 * 1024;

fn main() {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    raise_open_files_limit();
    let outcome = Run::new(args).go();
    std::process::exit(if outcome { 0 } else { 1 });
}

fn check(args: &Args) -> Result<(), String> {
    if args.size < MIN_SIZE {
        return Err(format!("--size must be at least {MIN_SIZE}"));
    }
    if args.proto == Proto::Irc && args.size > 400 {
        return Err("--size must be at most 400 for IRC (512-byte lines)".into());
    }
    if args.json && args.proto != Proto::Chatroom {
        return Err("--json is chatroom's JSON mode: use it with --proto chatroom".into());
    }
    if args.ws && args.proto != Proto::Chatroom {
        return Err("--ws speaks chatroom's WebSocket: use it with --proto chatroom".into());
    }
    if args.clients == 0 || args.threads == 0 || args.handshakes == 0 {
        return Err("--clients, --threads and --handshakes must be at least 1".into());
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.rate) || !positive(args.duration) || args.warmup < 0.0 || args.drain < 0.0 {
        return Err(
            "--rate and --duration must be above 0, --warmup and --drain at least 0".into(),
        );
    }
    if !args.idle && args.senders == 0 {
        return Err("--senders must be at least 1".into());
    }
    if args.search && !(args.factor.is_finite() && args.factor > 1.0) {
        return Err("--factor must be above 1".into());
    }
    Ok(())
}

/// Every client needs a descriptor: raise the soft limit to the hard one.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the calls to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

// ---------------------------------------------------------------------------
// The main thread: phases, steps, /proc sampling, the report.
// ---------------------------------------------------------------------------

/// What generator threads and the main thread share.
struct Shared {
    /// The clock of every send time: nanoseconds since this instant.
    base: Instant,
    /// Clients registered and in the room.
    ready: AtomicUsize,
    /// Clients given up on.
    failed: AtomicUsize,
    /// Measured messages sent in the current step.
    sent: AtomicU64,
    /// Measured deliveries received in the current step.
    delivered: AtomicU64,
    /// Bytes read from the server, all clients: quiet means the server is done.
    bytes_in: AtomicU64,
}

/// Orders from the main thread to a generator thread.
enum Command {
    Step(StepPlan),
    /// Everything arrived: report the step now.
    EndStep,
    /// Connect again the clients lost during a step.
    Reconnect,
    /// The connect phase took too long: give up on the handshakes left.
    StopConnecting,
    Quit,
}

/// One step, as one generator thread runs it.
#[derive(Clone)]
struct StepPlan {
    /// Step id of measured messages; warm-up messages carry `warm_id`.
    id: u32,
    warm_id: u32,
    /// Messages a second this thread sends (its senders' share).
    rate: f64,
    start: Instant,
    measure_from: Instant,
    send_until: Instant,
    drain_until: Instant,
    /// At most this many messages (the --idle probe sends one).
    max_messages: Option<u64>,
    /// Only this client sends (the --idle probe).
    only_sender: Option<usize>,
}

/// Reports from a generator thread.
enum Report {
    Ready(ReadyReport),
    Step(Box<StepResult>),
}

struct ReadyReport {
    connected: usize,
    senders: usize,
    failed: usize,
    reasons: Vec<String>,
    /// When the last of its clients became ready.
    last_ready: Option<Instant>,
}

struct StepResult {
    sent: u64,
    delivered: u64,
    /// Deliveries of other steps (late ones) and of warm-up messages.
    other: u64,
    hist: Histogram<u64>,
    /// Clients that were lost during the step.
    lost: u64,
    /// How far the send schedule fell behind at worst.
    behind: Duration,
    /// Most bytes waiting in one sender's buffer (the server was not reading).
    backlog: usize,
    /// `! ` lines received while ready (chatroom), and the first one.
    errors: u64,
    first_error: Option<String>,
}

/// The server's process, read from /proc.
struct ProcSample {
    rss_kib: u64,
    threads: u64,
    cpu_ticks: u64,
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        cpu_ticks: utime + stime,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds this process has used, all threads.
fn own_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill in.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// What one step measured, merged over the generator threads.
struct StepOutcome {
    rate: f64,
    measured_secs: f64,
    sent: u64,
    expected: u64,
    delivered: u64,
    other: u64,
    hist: Histogram<u64>,
    lost: u64,
    behind: Duration,
    backlog: usize,
    errors: u64,
    first_error: Option<String>,
    server_rss_max_kib: Option<u64>,
    server_threads_max: Option<u64>,
    server_cpu_pct: Option<f64>,
    gen_cpu_pct: f64,
    pass: bool,
    why: String,
}

impl StepOutcome {
    fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    fn missing_pct(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.missing() as f64 * 100.0 / self.expected as f64
        }
    }

    fn ms(&self, quantile: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.max() as f64 / 1000.0
        }
    }

    fn line(&self) -> String {
        let mut s = format!(
            "rate {:>9.0}/s  sent {:>8} ({:.0}/s)  deliveries {:>10} ({:.0}/s)  missing {} ({:.3} %)  p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
            self.rate,
            self.sent,
            self.sent as f64 / self.measured_secs,
            self.delivered,
            self.delivered as f64 / self.measured_secs,
            self.missing(),
            self.missing_pct(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.max_ms(),
        );
        if let (Some(rss), Some(threads)) = (self.server_rss_max_kib, self.server_threads_max) {
            let _ = write!(s, "  server rss {} MiB threads {}", rss / 1024, threads);
        }
        if let Some(cpu) = self.server_cpu_pct {
            let _ = write!(s, " cpu {cpu:.0} %");
        }
        let _ = write!(s, "  generator cpu {:.0} %", self.gen_cpu_pct);
        if self.lost > 0 {
            let _ = write!(s, "  LOST {} clients", self.lost);
        }
        if self.errors > 0 {
            let _ = write!(
                s,
                "  {} error lines (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("")
            );
        }
        let _ = write!(
            s,
            "  {}",
            if self.pass {
                "PASS".to_string()
            } else {
                format!("FAIL ({})", self.why)
            }
        );
        s
    }

    fn json(&self) -> Value {
        json!({
            "rate": self.rate,
            "measured_s": round3(self.measured_secs),
            "sent": self.sent,
            "sent_per_s": round3(self.sent as f64 / self.measured_secs),
            "expected": self.expected,
            "delivered": self.delivered,
            "missing": self.missing(),
            "missing_pct": round3(self.missing_pct()),
            "deliveries_per_s": round3(self.delivered as f64 / self.measured_secs),
            "p50_ms": round3(self.ms(0.5)),
            "p90_ms": round3(self.ms(0.9)),
            "p99_ms": round3(self.ms(0.99)),
            "p999_ms": round3(self.ms(0.999)),
            "max_ms": round3(self.max_ms()),
            "other_step_deliveries": self.other,
            "lost_clients": self.lost,
            "behind_ms": round3(self.behind.as_secs_f64() * 1000.0),
            "max_backlog_bytes": self.backlog,
            "error_lines": self.errors,
            "first_error": self.first_error,
            "server_rss_max_kib": self.server_rss_max_kib,
            "server_threads_max": self.server_threads_max,
            "server_cpu_pct": self.server_cpu_pct.map(round3),
            "generator_cpu_pct": round3(self.gen_cpu_pct),
            "pass": self.pass,
            "why": self.why,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Worker {
    commands: Sender<Command>,
    senders: usize,
    handle: Option<thread::JoinHandle<()>>,
}

struct Run {
    args: Args,
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    reports: Receiver<Report>,
    reports_tx: Option<Sender<Report>>,
    nonce: u32,
    steps: u32,
    connected: usize,
    senders: usize,
}

impl Run {
    fn new(args: Args) -> Run {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
        });
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        // A run nonce in the step ids: lines of an earlier run (history) never count.
        let nonce = (std::process::id() ^ (shared.base.elapsed().subsec_nanos() >> 4)) & 0xffff;
        Run {
            args,
            shared,
            workers: Vec::new(),
            reports,
            reports_tx: Some(reports_tx),
            nonce: nonce.max(1),
            steps: 0,
            connected: 0,
            senders: 0,
        }
    }

    /// Runs the whole benchmark; true if every step asked for passed.
    fn go(mut self) -> bool {
        let args = self.args.clone();
        let before = args.pid.and_then(proc_sample);
        if let Some(pid) = args.pid
            && before.is_none()
        {
            eprintln!("warning: cannot read /proc/{pid}; no server figures");
        }
        let connect_start = Instant::now();
        if let Err(e) = self.spawn_workers() {
            eprintln!("error: cannot start the generator threads: {e}");
            return false;
        }
        let ready = self.wait_ready(connect_start);
        self.absorb(&ready);
        let connect_secs = ready
            .iter()
            .filter_map(|r| r.last_ready)
            .max()
            .map_or(0.0, |t| (t - connect_start).as_secs_f64());
        let failed: usize = ready.iter().map(|r| r.failed).sum();
        let mut reasons: Vec<String> = ready.iter().flat_map(|r| r.reasons.clone()).collect();
        reasons.sort();
        reasons.dedup();
        println!(
            "{} {}: {} of {} clients connected in {:.2} s ({} handshakes in flight at most), {} failed{}",
            match (args.proto, args.ws) {
                (Proto::Chatroom, true) => "chatroom WebSocket",
                (Proto::Chatroom, false) if args.json => "chatroom JSON lines",
                (Proto::Chatroom, false) => "chatroom",
                (Proto::Irc, _) => "irc",
            },
            args.addr,
            self.connected,
            args.clients,
            connect_secs,
            args.handshakes,
            failed,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            }
        );
        let after_connect = args.pid.and_then(proc_sample);
        let mut report = json!({
            "label": args.label,
            "tls": args.tls,
            "ws": args.ws,
            "json": args.json,
            "proto": format!("{:?}", args.proto).to_lowercase(),
            "addr": args.addr.to_string(),
            "also_addr": args.also_addr.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mode": if args.idle { "idle" } else if args.search { "search" } else { "run" },
            "clients": args.clients,
            "connected": self.connected,
            "failed": failed,
            "failure_reasons": reasons,
            "connect_s": round3(connect_secs),
            "handshakes": args.handshakes,
            "senders": self.senders,
            "size": args.size,
            "threads": args.threads,
            "server_before": before.as_ref().map(|s| json!({"rss_kib": s.rss_kib, "threads": s.threads})),
            "server_connected": after_connect.as_ref().map(|s| json!({"rss_kib": s.rss_kib, "threads": s.threads})),
        });
        let ok = if self.connected == 0 {
            println!("no client connected; nothing to measure");
            false
        } else if args.idle {
            self.idle(&mut report, before.as_ref(), failed)
        } else if args.search {
            self.search(&mut report)
        } else {
            let outcome = self.step(args.rate, args.duration, args.warmup, None, None);
            println!("{}", outcome.line());
            report["steps"] = json!([outcome.json()]);
            report["pass"] = json!(outcome.pass);
            outcome.pass
        };
        self.stop();
        report["ok"] = json!(ok);
        println!("{report}");
        ok
    }

    fn spawn_workers(&mut self) -> io::Result<()> {
        let args = &self.args;
        let threads = args.threads.min(args.clients);
        for t in 0..threads {
            let (tx, rx) = crossbeam_channel::unbounded();
            let clients: Vec<usize> = (t..args.clients).step_by(threads).collect();
            // Share the handshake cap; every thread gets at least one.
            let cap =
                (args.handshakes / threads + usize::from(t < args.handshakes % threads)).max(1);
            let generator = Generator::new(
                args,
                Arc::clone(&self.shared),
                clients,
                cap,
                rx,
                self.reports_tx.clone().expect("reports open"),
            )?;
            let handle = thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || generator.run())?;
            self.workers.push(Worker {
                commands: tx,
                senders: 0,
                handle: Some(handle),
            });
        }
        self.reports_tx = None;
        Ok(())
    }

    /// Waits for every generator thread to have all its clients ready (or
    /// given up on), printing progress.
    fn wait_ready(&mut self, start: Instant) -> Vec<ReadyReport> {
        let mut ready = Vec::new();
        let deadline = start + Duration::from_secs_f64(self.args.connect_timeout);
        let mut last_progress = Instant::now();
        let mut stopped = false;
        while ready.len() < self.workers.len() {
            match self.reports.recv_timeout(Duration::from_millis(500)) {
                Ok(Report::Ready(r)) => ready.push(r),
                Ok(Report::Step(_)) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                eprintln!(
                    "connecting: {} ready, {} failed, {:.0} s",
                    self.shared.ready.load(Ordering::Relaxed),
                    self.shared.failed.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
            }
            if Instant::now() > deadline && !stopped {
                eprintln!(
                    "the connect phase took longer than --connect-timeout; measuring with the {} clients ready",
                    self.shared.ready.load(Ordering::Relaxed)
                );
                // The clients not ready yet count as failed.
                stopped = true;
                for worker in &self.workers {
                    let _ = worker.commands.send(Command::StopConnecting);
                }
            }
            if stopped && Instant::now() > deadline + Duration::from_secs(10) {
                break;
            }
        }
        if ready.len() < self.workers.len() {
            let missing = self.workers.len() - ready.len();
            for _ in 0..missing {
                ready.push(ReadyReport {
                    connected: 0,
                    senders: 0,
                    failed: 0,
                    reasons: vec!["connect phase timed out".into()],
                    last_ready: None,
                });
            }
        }
        ready
    }

    /// Takes the counts of clients and senders from the Ready reports.
    fn absorb(&mut self, ready: &[ReadyReport]) {
        self.connected = ready.iter().map(|r| r.connected).sum();
        self.senders = ready.iter().map(|r| r.senders).sum();
        for (worker, report) in self.workers.iter_mut().zip(ready) {
            worker.senders = report.senders;
        }
    }

    /// After a step: clients that were lost connect again, and the next step
    /// waits until the server has worked off any backlog of this one (no byte
    /// read for half a second), so that one failing step does not spoil the next.
    fn recover(&mut self, lost: u64) {
        if lost > 0 {
            eprintln!("reconnecting {lost} lost clients");
            for worker in &self.workers {
                let _ = worker.commands.send(Command::Reconnect);
            }
            let ready = self.wait_ready(Instant::now());
            self.absorb(&ready);
        }
        let started = Instant::now();
        let mut last = self.shared.bytes_in.load(Ordering::Acquire);
        let mut quiet_since = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            thread::sleep(Duration::from_millis(100));
            let now = self.shared.bytes_in.load(Ordering::Acquire);
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(500) {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "the server took {:.1} s to go quiet after the step",
                started.elapsed().as_secs_f64()
            );
        }
    }

    /// Receivers of one message.
    fn receivers(&self) -> u64 {
        match self.args.proto {
            Proto::Chatroom => self.connected as u64,
            Proto::Irc => self.connected.saturating_sub(1) as u64,
        }
    }

    /// Runs one step on every generator thread and merges what they measured.
    fn step(
        &mut self,
        rate: f64,
        duration: f64,
        warmup: f64,
        max_messages: Option<u64>,
        only_sender: Option<usize>,
    ) -> StepOutcome {
        self.steps += 1;
        let id = (self.nonce << 16) | (self.steps & 0xffff);
        let warm_id = self.nonce << 16;
        self.shared.sent.store(0, Ordering::Release);
        self.shared.delivered.store(0, Ordering::Release);
        let start = Instant::now() + Duration::from_millis(20);
        let measure_from = start + Duration::from_secs_f64(warmup);
        let send_until = measure_from + Duration::from_secs_f64(duration);
        let drain_until = send_until + Duration::from_secs_f64(self.args.drain);
        let total_senders = if only_sender.is_some() {
            1
        } else {
            self.senders.max(1)
        };
        for worker in &self.workers {
            let share = if only_sender.is_some() {
                1.0
            } else {
                worker.senders as f64 / total_senders as f64
            };
            let plan = StepPlan {
                id,
                warm_id,
                rate: rate * share,
                start,
                measure_from,
                send_until,
                drain_until,
                max_messages,
                only_sender,
            };
            let _ = worker.commands.send(Command::Step(plan));
        }
        let pid = self.args.pid;
        let ticks = clock_ticks();
        let cpu_before = own_cpu();
        let mut proc_first: Option<(Instant, u64)> = None;
        let mut proc_last: Option<(Instant, u64)> = None;
        let mut rss_max: Option<u64> = None;
        let mut threads_max: Option<u64> = None;
        let mut sample = |proc_first: &mut Option<(Instant, u64)>| {
            if let Some(s) = pid.and_then(proc_sample) {
                rss_max = Some(rss_max.unwrap_or(0).max(s.rss_kib));
                threads_max = Some(threads_max.unwrap_or(0).max(s.threads));
                let now = (Instant::now(), s.cpu_ticks);
                if proc_first.is_none() && Instant::now() >= measure_from {
                    *proc_first = Some(now);
                }
                if Instant::now() <= send_until {
                    proc_last = Some(now);
                }
            }
        };
        // Sample the server while it works.
        while Instant::now() < send_until {
            sample(&mut proc_first);
            let left = send_until.saturating_duration_since(Instant::now());
            thread::sleep(left.min(Duration::from_millis(200)));
        }
        sample(&mut proc_first);
        let cpu_after = own_cpu();
        let receivers = self.receivers();
        // Drain: end early once everything arrived.
        while Instant::now() < drain_until {
            let sent = self.shared.sent.load(Ordering::Acquire);
            let delivered = self.shared.delivered.load(Ordering::Acquire);
            if delivered >= sent * receivers {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        for worker in &self.workers {
            let _ = worker.commands.send(Command::EndStep);
        }
        let mut results = Vec::new();
        let wait_until = drain_until + Duration::from_secs(10);
        while results.len() < self.workers.len() {
            let left = wait_until.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(Report::Step(r)) => results.push(r),
                Ok(Report::Ready(_)) => {}
                Err(_) => break,
            }
        }
        let mut hist = new_histogram();
        let mut outcome = StepOutcome {
            rate,
            measured_secs: duration,
            sent: 0,
            expected: 0,
            delivered: 0,
            other: 0,
            hist: new_histogram(),
            lost: 0,
            behind: Duration::ZERO,
            backlog: 0,
            errors: 0,
            first_error: None,
            server_rss_max_kib: rss_max,
            server_threads_max: threads_max,
            server_cpu_pct: match (proc_first, proc_last) {
                (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                    Some((c1.saturating_sub(c0)) as f64 / ticks / (t1 - t0).as_secs_f64() * 100.0)
                }
                _ => None,
            },
            gen_cpu_pct: (cpu_after - cpu_before) / (duration + warmup) * 100.0,
            pass: false,
            why: String::new(),
        };
        for r in &results {
            outcome.sent += r.sent;
            outcome.delivered += r.delivered;
            outcome.other += r.other;
            outcome.lost += r.lost;
            outcome.behind = outcome.behind.max(r.behind);
            outcome.backlog = outcome.backlog.max(r.backlog);
            outcome.errors += r.errors;
            if outcome.first_error.is_none() {
                outcome.first_error.clone_from(&r.first_error);
            }
            let _ = hist.add(&r.hist);
        }
        outcome.hist = hist;
        outcome.expected = outcome.sent * receivers;
        let mut why = Vec::new();
        if results.len() < self.workers.len() {
            why.push("a generator thread did not report".to_string());
        }
        if outcome.missing_pct() > self.args.max_missing_pct {
            why.push(format!("{:.3} % missing", outcome.missing_pct()));
        }
        if outcome.ms(0.99) > self.args.max_p99_ms {
            why.push(format!("p99 {:.1} ms", outcome.ms(0.99)));
        }
        let wanted = match max_messages {
            Some(n) => n as f64,
            None => rate * duration,
        };
        if (outcome.sent as f64) < wanted * 0.95 {
            why.push(format!(
                "sent only {} of {:.0} (the generator fell behind by {:.0} ms)",
                outcome.sent,
                wanted,
                outcome.behind.as_secs_f64() * 1000.0
            ));
        }
        outcome.pass = why.is_empty();
        outcome.why = why.join(", ");
        outcome
    }

    /// Steps the rate up until a step fails, then bisects.
    fn search(&mut self, report: &mut Value) -> bool {
        let args = self.args.clone();
        let mut best: Option<f64> = None;
        let mut worst: Option<f64> = None;
        let mut steps = Vec::new();
        let mut rate = args.rate;
        let mut bisections = 0;
        let mut best_outcome: Option<Value> = None;
        let mut last_lost;
        loop {
            let outcome = self.step(rate, args.duration, args.warmup, None, None);
            println!("{}", outcome.line());
            steps.push(outcome.json());
            last_lost = outcome.lost;
            if outcome.pass {
                best = Some(rate);
                best_outcome = Some(outcome.json());
            } else {
                worst = Some(rate);
            }
            if self.connected == 0 {
                break;
            }
            rate = match (best, worst) {
                (Some(lo), None) => {
                    if lo >= args.max_rate {
                        break;
                    }
                    (lo * args.factor).min(args.max_rate)
                }
                (None, Some(hi)) => {
                    if hi <= args.min_rate {
                        break;
                    }
                    (hi / args.factor).max(args.min_rate)
                }
                (Some(lo), Some(hi)) => {
                    if bisections >= args.bisect {
                        break;
                    }
                    bisections += 1;
                    (lo * hi).sqrt()
                }
                (None, None) => break,
            };
            rate = rate.round().max(1.0);
            self.recover(outcome.lost);
            last_lost = 0;
            if self.connected < 2 {
                println!("too few clients left; stopping the search");
                break;
            }
        }
        report["steps"] = json!(steps);
        report["best_rate"] = json!(best);
        report["best"] = json!(best_outcome);
        report["first_failing_rate"] = json!(worst);
        println!(
            "highest sustained rate: {} (first failing rate: {})",
            best.map_or("none".into(), |r| format!("{r:.0}/s")),
            worst.map_or("none".into(), |r| format!("{r:.0}/s"))
        );
        if args.half
            && let Some(best) = best
        {
            self.recover(last_lost);
            let half_rate = (best / 2.0).round().max(1.0);
            let duration = args.half_duration.unwrap_or(args.duration);
            let outcome = self.step(half_rate, duration, args.warmup, None, None);
            println!("half rate: {}", outcome.line());
            report["half"] = outcome.json();
        }
        best.is_some()
    }

    /// Holds the clients, reports memory per client, then checks that one
    /// message reaches all of them.
    fn idle(&mut self, report: &mut Value, before: Option<&ProcSample>, failed: usize) -> bool {
        let args = self.args.clone();
        let n = self.connected as f64;
        let mut rss_max = 0;
        let mut threads_max = 0;
        let hold_until = Instant::now() + Duration::from_secs_f64(args.duration);
        let mut last = None;
        loop {
            if let Some(s) = args.pid.and_then(proc_sample) {
                rss_max = rss_max.max(s.rss_kib);
                threads_max = threads_max.max(s.threads);
                last = Some(s);
            }
            if Instant::now() >= hold_until {
                break;
            }
            thread::sleep(
                hold_until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            );
        }
        if let Some(s) = &last {
            let base = before.map_or(0, |b| b.rss_kib);
            let base_threads = before.map_or(0, |b| b.threads);
            println!(
                "server while holding {} clients: rss {:.1} MiB = {:.2} KiB per client ({:.2} KiB per client above the {:.1} MiB before), {} threads = {:.3} per client",
                self.connected,
                s.rss_kib as f64 / 1024.0,
                s.rss_kib as f64 / n,
                s.rss_kib.saturating_sub(base) as f64 / n,
                base as f64 / 1024.0,
                s.threads,
                s.threads as f64 / n,
            );
            report["idle"] = json!({
                "rss_kib": s.rss_kib,
                "rss_kib_max": rss_max,
                "rss_kib_per_client": round3(s.rss_kib as f64 / n),
                "rss_kib_per_client_above_start": round3(s.rss_kib.saturating_sub(base) as f64 / n),
                "threads": s.threads,
                "threads_max": threads_max,
                "threads_per_client": round3(s.threads as f64 / n),
                "threads_per_client_above_start": round3(s.threads.saturating_sub(base_threads) as f64 / n),
            });
        }
        // The probe: one message from the first client, after everyone joined.
        let drain = args.drain.max(10.0);
        let saved = self.args.drain;
        self.args.drain = drain;
        let outcome = self.step(1.0, 1.0, 0.0, Some(1), Some(0));
        self.args.drain = saved;
        println!(
            "probe: one message reached {} of {} receivers; latency max {:.1} ms, p50 {:.1} ms",
            outcome.delivered,
            outcome.expected,
            outcome.max_ms(),
            outcome.ms(0.5)
        );
        let all = failed == 0 && outcome.sent == 1 && outcome.delivered == outcome.expected;
        report["probe"] = outcome.json();
        report["all_connected_and_reached"] = json!(all);
        all
    }

    fn stop(&mut self) {
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Quit);
        }
        for worker in &mut self.workers {
            if let Some(handle) = worker.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

// ---------------------------------------------------------------------------
// A generator thread: one epoll loop over its share of the clients.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its turn (or for a retry).
    Pending,
    /// TCP connect in progress.
    Connecting,
    /// Connected, logging in and joining.
    Handshake,
    /// In the room.
    Ready,
    /// Given up on, or lost.
    Dead,
}

struct Conn {
    /// The client's number among all clients.
    index: usize,
    stream: Option<Wire>,
    state: State,
    /// A partial line left from the last read.
    tail: Vec<u8>,
    /// Bytes waiting to be written, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    attempts: u32,
    /// Handshakes started after the first: names get a suffix, since the
    /// server may not have noticed yet that the old connection is gone.
    generation: u32,
    /// It was ready once (a lost client, not a failed one).
    was_ready: bool,
    since: Instant,
    /// chatroom: `* hello` seen.
    hello: bool,
    /// `--ws`, ready: the socket's bytes are scanned for payloads as they
    /// come, frames and all (the server's frames are not masked), as the
    /// line mode scans lines; tungstenite only writes.
    ws_raw: bool,
    /// `--ws`, ready: when this client last pinged the server, which then
    /// hears from a client that only reads and does not ping it (unanswered
    /// server pings would end the connection).
    pinged: Instant,
}

struct Generator {
    proto: Proto,
    /// Where client `i` connects: `addrs[i % addrs.len()]`.
    addrs: Vec<SocketAddr>,
    /// TLS settings, with `--tls`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// With `--ws`: the address to upgrade at, and the WebSocket's settings.
    ws: Option<(String, WebSocketConfig)>,
    /// With `--json`: line clients ask for JSON mode once logged in.
    json: bool,
    /// With `--ws` under load (not `--idle`): ready clients scan their
    /// socket's bytes for payloads instead of parsing frames.
    ws_raw: bool,
    shared: Arc<Shared>,
    poll: Poll,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    commands: Receiver<Command>,
    reports: Sender<Report>,
    /// Handshake cap of this thread.
    cap: usize,
    in_flight: usize,
    /// Clients waiting to start, with when they may.
    queue: VecDeque<(usize, Instant)>,
    retries: u32,
    handshake_timeout: Duration,
    prefix: String,
    channel: String,
    total_senders: usize,
    reasons: Vec<String>,
    ready_reported: bool,
    last_ready: Option<Instant>,
    failed: usize,
    /// A pre-formatted message line and where its fields are.
    template: Vec<u8>,
    id_at: usize,
    time_at: usize,
    finder: memmem::Finder<'static>,
    step: Option<Active>,
}

/// The step a generator thread is running.
struct Active {
    plan: StepPlan,
    senders: Vec<usize>,
    next: u64,
    result: StepResult,
}

impl Generator {
    fn new(
        args: &Args,
        shared: Arc<Shared>,
        clients: Vec<usize>,
        cap: usize,
        commands: Receiver<Command>,
        reports: Sender<Report>,
    ) -> io::Result<Generator> {
        let now = Instant::now();
        let conns: Vec<Conn> = clients
            .iter()
            .map(|&index| Conn {
                index,
                stream: None,
                state: State::Pending,
                tail: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                attempts: 0,
                generation: 0,
                was_ready: false,
                since: now,
                hello: false,
                ws_raw: false,
                pinged: now,
            })
            .collect();
        let queue = (0..conns.len()).map(|i| (i, now)).collect();
        let mut template = Vec::new();
        if args.proto == Proto::Irc {
            template.extend_from_slice(format!("PRIVMSG {} :", args.channel).as_bytes());
        }
        let marker_at = template.len();
        template.extend_from_slice(MARKER);
        let id_at = template.len();
        template.extend_from_slice(&[b'0'; ID_HEX + TIME_HEX]);
        let time_at = id_at + ID_HEX;
        template.resize(marker_at + args.size, b'x');
        // A WebSocket message is one frame: no line end.
        template.extend_from_slice(match (args.proto, args.ws) {
            (Proto::Chatroom, true) => b"",
            (Proto::Chatroom, false) => b"\n",
            (Proto::Irc, _) => b"\r\n",
        });
        let ws = args.ws.then(|| {
            let scheme = if args.tls { "wss" } else { "ws" };
            let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
            (format!("{scheme}://{}/ws", args.addr), config)
        });
        Ok(Generator {
            proto: args.proto,
            addrs: std::iter::once(args.addr)
                .chain(args.also_addr.iter().copied())
                .collect(),
            tls: args.tls.then(tls_config),
            ws,
            json: args.json,
            ws_raw: args.ws && !args.idle,
            shared,
            poll: Poll::new()?,
            conns,
            buf: vec![0; READ_BUFFER],
            commands,
            reports,
            cap,
            in_flight: 0,
            queue,
            retries: args.retries,
            handshake_timeout: Duration::from_secs_f64(args.handshake_timeout),
            prefix: args.prefix.clone(),
            channel: args.channel.clone(),
            total_senders: args.senders,
            reasons: Vec::new(),
            ready_reported: false,
            last_ready: None,
            failed: 0,
            template,
            id_at,
            time_at,
            finder: memmem::Finder::new(MARKER),
            step: None,
        })
    }

    fn now_ns(&self) -> u64 {
        self.shared.base.elapsed().as_nanos() as u64
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(4096);
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            self.start_handshakes(now);
            if now.duration_since(last_sweep) >= Duration::from_millis(500) {
                last_sweep = now;
                self.sweep_timeouts(now);
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                eprintln!("error: epoll failed: {e}");
                return;
            }
            for event in events.iter() {
                let i = event.token().0;
                if event.is_writable() {
                    self.on_writable(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(i);
                }
            }
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Step(plan)) => self.begin_step(plan),
                    Ok(Command::EndStep) => self.end_step(),
                    Ok(Command::Reconnect) => self.reconnect(),
                    Ok(Command::StopConnecting) => self.stop_connecting(),
                    Ok(Command::Quit) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            self.send_due();
            if let Some(active) = &self.step
                && Instant::now() >= active.plan.drain_until
            {
                self.end_step();
            }
            self.maybe_ready();
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut timeout = Duration::from_millis(50);
        if let Some(active) = &self.step {
            let plan = &active.plan;
            if now < plan.send_until {
                // Send at most a millisecond late.
                timeout = Duration::from_millis(1);
            }
        }
        if let Some(&(_, at)) = self.queue.front()
            && self.in_flight < self.cap
        {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        timeout
    }

    fn name(&self, i: usize) -> String {
        let conn = &self.conns[i];
        if conn.generation == 0 {
            format!("{}{}", self.prefix, conn.index)
        } else {
            format!("{}{}r{}", self.prefix, conn.index, conn.generation)
        }
    }

    fn start_handshakes(&mut self, now: Instant) {
        while self.in_flight < self.cap {
            let Some(&(i, at)) = self.queue.front() else {
                return;
            };
            if at > now {
                return;
            }
            self.queue.pop_front();
            let conn = &mut self.conns[i];
            conn.since = now;
            conn.hello = false;
            conn.ws_raw = false;
            conn.tail.clear();
            conn.out.clear();
            conn.out_pos = 0;
            let addr = self.addrs[conn.index % self.addrs.len()];
            match TcpStream::connect(addr) {
                Ok(mut stream) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.give_up(i, format!("cannot register a socket: {e}"));
                        continue;
                    }
                    let tls = match &self.tls {
                        None => None,
                        Some(config) => {
                            let name = rustls::pki_types::ServerName::try_from("localhost")
                                .expect("a valid name");
                            match rustls::ClientConnection::new(Arc::clone(config), name) {
                                Ok(tls) => Some(Box::new(tls)),
                                Err(e) => {
                                    self.give_up(i, format!("TLS: {e}"));
                                    continue;
                                }
                            }
                        }
                    };
                    let conn = &mut self.conns[i];
                    conn.stream = Some(Wire::Raw(Link::new(stream, tls)));
                    conn.state = State::Connecting;
                    self.in_flight += 1;
                }
                Err(e) => {
                    self.in_flight += 1;
                    self.conns[i].state = State::Connecting;
                    self.fail(i, format!("connect: {e}"));
                }
            }
        }
    }

    /// Handshakes that take too long are retried.
    fn sweep_timeouts(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            if matches!(conn.state, State::Connecting | State::Handshake)
                && now.duration_since(conn.since) > self.handshake_timeout
            {
                self.fail(i, "handshake timed out".into());
            }
        }
    }

    fn on_writable(&mut self, i: usize) {
        if self.conns[i].state == State::Connecting {
            let Some(stream) = self.conns[i].stream.as_mut().map(|wire| &wire.link().tcp) else {
                return;
            };
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.fail(i, format!("connect: {e}"));
                    return;
                }
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.fail(i, format!("connect: {e}"));
                    return;
                }
            }
            let _ = stream.set_nodelay(true);
            if self.ws.is_some() {
                self.conns[i].state = State::Handshake;
                self.upgrade(i);
                return;
            }
            let name = self.name(i);
            let login = match self.proto {
                Proto::Chatroom => format!("{name}\n"),
                Proto::Irc => format!("NICK {name}\r\nUSER {name} 0 * :loadgen\r\n"),
            };
            let conn = &mut self.conns[i];
            conn.state = State::Handshake;
            conn.out.extend_from_slice(login.as_bytes());
        }
        if let Some(Wire::Upgrading(mid)) = self.conns[i].stream.as_mut() {
            // TLS records the handshake left, then the upgrade's next round.
            if let Err(e) = mid.get_mut().get_mut().flush_tls() {
                self.fail(i, format!("write: {e}"));
                return;
            }
            self.upgrade(i);
            return;
        }
        self.flush(i);
    }

    /// `--ws`: starts or resumes the upgrade; once done, logs in with a
    /// text frame holding the name.
    fn upgrade(&mut self, i: usize) {
        let Some((url, config)) = &self.ws else {
            return;
        };
        let conn = &mut self.conns[i];
        let result = match conn.stream.take() {
            Some(Wire::Raw(link)) => {
                let request = match url.as_str().into_client_request() {
                    Ok(request) => request,
                    Err(e) => {
                        self.give_up(i, format!("WebSocket address {url}: {e}"));
                        return;
                    }
                };
                match ClientHandshake::start(link, request, Some(*config)) {
                    Ok(mid) => mid.handshake(),
                    Err(e) => Err(HandshakeError::Failure(e)),
                }
            }
            Some(Wire::Upgrading(mid)) => mid.handshake(),
            other => {
                conn.stream = other;
                return;
            }
        };
        match result {
            Ok((ws, _response)) => {
                let name = self.name(i);
                let mut ws = Box::new(ws);
                match ws.write(Message::text(name)) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        self.fail(i, format!("write: {e}"));
                        return;
                    }
                }
                self.conns[i].stream = Some(Wire::Ws(ws));
                self.flush(i);
                // Events that came with the server's answer.
                self.read_ws(i);
            }
            Err(HandshakeError::Interrupted(mid)) => {
                self.conns[i].stream = Some(Wire::Upgrading(Box::new(mid)));
            }
            Err(HandshakeError::Failure(e)) => {
                let why = upgrade_error(&e, self.tls.is_some());
                self.fail(i, why);
            }
        }
    }

    /// Writes what is waiting; a socket that is full is retried when writable.
    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let stream = match conn.stream.as_mut() {
            Some(Wire::Raw(link)) => link,
            Some(Wire::Ws(ws)) => {
                match ws.flush() {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => self.fail(i, format!("write: {e}")),
                }
                return;
            }
            // The upgrade writes on its own (see on_writable).
            Some(Wire::Upgrading(_)) | None => return,
        };
        if let Err(e) = stream.flush_tls() {
            self.fail(i, format!("write: {e}"));
            return;
        }
        while conn.out_pos < conn.out.len() {
            match stream.write(&conn.out[conn.out_pos..]) {
                Ok(0) => {
                    self.fail(i, "the server closed the connection".into());
                    return;
                }
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => {
                    self.fail(i, format!("write: {e}"));
                    return;
                }
            }
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
    }

    fn on_readable(&mut self, i: usize) {
        match self.conns[i].stream {
            Some(Wire::Raw(_)) => {}
            Some(Wire::Upgrading(_)) => return self.upgrade(i),
            Some(Wire::Ws(_)) if !self.conns[i].ws_raw => return self.read_ws(i),
            Some(Wire::Ws(_)) => return self.read_ws_raw(i),
            None => return,
        }
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let conn = &mut self.conns[i];
            let Some(Wire::Raw(stream)) = conn.stream.as_mut() else {
                break;
            };
            let keep = conn.tail.len();
            buf[..keep].copy_from_slice(&conn.tail);
            conn.tail.clear();
            match stream.read(&mut buf[keep..]) {
                Ok(0) => {
                    self.fail(i, "the server closed the connection".into());
                    break;
                }
                Ok(n) => {
                    self.shared.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    let data = &buf[..keep + n];
                    let end = memchr::memrchr(b'\n', data).map_or(0, |p| p + 1);
                    let rest = &data[end..];
                    if rest.len() <= MAX_TAIL {
                        conn.tail.extend_from_slice(rest);
                    }
                    if end > 0 {
                        let now_ns = self.now_ns();
                        self.lines(i, &data[..end], now_ns);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(i, format!("read: {e}"));
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// `--ws`: the events that client `i` can read now, each one text
    /// frame: during the login they are parsed, once ready they are scanned
    /// for payloads like a chunk of lines.
    fn read_ws(&mut self, i: usize) {
        let Some(wire) = self.conns[i].stream.as_mut() else {
            return;
        };
        let mut counted = wire.link().read_bytes;
        let mut now_ns = self.now_ns();
        loop {
            let Some(Wire::Ws(ws)) = self.conns[i].stream.as_mut() else {
                return;
            };
            let read = ws.read();
            let read_bytes = ws.get_ref().read_bytes;
            if read_bytes != counted {
                // tungstenite read the socket: what it read arrived now.
                self.shared
                    .bytes_in
                    .fetch_add(read_bytes - counted, Ordering::Relaxed);
                counted = read_bytes;
                now_ns = self.now_ns();
            }
            match read {
                Ok(Message::Text(text)) => match self.conns[i].state {
                    State::Ready => self.scan(i, text.as_bytes(), now_ns),
                    State::Handshake => self.ws_login_event(i, text.as_str()),
                    _ => return,
                },
                // Pings are answered by tungstenite on the next read or flush.
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.conns[i].state == State::Ready && self.ws_raw {
                        // Logged in and all that was read is parsed: from now
                        // on the bytes are scanned as they come.
                        self.conns[i].ws_raw = true;
                        self.conns[i].pinged = Instant::now();
                    }
                    return;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => {
                    self.fail(i, "the server closed the connection".into());
                    return;
                }
                Err(e) => {
                    self.fail(i, format!("read: {e}"));
                    return;
                }
            }
        }
    }

    /// `--ws`, ready: reads the socket itself and scans the bytes, frame
    /// headers and all, for payloads: the server's frames are not masked, so
    /// a payload is in the bytes as it is in a line. What a read ends in
    /// the middle of a payload is kept for the next read. Parsing every
    /// frame into its own message (tungstenite's read) costs the generator
    /// twice what a line costs it, and on two shared cores that, not the
    /// server, set the pace; the line mode does not parse lines either.
    fn read_ws_raw(&mut self, i: usize) {
        /// A payload's marker and fields: a match that starts later than
        /// this before the end of a read may be cut, so it is kept.
        const WHOLE: usize = MARKER.len() + ID_HEX + TIME_HEX;
        let now = Instant::now();
        if now.duration_since(self.conns[i].pinged) >= WS_PING_EVERY {
            self.conns[i].pinged = now;
            if let Some(Wire::Ws(ws)) = self.conns[i].stream.as_mut() {
                let _ = ws.send(Message::Ping(Vec::new().into()));
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let conn = &mut self.conns[i];
            let Some(wire) = conn.stream.as_mut() else {
                break;
            };
            let keep = conn.tail.len();
            buf[..keep].copy_from_slice(&conn.tail);
            conn.tail.clear();
            match wire.link().read(&mut buf[keep..]) {
                Ok(0) => {
                    self.fail(i, "the server closed the connection".into());
                    break;
                }
                Ok(n) => {
                    self.shared.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    // Payloads that start before `cut` are whole here; one
                    // after it may be cut off, and is found whole next time.
                    let data = &buf[..keep + n];
                    let cut = data.len().saturating_sub(WHOLE - 1);
                    conn.tail.extend_from_slice(&data[cut..]);
                    let now_ns = self.now_ns();
                    self.scan(i, data, now_ns);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(i, format!("read: {e}"));
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// `--ws`: an event while logging in: ready after `welcome`, then `room`.
    fn ws_login_event(&mut self, i: usize, text: &str) {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match event["type"].as_str() {
            Some("welcome") => self.conns[i].hello = true,
            Some("room") if self.conns[i].hello => self.ready(i),
            Some("error") => {
                let why = format!("! {}", event["text"].as_str().unwrap_or(text));
                self.fail(i, why);
            }
            _ => {}
        }
    }

    /// Complete lines from client `i`.
    fn lines(&mut self, i: usize, chunk: &[u8], now_ns: u64) {
        match self.conns[i].state {
            State::Ready => self.scan(i, chunk, now_ns),
            State::Handshake => {
                let mut rest = chunk;
                while let Some(nl) = memchr::memchr(b'\n', rest) {
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    rest = &rest[nl + 1..];
                    self.handshake_line(i, line);
                    match self.conns[i].state {
                        State::Ready => {
                            self.scan(i, rest, now_ns);
                            return;
                        }
                        State::Handshake => {}
                        _ => return,
                    }
                }
            }
            _ => {}
        }
    }

    /// The hot path: find the payloads in what a ready client read.
    fn scan(&mut self, i: usize, chunk: &[u8], now_ns: u64) {
        if let Some(active) = self.step.as_mut() {
            let mut delivered = 0;
            for pos in self.finder.find_iter(chunk) {
                let fields = &chunk[pos + MARKER.len()..];
                if fields.len() < ID_HEX + TIME_HEX {
                    continue;
                }
                let id = hex(&fields[..ID_HEX]);
                if id != Some(u64::from(active.plan.id)) {
                    active.result.other += 1;
                    continue;
                }
                let Some(sent) = hex(&fields[ID_HEX..ID_HEX + TIME_HEX]) else {
                    continue;
                };
                let micros = (now_ns.saturating_sub(sent) / 1000).clamp(1, MAX_LATENCY_US);
                let _ = active.result.hist.record(micros);
                delivered += 1;
            }
            if delivered > 0 {
                active.result.delivered += delivered;
                self.shared.delivered.fetch_add(delivered, Ordering::AcqRel);
            }
            if self.ws.is_some() {
                // Events (one, or a socket's bytes): an `error` one is the
                // `! ` line of the line mode.
                let errors = memmem::find_iter(chunk, br#"{"type":"error""#).count() as u64;
                if errors > 0 {
                    active.result.errors += errors;
                    if active.result.first_error.is_none() {
                        let at = memmem::find(chunk, br#"{"type":"error""#).unwrap_or(0);
                        let event = &chunk[at..];
                        let end = memchr::memchr(b'}', event).map_or(event.len(), |e| e + 1);
                        active.result.first_error =
                            Some(String::from_utf8_lossy(&event[..end]).into());
                    }
                }
            } else if self.proto == Proto::Chatroom {
                let errors = memmem::find_iter(chunk, b"\n! ").count() as u64
                    + u64::from(chunk.starts_with(b"! "));
                if errors > 0 {
                    active.result.errors += errors;
                    if active.result.first_error.is_none() {
                        let at = if chunk.starts_with(b"! ") {
                            0
                        } else {
                            memmem::find(chunk, b"\n! ").map_or(0, |p| p + 1)
                        };
                        let line = chunk[at..].split(|&b| b == b'\n').next().unwrap_or(b"");
                        active.result.first_error = Some(String::from_utf8_lossy(line).into());
                    }
                }
            }
        }
        if self.proto == Proto::Irc {
            self.pings(i, chunk);
        }
    }

    /// Answers the PINGs in a chunk of IRC lines.
    fn pings(&mut self, i: usize, chunk: &[u8]) {
        let mut starts: Vec<usize> = memmem::find_iter(chunk, b"\nPING ")
            .map(|p| p + 1)
            .collect();
        if chunk.starts_with(b"PING ") {
            starts.insert(0, 0);
        }
        if starts.is_empty() {
            return;
        }
        for at in starts {
            let line = chunk[at..].split(|&b| b == b'\n').next().unwrap_or(b"");
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let conn = &mut self.conns[i];
            conn.out.extend_from_slice(b"PONG");
            conn.out.extend_from_slice(&line[4..]);
            conn.out.extend_from_slice(b"\r\n");
        }
        self.flush(i);
    }

    fn handshake_line(&mut self, i: usize, line: &[u8]) {
        match self.proto {
            Proto::Chatroom => {
                if line.starts_with(b"* hello ") {
                    self.conns[i].hello = true;
                } else if self.conns[i].hello
                    && (line.starts_with(b"* you joined ")
                        || line.starts_with(b"* you are in the lobby"))
                {
                    self.ready(i);
                } else if line.starts_with(b"! ") {
                    let why = String::from_utf8_lossy(line).into_owned();
                    self.fail(i, why);
                }
            }
            Proto::Irc => {
                if line.starts_with(b"PING") {
                    self.pings(i, line);
                    return;
                }
                if line.starts_with(b"ERROR") {
                    let why = String::from_utf8_lossy(line).into_owned();
                    self.fail(i, why);
                    return;
                }
                let mut words = line.split(|&b| b == b' ');
                let _prefix = words.next();
                match words.next() {
                    Some(b"001") => {
                        let join = format!("JOIN {}\r\n", self.channel);
                        self.conns[i].out.extend_from_slice(join.as_bytes());
                        self.flush(i);
                    }
                    Some(b"366") => self.ready(i),
                    Some(code @ (b"432" | b"433" | b"436" | b"465" | b"471" | b"473" | b"474")) => {
                        let why = format!(
                            "IRC {}: {}",
                            String::from_utf8_lossy(code),
                            String::from_utf8_lossy(line)
                        );
                        self.fail(i, why);
                    }
                    _ => {}
                }
            }
        }
    }

    fn ready(&mut self, i: usize) {
        self.conns[i].state = State::Ready;
        self.conns[i].was_ready = true;
        self.in_flight -= 1;
        self.last_ready = Some(Instant::now());
        self.shared.ready.fetch_add(1, Ordering::AcqRel);
        if self.json {
            // Receivers find payloads by their marker, in text or JSON alike.
            self.conns[i].out.extend_from_slice(b"/mode json\n");
            self.flush(i);
        }
    }

    /// A client failed: retried if it was still logging in, else lost.
    fn fail(&mut self, i: usize, why: String) {
        let conn = &mut self.conns[i];
        let was = conn.state;
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream.link().tcp);
        }
        conn.tail.clear();
        conn.out.clear();
        conn.out_pos = 0;
        match was {
            State::Connecting | State::Handshake => {
                self.in_flight -= 1;
                if conn.attempts < self.retries {
                    conn.attempts += 1;
                    conn.generation += 1;
                    conn.state = State::Pending;
                    let at = Instant::now() + Duration::from_millis(200 * u64::from(conn.attempts));
                    self.queue.push_back((i, at));
                } else {
                    self.give_up(i, why);
                }
            }
            State::Ready => {
                conn.state = State::Dead;
                if let Some(active) = self.step.as_mut() {
                    active.result.lost += 1;
                }
                self.shared.ready.fetch_sub(1, Ordering::AcqRel);
                if self.reasons.len() < 5 {
                    self.reasons.push(format!("lost: {why}"));
                }
                eprintln!("client {} lost: {why}", self.conns[i].index);
            }
            State::Pending | State::Dead => {}
        }
    }

    fn give_up(&mut self, i: usize, why: String) {
        self.conns[i].state = State::Dead;
        self.failed += 1;
        self.shared.failed.fetch_add(1, Ordering::AcqRel);
        if !self.reasons.contains(&why) && self.reasons.len() < 5 {
            self.reasons.push(why);
        }
    }

    fn maybe_ready(&mut self) {
        if self.ready_reported || self.in_flight > 0 || !self.queue.is_empty() {
            return;
        }
        self.ready_reported = true;
        let connected = self
            .conns
            .iter()
            .filter(|c| c.state == State::Ready)
            .count();
        let senders = self
            .conns
            .iter()
            .filter(|c| c.state == State::Ready && c.index < self.total_senders)
            .count();
        let _ = self.reports.send(Report::Ready(ReadyReport {
            connected,
            senders,
            failed: self.failed,
            reasons: self.reasons.clone(),
            last_ready: self.last_ready,
        }));
    }

    /// Gives up on every client not ready yet.
    fn stop_connecting(&mut self) {
        self.queue.clear();
        for i in 0..self.conns.len() {
            if matches!(
                self.conns[i].state,
                State::Pending | State::Connecting | State::Handshake
            ) {
                let conn = &mut self.conns[i];
                if let Some(mut stream) = conn.stream.take() {
                    let _ = self.poll.registry().deregister(&mut stream.link().tcp);
                }
                self.give_up(i, "not ready within --connect-timeout".into());
            }
        }
        self.in_flight = 0;
    }

    /// Queues the lost clients for a new handshake; reports Ready again.
    fn reconnect(&mut self) {
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            if conn.state == State::Dead && conn.was_ready {
                conn.state = State::Pending;
                conn.attempts = 0;
                conn.generation += 1;
                self.queue.push_back((i, now));
            }
        }
        self.ready_reported = false;
    }

    fn begin_step(&mut self, plan: StepPlan) {
        let senders = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.state == State::Ready
                    && match plan.only_sender {
                        Some(only) => c.index == only,
                        None => c.index < self.total_senders,
                    }
            })
            .map(|(i, _)| i)
            .collect();
        self.step = Some(Active {
            plan,
            senders,
            next: 0,
            result: StepResult {
                sent: 0,
                delivered: 0,
                other: 0,
                hist: new_histogram(),
                lost: 0,
                behind: Duration::ZERO,
                backlog: 0,
                errors: 0,
                first_error: None,
            },
        });
    }

    fn end_step(&mut self) {
        if let Some(active) = self.step.take() {
            let _ = self.reports.send(Report::Step(Box::new(active.result)));
        }
    }

    /// Sends every message whose time has come, round robin over the senders.
    fn send_due(&mut self) {
        let Some(active) = self.step.as_mut() else {
            return;
        };
        let plan = &active.plan;
        let now = Instant::now();
        if now < plan.start || active.senders.is_empty() || plan.rate <= 0.0 {
            return;
        }
        let elapsed = (now.min(plan.send_until) - plan.start).as_secs_f64();
        let mut due = (elapsed * plan.rate).floor() as u64 + 1;
        if now >= plan.send_until {
            due = (plan.send_until - plan.start)
                .as_secs_f64()
                .mul_add(plan.rate, 0.0) as u64;
        }
        if let Some(max) = plan.max_messages {
            due = due.min(max);
        }
        if active.next >= due {
            return;
        }
        // How late the first of these is.
        let scheduled = plan.start + Duration::from_secs_f64(active.next as f64 / plan.rate);
        active.result.behind = active
            .result
            .behind
            .max(now.saturating_duration_since(scheduled));
        let now_ns = self.shared.base.elapsed().as_nanos() as u64;
        let mut time_hex = [0u8; TIME_HEX];
        put_hex(&mut time_hex, now_ns);
        let mut measured_hex = [0u8; ID_HEX];
        put_hex(&mut measured_hex, u64::from(plan.id));
        let mut warm_hex = [0u8; ID_HEX];
        put_hex(&mut warm_hex, u64::from(plan.warm_id));
        let mut touched = Vec::new();
        let mut broken = Vec::new();
        let mut payload = Vec::new();
        let mut measured = 0;
        while active.next < due {
            let k = active.next;
            active.next += 1;
            let at = plan.start + Duration::from_secs_f64(k as f64 / plan.rate);
            let is_measured = at >= plan.measure_from && at < plan.send_until;
            let i = active.senders[(k % active.senders.len() as u64) as usize];
            let conn = &mut self.conns[i];
            if conn.state != State::Ready {
                continue;
            }
            let out = match conn.stream {
                // The payload alone, for its own frame.
                Some(Wire::Ws(_)) => &mut payload,
                _ => &mut conn.out,
            };
            let start = out.len();
            out.extend_from_slice(&self.template);
            out[start + self.id_at..start + self.id_at + ID_HEX].copy_from_slice(if is_measured {
                &measured_hex
            } else {
                &warm_hex
            });
            out[start + self.time_at..start + self.time_at + TIME_HEX].copy_from_slice(&time_hex);
            if let Some(Wire::Ws(ws)) = conn.stream.as_mut() {
                // ASCII: the marker, hex digits and padding.
                let text = String::from_utf8(std::mem::take(&mut payload)).unwrap_or_default();
                match ws.write(Message::text(text)) {
                    Ok(()) => {}
                    // Queued: the flush below (or the next writable event) sends it.
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        broken.push((i, format!("write: {e}")));
                        continue;
                    }
                }
            }
            if is_measured {
                measured += 1;
            }
            if touched.last() != Some(&i) {
                touched.push(i);
            }
        }
        active.result.sent += measured;
        self.shared.sent.fetch_add(measured, Ordering::AcqRel);
        for (i, why) in broken {
            self.fail(i, why);
        }
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            self.flush(i);
            let backlog = self.conns[i].out.len() - self.conns[i].out_pos;
            if let Some(active) = self.step.as_mut() {
                active.result.backlog = active.result.backlog.max(backlog);
            }
        }
    }
}

/// Fixed-width lowercase hex.
fn put_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn hex(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(d);
    }
    Some(value)
}

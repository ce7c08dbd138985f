//! The connection to the server, as both front ends of the client use it:
//! the command-line options, opening the connection, reading the server's
//! lines in bounded pieces, and the errors a person is told about.
//!
//! [`super::plain`] (the line client) and [`super::tui`] (the full-screen
//! client) both build on this module and never on each other.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustyline::error::ReadlineError;

/// The host the client connects to when `--host` is not given: the server's default.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The port the client connects to when `--port` is not given: the server's default.
pub const DEFAULT_PORT: u16 = 6622;

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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            name: None,
            plain: false,
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
            Self::GaveUp { .. } => None,
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

/// Opens the connection, trying each address the host resolves to.
pub(crate) fn connect(options: &Options) -> Result<TcpStream, ClientError> {
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

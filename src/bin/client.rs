//! `client`: the terminal chat client. This file only reads the flags, sets
//! up logging and maps the outcome to an exit code; the client itself is
//! [`chatroom::client`].

use std::io::Write;
use std::process::ExitCode;

use std::path::PathBuf;

use chatroom::client::trust::Trust;
use chatroom::client::{self, Options, link};
use clap::Parser;

/// Chat with a chatroom server from a terminal, or from a script through a pipe.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Flags {
    /// Host name or IP address of the server
    #[arg(long, default_value = link::DEFAULT_HOST)]
    host: String,
    /// TCP port of the server [default: 6622, or 6697 with TLS]
    #[arg(long)]
    port: Option<u16>,
    /// Name to log in with, sent as soon as the connection is made (empty: a guest name)
    #[arg(long, value_parser = link::parse_name)]
    name: Option<String>,
    /// The plain line-by-line client even on a terminal (a pipe always gets it)
    #[arg(long)]
    plain: bool,
    /// Connect over TLS, trusting the system's certificate authorities; a
    /// certificate they do not vouch for is shown and, on a terminal, trusted
    /// only if you say so (then remembered in ~/.config/chatroom/known_hosts)
    #[arg(long)]
    tls: bool,
    /// Connect over TLS, trusting this certificate authority (PEM), e.g. the
    /// ca.pem that `server tls-init` made
    #[arg(long, value_name = "FILE", conflicts_with = "tls_fingerprint")]
    tls_ca: Option<PathBuf>,
    /// Connect over TLS, trusting only the certificate with this SHA-256
    /// fingerprint (as `server tls-init` prints it)
    #[arg(long, value_name = "SHA256", value_parser = fingerprint)]
    tls_fingerprint: Option<[u8; 32]>,
}

fn fingerprint(text: &str) -> Result<[u8; 32], String> {
    chatroom::tls::parse_fingerprint(text)
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    // Quiet unless RUST_LOG asks; failing to set up logging is no reason to stop.
    let _ = env_logger::try_init();
    let tls = match (flags.tls_fingerprint, flags.tls_ca, flags.tls) {
        (Some(pin), _, _) => Some(Trust::Pin(pin)),
        (None, Some(ca), _) => Some(Trust::Ca(ca)),
        (None, None, true) => Some(Trust::System),
        (None, None, false) => None,
    };
    let default_port = if tls.is_some() {
        link::DEFAULT_TLS_PORT
    } else {
        link::DEFAULT_PORT
    };
    let options = Options {
        host: flags.host,
        port: flags.port.unwrap_or(default_port),
        name: flags.name,
        plain: flags.plain,
        tls,
    };
    match client::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The one place an error is reported.
            let _ = writeln!(std::io::stderr(), "{error}");
            ExitCode::FAILURE
        }
    }
}

//! `client`: the terminal chat client. This file only reads the flags, sets
//! up logging and maps the outcome to an exit code; the client itself is
//! [`chatroom::client`].

use std::io::Write;
use std::process::ExitCode;

use chatroom::client::{self, Options, link};
use clap::Parser;

/// Chat with a chatroom server from a terminal, or from a script through a pipe.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Flags {
    /// Host name or IP address of the server
    #[arg(long, default_value = link::DEFAULT_HOST)]
    host: String,
    /// TCP port of the server
    #[arg(long, default_value_t = link::DEFAULT_PORT)]
    port: u16,
    /// Name to log in with, sent as soon as the connection is made (empty: a guest name)
    #[arg(long, value_parser = link::parse_name)]
    name: Option<String>,
    /// The plain line-by-line client even on a terminal (a pipe always gets it)
    #[arg(long)]
    plain: bool,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    // Quiet unless RUST_LOG asks; failing to set up logging is no reason to stop.
    let _ = env_logger::try_init();
    let options = Options {
        host: flags.host,
        port: flags.port,
        name: flags.name,
        plain: flags.plain,
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

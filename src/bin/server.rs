//! `server`: the chat server. Parses flags, opens the data directory, binds,
//! and serves until Ctrl-C or SIGTERM.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use chatroom::config::Config;
use chatroom::limits;
use chatroom::names;
use chatroom::server::{Server, Shutdown};

/// A self-hosted chat server: rooms, history, whispers; every message kept in
/// messages.csv and every connection in data.csv.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to listen on. Anything but loopback is reachable from the network.
    #[arg(long, default_value = limits::DEFAULT_HOST)]
    host: String,
    /// Port to listen on; 0 takes a free one (the real port is printed).
    #[arg(long, default_value_t = limits::DEFAULT_PORT)]
    port: u16,
    /// Directory of messages.csv, data.csv and rooms.csv (created if missing).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Connections served at once; more get "! server full".
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CLIENTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: u64,
    /// Messages of a room replayed to whoever joins it.
    #[arg(long, default_value_t = limits::DEFAULT_HISTORY)]
    history: usize,
    /// Room everyone lands in after naming themselves; "" means the lobby.
    #[arg(long, default_value = "general")]
    default_room: String,
    /// Longest line a client may send, in bytes.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_LINE as u64, value_parser = clap::value_parser!(u64).range(16..=16 * 1024 * 1024))]
    max_line: u64,
    /// Rooms with more members than this do not announce joins and leaves.
    #[arg(long, default_value_t = limits::DEFAULT_ANNOUNCE_LIMIT)]
    announce_limit: usize,
    /// Seconds a new connection has to send its name.
    #[arg(long, default_value_t = limits::DEFAULT_NAME_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    name_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    chatroom::logging::init();
    let default_room = match args.default_room.as_str() {
        "" => None,
        typed => match names::room_name(typed) {
            Ok(room) => Some(room.to_string()),
            Err(e) => {
                eprintln!("error: --default-room {typed:?}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let config = Config {
        data_dir: args.data_dir,
        max_clients: args.max_clients as usize,
        history: args.history,
        default_room,
        max_line: args.max_line as usize,
        announce_limit: args.announce_limit,
        name_timeout: Duration::from_secs(args.name_timeout),
    };
    match limits::raise_open_files_limit() {
        Ok(files) if files < config.max_clients as u64 + 64 => log::warn!(
            "this process may open only {files} files, fewer than --max-clients {}; raise the hard limit (ulimit -Hn) to serve them all",
            config.max_clients
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }

    let listener = match TcpListener::bind((args.host.as_str(), args.port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}:{}: {e} (is another server running there? choose another --port or --host)",
                args.host, args.port
            );
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::open(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !local.ip().is_loopback() {
        eprintln!(
            "warning: listening on {local}, which is reachable from the network: anyone who can reach it can join and chat"
        );
    }
    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if on_signal.is_triggered() {
            eprintln!("interrupted again: exiting without waiting");
            std::process::exit(130);
        }
        on_signal.trigger();
    }) {
        eprintln!("error: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    println!("listening on {local}");
    match server.run(listener, shutdown) {
        Ok(()) => {
            log::info!("stopped; all messages are in messages.csv");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the server stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

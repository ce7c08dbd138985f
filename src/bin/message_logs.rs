//! `message_logs`: data.csv as a live log. Parses flags and calls
//! [`chatroom::viewer::logs::message_logs`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use chatroom::viewer::logs::{LogOptions, message_logs};
use chatroom::viewer::{Count, Mode};

/// Shows the server's data.csv as a log: one line per connection event (time,
/// event, ip:port, thread, name), coloured by kind on a terminal (unless
/// NO_COLOR is set). Follows the file on a terminal; prints and exits
/// otherwise.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The server's data directory, where data.csv and messages.csv are.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Show the last N events first, or `all`. Default: what fits the window
    /// (50 when following into a pipe); with --once, the whole file.
    #[arg(long, value_name = "N")]
    tail: Option<Count>,
    /// Keep showing new events as the server writes them (the default on a
    /// terminal). With --stats: print a new summary line whenever it changes.
    #[arg(long, conflicts_with = "once")]
    follow: bool,
    /// Print what is there now and exit.
    #[arg(long)]
    once: bool,
    /// Only events of this user (any case).
    #[arg(long)]
    name: Option<String>,
    /// Only events from this address.
    #[arg(long)]
    ip: Option<String>,
    /// Print one summary line instead: connections online now, total
    /// connections, distinct names and ips, messages per room.
    #[arg(long)]
    stats: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mode = Mode::from_flags(args.follow, args.once);
    let options = LogOptions {
        data_dir: args.data_dir,
        tail: args.tail,
        mode,
        name: args.name,
        ip: args.ip,
        stats: args.stats,
    };
    match message_logs(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

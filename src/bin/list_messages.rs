//! `list_messages`: messages.csv as a chat. Parses flags and calls
//! [`chatroom::viewer::messages::list_messages`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use chatroom::viewer::messages::{ListOptions, list_messages};
use chatroom::viewer::{Count, Mode};

/// Shows the server's messages.csv as a chat: time, room, sender, text.
///
/// On a terminal it is a full-screen live view (q quits, arrows and PgUp/PgDn
/// scroll, r picks a room, / searches). Anywhere else, or with --once or
/// --plain, it prints plain lines, one per message, for pipes and scripts.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The server's data directory, where messages.csv is.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Only this room's messages (any case; whispers are left out).
    #[arg(long)]
    room: Option<String>,
    /// Show the last N messages first, or `all`. Default: what fits the window
    /// (50 when following into a pipe); with --once, the whole file.
    #[arg(long, value_name = "N")]
    tail: Option<Count>,
    /// Keep showing new messages as the server writes them (the default on a terminal).
    #[arg(long, conflicts_with = "once")]
    follow: bool,
    /// Print plain lines of what is there now and exit.
    #[arg(long)]
    once: bool,
    /// Only messages containing TEXT (any case; text, names and room).
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// Plain lines even on a terminal (no full-screen view).
    #[arg(long)]
    plain: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mode = Mode::from_flags(args.follow, args.once);
    let options = ListOptions {
        data_dir: args.data_dir,
        room: args.room,
        grep: args.grep,
        tail: args.tail,
        mode,
        plain: args.plain,
    };
    match list_messages(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! A small chatroom bot: how a program talks to the server.
//!
//! It logs in, optionally moves to a room, then reads the server's lines and
//! tells them apart by their first characters (docs/PROTOCOL.md):
//! `[` a chat line, `* ` a notice, `! ` an error. It answers:
//! - `* NAME joined #ROOM` with `welcome, NAME!`;
//! - `!time` with the current time;
//! - `!who` by sending `/who` and relaying the names it gets back in one line.
//!
//! A whisper (`/msg bot !time`) is answered with a whisper. The bot never
//! answers its own lines, nor the replayed history it is shown on joining a room.
//!
//! It does not pace itself: the server's flood control never refuses a line,
//! it reads the next one later ("fakelag"). The bot writes from a thread of its
//! own, so a slowed write never stops it reading what the server sends.
//!
//! ```text
//! cargo run --example bot -- --addr 127.0.0.1:6622 --name bot --room lab
//! cargo run --example bot -- --addr chat.example.org:6697 --tls --name bot
//! cargo run --example bot -- --addr localhost:6697 --tls-ca tls/ca.pem
//! ```
//!
//! Over TLS it connects through the client library's [`Stream`], so it
//! trusts what the client does: the system's roots (`--tls`), one authority
//! (`--tls-ca`) or one certificate (`--tls-fingerprint`). Unlike the client it
//! never asks: a certificate nobody vouches for is an error.
//!
//! On a private server (one with accounts) the bot needs an account; it reads
//! its password from `CHATROOM_PASSWORD`, so the password is not shown by `ps`.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;

use chatroom::client::Stream;
use chatroom::client::link::{self, Options};
use chatroom::client::trust::Trust;
use clap::Parser;

/// A chatroom bot that welcomes newcomers and answers `!time` and `!who`.
#[derive(Parser)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:6622")]
    addr: String,
    /// Name to log in with.
    #[arg(long, default_value = "bot")]
    name: String,
    /// Room to sit in (joined, or created if missing); default: the server's default room.
    #[arg(long)]
    room: Option<String>,
    /// Connect over TLS, trusting the system's certificate authorities.
    #[arg(long)]
    tls: bool,
    /// Connect over TLS, trusting this certificate authority (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Connect over TLS, trusting only the certificate with this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256", value_parser = chatroom::tls::parse_fingerprint)]
    tls_fingerprint: Option<[u8; 32]>,
}

/// Connects as the flags say: plain TCP, or TLS with the trust asked for.
fn connect(args: &Args) -> io::Result<Stream> {
    let tls = match (args.tls_fingerprint, &args.tls_ca, args.tls) {
        (Some(pin), _, _) => Some(Trust::Pin(pin)),
        (None, Some(ca), _) => Some(Trust::Ca(ca.clone())),
        (None, None, true) => Some(Trust::System),
        (None, None, false) => None,
    };
    connect_to(&args.addr, tls)
}

/// Connects to `addr` (`HOST:PORT`): plain TCP, or TLS trusting `tls`. The
/// bot never asks anyone: an untrusted certificate is an error.
pub fn connect_to(addr: &str, tls: Option<Trust>) -> io::Result<Stream> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| io::Error::other(format!("--addr {addr:?} is not HOST:PORT")))?;
    let options = Options {
        host: host.to_string(),
        port,
        tls,
        ..Options::default()
    };
    link::connect(&options, false).map_err(|e| io::Error::other(e.to_string()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let password = std::env::var("CHATROOM_PASSWORD").ok();
    let served = connect(&args).and_then(|stream| {
        run(
            stream,
            &args.name,
            password.as_deref(),
            args.room.as_deref(),
        )
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Longest `!who` answer: far below the server's line limit (4096 bytes by default).
const MAX_REPLY: usize = 1000;

/// Where an answer goes: `None` to the bot's room, `Some(name)` as a whisper.
type To = Option<String>;

/// Serves one connection until the server closes it. `password` is for a
/// private server, which asks for it with a `Password:` line.
pub fn run(
    stream: Stream,
    name: &str,
    password: Option<&str>,
    room: Option<&str>,
) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let (outgoing, queued) = mpsc::channel::<String>();
    // The writer: over the server's rate its writes wait on TCP flow control,
    // and only this thread waits; the loop below keeps reading.
    thread::spawn(move || {
        for line in queued {
            // One write per line, so the server never sees half a line from us.
            if out.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    let send = |line: &str| {
        outgoing
            .send(line.to_string())
            .map_err(|_| io::Error::other("the connection is closed"))
    };
    let say = |to: &To, text: &str| match to {
        None => text.to_string(),
        Some(who) => format!("/msg {who} {text}"),
    };
    send(name)?; // the name may be sent before the `Name:` prompt arrives
    let mut me: Option<String> = None;
    let mut in_history = false;
    let mut who_asked: VecDeque<To> = VecDeque::new();
    let mut who: Option<(To, usize, Vec<String>)> = None; // (to, expected, names)

    for line in BufReader::new(stream).lines() {
        let line = line?;
        let Some(me) = me.as_deref() else {
            // Logging in: `* hello NAME! ...` says which name we got.
            if let Some(rest) = line.strip_prefix("* hello ") {
                let got = rest.split_whitespace().next().unwrap_or(name);
                me = Some(got.strip_suffix('!').unwrap_or(got).to_string());
                if let Some(room) = room {
                    send(&format!("/join {room}"))?;
                }
            } else if line == "Password:" {
                let Some(password) = password else {
                    return Err(io::Error::other(
                        "the server is private: set CHATROOM_PASSWORD to the bot's password",
                    ));
                };
                send(password)?;
            } else if let Some(why) = line.strip_prefix("! ") {
                return Err(io::Error::other(format!("could not log in: {why}")));
            }
            continue;
        };
        if let Some(notice) = line.strip_prefix("* ") {
            if notice.starts_with("recent messages in #") {
                in_history = true;
            } else if notice == "end of recent messages" {
                in_history = false;
            } else if let Some(count) = notice.strip_prefix("online (") {
                // The `/who` reply: a count, then one `*   NAME in ...` line each.
                let expected = count.trim_end_matches("):").parse().unwrap_or(0);
                if let Some(to) = who_asked.pop_front() {
                    who = Some((to, expected, Vec::new()));
                }
            } else if let Some(entry) = notice.strip_prefix("  ") {
                if let Some((_, _, names)) = &mut who {
                    names.push(entry.trim_start().replacen(" in ", " (", 1) + ")");
                }
            } else if let Some((newcomer, to_room)) = notice.split_once(" joined #") {
                // `* NAME joined #ROOM`; not `* you joined #ROOM (N here)`.
                if !newcomer.contains(' ') && !to_room.contains(' ') && newcomer != me {
                    send(&format!("welcome, {newcomer}!"))?;
                }
            }
            if let Some((to, expected, names)) = &who
                && names.len() >= *expected
            {
                let mut answer = format!("online ({expected}): {}", names.join(", "));
                if answer.len() > MAX_REPLY {
                    let cut = (0..=MAX_REPLY).rev().find(|&i| answer.is_char_boundary(i));
                    answer.truncate(cut.unwrap_or(0));
                    answer.push_str(" …");
                }
                send(&say(to, &answer))?;
                who = None;
            }
        } else if let Some(rest) = line.strip_prefix('[') {
            // `[HH:MM:SS] NAME: TEXT` or `[HH:MM:SS] (whisper) NAME: TEXT`.
            let Some((_, rest)) = rest.split_once("] ") else {
                continue;
            };
            if rest.starts_with("(whisper to ") {
                continue; // the confirmation of a whisper we sent
            }
            let (whisper, rest) = match rest.strip_prefix("(whisper) ") {
                Some(rest) => (true, rest),
                None => (false, rest),
            };
            let Some((from, text)) = rest.split_once(": ") else {
                continue;
            };
            if in_history || from == me {
                continue; // never answer old lines or ourselves: no loops
            }
            let to = whisper.then(|| from.to_string());
            match text.trim() {
                "!time" => {
                    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S %:z");
                    send(&say(&to, &format!("the time is {now}")))?;
                }
                "!who" => {
                    who_asked.push_back(to);
                    send("/who")?;
                }
                _ => {}
            }
        } else if let Some(error) = line.strip_prefix("! ") {
            if let Some(room) = room
                && error.starts_with("there is no room")
            {
                send(&format!("/create {room}"))?;
            } else {
                eprintln!("bot: the server said: {error}");
            }
        }
    }
    Ok(()) // the server closed the connection (shutdown, or we were dropped)
}

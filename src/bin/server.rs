//! `server`: the chat server. Parses flags, opens the data directory, binds,
//! and serves until Ctrl-C or SIGTERM. Its subcommands manage accounts and
//! bans in the same data directory, also while a server runs.

use std::io::{BufRead, IsTerminal};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use chatroom::names;
use chatroom::server::accounts::{Accounts, Role};
use chatroom::server::config::Config;
use chatroom::server::limits;
use chatroom::server::moderation::{Ban, Bans};
use chatroom::server::tokens::Tokens;
use chatroom::server::transport::web::{self, Web};
use chatroom::server::{Listener, Server, Shutdown};

/// A self-hosted chat server: rooms, history, whispers; every message kept in
/// messages.csv and every connection in data.csv. With accounts (see
/// add-user) it is private: only accounts can log in.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_override_self = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Tool>,
    /// Directory of messages.csv, data.csv, rooms.csv, accounts.csv and
    /// bans.csv (created if missing).
    #[arg(long, default_value = ".", global = true)]
    data_dir: PathBuf,
    /// Address to listen on. Anything but loopback is reachable from the network.
    #[arg(long, default_value = limits::DEFAULT_HOST)]
    host: String,
    /// Port to listen on; 0 takes a free one (the real port is printed).
    #[arg(long, default_value_t = limits::DEFAULT_PORT)]
    port: u16,
    /// Connections served at once; more get "! server full".
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CLIENTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: u64,
    /// Connections from one address at once; 0 means no limit.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_PER_IP)]
    max_per_ip: usize,
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
    /// Seconds a new connection has to send its name (and password).
    #[arg(long, default_value_t = limits::DEFAULT_NAME_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    name_timeout: u64,
    /// Flood control: lines a second each client's lines are handled at, at
    /// most. Faster lines are read later, never refused or dropped; 0 turns it
    /// off.
    #[arg(long, default_value_t = limits::DEFAULT_RATE, value_parser = non_negative)]
    rate: f64,
    /// Lines a client may send at once before --rate applies.
    #[arg(long, default_value_t = limits::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
    /// Milliseconds before a failed login is answered.
    #[arg(long, default_value_t = limits::DEFAULT_LOGIN_DELAY.as_millis() as u64)]
    login_delay_ms: u64,
    /// Rooms there may be in all; past it /create is refused.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_ROOMS)]
    max_rooms: usize,
    /// Rooms one name may make with /create (admins are not limited).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_ROOMS_PER_USER)]
    max_rooms_per_user: usize,
    /// Serve the web page and its WebSocket (/ws) on this port too; 0 takes
    /// a free one (printed as `listening on HOST:PORT (web)`).
    #[arg(long)]
    web_port: Option<u16>,
    /// Another origin whose pages may open the chat's WebSocket, besides the
    /// page's own (e.g. https://chat.example.org); may be given again.
    #[arg(long = "web-origin", value_name = "ORIGIN")]
    web_origins: Vec<String>,
    /// Seconds of silence after which a WebSocket is pinged; one that
    /// answers nothing by the next ping is dropped as gone.
    #[arg(long, default_value_t = web::PING_EVERY.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    web_ping_secs: u64,
}

/// Managing accounts and bans.
#[derive(Subcommand, Debug)]
enum Tool {
    /// Adds an account; the password is read from the terminal without echo,
    /// or from stdin when piped. The first account makes the server private.
    AddUser {
        /// The login name.
        name: String,
        /// Make the account an admin (may kick, ban and mute).
        #[arg(long)]
        admin: bool,
    },
    /// Removes an account.
    RemoveUser {
        /// The login name.
        name: String,
    },
    /// Sets a new password (read like add-user's).
    Passwd {
        /// The login name.
        name: String,
    },
    /// Lists the accounts (never their passwords or hashes).
    ListUsers,
    /// Bans a name (and an address, if given) from the server.
    Ban {
        /// The name.
        name: String,
        /// An address to ban with it.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lifts a ban.
    Unban {
        /// The name.
        name: String,
    },
    /// Lists the bans.
    ListBans,
    /// Logs a name out of every device that stays logged in (forgets all its
    /// tokens).
    RevokeTokens {
        /// The name.
        name: String,
    },
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("expected a number, 0 or more".into()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.command.is_none() {
        tune_allocator();
    }
    chatroom::logging::init();
    if let Some(tool) = args.command {
        return match run_tool(tool, &args.data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
        rate: args.rate,
        burst: args.burst,
        max_per_ip: args.max_per_ip,
        login_delay: Duration::from_millis(args.login_delay_ms),
        max_rooms: args.max_rooms,
        max_rooms_per_user: args.max_rooms_per_user,
    };
    let web = args.web_port.map(|port| {
        (
            port,
            Web {
                origins: args.web_origins,
                ping_every: Duration::from_secs(args.web_ping_secs),
            },
        )
    });
    serve(config, &args.host, args.port, web)
}

/// Starts the server again with glibc's per-thread caches off (see
/// [`limits::ALLOCATOR_TUNABLES`]): tunables are read only when a process
/// starts. Done once, before any thread exists; an explicit GLIBC_TUNABLES
/// that already sets the cache is left alone, and if the new start fails the
/// server simply runs untuned.
fn tune_allocator() {
    const KEY: &str = "GLIBC_TUNABLES";
    let current = std::env::var(KEY).unwrap_or_default();
    if current.contains("tcache_count") {
        return;
    }
    let tuned = if current.is_empty() {
        limits::ALLOCATOR_TUNABLES.to_string()
    } else {
        format!("{current}:{}", limits::ALLOCATOR_TUNABLES)
    };
    let mut args = std::env::args_os();
    let Some(argv0) = args.next() else {
        return;
    };
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(KEY, tuned)
        .exec();
    log::debug!("running with glibc's default caches: {error}");
}

/// Binds a listening socket, or says in one line why it cannot.
fn bind(host: &str, port: u16, flag: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind((host, port)).map_err(|e| {
        eprintln!(
            "error: cannot listen on {host}:{port}: {e} (is another server running there? choose another {flag} or --host)"
        );
        ExitCode::FAILURE
    })
}

fn serve(config: Config, host: &str, port: u16, web: Option<(u16, Web)>) -> ExitCode {
    let listener = match bind(host, port, "--port") {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let web = match web {
        Some((port, web)) => match bind(host, port, "--web-port") {
            Ok(socket) => Some(Listener {
                socket,
                accept: Arc::new(web),
            }),
            Err(code) => return code,
        },
        None => None,
    };
    let max_clients = config.max_clients;
    let server = match Server::open(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match limits::raise_open_files_limit() {
        Ok(files) if files < max_clients as u64 + 64 => log::warn!(
            "this process may open only {files} files, fewer than --max-clients {}; raise the hard limit (ulimit -Hn) to serve them all",
            max_clients
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }

    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !local.ip().is_loopback() {
        eprintln!(
            "warning: listening on {local}, which is reachable from the network: anyone who can reach it can connect (add accounts with `server add-user` to make it private)"
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
    let mut listeners = vec![Listener::plain(listener)];
    if let Some(web) = web {
        match web.socket.local_addr() {
            Ok(addr) => println!("listening on {addr} (web)"),
            Err(e) => {
                eprintln!("error: cannot read the web port's address: {e}");
                return ExitCode::FAILURE;
            }
        }
        listeners.push(web);
    }
    match server.run(listeners, shutdown) {
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

fn run_tool(tool: Tool, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot use data directory {}: {e}", dir.display()))?;
    }
    let accounts = Accounts::open(dir);
    let bans = Bans::open(dir);
    match tool {
        Tool::AddUser { name, admin } => {
            let role = if admin { Role::Admin } else { Role::Member };
            let password = read_new_password(&name)?;
            accounts.add(&name, &password, role)?;
            println!("added {role} {name}");
        }
        Tool::RemoveUser { name } => {
            accounts.remove(&name)?;
            println!("removed {name}");
        }
        Tool::Passwd { name } => {
            if accounts.find(&name)?.is_none() {
                return Err(format!("there is no account named {name}").into());
            }
            let password = read_new_password(&name)?;
            accounts.set_password(&name, &password)?;
            println!("changed the password of {name}");
        }
        Tool::ListUsers => {
            let list = accounts.list()?;
            if list.is_empty() {
                println!("no accounts: the server is open to anyone");
            }
            for account in list.iter() {
                println!(
                    "{:<32} {:<6} created {}",
                    account.name, account.role, account.created
                );
            }
        }
        Tool::Ban { name, ip, reason } => {
            bans.add(Ban {
                timestamp: chatroom::format::file_time(&chrono::Local::now()),
                name: name.clone(),
                ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
                by: "server".into(),
                reason,
            })?;
            println!("banned {name}");
        }
        Tool::Unban { name } => {
            if !bans.remove(&name)? {
                return Err(format!("{name} is not banned").into());
            }
            println!("unbanned {name}");
        }
        Tool::RevokeTokens { name } => {
            let gone = Tokens::open(dir).revoke(&name)?;
            println!(
                "forgot {gone} token{} of {name}",
                if gone == 1 { "" } else { "s" }
            );
        }
        Tool::ListBans => {
            for ban in bans.list()? {
                println!(
                    "{:<32} {:<15} by {} at {}{}",
                    ban.name,
                    if ban.ip.is_empty() { "-" } else { &ban.ip },
                    ban.by,
                    ban.timestamp,
                    if ban.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", ban.reason)
                    }
                );
            }
        }
    }
    Ok(())
}

/// A new password: asked twice on a terminal, without echo; one line of stdin
/// when piped.
fn read_new_password(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(
            "no password on stdin; pipe one line, e.g. `echo PASSWORD | server add-user NAME`"
                .into(),
        );
    }
    Ok(password)
}

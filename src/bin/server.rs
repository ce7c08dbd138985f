//! `server`: the chat server. Parses flags, opens the data directory, binds
//! (plain TCP, and TLS with `--tls-cert`), and serves until Ctrl-C or
//! SIGTERM; SIGHUP reloads the TLS certificate and never stops it. Its
//! subcommands manage accounts and bans in the same data directory, also
//! while a server runs, and make a private certificate (`tls-init`).

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use chatroom::logging;
use chatroom::names;
use chatroom::server::accounts::{Accounts, Role};
use chatroom::server::certs::{self, Certificates};
use chatroom::server::cluster::{self, ClusterConfig};
use chatroom::server::config::Config;
use chatroom::server::limits;
use chatroom::server::moderation::{Ban, Bans};
use chatroom::server::settings;
use chatroom::server::tokens::Tokens;
use chatroom::server::transport::tls::Tls;
use chatroom::server::transport::web::{self, Probes, Web};
use chatroom::server::{Listener, Reloader, Server, Shutdown};

/// A self-hosted chat server: rooms, history, whispers; every message kept in
/// messages.csv and every connection in data.csv. With accounts (see
/// add-user) it is private: only accounts can log in.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_override_self = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Tool>,
    /// A config file (TOML): every flag has a key of the same name
    /// (max-clients = 500); a flag given here wins. SIGHUP reads it again. See
    /// contrib/chatroom.toml.
    #[arg(global = true, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of messages.csv (and its search index, messages.index),
    /// data.csv, rooms.csv, accounts.csv and bans.csv (created if missing).
    /// One server at a time.
    #[arg(long, default_value = ".", global = true)]
    data_dir: PathBuf,
    /// Address to listen on. Anything but loopback is reachable from the
    /// network; with TLS on, plain TCP then stays on loopback (see
    /// --plain-public).
    #[arg(global = true, long, default_value = limits::DEFAULT_HOST)]
    host: String,
    /// Port of plain TCP; 0 takes a free one (the real port is printed).
    #[arg(global = true, long, default_value_t = limits::DEFAULT_PORT)]
    port: u16,
    /// TLS certificate chain, PEM (certbot's fullchain.pem as it is): adds a
    /// TLS listener on --tls-port. Reloaded on SIGHUP and when the file
    /// changes. See `server tls-init` for a private one.
    #[arg(global = true, long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM (certbot's privkey.pem as it is).
    #[arg(global = true, long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Port of TLS (with --tls-cert); 0 takes a free one.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_TLS_PORT)]
    tls_port: u16,
    /// With TLS on and a --host reachable from the network, serve plain TCP
    /// there too (by default it listens on loopback only, so that passwords
    /// never cross a network in clear by accident).
    #[arg(global = true, long)]
    plain_public: bool,
    /// Connections served at once; more get "! server full".
    #[arg(global = true, long, default_value_t = limits::DEFAULT_MAX_CLIENTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: u64,
    /// Connections from one address at once; 0 means no limit.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_MAX_PER_IP)]
    max_per_ip: usize,
    /// Messages of a room replayed to whoever joins it.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_HISTORY)]
    history: usize,
    /// Room everyone lands in after naming themselves; "" means the lobby.
    #[arg(global = true, long, default_value = "general")]
    default_room: String,
    /// Longest line a client may send, in bytes.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_MAX_LINE as u64, value_parser = clap::value_parser!(u64).range(16..=16 * 1024 * 1024))]
    max_line: u64,
    /// Rooms with more members than this do not announce joins and leaves.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_ANNOUNCE_LIMIT)]
    announce_limit: usize,
    /// Seconds a new connection has to send its name (and password).
    #[arg(global = true, long, default_value_t = limits::DEFAULT_NAME_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    name_timeout: u64,
    /// Flood control: lines a second each client's lines are handled at, at
    /// most. Faster lines are read later, never refused or dropped; 0 turns it
    /// off.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_RATE, value_parser = non_negative)]
    rate: f64,
    /// Lines a client may send at once before --rate applies.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
    /// Milliseconds before a failed login is answered.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_LOGIN_DELAY.as_millis() as u64)]
    login_delay_ms: u64,
    /// Do not sync messages.csv and data.csv to the disk after each batch:
    /// faster, but a power cut (not a crash) may lose the last messages
    /// people were shown.
    #[arg(global = true, long)]
    no_fsync: bool,
    /// Rooms there may be in all; past it /create is refused.
    #[arg(global = true, long, default_value_t = limits::DEFAULT_MAX_ROOMS)]
    max_rooms: usize,
    /// Rooms one name may make with /create (admins are not limited).
    #[arg(global = true, long, default_value_t = limits::DEFAULT_MAX_ROOMS_PER_USER)]
    max_rooms_per_user: usize,
    /// Serve the web page and its WebSocket (/ws) on this port too; 0 takes
    /// a free one (printed as `listening on HOST:PORT (web)`). With TLS on,
    /// it serves HTTPS and WSS with the same certificate.
    #[arg(global = true, long)]
    web_port: Option<u16>,
    /// Another origin whose pages may open the chat's WebSocket, besides the
    /// page's own (e.g. https://chat.example.org); may be given again.
    #[arg(global = true, long = "web-origin", value_name = "ORIGIN")]
    web_origins: Vec<String>,
    /// Seconds of silence after which a WebSocket is pinged; one that
    /// answers nothing by the next ping is dropped as gone.
    #[arg(global = true, long, default_value_t = web::PING_EVERY.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    web_ping_secs: u64,
    /// Serve /metrics (Prometheus) and /healthz on this port too (they are
    /// also on the web port); 0 takes a free one (printed as
    /// `listening on HOST:PORT (metrics)`).
    #[arg(global = true, long)]
    metrics_port: Option<u16>,
    /// Answer /metrics and /healthz from any address (by default only from
    /// this machine: they tell who is online and how busy the server is).
    #[arg(global = true, long)]
    metrics_public: bool,
    /// What is logged: error, warn, info, debug or trace (RUST_LOG, when
    /// set, decides instead).
    #[arg(global = true, long, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    /// How log lines look: text, or json (one object a line, for log
    /// shippers).
    #[arg(global = true, long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Join a cluster of servers that share one chat through this Redis
    /// (redis://HOST:PORT or redis+unix:///PATH): people on any node see the
    /// same rooms, names, history and ids. Each node keeps its own
    /// --data-dir. See docs/cluster.md.
    #[arg(global = true, long, value_name = "URL")]
    cluster: Option<String>,
    /// With --cluster: seconds a node's lease lasts without renewal (renewed every second):
    /// a node unheard of for longer is fenced, then reaped by the others.
    #[arg(global = true, long, default_value_t = cluster::DEFAULT_LEASE.as_secs(), value_parser = clap::value_parser!(u64).range(2..=3600))]
    cluster_lease: u64,
    /// With --cluster: messages the cluster's log keeps in Redis, with the events between
    /// them (0: all); a node away for longer than it takes the cluster to write these must
    /// copy messages.csv from another node.
    #[arg(global = true, long, default_value_t = cluster::DEFAULT_KEEP)]
    cluster_keep: u64,
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
    /// Makes a private certificate authority (once; later runs reuse it) and
    /// a server certificate for the given names, in DATA_DIR/tls/; prints the
    /// fingerprint and the commands that start the server and connect.
    TlsInit {
        /// A host name (or address) clients connect to; repeat for more.
        /// localhost also covers 127.0.0.1 and ::1.
        #[arg(long = "name", value_name = "HOST", required = true)]
        names: Vec<String>,
    },
    /// Checks a config file (`server check-config --config FILE`): every
    /// mistake with its line; exit 0 when there is none.
    CheckConfig,
    /// Shows the settings in force: the config file's (with --config) and the
    /// flags given, over the defaults, as a config file.
    PrintConfig,
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("expected a number, 0 or more".into()),
    }
}

fn main() -> ExitCode {
    let mut cli: Vec<OsString> = std::env::args_os().collect();
    let config_path = settings::take_config(&mut cli);
    let file = match &config_path {
        Some(path) => match read_config(path) {
            Ok(file) => file,
            Err(problems) => {
                for problem in problems {
                    eprintln!("error: {problem}");
                }
                return ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    let matches = Args::command().get_matches_from(settings::merge(&Args::command(), &file, &cli));
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match &args.command {
        Some(Tool::CheckConfig) => return check_config(config_path.as_deref(), &file),
        Some(Tool::PrintConfig) => {
            print!(
                "{}",
                settings::effective(&Args::command(), &matches, &file, &cli)
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if args.command.is_none() {
        tune_allocator();
    }
    let format = if args.log_format == "json" {
        logging::Format::Json
    } else {
        logging::Format::Text
    };
    logging::init_with(format, Some(level_of(&args.log_level)));
    if let Some(tool) = args.command {
        return match run_tool(tool, &args.data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match config_of(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let addresses = addresses_of(&args);
    serve(
        config,
        &addresses,
        Reload {
            path: config_path,
            cli,
        },
        args.log_level.clone(),
        args.log_format.clone(),
    )
}

/// Reads a config file into flag arguments, checked: every mistake with its
/// line, or the arguments.
fn read_config(path: &std::ffi::OsStr) -> Result<Vec<settings::FileArg>, Vec<String>> {
    let shown = Path::new(path).display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!(
            "cannot read the config file {shown}: {e} (check the path given to --config)"
        )]
    })?;
    let file = settings::read(&text).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{shown}: {p}"))
            .collect::<Vec<_>>()
    })?;
    let problems = settings::check(&Args::command(), &file);
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(problems.iter().map(|p| format!("{shown}: {p}")).collect())
    }
}

/// `server check-config --config FILE`.
fn check_config(path: Option<&std::ffi::OsStr>, file: &[settings::FileArg]) -> ExitCode {
    let Some(path) = path else {
        eprintln!("error: check-config needs the file: server check-config --config FILE");
        return ExitCode::from(2);
    };
    // Reading it already checked it; what is left is what no single flag says.
    println!(
        "{}: no mistakes ({} setting{})",
        Path::new(path).display(),
        file.len(),
        if file.len() == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}

/// The log level a flag names.
fn level_of(level: &str) -> log::LevelFilter {
    level.parse().unwrap_or(log::LevelFilter::Info)
}

/// The server's settings from the flags.
fn config_of(args: &Args) -> Result<Config, String> {
    let default_room = match args.default_room.as_str() {
        "" => None,
        typed => match names::room_name(typed) {
            Ok(room) => Some(room.to_string()),
            Err(e) => return Err(format!("--default-room {typed:?}: {e}")),
        },
    };
    Ok(Config {
        data_dir: args.data_dir.clone(),
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
        fsync: !args.no_fsync,
        max_rooms: args.max_rooms,
        max_rooms_per_user: args.max_rooms_per_user,
        cluster: args.cluster.clone().map(|url| ClusterConfig {
            url,
            lease: Duration::from_secs(args.cluster_lease),
            keep: args.cluster_keep,
        }),
    })
}

/// Where to listen, from the flags.
fn addresses_of(args: &Args) -> Addresses {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    Addresses {
        host: args.host.clone(),
        port: args.port,
        tls,
        tls_port: args.tls_port,
        plain_public: args.plain_public,
        web: args.web_port.map(|port| WebPort {
            port,
            origins: args.web_origins.clone(),
            ping_every: Duration::from_secs(args.web_ping_secs),
        }),
        metrics_port: args.metrics_port,
        metrics_public: args.metrics_public,
    }
}

/// What a reload reads again: the config file, and the command line, whose
/// flags still win.
struct Reload {
    path: Option<OsString>,
    cli: Vec<OsString>,
}

/// The certificate and key files of `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// Where to listen, as the flags say.
#[derive(Debug, Clone, PartialEq)]
struct Addresses {
    host: String,
    port: u16,
    tls: Option<TlsFiles>,
    tls_port: u16,
    plain_public: bool,
    web: Option<WebPort>,
    metrics_port: Option<u16>,
    metrics_public: bool,
}

/// The web port, as the flags say.
#[derive(Debug, Clone, PartialEq)]
struct WebPort {
    port: u16,
    origins: Vec<String>,
    ping_every: Duration,
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
    // The binary's own path rather than /proc/self/exe, so that the process
    // keeps its name (`pkill -HUP -x server` in a certbot hook finds it).
    let exe = std::env::current_exe()
        .ok()
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let error = std::process::Command::new(exe)
        .arg0(argv0)
        .args(args)
        .env(KEY, tuned)
        .exec();
    log::debug!("running with glibc's default caches: {error}");
}

fn bind(host: &str, port: u16, what: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind((host, port)).map_err(|e| {
        eprintln!(
            "error: cannot listen{what} on {host}:{port}: {e} (is another server running there? choose another --port, --tls-port or --host)"
        );
        ExitCode::FAILURE
    })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ExitCode> {
    listener.local_addr().map_err(|e| {
        eprintln!("error: cannot read the listening address: {e}");
        ExitCode::FAILURE
    })
}

/// The listeners, bound: plain TCP, and TLS if asked for. With TLS on and a
/// host reachable from the network, plain TCP stays on loopback unless
/// `--plain-public`.
fn listen(addresses: &Addresses) -> Result<Bound, ExitCode> {
    let (mut bound, tls) = listen_chat(addresses)?;
    if let Some(web) = &addresses.web {
        let socket = bind(&addresses.host, web.port, " (web)")?;
        let local = local_addr(&socket)?;
        if !local.ip().is_loopback() && tls.is_none() {
            eprintln!(
                "warning: the web page on {local} is reachable from the network and served without TLS: messages and passwords cross it in clear (add --tls-cert and --tls-key to serve HTTPS)"
            );
        }
        let web = Arc::new(Web {
            origins: std::sync::RwLock::new(web.origins.clone()),
            ping_every: web.ping_every,
            tls: tls.clone(),
            page: true,
            probes: Some(Probes {
                public: addresses.metrics_public,
            }),
        });
        bound.web = Some(Arc::clone(&web));
        bound.listeners.push(Listener {
            socket,
            accept: web,
        });
        bound.ready.push(format!("listening on {local} (web)"));
    }
    if let Some(port) = addresses.metrics_port {
        let socket = bind(&addresses.host, port, " (metrics)")?;
        let local = local_addr(&socket)?;
        bound.listeners.push(Listener {
            socket,
            accept: Arc::new(Web {
                origins: std::sync::RwLock::new(Vec::new()),
                ping_every: web::PING_EVERY,
                tls,
                page: false,
                probes: Some(Probes {
                    public: addresses.metrics_public,
                }),
            }),
        });
        bound.ready.push(format!("listening on {local} (metrics)"));
    }
    Ok(bound)
}

/// The chat's own listeners: plain TCP, and TLS if asked for (returned too,
/// for the web port to serve HTTPS with the same certificate).
fn listen_chat(addresses: &Addresses) -> Result<(Bound, Option<Arc<Tls>>), ExitCode> {
    let Some(files) = &addresses.tls else {
        let plain = bind(&addresses.host, addresses.port, "")?;
        let local = local_addr(&plain)?;
        if !local.ip().is_loopback() {
            eprintln!(
                "warning: listening on {local}, which is reachable from the network: anyone who can reach it can connect, and messages and passwords cross it in clear (add accounts with `server add-user` to make it private; add --tls-cert and --tls-key to encrypt)"
            );
        }
        return Ok((
            Bound {
                listeners: vec![Listener::plain(plain)],
                certificates: None,
                ready: vec![format!("listening on {local}")],
                web: None,
            },
            None,
        ));
    };
    let certificates = Certificates::open(&files.cert, &files.key).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let tls = Tls::new(Arc::clone(&certificates)).map_err(|e| {
        eprintln!("error: cannot set up TLS: {e}");
        ExitCode::FAILURE
    })?;
    let secure = bind(&addresses.host, addresses.tls_port, " (tls)")?;
    let secure_local = local_addr(&secure)?;
    let public = !secure_local.ip().is_loopback();
    let plain = if public && !addresses.plain_public {
        let loopback = if secure_local.is_ipv6() {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let plain = bind(&loopback.to_string(), addresses.port, "")?;
        eprintln!(
            "warning: TLS is on and {} is reachable from the network, so plain TCP listens on {} only, for this machine: passwords must not cross a network in clear by accident (--plain-public serves plain TCP on {} too)",
            addresses.host,
            local_addr(&plain)?,
            addresses.host
        );
        plain
    } else {
        let plain = bind(&addresses.host, addresses.port, "")?;
        if public {
            eprintln!(
                "warning: --plain-public: plain TCP on {} is reachable from the network and carries messages and passwords in clear; clients should use TLS on port {}",
                local_addr(&plain)?,
                secure_local.port()
            );
        }
        plain
    };
    if public {
        eprintln!(
            "warning: listening on {secure_local} (tls), which is reachable from the network: anyone who can reach it can connect (add accounts with `server add-user` to make it private)"
        );
    }
    log::info!(
        "TLS certificate {} (SHA-256 {}); reloaded on SIGHUP and when the files change",
        files.cert.display(),
        certificates.fingerprint()
    );
    if let Err(e) = certificates.watch(certs::WATCH_EVERY) {
        log::warn!("cannot watch the certificate files ({e}); reload with SIGHUP");
    }
    let ready = vec![
        format!("listening on {}", local_addr(&plain)?),
        format!("listening on {secure_local} (tls)"),
    ];
    let tls = Arc::new(tls);
    Ok((
        Bound {
            listeners: vec![
                Listener::plain(plain),
                Listener::tls(secure, Arc::clone(&tls)),
            ],
            certificates: Some(certificates),
            ready,
            web: None,
        },
        Some(tls),
    ))
}

/// The listeners, the certificate they serve, and the ready lines to print
/// once the server is ready.
struct Bound {
    listeners: Vec<Listener>,
    certificates: Option<Arc<Certificates>>,
    ready: Vec<String>,
    /// The web port's kind of connection, whose origins a reload changes.
    web: Option<Arc<Web>>,
}

/// What SIGHUP reloads: the config file (and the flags, which still win)
/// into the running server, the TLS certificate, the web origins and the
/// log level. A config with mistakes changes nothing and says why.
struct Reloading {
    reload: Reload,
    reloader: Reloader,
    certificates: Option<Arc<Certificates>>,
    web: Option<Arc<Web>>,
    addresses: Addresses,
    log_level: String,
    log_format: String,
}

impl Reloading {
    fn run(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match &self.certificates {
            Some(certificates) => certificates.reload_and_log("SIGHUP"),
            None if self.reload.path.is_none() => {
                log::info!("SIGHUP: no config file and no TLS certificate to reload; still serving")
            }
            None => {}
        }
        if let Some(path) = self.reload.path.clone() {
            self.config(&path);
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    fn config(&mut self, path: &std::ffi::OsStr) {
        let shown = Path::new(path).display().to_string();
        let file = match read_config(path) {
            Ok(file) => file,
            Err(problems) => {
                log::error!(
                    "SIGHUP: {shown} has mistakes, so nothing was changed: {}",
                    problems.join("; ")
                );
                return;
            }
        };
        let args = Args::command()
            .try_get_matches_from(settings::merge(&Args::command(), &file, &self.reload.cli))
            .and_then(|m| Args::from_arg_matches(&m));
        let args = match args {
            Ok(args) => args,
            Err(e) => {
                let text = e.to_string();
                log::error!(
                    "SIGHUP: {shown} cannot be used, so nothing was changed: {}",
                    text.lines().next().unwrap_or("a bad setting")
                );
                return;
            }
        };
        let config = match config_of(&args) {
            Ok(config) => config,
            Err(e) => {
                log::error!("SIGHUP: {shown}: {e}; nothing was changed");
                return;
            }
        };
        let reloaded = self.reloader.apply(config);
        let mut changed = reloaded.changed;
        let mut restart = reloaded.need_restart;
        let addresses = addresses_of(&args);
        let before = &self.addresses;
        let mut differs = |name: &str, old: String, new: String| {
            if old != new {
                restart.push(format!("{name} {old} → {new}"));
            }
        };
        differs("host", before.host.clone(), addresses.host.clone());
        differs("port", before.port.to_string(), addresses.port.to_string());
        differs(
            "tls-port",
            before.tls_port.to_string(),
            addresses.tls_port.to_string(),
        );
        let files = |a: &Addresses| {
            a.tls.as_ref().map_or("none".to_string(), |t| {
                format!("{} {}", t.cert.display(), t.key.display())
            })
        };
        differs("tls-cert/tls-key", files(before), files(&addresses));
        differs(
            "plain-public",
            before.plain_public.to_string(),
            addresses.plain_public.to_string(),
        );
        let web_port = |a: &Addresses| {
            a.web
                .as_ref()
                .map_or("off".to_string(), |w| w.port.to_string())
        };
        differs("web-port", web_port(before), web_port(&addresses));
        let ping = |a: &Addresses| {
            a.web
                .as_ref()
                .map_or(String::new(), |w| w.ping_every.as_secs().to_string())
        };
        differs("web-ping-secs", ping(before), ping(&addresses));
        let metrics_port =
            |a: &Addresses| a.metrics_port.map_or("off".to_string(), |p| p.to_string());
        differs(
            "metrics-port",
            metrics_port(before),
            metrics_port(&addresses),
        );
        differs(
            "metrics-public",
            before.metrics_public.to_string(),
            addresses.metrics_public.to_string(),
        );
        differs(
            "log-format",
            self.log_format.clone(),
            args.log_format.clone(),
        );
        let origins = addresses
            .web
            .as_ref()
            .map(|w| w.origins.clone())
            .unwrap_or_default();
        let old_origins = self
            .addresses
            .web
            .as_ref()
            .map(|w| w.origins.clone())
            .unwrap_or_default();
        if origins != old_origins {
            if let Some(web) = &self.web {
                *web.origins.write().unwrap_or_else(|p| p.into_inner()) = origins.clone();
            }
            changed.push(format!("web-origin {old_origins:?} → {origins:?}"));
        }
        if args.log_level != self.log_level {
            logging::set_level(level_of(&args.log_level));
            changed.push(format!(
                "log-level {:?} → {:?}",
                self.log_level, args.log_level
            ));
            self.log_level = args.log_level.clone();
        }
        if let Some(web) = &mut self.addresses.web {
            web.origins = origins;
        }
        if changed.is_empty() {
            log::info!("SIGHUP: {shown} reloaded; no setting changed");
        } else {
            log::info!("SIGHUP: {shown} reloaded: {}", changed.join(", "));
        }
        if !restart.is_empty() {
            log::warn!(
                "SIGHUP: these changed in {shown} but need a restart to take effect: {}",
                restart.join(", ")
            );
        }
    }
}

/// Handles the signals on a thread of its own: SIGINT and SIGTERM stop the
/// server gracefully (a second one exits at once, status 130); SIGHUP
/// reloads (see [`Reloading`]) and never stops the server, so
/// `nohup server &` outlives its terminal.
fn handle_signals(shutdown: Shutdown, mut reloading: Reloading) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        // Reloading parses the whole command line again: clap runs deep.
        .stack_size(4 << 20)
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reloading.run();
                    continue;
                }
                if shutdown.is_triggered() {
                    eprintln!("interrupted again: exiting without waiting");
                    std::process::exit(130);
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                shutdown.trigger();
            }
        })?;
    Ok(())
}

/// Tells systemd (`Type=notify`) that the server is alive, as long as the
/// accept loop goes round, at half the watchdog's interval.
fn keep_watchdog_fed() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = interval / 2;
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                if chatroom::server::metrics::metrics().beat_age() < interval {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}");
    }
}

fn serve(
    config: Config,
    addresses: &Addresses,
    reload: Reload,
    log_level: String,
    log_format: String,
) -> ExitCode {
    // Bind first: a port in use is the first thing said.
    let bound = match listen(addresses) {
        Ok(bound) => bound,
        Err(code) => return code,
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
    let shutdown = Shutdown::new();
    let reloading = Reloading {
        reload,
        reloader: server.reloader(),
        certificates: bound.certificates,
        web: bound.web,
        addresses: addresses.clone(),
        log_level,
        log_format,
    };
    // Signals before the ready lines: whoever reads them may signal at once.
    if let Err(e) = handle_signals(shutdown.clone(), reloading) {
        eprintln!("error: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    for line in &bound.ready {
        println!("{line}");
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    keep_watchdog_fed();
    match server.run(bound.listeners, shutdown) {
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
    if let Tool::TlsInit { names } = &tool {
        return tls_init(dir, names);
    }
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
        Tool::TlsInit { .. } => unreachable!("handled above"),
        Tool::CheckConfig | Tool::PrintConfig => {}
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

/// `server tls-init`: makes the files and says how to use them.
fn tls_init(dir: &Path, names: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let made = certs::init(dir, names)?;
    let absolute = |path: &Path| {
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string()
    };
    let (ca, cert, key) = (
        absolute(&made.ca),
        absolute(&made.cert),
        absolute(&made.key),
    );
    if made.new_ca {
        println!("made a certificate authority: {ca}");
        println!("  (its key, ca-key.pem beside it, signs server certificates: keep it private)");
    } else {
        println!("signed with the existing certificate authority {ca}:");
        println!("  clients that trust it trust the new certificate too");
    }
    println!("made a server certificate for {}: {cert}", names.join(", "));
    println!("  its key (readable by you only): {key}");
    println!("SHA-256 fingerprint: {}", made.fingerprint);
    println!();
    println!(
        "start the server (a running one picks the new files up by itself, or at once on SIGHUP):"
    );
    println!(
        "  server --data-dir {} --tls-cert {cert} --tls-key {key}",
        absolute(dir)
    );
    println!("connect (copy {ca} to the people who connect):");
    println!("  client --tls --host {} --tls-ca {ca}", names[0]);
    println!("or trust this one certificate only:");
    println!(
        "  client --tls --host {} --tls-fingerprint {}",
        names[0], made.fingerprint
    );
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

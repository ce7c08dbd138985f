//! The server's settings: what the flags say, with the contract's defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::server::limits;

/// How one server runs. Built by the `server` binary from its flags, or by tests
/// and benchmarks directly; [`Config::default`] is the contract's default server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of `messages.csv`, `data.csv` and `rooms.csv`.
    pub data_dir: PathBuf,
    /// Connections served at once.
    pub max_clients: usize,
    /// Messages of a room replayed on joining it.
    pub history: usize,
    /// Room a user lands in after naming themselves; `None` is the lobby.
    pub default_room: Option<String>,
    /// Longest accepted line in bytes, without its line ending.
    pub max_line: usize,
    /// Rooms with more members than this do not announce joins and leaves.
    pub announce_limit: usize,
    /// Time a new connection has to send its name.
    pub name_timeout: Duration,
    /// Lines a second per client; 0 turns flood control off.
    pub rate: f64,
    /// Lines a client may send at once before `rate` applies.
    pub burst: u32,
    /// Connections from one address at once; 0 means no limit.
    pub max_per_ip: usize,
    /// Pause before a failed login is answered.
    pub login_delay: Duration,
    /// Sync each store batch to the disk before anyone is shown it.
    pub fsync: bool,
    /// Rooms there may be in all.
    pub max_rooms: usize,
    /// Rooms one name may make (admins are not limited).
    pub max_rooms_per_user: usize,
    /// Join a cluster of servers on Redis (`--cluster`); none: serve alone.
    pub cluster: Option<crate::server::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("."),
            max_clients: limits::DEFAULT_MAX_CLIENTS,
            history: limits::DEFAULT_HISTORY,
            default_room: Some("general".to_string()),
            max_line: limits::DEFAULT_MAX_LINE,
            announce_limit: limits::DEFAULT_ANNOUNCE_LIMIT,
            name_timeout: limits::DEFAULT_NAME_TIMEOUT,
            rate: limits::DEFAULT_RATE,
            burst: limits::DEFAULT_BURST,
            max_per_ip: limits::DEFAULT_MAX_PER_IP,
            login_delay: limits::DEFAULT_LOGIN_DELAY,
            fsync: true,
            max_rooms: limits::DEFAULT_MAX_ROOMS,
            max_rooms_per_user: limits::DEFAULT_MAX_ROOMS_PER_USER,
            cluster: None,
        }
    }
}

impl Config {
    /// Bytes each client's outbox may hold before the client counts as too slow.
    pub fn outbox_bytes(&self) -> usize {
        limits::outbox_bytes(self.history, self.max_line)
    }
}

/// The settings in force, which a reload (SIGHUP) may change while the
/// server runs. Readers take a snapshot (`get`): cheap, and consistent for
/// as long as they hold it.
#[derive(Debug)]
pub struct Settings {
    current: std::sync::RwLock<std::sync::Arc<Config>>,
}

impl Settings {
    /// Settings starting as `config`.
    pub fn new(config: Config) -> Settings {
        Settings {
            current: std::sync::RwLock::new(std::sync::Arc::new(config)),
        }
    }

    /// The settings in force now.
    pub fn get(&self) -> std::sync::Arc<Config> {
        std::sync::Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts new settings in force.
    pub fn set(&self, config: Config) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(config);
    }
}

impl Config {
    /// What differs between two settings that a running server can take on
    /// at once (`live`), and what needs a restart (`restart`), as
    /// `name old → new` words for the log.
    pub fn changes(&self, new: &Config) -> (Vec<String>, Vec<String>) {
        let mut live = Vec::new();
        let mut restart = Vec::new();
        macro_rules! compare {
            ($list:ident, $field:ident, $name:expr) => {
                if self.$field != new.$field {
                    $list.push(format!("{} {:?} → {:?}", $name, self.$field, new.$field));
                }
            };
        }
        compare!(restart, data_dir, "data-dir");
        compare!(restart, max_line, "max-line");
        compare!(restart, fsync, "fsync");
        let cluster = |c: &Config| {
            c.cluster.as_ref().map_or("none".to_string(), |c| {
                format!(
                    "{} lease {}s keep {}",
                    crate::server::cluster::shown_url(&c.url),
                    c.lease.as_secs(),
                    c.keep
                )
            })
        };
        if cluster(self) != cluster(new) {
            restart.push(format!("cluster {} → {}", cluster(self), cluster(new)));
        }
        compare!(live, max_clients, "max-clients");
        compare!(live, history, "history");
        compare!(live, default_room, "default-room");
        compare!(live, announce_limit, "announce-limit");
        compare!(live, name_timeout, "name-timeout");
        compare!(live, rate, "rate");
        compare!(live, burst, "burst");
        compare!(live, max_per_ip, "max-per-ip");
        compare!(live, login_delay, "login-delay");
        compare!(live, max_rooms, "max-rooms");
        compare!(live, max_rooms_per_user, "max-rooms-per-user");
        (live, restart)
    }
}

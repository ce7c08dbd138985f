//! Every bound the server keeps, named with the reason it exists.
//!
//! Flags may change some of these per run (see [`crate::server::config::Config`]); the
//! constants here are the defaults and the hard floors and ceilings.

use std::time::Duration;

pub use crate::names::{MAX_NAME_CHARS, MAX_ROOM_CHARS};

/// Default address: loopback, so a fresh server is reachable only from this machine.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default port of the server and the client.
pub const DEFAULT_PORT: u16 = 6622;
/// Default TLS port of the server and of `client --tls`: the IRC custom.
pub const DEFAULT_TLS_PORT: u16 = 6697;
/// Longest line a client may send, in bytes without its `\n`: long enough for a
/// paragraph, short enough that a thousand readers cost little memory.
pub const DEFAULT_MAX_LINE: usize = 4096;
/// Messages of a room replayed to a newcomer.
pub const DEFAULT_HISTORY: usize = 50;
/// Connections served at once; more are turned away with `! server full`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Above this many members a room stops announcing arrivals and departures one by
/// one, so that a room of thousands does not drown in its own joins.
pub const DEFAULT_ANNOUNCE_LIMIT: usize = 100;
/// Time a new connection has to send its name before it is closed, so that idle
/// sockets cannot hold slots.
pub const DEFAULT_NAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines a second a client's lines are handled at, at most (fakelag: faster
/// lines are read later, never refused); 0 turns it off.
pub const DEFAULT_RATE: f64 = 5.0;
/// Lines a client may send at once before the rate applies.
pub const DEFAULT_BURST: u32 = 10;
/// Connections from one address at once; 0 means no limit.
pub const DEFAULT_MAX_PER_IP: usize = 16;
/// Pause before a failed login is answered: slows down guessing, on the
/// guesser's own thread only.
pub const DEFAULT_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// Failed logins one connection may make before it is closed.
pub const LOGIN_ATTEMPTS: usize = 3;
/// Failed logins from one address within [`LOGIN_FAILURE_WINDOW`] after which
/// that address is refused until the window has passed.
pub const LOGIN_FAILURES_PER_IP: usize = 10;
/// See [`LOGIN_FAILURES_PER_IP`].
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Bytes a chat line carries besides its text, in its heavier rendering
/// (JSON): the object's field names, id, timestamp, room, and the sender's
/// name, whose quotes and backslashes JSON escapes to two bytes each.
pub const LINE_OVERHEAD: usize = 512;
/// How much heavier a text can become in JSON: a quote or a backslash is
/// escaped to two bytes (control characters never reach a line).
pub const JSON_GROWTH: usize = 2;
/// Slack in every outbox beyond one full history replay: room for live traffic
/// while a client catches up.
pub const OUTBOX_SLACK: usize = 256 * 1024;
/// After `/quit`, how long the server keeps reading (and discarding) what the
/// client still sends, so that closing does not reset the goodbye away.
pub const LINGER: Duration = Duration::from_secs(2);
/// Time a closing connection (after `/quit`, a kick, shutdown) has to take
/// what was still queued for it, its goodbye last; past it, it is cut off.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Items in one page of `/list` or `/who`: a reply stays a few kilobytes
/// however many rooms or people there are, so it always fits in a queue.
pub const LIST_PAGE: usize = 100;
/// Rooms there may be in all, by default (`--max-rooms`).
pub const DEFAULT_MAX_ROOMS: usize = 1000;
/// Rooms one name may create, by default (`--max-rooms-per-user`); admins
/// are not limited.
pub const DEFAULT_MAX_ROOMS_PER_USER: usize = 10;
/// Silence on a connection after which TCP keepalive starts probing the peer.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between two keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the peer counts as gone: with the two above,
/// a vanished client is noticed within two minutes.
pub const KEEPALIVE_PROBES: u32 = 6;
/// Stack of a client's reader thread: parsing and formatting need little.
pub const READER_STACK: usize = 128 * 1024;
/// Stack of a flusher thread: it only moves bytes.
pub const FLUSHER_STACK: usize = 256 * 1024;
/// Threads that write every client's queued lines to the sockets.
pub const FLUSHERS: usize = 2;
/// Lines a flusher gathers into one `sendmsg` call (at most `UIO_MAXIOV`).
pub const WRITE_BATCH: usize = 256;
/// Messages the store writes between two flushes at most.
pub const STORE_BATCH: usize = 1024;
/// Requests waiting for the store at most; past that, the client threads that
/// send more wait for room (the store never sends to itself, so it always
/// makes room).
pub const STORE_QUEUE: usize = 64 * 1024;
/// Text bytes the store writes between two flushes at most: one batch is
/// delivered at once, so it must fit in a reader's outbox with room to spare.
pub const STORE_BATCH_BYTES: usize = 128 * 1024;
/// How long the accept loop waits between checks of the shutdown flag.
pub const ACCEPT_POLL: Duration = Duration::from_millis(200);
/// First pause of the accept loop when accepting fails (out of descriptors).
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause of the accept loop when accepting keeps failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bytes one reply of `/history` or `/search` may queue at most: less than
/// [`OUTBOX_SLACK`], so that a page of long lines never makes its asker too
/// slow a reader (the oldest lines of a page give way; `/history` again
/// brings them).
pub const REPLY_BYTES: usize = 192 * 1024;
/// Messages `/search` shows at most: the newest.
pub const SEARCH_RESULTS: usize = 50;
/// How long a shutdown waits for clients to be told and files to be flushed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bytes an outbox may hold: a full history replay of maximum-length lines in
/// the heavier of the two renderings (JSON, where every character of the text
/// may be escaped), plus slack for live traffic.
pub fn outbox_bytes(history: usize, max_line: usize) -> usize {
    history
        .saturating_mul(
            max_line
                .saturating_mul(JSON_GROWTH)
                .saturating_add(LINE_OVERHEAD),
        )
        .saturating_add(OUTBOX_SLACK)
}

/// Raises the soft limit on open files to the hard limit, since every client
/// holds one descriptor. Returns the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) if current < maximum => {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(maximum),
                    maximum: Some(maximum),
                },
            )?;
            Ok(maximum)
        }
        (None, _) | (Some(_), None) => {
            // Unlimited already, or a soft limit with no ceiling above it.
            Ok(limit.current.unwrap_or(u64::MAX))
        }
        (Some(current), Some(_)) => Ok(current),
    }
}

/// What glibc's allocator is told when the server starts: no per-thread
/// caches. Each thread's cache keeps the blocks it freed (up to seven of each
/// size); a client thread frees a few kilobytes while it logs in and then
/// idles for hours, so with ten thousand clients the caches would hold a
/// quarter of the server's memory. The central arenas serve the few busy
/// threads just as well.
pub const ALLOCATOR_TUNABLES: &str = "glibc.malloc.tcache_count=0";

//! Keeping a server civil: bans (kept in `bans.csv`), mutes, flood control and
//! the tally of failed logins per address.
//!
//! Everything that depends on time takes the current [`Instant`] as an
//! argument, so tests drive the clock instead of sleeping.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::names;
use crate::server::table::{Table, TableError};

/// File name of the ban table in the data directory.
pub const BANS_FILE: &str = "bans.csv";
/// Its columns.
pub const BAN_COLUMNS: &[&str] = &["timestamp", "name", "ip", "by", "reason"];

/// One row of `bans.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// When (RFC 3339).
    pub timestamp: String,
    /// The banned name.
    pub name: String,
    /// The address the name was using when banned; may be empty.
    pub ip: String,
    /// Who banned it.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// The bans of one data directory; survives restarts.
pub struct Bans {
    table: Table<Ban>,
}

impl Bans {
    /// The bans kept in `dir`.
    pub fn open(dir: &Path) -> Bans {
        Bans {
            table: Table::new(dir.join(BANS_FILE), BAN_COLUMNS),
        }
    }

    /// The ban on `name`, if any.
    pub fn of_name(&self, name: &str) -> Result<Option<Ban>, TableError> {
        let key = names::fold(name);
        Ok(self
            .table
            .rows()?
            .iter()
            .find(|b| names::fold(&b.name) == key)
            .cloned())
    }

    /// The ban on `ip`, if any.
    pub fn of_ip(&self, ip: IpAddr) -> Result<Option<Ban>, TableError> {
        let ip = ip.to_string();
        Ok(self.table.rows()?.iter().find(|b| b.ip == ip).cloned())
    }

    /// Bans a name (and the address it used); replaces an earlier ban of it.
    pub fn add(&self, ban: Ban) -> Result<(), TableError> {
        self.table.update(|rows| {
            rows.retain(|b| names::fold(&b.name) != names::fold(&ban.name));
            rows.push(ban);
            Ok::<_, TableError>(())
        })
    }

    /// Lifts the ban on `name`; false if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, TableError> {
        self.table.update(|rows| {
            let before = rows.len();
            rows.retain(|b| names::fold(&b.name) != names::fold(name));
            Ok::<_, TableError>(rows.len() != before)
        })
    }

    /// Every ban.
    pub fn list(&self) -> Result<Vec<Ban>, TableError> {
        Ok(self.table.rows()?.to_vec())
    }
}

/// Who is muted, until when (`None`: until unmuted). Kept in memory, by name,
/// so that reconnecting does not lift a mute.
#[derive(Default)]
pub struct Mutes {
    until: Mutex<HashMap<String, Option<Instant>>>,
}

impl Mutes {
    /// Mutes `name` until `until` (forever with `None`).
    pub fn mute(&self, name: &str, until: Option<Instant>) {
        self.lock().insert(names::fold(name), until);
    }

    /// Lifts a mute; false if there was none.
    pub fn unmute(&self, name: &str) -> bool {
        self.lock().remove(&names::fold(name)).is_some()
    }

    /// True if `name` is muted at `now`.
    pub fn is_muted(&self, name: &str, now: Instant) -> bool {
        let mut mutes = self.lock();
        let key = names::fold(name);
        match mutes.get(&key) {
            Some(None) => true,
            Some(Some(until)) if *until > now => true,
            Some(Some(_)) => {
                mutes.remove(&key);
                false
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Instant>>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Flood control per client, as "fakelag": a token bucket of `rate` lines a
/// second and bursts of `burst` lines, where a line over the rate is never
/// refused, only handled later.
///
/// Promises:
/// 1. Within the rate (after a full burst) every line waits zero.
/// 2. Over it, each line waits until its token would have grown, so lines
///    are handled at most `rate` a second, in the order they came.
/// 3. It never says to drop a line or a client: speed alone is no offence.
/// 4. A `rate` of 0 turns it off.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    /// May fall below zero: the debt a waiting line pays off by waiting.
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> RateLimit {
        let burst = burst.max(1.0);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes on a new rate and burst (a reload), keeping what was used.
    pub fn retune(&mut self, rate: f64, burst: f64) {
        let burst = burst.max(1.0);
        if rate != self.rate || burst != self.burst {
            self.rate = rate;
            self.burst = burst;
            self.tokens = self.tokens.min(burst);
        }
    }

    /// Takes the token of one line that arrived at `now`, and says how long
    /// its reader waits before handling it (zero within the limit).
    pub fn wait(&mut self, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate)
    }

    /// True once the bucket has grown full again at `now`: the client has
    /// been calm for a whole burst, so a new slowing is news worth telling.
    pub fn is_rested(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }
}

/// Failed logins per address: an address with `limit` failures within
/// `window` is refused until the window has passed since its last failure.
pub struct LoginFailures {
    limit: usize,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Addresses remembered at most, so the tally itself stays bounded.
const MAX_TRACKED_IPS: usize = 100_000;

impl LoginFailures {
    /// Refuse an address after `limit` failures within `window`.
    pub fn new(limit: usize, window: Duration) -> LoginFailures {
        LoginFailures {
            limit,
            window,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.by_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure of `ip` at `now`.
    pub fn record(&self, ip: IpAddr, now: Instant) {
        let mut by_ip = self.lock();
        if by_ip.len() >= MAX_TRACKED_IPS && !by_ip.contains_key(&ip) {
            let window = self.window;
            by_ip.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if by_ip.len() >= MAX_TRACKED_IPS {
                return;
            }
        }
        let times = by_ip.entry(ip).or_default();
        times.push_back(now);
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    /// How long `ip` is still refused at `now`, if it is.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut by_ip = self.lock();
        let times = by_ip.get_mut(&ip)?;
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.is_empty() {
            by_ip.remove(&ip);
            return None;
        }
        if times.len() < self.limit {
            return None;
        }
        let last = *times.back()?;
        Some(self.window.saturating_sub(now.duration_since(last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_of_ten_passes_then_each_line_waits_its_turn() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(5.0, 10.0, t0);
        for _ in 0..10 {
            assert_eq!(limit.wait(t0), Duration::ZERO);
        }
        // The eleventh line of an instant paste is handled a fifth of a
        // second later; the twelfth, had it been read at once, two fifths.
        let fifth = |wait: Duration| (wait.as_secs_f64() - 0.2).abs() < 1e-6;
        assert!(fifth(limit.wait(t0)));
        let t1 = t0 + SEC / 5;
        assert!(fifth(limit.wait(t1)));
        // Nothing is ever refused: a thousand more lines each wait a fifth.
        let mut now = t1 + SEC / 5;
        for _ in 0..1000 {
            let wait = limit.wait(now);
            assert!(wait <= SEC / 5 + Duration::from_micros(1), "{wait:?}");
            now += wait;
        }
    }

    #[test]
    fn five_lines_a_second_never_wait() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(5.0, 10.0, t0);
        for i in 0..1000 {
            assert_eq!(limit.wait(t0 + SEC / 5 * i), Duration::ZERO, "line {i}");
        }
    }

    #[test]
    fn a_pause_refills_the_bucket_and_makes_the_client_rested() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(5.0, 10.0, t0);
        assert!(limit.is_rested(t0));
        for _ in 0..25 {
            limit.wait(t0);
        }
        assert!(!limit.is_rested(t0 + SEC));
        let later = t0 + 30 * SEC;
        assert!(limit.is_rested(later));
        for _ in 0..10 {
            assert_eq!(limit.wait(later), Duration::ZERO);
        }
        assert!(limit.wait(later) > Duration::ZERO);
    }

    #[test]
    fn rate_zero_means_no_limit() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(0.0, 10.0, t0);
        for _ in 0..10_000 {
            assert_eq!(limit.wait(t0), Duration::ZERO);
        }
    }

    #[test]
    fn an_address_with_many_failures_is_refused_for_a_while() {
        let t0 = Instant::now();
        let failures = LoginFailures::new(3, 60 * SEC);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        failures.record(ip, t0);
        failures.record(ip, t0 + SEC);
        assert_eq!(failures.blocked_for(ip, t0 + SEC), None);
        failures.record(ip, t0 + 2 * SEC);
        assert_eq!(failures.blocked_for(ip, t0 + 2 * SEC), Some(60 * SEC));
        assert_eq!(failures.blocked_for(other, t0 + 2 * SEC), None);
        assert_eq!(failures.blocked_for(ip, t0 + 32 * SEC), Some(30 * SEC));
        assert_eq!(failures.blocked_for(ip, t0 + 62 * SEC), None);
    }

    #[test]
    fn failures_spread_over_time_are_forgiven() {
        let t0 = Instant::now();
        let failures = LoginFailures::new(3, 60 * SEC);
        let ip: IpAddr = "::1".parse().unwrap();
        for i in 0..10 {
            failures.record(ip, t0 + 100 * SEC * i);
            assert_eq!(failures.blocked_for(ip, t0 + 100 * SEC * i), None);
        }
    }

    #[test]
    fn mutes_expire_or_last_until_lifted() {
        let t0 = Instant::now();
        let mutes = Mutes::default();
        mutes.mute("Bob", Some(t0 + 60 * SEC));
        mutes.mute("eve", None);
        assert!(mutes.is_muted("bob", t0));
        assert!(!mutes.is_muted("bob", t0 + 61 * SEC));
        assert!(mutes.is_muted("EVE", t0 + 1_000_000 * SEC));
        assert!(mutes.unmute("eve"));
        assert!(!mutes.is_muted("eve", t0));
        assert!(!mutes.unmute("eve"));
    }

    #[test]
    fn bans_survive_in_their_file_by_name_and_ip() {
        let dir = tempfile::tempdir().unwrap();
        let bans = Bans::open(dir.path());
        bans.add(Ban {
            timestamp: "t".into(),
            name: "Mallory".into(),
            ip: "10.1.2.3".into(),
            by: "alice".into(),
            reason: "spam, lots".into(),
        })
        .unwrap();
        let again = Bans::open(dir.path());
        assert_eq!(
            again.of_name("mallory").unwrap().unwrap().reason,
            "spam, lots"
        );
        assert!(again.of_ip("10.1.2.3".parse().unwrap()).unwrap().is_some());
        assert!(again.of_ip("10.1.2.4".parse().unwrap()).unwrap().is_none());
        assert!(again.remove("MALLORY").unwrap());
        assert!(!again.remove("mallory").unwrap());
        assert!(bans.of_name("mallory").unwrap().is_none());
    }
}

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
use crate::table::{Table, TableError};

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

/// What the flood control says of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Pass,
    /// Over the limit: refuse the line.
    SlowDown,
    /// Refused too often: disconnect.
    Flooding,
}

/// A token bucket per client: `rate` lines a second, bursts of `burst`.
/// Refused lines use up a second bucket of strikes (refilled one a second);
/// when that is empty the client is flooding.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    strikes: f64,
    last: Instant,
}

/// Refused lines a client may send in a burst before it counts as flooding.
pub const FLOOD_STRIKES: f64 = 20.0;

impl RateLimit {
    /// A full bucket at `now`. A `rate` of 0 lets everything pass.
    pub fn new(rate: f64, burst: f64, now: Instant) -> RateLimit {
        RateLimit {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            strikes: FLOOD_STRIKES,
            last: now,
        }
    }

    /// Judges one line arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Pass;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.strikes = (self.strikes + elapsed).min(FLOOD_STRIKES);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Pass;
        }
        self.strikes -= 1.0;
        if self.strikes < 0.0 {
            Verdict::Flooding
        } else {
            Verdict::SlowDown
        }
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
    fn a_burst_of_ten_passes_then_lines_are_refused_then_flooding_disconnects() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(5.0, 10.0, t0);
        for _ in 0..10 {
            assert_eq!(limit.check(t0), Verdict::Pass);
        }
        assert_eq!(limit.check(t0), Verdict::SlowDown);
        for _ in 0..19 {
            assert_eq!(limit.check(t0), Verdict::SlowDown);
        }
        assert_eq!(limit.check(t0), Verdict::Flooding);
    }

    #[test]
    fn five_lines_a_second_pass_forever() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(5.0, 10.0, t0);
        for i in 0..1000 {
            assert_eq!(limit.check(t0 + SEC / 5 * i), Verdict::Pass, "line {i}");
        }
    }

    #[test]
    fn a_pause_refills_the_bucket_and_forgives_strikes() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(5.0, 10.0, t0);
        for _ in 0..25 {
            limit.check(t0);
        }
        let later = t0 + 30 * SEC;
        for _ in 0..10 {
            assert_eq!(limit.check(later), Verdict::Pass);
        }
        for _ in 0..20 {
            assert_eq!(limit.check(later), Verdict::SlowDown);
        }
    }

    #[test]
    fn rate_zero_means_no_limit() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(0.0, 10.0, t0);
        for _ in 0..10_000 {
            assert_eq!(limit.check(t0), Verdict::Pass);
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

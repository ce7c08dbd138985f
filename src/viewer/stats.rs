//! The summary line of `message_logs --stats`: who is online, how many
//! connections and people there have been, and how busy each room is.

use std::collections::{HashMap, HashSet};

use crate::names;
use crate::viewer::row::{Event, MessageRef};

/// Rooms named in the summary line; the rest are summed up, so the line stays one line.
const ROOMS_NAMED: usize = 10;

/// Counts gathered from `data.csv` and `messages.csv`, row by row.
///
/// Promises:
/// 1. Memory grows with the rooms, names and addresses, and the connections
///    open now, never with the number of rows.
/// 2. Malformed rows are counted apart and nowhere else.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Connects minus disconnects, per thread that has not balanced yet.
    open: HashMap<u64, i64>,
    connections: u64,
    names: HashSet<String>,
    ips: HashSet<String>,
    rooms: HashMap<String, (String, u64)>,
    whispers: u64,
    malformed: u64,
}

impl Stats {
    /// Counts one connection event.
    pub fn add_event(&mut self, e: &Event) {
        let change = match e.kind.as_str() {
            "connect" => {
                self.connections += 1;
                1
            }
            "disconnect" => -1,
            _ => 0,
        };
        if change != 0 {
            let balance = self.open.entry(e.thread).or_insert(0);
            *balance += change;
            if *balance == 0 {
                self.open.remove(&e.thread);
            }
        }
        if !e.name.is_empty() && !self.names.contains(&names::fold(&e.name)) {
            self.names.insert(names::fold(&e.name));
        }
        if !self.ips.contains(&e.ip) {
            self.ips.insert(e.ip.clone());
        }
    }

    /// Counts one message.
    pub fn add_message(&mut self, m: &MessageRef<'_>) {
        if m.is_whisper() {
            self.whispers += 1;
            return;
        }
        let key = names::fold(m.room);
        self.rooms
            .entry(key)
            .or_insert_with(|| (m.room.to_string(), 0))
            .1 += 1;
    }

    /// Counts a row that could not be read.
    pub fn add_malformed(&mut self) {
        self.malformed += 1;
    }

    /// Forgets what came from `data.csv` (it was truncated or replaced).
    pub fn reset_events(&mut self) {
        self.open.clear();
        self.connections = 0;
        self.names.clear();
        self.ips.clear();
    }

    /// Forgets what came from `messages.csv` (it was truncated or replaced).
    pub fn reset_messages(&mut self) {
        self.rooms.clear();
        self.whispers = 0;
    }

    /// Connections open now: threads with more connects than disconnects.
    pub fn online(&self) -> u64 {
        self.open.values().filter(|&&b| b > 0).count() as u64
    }

    /// The summary as one line:
    /// `online 2 · connections 5 · names 3 · ips 1 · messages: #general 12, #dev 3, whispers 2`.
    pub fn line(&self) -> String {
        let mut rooms: Vec<&(String, u64)> = self.rooms.values().collect();
        rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut parts: Vec<String> = rooms
            .iter()
            .take(ROOMS_NAMED)
            .map(|(room, n)| format!("#{} {n}", crate::viewer::text::clean(room)))
            .collect();
        if rooms.len() > ROOMS_NAMED {
            let rest = &rooms[ROOMS_NAMED..];
            let sum: u64 = rest.iter().map(|(_, n)| n).sum();
            parts.push(format!("{} more rooms {sum}", rest.len()));
        }
        parts.push(format!("whispers {}", self.whispers));
        let mut line = format!(
            "online {} · connections {} · names {} · ips {} · messages: {}",
            self.online(),
            self.connections,
            self.names.len(),
            self.ips.len(),
            parts.join(", ")
        );
        if self.malformed > 0 {
            line.push_str(&format!(" · {} malformed rows skipped", self.malformed));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::row::{Message, Stamp};

    fn event(thread: u64, name: &str, kind: &str, ip: &str) -> Event {
        Event {
            offset: 1,
            time: Stamp::parse("2026-11-21T18:05:09.123+00:00").unwrap(),
            ip: ip.into(),
            port: 4000,
            thread,
            name: name.into(),
            kind: kind.into(),
        }
    }

    fn message(room: &str, recipient: &str) -> Message {
        Message {
            offset: 1,
            id: 1,
            time: Stamp::parse("2026-11-21T18:05:09.123+00:00").unwrap(),
            room: room.into(),
            sender: "alice".into(),
            recipient: recipient.into(),
            text: "hi".into(),
        }
    }

    #[test]
    fn online_is_connects_minus_disconnects_per_thread() {
        let mut stats = Stats::default();
        for e in [
            event(1, "", "connect", "127.0.0.1"),
            event(1, "alice", "login", "127.0.0.1"),
            event(2, "", "connect", "10.0.0.2"),
            event(2, "Alice", "login", "10.0.0.2"),
            event(3, "", "connect", "127.0.0.1"),
            event(1, "alice", "disconnect", "127.0.0.1"),
        ] {
            stats.add_event(&e);
        }
        assert_eq!(stats.online(), 2);
        for m in [
            message("general", ""),
            message("General", ""),
            message("dev", ""),
            message("", "bob"),
        ] {
            stats.add_message(&m.borrowed());
        }
        stats.add_malformed();
        assert_eq!(
            stats.line(),
            "online 2 · connections 3 · names 1 · ips 2 · messages: #general 2, #dev 1, whispers 1 · 1 malformed rows skipped"
        );
    }

    #[test]
    fn many_rooms_still_make_one_short_line() {
        let mut stats = Stats::default();
        for i in 0..25 {
            stats.add_message(&message(&format!("room{i:02}"), "").borrowed());
        }
        let line = stats.line();
        assert!(line.contains("15 more rooms 15"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }
}

//! Unread and mention counts, kept by the server so that every device of a
//! user shows the same ones.
//!
//! A client marks how far it has read a room (`/read ROOM ID`); the marks
//! live in memory and in `reads.csv` (written behind, every few seconds and
//! at shutdown, so that marking costs no disk write). Each room remembers the
//! ids of its last [`WINDOW`] messages, with their senders and whom they
//! mention, so a count is a binary search, whatever the history's length:
//! counts past the window are reported as the window (a page shows "999+").
//! A client that asked `/unread` hears a new count whenever a message
//! arrives in a room it has marked.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::names;
use crate::server::table::{Table, TableError};

/// File name of the read marks in the data directory.
pub const READS_FILE: &str = "reads.csv";
/// Its columns.
pub const READ_COLUMNS: &[&str] = &["name", "room", "id"];
/// Messages per room whose ids are remembered for counting.
pub const WINDOW: usize = 1000;

/// One row of `reads.csv`.
#[derive(Clone, Serialize, Deserialize)]
pub struct ReadRow {
    /// Whose mark (as they are named).
    pub name: String,
    /// Which room.
    pub room: String,
    /// The last message id read there.
    pub id: u64,
}

/// A message as counting needs it: id, folded sender, and the folded names
/// it mentions.
type Counted = (u64, Box<str>, Box<[Box<str>]>);

/// Read marks: folded name → folded room → (room as named, last id read).
type Marks = HashMap<String, HashMap<String, (String, u64)>>;

/// A room's recent messages, as counting needs them.
#[derive(Default)]
pub struct Recent {
    messages: VecDeque<Counted>,
}

impl Recent {
    /// Remembers a message.
    pub fn push(&mut self, id: u64, sender: &str, mentioned: Vec<String>) {
        if self.messages.len() == WINDOW {
            self.messages.pop_front();
        }
        self.messages.push_back((
            id,
            names::folded(sender).into(),
            mentioned.into_iter().map(Box::from).collect(),
        ));
    }

    /// Messages after `mark` by others than `user`, and those of them that
    /// mention `user` (`user` folded).
    pub fn count(&self, user: &str, mark: u64) -> (usize, usize) {
        let start = self.messages.partition_point(|(id, ..)| *id <= mark);
        let mut unread = 0;
        let mut mentions = 0;
        for (_, sender, mentioned) in self.messages.iter().skip(start) {
            if &**sender == user {
                continue;
            }
            unread += 1;
            if mentioned.iter().any(|m| &**m == user) {
                mentions += 1;
            }
        }
        (unread, mentions)
    }
}

/// The folded words of a text that may name someone: `@name`, or a word
/// standing alone, without the punctuation around it.
pub fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = candidates(text).map(names::fold).collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// The words of a text that may name someone, as written.
fn candidates(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
        .map(|w| {
            w.trim_start_matches('@')
                .trim_end_matches([',', '.', ':', ';', '!', '?', ')', '\'', '"'])
        })
        .filter(|w| !w.is_empty() && w.len() <= 4 * names::MAX_NAME_CHARS)
}

/// The [`words`] of a text for which `is_name` holds: whom it mentions.
/// Each word is folded without a copy where it can be, and only the names
/// found are kept, sorted.
pub fn mentions(text: &str, mut is_name: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for word in candidates(text) {
        let folded = names::folded(word);
        if is_name(&folded) {
            found.push(folded.into_owned());
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// The names with read marks, locked: see [`Reads::known`].
pub struct Known<'a>(MutexGuard<'a, Marks>);

impl Known<'_> {
    /// True if `word` (folded) is the name of someone with marks.
    pub fn knows(&self, word: &str) -> bool {
        self.0.contains_key(word)
    }
}

/// Everyone's read marks.
pub struct Reads {
    table: Table<ReadRow>,
    marks: Mutex<Marks>,
    dirty: AtomicBool,
}

impl Reads {
    /// The marks kept in `dir`.
    pub fn open(dir: &Path) -> Reads {
        let table: Table<ReadRow> = Table::new(dir.join(READS_FILE), READ_COLUMNS);
        let mut marks = Marks::new();
        match table.rows() {
            Ok(rows) => {
                for row in rows.iter() {
                    marks
                        .entry(names::fold(&row.name))
                        .or_default()
                        .insert(names::fold(&row.room), (row.room.clone(), row.id));
                }
            }
            Err(e) => log::warn!("{e}; unread counts start afresh"),
        }
        Reads {
            table,
            marks: Mutex::new(marks),
            dirty: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The names with marks, held for the lookups of one message (one lock
    /// for all its words rather than one each).
    pub fn known(&self) -> Known<'_> {
        Known(self.lock())
    }

    /// Notes that `name` has read `room` up to `id` (marks only move forward).
    pub fn mark(&self, name: &str, room: &str, id: u64) {
        let mut marks = self.lock();
        let entry = marks
            .entry(names::fold(name))
            .or_default()
            .entry(names::fold(room))
            .or_insert_with(|| (room.to_string(), 0));
        if id > entry.1 || entry.1 == 0 {
            entry.1 = entry.1.max(id);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// The rooms `name` has marks in, with the mark (room as named).
    pub fn marks_of(&self, name: &str) -> Vec<(String, u64)> {
        self.lock()
            .get(&names::fold(name))
            .map(|rooms| rooms.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The mark of `name` in `room`, if any.
    pub fn mark_of(&self, name: &str, room: &str) -> Option<u64> {
        self.lock()
            .get(&*names::folded(name))?
            .get(&*names::folded(room))
            .map(|(_, id)| *id)
    }

    /// Writes the marks to `reads.csv` if they changed since the last time.
    pub fn flush(&self) -> Result<(), TableError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let rows: Vec<ReadRow> = {
            let marks = self.lock();
            let mut rows: Vec<ReadRow> = marks
                .iter()
                .flat_map(|(name, rooms)| {
                    rooms.values().map(move |(room, id)| ReadRow {
                        name: name.clone(),
                        room: room.clone(),
                        id: *id,
                    })
                })
                .collect();
            rows.sort_by(|a, b| (&a.name, &a.room).cmp(&(&b.name, &b.room)));
            rows
        };
        let written = self.table.update(|file| {
            *file = rows;
            Ok::<_, TableError>(())
        });
        if written.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_messages_after_the_mark_by_others_and_those_naming_you() {
        let mut recent = Recent::default();
        recent.push(1, "bob", vec![]);
        recent.push(2, "alice", vec![]);
        recent.push(3, "bob", words("hey @Alice, look"));
        recent.push(4, "carol", words("alice: lunch?"));
        recent.push(5, "bob", words("malice aforethought"));
        assert_eq!(recent.count("alice", 0), (4, 2));
        assert_eq!(recent.count("alice", 3), (2, 1));
        assert_eq!(recent.count("alice", 5), (0, 0));
        assert_eq!(recent.count("bob", 0), (2, 0));
    }

    #[test]
    fn mentions_are_the_words_that_are_names_sorted_once() {
        let names = ["alice", "bob", "ça"];
        for text in [
            "hey @Alice, look: bob! and ALICE again",
            "Ça va? @ÇA, (bob) 'bob' bob's",
            "nobody here",
            "",
            "alice: lunch? @bob. @carol;",
        ] {
            let expected: Vec<String> = words(text)
                .into_iter()
                .filter(|w| names.contains(&w.as_str()))
                .collect();
            assert_eq!(mentions(text, |w| names.contains(&w)), expected, "{text:?}");
        }
        assert_eq!(
            mentions("hey @Alice, look: bob! and ALICE again", |w| names
                .contains(&w)),
            ["alice", "bob"]
        );
    }

    #[test]
    fn the_window_keeps_the_last_messages() {
        let mut recent = Recent::default();
        for id in 1..=(WINDOW as u64 + 10) {
            recent.push(id, "bob", vec![]);
        }
        assert_eq!(recent.count("alice", 0).0, WINDOW);
        assert_eq!(recent.count("alice", WINDOW as u64).0, 10);
    }

    #[test]
    fn marks_move_forward_and_survive_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let reads = Reads::open(dir.path());
        reads.mark("Alice", "dev", 10);
        reads.mark("alice", "Dev", 5);
        assert_eq!(reads.mark_of("ALICE", "dev"), Some(10));
        assert!(reads.known().knows("alice"));
        reads.flush().unwrap();
        let again = Reads::open(dir.path());
        assert_eq!(again.mark_of("alice", "dev"), Some(10));
        assert_eq!(again.marks_of("alice"), vec![("dev".to_string(), 10)]);
    }
}

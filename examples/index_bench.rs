//! index_bench: CPU time of the message index's `indexer` thread per row,
//! in process, without a server.
//!
//! 1. Rebuild: a generated `messages.csv` of `--rows` rows (texts of 5–30
//!    words, some capitalised, accented, quoted or Chinese/Japanese; 12 rooms
//!    of mixed case, 400 senders, one row in 12 a whisper) and no index; the
//!    indexer builds it (transactions of 50,000 rows).
//! 2. Follow: `--follow` more rows appended in batches of `--batch` rows (what
//!    200 ms of 16,000 msg/s gives), each announced as the store does and
//!    indexed in its own transaction on top of the built index.
//!
//! CPU time is the indexer thread's own (`/proc/self/task/TID/schedstat`),
//! so the other threads and a noisy machine count little; wall time is
//! shown for information. Last, a digest of the answers of a set of
//! searches and pages, to compare two versions of the index.
//!
//! ```text
//! cargo build --release --example index_bench
//! target/release/examples/index_bench [--rows 500000] [--follow 150000] [--batch 3000]
//! ```

use std::collections::hash_map::DefaultHasher;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use chatroom::server::index::{Found, Index, Written};

/// Measures the indexer's CPU time per row.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Rows of the rebuilt messages.csv.
    #[arg(long, default_value_t = 500_000)]
    rows: u64,
    /// Rows appended afterwards, in batches.
    #[arg(long, default_value_t = 150_000)]
    follow: u64,
    /// Rows a batch (one indexer transaction each).
    #[arg(long, default_value_t = 3_000)]
    batch: u64,
    /// Texts as examples/loadgen sends them (one unique 100-byte word each)
    /// rather than words.
    #[arg(long)]
    loadgen: bool,
    /// Times the searches and pages are asked (the fastest is shown).
    #[arg(long, default_value_t = 1)]
    queries: usize,
    /// The data directory (emptied first); a temporary one if not given.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    for name in [
        "messages.csv",
        "messages.index",
        "messages.index-wal",
        "messages.index-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let csv = dir.join("messages.csv");
    let mut rows = Rows::new(args.loadgen);
    let mut file = File::create(&csv)?;
    file.write_all(b"id,timestamp,room,sender,recipient,text\n")?;
    let mut left = args.rows;
    while left > 0 {
        let n = left.min(10_000);
        left -= n;
        file.write_all(&rows.take(n))?;
    }
    file.sync_all()?;
    drop(file);

    // 1. Rebuild.
    let index = Index::start(&dir)?;
    thread::sleep(Duration::from_millis(200));
    let indexer = Thread::named("indexer")?;
    let meta = std::fs::metadata(&csv)?;
    let mut written = Written {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        last_id: rows.id,
    };
    let (cpu, io, wall) = (indexer.cpu(), indexer.written(), Instant::now());
    index.feed().written(written);
    wait(&index, rows.id);
    report(
        "rebuild",
        args.rows,
        indexer.cpu() - cpu,
        indexer.written() - io,
        wall.elapsed(),
    );

    // 2. Follow.
    let mut file = OpenOptions::new().append(true).open(&csv)?;
    let (cpu, io, wall) = (indexer.cpu(), indexer.written(), Instant::now());
    let mut left = args.follow;
    while left > 0 {
        let n = left.min(args.batch);
        left -= n;
        file.write_all(&rows.take(n))?;
        written.len = file.metadata()?.len();
        written.last_id = rows.id;
        index.feed().written(written);
        wait(&index, rows.id);
    }
    report(
        "follow",
        args.follow,
        indexer.cpu() - cpu,
        indexer.written() - io,
        wall.elapsed(),
    );

    // 3. What it answers.
    let mut fastest = Duration::MAX;
    let mut digests = Vec::new();
    for _ in 0..args.queries.max(1) {
        let asked = Instant::now();
        digests.push(digest(&index, rows.id));
        fastest = fastest.min(asked.elapsed());
    }
    digests.dedup();
    println!(
        "answers digest: {}, in {:.0} ms (fastest of {})",
        digests.join(" / "),
        fastest.as_secs_f64() * 1e3,
        args.queries.max(1)
    );
    index.stop();
    let status = std::fs::read_to_string("/proc/self/status")?;
    if let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        println!("peak RSS of the process: {}", peak[6..].trim());
    }
    Ok(())
}

fn wait(index: &Index, id: u64) {
    while index.progress().0 < id {
        thread::sleep(Duration::from_millis(1));
    }
}

fn report(what: &str, rows: u64, cpu: Duration, written: u64, wall: Duration) {
    println!(
        "{what:8} {rows:>8} rows: indexer CPU {:7.3} s = {:5.2} µs/row, wrote {:5.0} B/row (wall {:6.2} s)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / rows.max(1) as f64,
        written as f64 / rows.max(1) as f64,
        wall.as_secs_f64()
    );
}

/// A hash of the answers to searches and pages that exercise folding,
/// prefixes, phrases, CJK, whispers and rooms.
fn digest(index: &Index, last: u64) -> String {
    let mut hasher = DefaultHasher::new();
    let mut found = 0;
    let searches = [
        "the",
        "größe",
        "GRÖSSE",
        "grosse",
        "Grösse",
        "cafe",
        "CAFÉ",
        "naïve",
        "NAIVE",
        "deploy*",
        "dep*",
        "Rev*",
        "东京",
        "东",
        "会議",
        "京东",
        "team update",
        "team-update",
        "server.build",
        "o'neil",
        "ΣΟΦΊΑ",
        "σοφια",
        "quetzalcoatl",
        "lunch meeting today",
    ];
    for query in searches {
        for (user, room) in [
            ("nobody", None),
            ("User7", None),
            ("élodie3", None),
            ("nobody", Some("General")),
            ("user12", Some("dev-Ops")),
        ] {
            let hits = index
                .search(query, user, room, 200)
                .expect("a search failed");
            found += hits.messages.len();
            hash_found(&hits.messages, &mut hasher);
        }
    }
    for room in ["general", "GENERAL", "dev-ops", "Ärger", "σοφία", "nope"] {
        for before in [last + 1, last / 2, 1_000, 2] {
            let page = index.page(room, before, 50).expect("a page failed");
            found += page.messages.len();
            hash_found(&page.messages, &mut hasher);
            page.more.hash(&mut hasher);
        }
    }
    format!("{:016x} ({found} messages)", hasher.finish())
}

fn hash_found(messages: &[Found], hasher: &mut DefaultHasher) {
    for m in messages {
        (m.id, &m.time, &m.room, &m.sender, &m.recipient, &m.text).hash(hasher);
    }
    messages.len().hash(hasher);
}

/// The generated rows.
struct Rows {
    loadgen: bool,
    seed: u64,
    id: u64,
    words: Vec<String>,
    rooms: Vec<String>,
    users: Vec<String>,
}

impl Rows {
    fn new(loadgen: bool) -> Rows {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut words: Vec<String> = [
            "the",
            "and",
            "you",
            "that",
            "team",
            "update",
            "lunch",
            "meeting",
            "deploy",
            "server",
            "today",
            "thanks",
            "please",
            "review",
            "build",
            "Größe",
            "café",
            "naïve",
            "The",
            "Deploy",
            "CAFE",
            "grosse",
            "o'neil",
            "team-update",
            "server.build",
            "Σοφία",
            "ΣΟΦΙΑΣ",
            "déjà",
            "Ärger",
            "it's",
            "(ok)",
            "\"quoted\"",
            "a,b",
            "URL:",
            "100%",
            "v1.2.3",
            "we'll",
            "naive",
        ]
        .iter()
        .map(|w| (*w).to_string())
        .collect();
        let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
        while words.len() < 20_000 {
            let len = 3 + (next(&mut seed) % 8) as usize;
            let mut word: String = (0..len)
                .map(|_| letters[(next(&mut seed) % 26) as usize])
                .collect();
            if next(&mut seed).is_multiple_of(8) {
                word = word[..1].to_uppercase() + &word[1..];
            }
            words.push(word);
        }
        let rooms = [
            "general",
            "General",
            "dev-ops",
            "Dev-Ops",
            "random",
            "Ärger",
            "σοφία",
            "ops_2",
            "lunch",
            "Team",
            "help",
            "offtopic",
        ]
        .iter()
        .map(|r| (*r).to_string())
        .collect();
        let users = (0..400)
            .map(|i| match i % 5 {
                0 => format!("User{i}"),
                1 => format!("user{i}"),
                2 => format!("Élodie{i}"),
                3 => format!("ΣΟΦΙΑΣ{i}"),
                _ => format!("bob_{i}"),
            })
            .collect();
        Rows {
            loadgen,
            seed: 0x1234_5678_9abc_def1,
            id: 0,
            words,
            rooms,
            users,
        }
    }

    /// The next `n` rows, as written to messages.csv.
    fn take(&mut self, n: u64) -> Vec<u8> {
        let cjk = [
            "我们明天在东京见面",
            "今日は会議があります",
            "这个版本已经发布了",
            "회의는 내일입니다",
        ];
        let mut out = csv::Writer::from_writer(Vec::new());
        let mut text = String::new();
        for _ in 0..n {
            self.id += 1;
            let id = self.id;
            let seed = &mut self.seed;
            text.clear();
            if self.loadgen {
                use std::fmt::Write as _;
                let _ = write!(text, "~LG{:08x}{:016x}", id >> 20, next(seed));
                while text.len() < 100 {
                    text.push('x');
                }
            }
            let count = if self.loadgen { 0 } else { 5 + next(seed) % 26 };
            for i in 0..count {
                if i > 0 {
                    text.push(' ');
                }
                // Zipf-like: small indexes far more often.
                let r = (next(seed) % 1_000_000) as f64 / 1_000_000.0;
                let index = ((self.words.len() as f64).powf(r) as usize).saturating_sub(1);
                text.push_str(&self.words[index.min(self.words.len() - 1)]);
            }
            if !self.loadgen && next(seed).is_multiple_of(40) {
                text.push(' ');
                text.push_str(cjk[(next(seed) % 4) as usize]);
            }
            if id % 100_003 == 7 {
                text.push_str(" quetzalcoatl");
            }
            let time = format!(
                "2026-11-21T{:02}:{:02}:{:02}.{:03}+01:00",
                id / 3_600_000 % 24,
                id / 60_000 % 60,
                id / 1000 % 60,
                id % 1000
            );
            let sender = &self.users[(next(seed) % 400) as usize];
            let (room, recipient) = if next(seed).is_multiple_of(12) {
                ("", self.users[(next(seed) % 400) as usize].as_str())
            } else {
                (self.rooms[(next(seed) % 12) as usize].as_str(), "")
            };
            out.write_record([
                id.to_string().as_str(),
                &time,
                room,
                sender,
                recipient,
                &text,
            ])
            .expect("a row");
        }
        out.into_inner().expect("the rows")
    }
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A thread of this process, found by name.
struct Thread(PathBuf);

impl Thread {
    fn named(name: &str) -> std::io::Result<Thread> {
        for task in std::fs::read_dir("/proc/self/task")? {
            let path = task?.path();
            if std::fs::read_to_string(path.join("comm"))?.trim() == name {
                return Ok(Thread(path));
            }
        }
        Err(std::io::Error::other(format!("no thread {name}")))
    }

    /// Bytes it has written so far (write calls, to the page cache).
    fn written(&self) -> u64 {
        let io = std::fs::read_to_string(self.0.join("io")).unwrap_or_default();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Its CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(self.0.join("schedstat")).unwrap_or_default();
        let ns = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Duration::from_nanos(ns)
    }
}

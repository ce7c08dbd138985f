//! Benchmark of the viewers on a big `messages.csv` (10 million rows by default).
//!
//! Measures, against the release `list_messages` binary and in process:
//! 1. time to first screen with `--tail 50` (the binary with `--once`, start
//!    to exit; and the full-screen path, tail to first frame on ratatui's test
//!    backend), with the peak memory of the binary;
//! 2. the streaming rate of a full `--once` read into /dev/null, with its peak memory.
//!
//! Peak memory is the kernel's max RSS of the largest child so far, so the
//! small runs come first.
//!
//! Run: `cargo build --release --bin list_messages --example viewer_bench &&
//! target/release/examples/viewer_bench [--rows N] [--dir DIR]`.
//! The file is generated once in DIR (default: target/viewer-bench) and reused.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatroom::rows::{MESSAGE_COLUMNS, MESSAGES_FILE};
use chatroom::viewer::filter::Filter;
use chatroom::viewer::live;
use chatroom::viewer::screen::App;
use chatroom::viewer::tail::{Start, Tail};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const WORDS: [&str; 24] = [
    "hello",
    "there",
    "the",
    "build",
    "is",
    "green",
    "again",
    "who",
    "broke",
    "main",
    "lunch",
    "at",
    "noon?",
    "ship",
    "it",
    "deploy",
    "failed,",
    "retry",
    "\"quoted\"",
    "ça",
    "va",
    "ok",
    "thanks",
    "later",
];
const ROOMS: [&str; 5] = ["general", "dev", "ops", "random", "a-much-longer-room-name"];
const NAMES: [&str; 8] = [
    "alice", "bob", "carol", "dan", "eve", "mallory", "trent", "peggy",
];

fn main() {
    let mut rows: u64 = 10_000_000;
    let mut dir = PathBuf::from("target/viewer-bench");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--rows", Some(n)) => match n.parse() {
                Ok(n) => rows = n,
                Err(_) => fail(&format!("--rows {n:?} is not a number")),
            },
            ("--dir", Some(d)) => dir = PathBuf::from(d),
            _ => fail("usage: viewer_bench [--rows N] [--dir DIR]"),
        }
    }
    let binary = match std::env::current_exe() {
        Ok(exe) => exe
            .parent()
            .and_then(Path::parent)
            .map(|release| release.join("list_messages"))
            .unwrap_or_default(),
        Err(e) => fail(&format!("cannot find this program's path: {e}")),
    };
    if !binary.exists() {
        fail("build the viewer first: cargo build --release --bin list_messages");
    }
    let file = generate(&dir, rows);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "file: {} ({rows} rows, {:.1} MB)",
        file.display(),
        size as f64 / 1e6
    );

    // 1a. The binary, --once --tail 50: start to exit (it has printed the screen).
    let mut tail_runs = Vec::new();
    let mut tail_rss = 0;
    for _ in 0..7 {
        let (elapsed, rss) = run(&binary, &dir, &["--once", "--tail", "50"]);
        tail_runs.push(elapsed);
        tail_rss = tail_rss.max(rss);
    }
    // 1b. The full-screen path in process: open the tail, read, draw one frame.
    let mut screen_runs = Vec::new();
    for _ in 0..7 {
        screen_runs.push(first_frame(&file));
    }
    // 2. A full --once read into /dev/null.
    let mut full_runs = Vec::new();
    let mut full_rss = 0;
    for _ in 0..3 {
        let (elapsed, rss) = run(&binary, &dir, &["--once"]);
        full_runs.push(elapsed);
        full_rss = full_rss.max(rss);
    }
    let full = median(&mut full_runs);
    println!();
    println!("| measure | median | peak RSS |");
    println!("|---|---|---|");
    println!(
        "| `list_messages --once --tail 50`, start to exit | {:.1} ms | {:.1} MB |",
        ms(median(&mut tail_runs)),
        tail_rss as f64 / 1024.0
    );
    println!(
        "| full-screen path, tail 28 rows to first frame (in process) | {:.2} ms | - |",
        ms(median(&mut screen_runs))
    );
    println!(
        "| `list_messages --once` full read > /dev/null | {:.2} s = {:.0} MB/s ({:.0} rows/s) | {:.1} MB |",
        full.as_secs_f64(),
        size as f64 / 1e6 / full.as_secs_f64(),
        rows as f64 / full.as_secs_f64(),
        full_rss as f64 / 1024.0
    );
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(runs: &mut [Duration]) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// Writes `rows` rows of chat into DIR/messages.csv unless a file of that many rows is there.
fn generate(dir: &Path, rows: u64) -> PathBuf {
    let path = dir.join(MESSAGES_FILE);
    let stamp = dir.join(format!("rows-{rows}"));
    if path.exists() && stamp.exists() {
        return path;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        fail(&format!("cannot create {}: {e}", dir.display()));
    }
    println!("generating {rows} rows in {} …", path.display());
    let started = Instant::now();
    let written = (|| -> std::io::Result<()> {
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(1 << 20)
            .from_writer(BufWriter::new(File::create(&path)?));
        out.write_record(MESSAGE_COLUMNS)?;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            // xorshift: fast, deterministic, good enough for filler text.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = chrono::DateTime::parse_from_rfc3339("2026-11-01T08:00:00.000+00:00")
            .map_err(std::io::Error::other)?;
        let mut text = String::new();
        for id in 1..=rows {
            let time = base + chrono::Duration::milliseconds((id * 37) as i64);
            let time = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
            let r = next();
            let whisper = r % 20 == 0;
            let room = if whisper {
                ""
            } else {
                ROOMS[(r >> 8) as usize % ROOMS.len()]
            };
            let sender = NAMES[(r >> 16) as usize % NAMES.len()];
            let recipient = if whisper {
                NAMES[(r >> 24) as usize % NAMES.len()]
            } else {
                ""
            };
            text.clear();
            for i in 0..(3 + (r >> 32) % 14) {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            }
            out.write_record([&id.to_string(), &time, room, sender, recipient, &text])?;
        }
        out.flush()?;
        File::create(&stamp)?;
        Ok(())
    })();
    if let Err(e) = written {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
    println!("generated in {:.1} s", started.elapsed().as_secs_f64());
    path
}

/// Runs the viewer with stdout to /dev/null; returns its time and the peak
/// RSS (KiB) of the largest child run so far (so run small cases first).
fn run(binary: &Path, dir: &Path, args: &[&str]) -> (Duration, i64) {
    let devnull = File::create("/dev/null").unwrap_or_else(|e| fail(&format!("/dev/null: {e}")));
    let started = Instant::now();
    let status = Command::new(binary)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::from(devnull))
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", binary.display())));
    let elapsed = started.elapsed();
    if !status.success() {
        fail(&format!("{} {args:?} failed: {status}", binary.display()));
    }
    // SAFETY: getrusage fills a plain C struct that we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        fail("getrusage failed");
    }
    (elapsed, usage.ru_maxrss)
}

/// The full-screen view's start: open the tail at the last screenful of rows,
/// read them into the app, draw the first frame on a 100x30 test backend.
fn first_frame(file: &Path) -> Duration {
    let started = Instant::now();
    let mut tail = Tail::new(file, Start::LastRows(28));
    let mut app = App::new(file.display().to_string(), Filter::default());
    if let Err(e) = live::feed(&mut tail, &mut app, 1 << 20) {
        fail(&format!("reading {}: {e}", file.display()));
    }
    let mut terminal = match Terminal::new(TestBackend::new(100, 30)) {
        Ok(t) => t,
        Err(e) => match e {},
    };
    if let Err(e) = terminal.draw(|frame| app.render(frame)) {
        match e {}
    }
    started.elapsed()
}

//! history_bench: issue 13's figures for paging and search on a big
//! `messages.csv`.
//!
//! 1. Build: the real `server` binary is started on a data directory whose
//!    `messages.csv` has `--rows` rows (generated once and kept: 10 rooms,
//!    one row in 20 a whisper, one in 50 with Chinese, 3–16 words a row
//!    drawn from 30,000 with a Zipf-like skew, and a rare word in 10 rows)
//!    and no index: the time from the log's "building the message index" to
//!    "the message index is complete" is the full build, in the background
//!    (the server serves meanwhile).
//! 2. Queries: a JSON client times `/history before ID 50` in one room at
//!    random ids, `/search` of the rare word, of a common word (its newest
//!    50), of two words and of two Chinese characters: round trips over
//!    loopback, so upper bounds of the time at the server. Median, p95, max.
//! 3. Memory: the server's peak and current RSS after all that, against the
//!    same server on a file of 1,000 rows.
//! 4. Sustained indexing: in process, rows appended to a `messages.csv` as
//!    the store writes them (batches of 1,024, each announced to the index as
//!    the store does) as fast as the index takes them: rows a second.
//!
//! ```text
//! cargo build --release --bin server --example history_bench
//! target/release/examples/history_bench --rows 10000000 --dir /var/tmp/history-bench
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use chatroom::server::index::{Index, Written};

/// Measures paging and search on a big messages.csv.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Rows of the generated messages.csv.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Where the data directory goes (kept between runs; the file is made once).
    #[arg(long, default_value = "target/history-bench")]
    dir: PathBuf,
    /// The server binary.
    #[arg(long, default_value = "target/release/server")]
    server_bin: PathBuf,
    /// Times each query is run.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Rows appended for the sustained indexing figure (0: skip).
    #[arg(long, default_value_t = 2_000_000)]
    sustained: u64,
}

/// The rare word, planted in 10 rows.
const RARE: &str = "quetzalcoatl";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let data = args.dir.join("data");
    std::fs::create_dir_all(&data)?;
    let csv = data.join("messages.csv");
    let want = args.rows;
    let have = std::fs::read_to_string(args.dir.join("rows")).ok();
    if have.as_deref() != Some(&want.to_string()) || !csv.exists() {
        let started = Instant::now();
        let bytes = generate(&csv, want)?;
        std::fs::write(args.dir.join("rows"), want.to_string())?;
        println!(
            "generated {want} rows ({:.0} MB) in {:.1} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    for name in ["messages.index", "messages.index-wal", "messages.index-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let mut report = json!({ "rows": want, "csv_bytes": std::fs::metadata(&csv)?.len() });

    // 1. The full build, in the background of a serving server.
    let mut server = Server::start(&args.server_bin, &data)?;
    let built = server.wait_for_build(Duration::from_secs(1800))?;
    let index_bytes = std::fs::metadata(data.join("messages.index"))?.len();
    println!(
        "index build: {built:.1} s for {want} rows ({:.0} rows/s); messages.index {:.0} MB",
        want as f64 / built,
        index_bytes as f64 / 1e6
    );
    report["build_s"] = json!(round(built));
    report["index_bytes"] = json!(index_bytes);

    // 2. Queries.
    let mut client = JsonClient::connect(&server.addr, "bench")?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut pages = Vec::new();
    for _ in 0..args.queries {
        let before = 1_000 + next(&mut seed) % (want - 1_000);
        let started = Instant::now();
        let n = client.ask(&format!("/history before {before} 50"), "history_end")?;
        pages.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(n >= 1, "a page came back empty");
    }
    report["history_before_50_ms"] = stats("/history before ID 50 (room general)", &mut pages);
    for (label, query, key) in [
        ("/search of a rare word", RARE.to_string(), "search_rare_ms"),
        (
            "/search of a common word (newest 50)",
            "the".to_string(),
            "search_common_ms",
        ),
        (
            "/search of two words",
            "team update".to_string(),
            "search_two_words_ms",
        ),
        (
            "/search of two Chinese characters",
            "东京".to_string(),
            "search_cjk_ms",
        ),
    ] {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..args.queries {
            let started = Instant::now();
            found = client.ask(&format!("/search {query}"), "search_end")?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        report[key] = stats(&format!("{label}: {found} found"), &mut times);
    }

    // 3. Memory.
    let (peak, now) = server.rss()?;
    println!("server RSS after build and queries: {now:.1} MiB (peak {peak:.1} MiB)");
    report["server_rss_mib"] = json!(round(now));
    report["server_peak_rss_mib"] = json!(round(peak));
    drop(client);
    server.stop();
    let small = tempfile::tempdir()?;
    generate(&small.path().join("messages.csv"), 1_000)?;
    let mut small_server = Server::start(&args.server_bin, small.path())?;
    small_server.wait_for_build(Duration::from_secs(60))?;
    let mut client = JsonClient::connect(&small_server.addr, "bench")?;
    client.ask("/search the", "search_end")?;
    let (small_peak, small_now) = small_server.rss()?;
    println!("the same server on 1,000 rows: {small_now:.1} MiB (peak {small_peak:.1} MiB)");
    report["small_server_rss_mib"] = json!(round(small_now));
    drop(client);
    small_server.stop();

    // 4. Sustained indexing.
    if args.sustained > 0 {
        let rate = sustained(args.sustained)?;
        println!(
            "sustained indexing: {} rows appended in batches of 1,024: {rate:.0} rows/s",
            args.sustained
        );
        report["sustained_rows_per_s"] = json!(rate.round());
    }
    println!("{report}");
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn stats(label: &str, times: &mut [f64]) -> Value {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = times[n / 2];
    let p95 = times[(n * 95 / 100).min(n - 1)];
    let max = times[n - 1];
    println!("{label}: median {median:.2} ms, p95 {p95:.2} ms, max {max:.2} ms ({n} runs)");
    json!({"median": round(median), "p95": round(p95), "max": round(max), "runs": n})
}

/// A vocabulary of 30,000 made-up words, the first few real and common.
fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = [
        "the", "and", "you", "that", "team", "update", "lunch", "meeting", "deploy", "server",
        "today", "thanks", "please", "review", "build", "Größe", "café", "naïve",
    ]
    .iter()
    .map(|w| (*w).to_string())
    .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
    while words.len() < 30_000 {
        let len = 3 + (next(&mut seed) % 8) as usize;
        let word: String = (0..len)
            .map(|_| letters[(next(&mut seed) % 26) as usize])
            .collect();
        if word != RARE {
            words.push(word);
        }
    }
    words
}

/// Writes a messages.csv of `rows` rows; returns its size.
fn generate(path: &Path, rows: u64) -> std::io::Result<u64> {
    let words = vocabulary();
    let cjk = [
        "我们明天在东京见面",
        "今日は会議があります",
        "这个版本已经发布了",
    ];
    let mut out = BufWriter::with_capacity(8 << 20, File::create(path)?);
    out.write_all(b"id,timestamp,room,sender,recipient,text\n")?;
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut text = String::new();
    for id in 1..=rows {
        text.clear();
        let count = 3 + next(&mut seed) % 14;
        for i in 0..count {
            if i > 0 {
                text.push(' ');
            }
            // Zipf-like: small indexes far more often.
            let r = (next(&mut seed) % 1_000_000) as f64 / 1_000_000.0;
            let index = ((words.len() as f64).powf(r) as usize).saturating_sub(1);
            text.push_str(&words[index.min(words.len() - 1)]);
        }
        if id % 50 == 0 {
            text.push(' ');
            text.push_str(cjk[(id / 50 % 3) as usize]);
        }
        if id % (rows / 10).max(1) == 7 {
            text.push(' ');
            text.push_str(RARE);
        }
        let (h, m, s, ms) = (
            id / 3_600_000 % 24,
            id / 60_000 % 60,
            id / 1000 % 60,
            id % 1000,
        );
        let user = id % 997;
        if id % 20 == 0 {
            writeln!(
                out,
                "{id},2026-11-21T{h:02}:{m:02}:{s:02}.{ms:03}+00:00,,user{user},user{},{text}",
                (id + 1) % 997
            )?;
        } else {
            let room = if id % 10 == 0 {
                "general".to_string()
            } else {
                format!("room{}", id % 10)
            };
            writeln!(
                out,
                "{id},2026-11-21T{h:02}:{m:02}:{s:02}.{ms:03}+00:00,{room},user{user},,{text}"
            )?;
        }
    }
    out.flush()?;
    drop(out);
    Ok(std::fs::metadata(path)?.len())
}

/// The server binary, running.
struct Server {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl Server {
    fn start(bin: &Path, dir: &Path) -> Result<Server, Box<dyn std::error::Error>> {
        let mut child = Command::new(bin)
            .args(["--port", "0", "--rate", "0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut first = String::new();
        out.read_line(&mut first)?;
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("the server did not start: {first:?}"))?
            .to_string();
        Ok(Server { child, addr, log })
    }

    /// Seconds from "building" to "complete" in the log.
    fn wait_for_build(&mut self, limit: Duration) -> Result<f64, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + limit;
        let mut started = None;
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .map_err(|_| "the index was not built in time")?;
            if line.contains("building the message index") {
                started = Some(Instant::now());
            }
            if line.contains("the message index is complete") {
                return Ok(started.map_or(0.0, |s| s.elapsed().as_secs_f64()));
            }
        }
    }

    /// Peak and current RSS in MiB.
    fn rss(&self) -> std::io::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = |key: &str| -> f64 {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0))
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A logged-in client in JSON mode.
struct JsonClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl JsonClient {
    fn connect(addr: &str, name: &str) -> std::io::Result<JsonClient> {
        let stream = TcpStream::connect(addr)?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut client = JsonClient { stream, reader };
        client
            .stream
            .write_all(format!("/mode json\n{name}\n").as_bytes())?;
        client.until("welcome")?;
        Ok(client)
    }

    /// Reads until an event of type `kind`; returns how many `message` and
    /// `whisper` events came before it.
    fn until(&mut self, kind: &str) -> std::io::Result<usize> {
        let mut found = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("the server closed"));
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match event["type"].as_str() {
                Some(t) if t == kind => return Ok(found),
                Some("message" | "whisper") => found += 1,
                Some("error") => return Err(std::io::Error::other(line.clone())),
                _ => {}
            }
        }
    }

    fn ask(&mut self, command: &str, end: &str) -> std::io::Result<usize> {
        self.stream.write_all(format!("{command}\n").as_bytes())?;
        self.until(end)
    }
}

/// Rows a second the index takes when rows are appended as the store
/// writes them.
fn sustained(rows: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("messages.csv");
    // Made first, so that only the indexing is timed.
    let scratch = dir.path().join("scratch.csv");
    generate(&scratch, rows)?;
    let content = std::fs::read(&scratch)?;
    std::fs::remove_file(&scratch)?;
    let header = content
        .iter()
        .position(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let mut file = File::create(&path)?;
    file.write_all(&content[..header])?;
    let meta = file.metadata()?;
    let index = Index::start(dir.path())?;
    let feed = index.feed();
    let mut written = Written {
        dev: meta.dev(),
        ino: meta.ino(),
        len: header as u64,
        last_id: 0,
    };
    feed.written(written);
    // Let the indexer open its (empty) index first.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut at = header;
    let mut id = 0u64;
    while at < content.len() {
        // One store batch: 1,024 rows.
        let mut end = at;
        for _ in 0..1024 {
            match content[end..].iter().position(|&b| b == b'\n') {
                Some(p) => end += p + 1,
                None => {
                    end = content.len();
                    break;
                }
            }
            id += 1;
            if end >= content.len() {
                break;
            }
        }
        file.write_all(&content[at..end])?;
        at = end;
        written.len = at as u64;
        written.last_id = id;
        feed.written(written);
        // Never further ahead of the index than the store's queue allows.
        while id.saturating_sub(index.progress().0) > 64 * 1024 {
            thread::sleep(Duration::from_micros(200));
        }
    }
    while index.progress().0 < id {
        thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    index.stop();
    Ok(rows as f64 / secs)
}

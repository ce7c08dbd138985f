//! store_bench: the store alone, without sockets or sessions in the way.
//!
//! 1. Throughput: messages persisted per second. The store thread
//!    ([`Store::spawn`]) is given `--messages` room messages (`Request::Say`,
//!    `--size` bytes of text each) as fast as a channel takes them; the clock
//!    stops when the store thread has written, flushed and delivered them all
//!    and ended (its sender dropped, its thread joined). The requests are built
//!    before the clock starts. The room `general` has no members; the sender's
//!    echo goes to one outbox on a loopback socket that a thread drains.
//! 2. Recovery: the time [`Store::open`] takes to read back a `messages.csv`
//!    of 1 and 10 million rows (10 rooms, one row in 20 a whisper, some text
//!    quoted) and rebuild each room's last 50 lines and the next id. The file
//!    was just written, so it is in the page cache: this is the warm restart.
//!
//! ```text
//! cargo run --release --example store_bench -- --runs 5 --recovery 1000000,10000000
//! ```
//!
//! Prints one line per run, a summary (median, min–max), then one JSON line.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use clap::Parser;
use serde_json::json;

use chatroom::rows::MESSAGES_FILE;
use chatroom::server::outbox::Flushers;
use chatroom::server::registry::Registry;
use chatroom::server::store::{Request, Store};
use chatroom::server::transport::Accept;
use chatroom::server::transport::tcp::Tcp;

/// Measures the store: messages persisted per second, and restart recovery time.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Throughput runs (0: skip).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Row counts of messages.csv to time the recovery of (empty: skip).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    recovery: Vec<u64>,
    /// Opens timed per row count.
    #[arg(long, default_value_t = 3)]
    recovery_runs: usize,
    /// Where the temporary data directories go (default: the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut report = json!({ "messages": args.messages, "size": args.size });

    if args.runs > 0 {
        let mut rates = Vec::new();
        for run in 1..=args.runs {
            let dir = tempfile::tempdir_in(&base)?;
            let (secs, bytes) = throughput(dir.path(), args.messages, args.size)?;
            let rate = args.messages as f64 / secs;
            println!(
                "throughput run {run}: {} messages in {secs:.3} s = {rate:.0} messages/s ({:.1} MB/s of messages.csv)",
                args.messages,
                bytes as f64 / secs / 1e6
            );
            rates.push(rate);
        }
        let (median, min, max) = summary(&mut rates);
        println!(
            "throughput: median {median:.0} messages/s (min {min:.0}, max {max:.0}) over {} runs; target at least 100000",
            args.runs
        );
        report["throughput"] = json!({
            "runs": rates.len(),
            "median_per_s": median.round(),
            "min_per_s": min.round(),
            "max_per_s": max.round(),
            "per_run": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        });
    }

    let mut recoveries = Vec::new();
    for &rows in &args.recovery {
        let dir = tempfile::tempdir_in(&base)?;
        let started = Instant::now();
        let bytes = write_messages(dir.path(), rows)?;
        println!(
            "recovery: wrote {rows} rows ({:.0} MB) in {:.1} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        for run in 1..=args.recovery_runs.max(1) {
            let started = Instant::now();
            let (store, recovered) = Store::open(dir.path(), 50)?;
            let secs = started.elapsed().as_secs_f64();
            drop(store);
            if recovered.messages != rows || recovered.next_id != rows + 1 {
                return Err(format!(
                    "read back {} rows and next id {}, expected {rows} and {}",
                    recovered.messages,
                    recovered.next_id,
                    rows + 1
                )
                .into());
            }
            println!(
                "recovery run {run}: {rows} rows read back in {secs:.3} s ({} rooms)",
                recovered.rooms.len()
            );
            times.push(secs);
        }
        let (median, min, max) = summary(&mut times);
        println!(
            "recovery of {rows} rows: median {median:.3} s (min {min:.3}, max {max:.3}){}",
            if rows == 1_000_000 {
                "; target under 1 s"
            } else {
                ""
            }
        );
        recoveries.push(json!({
            "rows": rows,
            "file_bytes": bytes,
            "runs": times.len(),
            "median_s": round3(median),
            "min_s": round3(min),
            "max_s": round3(max),
        }));
    }
    if !recoveries.is_empty() {
        report["recovery"] = json!(recoveries);
    }
    println!("{report}");
    Ok(())
}

/// One throughput run: seconds taken, and bytes of `messages.csv` written.
fn throughput(
    dir: &Path,
    messages: u64,
    size: usize,
) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let (store, _) = Store::open(dir, 50)?;
    let registry = Arc::new(Registry::new(Vec::new(), 50, 100));
    registry.ensure_room("general");

    // The sender's outbox: one loopback socket, drained by a thread.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut reader = TcpStream::connect(listener.local_addr()?)?;
    let (stream, peer) = listener.accept()?;
    let drain = thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    let flushers = Flushers::start(1)?;
    let connection = Tcp
        .open(stream, peer, Instant::now(), 4096)?
        .ok_or_else(|| std::io::Error::other("no connection"))?;
    let outbox = flushers.outbox(connection.output, usize::MAX / 2, 1)?;

    let room: Arc<str> = "general".into();
    let sender: Arc<str> = "bench".into();
    let text = "x".repeat(size);
    let requests: Vec<Request> = (0..messages)
        .map(|_| Request::Say {
            room: Arc::clone(&room),
            sender: Arc::clone(&sender),
            text: text.clone(),
            from_id: 1,
            from: outbox.clone(),
        })
        .collect();

    let started = Instant::now();
    let (tx, handle) = store.spawn(Arc::clone(&registry))?;
    for request in requests {
        tx.send(request)?;
    }
    drop(tx);
    handle.join().map_err(|_| "the store thread panicked")??;
    let secs = started.elapsed().as_secs_f64();

    drop(outbox);
    flushers.stop();
    let _ = drain.join();
    let bytes = std::fs::metadata(dir.join(MESSAGES_FILE))?.len();
    Ok((secs, bytes))
}

/// Writes a `messages.csv` of `rows` rows; returns its size in bytes.
fn write_messages(dir: &Path, rows: u64) -> std::io::Result<u64> {
    let path = dir.join(MESSAGES_FILE);
    let mut out = BufWriter::with_capacity(8 << 20, File::create(&path)?);
    out.write_all(b"id,timestamp,room,sender,recipient,text\n")?;
    for id in 1..=rows {
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
                "{id},2026-11-21T{h:02}:{m:02}:{s:02}.{ms:03}+00:00,,user{user},user{},a quiet word {id}",
                (id + 1) % 997
            )?;
        } else if id % 7 == 0 {
            writeln!(
                out,
                "{id},2026-11-21T{h:02}:{m:02}:{s:02}.{ms:03}+00:00,room{},user{user},,\"hi, \"\"all\"\": message {id} with a comma\"",
                id % 10
            )?;
        } else {
            writeln!(
                out,
                "{id},2026-11-21T{h:02}:{m:02}:{s:02}.{ms:03}+00:00,room{},user{user},,an ordinary message of some forty bytes {id}",
                id % 10
            )?;
        }
    }
    out.flush()?;
    drop(out);
    Ok(std::fs::metadata(&path)?.len())
}

/// Median, min and max (sorts `values`).
fn summary(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

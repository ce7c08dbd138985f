//! store_cpu: the store thread's CPU time per message, single server and
//! cluster node, with a room of real (loopback) members to deliver to.
//!
//! The store is given `--messages` room messages in batches of `--batch`:
//! on a single server as `Request::Say` (the sender one of the members), on
//! a cluster node as `Request::Logged` batches of entries of the log, as the
//! follower hands them over (the node joins a `redis-server` this example
//! starts on a Unix socket, and needs nothing else of it). Each batch is
//! given once every member has received the one before, so the store sees
//! batches of that size. The store thread's CPU time (`schedstat`: user and
//! system) is read before the first and after the last delivery, and
//! divided by the messages.
//!
//! ```text
//! cargo build --release --example store_cpu
//! target/release/examples/store_cpu --mode cluster --members 33 --batch 40 --runs 5
//! ```

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use chatroom::format;
use chatroom::server::cluster::{self, Cluster, ClusterConfig, Entry, Event, Logged, Pos};
use chatroom::server::moderation::{Bans, Mutes};
use chatroom::server::outbox::{Flushers, Outbox};
use chatroom::server::registry::{Enter, Registry};
use chatroom::server::store::{Request, Store, StoreOptions};
use chatroom::server::transport::Accept;
use chatroom::server::transport::tcp::Tcp;
use chatroom::server::unread::Reads;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Single,
    Cluster,
}

/// Measures the store thread's CPU time per message.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Single server or cluster node.
    #[arg(long, value_enum, default_value_t = Mode::Cluster)]
    mode: Mode,
    /// Messages per run.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Messages per batch given to the store.
    #[arg(long, default_value_t = 40)]
    batch: usize,
    /// Members of the room (each a loopback connection drained by a thread).
    #[arg(long, default_value_t = 33)]
    members: usize,
    /// Sync each batch (the server's default).
    #[arg(long)]
    fsync: bool,
    /// Runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The message text; by default a sentence of 100 bytes (17 words, one
    /// of them a mention). The load generator's is one word.
    #[arg(long)]
    text: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let us = one_run(&args)?;
        println!(
            "run {run}: {:?}, {} members, batches of {}, fsync {}: store {us:.3} us per message",
            args.mode, args.members, args.batch, args.fsync
        );
        results.push(us);
    }
    results.sort_by(f64::total_cmp);
    println!(
        "median {:.3} us per message (min {:.3}, max {:.3})",
        results[results.len() / 2],
        results[0],
        results[results.len() - 1]
    );
    Ok(())
}

struct Redis {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Result<Redis, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .arg("--dir")
        .arg(dir.path())
        .args(["--save", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let url = format!("redis+unix://{}", socket.display());
    Ok(Redis {
        child,
        _dir: dir,
        url,
    })
}

/// The CPU time of this process's thread named `name`, in nanoseconds.
fn thread_cpu(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn one_run(args: &Args) -> Result<f64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let redis = (args.mode == Mode::Cluster).then(start_redis).transpose()?;
    let (mut store, recovered) =
        Store::open_with(dir.path(), 50, &StoreOptions { fsync: args.fsync })?;
    let reads = Arc::new(Reads::open(dir.path()));
    let registry = Arc::new(Registry::new(recovered.rooms, 50, 100).with_reads(reads));
    registry.ensure_room("general");
    if let Some(redis) = &redis {
        let config = ClusterConfig {
            url: redis.url.clone(),
            lease: cluster::DEFAULT_LEASE,
            keep: cluster::DEFAULT_KEEP,
        };
        let node = Cluster::join(config, 0, dir.path()).map_err(|e| e.to_string())?;
        store.set_cluster(node, Bans::open(dir.path()), Arc::new(Mutes::default()));
    }

    let flushers = Flushers::start(2)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let received = Arc::new(AtomicU64::new(0));
    let mut outboxes: Vec<Outbox> = Vec::new();
    let mut drains = Vec::new();
    for i in 0..args.members {
        let mut reader = TcpStream::connect(listener.local_addr()?)?;
        let (stream, peer) = listener.accept()?;
        let counted = Arc::clone(&received);
        drains.push(thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 16];
            while let Ok(n) = reader.read(&mut sink) {
                if n == 0 {
                    break;
                }
                let lines = sink[..n].iter().filter(|&&b| b == b'\n').count();
                counted.fetch_add(lines as u64, Ordering::Relaxed);
            }
        }));
        let connection = Tcp
            .open(stream, peer, Instant::now(), 4096)?
            .ok_or("no connection")?;
        let id = i as u64 + 1;
        let outbox = flushers.outbox(connection.output, 64 << 20, id)?;
        registry.connect(id, outbox.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        registry
            .claim_name(id, &format!("member{i}"))
            .map_err(|e| e.to_string())?;
        registry
            .enter(id, "general", Enter::Join)
            .map_err(|e| e.to_string())?;
        outboxes.push(outbox);
    }
    // Joins and their histories, delivered before the clock starts.
    thread::sleep(Duration::from_millis(300));
    let (tx, handle) = store.spawn(Arc::clone(&registry))?;
    thread::sleep(Duration::from_millis(100));

    let text = args.text.clone().unwrap_or_else(|| {
        let mut text = String::from("hey @member3, did you see the new build? ");
        while text.len() < 100 {
            text.push_str("it is quite fast now ");
        }
        text.truncate(100);
        text
    });
    let room: Arc<str> = "general".into();
    let senders: Vec<Arc<str>> = (0..10).map(|i| format!("member{i}").into()).collect();
    let members = args.members as u64;
    let start_count = received.load(Ordering::Relaxed);
    let before = thread_cpu("store").ok_or("no store thread")?;
    let mut sent = 0u64;
    while sent < args.messages {
        let n = (args.batch as u64).min(args.messages - sent);
        match args.mode {
            Mode::Single => {
                for k in 0..n {
                    let who = ((sent + k) % senders.len() as u64) as usize;
                    tx.send(Request::Say {
                        room: Arc::clone(&room),
                        sender: Arc::clone(&senders[who]),
                        text: text.clone(),
                        from_id: who as u64 + 1,
                        from: outboxes[who].clone(),
                    })?;
                }
            }
            Mode::Cluster => {
                let time = format::file_time(&chrono::Local::now());
                let batch = (0..n)
                    .map(|k| {
                        let id = sent + k + 1;
                        Logged {
                            entry: Entry {
                                pos: Pos::message(id),
                                node: "elsewhere".into(),
                                uid: id,
                                event: Event::Say {
                                    id,
                                    time: time.clone(),
                                    room: "general".into(),
                                    from: format!("member{}", id % 10),
                                    text: text.clone(),
                                },
                            },
                            mine: None,
                            replay: false,
                        }
                    })
                    .collect();
                tx.send(Request::Logged(batch))?;
            }
        }
        sent += n;
        let want = start_count + sent * members;
        let deadline = Instant::now() + Duration::from_secs(20);
        while received.load(Ordering::Relaxed) < want {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {} lines arrived",
                    received.load(Ordering::Relaxed) - start_count,
                    sent * members
                )
                .into());
            }
            thread::sleep(Duration::from_micros(50));
        }
    }
    let after = thread_cpu("store").ok_or("no store thread")?;
    drop(tx);
    for outbox in &outboxes {
        outbox.close();
    }
    drop(outboxes);
    handle.join().map_err(|_| "the store thread panicked")??;
    flushers.stop();
    for drain in drains {
        let _ = drain.join();
    }
    check_file(dir.path(), args.messages)?;
    Ok((after - before) as f64 / 1e3 / args.messages as f64)
}

/// messages.csv holds every message once.
fn check_file(dir: &Path, messages: u64) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(dir.join("messages.csv"))?;
    let rows = text.lines().count() as u64 - 1;
    if rows != messages {
        return Err(format!("messages.csv holds {rows} rows, not {messages}").into());
    }
    Ok(())
}

//! Test harness: the real `server` binary on `--port 0` with a temporary data
//! directory, and line clients over real TCP. Waits are for conditions, with
//! deadlines; nothing sleeps to let things happen.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single expectation may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running `server` process.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// The TLS listener's address, when started with `--tls-cert`.
    pub tls_addr: Option<SocketAddr>,
    pub dir: PathBuf,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server")
}

/// A server with `args` on a fresh temporary data directory, kept alive by
/// the returned `TempDir`.
pub fn server_in_tempdir(args: &[&str]) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), args);
    (dir, server)
}

/// A process's resident memory in KiB, from `/proc`.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn drain(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => into.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
}

impl TestServer {
    /// Starts a server on a free port with its data in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> TestServer {
        Self::start_with(dir, args, |_| {})
    }

    /// Like [`start`], with a chance to adjust the command.
    pub fn start_with(dir: &Path, args: &[&str], adjust: impl FnOnce(&mut Command)) -> TestServer {
        let mut command = Command::new(server_bin());
        // CHATROOM_TEST_ARGS runs every test under other defaults (the
        // benchmark settings, say); a test's own flags come later and win.
        let extra = std::env::var("CHATROOM_TEST_ARGS").unwrap_or_default();
        command
            .args(extra.split_whitespace())
            .args(["--port", "0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("the server binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain(child.stderr.take().unwrap(), Arc::clone(&stderr));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).expect("server stdout");
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not start: stdout {first:?}, stderr {:?}",
                stderr.lock().unwrap()
            );
        };
        let addr: SocketAddr = addr.parse().expect("a socket address");
        let tls_addr = args.contains(&"--tls-cert").then(|| {
            let mut second = String::new();
            out.read_line(&mut second).expect("server stdout");
            second
                .trim()
                .strip_prefix("listening on ")
                .and_then(|rest| rest.strip_suffix(" (tls)"))
                .unwrap_or_else(|| panic!("no TLS ready line: {second:?}"))
                .parse::<SocketAddr>()
                .expect("a socket address")
        });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        drain(out, Arc::clone(&stdout));
        TestServer {
            child,
            addr,
            tls_addr,
            dir: dir.to_path_buf(),
            stdout,
            stderr,
        }
    }

    /// A raw connection, nothing sent.
    pub fn connect_raw(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A client that has named itself and been accepted.
    pub fn join(&self, name: &str) -> Client {
        let mut client = self.connect_raw();
        client.send(name);
        client.expect(|l| l.starts_with("* ") && l.contains(name) && l.contains("hello"));
        client.expect(|l| l.starts_with("* you joined") || l.contains("lobby"));
        client
    }

    /// A client that logged in with a password on a private server.
    pub fn login(&self, name: &str, password: &str) -> Client {
        let mut client = self.connect_raw();
        client.send(name);
        client.expect(|l| l == "Password:");
        client.send(password);
        client.expect(|l| l.starts_with("* hello "));
        client.expect(|l| l.starts_with("* you joined") || l.contains("lobby"));
        client
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the server to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9` and wait.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit();
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until the server's stderr has a line containing `needle`.
    /// The address of the `listening on HOST:PORT (KIND)` ready line
    /// (`web`, `metrics`, `tls`), waiting for it.
    pub fn listening(&self, kind: &str) -> SocketAddr {
        let deadline = Instant::now() + PATIENCE;
        let suffix = format!(" ({kind})");
        loop {
            let found = self.stdout.lock().unwrap().iter().find_map(|l| {
                l.strip_prefix("listening on ")?
                    .strip_suffix(&suffix)?
                    .parse::<SocketAddr>()
                    .ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "no {kind} ready line");
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn expect_stderr(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "stderr never said {needle:?}: {}",
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn messages(&self) -> Vec<csv::StringRecord> {
        read_rows(&self.dir.join("messages.csv"))
    }

    pub fn events(&self) -> Vec<csv::StringRecord> {
        read_rows(&self.dir.join("data.csv"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `server` subcommand with `stdin` piped in; returns (success, stdout, stderr).
pub fn server_tool(dir: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(server_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The rows of a CSV file, header excluded.
pub fn read_rows(path: &Path) -> Vec<csv::StringRecord> {
    let mut reader = csv::Reader::from_path(path).expect("a CSV file");
    reader
        .records()
        .map(|r| r.expect("a well-formed row"))
        .collect()
}

/// A line client over TCP, or over TLS through the client library's stream.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    /// Every line received so far.
    pub seen: Vec<String>,
    /// Lines received but not yet consumed by an expectation.
    cursor: usize,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let reader = BufReader::new(Box::new(stream.try_clone().unwrap()) as Box<dyn Read + Send>);
        Client {
            writer: Box::new(stream.try_clone().unwrap()),
            stream,
            reader,
            seen: Vec::new(),
            cursor: 0,
        }
    }

    /// A TLS connection to `addr`, trusting `trust`; panics if the
    /// handshake fails (see [`Client::try_tls`]).
    pub fn tls(addr: SocketAddr, trust: chatroom::client::trust::Trust) -> Client {
        Self::try_tls(addr, trust).unwrap_or_else(|e| panic!("TLS connection failed: {e}"))
    }

    /// A TLS connection to `addr`, trusting `trust`, or why not.
    pub fn try_tls(
        addr: SocketAddr,
        trust: chatroom::client::trust::Trust,
    ) -> Result<Client, chatroom::client::ClientError> {
        let options = chatroom::client::Options {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls: Some(trust),
            ..Default::default()
        };
        let secure = chatroom::client::link::connect(&options, false)?;
        let stream = secure.tcp().expect("the socket under TLS");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Ok(Client {
            reader: BufReader::new(Box::new(secure.clone()) as Box<dyn Read + Send>),
            writer: Box::new(secure),
            stream,
            seen: Vec::new(),
            cursor: 0,
        })
    }

    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send to the server");
    }

    /// Reads one more line; `None` on timeout; panics at end of stream.
    fn read_one(&mut self) -> Result<Option<String>, ()> {
        let mut buf = Vec::new();
        loop {
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return Err(()),
                Ok(_) if buf.ends_with(b"\n") => {
                    buf.pop();
                    let line = String::from_utf8(buf).expect("the server sends UTF-8");
                    self.seen.push(line.clone());
                    return Ok(Some(line));
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                }
                Err(_) => return Err(()),
            }
        }
    }

    /// Waits for a line (after those already consumed) that matches; returns it.
    pub fn expect(&mut self, matches: impl Fn(&str) -> bool) -> String {
        self.expect_within(PATIENCE, matches)
    }

    /// Like [`expect`], with its own patience (a cluster noticing a dead
    /// node takes its lease and a grace).
    pub fn expect_within(&mut self, patience: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + patience;
        loop {
            while self.cursor < self.seen.len() {
                let line = self.seen[self.cursor].clone();
                self.cursor += 1;
                if matches(&line) {
                    return line;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no matching line arrived; seen: {:#?}",
                self.seen
            );
            if self.read_one().is_err() {
                panic!(
                    "connection closed before a matching line; seen: {:#?}",
                    self.seen
                );
            }
        }
    }

    /// Waits for a line containing `needle`.
    pub fn expect_line(&mut self, needle: &str) -> String {
        self.expect(|l| l.contains(needle))
    }

    /// Waits until a line containing each of `needles` has arrived, in any order.
    pub fn expect_all(&mut self, needles: &[&str]) {
        let mut missing: Vec<&str> = needles.to_vec();
        while !missing.is_empty() {
            let line = self.expect(|l| missing.iter().any(|n| l.contains(n)));
            missing.retain(|n| !line.contains(n));
        }
    }

    /// Waits for the server to close the connection; returns the lines not yet
    /// consumed.
    pub fn expect_closed(&mut self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(
                Instant::now() < deadline,
                "the server did not close; seen: {:#?}",
                self.seen
            );
            if self.read_one().is_err() {
                let rest = self.seen[self.cursor..].to_vec();
                self.cursor = self.seen.len();
                return rest;
            }
        }
    }

    /// Every line received up to the answer of a `/who` sent now: since lines
    /// reach a client in order, what was queued for it before is in the result.
    pub fn sync(&mut self) -> Vec<String> {
        let start = self.cursor;
        self.send("/who");
        self.expect(|l| l.starts_with("* online ("));
        self.seen[start..].to_vec()
    }
}

/// The chat lines (`[time] name: text`) among `lines`, as `name: text`.
pub fn chat_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with('[') && !l.contains("(whisper"))
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_string()))
        .collect()
}

/// A `redis-server` of a test's own, on a unix socket in a temporary
/// directory (never a system service), with AOF and `appendfsync always`
/// as docs/cluster.md recommends.
pub struct TestRedis {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl TestRedis {
    /// Starts one in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> TestRedis {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("redis.sock");
        let child = Self::spawn(dir, &socket);
        let redis = TestRedis {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        redis.wait_ready();
        redis
    }

    fn spawn(dir: &Path, socket: &Path) -> Child {
        Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (.ci/run installs it)")
    }

    /// The URL nodes are given.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// A connection for the test's own looks and changes.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answered = redis::Client::open(self.url().as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if answered.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Stops it the way a service manager does (SIGTERM: its AOF is
    /// complete) and starts it again on the same files and socket.
    pub fn restart(&mut self) {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap();
        let _ = std::fs::remove_file(&self.socket);
        self.child = Self::spawn(&self.dir, &self.socket);
        self.wait_ready();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, or fails the test saying `what`.
pub fn wait_until(patience: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(25));
    }
}

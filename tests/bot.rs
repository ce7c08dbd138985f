//! The example bot (`examples/bot.rs`) against the real server: it welcomes
//! whoever joins its room, answers `!time` and `!who`, ignores history, and
//! logs in to a private server with its password.
//!
//! The bot's source is compiled into this test (`#[path]`) rather than run
//! from `target/debug/examples/bot`: `cargo test --test bot` does not build
//! examples, and a stale binary would test old code.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)] // its `main` and flags are not used here
#[path = "../examples/bot.rs"]
mod bot;

/// Longest wait for anything the test expects.
const PATIENCE: Duration = Duration::from_secs(10);

/// The real `server` binary on a free port and a fresh data directory; killed
/// when dropped.
struct Server {
    child: Child,
    addr: String,
    /// The TLS listener (HOST:PORT) and the CA that signed its certificate,
    /// for a server started with [`Server::start_tls`].
    tls: Option<(String, std::path::PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// An open server: anyone may pick a name.
    fn start() -> Server {
        Server::start_with_accounts(&[])
    }

    /// An open server with TLS too, its certificate made by `tls-init`.
    fn start_tls() -> Server {
        Server::start_full(&[], true)
    }

    /// A private server with these accounts (name, password).
    fn start_with_accounts(accounts: &[(&str, &str)]) -> Server {
        Server::start_full(accounts, false)
    }

    fn start_full(accounts: &[(&str, &str)], tls: bool) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, password) in accounts {
            add_user(dir.path(), name, password);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command.args(["--port", "0", "--data-dir"]).arg(dir.path());
        if tls {
            let made = Command::new(env!("CARGO_BIN_EXE_server"))
                .args(["tls-init", "--name", "localhost", "--data-dir"])
                .arg(dir.path())
                .output()
                .expect("tls-init runs");
            assert!(made.status.success(), "tls-init: {made:?}");
            command
                .args(["--tls-port", "0", "--tls-cert"])
                .arg(dir.path().join("tls/cert.pem"))
                .arg("--tls-key")
                .arg(dir.path().join("tls/key.pem"));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        // Drain both pipes for the server's whole life, so it never blocks on them.
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
            }
        });
        let first = lines
            .recv_timeout(PATIENCE)
            .expect("the server prints `listening on HOST:PORT`");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let tls = tls.then(|| {
            let second = lines
                .recv_timeout(PATIENCE)
                .expect("the server prints `listening on HOST:PORT (tls)`");
            let tls_addr = second
                .strip_prefix("listening on ")
                .and_then(|rest| rest.strip_suffix(" (tls)"))
                .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
                .to_string();
            (tls_addr, dir.path().join("tls/ca.pem"))
        });
        Server {
            child,
            addr,
            tls,
            _dir: dir,
        }
    }
}

/// `server add-user --data-dir DIR NAME`, with the password on stdin.
fn add_user(dir: &Path, name: &str, password: &str) {
    let mut tool = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["add-user", name, "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("server add-user starts");
    tool.stdin
        .take()
        .expect("piped stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("add-user reads the password");
    assert!(
        tool.wait().expect("add-user ends").success(),
        "add-user {name}"
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person at `nc`: sends lines, waits for the line it expects.
struct User {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    seen: Vec<String>,
}

impl User {
    fn login(addr: &str, name: &str) -> User {
        User::login_with(addr, name, None)
    }

    /// Logs in, answering the `Password:` prompt of a private server.
    fn login_with(addr: &str, name: &str, password: Option<&str>) -> User {
        let writer = TcpStream::connect(addr).expect("the server accepts");
        let reader = BufReader::new(writer.try_clone().expect("a second handle"));
        let mut user = User {
            reader,
            writer,
            seen: Vec::new(),
        };
        user.send(name);
        if let Some(password) = password {
            user.send(password);
        }
        user.expect(|l| l.starts_with("* hello "), "the login line");
        user
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("the server takes a line");
    }

    /// Reads until a line satisfies `wanted`, for at most [`PATIENCE`].
    fn expect(&mut self, wanted: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what} within {PATIENCE:?}; saw {:#?}",
                self.seen
            );
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("a read timeout");
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!(
                    "the server closed while waiting for {what}: {:#?}",
                    self.seen
                ),
                Ok(_) => {}
                Err(e) => panic!("no {what} ({e}); saw {:#?}", self.seen),
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }
}

fn start_bot(addr: &str, name: &'static str, password: Option<&'static str>, room: &'static str) {
    let stream =
        chatroom::client::Stream::plain(TcpStream::connect(addr).expect("the bot connects"));
    thread::spawn(move || bot::run(stream, name, password, Some(room)));
}

#[test]
fn bot_welcomes_newcomers_and_answers_time_and_who_but_not_history() {
    let server = Server::start();
    let mut alice = User::login(&server.addr, "alice");
    alice.send("/create lab");
    alice.expect(|l| l.starts_with("* you created #lab"), "the new room");
    // Said before the bot arrives: the bot sees it only as replayed history.
    alice.send("!time");
    alice.expect(|l| l.ends_with("] alice: !time"), "the echo of !time");

    start_bot(&server.addr, "bot", None, "lab");
    alice.expect(|l| l == "* bot joined #lab", "the bot joining #lab");

    // Come back in: the bot says hello.
    alice.send("/leave");
    alice.expect(|l| l.starts_with("* you left #lab"), "leaving #lab");
    alice.send("/join lab");
    let first = alice.expect(|l| l.contains("] bot: "), "a line from the bot");
    assert!(
        first.ends_with("] bot: welcome, alice!"),
        "the bot's first line is its welcome, not an answer to history: {first:?}"
    );

    alice.send("!time");
    let time = alice.expect(|l| l.contains("] bot: the time is "), "the time");
    let year = chrono::Local::now().format("%Y").to_string();
    assert!(time.contains(&year), "{time:?}");

    alice.send("!who");
    let who = alice.expect(|l| l.contains("] bot: online ("), "the names online");
    assert!(
        who.contains("alice (#lab)") && who.contains("bot (#lab)"),
        "{who:?}"
    );

    alice.send("/msg bot !time");
    alice.expect(
        |l| l.contains("] (whisper) bot: the time is "),
        "a whispered answer",
    );
}

#[test]
fn bot_creates_its_room_when_it_is_missing() {
    let server = Server::start();
    let mut bob = User::login(&server.addr, "bob");
    bob.expect(
        |l| l.starts_with("* you joined #general"),
        "the default room",
    );
    start_bot(&server.addr, "bot", None, "den");
    // The bot lands in #general like everyone, then `/join den` fails and it
    // sends `/create den`, which moves it out of #general.
    bob.expect(|l| l == "* bot joined #general", "the bot arriving");
    bob.expect(|l| l == "* bot left #general", "the bot moving to #den");
    bob.send("/join den");
    bob.expect(|l| l.starts_with("* you joined #den (2 here)"), "#den");
    bob.expect(|l| l.ends_with("] bot: welcome, bob!"), "the welcome");
}

#[test]
fn bot_logs_in_to_a_private_server_with_its_password() {
    let server = Server::start_with_accounts(&[("alice", "alice pw"), ("bot", "bot pw")]);
    let mut alice = User::login_with(&server.addr, "alice", Some("alice pw"));
    alice.expect(
        |l| l.starts_with("* you joined #general"),
        "the default room",
    );
    start_bot(&server.addr, "bot", Some("bot pw"), "general");
    alice.expect(|l| l == "* bot joined #general", "the bot logging in");
    alice.send("!time");
    alice.expect(|l| l.contains("] bot: the time is "), "the time");
}

#[test]
fn bot_without_a_password_gives_up_on_a_private_server() {
    let server = Server::start_with_accounts(&[("bot", "bot pw")]);
    let stream = TcpStream::connect(&server.addr).expect("the bot connects");
    let err = bot::run(chatroom::client::Stream::plain(stream), "bot", None, None)
        .expect_err("no login without a password");
    assert!(err.to_string().contains("CHATROOM_PASSWORD"), "{err}");
}

#[test]
fn bot_answers_a_burst_of_requests_in_full_without_pacing_itself() {
    let server = Server::start();
    let mut alice = User::login(&server.addr, "alice");
    alice.send("/create lab");
    alice.expect(|l| l.starts_with("* you created #lab"), "the new room");
    start_bot(&server.addr, "bot", None, "lab");
    alice.expect(|l| l == "* bot joined #lab", "the bot joining #lab");
    // Thirty questions in one write: more than the server's burst for both
    // alice and the bot. Flood control slows both down and refuses nothing.
    let burst: String = (0..30).map(|_| "!time\n").collect();
    alice.writer.write_all(burst.as_bytes()).unwrap();
    for i in 0..30 {
        alice.expect(
            |l| l.contains("] bot: the time is "),
            &format!("answer {i} of 30"),
        );
    }
    assert!(
        !alice.seen.iter().any(|l| l.starts_with("! ")),
        "{:#?}",
        alice.seen
    );
}

#[test]
fn the_bot_works_over_tls_and_refuses_a_certificate_nobody_vouches_for() {
    let server = Server::start_tls();
    let (tls_addr, ca) = server.tls.clone().expect("a TLS listener");
    let mut alice = User::login(&server.addr, "alice");
    let stream = bot::connect_to(
        &tls_addr,
        Some(chatroom::client::trust::Trust::Ca(ca.clone())),
    )
    .expect("the bot connects over TLS");
    thread::spawn(move || bot::run(stream, "tlsbot", None, None));
    alice.expect(|l| l == "* tlsbot joined #general", "the bot joining");
    alice.send("!time");
    alice.expect(
        |l| l.contains("] tlsbot: the time is "),
        "the time over TLS",
    );

    // Pinned to another certificate: no connection, and it says why.
    let err = bot::connect_to(
        &tls_addr,
        Some(chatroom::client::trust::Trust::Pin([7; 32])),
    )
    .expect_err("a wrong pin is refused");
    assert!(err.to_string().contains("--tls-fingerprint"), "{err}");
}

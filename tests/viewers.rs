//! The two viewers, run as a user runs them, against files written by a real
//! server and against hand-made files with the edge cases a server never writes.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// Lines a child prints, read by a thread so the child never blocks on a full pipe.
fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line that satisfies `want`; returns the lines seen up to it.
fn wait_for_line(rx: &Receiver<String>, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = want(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no matching line within {DEADLINE:?}; saw {seen:#?}"),
        }
    }
}

/// A real server on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--port", "0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let seen = wait_for_line(&stdout, |l| l.starts_with("listening on "));
        let addr = seen.last().unwrap()["listening on ".len()..].to_string();
        // Keep draining both pipes for the server's whole life.
        thread::spawn(move || while stdout.recv().is_ok() {});
        thread::spawn(move || while stderr.recv().is_ok() {});
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat client over real TCP.
struct Client {
    stream: TcpStream,
    lines: Receiver<String>,
}

impl Client {
    fn join(server: &Server, name: &str) -> Client {
        let stream = TcpStream::connect(&server.addr).expect("connect");
        let lines = lines_of(stream.try_clone().unwrap());
        let mut client = Client { stream, lines };
        client.send(name);
        client.expect(|l| l.starts_with("* ") && l.contains(name));
        client.expect(|l| l.contains("end of recent messages") || l.contains("joined"));
        client
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send a line");
    }

    fn expect(&mut self, want: impl Fn(&str) -> bool) -> String {
        wait_for_line(&self.lines, want).pop().unwrap()
    }

    /// Says `text` and waits for its echo: by then it is in messages.csv.
    fn say(&mut self, name: &str, text: &str) {
        self.send(text);
        let shown = format!("{name}: {text}");
        self.expect(|l| l.contains(&shown));
    }
}

fn run(bin: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run the viewer")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8 output")
        .lines()
        .map(str::to_string)
        .collect()
}

const LIST: &str = env!("CARGO_BIN_EXE_list_messages");
const LOGS: &str = env!("CARGO_BIN_EXE_message_logs");

/// alice and bob chat in #general and #dev, and alice whispers to bob.
fn a_small_chat(server: &Server) -> (Client, Client) {
    let mut alice = Client::join(server, "alice");
    let mut bob = Client::join(server, "bob");
    alice.say("alice", "hello, everyone — ça va? \"quoted\"");
    bob.send("/create dev");
    bob.expect(|l| l.starts_with("* ") && l.contains("dev"));
    bob.say("bob", "in dev now");
    alice.send("/msg bob psst, over here");
    alice.expect(|l| l.contains("whisper") && l.contains("psst, over here"));
    (alice, bob)
}

#[test]
fn list_messages_shows_a_real_chat_with_rooms_and_whispers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let _clients = a_small_chat(&server);

    let lines = stdout_lines(&run(LIST, dir.path(), &["--once"]));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains("#general")
            && lines[0].contains("alice")
            && lines[0].ends_with("hello, everyone — ça va? \"quoted\""),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("#dev") && lines[1].contains("bob") && lines[1].ends_with("in dev now")
    );
    assert!(
        lines[2].contains("whisper")
            && lines[2].contains("alice → bob")
            && lines[2].ends_with("psst, over here"),
        "{lines:#?}"
    );
    // Every line starts with a date and a time, and the text column lines up.
    for line in &lines {
        assert_eq!(&line[4..5], "-", "{line}");
        assert_eq!(&line[10..11], " ", "{line}");
    }
    let column = |l: &str| l.char_indices().nth(48).map(|(i, _)| i);
    assert!(lines.iter().all(|l| column(l).is_some()));

    let dev = stdout_lines(&run(LIST, dir.path(), &["--once", "--room", "#DEV"]));
    assert_eq!(dev.len(), 1);
    assert!(dev[0].ends_with("in dev now"));
    let found = stdout_lines(&run(LIST, dir.path(), &["--once", "--grep", "PSST"]));
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("whisper"));
    let last = stdout_lines(&run(LIST, dir.path(), &["--once", "--tail", "1"]));
    assert_eq!(last.len(), 1);
    assert!(last[0].ends_with("psst, over here"));
}

#[test]
fn message_logs_shows_connections_and_a_summary_from_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut alice, _bob) = a_small_chat(&server);
    alice.send("/quit");
    alice.expect(|l| l.contains("goodbye"));

    // The disconnect is written when the server notices the close: poll for it.
    let deadline = Instant::now() + DEADLINE;
    let lines = loop {
        let lines = stdout_lines(&run(LOGS, dir.path(), &["--once"]));
        if lines.iter().any(|l| l.contains("disconnect")) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no disconnect logged: {lines:#?}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 5, "{lines:#?}"); // 2 connects, 2 logins, 1 disconnect
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "connect").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "login").count(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("127.0.0.1:") && l.contains(" thread "))
    );
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "no colour into a pipe"
    );

    let alices = stdout_lines(&run(LOGS, dir.path(), &["--once", "--name", "ALICE"]));
    assert_eq!(alices.len(), 2, "{alices:#?}"); // login and disconnect carry the name
    assert!(alices.iter().all(|l| l.ends_with("alice")));
    let none = stdout_lines(&run(LOGS, dir.path(), &["--once", "--ip", "10.9.9.9"]));
    assert!(none.is_empty());

    let stats = stdout_lines(&run(LOGS, dir.path(), &["--stats"]));
    assert_eq!(
        stats,
        ["online 1 · connections 2 · names 2 · ips 1 · messages: #dev 1, #general 1, whispers 1"]
    );
}

const HEADER: &str = "id,timestamp,room,sender,recipient,text\n";

#[test]
fn hand_edited_rows_are_reported_and_skipped_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(
        b"1,2026-11-21T18:05:09.123+00:00,general,alice,,\"multi\nline, with \"\"quotes\"\"\"\r\n",
    );
    bytes.extend_from_slice(b"2,2026-11-21T18:05:10.000+00:00,general,bob\n");
    bytes.extend_from_slice(b"3,2026-11-21T18:05:11.000+00:00,general,bob,,\xff\xfe not utf-8\n");
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(b"4,not a time,general,bob,,hi\n");
    bytes.extend_from_slice(
        b"5,2026-11-21T18:05:12.000+00:00,general,eve,,\"\x1b]0;pwned\x07\x1b[2Jclear\"\n",
    );
    bytes.extend_from_slice(b"6,2026-11-21T18:05:13.000+00:00,general,carol,,still being writ");
    std::fs::write(dir.path().join("messages.csv"), &bytes).unwrap();

    let lines = stdout_lines(&run(LIST, dir.path(), &["--once"]));
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(
        lines[0].ends_with("multi line, with \"quotes\""),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("[malformed row at byte ")
            && lines[1].contains("4 columns instead of 6")
    );
    assert!(lines[2].contains("not UTF-8"), "{lines:#?}");
    assert!(lines[3].contains("bad timestamp"), "{lines:#?}");
    assert!(lines[4].ends_with("]0;pwned[2Jclear"), "{lines:#?}");
    assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));
    assert!(
        lines.iter().all(|l| !l.contains("still being")),
        "a partial row is not shown"
    );

    // A filter leaves malformed rows out, as it cannot tell their room.
    let general = stdout_lines(&run(LIST, dir.path(), &["--once", "--room", "general"]));
    assert_eq!(general.len(), 2, "{general:#?}");

    let mut events = b"timestamp,ip,port,thread,name,event\n".to_vec();
    events.extend_from_slice(b"2026-11-21T18:05:09.123+00:00,127.0.0.1,5000,1,,connect\n");
    events.extend_from_slice(b"2026-11-21T18:05:09.200+00:00,127.0.0.1,port,1,alice,login\n");
    events.extend_from_slice(b"2026-11-21T18:05:09.300+00:00,::1,5001,2,bob,rename\n");
    std::fs::write(dir.path().join("data.csv"), &events).unwrap();
    let log = stdout_lines(&run(LOGS, dir.path(), &["--once"]));
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(log[1].contains("bad port"));
    assert!(
        log[2].contains("rename") && log[2].contains("[::1]:5001"),
        "new kinds are shown"
    );
    let stats = stdout_lines(&run(LOGS, dir.path(), &["--stats"]));
    assert_eq!(
        stats,
        [
            "online 1 · connections 1 · names 1 · ips 2 · messages: #general 2, whispers 0 · 4 malformed rows skipped"
        ]
    );
}

#[test]
fn a_foreign_file_gets_a_warning_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("messages.csv"), "name,score\nx,1\n").unwrap();
    let output = run(LIST, dir.path(), &["--once"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not start with the header of messages.csv"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 columns instead of 6"));
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A viewer following in the background, killed when dropped.
struct Follower {
    child: Child,
    lines: Receiver<String>,
    errors: Receiver<String>,
}

impl Follower {
    fn start(bin: &str, dir: &Path, args: &[&str]) -> Follower {
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let errors = lines_of(child.stderr.take().unwrap());
        Follower {
            child,
            lines,
            errors,
        }
    }

    fn expect(&self, want: impl Fn(&str) -> bool) -> Vec<String> {
        wait_for_line(&self.lines, want)
    }

    /// Waits until the viewer says it is waiting for its file to appear.
    fn expect_waiting(&self) {
        wait_for_line(&self.errors, |l| l.starts_with("waiting for "));
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn following_waits_for_the_file_for_whole_rows_and_starts_over_when_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.csv");
    let follower = Follower::start(LIST, dir.path(), &["--follow"]);
    follower.expect_waiting();

    // The file appears after the viewer started.
    append(&path, HEADER);
    append(
        &path,
        "1,2026-11-21T18:05:09.123+00:00,general,alice,,first\n",
    );
    follower.expect(|l| l.ends_with("first"));

    // Half a row is held back until its line end arrives.
    append(&path, "2,2026-11-21T18:05:10.000+00:00,general,bob,,sec");
    append(
        &path,
        "ond half\n3,2026-11-21T18:05:11.000+00:00,general,bob,,third\n",
    );
    let seen = follower.expect(|l| l.ends_with("third"));
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].ends_with("second half"), "{seen:#?}");

    // Truncated and written again: the viewer starts over, no crash.
    std::fs::write(
        &path,
        format!("{HEADER}1,2026-11-21T18:06:00.000+00:00,general,carol,,anew\n"),
    )
    .unwrap();
    follower.expect(|l| l.ends_with("anew"));

    // Replaced by another file (a rotation): picked up too.
    let next = dir.path().join("next.csv");
    std::fs::write(
        &next,
        format!("{HEADER}1,2026-11-21T18:07:00.000+00:00,general,dan,,rotated\n"),
    )
    .unwrap();
    std::fs::rename(&next, &path).unwrap();
    follower.expect(|l| l.ends_with("rotated"));
}

#[test]
fn message_logs_follows_a_real_server_live() {
    let dir = tempfile::tempdir().unwrap();
    let follower = Follower::start(LOGS, dir.path(), &["--follow", "--tail", "0"]);
    follower.expect_waiting();
    let server = Server::start(dir.path());
    let _carol = Client::join(&server, "carol");
    follower.expect(|l| l.contains("login") && l.ends_with("carol"));
}

#[test]
fn a_missing_file_or_a_bad_flag_is_one_line_a_user_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    for bin in [LIST, LOGS] {
        let output = run(bin, &dir.path().join("nowhere"), &["--once"]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("--data-dir"),
            "{stderr}"
        );
    }
    let output = run(LIST, dir.path(), &["--tail", "lots"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.lines().next().unwrap().contains("lots"), "{stderr}");
    let output = run(LIST, dir.path(), &["--once", "--follow"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = HEADER.to_string();
    for i in 1..=20_000 {
        text.push_str(&format!(
            "{i},2026-11-21T18:05:09.123+00:00,general,alice,,row {i}\n"
        ));
    }
    std::fs::write(dir.path().join("messages.csv"), text).unwrap();
    let mut child = Command::new(LIST)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.ends_with("row 1\n"));
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

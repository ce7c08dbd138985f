//! TLS in the real server: certificates made at test time by `server
//! tls-init`, TLS and plain clients in one room, `openssl s_client` as an
//! outside client (with a key update), old protocol versions refused, the
//! client binary's trust flags, certificates replaced without a restart, a
//! handshake that never comes, and `kill -9` under TLS chat.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chatroom::client::trust::Trust;
use common::{Client, PATIENCE, TestServer, chat_lines, server_tool};

/// What `server tls-init` made in a data directory.
struct Made {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

/// Runs `server tls-init --name localhost` in `dir` (again: a new server
/// certificate from the same authority).
fn tls_init(dir: &Path) -> Made {
    let (ok, out, err) = server_tool(dir, &["tls-init", "--name", "localhost"], "");
    assert!(ok, "tls-init failed: {err}");
    let fingerprint = out
        .lines()
        .find_map(|l| l.strip_prefix("SHA-256 fingerprint: "))
        .expect("tls-init prints the fingerprint")
        .to_string();
    assert!(
        out.contains("client --tls --host localhost --tls-ca "),
        "tls-init prints the client command: {out}"
    );
    let tls = dir.join("tls");
    Made {
        ca: tls.join("ca.pem"),
        cert: tls.join("cert.pem"),
        key: tls.join("key.pem"),
        fingerprint,
    }
}

fn pin(fingerprint: &str) -> Trust {
    Trust::Pin(chatroom::tls::parse_fingerprint(fingerprint).unwrap())
}

/// A server with TLS on, its files made by tls-init, and what was made.
fn tls_server(dir: &Path, extra: &[&str]) -> (TestServer, Made) {
    let made = tls_init(dir);
    let cert = made.cert.to_str().unwrap().to_string();
    let key = made.key.to_str().unwrap().to_string();
    let mut args = vec!["--tls-port", "0", "--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    let server = TestServer::start(dir, &args);
    (server, made)
}

/// A TLS client that named itself and was accepted.
fn join_tls(addr: SocketAddr, trust: Trust, name: &str) -> Client {
    let mut client = Client::tls(addr, trust);
    client.send(name);
    client.expect(|l| l.starts_with("* hello ") && l.contains(name));
    client.expect(|l| l.starts_with("* you joined"));
    client
}

#[test]
fn a_tls_client_and_a_plain_client_chat_both_ways_in_one_room() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &[]);
    let tls_addr = server.tls_addr.unwrap();
    let mut alice = join_tls(tls_addr, Trust::Ca(made.ca.clone()), "alice");
    let mut bob = server.join("bob");
    alice.send("hello from TLS");
    bob.expect_line("alice: hello from TLS");
    bob.send("hello from plain TCP");
    alice.expect_line("bob: hello from plain TCP");
    // After the handshake it is the same protocol: commands, whispers, JSON.
    alice.send("/msg bob a secret");
    bob.expect_line("(whisper) alice: a secret");
    alice.send("/mode json");
    alice.expect(|l| l.starts_with('{'));
    bob.send("in json now");
    alice.expect(|l| l.contains(r#""text":"in json now""#));
    // The plain port speaks no TLS and the TLS port no plain text.
    let mut wrong = Client::connect(tls_addr);
    wrong.send("carol");
    let rest = wrong.expect_closed();
    assert!(rest.iter().all(|l| !l.contains("hello")), "{rest:?}");
}

/// `openssl s_client` in interactive mode, its output collected.
struct SClient {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl SClient {
    fn start(addr: SocketAddr, extra: &[&str]) -> SClient {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is installed (.ci/run installs it)");
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = Arc::clone(&out);
            thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    out.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        SClient { child, out }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until its output contains `needle`.
    fn expect(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "openssl never printed {needle:?}:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit; its status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "openssl did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn openssl_s_client_chats_and_a_key_update_mid_session_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &[]);
    let ca = made.ca.to_str().unwrap();
    let mut outside = SClient::start(
        server.tls_addr.unwrap(),
        &["-CAfile", ca, "-verify_return_error", "-tls1_3"],
    );
    outside.expect("Verify return code: 0 (ok)");
    outside.expect("Name:");
    outside.send("olga");
    outside.expect("* hello olga!");
    let mut bob = server.join("bob");
    outside.send("before the key update");
    bob.expect_line("olga: before the key update");
    // `K` alone on a line: s_client sends a KeyUpdate asking for ours too.
    outside.send("K");
    outside.expect("KEYUPDATE");
    outside.send("after the key update");
    bob.expect_line("olga: after the key update");
    bob.send("still reading you");
    outside.expect("bob: still reading you");
    outside.send("/quit");
    outside.expect("* goodbye, olga");
    assert!(!server.stderr_text().contains("did not open"));
}

#[test]
fn tls_1_2_is_served_and_tls_1_1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &[]);
    let ca = made.ca.to_str().unwrap();
    let addr = server.tls_addr.unwrap();
    let mut twelve = SClient::start(addr, &["-CAfile", ca, "-tls1_2"]);
    twelve.expect("Protocol  : TLSv1.2");
    twelve.expect("Name:");
    twelve.send("twelve");
    twelve.expect("* hello twelve!");
    // SECLEVEL=0 lets this openssl really offer TLS 1.1; the server says no.
    let mut eleven = SClient::start(addr, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    let status = eleven.wait();
    assert!(
        !status.success(),
        "TLS 1.1 was accepted:\n{}",
        eleven.text()
    );
    assert!(!eleven.text().contains("Name:"), "{}", eleven.text());
    server.expect_stderr("its tls connection did not open");
    // The refusal held up nobody.
    twelve.send("still here");
    twelve.expect("twelve: still here");
}

/// Runs the client binary in a pipe with `input`; (status, stdout, stderr).
fn run_client(
    args: &[&str],
    input: &str,
    config: &Path,
) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_client_trusts_a_ca_or_a_pin_and_refuses_a_wrong_pin_or_a_stranger_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &[]);
    let port = server.tls_addr.unwrap().port().to_string();
    let mut watcher = server.join("watcher");
    let ca = made.ca.to_str().unwrap();

    let (status, out, err) = run_client(
        &["--host", "localhost", "--port", &port, "--tls-ca", ca],
        "viaca\nsigned by the CA\n",
        config.path(),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("* hello viaca!"), "{out}");
    watcher.expect_line("viaca: signed by the CA");

    let (status, out, err) = run_client(
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--tls-fingerprint",
            &made.fingerprint,
        ],
        "viapin\npinned\n",
        config.path(),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("* hello viapin!"), "{out}");
    watcher.expect_line("viapin: pinned");

    let mut wrong = made.fingerprint.clone();
    wrong.replace_range(0..2, if wrong.starts_with("00") { "11" } else { "00" });
    let (status, out, err) = run_client(
        &["--port", &port, "--tls-fingerprint", &wrong],
        "intruder\nnot sent\n",
        config.path(),
    );
    assert!(!status.success());
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not the one --tls-fingerprint names"), "{err}");
    assert!(err.contains(&made.fingerprint), "{err}");

    // --tls alone: the system does not know this private CA, and a pipe
    // cannot be asked, so it says what to do instead.
    let (status, out, err) = run_client(
        &["--tls", "--port", &port],
        "stranger\nnot sent\n",
        config.path(),
    );
    assert!(!status.success());
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("--tls-fingerprint {}", made.fingerprint)),
        "{err}"
    );

    // Once trusted (as a yes on a terminal writes it), it is remembered...
    let known = config.path().join("chatroom").join("known_hosts");
    std::fs::create_dir_all(known.parent().unwrap()).unwrap();
    std::fs::write(&known, format!("127.0.0.1:{port} {}\n", made.fingerprint)).unwrap();
    let (status, out, err) = run_client(
        &["--tls", "--port", &port],
        "remembered\nknown host\n",
        config.path(),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("* hello remembered!"), "{out}");
    watcher.expect_line("remembered: known host");

    // ...and a different certificate for the same server is refused loudly.
    std::fs::write(&known, format!("127.0.0.1:{port} {wrong}\n")).unwrap();
    let (status, out, err) = run_client(
        &["--tls", "--port", &port],
        "fooled\nnot sent\n",
        config.path(),
    );
    assert!(!status.success());
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("CERTIFICATE CHANGED"), "{err}");
    assert!(err.contains(known.to_str().unwrap()), "{err}");
    assert!(!watcher.sync().iter().any(|l| l.contains("not sent")));
}

#[test]
fn a_certificate_replaced_on_disk_and_sighup_reach_new_connections_while_old_ones_chat_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, old) = tls_server(dir.path(), &[]);
    let addr = server.tls_addr.unwrap();
    let mut before = join_tls(addr, pin(&old.fingerprint), "before");
    let mut plain = server.join("plain");

    let new = tls_init(dir.path());
    assert_ne!(new.fingerprint, old.fingerprint);
    server.signal(libc::SIGHUP);
    server.expect_stderr(&format!(
        "SIGHUP: TLS certificate reloaded from {}; new connections get SHA-256 {}",
        old.cert.display(),
        new.fingerprint
    ));
    // A new connection sees the new certificate, and only it.
    let mut after = join_tls(addr, pin(&new.fingerprint), "after");
    let refused = Client::try_tls(addr, pin(&old.fingerprint))
        .err()
        .expect("the old certificate is gone");
    assert!(
        refused
            .to_string()
            .contains("not the one --tls-fingerprint names"),
        "{refused}"
    );
    // The old connection chats on, both ways.
    before.send("still on the old keys");
    after.expect_line("before: still on the old keys");
    plain.expect_line("before: still on the old keys");
    after.send("on the new certificate");
    before.expect_line("after: on the new certificate");
}

#[test]
fn a_changed_file_is_picked_up_without_a_signal_and_a_broken_one_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, old) = tls_server(dir.path(), &[]);
    let addr = server.tls_addr.unwrap();
    let mut before = join_tls(addr, Trust::Ca(old.ca.clone()), "before");

    std::fs::write(&old.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    server.expect_stderr("TLS certificate not reloaded, still serving SHA-256");
    join_tls(addr, pin(&old.fingerprint), "stillold");

    let new = tls_init(dir.path());
    server.expect_stderr(&format!(
        "the certificate files changed: TLS certificate reloaded from {}; new connections get SHA-256 {}",
        old.cert.display(),
        new.fingerprint
    ));
    let mut after = join_tls(addr, pin(&new.fingerprint), "after");
    before.send("the old connection stays open");
    after.expect_line("before: the old connection stays open");
}

#[test]
fn a_connection_that_never_handshakes_is_dropped_at_its_deadline_while_others_chat() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &["--name-timeout", "2"]);
    let addr = server.tls_addr.unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    // Half a record header, then nothing.
    silent.write_all(&[0x16, 0x03]).unwrap();
    let opened = Instant::now();
    // Another one trickles a ClientHello a byte at a time: each byte comes
    // well within the deadline, the whole never does.
    let trickler = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut record = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        record.resize(5 + 512, 0);
        for byte in record {
            if stream.write_all(&[byte]).is_err() {
                return Instant::now();
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("the trickling handshake was never cut off");
    });
    let mut alice = join_tls(addr, Trust::Ca(made.ca.clone()), "alice");
    let mut bob = join_tls(addr, Trust::Ca(made.ca.clone()), "bob");
    alice.send("talking while someone hangs");
    bob.expect_line("alice: talking while someone hangs");
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    let closed = silent.read(&mut buf);
    assert!(
        matches!(closed, Ok(0))
            || matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        opened.elapsed()
    );
    server.expect_stderr("the TLS handshake did not finish in time");
    let cut = trickler.join().unwrap();
    assert!(
        cut.duration_since(opened) < PATIENCE,
        "{:?}",
        cut.duration_since(opened)
    );
    bob.send("and after");
    alice.expect_line("bob: and after");
}

#[test]
fn a_full_server_tells_a_tls_newcomer_why_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &["--max-clients", "1"]);
    let addr = server.tls_addr.unwrap();
    let mut alice = join_tls(addr, Trust::Ca(made.ca.clone()), "alice");
    let mut second = Client::tls(addr, Trust::Ca(made.ca.clone()));
    second.expect_line("! server full; try again later");
    second.expect_closed();
    alice.send("still here");
    alice.expect_line("alice: still here");
}

#[test]
fn a_tls_client_that_stops_reading_is_dropped_and_nobody_else_slows_down() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &["--max-line", "65536", "--rate", "0"]);
    let addr = server.tls_addr.unwrap();
    let _stalled = join_tls(addr, Trust::Ca(made.ca.clone()), "stalled");
    let alice = server.join("alice");
    let mut bob = join_tls(addr, Trust::Ca(made.ca.clone()), "bob");
    let text = "z".repeat(60_000);
    let total = 400;
    let mut alice_out = alice.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for i in 0..total {
            writeln!(alice_out, "{i} {text}").unwrap();
        }
    });
    let alice_reader = thread::spawn(move || {
        let mut alice = alice;
        for i in 0..total {
            alice.expect_line(&format!("alice: {i} zzz"));
        }
    });
    for i in 0..total {
        bob.expect_line(&format!("alice: {i} zzz"));
    }
    sender.join().unwrap();
    alice_reader.join().unwrap();
    let who = bob.sync();
    assert!(!who.iter().any(|l| l.contains("stalled in")), "{who:?}");
    assert!(bob.seen.iter().any(|l| l == "* stalled left the chat"));
    assert_eq!(server.messages().len(), total);
}

#[test]
fn kill_9_under_tls_chat_loses_nothing_any_client_was_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, made) = tls_server(dir.path(), &["--rate", "0"]);
    let addr = server.tls_addr.unwrap();
    let mut watcher = join_tls(addr, Trust::Ca(made.ca.clone()), "watcher");
    let mut plain_watcher = server.join("plainwatcher");
    let senders: Vec<_> = (0..3)
        .map(|n| {
            let mut client = join_tls(addr, Trust::Ca(made.ca.clone()), &format!("s{n}"));
            thread::spawn(move || {
                for i in 0..2000 {
                    client.send(&format!("s{n} message {i}"));
                }
                client
            })
        })
        .collect();
    watcher.expect_line("message 300");
    server.kill9();
    let mut shown: HashSet<String> = chat_lines(&watcher.seen).into_iter().collect();
    let _ = plain_watcher.expect_closed();
    shown.extend(chat_lines(&plain_watcher.seen));
    let _ = watcher.expect_closed();
    shown.extend(chat_lines(&watcher.seen));
    drop(senders);

    let stored: HashSet<String> = common::read_rows(&dir.path().join("messages.csv"))
        .iter()
        .map(|r| format!("{}: {}", &r[3], &r[5]))
        .collect();
    let missing: Vec<&String> = shown.difference(&stored).collect();
    assert!(missing.is_empty(), "shown but not stored: {missing:?}");
    assert!(shown.len() >= 300);
}

#[test]
fn with_tls_on_a_public_host_plain_tcp_stays_on_loopback_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (server, made) = tls_server(dir.path(), &["--host", "0.0.0.0"]);
    // Plain TCP on loopback only; TLS on the address asked for.
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert!(server.tls_addr.unwrap().ip().is_unspecified());
    server.expect_stderr("so plain TCP listens on 127.0.0.1:");
    server.expect_stderr("passwords must not cross a network in clear by accident (--plain-public");
    let local_tls = SocketAddr::from(([127, 0, 0, 1], server.tls_addr.unwrap().port()));
    let mut alice = join_tls(local_tls, Trust::Ca(made.ca.clone()), "alice");
    let mut bob = server.join("bob");
    alice.send("both ways in");
    bob.expect_line("alice: both ways in");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let (server, _) = tls_server(dir.path(), &["--host", "0.0.0.0", "--plain-public"]);
    assert!(server.addr.ip().is_unspecified(), "{}", server.addr);
    server.expect_stderr("warning: --plain-public: plain TCP on 0.0.0.0:");
}

//! What survives: history on joining, restarts, `kill -9`, torn files, SIGTERM.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::thread;

use common::{TestServer, chat_lines};

#[test]
fn a_newcomer_gets_the_rooms_recent_history_before_live_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--history", "3"]);
    let mut alice = server.join("alice");
    for i in 1..=5 {
        alice.send(&format!("message {i}"));
    }
    alice.expect_line("alice: message 5");
    let mut bob = server.connect_raw();
    bob.send("bob");
    bob.expect_line("* recent messages in #general:");
    let end = bob.expect_line("* end of recent messages");
    let start = bob
        .seen
        .iter()
        .position(|l| l.contains("recent messages in"))
        .unwrap();
    let replay = chat_lines(&bob.seen[start..]);
    assert_eq!(
        replay,
        ["alice: message 3", "alice: message 4", "alice: message 5"],
        "{end}"
    );
    alice.send("live one");
    bob.expect_line("alice: live one");
}

#[test]
fn history_rooms_and_ids_carry_on_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut server = TestServer::start(dir.path(), &[]);
        let mut alice = server.join("alice");
        alice.send("before restart");
        alice.send("/create dev");
        alice.expect_line("you created #dev");
        alice.send("dev talk");
        alice.expect_line("alice: dev talk");
        alice.send("/create quiet");
        alice.expect_line("you created #quiet");
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success());
    }
    let server = TestServer::start(dir.path(), &[]);
    let mut bob = server.join("bob");
    bob.expect_line("alice: before restart");
    bob.send("/list");
    bob.expect_line("#dev (0 online)");
    bob.expect_line("#quiet (0 online)");
    bob.send("/join dev");
    bob.expect_line("alice: dev talk");
    bob.send("after restart");
    bob.expect_line("bob: after restart");
    let ids: Vec<u64> = server
        .messages()
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn kill_9_loses_nothing_any_client_was_shown_and_the_restart_repairs_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &["--rate", "0"]);
    let mut watcher = server.join("watcher");
    let senders: Vec<_> = (0..3)
        .map(|n| {
            let mut client = server.join(&format!("s{n}"));
            thread::spawn(move || {
                for i in 0..2000 {
                    client.send(&format!("s{n} message {i}"));
                }
                client
            })
        })
        .collect();
    // Kill once the chat is well under way.
    watcher.expect_line("message 300");
    server.kill9();
    let shown: HashSet<String> = chat_lines(&watcher.seen).into_iter().collect();
    drop(senders);

    // Tear the last row as a crash in the middle of a write would.
    let path = dir.path().join("messages.csv");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"999999,2026-11-21T00:00:00.000+00:00,general,s0,,torn mid-")
        .unwrap();
    drop(file);

    let server = TestServer::start(dir.path(), &[]);
    server.expect_stderr("dropped a partial last row");
    let rows = server.messages();
    let stored: HashSet<String> = rows
        .iter()
        .map(|r| format!("{}: {}", &r[3], &r[5]))
        .collect();
    let missing: Vec<&String> = shown.difference(&stored).collect();
    assert!(missing.is_empty(), "shown but not stored: {missing:?}");
    assert!(shown.len() >= 300);
    let ids: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids in file order"
    );
    assert!(!ids.contains(&999_999));
    let last = *ids.last().unwrap();
    let mut late = server.join("late");
    late.send("after the crash");
    late.expect_line("late: after the crash");
    let rows = server.messages();
    assert_eq!(rows.last().unwrap()[0].parse::<u64>().unwrap(), last + 1);
}

#[test]
fn sigterm_tells_the_clients_writes_everything_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &["--rate", "0"]);
    let mut alice = server.join("alice");
    let mut lurker = server.connect_raw(); // never names itself
    for i in 0..200 {
        alice.send(&format!("note {i}"));
    }
    alice.expect_line("alice: note 199");
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    let rest = alice.expect_closed();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    let lurker_rest = lurker.expect_closed();
    assert!(lurker_rest.iter().any(|l| l.contains("shutting down")));
    let rows = common::read_rows(&dir.path().join("messages.csv"));
    assert_eq!(rows.len(), 200);
    let events = common::read_rows(&dir.path().join("data.csv"));
    let disconnects = events.iter().filter(|r| &r[5] == "disconnect").count();
    assert_eq!(disconnects, 2, "both connections closed in data.csv");
    let text = std::fs::read_to_string(dir.path().join("messages.csv")).unwrap();
    assert!(text.ends_with('\n'));
}

#[test]
fn sigint_also_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    alice.send("hi");
    alice.expect_line("alice: hi");
    server.signal(libc::SIGINT);
    assert!(server.wait_exit().success());
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn text_with_commas_quotes_and_unicode_survives_the_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"hi, "bob" — ça va? 日本語 ✓ a,b,"c""#;
    {
        let mut server = TestServer::start(dir.path(), &[]);
        let mut alice = server.join("alice");
        alice.send(text);
        alice.expect_line(text);
        assert_eq!(&server.messages()[0][5], text);
        server.signal(libc::SIGTERM);
        server.wait_exit();
    }
    let server = TestServer::start(dir.path(), &[]);
    let mut bob = server.join("bob");
    bob.expect_line(&format!("alice: {text}"));
}

//! Failure paths found in review (issue 10), each over real TCP against the
//! real binary: big replies, concurrent edits of the small tables, lines
//! queued for a closing client, a JSON-heavy history, a vanished client's
//! name, and a rendering switched in the middle of a line.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, TestServer, server_in_tempdir as server, server_tool};

/// Waits until `data.csv` says that `name`'s session ended: a session that
/// first answers 16,000 commands (a debug build, on a busy machine) may take
/// a while, so the deadline is generous.
fn wait_for_disconnect(server: &TestServer, name: &str) {
    let deadline = Instant::now() + 6 * PATIENCE;
    while !server
        .events()
        .iter()
        .any(|r| &r[4] == name && &r[5] == "disconnect")
    {
        assert!(Instant::now() < deadline, "{name}'s session never ended");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads everything until the server closes the connection.
fn read_to_close(stream: &TcpStream) -> Vec<String> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
        .collect()
}

// 1. Big replies are sent a page at a time and never disconnect the asker.

#[test]
fn a_list_of_ten_thousand_rooms_comes_a_page_at_a_time_and_keeps_the_asker() {
    let dir = tempfile::tempdir().unwrap();
    // Rooms come back after a restart: 10,000 of them with the longest names,
    // whose /list in one piece would be heavier than a client's whole queue.
    let mut rooms = String::from("timestamp,room,creator\n");
    for i in 0..10_000 {
        rooms.push_str(&format!(
            "2026-11-21T12:00:00.000+00:00,room-{i:05}-xxxxxxxxxxxxxxxxxxxxx,admin\n"
        ));
    }
    std::fs::write(dir.path().join("rooms.csv"), rooms).unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    alice.send("/list");
    alice.expect_line("* rooms (10001), page 1 of 101:");
    alice.expect_line("* page 1 of 101: /list 2 shows the next");
    alice.send("/list 101");
    alice.expect_line("* rooms (10001), page 101 of 101:");
    alice.expect_line("the last");
    alice.send("/list 500");
    alice.expect(|l| l.starts_with("! ") && l.contains("101 pages"));
    // Still connected, and in JSON each page says where it is.
    alice.send("/mode json");
    alice.send("/list 2");
    let page = alice.expect(|l| l.contains(r#""type":"rooms""#));
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["total"], 10_001);
    assert_eq!(page["page"], 2);
    assert_eq!(page["rooms"].as_array().unwrap().len(), 100);
    alice.send("/who");
    alice.expect(|l| l.contains(r#""type":"users""#));
}

#[test]
fn who_with_many_people_online_comes_a_page_at_a_time() {
    let (_dir, server) = server(&["--max-per-ip", "0"]);
    let people: Vec<Client> = (0..249).map(|i| server.join(&format!("p{i:03}"))).collect();
    let mut alice = server.join("alice");
    alice.send("/who");
    alice.expect_line("* online (250), page 1 of 3:");
    let first = alice.expect_line("*   alice in #general");
    assert!(first.contains("alice"));
    alice.expect_line("* page 1 of 3: /who 2 shows the next");
    alice.send("/who 3");
    alice.expect_line("* online (250), page 3 of 3:");
    let last = alice.expect_line("p248");
    assert!(last.contains("#general"));
    drop(people);
}

#[test]
fn room_creation_is_limited_per_user_and_in_all() {
    let (_dir, server) = server(&["--max-rooms-per-user", "2", "--max-rooms", "4"]);
    let mut alice = server.join("alice");
    alice.send("/create a1");
    alice.expect_line("* you created #a1");
    alice.send("/create a2");
    alice.expect_line("* you created #a2");
    alice.send("/create a3");
    alice.expect(|l| l.starts_with("! ") && l.contains("as many rooms as one may (2)"));
    // general, a1, a2, b1: the server is full of rooms.
    let mut bob = server.join("bob");
    bob.send("/create b1");
    bob.expect_line("* you created #b1");
    bob.send("/create b2");
    bob.expect(|l| l.starts_with("! ") && l.contains("as many rooms as it allows (4)"));
    bob.send("/join a1");
    bob.expect_line("* you joined #a1");
}

#[test]
fn the_limit_on_rooms_per_user_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut server = TestServer::start(dir.path(), &["--max-rooms-per-user", "1"]);
        let mut alice = server.join("alice");
        alice.send("/create mine");
        alice.expect_line("* you created #mine");
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait_exit().code(), Some(0));
    }
    let server = TestServer::start(dir.path(), &["--max-rooms-per-user", "1"]);
    let mut alice = server.join("alice");
    alice.send("/create another");
    alice.expect(|l| l.starts_with("! ") && l.contains("as many rooms as one may"));
}

#[test]
fn json_clients_hear_of_new_rooms_without_asking() {
    let (_dir, server) = server(&[]);
    let mut watcher = server.connect_raw();
    watcher.send("/mode json");
    watcher.send("watcher");
    watcher.expect(|l| l.contains(r#""type":"welcome""#));
    let mut alice = server.join("alice");
    alice.send("/create fresh");
    alice.expect_line("* you created #fresh");
    watcher.expect(|l| l.contains(r#""type":"room_created""#) && l.contains(r#""room":"fresh""#));
    // People reading text are not told.
    let mut bob = server.join("bob");
    alice.send("/create fresher");
    alice.expect_line("* you created #fresher");
    let seen = bob.sync();
    assert!(!seen.iter().any(|l| l.contains("fresher")), "{seen:?}");
}

// 2. Concurrent edits of accounts and bans lose nothing; a damaged bans.csv
//    lifts no ban.

fn add_user(dir: &Path, name: &str, password: &str, admin: bool) {
    let mut args = vec!["add-user", name];
    if admin {
        args.push("--admin");
    }
    let (ok, out, err) = server_tool(dir, &args, &format!("{password}\n"));
    assert!(ok, "{out}{err}");
}

#[test]
fn eight_concurrent_add_users_make_eight_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut child = Command::new(common::server_bin())
                .args(["add-user", &format!("user{i}"), "--data-dir"])
                .arg(dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("password{i}\n").as_bytes())
                .unwrap();
            child
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let (ok, out, _) = server_tool(dir.path(), &["list-users"], "");
    assert!(ok);
    for i in 0..8 {
        assert!(
            out.contains(&format!("user{i} ")),
            "user{i} is missing:\n{out}"
        );
    }
}

#[test]
fn two_admins_banning_at_once_lose_no_ban() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "boss", "boss-pw", true);
    add_user(dir.path(), "chief", "chief-pw", true);
    let server = TestServer::start(dir.path(), &["--rate", "0"]);
    let mut boss = server.login("boss", "boss-pw");
    let mut chief = server.login("chief", "chief-pw");
    let batch = |who: &str| -> String {
        (0..100)
            .map(|i| format!("/ban {who}-target-{i:03} spam\n"))
            .collect()
    };
    boss.send_bytes(batch("b").as_bytes());
    chief.send_bytes(batch("c").as_bytes());
    boss.expect_line("* b-target-099 was banned by boss");
    chief.expect_line("* c-target-099 was banned by chief");
    for admin in [&boss, &chief] {
        assert!(
            !admin.seen.iter().any(|l| l.starts_with("! ")),
            "{:#?}",
            admin.seen
        );
    }
    let (ok, out, _) = server_tool(dir.path(), &["list-bans"], "");
    assert!(ok);
    assert_eq!(out.lines().count(), 200, "{out}");
}

#[test]
fn a_damaged_bans_file_lets_no_banned_name_in_and_bans_still_work() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "boss", "boss-pw", true);
    add_user(dir.path(), "mallory", "mallory-pw", false);
    add_user(dir.path(), "eve", "eve-pw", false);
    let server = TestServer::start(dir.path(), &[]);
    let mut boss = server.login("boss", "boss-pw");
    boss.send("/ban mallory spam");
    boss.expect_line("* mallory was banned by boss");
    // Someone edits bans.csv by hand and breaks it.
    let path = dir.path().join("bans.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("a row, \"with a broken quote\n");
    std::fs::write(&path, text).unwrap();
    let mut mallory = server.connect_raw();
    mallory.send("mallory");
    mallory.expect(|l| l == "Password:");
    mallory.send("mallory-pw");
    mallory.expect(|l| l.starts_with("! ") && l.contains("banned"));
    server.expect_stderr("last good copy");
    // Banning goes on, and mends the file.
    boss.send("/ban eve");
    boss.expect_line("* eve was banned by boss");
    let (ok, out, err) = server_tool(dir.path(), &["list-bans"], "");
    assert!(ok, "{err}");
    assert!(out.contains("mallory") && out.contains("eve"), "{out}");
    // And a restart with a damaged file keeps the ban too.
    drop(boss);
    drop(server);
    std::fs::write(&path, "timestamp,name\nbroken").unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut mallory = server.connect_raw();
    mallory.send("mallory");
    mallory.expect(|l| l == "Password:");
    mallory.send("mallory-pw");
    mallory.expect(|l| l.starts_with("! ") && l.contains("banned"));
}

// 4. Lines queued for a closing client are written before the goodbye.

/// Flood control off, and room in a client's queue for a backlog of some
/// megabytes.
const BIG_QUEUE: [&str; 4] = ["--rate", "0", "--history", "1000"];

/// Messages the talker sends while the reader reads nothing: 1,500 of 3 KB,
/// more than the kernel's buffers hold for a reader with a small receive
/// buffer (about 1 MB on loopback), so that the rest waits in the server's
/// own queue for that client.
const BACKLOG: usize = 1500;

/// A connection whose receive buffer is a few kilobytes from the start (set
/// before connecting, so the window is small too).
fn small_reader(addr: SocketAddr) -> TcpStream {
    let family = if addr.is_ipv4() {
        rustix::net::AddressFamily::INET
    } else {
        rustix::net::AddressFamily::INET6
    };
    let socket = rustix::net::socket(family, rustix::net::SocketType::STREAM, None).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4096).unwrap();
    rustix::net::connect(&socket, &addr).unwrap();
    TcpStream::from(socket)
}

/// `name` logged in on a small reader that then reads nothing, and a talker
/// who saw it arrive; the talker's echoes are read (and dropped) on a thread
/// of their own.
fn reader_and_talker(server: &TestServer, name: &str) -> (TcpStream, Client) {
    let reader = small_reader(server.addr);
    (&reader).write_all(format!("{name}\n").as_bytes()).unwrap();
    let mut talker = server.join("talker");
    let deadline = Instant::now() + PATIENCE;
    while !talker
        .sync()
        .iter()
        .any(|l| l.contains(&format!("{name} in #general")))
    {
        assert!(Instant::now() < deadline, "{name} never logged in");
    }
    (reader, talker)
}

/// The talker fills the reader's queue, and knows when all is queued: each
/// message reaches the reader's queue in the same step as the talker's echo.
fn fill(talker: &mut Client) {
    let text = "x".repeat(3000);
    let mut burst = String::new();
    for i in 0..BACKLOG {
        burst.push_str(&format!("{i:04} {text}\n"));
    }
    burst.push_str("all said\n");
    let mut out = talker.stream.try_clone().unwrap();
    let writer = thread::spawn(move || out.write_all(burst.as_bytes()).unwrap());
    talker.expect_line("talker: all said");
    writer.join().unwrap();
}

fn backlog_count(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("talker: ") && l.len() > 3000)
        .count()
}

#[test]
fn after_quit_a_client_with_a_backlog_gets_everything_then_the_goodbye() {
    let (_dir, server) = server(&BIG_QUEUE);
    let (alice, mut talker) = reader_and_talker(&server, "alice");
    fill(&mut talker);
    (&alice).write_all(b"/quit\n").unwrap();
    // Read nothing until the session is over and the server has let go of
    // everything but the queue.
    wait_for_disconnect(&server, "alice");
    let lines = read_to_close(&alice);
    assert_eq!(backlog_count(&lines), BACKLOG);
    assert!(
        lines.last().is_some_and(|l| l.contains("goodbye, alice")),
        "{:?}",
        lines.last()
    );
}

#[test]
fn at_shutdown_a_client_with_a_backlog_gets_everything_then_the_shutdown_line() {
    let (_dir, mut server) = server(&BIG_QUEUE);
    let (alice, mut talker) = reader_and_talker(&server, "alice");
    fill(&mut talker);
    server.signal(libc::SIGTERM);
    // Read nothing until alice's session is over: only her queue is left.
    wait_for_disconnect(&server, "alice");
    let lines = read_to_close(&alice);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert_eq!(backlog_count(&lines), BACKLOG);
    assert!(
        lines.last().is_some_and(|l| l.contains("shutting down")),
        "{:?}",
        lines.last()
    );
}

// 5. A history replay fits in a queue in either rendering.

#[test]
fn a_json_newcomer_gets_a_full_history_of_long_quote_heavy_messages() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--history", "100"];
    {
        let server = TestServer::start(dir.path(), &args);
        let quotes = "\"".repeat(4096);
        // Ten people, each within their burst.
        let mut senders: Vec<Client> = (0..10).map(|i| server.join(&format!("s{i}"))).collect();
        for sender in senders.iter_mut() {
            for _ in 0..10 {
                sender.send(&quotes);
            }
        }
        let deadline = Instant::now() + PATIENCE;
        while server.messages().len() < 100 {
            assert!(Instant::now() < deadline, "the messages were not all saved");
            thread::sleep(Duration::from_millis(20));
        }
    }
    // After a restart too: the history comes back from the file.
    let server = TestServer::start(dir.path(), &args);
    let mut newcomer = server.connect_raw();
    newcomer.send("/mode json");
    newcomer.send("newcomer");
    newcomer.expect(|l| l.contains(r#""type":"history""#) && l.contains(r#""count":100"#));
    newcomer.expect(|l| l.contains(r#""type":"history_end""#));
    let messages = newcomer
        .seen
        .iter()
        .filter(|l| l.contains(r#""type":"message""#))
        .count();
    assert_eq!(messages, 100);
    newcomer.send("/who");
    newcomer.expect(|l| l.contains(r#""type":"users""#));
}

// 7. A vanished client's name can be taken over with the right password, and
//    dead peers are noticed by TCP keepalive.

#[test]
fn logging_in_again_with_the_right_password_takes_the_name_over() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice", "alice-pw", false);
    add_user(dir.path(), "bob", "bob-pw", false);
    let server = TestServer::start(dir.path(), &[]);
    let mut old = server.login("alice", "alice-pw");
    let mut bob = server.login("bob", "bob-pw");
    // A wrong password takes nothing over.
    let mut stranger = server.connect_raw();
    stranger.send("alice");
    stranger.expect(|l| l == "Password:");
    stranger.send("guess");
    stranger.expect_line("! wrong name or password");
    // The right one does: the old connection is told why and closed.
    let mut new = server.login("alice", "alice-pw");
    old.expect(|l| l.starts_with("! ") && l.contains("logged in again"));
    old.expect_closed();
    new.send("back again");
    bob.expect_line("alice: back again");
    bob.send("/who");
    let listed = bob.expect_line("* online (2)");
    assert!(listed.contains("(2)"));
}

#[test]
fn connections_are_watched_with_tcp_keepalive() {
    let (_dir, server) = server(&[]);
    let _alice = server.join("alice");
    let port = server.addr.port();
    let output = Command::new("ss")
        .args([
            "-tno",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("keepalive"), "{text}");
}

// 10. A switch to JSON happens between lines, never inside one.

#[test]
fn switching_to_json_with_a_line_half_written_keeps_every_line_whole() {
    let (_dir, server) = server(&BIG_QUEUE);
    let (alice, mut talker) = reader_and_talker(&server, "alice");
    // While alice reads nothing, the talker's lines fill her socket, one is
    // cut halfway, and the rest wait in her queue.
    fill(&mut talker);
    // Then she switches to JSON, still without reading.
    (&alice)
        .write_all(b"/mode json\nswitched\n/quit\n")
        .unwrap();
    talker.expect_line("alice: switched");
    let lines = read_to_close(&alice);
    let mut json = 0;
    for line in &lines {
        if line.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("a broken JSON line ({e}): {line:?}"));
            json += 1;
        } else {
            assert!(
                line.starts_with("* ")
                    || line.starts_with("! ")
                    || line.starts_with('[')
                    || line == "Name:",
                "a line that is neither text nor JSON: {line:?}"
            );
            // No quote, brace or bracket in any text line here: one would be
            // the tail of a JSON object glued to a text line's head.
            assert!(
                !line.contains(['{', '}', '"']),
                "text glued to JSON: {line:?}"
            );
        }
    }
    assert!(json > 0, "the switch happened: {:?}", lines.last());
}

//! Chatting over real TCP against the real server: names, rooms, commands,
//! whispers, fan-out order.

mod common;

use std::thread;

use common::{TestServer, chat_lines};

fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    (dir, server)
}

#[test]
fn a_newcomer_is_greeted_asked_for_a_name_and_lands_in_general() {
    let (_dir, server) = server();
    let mut alice = server.connect_raw();
    alice.expect(|l| l.starts_with("* welcome"));
    alice.expect(|l| l == "Name:");
    alice.send("alice");
    alice.expect(|l| l.starts_with("* ") && l.contains("alice"));
    alice.expect_line("you joined #general");
}

#[test]
fn three_clients_chat_and_everyone_sees_every_line_including_their_own() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    let mut carol = server.join("carol");
    alice.expect_line("* carol joined #general");
    alice.send("hi, all");
    bob.send("hey alice");
    carol.send("hello from carol");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect_all(&[
            "alice: hi, all",
            "bob: hey alice",
            "carol: hello from carol",
        ]);
    }
    let rows = server.messages();
    let texts: Vec<(&str, &str, &str)> = rows.iter().map(|r| (&r[2], &r[3], &r[5])).collect();
    assert!(texts.contains(&("general", "alice", "hi, all")));
    assert!(texts.contains(&("general", "bob", "hey alice")));
    assert!(texts.contains(&("general", "carol", "hello from carol")));
}

#[test]
fn messages_sent_at_once_arrive_in_the_same_order_everywhere_and_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--rate", "0"]);
    let names = ["ann", "ben", "cid", "dot"];
    let clients: Vec<_> = names.iter().map(|n| server.join(n)).collect();
    let per_sender = 100;
    let handles: Vec<_> = clients
        .into_iter()
        .zip(names)
        .map(|(mut client, name)| {
            thread::spawn(move || {
                for i in 0..per_sender {
                    client.send(&format!("{name} says {i}"));
                }
                let total = names.len() * per_sender;
                let mut got = Vec::new();
                while got.len() < total {
                    let line = client.expect(|l| l.starts_with('['));
                    got.extend(chat_lines(&[line]));
                }
                got
            })
        })
        .collect();
    let orders: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "two receivers saw different orders");
    }
    let file: Vec<String> = server
        .messages()
        .iter()
        .map(|r| format!("{}: {}", &r[3], &r[5]))
        .collect();
    assert_eq!(file, orders[0], "file order is delivery order");
    // each sender's own messages keep their order
    for name in names {
        let mine: Vec<&String> = orders[0].iter().filter(|l| l.starts_with(name)).collect();
        for (i, line) in mine.iter().enumerate() {
            assert_eq!(**line, format!("{name}: {name} says {i}"));
        }
    }
}

#[test]
fn rooms_can_be_created_listed_joined_switched_and_left() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");

    alice.send("/create dev");
    alice.expect_line("* you created #dev (1 here)");
    bob.expect_line("* alice left #general");
    alice.send("/create #dev");
    alice.expect(|l| l.starts_with("! ") && l.contains("exists"));

    bob.send("/list");
    bob.expect_line("* rooms (2):");
    bob.expect_line("#dev (1 online)");
    bob.expect_line("#general (1 online)");

    bob.send("/join nowhere");
    bob.expect(|l| l.starts_with("! ") && l.contains("no room #nowhere"));
    bob.send("/JOIN #DEV");
    bob.expect_line("* you joined #dev (2 here)");
    alice.expect_line("* bob joined #dev");
    bob.send("/join dev");
    bob.expect(|l| l.starts_with("! ") && l.contains("already"));

    alice.send("in dev");
    bob.expect_line("alice: in dev");

    bob.send("/leave");
    bob.expect_line("* you left #dev");
    alice.expect_line("* bob left #dev");
    bob.send("anyone?");
    bob.expect(|l| l.starts_with("! ") && l.contains("lobby"));
    bob.send("/leave");
    bob.expect(|l| l.starts_with("! ") && l.contains("lobby"));
    bob.send("/join general");
    bob.expect_line("* you joined #general");

    // a lobby message is stored nowhere; dev's message is in dev
    let rows = server.messages();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][2], "dev");
    let rooms = std::fs::read_to_string(server.dir.join("rooms.csv")).unwrap();
    assert!(
        rooms.lines().nth(1).unwrap().ends_with(",dev,alice"),
        "{rooms}"
    );
}

#[test]
fn bad_room_names_are_refused() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    for bad in [
        "/create a.b",
        "/create #",
        &format!("/create {}", "r".repeat(33)),
    ] {
        alice.send(bad);
        alice.expect(|l| l.starts_with("! ") && l.contains("room"));
    }
    alice.send("/create");
    alice.expect_line("! usage: /create ROOM");
    alice.send(&format!("/create {}", "r".repeat(32)));
    alice.expect_line("* you created #");
}

#[test]
fn who_lists_everyone_online_and_their_room() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    bob.send("/leave");
    bob.expect_line("you left");
    alice.send("/who");
    alice.expect_line("* online (2):");
    alice.expect_line("*   alice in #general");
    alice.expect_line("*   bob in the lobby");
    alice.send("/clients");
    alice.expect_line("* online (2):");
}

#[test]
fn help_lists_every_command() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    for command in ["/help", "/commands", "/HELP"] {
        alice.send(command);
        alice.expect_line("* commands:");
        for name in [
            "/list", "/create", "/join", "/leave", "/who", "/msg", "/quit",
        ] {
            alice.expect(|l| l.starts_with("* ") && l.contains(name));
        }
    }
}

#[test]
fn unknown_commands_get_an_error_and_the_connection_goes_on() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    alice.send("/dance wildly");
    alice.expect(|l| l.starts_with("! ") && l.contains("/dance") && l.contains("/help"));
    alice.send("still here");
    alice.expect_line("alice: still here");
}

#[test]
fn a_double_slash_line_is_said_with_one_slash() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    alice.send("//shrug");
    alice.expect_line("alice: /shrug");
    assert_eq!(&server.messages()[0][5], "/shrug");
}

#[test]
fn a_whisper_reaches_only_its_recipient() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    let mut carol = server.join("carol");
    alice.send("/msg BOB meet me at 5, ok?");
    let got = bob.expect_line("meet me at 5, ok?");
    assert!(got.contains("whisper") && got.contains("alice"), "{got}");
    let confirmation = alice.expect_line("meet me at 5, ok?");
    assert!(confirmation.contains("whisper to bob"), "{confirmation}");
    alice.send("/w bob second");
    bob.expect_line("second");
    // carol's queue is in order: whatever was sent to her came before this answer
    let carol_saw = carol.sync();
    assert!(
        carol_saw
            .iter()
            .all(|l| !l.contains("meet me") && !l.contains("second")),
        "{carol_saw:?}"
    );
    let rows = server.messages();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0][2], &rows[0][3], &rows[0][4]),
        ("", "alice", "bob")
    );
    assert_eq!(&rows[0][5], "meet me at 5, ok?");
}

#[test]
fn whispering_to_nobody_or_without_text_is_an_error() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    alice.send("/msg ghost hello");
    alice.expect(|l| l.starts_with("! ") && l.contains("ghost"));
    alice.send("/msg");
    alice.expect_line("! usage: /msg NAME TEXT");
    alice.send("/msg alice");
    alice.expect_line("! usage: /msg NAME TEXT");
    assert!(server.messages().is_empty());
}

#[test]
fn quit_says_goodbye_closes_and_tells_the_room() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    alice.send("last words");
    alice.send("/quit");
    let rest = alice.expect_closed();
    assert!(
        rest.iter().any(|l| l.ends_with("alice: last words")),
        "{rest:?}"
    );
    assert!(rest.last().unwrap().starts_with("* goodbye"), "{rest:?}");
    bob.expect_line("alice: last words");
    bob.expect_line("* alice left the chat");
    bob.send("/who");
    bob.expect_line("* online (1):");
}

#[test]
fn names_are_checked_and_a_refused_name_is_asked_again() {
    let (_dir, server) = server();
    let _alice = server.join("alice");
    let mut c = server.connect_raw();
    c.expect(|l| l == "Name:");
    for bad in ["ALICE", "two words", "/slash", &"n".repeat(33)] {
        c.send(bad);
        c.expect(|l| l.starts_with("! "));
        c.expect(|l| l == "Name:");
    }
    c.send(&"n".repeat(32));
    c.expect(|l| l.starts_with("* hello nnnn"));
}

#[test]
fn an_empty_name_gets_a_guest_name() {
    let (_dir, server) = server();
    let mut c = server.connect_raw();
    c.send("");
    let line = c.expect(|l| l.starts_with("* hello Guest"));
    let mut d = server.connect_raw();
    d.send("   ");
    let other = d.expect(|l| l.starts_with("* hello Guest"));
    assert_ne!(line, other);
}

#[test]
fn a_name_is_free_again_once_its_owner_left() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    alice.send("/quit");
    alice.expect_closed();
    let mut again = server.connect_raw();
    again.send("Alice");
    again.expect(|l| l.starts_with("* hello Alice"));
}

#[test]
fn connection_events_are_logged_with_ip_thread_and_name() {
    let (_dir, server) = server();
    let mut alice = server.join("alice");
    alice.send("/quit");
    alice.expect_closed();
    server.expect_stderr("disconnect 127.0.0.1");
    let mut events = server.events();
    // the disconnect row may follow the log line by a moment
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while events.len() < 3 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
        events = server.events();
    }
    let kinds: Vec<&str> = events.iter().map(|r| &r[5]).collect();
    assert_eq!(kinds, ["connect", "login", "disconnect"]);
    for row in &events {
        assert_eq!(&row[1], "127.0.0.1");
        assert_eq!(&row[3], "1");
        chrono::DateTime::parse_from_rfc3339(&row[0]).expect("RFC 3339");
    }
    assert_eq!(&events[0][4], "");
    assert_eq!(&events[1][4], "alice");
    assert_eq!(&events[2][4], "alice");
    assert!(server.stderr_text().contains("thread 1 alice"));
}

#[test]
fn joins_are_not_announced_one_by_one_in_a_room_past_the_announce_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--announce-limit", "2"]);
    let mut alice = server.join("alice");
    let _bob = server.join("bob");
    alice.expect_line("* bob joined #general");
    let _carol = server.join("carol");
    let seen = alice.sync();
    assert!(seen.iter().all(|l| !l.contains("carol joined")), "{seen:?}");
}

#[test]
fn an_empty_default_room_means_the_lobby() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &["--default-room", ""]);
    let mut alice = server.join("alice");
    assert!(
        alice
            .seen
            .iter()
            .any(|l| l.starts_with("* you are in the lobby"))
    );
    alice.send("hello?");
    alice.expect(|l| l.starts_with("! ") && l.contains("lobby"));
    // One server at a time on a data directory.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
    let other = TestServer::start(dir.path(), &["--default-room", "#lounge"]);
    let bob = other.join("bob");
    assert!(
        bob.seen
            .iter()
            .any(|l| l.starts_with("* you joined #lounge"))
    );
}

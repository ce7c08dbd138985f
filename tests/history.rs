//! All history within reach: `/history` pages back from the join replay to
//! the first message, `/search` finds words in every room and in one's own
//! whispers, and the index behind both is rebuilt from `messages.csv`
//! whatever happened to it.

mod common;

use std::io::Write;
use std::path::Path;

use common::{Client, TestServer};
use serde_json::Value;

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A client in JSON mode, logged in.
fn join_json(server: &TestServer, name: &str) -> Client {
    let mut client = server.connect_raw();
    client.send("/mode json");
    client.send(name);
    client.expect(|l| l.contains(r#""type":"welcome""#));
    client
}

/// Says `count` numbered lines and waits for the echo of the last.
fn chat(client: &mut Client, who: &str, count: usize) {
    for i in 1..=count {
        client.send(&format!("line {i} from {who}"));
    }
    client.expect(|l| l.contains(&format!("line {count} from {who}")));
}

/// The ids of the `message` events between the next `history` frame and its
/// `history_end`; and whether the end says there is more.
fn page(client: &mut Client) -> (Vec<u64>, bool) {
    client.expect(|l| l.contains(r#""type":"history""#));
    let mut ids = Vec::new();
    loop {
        let line = client.expect(|l| l.starts_with('{'));
        let event = json(&line);
        match event["type"].as_str() {
            Some("message") => ids.push(event["id"].as_u64().unwrap()),
            Some("history_end") => return (ids, event["more"].as_bool().unwrap_or(false)),
            Some("whisper") => panic!("a whisper in a room's history: {line}"),
            _ => {}
        }
    }
}

/// Pages back with `/history` until the start; returns every id seen, the
/// join replay's first, in the order they were shown, oldest first.
fn page_to_the_start(client: &mut Client) -> Vec<u64> {
    let (mut all, _) = page(client);
    loop {
        client.send("/history");
        let (ids, more) = page(client);
        let mut older = ids;
        older.extend(all);
        all = older;
        if !more {
            return all;
        }
    }
}

fn assert_one_to(ids: &[u64], last: u64) {
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(ids, expected, "every id once, in order");
}

#[test]
fn paging_from_the_join_replay_reaches_message_1_with_every_id_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--rate", "0"]);
    let mut alice = server.join("alice");
    chat(&mut alice, "alice", 237);
    let mut bob = join_json(&server, "bob");
    let ids = page_to_the_start(&mut bob);
    assert_one_to(&ids, 237);
    // Past the start it is said plainly, again and again.
    bob.send("/history");
    let (ids, more) = page(&mut bob);
    assert!(ids.is_empty() && !more);

    // A person at nc sees the same in text.
    let mut carol = server.join("carol");
    carol.send("/history 100");
    carol.expect_line("* older messages in #general (100):");
    let first = carol.expect(|l| l.starts_with('['));
    assert!(
        first.contains(", id 88] alice: line 88 from alice"),
        "{first}"
    );
    carol.expect_line("* end of older messages; /history shows more");
    carol.send("/history 100");
    carol.expect_line("* older messages in #general (87):");
    carol.expect_line("* that is the start of #general: there are no older messages");
    carol.send("/history");
    carol
        .expect_line("* there are no older messages in #general: this is the start of its history");
}

#[test]
fn paging_goes_on_after_a_restart_and_in_a_second_room() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut server = TestServer::start(dir.path(), &["--rate", "0"]);
        let mut alice = server.join("alice");
        chat(&mut alice, "alice", 120);
        alice.send("/create dev");
        alice.expect_line("you created #dev");
        chat(&mut alice, "dev", 70);
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success());
    }
    let server = TestServer::start(dir.path(), &["--rate", "0"]);
    let mut bob = join_json(&server, "bob");
    assert_one_to(&page_to_the_start(&mut bob), 120);
    bob.send("/join dev");
    let ids = page_to_the_start(&mut bob);
    assert_eq!(ids, (121..=190).collect::<Vec<u64>>());
    // From an id, for programs.
    bob.send("/history before 150 3");
    let (ids, more) = page(&mut bob);
    assert_eq!((ids, more), (vec![147, 148, 149], true));
}

#[test]
fn history_in_the_lobby_is_refused_and_an_empty_room_is_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--default-room", ""]);
    let mut alice = server.join("alice");
    alice.send("/history");
    alice.expect_line("! you are in the lobby, which has no history: /join ROOM first");
    alice.send("/create quiet");
    alice.expect_line("you created #quiet");
    alice.send("/history");
    alice.expect_line("* there are no older messages in #quiet: this is the start of its history");
    alice.send("/history 0");
    alice.expect_line("! usage: /history [N]");
}

/// The messages a search found: (id, room or "", from, text).
fn search(client: &mut Client, words: &str) -> Vec<(u64, String, String, String)> {
    client.send(&format!("/search {words}"));
    let start = json(&client.expect(|l| l.contains(r#""type":"search""#)));
    let mut found = Vec::new();
    loop {
        let event = json(&client.expect(|l| l.starts_with('{')));
        match event["type"].as_str() {
            Some("message") | Some("whisper") => found.push((
                event["id"].as_u64().unwrap(),
                event["room"].as_str().unwrap_or("").to_string(),
                event["from"].as_str().unwrap().to_string(),
                event["text"].as_str().unwrap().to_string(),
            )),
            Some("search_end") => break,
            _ => {}
        }
    }
    assert_eq!(start["count"].as_u64(), Some(found.len() as u64));
    found
}

#[test]
fn search_finds_a_rare_word_umlauts_in_another_case_and_a_cjk_phrase() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--rate", "0"]);
    let mut alice = server.join("alice");
    alice.send("the Größe of the new office");
    chat(&mut alice, "alice", 60);
    alice.send("/create tokyo");
    alice.expect_line("you created #tokyo");
    alice.send("我们明天在东京见面吧");
    alice.send("今日は会議があります");
    alice.send("a quokka walked by");
    alice.expect_line("a quokka walked by");

    let mut bob = join_json(&server, "bob");
    let found = search(&mut bob, "quokka");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, "tokyo");
    assert_eq!(found[0].3, "a quokka walked by");
    let found = search(&mut bob, "größe");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1.as_str()), (1, "general"));
    assert_eq!(search(&mut bob, "GRÖßE OFFICE").len(), 1);
    let found = search(&mut bob, "东京见面");
    assert_eq!(found.len(), 1);
    assert!(found[0].3.contains("东京"));
    assert_eq!(search(&mut bob, "会議").len(), 1, "two CJK characters");
    assert_eq!(search(&mut bob, "京东").len(), 0, "the characters in order");
    // Newest first, at most 50, all words needed.
    let found = search(&mut bob, "line alice");
    assert_eq!(found.len(), 50);
    assert!(found.windows(2).all(|w| w[0].0 > w[1].0));
    assert_eq!(found[0].3, "line 60 from alice");
    assert!(search(&mut bob, "line nosuchword").is_empty());
    // Only one room.
    assert_eq!(search(&mut bob, "quokka in general").len(), 0);
    assert_eq!(search(&mut bob, "quokka in #Tokyo").len(), 1);

    // At nc, in text.
    let mut carol = server.join("carol");
    carol.send("/search QUOKKA");
    carol.expect_line("* found 1 for \"QUOKKA\", newest first:");
    let line = carol.expect(|l| l.starts_with('['));
    assert!(line.contains("#tokyo, id "), "{line}");
    assert!(line.ends_with("] alice: a quokka walked by"), "{line}");
    carol.expect_line("* end of search results");
    carol.send("/search zebra");
    carol.expect_line("* nothing found for \"zebra\"");
    carol.send("/search ?!");
    carol.expect_line("! usage: /search WORDS");
}

#[test]
fn a_whisper_is_found_by_its_sender_and_recipient_and_by_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut alice = join_json(&server, "alice");
    let mut bob = join_json(&server, "bob");
    let mut eve = join_json(&server, "eve");
    alice.send("/msg bob the vault code is pelican");
    bob.expect(|l| l.contains("pelican"));
    alice.send("pelicans are birds");
    alice.expect(|l| l.contains("pelicans are birds"));
    let texts = |found: Vec<(u64, String, String, String)>| -> Vec<String> {
        found.into_iter().map(|f| f.3).collect()
    };
    assert_eq!(
        texts(search(&mut alice, "pelican")),
        ["the vault code is pelican"]
    );
    assert_eq!(
        texts(search(&mut bob, "PELICAN")),
        ["the vault code is pelican"]
    );
    assert!(search(&mut eve, "pelican").is_empty());
    assert!(search(&mut eve, "vault code").is_empty());
    // Nor through /history, for anybody.
    for client in [&mut alice, &mut bob, &mut eve] {
        client.send("/history before 100");
        let (ids, _) = page(client);
        assert_eq!(ids, [2], "only the room message");
    }
}

/// Writes a `messages.csv` of `rows` rows (ids 1..=rows, two rooms, a rare
/// word in row 777 and a whisper in row 1000).
fn write_messages(dir: &Path, rows: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("messages.csv")).unwrap());
    writeln!(out, "id,timestamp,room,sender,recipient,text").unwrap();
    for id in 1..=rows {
        let room = if id % 3 == 0 { "dev" } else { "general" };
        if id == 1000 {
            writeln!(
                out,
                "{id},2026-11-21T12:00:00.000+00:00,,ann,ben,whispered xylophone"
            )
            .unwrap();
        } else if id == 777 {
            writeln!(
                out,
                "{id},2026-11-21T12:00:00.000+00:00,{room},ann,,\"a xylophone, again\""
            )
            .unwrap();
        } else {
            writeln!(
                out,
                "{id},2026-11-21T12:00:00.000+00:00,{room},user{},,ordinary words number {id}",
                id % 50
            )
            .unwrap();
        }
    }
    out.flush().unwrap();
}

/// Waits until the server's index is built (its answers say how far).
fn wait_built(client: &mut Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        client.send("/search xylophone");
        let start = json(&client.expect(|l| l.contains(r#""type":"search""#)));
        client.expect(|l| l.contains(r#""type":"search_end""#));
        if start["building"].is_null() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index was never built: {start}"
        );
    }
}

/// What the index answers, the same before and after whatever is tested.
fn answers(server: &TestServer) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let mut ben = join_json(server, "ben");
    wait_built(&mut ben);
    let ids = |found: Vec<(u64, String, String, String)>| -> Vec<u64> {
        found.into_iter().map(|f| f.0).collect()
    };
    let rare = ids(search(&mut ben, "xylophone"));
    let common = ids(search(&mut ben, "ordinary"));
    ben.send("/history before 500 20");
    let (page_ids, _) = page(&mut ben);
    ben.send("/quit");
    (rare, common, page_ids)
}

/// A way to damage the index while the server is down, and its name.
type Damage = (&'static str, fn(&Path));

fn remove_index(dir: &Path) {
    for name in ["messages.index", "messages.index-wal", "messages.index-shm"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

#[test]
fn an_index_deleted_or_damaged_while_the_server_is_down_is_rebuilt_and_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    write_messages(dir.path(), 3000);
    let expected = {
        let mut server = TestServer::start(dir.path(), &[]);
        let answers = answers(&server);
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success());
        answers
    };
    assert_eq!(
        expected.0,
        [1000, 777],
        "ben's whisper and the room message"
    );
    assert_eq!(expected.1.len(), 50);
    assert_eq!(expected.1[0], 3000);
    let general: Vec<u64> = (1..500).filter(|id| id % 3 != 0).collect();
    assert_eq!(expected.2, general[general.len() - 20..]);

    let damages: [Damage; 3] = [
        ("deleted", remove_index),
        ("overwritten with garbage", |dir| {
            std::fs::write(dir.join("messages.index"), vec![b'x'; 100_000]).unwrap();
        }),
        ("zeroed in the middle", |dir| {
            let path = dir.join("messages.index");
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len();
            assert!(len > 64 * 1024, "an index of some size: {len}");
            bytes[len / 3..len / 3 + 16 * 1024].fill(0);
            std::fs::write(&path, bytes).unwrap();
        }),
    ];
    for (how, damage) in damages {
        damage(dir.path());
        let mut server = TestServer::start(dir.path(), &[]);
        assert_eq!(answers(&server), expected, "after the index was {how}");
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success());
    }
}

#[test]
fn kill_9_while_the_index_is_built_then_a_restart_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    write_messages(dir.path(), 600_000);
    let mut server = TestServer::start(dir.path(), &[]);
    // Caught halfway: the answer says how far the index has got.
    let mut ben = join_json(&server, "ben");
    ben.send("/search xylophone");
    let start = json(&ben.expect(|l| l.contains(r#""type":"search""#)));
    assert!(
        start["building"].as_u64().is_some_and(|p| p < 100),
        "the index was still being built: {start}"
    );
    server.kill9();
    let server = TestServer::start(dir.path(), &[]);
    let (rare, common, page_ids) = answers(&server);
    assert_eq!(rare, [1000, 777]);
    assert_eq!(
        common,
        (599_951..=600_000)
            .rev()
            .filter(|&id| id != 1000 && id != 777)
            .collect::<Vec<u64>>()
    );
    let general: Vec<u64> = (1..500).filter(|id| id % 3 != 0).collect();
    assert_eq!(page_ids, general[general.len() - 20..]);
}

#[test]
fn whispers_found_in_text_say_whisper_and_name_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    alice.send("/msg bob meet at the albatross");
    bob.expect_line("(whisper) alice: meet at the albatross");
    bob.send("/search albatross");
    bob.expect_line("* found 1 for \"albatross\", newest first:");
    let line = bob.expect(|l| l.starts_with('['));
    assert!(
        line.contains(" (whisper to bob), id 1] alice: meet at the albatross"),
        "{line}"
    );
}

#[test]
fn a_sound_index_is_kept_across_restarts_even_after_a_row_that_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    write_messages(dir.path(), 2000);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("messages.csv"))
        .unwrap();
    writeln!(file, "not,one,of,ours").unwrap();
    drop(file);
    let expected = {
        let mut server = TestServer::start(dir.path(), &[]);
        let answers = answers(&server);
        server.expect_stderr("building the message index");
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success());
        answers
    };
    let mut server = TestServer::start(dir.path(), &[]);
    assert_eq!(answers(&server), expected);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
    let log = server.stderr_text();
    assert!(
        !log.contains("building the message index") && !log.contains("rebuilding"),
        "the index was built again: {log}"
    );
}

/// The nice value of each of a process's threads, by thread name.
fn nice_by_thread(pid: i32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // pid (comm) state ...: the nice value is the 19th field, the 17th
        // after the name.
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let name = head.split_once(" (").unwrap().1.to_string();
        let nice = rest.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((name, nice));
    }
    out
}

#[test]
fn the_indexer_yields_the_cpu_to_delivery() {
    // Under a load that takes every CPU, the index lags, not the chat: the
    // indexer runs at a lower priority (nice 10) than the threads that
    // deliver, which keep the server's own.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    alice.send("find me later");
    alice.expect_line("alice: find me later");
    let threads = nice_by_thread(server.pid());
    let of = |name: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    assert_eq!(of("indexer"), vec![10], "{threads:?}");
    assert_eq!(of("store"), vec![0], "{threads:?}");
    assert!(
        !of("flusher-0").is_empty() && of("flusher-0").iter().all(|&n| n == 0),
        "{threads:?}"
    );
    // And it still indexes: a search finds the line.
    alice.send("/search later");
    alice.expect(|l| l.contains("find me later") && !l.starts_with("alice: "));
}

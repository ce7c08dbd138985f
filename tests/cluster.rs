//! A cluster of servers on Redis (issue 16): real `server` binaries on port
//! 0, each with its own data directory, and a real `redis-server` of the
//! test's own on a unix socket (AOF, `appendfsync always`). What a user
//! would notice: chat across nodes, one order, identical files, names,
//! a node killed and restarted, Redis restarted and paused, a trimmed log.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Client, PATIENCE, TestRedis, TestServer, chat_lines, read_rows, server_tool, wait_until,
};

/// Leases in these tests: short, so that a dead node is noticed quickly.
const LEASE: &str = "2";
/// How long noticing a dead node may take: the lease, the reapers' grace
/// and a heartbeat, with room for a loaded machine.
const NOTICE: Duration = Duration::from_secs(30);
/// How long a whole cluster may take to agree on something.
const AGREE: Duration = Duration::from_secs(30);

fn node(dir: &Path, redis: &TestRedis, extra: &[&str]) -> TestServer {
    let url = redis.url();
    let mut args = vec!["--cluster", url.as_str(), "--cluster-lease", LEASE];
    args.extend_from_slice(extra);
    TestServer::start(dir, &args)
}

/// Makes accounts (name, password) in a node's data directory.
fn add_users(dir: &Path, users: &[(&str, &str)]) {
    for (name, password) in users {
        let (ok, _, err) = server_tool(dir, &["add-user", name], &format!("{password}\n"));
        assert!(ok, "{err}");
    }
}

/// The rows of `messages.csv` as (id, room, sender, recipient, text).
fn rows(server: &TestServer) -> Vec<(u64, String, String, String, String)> {
    read_rows(&server.dir.join("messages.csv"))
        .iter()
        .map(|r| {
            (
                r[0].parse().unwrap(),
                r[2].to_string(),
                r[3].to_string(),
                r[4].to_string(),
                r[5].to_string(),
            )
        })
        .collect()
}

fn file(server: &TestServer) -> String {
    std::fs::read_to_string(server.dir.join("messages.csv")).unwrap()
}

/// Waits until every node's `messages.csv` holds `count` rows and all are
/// byte for byte the same; returns that file.
fn files_agree(nodes: &[&TestServer], count: usize) -> String {
    wait_until(AGREE, "every node's messages.csv is the same", || {
        let first = file(nodes[0]);
        first.lines().count() == count + 1 && nodes.iter().all(|n| file(n) == first)
    });
    file(nodes[0])
}

fn ids_run_from_one(server: &TestServer) {
    let ids: Vec<u64> = rows(server).iter().map(|r| r.0).collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(
        ids, expected,
        "ids are 1, 2, 3 ... with none missing or twice"
    );
}

#[test]
fn people_on_different_nodes_chat_both_ways() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &[]);
    let b = node(&root.path().join("b"), &redis, &[]);

    let mut alice = a.join("alice");
    alice.send("hello from a");
    alice.expect_line("alice: hello from a");
    let mut bob = b.join("bob");
    // History on join comes from the other node's message.
    bob.expect_line("alice: hello from a");
    alice.expect_line("bob joined #general");

    bob.send("hello from b");
    alice.expect_line("bob: hello from b");
    alice.send("and back to b");
    bob.expect_line("alice: and back to b");

    // Whispers cross nodes; only the recipient gets them.
    bob.send("/msg alice just for you");
    let got = alice.expect_line("just for you");
    assert!(got.contains("bob") && got.contains("whisper"), "{got}");
    bob.expect(|l| l.contains("whisper to alice") && l.contains("just for you"));

    // /who and /list count people on both nodes, from either node.
    bob.send("/who");
    bob.expect_line("* online (2)");
    bob.expect_line("alice in #general");
    alice.send("/list");
    alice.expect_line("#general (2 online)");
    // A newcomer's greeting counts everyone in the chat, on every node.
    let mut newcomer = b.connect_raw();
    newcomer.expect_line("welcome to chatroom (3 connected)");

    // A room made on one node is there on the other.
    alice.send("/create hideout");
    alice.expect_line("you created #hideout");
    bob.expect_line("alice left #general");
    wait_until(AGREE, "node b knows #hideout", || {
        bob.send("/list");
        bob.sync().iter().any(|l| l.contains("#hideout (1 online)"))
    });
    bob.send("/join hideout");
    bob.expect_line("you joined #hideout (2 here)");
    alice.expect_line("bob joined #hideout");
    bob.send("in the hideout");
    alice.expect_line("bob: in the hideout");

    // /history and /search on b answer for messages written on a.
    bob.send("/search hello");
    bob.expect_line("hello from a");
    bob.send("/join general");
    bob.send("/history 10");
    bob.expect_line("and back to b");

    let file = files_agree(&[&a, &b], 5);
    assert!(file.contains(",,bob,alice,just for you"), "{file}");
    ids_run_from_one(&a);

    // Quitting is announced on the other node too.
    alice.send("/join general");
    alice.expect_line("you joined #general");
    bob.send("/quit");
    alice.expect_line("bob left the chat");
}

#[test]
fn senders_on_three_nodes_are_seen_in_one_order_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let nodes: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&root.path().join(n), &redis, &["--rate", "0"]))
        .collect();
    let mut readers: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.join(&format!("reader{i}")))
        .collect();
    let mut senders: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.join(&format!("sender{i}")))
        .collect();
    const EACH: usize = 30;
    for m in 0..EACH {
        for (i, sender) in senders.iter_mut().enumerate() {
            sender.send(&format!("s{i} says {m}"));
        }
    }
    let last: Vec<String> = (0..3)
        .map(|i| format!("sender{i}: s{i} says {}", EACH - 1))
        .collect();
    let mut orders = Vec::new();
    for reader in &mut readers {
        // The three last lines, in whatever order they come.
        let mut missing = last.clone();
        while !missing.is_empty() {
            let line = reader.expect_within(AGREE, |l| missing.iter().any(|m| l.ends_with(m)));
            missing.retain(|m| !line.ends_with(m.as_str()));
        }
        let seen = reader.sync();
        let said: Vec<String> = chat_lines(&reader.seen)
            .into_iter()
            .filter(|l| l.starts_with("sender"))
            .collect();
        drop(seen);
        assert_eq!(said.len(), 3 * EACH, "every message, once: {said:#?}");
        orders.push(said);
    }
    assert_eq!(orders[0], orders[1], "node a and node b saw one order");
    assert_eq!(orders[0], orders[2], "node a and node c saw one order");
    // Each sender's own lines keep the order they were sent in.
    for i in 0..3 {
        let own: Vec<&String> = orders[0]
            .iter()
            .filter(|l| l.starts_with(&format!("sender{i}:")))
            .collect();
        let expected: Vec<String> = (0..EACH)
            .map(|m| format!("sender{i}: s{i} says {m}"))
            .collect();
        assert_eq!(own.len(), EACH);
        assert!(own.iter().zip(&expected).all(|(a, b)| *a == b), "{own:#?}");
    }
    let refs: Vec<&TestServer> = nodes.iter().collect();
    files_agree(&refs, 3 * EACH);
    ids_run_from_one(&nodes[0]);
    // File order is the order people saw.
    let in_file: Vec<String> = rows(&nodes[2])
        .into_iter()
        .map(|(_, _, from, _, text)| format!("{from}: {text}"))
        .collect();
    assert_eq!(in_file, orders[0]);
}

#[test]
fn a_name_online_on_one_node_is_refused_on_another() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &[]);
    let b = node(&root.path().join("b"), &redis, &[]);
    let mut alice = a.join("alice");
    let mut other = b.connect_raw();
    other.send("ALICE");
    other.expect_line("! the name ALICE is taken");
    other.expect_line("Name:");
    // Guests get names nobody on any node has.
    let mut guest_a = a.connect_raw();
    guest_a.send("");
    let name_a = guest_a.expect_line("* hello ");
    let mut guest_b = b.connect_raw();
    guest_b.send("");
    let name_b = guest_b.expect_line("* hello ");
    assert_ne!(name_a, name_b);
    // Once alice quits, the name is free on the other node.
    alice.send("/quit");
    alice.expect_closed();
    wait_until(AGREE, "node b may give the name alice", || {
        other.send("alice");
        let answer = other.expect(|l| l.starts_with("! ") || l.starts_with("* hello"));
        answer.starts_with("* hello")
    });
    let mut check = a.join("carol");
    check.send("/who");
    check.expect_line("alice in #general");
}

#[test]
fn the_right_password_on_another_node_takes_the_name_over() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    // Accounts made on one node's data directory only.
    add_users(&dir_a, &[("alice", "secret"), ("bob", "hunter2")]);
    let a = node(&dir_a, &redis, &[]);
    let b = node(&dir_b, &redis, &[]);
    let mut old = a.login("alice", "secret");
    let mut bob = a.login("bob", "hunter2");
    let mut new = b.login("alice", "secret");
    old.expect_line("! you logged in again from another connection");
    old.expect_closed();
    new.send("I moved to b");
    bob.expect_line("alice: I moved to b");
    bob.send("/who");
    bob.expect_line("* online (2)");
}

#[test]
fn a_killed_node_is_noticed_and_catches_up_when_restarted() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &[]);
    let dir_b = root.path().join("b");
    let mut b = node(&dir_b, &redis, &[]);
    let mut alice = a.join("alice");
    let _dave = b.join("dave");
    let _erin = b.join("erin");
    alice.expect_line("erin joined #general");
    alice.send("before the crash");
    files_agree(&[&a, &b], 1);

    b.kill9();
    // Dave reconnects to the node that is left at once, under his name:
    // the login waits the few seconds until the dead node's names are free.
    let mut dave = a.connect_raw();
    dave.send("dave");
    dave.expect_within(NOTICE, |l| l.starts_with("* hello dave"));
    alice.expect_within(NOTICE, |l| l == "* erin left the chat");
    assert!(
        alice.seen.iter().any(|l| l == "* dave left the chat"),
        "{:#?}",
        alice.seen
    );
    dave.send("back on a");
    alice.expect_line("dave: back on a");
    alice.send("while b was down");
    dave.expect_line("alice: while b was down");
    alice.send("/who");
    alice.expect_line("* online (2)");

    // The restarted node catches up from where its messages.csv ends.
    let b = node(&dir_b, &redis, &[]);
    files_agree(&[&a, &b], 3);
    let mut frank = b.join("frank");
    frank.expect_line("alice: while b was down");
    frank.send("/who");
    frank.expect_line("* online (3)");
    ids_run_from_one(&b);
}

/// Sends `count` lines `PREFIX-N` and waits until each was echoed or
/// refused as not sent; returns the texts echoed.
fn echoed(client: &mut Client, who: &str, prefix: &str, count: usize) -> Vec<String> {
    let mut echoed = Vec::new();
    let mut refused = 0;
    while echoed.len() + refused < count {
        let line = client.expect_within(AGREE, |l| {
            l.contains(&format!("{who}: {prefix}-")) || l.contains("was not sent")
        });
        if line.contains("was not sent") {
            refused += 1;
        } else if let Some((_, text)) = line.split_once(&format!("{who}: ")) {
            echoed.push(text.to_string());
        }
    }
    echoed
}

#[test]
fn redis_restarted_under_chat_loses_no_id_and_doubles_none() {
    let root = tempfile::tempdir().unwrap();
    let mut redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &["--rate", "0"]);
    let b = node(&root.path().join("b"), &redis, &["--rate", "0"]);
    let mut alice = a.join("alice");
    let mut bob = b.join("bob");
    const EACH: usize = 40;
    for i in 0..EACH {
        alice.send(&format!("a-{i}"));
        bob.send(&format!("b-{i}"));
        if i == EACH / 2 {
            redis.restart();
        }
    }
    // Both nodes really lost Redis for a while.
    // (A follower caught in its first look at the log says it could not
    // read it, rather than that it lost Redis while reading.)
    for node in [&a, &b] {
        wait_until(PATIENCE, "the node says it lost Redis", || {
            let said = node.stderr_text();
            said.contains("lost the cluster's Redis")
                || said.contains("cannot read the cluster's log")
        });
    }
    let mut sent = echoed(&mut alice, "alice", "a", EACH);
    sent.extend(echoed(&mut bob, "bob", "b", EACH));
    // Both people are still connected and chat goes on.
    alice.send("after the restart");
    bob.expect_line("alice: after the restart");
    sent.push("after the restart".into());

    let file = files_agree(&[&a, &b], sent.len());
    ids_run_from_one(&a);
    let texts: Vec<String> = rows(&a).into_iter().map(|r| r.4).collect();
    for text in &sent {
        assert_eq!(
            texts.iter().filter(|t| *t == text).count(),
            1,
            "{text} shown once, written once: {file}"
        );
    }
}

/// The address of a node's `listening on HOST:PORT (KIND)` line.
/// One HTTP GET; the whole response.
fn get(to: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(to).unwrap();
    stream.set_read_timeout(Some(AGREE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn redis_paused_longer_than_the_lease_fences_then_nobody_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &["--metrics-port", "0"]);
    let b = node(&root.path().join("b"), &redis, &[]);
    let probes = a.listening("metrics");
    let mut alice = a.join("alice");
    let mut bob = b.join("bob");
    alice.expect_line("bob joined #general");
    let metrics = get(probes, "/metrics");
    assert!(
        metrics.contains("\nchatroom_cluster_lag_messages 0\n")
            && metrics.contains("\nchatroom_cluster_fenced 0\n"),
        "a node shows its cluster lag and that it serves: {metrics}"
    );
    assert!(get(probes, "/healthz").starts_with("HTTP/1.1 200"));

    redis.signal(libc::SIGSTOP);
    a.expect_stderr("fenced");
    b.expect_stderr("fenced");
    // A balancer asking the fenced node is told to send people elsewhere.
    let health = get(probes, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("cluster's Redis"),
        "{health}"
    );
    // The sender is told; nothing is lost in silence.
    alice.send("said while redis slept");
    alice.expect_within(AGREE, |l| l.starts_with("! ") && l.contains("cannot reach"));
    redis.signal(libc::SIGCONT);
    a.expect_stderr("serves again");
    b.expect_stderr("serves again");
    assert!(get(probes, "/healthz").starts_with("HTTP/1.1 200"));

    // Everyone is still here, on both nodes, and chat goes on.
    bob.send("still here");
    alice.expect_within(AGREE, |l| l.ends_with("bob: still here"));
    // Node a counts every message it wrote, bob's from node b included.
    let metrics = get(probes, "/metrics");
    assert!(
        metric(&metrics, "chatroom_messages_total") >= 1.0
            && metric(&metrics, "chatroom_store_batch_messages_count") >= 1.0,
        "messages written by a node of a cluster are counted: {metrics}"
    );
    alice.send("/who");
    alice.expect_line("* online (2)");
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let seen = client.sync();
        assert!(
            !client.seen.iter().any(|l| l.contains("left the chat")),
            "{who} saw someone dropped: {seen:#?}"
        );
    }
    for server in [&a, &b] {
        assert!(
            !server.stderr_text().contains("is gone"),
            "no node was reaped: {}",
            server.stderr_text()
        );
    }
}

#[test]
fn a_login_taking_a_name_over_while_redis_is_away_leaves_no_ghost() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let dir_a = root.path().join("a");
    add_users(&dir_a, &[("alice", "secret"), ("bob", "hunter2")]);
    let a = node(&dir_a, &redis, &[]);
    let b = node(&root.path().join("b"), &redis, &[]);
    let mut old = a.login("alice", "secret");
    let mut bob = b.login("bob", "hunter2");
    old.expect_line("bob joined #general");
    redis.signal(libc::SIGSTOP);
    a.expect_stderr("fenced");
    // alice logs in again on the same node while it cannot reach Redis:
    // her old connection is closed, and the new login is refused.
    let mut new = a.connect_raw();
    new.send("alice");
    new.expect(|l| l == "Password:");
    new.send("secret");
    new.expect_within(AGREE, |l| {
        l.contains("cannot reach the rest of its cluster")
    });
    old.expect_line("! you logged in again from another connection");
    old.expect_closed();
    redis.signal(libc::SIGCONT);
    a.expect_stderr("serves again");
    // Nobody holds the name now: node b is told so, and does not list a
    // ghost of alice.
    bob.expect_within(AGREE, |l| l.contains("alice left the chat"));
    bob.send("/who");
    bob.expect_line("* online (1)");
}

#[test]
fn a_node_behind_a_trimmed_log_refuses_to_start_and_says_what_to_do() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &[]);
    let dir_b = root.path().join("b");
    let mut b = node(&dir_b, &redis, &[]);
    let mut alice = a.join("alice");
    alice.send("one");
    files_agree(&[&a, &b], 1);
    b.signal(libc::SIGTERM);
    assert!(b.wait_exit().success());
    for text in ["two", "three", "four"] {
        alice.send(text);
        alice.expect_line(text);
    }
    let _: i64 = redis::cmd("XTRIM")
        .arg("chat:log")
        .arg("MAXLEN")
        .arg(0)
        .query(&mut redis.connection())
        .unwrap();
    let url = redis.url();
    let output = Command::new(common::server_bin())
        .args(["--port", "0", "--data-dir"])
        .arg(&dir_b)
        .args(["--cluster", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it never said it was listening");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        error.contains("ends at id 1") && error.contains("copy messages.csv from another node"),
        "{stderr}"
    );
    // Nothing was skipped: b's file still ends where it did.
    assert_eq!(read_rows(&dir_b.join("messages.csv")).len(), 1);
}

#[test]
fn a_gap_in_the_log_under_a_running_node_stops_its_messages_not_its_goodbyes() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &[]);
    let mut alice = a.join("alice");
    alice.send("one");
    alice.expect_line("alice: one");
    // An entry two ids on: message 2 is missing from the log (lost by
    // Redis, or trimmed before this node read it).
    let _: String = redis::cmd("XADD")
        .arg("chat:log")
        .arg("3-0")
        .arg("e")
        .arg("say\tghost\t0\t{\"t\":\"t\",\"r\":\"general\",\"f\":\"ghost\",\"x\":\"boo\"}")
        .query(&mut redis.connection())
        .unwrap();
    a.expect_stderr("the cluster's log skips from 1-0 to 3-0");
    // Nothing after the gap is shown, and the sender is told.
    alice.send("two");
    alice.expect_line("was not sent");
    // Leaving still works: the goodbye does not wait for a log that will
    // not be delivered.
    alice.send("/quit");
    alice.expect_line("goodbye, alice");
    let rest = alice.expect_closed();
    assert!(
        rest.iter().all(|l| !l.contains("boo")),
        "nothing after the gap is shown: {rest:?}"
    );
    assert_eq!(rows(&a).len(), 1, "only message 1 is written");
}

#[test]
fn a_batch_the_node_has_half_read_gives_only_what_follows() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &[]);
    let mut alice = a.join("alice");
    alice.send("one");
    alice.expect_line("alice: one");
    // One entry (a batch) holding message 1 again and message 2, as a
    // node finds the log when its file ends inside a batch.
    let say = |text: &str| {
        format!(
            "say\tother\t0\t{{\"t\":\"2026-01-01T00:00:00.000+00:00\",\"r\":\"general\",\"f\":\"ghost\",\"x\":\"{text}\"}}"
        )
    };
    let mut con = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("chat:msg")
        .arg(2)
        .query(&mut con)
        .unwrap();
    // The log before it: alice's login (0-1); then messages 1 and 2.
    let _: String = redis::cmd("XADD")
        .arg("chat:log")
        .arg("2-0")
        .arg("b")
        .arg(format!("0-1\n{}\n{}", say("one again"), say("two")))
        .query(&mut con)
        .unwrap();
    alice.expect_line("ghost: two");
    alice.send("three");
    alice.expect_line("alice: three");
    let written: Vec<(u64, String)> = rows(&a).into_iter().map(|r| (r.0, r.4)).collect();
    assert_eq!(
        written,
        [
            (1, "one".to_string()),
            (2, "two".to_string()),
            (3, "three".to_string())
        ],
        "message 1 is not written twice, and ids go on"
    );
}

#[test]
fn admins_act_across_nodes() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    assert!(server_tool(&dir_a, &["add-user", "root", "--admin"], "pw\n").0);
    assert!(server_tool(&dir_a, &["add-user", "eve"], "pw\n").0);
    let a = node(&dir_a, &redis, &[]);
    let b = node(&dir_b, &redis, &[]);
    let mut root_user = a.login("root", "pw");
    let mut eve = b.login("eve", "pw");
    root_user.expect_line("eve joined #general");

    root_user.send("/mute eve 5");
    root_user.expect_line("eve was muted by root");
    eve.expect_line("eve was muted by root");
    eve.send("can you hear me");
    eve.expect_line("! you are muted");
    root_user.send("/unmute eve");
    eve.expect_line("eve was unmuted by root");
    eve.send("now you can");
    root_user.expect_line("eve: now you can");

    root_user.send("/kick eve enough");
    eve.expect_line("! you were kicked by root (enough)");
    eve.expect_closed();
    root_user.expect_line("eve left the chat");

    root_user.send("/ban eve spam");
    root_user.expect_line("eve was banned by root");
    wait_until(AGREE, "node b's bans.csv has eve", || {
        std::fs::read_to_string(dir_b.join("bans.csv")).is_ok_and(|t| t.contains("eve"))
    });
    let mut again = b.connect_raw();
    again.send("eve");
    again.expect_line("Password:");
    again.send("pw");
    again.expect_line("you are banned");
}

#[test]
fn accounts_and_tokens_made_on_one_node_work_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    let a = node(&dir_a, &redis, &[]);
    let b = node(&dir_b, &redis, &[]);
    // An account added to node a's data directory while both run...
    add_users(&dir_a, &[("carol", "s3cret")]);
    // ...makes node b private too, with the same password.
    wait_until(AGREE, "node b has carol's account", || {
        std::fs::read_to_string(dir_b.join("accounts.csv")).is_ok_and(|t| t.contains("carol"))
    });
    let mut carol = b.login("carol", "s3cret");
    carol.send("/token");
    let line = carol.expect_line("token");
    let token = line
        .split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("a token in {line:?}"))
        .to_string();
    carol.send("/quit");
    carol.expect_closed();
    // The token node b gave logs carol in on node a.
    wait_until(AGREE, "node a has carol's token", || {
        std::fs::read_to_string(dir_a.join("tokens.csv")).is_ok_and(|t| t.lines().count() > 1)
    });
    let mut again = a.connect_raw();
    again.send(&format!("/resume {token}"));
    again.expect_line("* hello carol");
    // A wrong password is refused on either node.
    let mut wrong = a.connect_raw();
    wrong.send("carol");
    wrong.expect_line("Password:");
    wrong.send("nope");
    wrong.expect_line("! wrong name or password");
}

/// A metric's value from a `/metrics` page (0 if absent).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_node_syncs_its_copy_of_the_log_once_a_second_not_per_message() {
    // The commit point of a cluster's message is Redis's AOF; a node's
    // messages.csv is a copy, synced at most once a second (a single server
    // syncs each batch: its file is the only copy).
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    // No flood control: the lines go as fast as they are written.
    let flags = ["--metrics-port", "0", "--rate", "0"];
    let a = node(&root.path().join("a"), &redis, &flags);
    let single = TestServer::start(&root.path().join("single"), &flags);
    let syncs = |server: &TestServer| {
        metric(
            &get(server.listening("metrics"), "/metrics"),
            "chatroom_store_fsync_seconds_count",
        )
    };
    let batches = |server: &TestServer| {
        metric(
            &get(server.listening("metrics"), "/metrics"),
            "chatroom_store_write_seconds_count",
        )
    };
    const SENT: usize = 40;
    let started = std::time::Instant::now();
    let mut on_node = a.join("alice");
    let mut alone = single.join("alice");
    for alice in [&mut on_node, &mut alone] {
        // One at a time: each its own batch, written before it is shown.
        for n in 0..SENT {
            alice.send(&format!("line {n}"));
            alice.expect_line(&format!("alice: line {n}"));
        }
    }
    let took = started.elapsed().as_secs_f64();
    assert!(
        syncs(&single) >= SENT as f64,
        "a single server syncs every batch: {} syncs",
        syncs(&single)
    );
    let (node_batches, node_syncs) = (batches(&a), syncs(&a));
    assert!(
        node_batches >= SENT as f64,
        "the node wrote each message as it came: {node_batches} batches"
    );
    assert!(
        node_syncs <= took + 2.0,
        "the node synced {node_syncs} times in {took:.1} s for {node_batches} batches"
    );
    // A batch written without a sync is synced a moment later, with nothing
    // new coming.
    let mut n = SENT;
    let unsynced = loop {
        let before = syncs(&a);
        on_node.send(&format!("line {n}"));
        on_node.expect_line(&format!("alice: line {n}"));
        n += 1;
        if syncs(&a) == before {
            break before;
        }
    };
    wait_until(AGREE, "the node syncs what it wrote last", || {
        syncs(&a) > unsynced
    });
}

#[test]
fn a_sender_muted_in_the_log_is_refused_while_the_others_lines_go_on() {
    // A mute the node has not heard of yet (given on another node a moment
    // ago): the log's script refuses the muted sender's lines, also in the
    // middle of a run of other people's, and takes everyone else's in order.
    let root = tempfile::tempdir().unwrap();
    let redis = TestRedis::start(&root.path().join("redis"));
    let a = node(&root.path().join("a"), &redis, &["--rate", "0"]);
    let mut bob = a.join("bob");
    let mut eve = a.join("eve");
    bob.expect_line("eve joined #general");
    let _: () = redis::cmd("HSET")
        .arg("chat:mutes")
        .arg("eve")
        .arg("0")
        .query(&mut redis.connection())
        .unwrap();
    const EACH: usize = 30;
    for n in 0..EACH {
        bob.send(&format!("bob-{n}"));
        eve.send(&format!("eve-{n}"));
    }
    let said = echoed(&mut bob, "bob", "bob", EACH);
    let expected: Vec<String> = (0..EACH).map(|n| format!("bob-{n}")).collect();
    assert_eq!(said, expected, "bob's lines, all and in order");
    for _ in 0..EACH {
        eve.expect_within(AGREE, |l| l.starts_with("! you are muted"));
    }
    let logged = rows(&a);
    assert!(
        logged.iter().all(|r| r.2 == "bob") && logged.len() == EACH,
        "only bob's lines are in the log: {logged:?}"
    );
    ids_run_from_one(&a);
    assert!(
        !bob.sync().iter().any(|l| l.contains("eve: eve-")),
        "none of eve's lines reached anyone"
    );
}

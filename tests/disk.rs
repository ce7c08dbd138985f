//! Disk errors corrupt nothing, and the data directory belongs to one server:
//! a full disk (a real 64 KiB tmpfs, and injected write, sync and repair
//! failures through `CHATROOM_FAULTS`) refuses whole batches and leaves the
//! files whole; a failing `data.csv` never refuses a message that was saved;
//! a second server is turned away; rotation keeps ids going; shutdown always
//! drains the store.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, TestServer, read_rows, server_tool};

/// A server whose writes fail as the faults file says.
fn start_with_faults(dir: &Path, faults: &Path, args: &[&str]) -> TestServer {
    let faults = faults.to_path_buf();
    TestServer::start_with(dir, args, move |command| {
        command.env("CHATROOM_FAULTS", &faults);
    })
}

fn set_faults(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Sends `text` and returns whether it was echoed (saved) or refused.
fn say(client: &mut Client, text: &str) -> bool {
    client.send(text);
    let line = client.expect(|l| l.ends_with(&format!(": {text}")) || l.starts_with("! "));
    !line.starts_with("! ")
}

/// The rows of messages.csv as (id, text); panics on a row that is not whole.
fn stored(dir: &Path) -> Vec<(u64, String)> {
    read_rows(&dir.join("messages.csv"))
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 6, "a whole row: {r:?}");
            (r[0].parse().expect("an id"), r[5].to_string())
        })
        .collect()
}

#[test]
fn a_failed_write_or_sync_refuses_its_batch_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let faults = tempfile::NamedTempFile::new().unwrap();
    let server = start_with_faults(dir.path(), faults.path(), &[]);
    let mut alice = server.join("alice");
    assert!(say(&mut alice, "first"));
    for fault in ["messages.csv write", "messages.csv sync"] {
        set_faults(faults.path(), fault);
        alice.send(&format!("refused by {fault}"));
        alice.expect_line(
            "! your message could not be saved (the server's disk failed), so it was not sent; try again later",
        );
        set_faults(faults.path(), "");
        assert!(say(&mut alice, &format!("after {fault}")));
    }
    // A file that cannot even be cut back takes nothing until it can be.
    set_faults(faults.path(), "messages.csv write\nmessages.csv cut\n");
    assert!(!say(&mut alice, "torn"));
    alice.send("while damaged");
    alice.expect_line("! the server cannot save messages right now");
    server.expect_stderr("no message is taken until the file can be repaired");
    set_faults(faults.path(), "");
    assert!(say(&mut alice, "repaired"));
    assert_eq!(
        stored(dir.path()),
        [
            (1, "first".to_string()),
            (2, "after messages.csv write".to_string()),
            (3, "after messages.csv sync".to_string()),
            (4, "repaired".to_string()),
        ]
    );
}

/// Issue 10, item 3: only messages.csv decides a message's fate.
#[test]
fn a_data_csv_that_cannot_be_written_refuses_no_message_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let faults = tempfile::NamedTempFile::new().unwrap();
    let mut server = start_with_faults(dir.path(), faults.path(), &[]);
    let mut alice = server.join("alice");
    set_faults(faults.path(), "data.csv write\nrooms.csv write\n");
    let mut bob = server.join("bob");
    assert!(
        say(&mut alice, "hello while data.csv fails"),
        "{:?}",
        alice.seen
    );
    bob.expect_line("alice: hello while data.csv fails");
    alice.send("/create ops");
    alice.expect_line("you created #ops");
    server.expect_stderr("writing data.csv failed");
    assert_eq!(stored(dir.path()).len(), 1);

    // Once the disk is back, the rows owed are written, once each, in order.
    set_faults(faults.path(), "");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events = server.events();
        let bob_rows: Vec<String> = events
            .iter()
            .filter(|r| &r[4] == "bob" || (&r[5] == "connect" && r[3] == *"2"))
            .map(|r| r[5].to_string())
            .collect();
        let rooms = read_rows(&dir.path().join("rooms.csv"));
        if bob_rows == ["connect", "login"] && !rooms.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "data.csv never caught up: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rooms = read_rows(&dir.path().join("rooms.csv"));
    assert_eq!(rooms.len(), 1);
    assert_eq!(&rooms[0][1], "ops");
    assert!(say(&mut alice, "after"));
    assert_eq!(stored(dir.path()).len(), 2, "no message written twice");

    // A shutdown that cannot write what it owes says so and fails.
    set_faults(faults.path(), "data.csv write\n");
    drop(bob);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(!status.success(), "{status:?}");
    server.expect_stderr("could not be written");
    server.expect_stderr("data.csv");
}

/// A 64 KiB tmpfs mounted for the test, unmounted at the end.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.path().to_path_buf(), dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_messages_and_leaves_every_file_whole() {
    let Some(tmpfs) = Tmpfs::mount() else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the same paths are tested with injected faults above"
        );
        return;
    };
    let data = tmpfs.0.join("data");
    std::fs::create_dir(&data).unwrap();
    let filler = tmpfs.0.join("filler");
    std::fs::write(&filler, vec![b'f'; 16 * 1024]).unwrap();
    let mut server = TestServer::start(&data, &["--rate", "0"]);
    let mut alice = server.join("alice");
    let mut shown = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for i in 0..4000 {
        let text = format!("message {i:04} {}", "x".repeat(60));
        if say(&mut alice, &text) {
            shown.insert(text);
        } else {
            refused.insert(text);
            if refused.len() >= 30 {
                break;
            }
        }
    }
    assert!(
        refused.len() >= 30,
        "the disk never filled: {} shown",
        shown.len()
    );
    // Space again: sending works again, after the last good row.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..5 {
        let text = format!("after the disk was freed {i}");
        assert!(
            say(&mut alice, &text),
            "{:?}",
            &alice.seen[alice.seen.len() - 3..]
        );
        shown.insert(text);
    }
    let rows = stored(&data);
    let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        (1..=rows.len() as u64).collect::<Vec<u64>>(),
        "ids in order, none lost"
    );
    let texts: BTreeSet<String> = rows.into_iter().map(|r| r.1).collect();
    assert_eq!(texts, shown, "the file holds exactly what was shown");
    assert!(texts.is_disjoint(&refused));
    drop(alice);
    server.signal(libc::SIGTERM);
    server.wait_exit();
    let again = TestServer::start(&data, &[]);
    let mut bob = again.join("bob");
    assert!(say(&mut bob, "after a restart"));
    assert!(!again.stderr_text().contains("partial last row"));
    drop(tmpfs);
}

/// Issue 10, item 6.
#[test]
fn a_second_server_on_the_same_data_directory_is_turned_away_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start(dir.path(), &[]);
    let mut second = Command::new(common::server_bin())
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server started on the same data directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = second.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first_line = stderr.lines().next().unwrap_or("");
    assert!(
        first_line.contains(&format!("another server (pid {})", first.pid()))
            && first_line.contains("data directory"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    // The subcommands still work beside it.
    let (ok, _, err) = server_tool(dir.path(), &["list-bans"], "");
    assert!(ok, "{err}");
}

/// Issue 10, item 6: `mv` and `copytruncate` rotation under a running
/// server, then restarts.
#[test]
fn ids_carry_on_when_messages_csv_is_rotated_under_the_server_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.csv");
    let header = "id,timestamp,room,sender,recipient,text";
    let mut server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    assert!(say(&mut alice, "one"));
    assert!(say(&mut alice, "two"));
    std::fs::rename(&path, dir.path().join("messages.csv.1")).unwrap();
    assert!(say(&mut alice, "after mv"));
    assert_eq!(stored(dir.path()), [(3, "after mv".to_string())]);
    std::fs::copy(&path, dir.path().join("messages.csv.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(say(&mut alice, "after copytruncate"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&format!("{header}\n4,")), "{text}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());

    // Archived while stopped: the next start carries on all the same.
    std::fs::rename(&path, dir.path().join("messages.csv.3")).unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut bob = server.join("bob");
    assert!(say(&mut bob, "after a restart"));
    assert_eq!(stored(dir.path()), [(5, "after a restart".to_string())]);
}

/// Issue 10, item 9: a client thread still busy at shutdown (here one
/// waiting out --login-delay-ms) does not keep the store from draining.
#[test]
fn shutdown_drains_the_store_even_while_a_login_waits_out_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = server_tool(dir.path(), &["add-user", "carol"], "hunter22\n");
    assert!(ok, "{err}");
    let mut server = TestServer::start(dir.path(), &["--login-delay-ms", "30000"]);
    let mut guesser = server.connect_raw();
    guesser.send("carol");
    guesser.expect(|l| l == "Password:");
    guesser.send("wrong");
    server.expect_stderr("failed login");
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the delay"
    );
    let events = server.events();
    let disconnects: Vec<_> = events.iter().filter(|r| &r[5] == "disconnect").collect();
    assert_eq!(disconnects.len(), 1, "{events:?}");
    server.expect_stderr("all messages are in messages.csv");
}

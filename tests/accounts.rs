//! A private organisation: accounts, logins, moderation and flood control,
//! over real TCP against the real server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, server_tool};

const ADMIN_PW: &str = "correct horse battery";
const BOB_PW: &str = "bobs-s3cret";
const CAROL_PW: &str = "carol pass, with comma";

fn add(dir: &Path, name: &str, password: &str, admin: bool) {
    let mut args = vec!["add-user", name];
    if admin {
        args.push("--admin");
    }
    let (ok, out, err) = server_tool(dir, &args, &format!("{password}\n"));
    assert!(ok, "add-user {name}: {out} {err}");
}

/// An admin and two members, and a server with fast failed logins.
fn organisation(extra: &[&str]) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    add(dir.path(), "admin", ADMIN_PW, true);
    add(dir.path(), "bob", BOB_PW, false);
    add(dir.path(), "carol", CAROL_PW, false);
    let mut args = vec!["--login-delay-ms", "20"];
    args.extend_from_slice(extra);
    let server = TestServer::start(dir.path(), &args);
    (dir, server)
}

#[test]
fn users_are_added_listed_changed_and_removed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = server_tool(dir.path(), &["list-users"], "");
    assert!(ok && out.contains("no accounts"), "{out}");
    add(dir.path(), "admin", ADMIN_PW, true);
    add(dir.path(), "bob", BOB_PW, false);
    let (ok, _, err) = server_tool(dir.path(), &["add-user", "BOB"], "x\n");
    assert!(
        !ok && err.starts_with("error:") && err.contains("exists"),
        "{err}"
    );
    let (ok, _, err) = server_tool(dir.path(), &["add-user", "dave"], "");
    assert!(!ok && err.contains("password"), "{err}");
    let (ok, out, _) = server_tool(dir.path(), &["list-users"], "");
    assert!(ok);
    assert!(out.contains("admin") && out.contains("bob") && out.contains("member"));
    assert!(!out.contains("argon2"), "list-users shows no hashes: {out}");
    let accounts = std::fs::read_to_string(dir.path().join("accounts.csv")).unwrap();
    assert!(accounts.starts_with("name,password_hash,role,created\n"));
    assert!(accounts.contains("$argon2id$") && !accounts.contains(BOB_PW));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("accounts.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "accounts.csv is readable by its owner only"
    );

    let (ok, _, _) = server_tool(dir.path(), &["passwd", "bob"], "new password\n");
    assert!(ok);
    let server = TestServer::start(dir.path(), &["--login-delay-ms", "20"]);
    server.login("bob", "new password");
    let (ok, _, _) = server_tool(dir.path(), &["remove-user", "bob"], "");
    assert!(ok);
    let (ok, _, err) = server_tool(dir.path(), &["remove-user", "bob"], "");
    assert!(!ok && err.contains("no account"), "{err}");
    // the running server sees the removal at once
    let mut again = server.connect_raw();
    again.send("bob");
    again.expect(|l| l == "Password:");
    again.send("new password");
    again.expect_line("! wrong name or password");
}

#[test]
fn a_private_server_asks_for_a_password_and_turns_guests_away() {
    let (_dir, server) = organisation(&[]);
    let mut guest = server.connect_raw();
    guest.send("");
    guest.expect(|l| l.starts_with("! ") && l.contains("private"));
    guest.expect(|l| l == "Name:");
    let mut bob = server.login("bob", BOB_PW);
    assert!(
        bob.seen
            .iter()
            .any(|l| l.starts_with("* you joined #general"))
    );
    bob.send("hello team");
    bob.expect_line("bob: hello team");
}

#[test]
fn a_wrong_name_or_password_gets_the_same_line_and_three_failures_close() {
    let (_dir, server) = organisation(&[]);
    let mut c = server.connect_raw();
    c.send("bob");
    c.expect(|l| l == "Password:");
    c.send("wrong");
    let wrong_password = c.expect(|l| l.starts_with("! "));
    c.expect(|l| l == "Name:");
    c.send("nobody");
    c.expect(|l| l == "Password:");
    c.send(BOB_PW);
    let wrong_name = c.expect(|l| l.starts_with("! "));
    assert_eq!(
        wrong_password, wrong_name,
        "no telling which part was wrong"
    );
    c.send("bob");
    c.send("still wrong");
    c.expect_closed();
    let failed = server
        .events()
        .iter()
        .filter(|r| &r[5] == "login-failed")
        .count();
    assert_eq!(failed, 3);
}

#[test]
fn the_delay_after_a_failed_login_holds_up_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    add(dir.path(), "bob", BOB_PW, false);
    add(dir.path(), "carol", CAROL_PW, false);
    let server = TestServer::start(dir.path(), &["--login-delay-ms", "3000"]);
    let mut carol = server.login("carol", CAROL_PW);
    let mut guesser = server.connect_raw();
    guesser.send("bob");
    guesser.send("guess");
    server.expect_stderr("failed login");
    let started = Instant::now();
    carol.send("not slowed");
    carol.expect_line("carol: not slowed");
    let bob = server.login("bob", BOB_PW);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    drop(bob);
    guesser.expect_line("! wrong name or password");
}

#[test]
fn an_address_with_many_failures_is_refused_for_a_while() {
    let (_dir, server) = organisation(&[]);
    for _ in 0..4 {
        let mut c = server.connect_raw();
        for _ in 0..3 {
            c.send("bob");
            c.send("guess");
        }
        c.expect_closed();
    }
    let mut next = server.connect_raw();
    let line = next.expect(|l| l.starts_with("! "));
    assert!(line.contains("failed logins"), "{line}");
    next.expect_closed();
}

#[test]
fn a_second_login_with_the_right_password_takes_the_name_over() {
    let (_dir, server) = organisation(&[]);
    let mut bob = server.login("bob", BOB_PW);
    let mut twin = server.connect_raw();
    twin.send("BOB");
    twin.expect(|l| l == "Password:");
    twin.send(BOB_PW);
    twin.expect(|l| l.starts_with("* hello bob"));
    bob.expect(|l| l.starts_with("! ") && l.contains("logged in again"));
    bob.expect_closed();
}

#[test]
fn passwords_and_hashes_appear_in_no_file_stream_or_log() {
    let dir = tempfile::tempdir().unwrap();
    add(dir.path(), "admin", ADMIN_PW, true);
    add(dir.path(), "bob", BOB_PW, false);
    let server = TestServer::start_with(dir.path(), &["--login-delay-ms", "1"], |c| {
        c.env("RUST_LOG", "trace");
    });
    let mut admin = server.login("admin", ADMIN_PW);
    let mut failed = server.connect_raw();
    failed.send("bob");
    failed.send(CAROL_PW);
    failed.expect_line("! wrong name or password");
    failed.send(BOB_PW); // a password typed where the name goes...
    failed.send(BOB_PW);
    failed.expect_line("! wrong name or password");
    let mut bob = server.login("bob", BOB_PW);
    bob.send("hi");
    admin.expect_line("bob: hi");
    admin.send("/kick bob bye");
    bob.expect_closed();
    let mut admin = admin;
    admin.send("/quit");
    admin.expect_closed();
    let mut server = server;
    server.signal(libc::SIGTERM);
    server.wait_exit();

    let hashes: Vec<String> = common::read_rows(&dir.path().join("accounts.csv"))
        .iter()
        .map(|r| r[1].to_string())
        .collect();
    let secrets = [ADMIN_PW, BOB_PW, CAROL_PW];
    let mut places: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // accounts.csv and its last good copy hold the hashes, for the
        // owner's eyes only.
        if name == "accounts.csv" || name == ".accounts.csv.good" {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name} is readable by others");
        } else {
            // The message index is binary (SQLite): read as bytes.
            places.push((
                path.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    places.push(("stdout".into(), server.stdout.lock().unwrap().join("\n")));
    places.push(("stderr".into(), server.stderr_text()));
    for line in &admin.seen {
        places.push(("admin's screen".into(), line.clone()));
    }
    for (place, text) in &places {
        for secret in secrets
            .iter()
            .copied()
            .chain(hashes.iter().map(String::as_str))
        {
            assert!(!text.contains(secret), "{place} holds a password or hash");
        }
        assert!(!text.contains("$argon2"), "{place} holds a hash");
    }
    let (_, out, err) = server_tool(dir.path(), &["list-users"], "");
    assert!(!out.contains("$argon2") && !err.contains("$argon2"));
}

#[test]
fn an_admin_kicks_and_the_room_is_told() {
    let (_dir, server) = organisation(&[]);
    let mut admin = server.login("admin", ADMIN_PW);
    let mut bob = server.login("bob", BOB_PW);
    let mut carol = server.login("carol", CAROL_PW);
    carol.send("/kick bob");
    carol.expect(|l| l.starts_with("! ") && l.contains("only admins"));
    admin.send("/kick bob spamming links");
    let last = bob.expect_closed();
    assert!(
        bob.seen
            .iter()
            .any(|l| l.starts_with("! you were kicked by admin (spamming links)")),
        "{last:?}"
    );
    carol.expect_line("* bob was kicked by admin (spamming links)");
    admin.expect_line("* bob was kicked by admin");
    admin.send("/kick nobody");
    admin.expect(|l| l.starts_with("! ") && l.contains("nobody"));
    let events = server.events();
    let kick = events
        .iter()
        .find(|r| r[5].starts_with("kick "))
        .expect("a kick row");
    assert_eq!(&kick[4], "admin", "the row says who did it");
    assert_eq!(&kick[5], "kick bob spamming links");
    // kicked is not banned
    server.login("bob", BOB_PW);
}

#[test]
fn a_muted_member_can_read_but_not_talk_until_unmuted() {
    let (_dir, server) = organisation(&[]);
    let mut admin = server.login("admin", ADMIN_PW);
    let mut bob = server.login("bob", BOB_PW);
    admin.send("/mute bob 5");
    bob.expect_line("* bob was muted by admin for 5 minutes");
    bob.send("let me speak");
    bob.expect(|l| l.starts_with("! ") && l.contains("muted"));
    admin.send("still reading?");
    bob.expect_line("admin: still reading?");
    admin.send("/unmute bob");
    bob.expect_line("* bob was unmuted by admin");
    bob.send("thanks");
    admin.expect_line("bob: thanks");
    let rows = server.messages();
    assert!(rows.iter().all(|r| &r[5] != "let me speak"));
    let events = server.events();
    assert!(
        events
            .iter()
            .any(|r| &r[4] == "admin" && &r[5] == "mute bob 5")
    );
    assert!(
        events
            .iter()
            .any(|r| &r[4] == "admin" && &r[5] == "unmute bob")
    );
}

#[test]
fn a_ban_disconnects_keeps_the_account_out_across_a_restart_and_can_be_lifted() {
    let (dir, server) = organisation(&[]);
    let mut admin = server.login("admin", ADMIN_PW);
    let mut bob = server.login("bob", BOB_PW);
    admin.send("/ban bob flooding");
    bob.expect_closed();
    assert!(
        bob.seen
            .iter()
            .any(|l| l.starts_with("! you were banned by admin"))
    );
    admin.expect_line("* bob was banned by admin (flooding)");
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());

    let server = TestServer::start(dir.path(), &["--login-delay-ms", "20"]);
    let mut again = server.connect_raw();
    again.send("bob");
    again.expect(|l| l == "Password:");
    again.send(BOB_PW);
    again.expect(|l| l.starts_with("! ") && l.contains("banned"));
    again.expect_closed();
    let mut admin = server.login("admin", ADMIN_PW);
    admin.send("/unban bob");
    admin.expect_line("* bob was unbanned by admin");
    server.login("bob", BOB_PW);
    admin.send("/unban bob");
    admin.expect(|l| l.starts_with("! ") && l.contains("not banned"));
}

#[test]
fn members_cannot_moderate() {
    let (_dir, server) = organisation(&[]);
    let mut bob = server.login("bob", BOB_PW);
    let _carol = server.login("carol", CAROL_PW);
    for command in [
        "/kick carol",
        "/ban carol",
        "/unban carol",
        "/mute carol",
        "/unmute carol",
    ] {
        bob.send(command);
        bob.expect(|l| l.starts_with("! ") && l.contains("only admins"));
    }
    bob.send("/help");
    let help = bob.sync();
    assert!(help.iter().all(|l| !l.contains("/ban")));
}

#[test]
fn in_an_open_server_a_ban_holds_the_name_and_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, _) = server_tool(dir.path(), &["ban", "mallory"], "");
    assert!(ok);
    let server = TestServer::start(dir.path(), &[]);
    let mut c = server.connect_raw();
    c.send("Mallory");
    c.expect(|l| l.starts_with("! ") && l.contains("banned"));
    c.expect(|l| l == "Name:");
    c.send("alice");
    c.expect_line("* hello alice");
    let (ok, out, _) = server_tool(dir.path(), &["ban", "eve", "--ip", "127.0.0.1"], "");
    assert!(ok, "{out}");
    let mut refused = server.connect_raw();
    refused.expect(|l| l.starts_with("! ") && l.contains("banned"));
    refused.expect_closed();
    let (ok, _, _) = server_tool(dir.path(), &["unban", "eve"], "");
    assert!(ok);
    server.join("frank");
}

#[test]
fn the_rate_and_burst_flags_change_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--rate", "1", "--burst", "2"]);
    let mut alice = server.join("alice");
    let start = Instant::now();
    alice.send_bytes(b"m0\nm1\nm2\n");
    alice.expect_line("alice: m0");
    alice.expect_line("alice: m1");
    alice.expect(|l| l.starts_with("* ") && l.contains("at most 1 line a second"));
    alice.expect_line("alice: m2");
    // The third line waited for its turn: a second after the burst of two.
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(server.messages().len(), 3);
    assert!(
        !alice.seen.iter().any(|l| l.starts_with("! ")),
        "{:?}",
        alice.seen
    );
}

#[test]
fn too_many_connections_from_one_address_are_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-per-ip", "2"]);
    let _a = server.join("a");
    let _b = server.join("b");
    let mut third = server.connect_raw();
    let line = third.expect(|l| l.starts_with("! "));
    assert!(line.contains("too many connections"), "{line}");
    third.expect_closed();
}

//! The `client` binary through a pipe, against the real `server` binary.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{PATIENCE, TestServer};

fn client_bin() -> &'static str {
    env!("CARGO_BIN_EXE_client")
}

/// Runs the client with `input` on its stdin; returns (exit code, stdout, stderr).
fn run_client(server: &TestServer, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(client_bin())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &server.addr.port().to_string(),
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_scripted_client_chats_with_a_real_server_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut watcher = server.join("watcher");
    let (code, out, err) = run_client(&server, &[], "alice\nhello, world\n/who\n/quit\n");
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(err.is_empty(), "no error output: {err}");
    assert!(out.contains("* hello alice"), "{out}");
    assert!(out.contains("alice: hello, world"), "{out}");
    assert!(out.contains("watcher in #general"), "{out}");
    assert!(out.contains("* goodbye, alice"), "{out}");
    watcher.expect_line("alice: hello, world");
    watcher.expect_line("* alice left the chat");
    assert_eq!(&server.messages()[0][5], "hello, world");
}

#[test]
fn a_scripted_client_with_a_name_flag_and_no_quit_exits_zero_at_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let (code, out, err) = run_client(&server, &["--name", "bob"], "/create ops\nin ops\n");
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.contains("* you created #ops"), "{out}");
    assert!(out.contains("bob: in ops"), "{out}");
}

#[test]
fn a_server_that_stops_mid_session_is_one_line_and_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]);
    let mut watcher = server.join("watcher");
    let mut child = Command::new(client_bin())
        .args(["--port", &server.addr.port().to_string(), "--name", "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take(); // kept open: carol does not leave
    watcher.expect_line("* carol joined");
    server.signal(libc::SIGTERM);
    server.wait_exit();
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("lost"), "{err}");
}

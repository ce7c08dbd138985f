//! The server's command line: help, bad flags, unusable data directories,
//! the `listening on` line and the network warning.

mod common;

use std::process::{Command, Output, Stdio};

use common::{TestServer, server_bin};

fn run(args: &[&str]) -> Output {
    Command::new(server_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the server binary runs")
}

fn first_stderr_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn help_lists_every_flag() {
    let output = run(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--host",
        "--port",
        "--data-dir",
        "--max-clients",
        "--history",
        "--default-room",
        "--max-line",
        "--announce-limit",
        "--name-timeout",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn bad_flags_exit_nonzero_with_one_line_naming_the_problem_and_no_panic() {
    for args in [
        &["--port", "99999"][..],
        &["--port", "abc"],
        &["--frobnicate"],
        &["--max-clients", "0"],
        &["--default-room", "bad room!"],
        &["--max-line", "-5"],
    ] {
        let output = run(args);
        assert!(!output.status.success(), "{args:?} was accepted");
        let first = first_stderr_line(&output);
        assert!(first.starts_with("error:"), "{args:?}: {first:?}");
        let all = String::from_utf8_lossy(&output.stderr);
        assert!(!all.contains("panicked"), "{args:?}: {all}");
    }
}

#[test]
fn an_unusable_data_directory_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let output = run(&["--port", "0", "--data-dir", file.to_str().unwrap()]);
    assert!(!output.status.success());
    let first = first_stderr_line(&output);
    assert!(
        first.starts_with("error:") && first.contains("not-a-dir"),
        "{first}"
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

#[test]
fn a_foreign_messages_file_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.csv");
    std::fs::write(&path, "name,score\nx,1\n").unwrap();
    let output = run(&["--port", "0", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(first_stderr_line(&output).contains("messages.csv"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "name,score\nx,1\n");
}

#[test]
fn a_port_in_use_is_one_line_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start(dir.path(), &[]);
    let port = first.addr.port().to_string();
    let other = tempfile::tempdir().unwrap();
    let output = run(&[
        "--port",
        &port,
        "--data-dir",
        other.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let line = first_stderr_line(&output);
    assert!(line.starts_with("error:") && line.contains(&port), "{line}");
}

#[test]
fn port_zero_prints_the_real_address_and_files_are_created_with_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    assert_ne!(server.addr.port(), 0);
    assert!(server.addr.ip().is_loopback());
    let messages = std::fs::read_to_string(dir.path().join("messages.csv")).unwrap();
    assert_eq!(messages, "id,timestamp,room,sender,recipient,text\n");
    let data = std::fs::read_to_string(dir.path().join("data.csv")).unwrap();
    assert_eq!(data, "timestamp,ip,port,thread,name,event\n");
}

#[test]
fn listening_beyond_loopback_warns_that_the_server_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--host", "0.0.0.0"]);
    server.expect_stderr("reachable from the network");
}

#[test]
fn a_flag_given_twice_takes_its_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-clients", "1", "--max-clients", "2"]);
    let _a = server.join("a");
    let _b = server.join("b");
}

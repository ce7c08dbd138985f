//! Signals the operator sends (issue 10, item 8): SIGHUP never stops the
//! server (under `nohup` or not; with TLS it reloads the certificate), and
//! SIGTERM after it is still one graceful shutdown, not a double Ctrl-C.

mod common;

use common::TestServer;

#[test]
fn sighup_is_logged_and_the_server_chats_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    server.signal(libc::SIGHUP);
    server.expect_stderr("SIGHUP: no config file and no TLS certificate to reload; still serving");
    server.signal(libc::SIGHUP);
    let mut bob = server.join("bob");
    alice.send("after two hangups");
    bob.expect_line("alice: after two hangups");
    bob.send("still here");
    alice.expect_line("bob: still here");
}

#[test]
fn sighup_then_sigterm_is_one_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]);
    let mut alice = server.join("alice");
    alice.send("saved before the signals");
    alice.expect_line("alice: saved before the signals");
    server.signal(libc::SIGHUP);
    server.expect_stderr("SIGHUP");
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}: {}",
        server.stderr_text()
    );
    let rest = alice.expect_closed();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(!server.stderr_text().contains("interrupted again"));
    assert!(
        server
            .stderr_text()
            .contains("stopped; all messages are in messages.csv")
    );
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn a_server_started_under_nohup_survives_the_hangup() {
    let dir = tempfile::tempdir().unwrap();
    // nohup ignores SIGHUP before the server starts; the server must not
    // turn that back into "stop".
    let server = TestServer::start_with(dir.path(), &[], |command| {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        *command = {
            let mut nohup = std::process::Command::new("nohup");
            nohup
                .arg(program)
                .args(args)
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            nohup
        };
    });
    let mut alice = server.join("alice");
    server.signal(libc::SIGHUP);
    server.expect_stderr("SIGHUP");
    alice.send("the terminal is gone, the chat is not");
    alice.expect_line("alice: the terminal is gone, the chat is not");
}

#[test]
fn with_rust_log_set_a_reload_does_not_claim_a_log_level_change() {
    // RUST_LOG decides what is logged; an unchanged config must not be
    // reported as changing --log-level (a change that never takes effect).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chatroom.toml");
    std::fs::write(&config, "max-clients = 500\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let server = TestServer::start_with(dir.path(), &["--config", &config], |command| {
        command.env("RUST_LOG", "debug");
    });
    server.signal(libc::SIGHUP);
    server.expect_stderr("reloaded; no setting changed");
    assert!(
        !server.stderr_text().contains("log-level"),
        "{}",
        server.stderr_text()
    );
}

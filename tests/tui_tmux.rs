//! The real `client` binary in a real terminal (tmux), against the real
//! `server`: a person logs in, chats with someone on a plain socket,
//! switches rooms and leaves, and the terminal is given back as it was.
//!
//! Each test has a tmux server of its own (`tmux -L NAME`), killed at the
//! end. Screens are read with `capture-pane` until the expected text shows
//! or a deadline passes; nothing sleeps to let things happen.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::{PATIENCE, TestServer, server_tool};

/// One tmux server with one window of 100×30 running the client.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `client ARGS` in a new terminal. When it exits, its exit code
    /// and the terminal's settings (`stty -a`) are written to `dir`, and the
    /// shell waits, so that the screen can still be read.
    fn start(dir: &Path, args: &str) -> Tmux {
        Self::start_with_env(dir, "", args)
    }

    /// Like [`Tmux::start`], with `env` (`NAME=value ...`) before the client.
    fn start_with_env(dir: &Path, env: &str, args: &str) -> Tmux {
        let available = Command::new("tmux").arg("-V").output();
        assert!(
            available.is_ok_and(|o| o.status.success()),
            "these tests need tmux (apt-get install tmux)"
        );
        let socket = format!(
            "chatroom-test-{}-{}",
            std::process::id(),
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
                .replace('.', "")
        );
        let script = format!(
            "{env} {client} {args}; echo $? > {dir}/exit; stty -a > {dir}/stty; read -r _",
            client = env!("CARGO_BIN_EXE_client"),
            dir = dir.display(),
        );
        let tmux = Tmux { socket };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "bash",
            "--norc",
            "-c",
            &script,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"))
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Types keys (tmux key names: `Enter`, `C-c`, or text with `-l`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Types text literally, then Enter.
    fn line(&self, text: &str) {
        assert!(self.run(&["send-keys", "-l", text]).status.success());
        self.keys(&["Enter"]);
    }

    /// Waits until the screen shows every one of `needles`; returns it.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if needles.iter().all(|n| screen.contains(n)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {needles:?}:\n{screen}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the pane is on the alternate screen.
    fn alternate_screen(&self) -> bool {
        let out = self.run(&["display-message", "-p", "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Waits for a file the client's shell writes when the client has exited.
fn wait_file(path: &PathBuf) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Checks that the client exited 0 and gave the terminal back: cooked mode
/// with echo, the normal screen.
fn assert_left_cleanly(tmux: &Tmux, dir: &Path) {
    let exit = wait_file(&dir.join("exit"));
    assert_eq!(exit.trim(), "0", "exit code");
    let stty = wait_file(&dir.join("stty"));
    let words: Vec<&str> = stty.split_whitespace().collect();
    for setting in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(words.contains(&setting), "{setting} is not back on: {stty}");
    }
    assert!(!tmux.alternate_screen(), "still on the alternate screen");
}

#[test]
fn a_person_chats_switches_rooms_and_quits_and_gets_the_terminal_back() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let shell = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let server = TestServer::start(data.path(), &[]);
    let tmux = Tmux::start(
        shell.path(),
        &format!("--host 127.0.0.1 --port {}", server.addr.port()),
    );

    tmux.wait_for(&["\nname:", "welcome to chatroom"]);
    tmux.line("alice");
    let screen = tmux.wait_for(&["hello alice!", "People (1)", "connected", "#general"]);
    assert!(screen.contains("Rooms"), "{screen}");

    let mut bob = server.join("bob");
    tmux.wait_for(&["bob joined #general", "People (2)"]);
    bob.send("hi alice, welcome");
    tmux.wait_for(&["bob: hi alice, welcome"]);

    tmux.line("hello bob");
    bob.expect_line("alice: hello bob");
    tmux.wait_for(&["alice: hello bob"]);

    // Tab completes the command; the side pane follows the move.
    tmux.keys(&["-l", "/cre"]);
    tmux.keys(&["Tab"]);
    tmux.line("dev");
    bob.expect_line("alice left #general");
    let screen = tmux.wait_for(&["you are in #dev", "│ #dev │", "People (1)"]);
    assert!(screen.contains("#dev"), "{screen}");
    bob.send("/join dev");
    tmux.wait_for(&["bob joined #dev", "People (2)"]);
    bob.send("/msg alice psst");
    tmux.wait_for(&["bob → alice: psst"]);

    tmux.line("/quit");
    bob.expect_line("alice left the chat");
    assert_left_cleanly(&tmux, shell.path());
    let after = tmux.screen();
    assert!(
        !after.contains("People ("),
        "the chat is gone with the alternate screen:\n{after}"
    );
}

#[test]
fn a_private_servers_password_is_masked_and_ctrl_c_gives_the_terminal_back() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let shell = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (ok, out, err) = server_tool(data.path(), &["add-user", "carol"], "hunter22\n");
    assert!(ok, "add-user: {out} {err}");
    let server = TestServer::start(data.path(), &["--login-delay-ms", "20"]);
    let tmux = Tmux::start(
        shell.path(),
        &format!("--port {} --name carol", server.addr.port()),
    );

    tmux.wait_for(&["\npassword:"]);
    tmux.keys(&["-l", "hunter22"]);
    let screen = tmux.wait_for(&["password: ********"]);
    assert!(!screen.contains("hunter22"), "{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(&["hello carol!", "connected"]);
    assert!(!screen.contains("hunter22"), "{screen}");

    // Ctrl-C at once after typing: the line being typed does not matter.
    tmux.keys(&["-l", "never sent"]);
    tmux.keys(&["C-c"]);
    assert_left_cleanly(&tmux, shell.path());
}

#[test]
fn the_client_comes_back_to_its_room_after_the_server_restarts() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let shell = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut server = TestServer::start(data.path(), &[]);
    let port = server.addr.port().to_string();
    let tmux = Tmux::start(shell.path(), &format!("--port {port} --name dave"));
    tmux.wait_for(&["hello dave!", "connected"]);
    tmux.line("/create ops");
    tmux.wait_for(&["you are in #ops"]);
    tmux.keys(&["-l", "typed while offline"]);

    server.signal(libc::SIGTERM);
    server.wait_exit();
    tmux.wait_for(&["disconnected", "connection lost"]);

    // The same port again: the server binds it before it prints.
    let _again = TestServer::start_with(data.path(), &[], |command| {
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        let mut fresh = Command::new(common::server_bin());
        for arg in args {
            fresh.arg(if arg == "0" { port.clone().into() } else { arg });
        }
        fresh
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        *command = fresh;
    });
    let screen = tmux.wait_for(&["logged in again as dave", "│ #ops │ connected"]);
    assert!(screen.contains("> typed while offline"), "{screen}");
    tmux.keys(&["C-u"]);
    tmux.keys(&["C-d"]);
    assert_left_cleanly(&tmux, shell.path());
}

#[test]
fn the_full_screen_client_scrolls_back_past_its_first_screen_and_searches() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let shell = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let server = TestServer::start(data.path(), &["--rate", "0"]);
    let mut bob = server.join("bob");
    for i in 1..=150 {
        bob.send(&format!("old message {i:03}"));
    }
    bob.expect_line("bob: old message 150");
    bob.send("a word to find: zanzibar");
    bob.expect_line("bob: a word to find: zanzibar");
    let tmux = Tmux::start(
        shell.path(),
        &format!("--port {} --name erin", server.addr.port()),
    );
    tmux.wait_for(&["erin │ #general │ connected", "bob: a word to find"]);
    // The replay holds the last 50; older ones come as the user scrolls.
    let deadline = Instant::now() + PATIENCE;
    let mut screen = tmux.screen();
    while !screen.contains("old message 001") {
        assert!(
            Instant::now() < deadline,
            "never scrolled back to the first message:\n{screen}"
        );
        tmux.keys(&["PageUp"]);
        thread::sleep(Duration::from_millis(50));
        screen = tmux.screen();
    }
    assert!(screen.contains("the start of #general"), "{screen}");
    assert!(screen.contains("scrolled"), "{screen}");
    tmux.keys(&["End"]);
    tmux.wait_for(&["bob: a word to find: zanzibar"]);

    tmux.line("/search zanzibar");
    let screen = tmux.wait_for(&[
        "search \"zanzibar\": 1 found",
        "#general bob: a word to find",
    ]);
    assert!(screen.contains("Esc closes"), "{screen}");
    tmux.keys(&["Escape"]);
    let deadline = Instant::now() + PATIENCE;
    while tmux.screen().contains("Esc closes") {
        assert!(Instant::now() < deadline, "the search pane stayed open");
        thread::sleep(Duration::from_millis(20));
    }
    tmux.keys(&["C-d"]);
    assert_left_cleanly(&tmux, shell.path());
}

#[test]
fn over_tls_a_person_trusts_the_certificate_once_chats_and_is_reconnected() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let shell = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (ok, out, err) = server_tool(data.path(), &["tls-init", "--name", "localhost"], "");
    assert!(ok, "tls-init: {out} {err}");
    let fingerprint = out
        .lines()
        .find_map(|l| l.strip_prefix("SHA-256 fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in {out}"))
        .to_string();
    let cert = data.path().join("tls/cert.pem");
    let key = data.path().join("tls/key.pem");
    let tls_args = [
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
    ];
    let mut args = vec!["--tls-port", "0"];
    args.extend_from_slice(&tls_args);
    let mut server = TestServer::start(data.path(), &args);
    let tls_port = server.tls_addr.map(|a| a.port()).unwrap_or_default();
    let tmux = Tmux::start_with_env(
        shell.path(),
        &format!("XDG_CONFIG_HOME={}", config.path().display()),
        &format!("--tls --port {tls_port} --name erin"),
    );

    // Nobody vouches for a private CA: the person is shown the fingerprint.
    let screen = tmux.wait_for(&[&format!(
        "Trust this certificate for 127.0.0.1:{tls_port}? [y/N]"
    )]);
    assert!(screen.contains(&fingerprint[..47]), "{screen}");
    tmux.line("y");
    tmux.wait_for(&["hello erin!", "connected"]);
    let known = std::fs::read_to_string(config.path().join("chatroom/known_hosts"))
        .unwrap_or_else(|e| panic!("known_hosts: {e}"));
    assert_eq!(known, format!("127.0.0.1:{tls_port} {fingerprint}\n"));

    let mut bob = server.join("bob");
    tmux.wait_for(&["bob joined #general"]);
    bob.send("hi erin, from plain TCP");
    tmux.wait_for(&["bob: hi erin, from plain TCP"]);
    tmux.line("hello bob, from TLS");
    bob.expect_line("erin: hello bob, from TLS");

    // The server restarts on the same ports (later flags win): the client
    // comes back over TLS by itself, without asking again.
    let plain_port = server.addr.port().to_string();
    let tls_port_text = tls_port.to_string();
    server.signal(libc::SIGTERM);
    server.wait_exit();
    tmux.wait_for(&["disconnected"]);
    let mut again = vec!["--port", &plain_port, "--tls-port", &tls_port_text];
    again.extend_from_slice(&tls_args);
    let server = TestServer::start(data.path(), &again);
    tmux.wait_for(&["logged in again as erin", "connected"]);
    let mut carol = server.join("carol");
    tmux.line("back over TLS");
    carol.expect_line("erin: back over TLS");
    tmux.keys(&["C-d"]);
    assert_left_cleanly(&tmux, shell.path());
}

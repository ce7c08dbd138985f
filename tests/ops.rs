//! Operating the server (issue 15): the config file and its precedence,
//! `check-config` and `print-config`, SIGHUP reloading settings live, the
//! systemd unit and its readiness, `/metrics` and `/healthz`, JSON logs.
//! Real binaries, real TCP.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{PATIENCE, TestServer, chat_lines};

/// Runs `server ARGS` to its end; (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(common::server_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the server binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The value `print-config` shows for `key`, and where it came from.
fn shown(printed: &str, key: &str) -> (String, String) {
    let line = printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {printed}"));
    let (setting, source) = line.split_once('#').unwrap();
    (
        setting
            .trim()
            .trim_start_matches(&format!("{key} = "))
            .to_string(),
        source.trim().to_string(),
    )
}

#[test]
fn a_config_file_sets_what_it_says_and_a_flag_given_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chatroom.toml");
    write(
        &config,
        "rate = 2\nhistory = 7\nweb-origin = [\"https://a.example\"]\n",
    );
    let config = config.to_str().unwrap();
    let (ok, out, err) = run(&["print-config", "--config", config, "--history", "9"]);
    assert!(ok, "{err}");
    assert_eq!(shown(&out, "rate"), ("2".into(), "config file".into()));
    assert_eq!(shown(&out, "history"), ("9".into(), "command line".into()));
    assert_eq!(shown(&out, "burst"), ("10".into(), "default".into()));
    assert_eq!(
        shown(&out, "web-origin"),
        ("[\"https://a.example\"]".into(), "config file".into())
    );
    // A list given on the command line replaces the file's.
    let (ok, out, _) = run(&[
        "print-config",
        "--config",
        config,
        "--web-origin",
        "https://b.example",
    ]);
    assert!(ok);
    assert_eq!(shown(&out, "web-origin").0, "[\"https://b.example\"]");
    // And the server runs with them: the file's history, the flag's rate.
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--config", config, "--rate", "0"]);
    let mut alice = server.join("alice");
    for i in 0..12 {
        alice.send(&format!("m{i}"));
    }
    alice.expect_line("alice: m11");
    assert!(
        !alice.seen.iter().any(|l| l.contains("sending fast")),
        "the flag's --rate 0 won over the file's rate = 2"
    );
    let mut bob = server.join("bob");
    let seen = bob.sync();
    assert_eq!(
        chat_lines(&seen).len(),
        7,
        "the file's history = 7: {seen:?}"
    );
}

#[test]
fn every_flag_is_a_documented_key_of_the_example_config_and_it_parses() {
    let (ok, help, _) = run(&["--help"]);
    assert!(ok);
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/chatroom.toml"),
    )
    .unwrap();
    let keys: Vec<String> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|k| !["help", "version", "config"].contains(&k.as_str()) && !k.is_empty())
        .collect();
    assert!(keys.len() > 20, "{keys:?}");
    for key in &keys {
        assert!(
            example.contains(&format!("\n{key} = ")) || example.contains(&format!("\n# {key} = ")),
            "contrib/chatroom.toml does not document {key}"
        );
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/chatroom.toml");
    let (ok, out, err) = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("no mistakes"), "{out}");
}

#[test]
fn a_bad_config_is_refused_with_the_line_of_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    write(
        &config,
        "# ok so far\nrate = 1\nmax-clinets = 5\nhistory = \"lots\"\nburst = 0\n",
    );
    let config = config.to_str().unwrap();
    let (ok, out, err) = run(&["check-config", "--config", config]);
    assert!(!ok, "{out}");
    for (line, what) in [(3, "max-clinets"), (4, "history"), (5, "burst")] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}:")) && l.contains(what)),
            "line {line} ({what}) not reported: {err}"
        );
    }
    // The server refuses to start with it, saying the same.
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(&[
        "--port",
        "0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--config",
        config,
    ]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.starts_with("error: ") && err.contains("line 3:"),
        "{err}"
    );
    let (ok, _, err) = run(&["check-config", "--config", "/nonexistent/chatroom.toml"]);
    assert!(!ok && err.contains("cannot read the config file"), "{err}");
}

#[test]
fn sighup_changes_the_rate_and_the_history_live_while_people_stay_connected() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("live.toml");
    write(&config, "rate = 1\nburst = 1\nhistory = 2\n");
    let server = TestServer::start(data.path(), &["--config", config.to_str().unwrap()]);
    let mut alice = server.join("alice");
    alice.send_bytes(b"a1\na2\n");
    alice.expect(|l| l.contains("sending fast") && l.contains("at most 1 line a second"));
    alice.expect_line("alice: a2");

    write(&config, "rate = 0\nburst = 1\nhistory = 5\n");
    server.signal(libc::SIGHUP);
    server.expect_stderr("reloaded: history 2 → 5, rate 1.0 → 0.0");
    // Still connected, and no longer slowed: 30 lines at once, no new notice
    // (the notice comes once per slowing, and calm never came between).
    let burst: String = (0..30).map(|i| format!("b{i}\n")).collect();
    alice.send_bytes(burst.as_bytes());
    alice.expect_line("alice: b29");
    let notices = alice
        .seen
        .iter()
        .filter(|l| l.contains("sending fast"))
        .count();
    assert_eq!(notices, 1, "{:#?}", alice.seen);
    // The history grows to 5 as people talk.
    let mut bob = server.join("bob");
    let replay = chat_lines(&bob.sync());
    assert_eq!(replay.len(), 5, "{replay:?}");
    assert_eq!(replay.last().map(String::as_str), Some("alice: b29"));
}

#[test]
fn a_bad_reload_changes_nothing_and_says_why() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("live.toml");
    write(&config, "rate = 1\nburst = 1\n");
    let server = TestServer::start(data.path(), &["--config", config.to_str().unwrap()]);
    let mut alice = server.join("alice");
    write(&config, "rate = 0\nburst = 1\nport = \"not a port\"\n");
    server.signal(libc::SIGHUP);
    server.expect_stderr("nothing was changed");
    assert!(
        server.stderr_text().contains("line 3"),
        "{}",
        server.stderr_text()
    );
    // The rate is still 1: two lines at once, and the second is slowed.
    alice.send_bytes(b"x1\nx2\n");
    alice.expect(|l| l.contains("sending fast"));
    alice.expect_line("alice: x2");
    // A change that needs a restart is named, and the rest goes ahead.
    write(&config, "rate = 1\nburst = 1\nmax-line = 100\n");
    server.signal(libc::SIGHUP);
    server.expect_stderr("need a restart to take effect: max-line");
}

/// One HTTP GET from `from` (an address of this machine) to `to`.
fn get(to: SocketAddr, from: Option<IpAddr>, path: &str) -> String {
    let stream = match from {
        Some(ip) => {
            // Bind the client's side to the given address.
            let socket = rustix::net::socket(
                if ip.is_ipv4() {
                    rustix::net::AddressFamily::INET
                } else {
                    rustix::net::AddressFamily::INET6
                },
                rustix::net::SocketType::STREAM,
                None,
            )
            .unwrap();
            rustix::net::bind(&socket, &SocketAddr::new(ip, 0)).unwrap();
            rustix::net::connect(&socket, &to).unwrap();
            TcpStream::from(socket)
        }
        None => TcpStream::connect(to).unwrap(),
    };
    let mut stream = stream;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The number a metric shows, by its name.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// An address of this machine that is not loopback, if it has one.
fn outside_address() -> Option<IpAddr> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[test]
fn metrics_count_a_login_and_a_message_and_are_for_this_machine_only() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        data.path(),
        &[
            "--host",
            "0.0.0.0",
            "--web-port",
            "0",
            "--metrics-port",
            "0",
        ],
    );
    // Bound to 0.0.0.0: reached on loopback.
    let addr = |kind: &str| SocketAddr::from(([127, 0, 0, 1], server.listening(kind).port()));
    let (web, probes) = (addr("web"), addr("metrics"));
    let before = get(probes, None, "/metrics");
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    assert!(before.contains("text/plain; version=0.0.4"), "{before}");
    let logins = metric(&before, "chatroom_logins_total");
    let messages = metric(&before, "chatroom_messages_total");
    let mut alice = server.join("alice");
    alice.send("counted");
    alice.expect_line("alice: counted");
    let after = get(web, None, "/metrics");
    assert_eq!(
        metric(&after, "chatroom_logins_total"),
        logins + 1,
        "{after}"
    );
    assert_eq!(
        metric(&after, "chatroom_messages_total"),
        messages + 1,
        "{after}"
    );
    assert!(metric(&after, "chatroom_deliveries_total") >= 1, "{after}");
    assert!(
        after.contains("chatroom_connections{transport=\"tcp\"} 1"),
        "{after}"
    );
    assert!(
        after.contains("chatroom_store_fsync_seconds_bucket"),
        "{after}"
    );
    assert!(after.contains("chatroom_index_lag_messages"), "{after}");
    let health = get(web, None, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    // From another address of this machine: refused.
    let outside = outside_address().expect("this machine has a non-loopback address");
    for port in [web.port(), probes.port()] {
        let refused = get(SocketAddr::new(outside, port), Some(outside), "/metrics");
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/chatroom.service"),
    )
    .unwrap();
    for needed in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=chatroom",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // systemd-analyze checks the executable exists: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("chatroom.service");
    write(
        &copy,
        &unit.replace("/usr/local/bin/chatroom-server", common::server_bin()),
    );
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (apt-get install systemd)");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with(data.path(), &[], |command| {
        command
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000");
    });
    let mut heard = Vec::new();
    let mut listen = |until: &str| {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 512];
        while !heard.iter().any(|m: &String| m.contains(until)) {
            assert!(Instant::now() < deadline, "never heard {until}: {heard:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    listen("READY=1");
    listen("WATCHDOG=1");
    server.signal(libc::SIGHUP);
    listen("RELOADING=1");
    server.signal(libc::SIGTERM);
    listen("STOPPING=1");
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn log_lines_can_be_json_for_log_shippers() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--log-format", "json"]);
    let _alice = server.join("alice");
    server.expect_stderr("login 127.0.0.1");
    for line in server.stderr.lock().unwrap().iter() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["time"].is_string() && value["level"].is_string(),
            "{line}"
        );
        assert!(value["message"].is_string(), "{line}");
    }
}

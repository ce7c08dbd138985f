//! The web port over real TCP: the page and its headers, and the WebSocket
//! beside line clients (tungstenite's client, as a browser's stand-in): login,
//! chat both ways, one line per frame, the Origin check, a slow reader
//! dropped, a silent one pinged out.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{PATIENCE, TestServer};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// A server with the web port on; returns it with the web port's address.
fn web_server(args: &[&str]) -> (tempfile::TempDir, TestServer, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--web-port", "0"];
    all.extend_from_slice(args);
    let server = TestServer::start(dir.path(), &all);
    let web = server.listening("web");
    (dir, server, web)
}

/// A WebSocket client that keeps every event it received.
struct Ws<S: Read + Write = TcpStream> {
    socket: WebSocket<S>,
    seen: Vec<serde_json::Value>,
    cursor: usize,
}

impl Ws<TcpStream> {
    fn connect(addr: SocketAddr, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        let (socket, _) = tungstenite::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })?;
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Ok(Ws {
            socket,
            seen: Vec::new(),
            cursor: 0,
        })
    }

    fn login(addr: SocketAddr, name: &str) -> Ws {
        let mut ws = Ws::connect(addr, Some(&format!("http://{addr}"))).unwrap();
        ws.send(name);
        ws.expect("welcome", |_| true);
        ws.expect("room", |_| true);
        ws
    }
}

impl<S: Read + Write> Ws<S> {
    fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).unwrap();
    }

    /// Waits for an event of `kind` that `matches`.
    fn expect(
        &mut self,
        kind: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            while self.cursor < self.seen.len() {
                let event = self.seen[self.cursor].clone();
                self.cursor += 1;
                if event["type"] == kind && matches(&event) {
                    return event;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} event; seen {:#?}",
                self.seen
            );
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let event = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not one JSON event per frame ({e}): {text}"));
                    self.seen.push(event);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("the WebSocket ended ({e}); seen {:#?}", self.seen),
            }
        }
    }

    /// Waits until the server ends the connection.
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "the WebSocket stayed open");
            match self.socket.read() {
                Ok(Message::Close(_)) => return,
                Ok(Message::Text(text)) => {
                    if let Ok(event) = serde_json::from_str(text.as_str()) {
                        self.seen.push(event);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

/// One HTTP/1.1 request; returns the whole response as text.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn the_page_is_served_with_its_security_headers() {
    let (_dir, server, web) = web_server(&[]);
    let page = http(
        web,
        &format!("GET / HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"),
    );
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    let head = page.split("\r\n\r\n").next().unwrap().to_lowercase();
    assert!(head.contains("content-type: text/html"));
    assert!(head.contains("x-content-type-options: nosniff"));
    assert!(head.contains("referrer-policy: no-referrer"));
    let csp = head
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .expect("a CSP header");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(
        page.contains("<script src=\"app.js\""),
        "the page loads its script"
    );
    for asset in ["/app.js", "/app.css"] {
        let response = http(web, &format!("GET {asset} HTTP/1.1\r\nHost: {web}\r\n\r\n"));
        assert!(
            response.starts_with("HTTP/1.1 200 OK"),
            "{asset}: {response}"
        );
        assert!(
            response
                .to_lowercase()
                .contains("x-content-type-options: nosniff")
        );
    }
    let missing = http(
        web,
        &format!("GET /nothing HTTP/1.1\r\nHost: {web}\r\n\r\n"),
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(
        missing
            .to_lowercase()
            .contains("referrer-policy: no-referrer")
    );
    let posted = http(web, &format!("POST / HTTP/1.1\r\nHost: {web}\r\n\r\n"));
    assert!(posted.starts_with("HTTP/1.1 405"), "{posted}");
    // Page loads are no chat sessions: data.csv records none of them.
    assert!(server.events().is_empty(), "{:?}", server.events());
}

#[test]
fn a_websocket_user_and_a_line_user_chat_both_ways() {
    let (_dir, server, web) = web_server(&[]);
    let mut ws = Ws::login(web, "wendy");
    let mut nc = server.join("nick");
    ws.expect("join", |e| e["name"] == "nick");
    ws.send("hello from the browser");
    nc.expect_line("wendy: hello from the browser");
    nc.send("hello from nc");
    let message = ws.expect("message", |e| e["text"] == "hello from nc");
    assert_eq!(message["from"], "nick");
    assert!(message["id"].as_u64().is_some());
    // Commands work as in nc.
    ws.send("/who");
    let users = ws.expect("users", |_| true);
    assert_eq!(users["total"], 2);
    ws.send("/msg nick psst");
    nc.expect(|l| l.contains("(whisper) wendy: psst"));
    ws.send("/quit");
    ws.expect("bye", |_| true);
    ws.expect_closed();
    nc.expect_line("wendy left the chat");
    let rows = server.messages();
    assert_eq!(rows.len(), 3);
}

#[test]
fn a_frame_holding_a_line_break_is_refused_and_the_connection_goes_on() {
    let (_dir, server, web) = web_server(&[]);
    let mut ws = Ws::login(web, "wendy");
    ws.send("one\nsmuggled /quit");
    let error = ws.expect("error", |_| true);
    assert!(
        error["text"].as_str().unwrap().contains("line break"),
        "{error}"
    );
    ws.send("still here");
    ws.expect("message", |e| e["text"] == "still here");
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn a_websocket_from_another_origin_is_refused() {
    let (_dir, _server, web) = web_server(&["--web-origin", "https://chat.example.org"]);
    let refused = Ws::connect(web, Some("https://evil.example"));
    match refused {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(e) => panic!("refused, but not with 403: {e}"),
        Ok(_) => panic!("a foreign origin opened the chat"),
    }
    assert!(Ws::connect(web, Some(&format!("http://{web}"))).is_ok());
    assert!(Ws::connect(web, Some("https://chat.example.org")).is_ok());
    // Programs that are no browser send no Origin at all.
    assert!(Ws::connect(web, None).is_ok());
}

#[test]
fn a_websocket_that_stops_reading_is_dropped_while_others_go_on() {
    let (_dir, server, web) = web_server(&["--rate", "0", "--history", "0"]);
    let mut slow = Ws::login(web, "slow");
    let talker = server.join("talker");
    // Elsewhere, a WebSocket user and a line user keep chatting.
    let mut wendy = Ws::login(web, "wendy");
    wendy.send("/create quiet");
    wendy.expect("room", |e| e["room"] == "quiet");
    let mut nick = server.join("nick");
    nick.send("/join quiet");
    nick.expect_line("you joined #quiet");
    // slow reads nothing from here on while the talker floods its room with
    // 16 MB, more than the kernel's buffers and slow's queue hold together.
    // The talker reads its own echoes on one thread and writes on another,
    // never more than 16 lines ahead of the echoes it has read, so that on a
    // busy machine it never becomes a slow reader itself.
    let echoed = Arc::new(AtomicUsize::new(0));
    let mut echoes = talker.stream.try_clone().unwrap();
    let counter = Arc::clone(&echoed);
    thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(n) = echoes.read(&mut sink) {
            if n == 0 {
                break;
            }
            let lines = sink[..n].iter().filter(|&&b| b == b'\n').count();
            counter.fetch_add(lines, Ordering::Relaxed);
        }
        // Closed: let the writer run into the closed socket and say so.
        counter.store(usize::MAX / 2, Ordering::Relaxed);
    });
    let mut out = talker.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let text = "x".repeat(4000);
        for sent in 0..4000 {
            let deadline = Instant::now() + PATIENCE;
            while sent > echoed.load(Ordering::Relaxed) + 16 {
                assert!(Instant::now() < deadline, "the talker's echoes stopped");
                thread::yield_now();
            }
            out.write_all(format!("{text}\n").as_bytes())?;
        }
        std::io::Result::Ok(())
    });
    let mut round = 0;
    while !server.stderr_text().contains("it stopped reading") {
        round += 1;
        assert!(round < 200, "slow was never dropped");
        nick.send(&format!("still here {round}"));
        wendy.expect("message", |e| e["text"] == format!("still here {round}"));
        wendy.send(&format!("me too {round}"));
        nick.expect_line(&format!("wendy: me too {round}"));
    }
    if let Err(e) = writer.join().unwrap() {
        panic!("the talker was cut off: {e}; {}", server.stderr_text());
    }
    // The dropped one gets its last words (if its socket takes them), then the end.
    slow.expect_closed();
    let deadline = Instant::now() + PATIENCE;
    while !server
        .events()
        .iter()
        .any(|r| &r[4] == "slow" && &r[5] == "disconnect")
    {
        assert!(Instant::now() < deadline, "slow's session did not end");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_websocket_that_answers_no_ping_is_dropped() {
    let (_dir, server, web) = web_server(&["--web-ping-secs", "1"]);
    let mut nc = server.join("nick");
    let mut ws = Ws::login(web, "wendy");
    // A raw upgrade that then says nothing and answers nothing.
    let mut silent = TcpStream::connect(web).unwrap();
    silent
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {web}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let (closed_tx, closed) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(silent.read(&mut sink), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    // wendy's client answers pings (tungstenite does as it reads): she stays
    // while the silent one is dropped after two pings' time.
    let deadline = Instant::now() + PATIENCE;
    let mut round = 0;
    while closed.try_recv().is_err() {
        assert!(
            Instant::now() < deadline,
            "the silent socket was never dropped"
        );
        round += 1;
        nc.send(&format!("still chatting {round}"));
        ws.expect("message", |e| {
            e["text"] == format!("still chatting {round}")
        });
        thread::sleep(Duration::from_millis(100));
    }
    ws.send("/who");
    let users = ws.expect("users", |_| true);
    assert_eq!(users["total"], 2);
}

#[test]
fn a_device_stays_logged_in_with_a_token_until_it_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = common::server_tool(dir.path(), &["add-user", "alice"], "alice-pw\n");
    assert!(ok, "{err}");
    let server = TestServer::start(dir.path(), &["--web-port", "0"]);
    let web = server.listening("web");
    let mut first = Ws::connect(web, None).unwrap();
    first.send("alice");
    first.expect("prompt", |e| e["field"] == "password");
    first.send("alice-pw");
    first.expect("welcome", |_| true);
    first.send("/token");
    let token = first.expect("token", |_| true)["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);
    let stored = std::fs::read_to_string(dir.path().join("tokens.csv")).unwrap();
    assert!(!stored.contains(&token), "only the token's hash is kept");
    // Later, on the same device: no password.
    let mut again = Ws::connect(web, None).unwrap();
    again.send(&format!("/resume {token}"));
    let welcome = again.expect("welcome", |_| true);
    assert_eq!(welcome["name"], "alice");
    first.expect("error", |e| {
        e["text"].as_str().unwrap().contains("logged in again")
    });
    // A made-up token logs nobody in.
    let mut stranger = Ws::connect(web, None).unwrap();
    stranger.send("/resume 0000");
    stranger.expect("error", |e| {
        e["text"].as_str().unwrap().contains("not valid")
    });
    // Logging out forgets the token.
    again.send("/logout");
    again.expect("bye", |_| true);
    let mut after = Ws::connect(web, None).unwrap();
    after.send(&format!("/resume {token}"));
    after.expect("error", |e| {
        e["text"].as_str().unwrap().contains("not valid")
    });
    // And an operator can revoke every token of a name.
    let mut device = Ws::connect(web, None).unwrap();
    device.send("alice");
    device.expect("prompt", |e| e["field"] == "password");
    device.send("alice-pw");
    device.expect("welcome", |_| true);
    device.send("/token");
    let kept = device.expect("token", |_| true)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, _) = common::server_tool(dir.path(), &["revoke-tokens", "alice"], "");
    assert!(ok && out.contains("forgot 1 token"), "{out}");
    let mut revoked = Ws::connect(web, None).unwrap();
    revoked.send(&format!("/resume {kept}"));
    revoked.expect("error", |e| {
        e["text"].as_str().unwrap().contains("not valid")
    });
}

#[test]
fn unread_and_mention_counts_follow_the_rooms_a_user_has_read() {
    let (_dir, server, web) = web_server(&[]);
    let mut alice = Ws::login(web, "alice");
    let mut bob = server.join("bob");
    bob.send("before");
    let before = alice.expect("message", |e| e["text"] == "before");
    let id = before["id"].as_u64().unwrap();
    alice.send(&format!("/read general {id}"));
    let marked = alice.expect("unread", |_| true);
    assert_eq!(marked["rooms"][0]["unread"], 0);
    alice.send("/unread");
    alice.expect("unread", |e| e["rooms"][0]["room"] == "general");
    // Away in another room, alice hears the counts of #general grow.
    alice.send("/create elsewhere");
    alice.expect("room", |e| e["room"] == "elsewhere");
    bob.send("just chatting");
    let one = alice.expect("unread", |e| e["rooms"][0]["unread"] == 1);
    assert_eq!(one["rooms"][0]["mentions"], 0);
    bob.send("alice, are you there?");
    let two = alice.expect("unread", |e| e["rooms"][0]["unread"] == 2);
    assert_eq!(two["rooms"][0]["mentions"], 1);
    // Another device sees the same counts, once this one is gone (until the
    // server has seen it go, the name is still taken).
    drop(alice);
    let deadline = Instant::now() + PATIENCE;
    while !server
        .events()
        .iter()
        .any(|r| &r[4] == "alice" && &r[5] == "disconnect")
    {
        assert!(
            Instant::now() < deadline,
            "alice's first session did not end"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut phone = Ws::login(web, "alice");
    phone.send("/unread");
    let counts = phone.expect("unread", |e| e["rooms"][0]["room"] == "general");
    assert_eq!(counts["rooms"][0]["unread"], 2);
    assert_eq!(counts["rooms"][0]["mentions"], 1);
}

#[test]
fn with_tls_on_the_web_port_serves_https_and_wss_with_the_same_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = common::server_tool(dir.path(), &["tls-init", "--name", "localhost"], "");
    assert!(ok, "tls-init failed: {err}");
    let tls = dir.path().join("tls");
    let (cert, key, ca) = (
        tls.join("cert.pem"),
        tls.join("key.pem"),
        tls.join("ca.pem"),
    );
    let server = TestServer::start(
        dir.path(),
        &[
            "--tls-port",
            "0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--web-port",
            "0",
        ],
    );
    let web = server.listening("web");
    // The page, over HTTPS, as an outside TLS client fetches it.
    let mut openssl = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "localhost", "-CAfile"])
        .arg(&ca)
        .args(["-verify_return_error", "-connect", &web.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let output = openssl.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(
        page.starts_with("HTTP/1.1 200 OK"),
        "{page}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(page.contains("<script src=\"app.js\""));
    // The chat, over WSS, beside a plain line client.
    let options = chatroom::client::Options {
        host: "localhost".into(),
        port: web.port(),
        tls: Some(chatroom::client::trust::Trust::Ca(ca)),
        ..Default::default()
    };
    let secure = chatroom::client::link::connect(&options, false).expect("a TLS connection");
    let tcp = secure.tcp().unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!("wss://localhost:{}/ws", web.port())
        .into_client_request()
        .unwrap();
    let (socket, _) = tungstenite::client(request, secure).expect("the WSS upgrade");
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut ws = Ws {
        socket,
        seen: Vec::new(),
        cursor: 0,
    };
    ws.send("secure");
    ws.expect("welcome", |_| true);
    let mut nick = server.join("nick");
    nick.send("hello over plain TCP");
    ws.expect("message", |e| e["text"] == "hello over plain TCP");
    ws.send("hello over WSS");
    nick.expect_line("secure: hello over WSS");
}

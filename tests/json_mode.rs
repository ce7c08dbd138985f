//! The machine-readable mode: a client that sends `/mode json` gets one JSON
//! object per line, while text clients on the same server see no change.

mod common;

use common::{Client, TestServer};
use serde_json::Value;

/// Waits for the next JSON event of `kind`; returns it.
fn expect_event(client: &mut Client, kind: &str) -> Value {
    let line = client.expect(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["type"] == kind));
    serde_json::from_str(&line).unwrap()
}

fn json_client(server: &TestServer, name: &str) -> Client {
    let mut client = server.connect_raw();
    client.send("/mode json");
    client.send(name);
    let welcome = expect_event(&mut client, "welcome");
    assert_eq!(welcome["name"], name);
    client
}

#[test]
fn json_mode_is_asked_for_before_the_name_and_everything_after_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut text = server.join("alice");
    text.send("before bob came");
    text.expect_line("alice: before bob came");

    let mut bob = server.connect_raw();
    bob.send("/mode json");
    expect_event(&mut bob, "mode");
    let prompt = expect_event(&mut bob, "prompt");
    assert_eq!(prompt["field"], "name");
    bob.send("bob");
    let welcome = expect_event(&mut bob, "welcome");
    assert_eq!(
        (welcome["name"].as_str(), welcome["role"].as_str()),
        (Some("bob"), Some("member"))
    );
    let room = expect_event(&mut bob, "room");
    assert_eq!(room["room"], "general");
    let members = expect_event(&mut bob, "members");
    assert_eq!(members["members"], serde_json::json!(["alice", "bob"]));
    let history = expect_event(&mut bob, "history");
    assert_eq!(history["count"], 1);
    let old = expect_event(&mut bob, "message");
    assert_eq!(
        (old["from"].as_str(), old["text"].as_str()),
        (Some("alice"), Some("before bob came"))
    );
    assert_eq!(old["id"], 1);
    expect_event(&mut bob, "history_end");

    // every line after the switch parses as JSON with a type
    bob.sync_json();
    let start = bob
        .seen
        .iter()
        .position(|l| l.contains("\"mode\""))
        .unwrap();
    for line in &bob.seen[start..] {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["type"].is_string(), "{line}");
    }
    // the text client saw plain text
    text.expect_line("* bob joined #general");
}

trait SyncJson {
    fn sync_json(&mut self);
}

impl SyncJson for Client {
    /// Waits for the answer to a `/who`, so that what came before has arrived.
    fn sync_json(&mut self) {
        self.send("/who");
        expect_event(self, "users");
    }
}

#[test]
fn messages_whispers_and_room_moves_arrive_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut bob = json_client(&server, "bob");
    let mut alice = server.join("alice");
    let join = expect_event(&mut bob, "join");
    assert_eq!(
        (join["name"].as_str(), join["room"].as_str()),
        (Some("alice"), Some("general"))
    );

    alice.send("hi, \"bob\"");
    let message = expect_event(&mut bob, "message");
    assert_eq!(message["text"], "hi, \"bob\"");
    assert_eq!(message["room"], "general");
    assert_eq!(message["from"], "alice");
    chrono::DateTime::parse_from_rfc3339(message["time"].as_str().unwrap()).unwrap();

    alice.send("/msg bob psst");
    let whisper = expect_event(&mut bob, "whisper");
    assert_eq!(
        (whisper["from"].as_str(), whisper["to"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(whisper["text"], "psst");

    alice.send("/create dev");
    let leave = expect_event(&mut bob, "leave");
    assert_eq!(
        (leave["name"].as_str(), leave["room"].as_str()),
        (Some("alice"), Some("general"))
    );

    bob.send("/join dev");
    let room = expect_event(&mut bob, "room");
    assert_eq!(room["room"], "dev");
    let members = expect_event(&mut bob, "members");
    assert_eq!(members["members"], serde_json::json!(["alice", "bob"]));

    bob.send("/list");
    let rooms = expect_event(&mut bob, "rooms");
    let list = rooms["rooms"].as_array().unwrap();
    assert!(list.iter().any(|r| r["name"] == "dev" && r["members"] == 2));
    assert!(
        list.iter()
            .any(|r| r["name"] == "general" && r["members"] == 0)
    );

    bob.send("/who");
    let users = expect_event(&mut bob, "users");
    assert_eq!(users["users"].as_array().unwrap().len(), 2);

    alice.send("/quit");
    let quit = expect_event(&mut bob, "quit");
    assert_eq!(
        (quit["name"].as_str(), quit["room"].as_str()),
        (Some("alice"), Some("dev"))
    );

    bob.send("/leave");
    let lobby = expect_event(&mut bob, "room");
    assert!(lobby["room"].is_null());
}

#[test]
fn errors_help_and_goodbye_are_events_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut bob = json_client(&server, "bob");
    bob.send("/frobnicate");
    let error = expect_event(&mut bob, "error");
    assert!(error["text"].as_str().unwrap().contains("/frobnicate"));
    bob.send("/help");
    let help = expect_event(&mut bob, "help");
    assert!(
        help["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["usage"] == "/list")
    );
    bob.send("/quit");
    let bye = expect_event(&mut bob, "bye");
    assert!(bye["text"].as_str().unwrap().contains("bob"));
    bob.expect_closed();
}

#[test]
fn a_json_client_is_told_when_the_server_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]);
    let mut bob = json_client(&server, "bob");
    server.signal(libc::SIGTERM);
    expect_event(&mut bob, "shutdown");
    bob.expect_closed();
    assert!(server.wait_exit().success());
}

#[test]
fn a_client_can_switch_back_to_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut bob = json_client(&server, "bob");
    bob.send("/mode text");
    bob.expect_line("* mode text");
    bob.send("plain again");
    bob.expect_line("] bob: plain again");
}

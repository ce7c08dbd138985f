//! The full-screen client's state, driven by events as the terminal and the
//! server would send them: no socket, no terminal, no sleep. The server's
//! lines are those of the real JSON mode (`src/format.rs`).

use std::time::{Duration, Instant};

use chatroom::client::tui::app::{
    Action, App, Ending, Entry, Input, Link, RECONNECT_ATTEMPTS, backoff,
};
use chatroom::client::tui::chat::Kind;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A client with a fixed clock of day, its first connection just opened.
fn connected(name: Option<&str>) -> (App, Instant, Vec<Action>) {
    let start = Instant::now();
    let mut app = App::new("127.0.0.1:6622".into(), name.map(str::to_owned), start);
    app.wall_clock = || "12:00:00".to_owned();
    let actions = app.handle(Input::Connected { conn: 1 }, start);
    (app, start, actions)
}

fn line(app: &mut App, now: Instant, text: &str) -> Vec<Action> {
    let conn = app.conn();
    app.handle(
        Input::Line {
            conn,
            line: text.to_owned(),
        },
        now,
    )
}

fn lines(app: &mut App, now: Instant, texts: &[&str]) -> Vec<Action> {
    texts.iter().flat_map(|t| line(app, now, t)).collect()
}

fn key(app: &mut App, now: Instant, code: KeyCode) -> Vec<Action> {
    app.handle(Input::Key(KeyEvent::new(code, KeyModifiers::NONE)), now)
}

fn ctrl(app: &mut App, now: Instant, c: char) -> Vec<Action> {
    app.handle(
        Input::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)),
        now,
    )
}

fn type_text(app: &mut App, now: Instant, text: &str) -> Vec<Action> {
    text.chars()
        .flat_map(|c| key(app, now, KeyCode::Char(c)))
        .collect()
}

fn sent(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn shown(app: &App) -> Vec<String> {
    app.chat.visible().map(|l| l.plain()).collect()
}

/// The real server's login, seen by a client that asked for JSON first:
/// the greeting and prompt may still come as text, then the switch and the
/// prompt again.
const LOGIN: [&str; 4] = [
    "* welcome to chatroom (1 connected); choose a name",
    "Name:",
    r#"{"type":"mode","mode":"json"}"#,
    r#"{"type":"prompt","field":"name"}"#,
];

/// Logs in as alice in #general with bob there.
fn online() -> (App, Instant) {
    let (mut app, now, _) = connected(Some("alice"));
    lines(&mut app, now, &LOGIN);
    lines(
        &mut app,
        now,
        &[
            r#"{"type":"welcome","name":"alice","role":"member"}"#,
            r#"{"type":"room","room":"general"}"#,
            r#"{"type":"members","room":"general","members":["alice","bob"]}"#,
            r#"{"type":"help","commands":[{"usage":"/list","text":"rooms"},{"usage":"/join ROOM","text":"go"}]}"#,
            r#"{"type":"rooms","rooms":[{"name":"general","members":2}]}"#,
            r#"{"type":"users","users":[{"name":"alice","room":"general"},{"name":"bob","room":"general"}]}"#,
        ],
    );
    (app, now)
}

#[test]
fn the_client_asks_for_json_first_and_sends_its_name_once() {
    let (mut app, now, first) = connected(Some("alice"));
    assert_eq!(sent(&first), vec!["/mode json"]);
    let answers = lines(&mut app, now, &LOGIN);
    assert_eq!(
        sent(&answers),
        vec!["alice"],
        "one name, though asked twice"
    );
    let after = line(
        &mut app,
        now,
        r#"{"type":"welcome","name":"alice","role":"member"}"#,
    );
    assert_eq!(app.link, Link::Online);
    assert_eq!(app.name.as_deref(), Some("alice"));
    assert!(sent(&after).contains(&"/help".to_owned()));
    assert!(sent(&after).contains(&"/list".to_owned()));
    assert!(
        !sent(&after).contains(&"/who".to_owned()),
        "the people come from events, not from /who"
    );
}

#[test]
fn without_a_name_flag_the_user_types_the_name_and_a_refusal_asks_again() {
    let (mut app, now, _) = connected(None);
    lines(&mut app, now, &LOGIN);
    assert_eq!(app.entry, Entry::Name);
    type_text(&mut app, now, "bob");
    let typed = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&typed), vec!["bob"]);
    assert_eq!(app.entry, Entry::Chat);
    lines(
        &mut app,
        now,
        &[
            r#"{"type":"error","text":"the name bob is taken; choose another"}"#,
            r#"{"type":"prompt","field":"name"}"#,
        ],
    );
    assert_eq!(app.entry, Entry::Name);
    assert!(
        shown(&app)
            .iter()
            .any(|l| l.contains("! the name bob is taken"))
    );
    key(&mut app, now, KeyCode::Up);
    assert_eq!(app.login.text(), "", "a name is not chat history");
}

#[test]
fn a_server_without_the_json_mode_still_logs_in_as_text() {
    let (mut app, now, _) = connected(Some("alice"));
    let answers = lines(
        &mut app,
        now,
        &[
            "* welcome to chatroom (1 connected); choose a name",
            "Name:",
            "! a name cannot start with /",
            "Name:",
        ],
    );
    assert_eq!(sent(&answers), vec!["alice"]);
    assert!(
        !shown(&app).iter().any(|l| l.contains("cannot start")),
        "the refusal of /mode json is not the user's business"
    );
    lines(
        &mut app,
        now,
        &[
            "* hello alice! type to chat, /help lists the commands",
            "* you joined #general (1 here)",
            "[12:00:01] bob: hi",
        ],
    );
    assert_eq!(app.link, Link::Online);
    assert_eq!(app.room.as_deref(), Some("general"));
    assert!(!app.json());
    assert!(shown(&app).contains(&"[12:00:00] [12:00:01] bob: hi".to_owned()));
}

#[test]
fn the_password_is_masked_kept_out_of_history_and_sent_again_on_reconnect() {
    let (mut app, now, _) = connected(Some("alice"));
    lines(&mut app, now, &LOGIN);
    line(&mut app, now, r#"{"type":"prompt","field":"password"}"#);
    assert_eq!(app.entry, Entry::Password);
    assert_eq!(app.prompt_label(), "password: ");
    type_text(&mut app, now, "s3cret");
    let typed = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&typed), vec!["s3cret"]);
    lines(
        &mut app,
        now,
        &[
            r#"{"type":"welcome","name":"alice","role":"admin"}"#,
            r#"{"type":"room","room":"general"}"#,
        ],
    );
    key(&mut app, now, KeyCode::Up);
    assert_eq!(app.input.text(), "", "the password is not in the history");
    assert!(!shown(&app).iter().any(|l| l.contains("s3cret")));

    let conn = app.conn();
    app.handle(
        Input::Closed {
            conn,
            reason: "reset".into(),
        },
        now,
    );
    let later = now + backoff(1);
    let connect = app.handle(Input::Tick, later);
    assert_eq!(connect, vec![Action::Connect { conn: conn + 1 }]);
    app.handle(Input::Connected { conn: conn + 1 }, later);
    let answers = lines(
        &mut app,
        later,
        &[
            r#"{"type":"mode","mode":"json"}"#,
            r#"{"type":"prompt","field":"name"}"#,
            r#"{"type":"prompt","field":"password"}"#,
        ],
    );
    assert_eq!(sent(&answers), vec!["alice", "s3cret"]);
    assert_eq!(app.entry, Entry::Chat);
}

#[test]
fn the_side_pane_follows_arrivals_and_departures_without_the_user_asking() {
    let (mut app, now) = online();
    assert_eq!(app.members, vec!["alice", "bob"]);
    let before = shown(&app).len();
    assert!(
        !shown(&app).iter().any(|l| l.contains("rooms (")),
        "the client's own /list is not shown"
    );
    let later = now + Duration::from_secs(2);
    let asked = line(
        &mut app,
        later,
        r#"{"type":"join","room":"general","name":"carol"}"#,
    );
    assert_eq!(app.members, vec!["alice", "bob", "carol"]);
    assert!(
        sent(&asked).is_empty(),
        "nothing is asked: the event says it all"
    );
    assert_eq!(app.rooms, vec![("general".into(), 3)]);
    line(
        &mut app,
        later,
        r#"{"type":"room_created","room":"dev","by":"zed"}"#,
    );
    assert_eq!(app.rooms, vec![("dev".into(), 0), ("general".into(), 3)]);
    line(
        &mut app,
        later,
        r#"{"type":"leave","room":"general","name":"bob"}"#,
    );
    line(
        &mut app,
        later,
        r#"{"type":"quit","room":"general","name":"carol"}"#,
    );
    assert_eq!(app.rooms, vec![("dev".into(), 0), ("general".into(), 1)]);
    assert_eq!(app.members, vec!["alice"]);
    let told = &shown(&app)[before..];
    assert!(told.iter().any(|l| l.ends_with("* carol joined #general")));
    assert!(told.iter().any(|l| l.ends_with("* bob left #general")));
    assert!(told.iter().any(|l| l.ends_with("* carol left the chat")));
}

#[test]
fn the_side_pane_is_never_polled_and_a_busy_room_is_read_from_who() {
    let (mut app, now) = online();
    // An hour of ticks asks the server nothing: no reply can grow with the
    // server's size, and nothing eats into the user's flood allowance.
    for second in 1..3600 {
        let asked = app.handle(Input::Tick, now + Duration::from_secs(second));
        assert!(sent(&asked).is_empty(), "{asked:?} at {second} s");
    }
    // Moving to another room counts the user out of one and into the other.
    line(&mut app, now, r#"{"type":"room","room":"dev"}"#);
    assert_eq!(app.rooms, vec![("dev".into(), 1), ("general".into(), 1)]);
    // A room over the announce limit says nothing; /who tells who is there.
    type_text(&mut app, now, "/who");
    let typed = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&typed), vec!["/who"]);
    line(
        &mut app,
        now,
        r#"{"type":"users","users":[{"name":"alice","room":"dev"},{"name":"zed","room":"dev"},{"name":"yan","room":null}],"total":3,"page":1,"pages":1}"#,
    );
    assert_eq!(app.members, vec!["alice", "zed"]);
    assert!(app.online.iter().any(|n| n == "yan"));
}

#[test]
fn a_list_the_user_typed_is_shown() {
    let (mut app, now) = online();
    type_text(&mut app, now, "/list");
    let typed = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&typed), vec!["/list"]);
    line(
        &mut app,
        now,
        r#"{"type":"rooms","rooms":[{"name":"general","members":2}]}"#,
    );
    assert!(
        shown(&app)
            .iter()
            .any(|l| l.ends_with("*   #general (2 online)"))
    );
}

#[test]
fn a_line_that_mentions_the_user_is_highlighted_and_rings_once() {
    let (mut app, now) = online();
    let rang = line(
        &mut app,
        now,
        r#"{"type":"message","id":5,"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"bob","text":"hey Alice, lunch?"}"#,
    );
    assert_eq!(rang, vec![Action::Bell]);
    let last = app.chat.visible().last().cloned();
    assert!(last.is_some_and(|l| l.mention));
    // The same message replayed after a reconnect neither shows nor rings.
    let again = lines(
        &mut app,
        now,
        &[
            r#"{"type":"history","room":"general","count":1}"#,
            r#"{"type":"message","id":5,"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"bob","text":"hey Alice, lunch?"}"#,
            r#"{"type":"history_end","room":"general"}"#,
        ],
    );
    assert!(!again.contains(&Action::Bell));
    assert_eq!(
        shown(&app)
            .iter()
            .filter(|l| l.contains("hey Alice"))
            .count(),
        1
    );
    // One's own words do not ring.
    let own = line(
        &mut app,
        now,
        r#"{"type":"message","id":6,"time":"2026-11-21T18:05:10.000+00:00","room":"general","from":"alice","text":"alice is here"}"#,
    );
    assert!(own.is_empty());
}

#[test]
fn old_messages_mentioning_the_user_do_not_ring() {
    let (mut app, now) = online();
    let replay = lines(
        &mut app,
        now,
        &[
            r#"{"type":"history","room":"general","count":1}"#,
            r#"{"type":"message","id":2,"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"bob","text":"where is alice"}"#,
            r#"{"type":"history_end","room":"general"}"#,
        ],
    );
    assert!(!replay.contains(&Action::Bell));
    assert!(app.chat.visible().last().is_some_and(|l| l.mention));
}

#[test]
fn whispers_notices_and_errors_are_told_apart() {
    let (mut app, now) = online();
    lines(
        &mut app,
        now,
        &[
            r#"{"type":"whisper","id":9,"time":"2026-11-21T18:05:09.123+00:00","from":"bob","to":"alice","text":"psst"}"#,
            r#"{"type":"notice","text":"bob is away"}"#,
            r#"{"type":"error","text":"there is no room #x"}"#,
        ],
    );
    let kinds: Vec<Kind> = app.chat.visible().map(|l| l.kind.clone()).collect();
    let tail = &kinds[kinds.len() - 3..];
    assert_eq!(
        tail,
        &[
            Kind::Whisper {
                from: "bob".into(),
                to: "alice".into()
            },
            Kind::Notice,
            Kind::Error
        ]
    );
}

#[test]
fn control_characters_from_the_network_never_reach_the_screen() {
    let (mut app, now) = online();
    line(
        &mut app,
        now,
        r#"{"type":"message","id":3,"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"b\u001bob","text":"a\u001b[2Jb\u0007"}"#,
    );
    let last = shown(&app).pop().unwrap_or_default();
    assert!(!last.chars().any(char::is_control), "{last:?}");
    assert!(last.ends_with("bob: a[2Jb"));
}

#[test]
fn tab_completes_commands_and_the_people_online() {
    let (mut app, now) = online();
    type_text(&mut app, now, "/jo");
    key(&mut app, now, KeyCode::Tab);
    assert_eq!(app.input.text(), "/join ");
    ctrl(&mut app, now, 'u');
    type_text(&mut app, now, "b");
    key(&mut app, now, KeyCode::Tab);
    assert_eq!(app.input.text(), "bob: ");
    ctrl(&mut app, now, 'u');
    type_text(&mut app, now, "/sa");
    key(&mut app, now, KeyCode::Tab);
    assert_eq!(app.input.text(), "/save ", "local commands complete too");
}

#[test]
fn editing_keys_change_the_line_being_typed() {
    let (mut app, now) = online();
    type_text(&mut app, now, "hello big world");
    ctrl(&mut app, now, 'w');
    assert_eq!(app.input.text(), "hello big ");
    key(&mut app, now, KeyCode::Home);
    key(&mut app, now, KeyCode::Delete);
    key(&mut app, now, KeyCode::End);
    key(&mut app, now, KeyCode::Backspace);
    assert_eq!(app.input.text(), "ello big");
    key(&mut app, now, KeyCode::Left);
    ctrl(&mut app, now, 'u');
    assert_eq!(app.input.text(), "g");
    let sent_line = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&sent_line), vec!["g"]);
    key(&mut app, now, KeyCode::Up);
    assert_eq!(app.input.text(), "g");
}

#[test]
fn the_connection_drops_and_the_client_returns_to_its_room_with_the_line_kept() {
    let (mut app, now) = online();
    lines(
        &mut app,
        now,
        &[
            r#"{"type":"room","room":"dev"}"#,
            r#"{"type":"members","room":"dev","members":["alice"]}"#,
        ],
    );
    type_text(&mut app, now, "half typed");
    line(
        &mut app,
        now,
        r#"{"type":"shutdown","text":"the server is shutting down; goodbye"}"#,
    );
    let conn = app.conn();
    app.handle(
        Input::Closed {
            conn,
            reason: "the server closed the connection".into(),
        },
        now,
    );
    assert!(matches!(app.link, Link::Waiting { attempt: 1, .. }));
    assert!(app.link_label().starts_with("disconnected"));
    // Enter while disconnected keeps the line.
    let nothing = key(&mut app, now, KeyCode::Enter);
    assert!(sent(&nothing).is_empty());
    assert_eq!(app.input.text(), "half typed");

    // The first attempt fails; the next waits twice as long.
    let t1 = now + backoff(1);
    assert!(
        app.handle(Input::Tick, t1 - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(
        app.handle(Input::Tick, t1),
        vec![Action::Connect { conn: conn + 1 }]
    );
    app.handle(
        Input::ConnectFailed {
            conn: conn + 1,
            reason: "refused".into(),
        },
        t1,
    );
    assert!(matches!(app.link, Link::Waiting { attempt: 2, .. }));
    let t2 = t1 + backoff(2);
    assert_eq!(backoff(2), 2 * backoff(1));
    assert_eq!(
        app.handle(Input::Tick, t2),
        vec![Action::Connect { conn: conn + 2 }]
    );
    let back = app.handle(Input::Connected { conn: conn + 2 }, t2);
    assert_eq!(sent(&back), vec!["/mode json"]);
    let login = lines(
        &mut app,
        t2,
        &[
            r#"{"type":"hello","text":"welcome to chatroom (1 connected)","online":1}"#,
            r#"{"type":"mode","mode":"json"}"#,
            r#"{"type":"prompt","field":"name"}"#,
            r#"{"type":"welcome","name":"alice","role":"member"}"#,
            r#"{"type":"room","room":"general"}"#,
            r#"{"type":"members","room":"general","members":["alice","bob"]}"#,
            r#"{"type":"history","room":"general","count":1}"#,
            r#"{"type":"message","id":40,"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"bob","text":"old news from general"}"#,
            r#"{"type":"history_end","room":"general"}"#,
        ],
    );
    let login = sent(&login);
    assert_eq!(login[0], "alice");
    assert!(login.contains(&"/join dev".to_owned()), "{login:?}");
    assert!(
        !shown(&app).iter().any(|l| l.contains("old news")),
        "the default room's history is skipped on the way back"
    );
    line(&mut app, t2, r#"{"type":"room","room":"dev"}"#);
    assert_eq!(app.room.as_deref(), Some("dev"));
    assert_eq!(app.link, Link::Online);
    assert_eq!(app.input.text(), "half typed");
    assert_eq!(
        shown(&app)
            .iter()
            .filter(|l| l.contains("welcome to chatroom"))
            .count(),
        1,
        "the greeting of the first login only, none on a reconnect"
    );
}

#[test]
fn a_server_gone_for_good_ends_the_client_after_the_last_attempt() {
    let (mut app, mut now) = online();
    let conn = app.conn();
    app.handle(
        Input::Closed {
            conn,
            reason: "reset".into(),
        },
        now,
    );
    for attempt in 1..=RECONNECT_ATTEMPTS {
        now += backoff(attempt);
        let actions = app.handle(Input::Tick, now);
        let [Action::Connect { conn }] = actions.as_slice() else {
            panic!("expected a connect, got {actions:?}");
        };
        let end = app.handle(
            Input::ConnectFailed {
                conn: *conn,
                reason: "refused".into(),
            },
            now,
        );
        if attempt == RECONNECT_ATTEMPTS {
            assert_eq!(
                end,
                vec![Action::Exit(Ending::GaveUp {
                    reason: "refused".into()
                })]
            );
        } else {
            assert!(end.is_empty(), "{end:?}");
        }
    }
}

#[test]
fn a_login_refused_for_good_ends_the_client_with_the_servers_words() {
    let (mut app, now, _) = connected(Some("alice"));
    lines(&mut app, now, &LOGIN);
    line(
        &mut app,
        now,
        r#"{"type":"error","text":"you are banned from this server"}"#,
    );
    let end = app.handle(
        Input::Closed {
            conn: 1,
            reason: "the server closed the connection".into(),
        },
        now,
    );
    assert_eq!(
        end,
        vec![Action::Exit(Ending::Lost {
            reason: "you are banned from this server".into()
        })]
    );
}

#[test]
fn ctrl_c_says_quit_and_leaves_when_the_server_closes() {
    let (mut app, now) = online();
    let quit = ctrl(&mut app, now, 'c');
    assert_eq!(sent(&quit), vec!["/quit"]);
    line(&mut app, now, r#"{"type":"bye","text":"goodbye, alice"}"#);
    let end = app.handle(
        Input::Closed {
            conn: 1,
            reason: "closed".into(),
        },
        now,
    );
    assert_eq!(end, vec![Action::Exit(Ending::Left)]);
}

#[test]
fn leaving_does_not_wait_for_a_silent_server_forever() {
    let (mut app, now) = online();
    type_text(&mut app, now, "/quit");
    let quit = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&quit), vec!["/quit"]);
    assert!(app.handle(Input::Tick, now).is_empty());
    let end = app.handle(Input::Tick, now + Duration::from_secs(3));
    assert_eq!(end, vec![Action::Exit(Ending::Left)]);
}

#[test]
fn ctrl_d_leaves_on_an_empty_line_and_deletes_otherwise() {
    let (mut app, now) = online();
    type_text(&mut app, now, "ab");
    key(&mut app, now, KeyCode::Home);
    assert!(ctrl(&mut app, now, 'd').is_empty());
    assert_eq!(app.input.text(), "b");
    ctrl(&mut app, now, 'u');
    key(&mut app, now, KeyCode::End);
    ctrl(&mut app, now, 'w');
    assert_eq!(sent(&ctrl(&mut app, now, 'd')), vec!["/quit"]);
}

#[test]
fn ctrl_c_at_the_name_prompt_leaves_at_once() {
    let (mut app, now, _) = connected(None);
    lines(&mut app, now, &LOGIN);
    assert_eq!(ctrl(&mut app, now, 'c'), vec![Action::Exit(Ending::Left)]);
}

#[test]
fn clear_empties_the_pane_and_save_writes_the_whole_transcript() {
    let (mut app, now) = online();
    line(
        &mut app,
        now,
        r#"{"type":"message","id":5,"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"bob","text":"keep me"}"#,
    );
    type_text(&mut app, now, "/clear");
    assert!(sent(&key(&mut app, now, KeyCode::Enter)).is_empty());
    assert_eq!(app.chat.visible().count(), 0);
    type_text(&mut app, now, "/save /tmp/chat.txt");
    let save = key(&mut app, now, KeyCode::Enter);
    let [Action::Save { path, text }] = save.as_slice() else {
        panic!("expected a save, got {save:?}");
    };
    assert_eq!(path, "/tmp/chat.txt");
    assert!(text.contains("bob: keep me\n"), "{text}");
    app.handle(
        Input::Saved {
            path: path.clone(),
            result: Err("Permission denied".into()),
        },
        now,
    );
    assert!(
        shown(&app)
            .iter()
            .any(|l| l.ends_with("! cannot save to /tmp/chat.txt: Permission denied"))
    );
}

#[test]
fn news_from_an_old_connection_is_ignored() {
    let (mut app, now) = online();
    let stale = app.handle(
        Input::Closed {
            conn: 99,
            reason: "old".into(),
        },
        now,
    );
    assert!(stale.is_empty());
    assert_eq!(app.link, Link::Online);
}

#[test]
fn a_full_server_is_reported_in_its_own_words() {
    let (mut app, now, _) = connected(Some("alice"));
    line(&mut app, now, "! server full; try again later");
    let end = app.handle(
        Input::Closed {
            conn: 1,
            reason: "the server closed the connection".into(),
        },
        now,
    );
    assert_eq!(
        end,
        vec![Action::Exit(Ending::Lost {
            reason: "server full; try again later".into()
        })]
    );
}

#[test]
fn a_reconnect_turned_away_at_the_door_tries_again_later() {
    let (mut app, now) = online();
    app.handle(
        Input::Closed {
            conn: 1,
            reason: "reset".into(),
        },
        now,
    );
    let later = now + backoff(1);
    app.handle(Input::Tick, later);
    app.handle(Input::Connected { conn: 2 }, later);
    line(&mut app, later, "! server full; try again later");
    let end = app.handle(
        Input::Closed {
            conn: 2,
            reason: "the server closed the connection".into(),
        },
        later,
    );
    assert!(end.is_empty(), "{end:?}");
    assert!(matches!(app.link, Link::Waiting { attempt: 2, .. }));
}

#[test]
fn a_search_cut_off_by_a_lost_connection_does_not_swallow_the_chat_after_it() {
    let (mut app, now) = online();
    type_text(&mut app, now, "/search lunch");
    key(&mut app, now, KeyCode::Enter);
    line(
        &mut app,
        now,
        r#"{"type":"search","query":"lunch","room":null,"count":2,"building":null}"#,
    );
    app.handle(
        Input::Closed {
            conn: 1,
            reason: "reset".into(),
        },
        now,
    );
    let later = now + backoff(1);
    app.handle(Input::Tick, later);
    app.handle(Input::Connected { conn: 2 }, later);
    lines(&mut app, later, &LOGIN);
    lines(
        &mut app,
        later,
        &[
            r#"{"type":"welcome","name":"alice","role":"member"}"#,
            r#"{"type":"room","room":"general"}"#,
        ],
    );
    line(&mut app, later, &message_event(11, "after the reconnect"));
    assert!(
        shown(&app)
            .last()
            .unwrap()
            .ends_with("bob: after the reconnect"),
        "{:?}",
        shown(&app)
    );
    assert!(app.search.as_ref().is_none_or(|p| p.hits.is_empty()));
}

fn message_event(id: u64, text: &str) -> String {
    format!(
        r#"{{"type":"message","id":{id},"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"bob","text":"{text}"}}"#
    )
}

#[test]
fn scrolling_past_the_oldest_line_loads_older_messages_above_it() {
    let (mut app, now) = online();
    app.size = (100, 30);
    let mut replay = vec![r#"{"type":"history","room":"general","count":30}"#.to_owned()];
    replay.extend((71..=100).map(|id| message_event(id, &format!("message {id}"))));
    replay.push(r#"{"type":"history_end","room":"general"}"#.to_owned());
    let replay: Vec<&str> = replay.iter().map(String::as_str).collect();
    lines(&mut app, now, &replay);

    // Not at the top: nothing asked. A PgUp past the oldest line asks.
    app.chat.scroll_up(1);
    assert!(sent(&line(&mut app, now, &message_event(101, "live"))).is_empty());
    let up = key(&mut app, now, KeyCode::PageUp);
    assert_eq!(sent(&up), vec!["/history before 71 50"]);
    // Asked once, however often the user scrolls meanwhile.
    assert!(sent(&key(&mut app, now, KeyCode::PageUp)).is_empty());

    let width = app.chat_width();
    let before = app.chat.window(width, 27);
    let mut page = vec![r#"{"type":"history","room":"general","count":50,"before":71}"#.to_owned()];
    page.extend((21..=70).map(|id| message_event(id, &format!("message {id}"))));
    page.push(r#"{"type":"history_end","room":"general","more":true}"#.to_owned());
    let page: Vec<&str> = page.iter().map(String::as_str).collect();
    lines(&mut app, now, &page);
    assert_eq!(
        app.chat.window(width, 27),
        before,
        "the reading position is kept"
    );
    let texts = shown(&app);
    let at = |t: &str| texts.iter().position(|l| l.ends_with(t)).unwrap();
    assert!(at("bob: message 21") < at("bob: message 70"));
    assert!(at("bob: message 70") < at("bob: message 71"));

    // Up to the start: said once, and nothing more is asked.
    let asked: Vec<String> = (0..10)
        .flat_map(|_| sent(&key(&mut app, now, KeyCode::PageUp)))
        .collect();
    assert_eq!(asked, vec!["/history before 21 50"]);
    let mut last = vec![r#"{"type":"history","room":"general","count":20,"before":21}"#.to_owned()];
    last.extend((1..=20).map(|id| message_event(id, &format!("message {id}"))));
    last.push(r#"{"type":"history_end","room":"general","more":false}"#.to_owned());
    let last: Vec<&str> = last.iter().map(String::as_str).collect();
    lines(&mut app, now, &last);
    let texts = shown(&app);
    assert!(texts[0].ends_with("* the start of #general"), "{texts:?}");
    assert!(texts[1].ends_with("bob: message 1"));
    for _ in 0..20 {
        assert!(sent(&key(&mut app, now, KeyCode::PageUp)).is_empty());
    }
}

#[test]
fn search_results_go_to_their_own_pane_and_esc_closes_it() {
    let (mut app, now) = online();
    type_text(&mut app, now, "/search lunch");
    let typed = key(&mut app, now, KeyCode::Enter);
    assert_eq!(sent(&typed), vec!["/search lunch"]);
    let before = shown(&app).len();
    lines(
        &mut app,
        now,
        &[
            r#"{"type":"search","query":"lunch","room":null,"count":2,"building":null}"#,
            r#"{"type":"whisper","id":9,"time":"2026-11-21T18:05:09.123+00:00","from":"bob","to":"alice","text":"lunch at 1?"}"#,
            &message_event(4, "who wants lunch"),
            r#"{"type":"search_end","count":2}"#,
        ],
    );
    assert_eq!(shown(&app).len(), before, "nothing in the chat pane");
    let pane = app.search.clone().unwrap();
    assert_eq!(pane.query, "lunch");
    let hits: Vec<(&str, &str)> = pane
        .hits
        .iter()
        .map(|h| (h.place.as_str(), h.text.as_str()))
        .collect();
    assert_eq!(
        hits,
        [
            ("whisper to alice", "lunch at 1?"),
            ("#general", "who wants lunch")
        ]
    );
    // Live messages go on to the chat pane.
    line(&mut app, now, &message_event(10, "back to work"));
    assert!(shown(&app).last().unwrap().ends_with("bob: back to work"));
    key(&mut app, now, KeyCode::Esc);
    assert!(app.search.is_none());
}

//! What the full-screen client draws, without a terminal: the app is driven
//! by events and drawn on ratatui's `TestBackend`, whose cells the tests
//! read (text and colours).

use std::time::{Duration, Instant};

use chatroom::client::tui::app::{App, Input, backoff};
use chatroom::client::tui::chat::{MENTION_STYLE, name_colour};
use chatroom::client::tui::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;

fn feed(app: &mut App, now: Instant, lines: &[&str]) {
    for text in lines {
        let conn = app.conn();
        app.handle(
            Input::Line {
                conn,
                line: (*text).to_owned(),
            },
            now,
        );
    }
}

fn press(app: &mut App, now: Instant, code: KeyCode) {
    app.handle(Input::Key(KeyEvent::new(code, KeyModifiers::NONE)), now);
}

fn message(id: u32, from: &str, text: &str) -> String {
    format!(
        r#"{{"type":"message","id":{id},"time":"2026-11-21T18:05:09.123+00:00","room":"general","from":"{from}","text":"{text}"}}"#
    )
}

/// alice, logged in, in #general with bob.
fn online() -> (App, Instant) {
    let now = Instant::now();
    let mut app = App::new("127.0.0.1:6622".into(), Some("alice".into()), now);
    app.wall_clock = || "12:00:00".to_owned();
    app.handle(Input::Connected { conn: 1 }, now);
    feed(
        &mut app,
        now,
        &[
            r#"{"type":"mode","mode":"json"}"#,
            r#"{"type":"prompt","field":"name"}"#,
            r#"{"type":"welcome","name":"alice","role":"member"}"#,
            r#"{"type":"room","room":"general"}"#,
            r#"{"type":"members","room":"general","members":["alice","bob"]}"#,
            r#"{"type":"rooms","rooms":[{"name":"dev","members":1},{"name":"general","members":2}]}"#,
        ],
    );
    (app, now)
}

fn draw(app: &mut App, width: u16, height: u16) -> Buffer {
    app.handle(Input::Resize(width, height), app.now);
    let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(terminal) => terminal,
        Err(e) => panic!("a test terminal: {e}"),
    };
    if let Err(e) = terminal.draw(|frame| view::draw(frame, app)) {
        panic!("drawing: {e}");
    }
    terminal.backend().buffer().clone()
}

fn row(buffer: &Buffer, y: u16) -> String {
    (0..buffer.area.width)
        .map(|x| buffer[(x, y)].symbol().to_owned())
        .collect()
}

fn rows(buffer: &Buffer) -> Vec<String> {
    (0..buffer.area.height).map(|y| row(buffer, y)).collect()
}

fn screen(buffer: &Buffer) -> String {
    rows(buffer).join("\n")
}

/// Where `text` starts on the screen.
fn find(buffer: &Buffer, text: &str) -> Option<(u16, u16)> {
    rows(buffer).iter().enumerate().find_map(|(y, line)| {
        line.find(text).map(|byte| {
            let x = line[..byte].chars().count();
            (u16::try_from(x).unwrap_or(0), u16::try_from(y).unwrap_or(0))
        })
    })
}

#[test]
fn a_wide_terminal_shows_chat_side_pane_status_bar_and_input_line() {
    let (mut app, now) = online();
    feed(&mut app, now, &[&message(1, "bob", "hi all")]);
    let buffer = draw(&mut app, 100, 30);
    let text = screen(&buffer);
    let status = row(&buffer, 28);
    for part in ["127.0.0.1:6622", "alice", "#general", "connected"] {
        assert!(status.contains(part), "status bar {status:?} lacks {part}");
    }
    assert!(row(&buffer, 29).starts_with("> "));
    assert!(row(&buffer, 27).contains("bob: hi all"), "{text}");
    for part in ["Rooms", "#dev", "#general", "People (2)"] {
        assert!(text.contains(part), "side pane lacks {part}:\n{text}");
    }
    let (side_x, _) = find(&buffer, "Rooms").unwrap_or_default();
    let (bob_x, _) = find(&buffer, "bob: hi all").unwrap_or_default();
    assert!(side_x > bob_x + 20, "the side pane is on the right");
}

#[test]
fn the_smallest_terminal_still_shows_chat_status_and_input() {
    let (mut app, now) = online();
    feed(&mut app, now, &[&message(1, "bob", "hi all")]);
    let buffer = draw(&mut app, 40, 10);
    let text = screen(&buffer);
    assert!(!text.contains("too small"), "{text}");
    assert!(row(&buffer, 7).contains("bob: hi all"), "{text}");
    assert!(row(&buffer, 8).contains("alice"), "{text}");
    assert!(
        row(&buffer, 8).contains("connected"),
        "the connection's state fits: {}",
        row(&buffer, 8)
    );
    assert!(row(&buffer, 9).starts_with("> "), "{text}");
    assert!(!text.contains("Rooms"), "no room for a side pane:\n{text}");
}

#[test]
fn a_terminal_smaller_than_40_by_10_shows_a_clear_message() {
    for (width, height) in [(39, 10), (40, 9), (20, 5)] {
        let (mut app, _) = online();
        let buffer = draw(&mut app, width, height);
        let text = screen(&buffer);
        assert!(text.contains("too small"), "{width}×{height}:\n{text}");
        assert!(!text.contains("> "), "{width}×{height}:\n{text}");
    }
}

#[test]
fn each_name_has_a_colour_of_its_own_and_the_same_one_every_time() {
    let (mut app, now) = online();
    feed(
        &mut app,
        now,
        &[
            &message(1, "bob", "one"),
            &message(2, "carol", "two"),
            &message(3, "bob", "three"),
        ],
    );
    let buffer = draw(&mut app, 100, 30);
    let colour_at = |text: &str| find(&buffer, text).map(|(x, y)| buffer[(x, y)].fg);
    assert_eq!(colour_at("bob: one"), Some(name_colour("bob")));
    assert_eq!(colour_at("bob: three"), Some(name_colour("bob")));
    assert_eq!(colour_at("carol: two"), Some(name_colour("carol")));
    assert_ne!(name_colour("bob"), name_colour("carol"));
}

#[test]
fn mentions_whispers_notices_and_errors_look_different() {
    let (mut app, now) = online();
    feed(
        &mut app,
        now,
        &[
            &message(1, "bob", "alice: lunch?"),
            r#"{"type":"whisper","id":2,"time":"2026-11-21T18:05:09.123+00:00","from":"bob","to":"alice","text":"psst"}"#,
            r#"{"type":"notice","text":"bob is away"}"#,
            r#"{"type":"error","text":"no such room"}"#,
        ],
    );
    let buffer = draw(&mut app, 100, 30);
    let cell = |text: &str| {
        let (x, y) = find(&buffer, text).unwrap_or_else(|| panic!("{text} is not shown"));
        buffer[(x, y)].clone()
    };
    let mention = cell("alice: lunch?");
    assert_eq!(mention.bg, MENTION_STYLE.bg.unwrap_or(Color::Reset));
    assert_eq!(cell("bob → alice: psst").fg, Color::Magenta);
    assert_eq!(cell("! no such room").fg, Color::Red);
    let notice = cell("* bob is away");
    assert_ne!(notice.fg, Color::Red);
    assert_ne!(notice.fg, Color::Magenta);
}

#[test]
fn long_lines_wrap_inside_the_chat_pane() {
    let (mut app, now) = online();
    let long = "word ".repeat(30);
    feed(&mut app, now, &[&message(1, "bob", long.trim())]);
    let buffer = draw(&mut app, 40, 10);
    let lines = rows(&buffer);
    let words: usize = lines[..8].iter().map(|l| l.matches("word").count()).sum();
    assert_eq!(words, 30, "every word is on screen:\n{}", lines.join("\n"));
    assert!(
        lines[7].starts_with("      word"),
        "continuation is indented"
    );
}

#[test]
fn page_up_scrolls_back_and_end_returns_to_live() {
    let (mut app, now) = online();
    let many: Vec<String> = (1..=60)
        .map(|i| message(i, "bob", &format!("line number {i}")))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    feed(&mut app, now, &many);
    let live = screen(&draw(&mut app, 100, 30));
    assert!(live.contains("line number 60"));

    press(&mut app, now, KeyCode::PageUp);
    let back = draw(&mut app, 100, 30);
    let text = screen(&back);
    assert!(!text.contains("line number 60"), "{text}");
    assert!(text.contains("line number 33"), "{text}");
    assert!(row(&back, 28).contains("scrolled"));

    // New lines do not move a scrolled pane; the status bar counts them.
    feed(&mut app, now, &[&message(61, "bob", "line number 61")]);
    let still = draw(&mut app, 100, 30);
    assert_eq!(row(&still, 0), row(&back, 0));
    assert!(row(&still, 28).contains("1 new"), "{}", row(&still, 28));

    press(&mut app, now, KeyCode::End);
    let text = screen(&draw(&mut app, 100, 30));
    assert!(text.contains("line number 61"), "{text}");
    for _ in 0..10 {
        press(&mut app, now, KeyCode::PageUp);
    }
    let top = draw(&mut app, 100, 30);
    assert!(
        screen(&top).contains("line number 1 "),
        "stops at the oldest line"
    );
    press(&mut app, now, KeyCode::PageDown);
    assert!(!screen(&draw(&mut app, 100, 30)).contains("line number 1 "));
}

#[test]
fn the_status_bar_tells_the_connection_is_lost_and_when_it_retries() {
    let (mut app, now) = online();
    app.handle(
        Input::Closed {
            conn: 1,
            reason: "the server closed the connection".into(),
        },
        now,
    );
    let buffer = draw(&mut app, 100, 30);
    let status = row(&buffer, 28);
    assert!(
        status.contains(&format!(
            "disconnected, retry 1 in {}s",
            backoff(1).as_secs()
        )),
        "{status}"
    );
    assert!(screen(&buffer).contains("connection lost"));
    app.handle(Input::Tick, now + backoff(1));
    app.handle(Input::Tick, now + backoff(1) + Duration::from_millis(10));
    let status = row(&draw(&mut app, 100, 30), 28);
    assert!(status.contains("reconnecting"), "{status}");
}

#[test]
fn the_password_is_shown_as_stars() {
    let now = Instant::now();
    let mut app = App::new("127.0.0.1:6622".into(), Some("alice".into()), now);
    app.handle(Input::Connected { conn: 1 }, now);
    feed(
        &mut app,
        now,
        &[
            r#"{"type":"mode","mode":"json"}"#,
            r#"{"type":"prompt","field":"name"}"#,
            r#"{"type":"prompt","field":"password"}"#,
        ],
    );
    for c in "s3cret".chars() {
        press(&mut app, now, KeyCode::Char(c));
    }
    let buffer = draw(&mut app, 60, 12);
    assert!(row(&buffer, 11).starts_with("password: ******"));
    assert!(!screen(&buffer).contains("s3cret"));
}

#[test]
fn a_long_input_line_scrolls_sideways_to_keep_the_cursor_in_sight() {
    let (mut app, now) = online();
    for c in "x".repeat(70).chars().chain("END".chars()) {
        press(&mut app, now, KeyCode::Char(c));
    }
    let buffer = draw(&mut app, 40, 10);
    assert!(row(&buffer, 9).contains("END"), "{}", row(&buffer, 9));
    press(&mut app, now, KeyCode::Home);
    let buffer = draw(&mut app, 40, 10);
    assert!(!row(&buffer, 9).contains("END"));
}

#[test]
fn resizing_redraws_to_the_new_size() {
    let (mut app, now) = online();
    feed(&mut app, now, &[&message(1, "bob", "still here")]);
    let big = draw(&mut app, 120, 40);
    assert!(screen(&big).contains("Rooms"));
    let small = draw(&mut app, 45, 12);
    let text = screen(&small);
    assert!(text.contains("bob: still here"), "{text}");
    assert!(row(&small, 11).starts_with("> "));
    assert!(row(&small, 10).contains("#general"));
    let again = draw(&mut app, 120, 40);
    assert_eq!(screen(&again), screen(&big));
}

#[test]
fn search_results_fill_the_upper_half_and_the_chat_goes_on_below() {
    let (mut app, now) = online();
    feed(&mut app, now, &[&message(1, "bob", "hi all")]);
    feed(
        &mut app,
        now,
        &[
            r#"{"type":"search","query":"lunch","room":null,"count":2,"building":null}"#,
            &message(7, "carol", "lunch at one?"),
            r#"{"type":"whisper","id":9,"time":"2026-11-21T18:05:09.123+00:00","from":"bob","to":"alice","text":"lunch just us"}"#,
            r#"{"type":"search_end","count":2}"#,
        ],
    );
    let buffer = draw(&mut app, 100, 30);
    let text = screen(&buffer);
    let title = find(&buffer, "search \"lunch\": 2 found").expect(&text);
    assert_eq!(
        title.1, 13,
        "the pane takes the upper half of the 28 chat rows:\n{text}"
    );
    let first = find(&buffer, "#general carol: lunch at one?").expect(&text);
    let second = find(&buffer, "whisper to alice bob: lunch just us").expect(&text);
    assert!(first.1 < second.1 && second.1 < title.1, "{text}");
    assert!(row(&buffer, 27).contains("bob: hi all"), "{text}");
    // Esc gives the chat pane its rows back.
    press(&mut app, now, KeyCode::Esc);
    let buffer = draw(&mut app, 100, 30);
    assert!(find(&buffer, "search \"lunch\"").is_none());
}

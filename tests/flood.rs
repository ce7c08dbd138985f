//! Flood control that slows a sender down and never loses a line ("fakelag"),
//! over real TCP against the real binary at its default flags.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, TestServer, chat_lines, rss_kib, server_in_tempdir as server};

fn is_slowed_notice(line: &str) -> bool {
    line.starts_with("* ") && line.contains("sending fast")
}

/// A sender that writes `flood N` lines as fast as its socket takes them, on
/// a thread of its own, until stopped; it blocks when the server reads no
/// more, as TCP flow control makes it. Returns how many lines it wrote whole.
struct Flood {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flood {
    fn start(client: &Client, prefix: &str) -> Flood {
        let mut stream = client.stream.try_clone().unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stop2, written2) = (Arc::clone(&stop), Arc::clone(&written));
        let prefix = prefix.to_string();
        let thread = thread::spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut next = 0u64;
            while !stop2.load(Ordering::Acquire) {
                if pending.is_empty() {
                    for _ in 0..100 {
                        pending.extend_from_slice(format!("{prefix} {next}\n").as_bytes());
                        next += 1;
                    }
                }
                match stream.write(&pending) {
                    Ok(n) => {
                        let whole = pending[..n].iter().filter(|&&b| b == b'\n').count();
                        written2.fetch_add(whole as u64, Ordering::AcqRel);
                        pending.drain(..n);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        Flood {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The numbers of the `PREFIX N` lines among the rows of `messages.csv` sent by `name`.
fn numbers_in_file(server: &TestServer, name: &str, prefix: &str) -> Vec<u64> {
    server
        .messages()
        .iter()
        .filter(|r| &r[3] == name)
        .filter_map(|r| r[5].strip_prefix(prefix)?.trim().parse().ok())
        .collect()
}

#[test]
fn a_forty_line_paste_reaches_another_member_whole_and_in_order() {
    let (_dir, server) = server(&[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    let paste: String = (0..40).map(|i| format!("pasted line {i}\n")).collect();
    alice.send_bytes(paste.as_bytes());
    alice.expect_line("alice: pasted line 39");
    bob.expect_line("alice: pasted line 39");
    let expected: Vec<String> = (0..40).map(|i| format!("alice: pasted line {i}")).collect();
    assert_eq!(chat_lines(&bob.seen), expected);
    assert_eq!(chat_lines(&alice.seen), expected);
    // The paster is told once that it is being slowed, and refused nothing.
    assert!(
        !alice.seen.iter().any(|l| l.starts_with("! ")),
        "{:#?}",
        alice.seen
    );
    let told = alice.seen.iter().filter(|l| is_slowed_notice(l)).count();
    assert_eq!(told, 1, "{:#?}", alice.seen);
    assert!(!bob.seen.iter().any(|l| is_slowed_notice(l)));
    let rows: Vec<String> = server
        .messages()
        .iter()
        .map(|r| format!("{}: {}", &r[3], &r[5]))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn a_flood_slows_nobody_else_keeps_memory_bounded_and_loses_nothing() {
    let (_dir, server) = server(&[]);
    let mut flooder = server.join("flooder");
    let mut carol = server.join("carol");
    let mut dave = server.join("dave");
    let rss_before = rss_kib(server.pid());
    let mut flood = Flood::start(&flooder, "flood");
    flooder.expect(is_slowed_notice);
    // Thousands of lines are on their way: the flooder's writes now wait on
    // TCP flow control, not on the server's memory.
    let deadline = Instant::now() + PATIENCE;
    while flood.written() < 5_000 {
        assert!(
            Instant::now() < deadline,
            "only {} lines written",
            flood.written()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let sent = Instant::now();
        carol.send(&format!("carol speaks {i}"));
        dave.expect_line(&format!("carol: carol speaks {i}"));
        worst = worst.max(sent.elapsed());
    }
    assert!(
        worst < Duration::from_millis(1000),
        "another member's line took {worst:?} to reach a third during the flood"
    );
    let rss_after = rss_kib(server.pid());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the server grew from {rss_before} KiB to {rss_after} KiB during the flood"
    );
    // The flooder is never refused or dropped: its echoes keep coming.
    flood.stop();
    let taken_so_far = numbers_in_file(&server, "flooder", "flood").len();
    flooder.expect_line(&format!("flooder: flood {}", taken_so_far + 2));
    assert!(
        !flooder.seen.iter().any(|l| l.starts_with("! ")),
        "{:#?}",
        flooder.seen
    );
    // Every line the server took from the flooder is in the file, in the order
    // sent, with no gap; and every one the flooder saw echoed is among them.
    let taken = numbers_in_file(&server, "flooder", "flood");
    assert!(taken.len() >= 10, "{taken:?}");
    assert_eq!(taken, (0..taken.len() as u64).collect::<Vec<_>>());
    let echoed = chat_lines(&flooder.seen)
        .iter()
        .filter(|l| l.starts_with("flooder: flood "))
        .count();
    assert!(echoed <= taken.len());
}

#[test]
fn sigterm_during_a_flood_exits_promptly_and_everyone_is_told() {
    let (_dir, mut server) = server(&[]);
    let mut flooder = server.join("flooder");
    let mut carol = server.join("carol");
    let _flood = Flood::start(&flooder, "flood");
    flooder.expect(is_slowed_notice);
    carol.expect_line("flooder: flood 12");
    let asked = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    carol.expect(|l| l.starts_with("* ") && l.contains("shutting down"));
    flooder.expect(|l| l.starts_with("* ") && l.contains("shutting down"));
    // What the server took before it stopped is written, in order.
    let taken = numbers_in_file(&server, "flooder", "flood");
    assert!(taken.len() >= 13, "{taken:?}");
    assert_eq!(taken, (0..taken.len() as u64).collect::<Vec<_>>());
    let shown = chat_lines(&carol.seen)
        .iter()
        .filter(|l| l.starts_with("flooder: flood "))
        .count();
    assert!(shown <= taken.len());
}

#[test]
fn quit_typed_after_a_flood_is_honoured_in_its_turn() {
    let (_dir, server) = server(&[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    let mut paste: String = (0..20).map(|i| format!("last words {i}\n")).collect();
    paste.push_str("/quit\n");
    alice.send_bytes(paste.as_bytes());
    alice.expect(|l| l.contains("goodbye, alice"));
    alice.expect_closed();
    bob.expect_line("alice left the chat");
    let expected: Vec<String> = (0..20).map(|i| format!("alice: last words {i}")).collect();
    assert_eq!(chat_lines(&alice.seen), expected);
    assert_eq!(chat_lines(&bob.seen), expected);
}

#[test]
fn rate_zero_turns_flood_control_off() {
    let (_dir, server) = server(&["--rate", "0"]);
    let mut alice = server.join("alice");
    let paste: String = (0..500).map(|i| format!("fast {i}\n")).collect();
    alice.send_bytes(paste.as_bytes());
    alice.expect_line("alice: fast 499");
    assert!(!alice.seen.iter().any(|l| is_slowed_notice(l)));
    assert_eq!(server.messages().len(), 500);
}

#[test]
fn a_client_slowed_again_after_resting_is_told_again() {
    let (_dir, server) = server(&["--rate", "20", "--burst", "5"]);
    let mut alice = server.join("alice");
    let paste: String = (0..10).map(|i| format!("a{i}\n")).collect();
    alice.send_bytes(paste.as_bytes());
    alice.expect_line("alice: a9");
    // Calm (sending nothing at all) for longer than a full bucket takes to
    // grow back: 5 lines at 20 a second is a quarter of a second. The time
    // passing is what this test is about, so it sleeps.
    thread::sleep(Duration::from_millis(400));
    let mut stream = alice.stream.try_clone().unwrap();
    let paste: String = (0..10).map(|i| format!("b{i}\n")).collect();
    stream.write_all(paste.as_bytes()).unwrap();
    alice.expect_line("alice: b9");
    let told = alice.seen.iter().filter(|l| is_slowed_notice(l)).count();
    assert_eq!(told, 2, "{:#?}", alice.seen);
}

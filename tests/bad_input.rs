//! Every row of the contract's bad-input table, over real TCP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{PATIENCE, TestServer, rss_kib, server_in_tempdir as server};

#[test]
fn a_line_at_the_limit_passes_and_one_byte_more_is_refused_without_closing() {
    let (_dir, server) = server(&["--max-line", "100"]);
    let mut alice = server.join("alice");
    let at = "a".repeat(100);
    alice.send(&at);
    alice.expect_line(&format!("alice: {at}"));
    alice.send(&"b".repeat(101));
    alice.expect(|l| l.starts_with("! ") && l.contains("too long") && l.contains("100"));
    alice.send("still fine");
    alice.expect_line("alice: still fine");
    let rows = server.messages();
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_huge_line_is_dropped_with_bounded_memory_and_the_connection_goes_on() {
    let (_dir, server) = server(&[]);
    let mut alice = server.join("alice");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        alice.send_bytes(&chunk);
    }
    alice.send_bytes(b"\nafter\n");
    alice.expect(|l| l.starts_with("! ") && l.contains("too long"));
    alice.expect_line("alice: after");
    let rss = rss_kib(server.pid());
    assert!(rss < 40 * 1024, "server RSS {rss} KiB after a 64 MiB line");
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn bytes_that_are_not_utf8_get_an_error_and_are_dropped() {
    let (_dir, server) = server(&[]);
    let mut alice = server.connect_raw();
    alice.expect(|l| l == "Name:");
    alice.send_bytes(b"\xff\xfename\n");
    alice.expect(|l| l.starts_with("! ") && l.contains("UTF-8"));
    alice.expect(|l| l == "Name:");
    alice.send(&"n".repeat(5000));
    alice.expect(|l| l.starts_with("! ") && l.contains("too long"));
    alice.expect(|l| l == "Name:");
    alice.send("alice");
    alice.expect_line("* hello alice");
    alice.send_bytes(b"bad \xc3\x28 text\n");
    alice.expect(|l| l.starts_with("! ") && l.contains("UTF-8"));
    alice.send("good text");
    alice.expect_line("alice: good text");
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn control_characters_are_removed_from_names_and_messages() {
    let (_dir, server) = server(&[]);
    let mut bob = server.join("bob");
    let mut evil = server.connect_raw();
    evil.send("ev\u{1b}il\u{7}");
    evil.expect_line("* hello evil!");
    evil.send("\u{1b}[2J\u{1b}[31mred\u{7f} \u{9b}1mbold\u{7}\ttabbed");
    let got = bob.expect_line("evil: ");
    assert!(got.ends_with("evil: [2J[31mred 1mbold\ttabbed"), "{got:?}");
    assert!(!got.chars().any(|c| c.is_control() && c != '\t'));
    let rows = server.messages();
    assert_eq!(&rows[0][3], "evil");
    assert_eq!(&rows[0][5], "[2J[31mred 1mbold\ttabbed");
    evil.send("/msg bob \u{1b}]0;pwned\u{7}hi");
    let whisper = bob.expect_line("whisper");
    assert!(
        !whisper.contains('\u{1b}') && !whisper.contains('\u{7}'),
        "{whisper:?}"
    );
}

#[test]
fn a_client_that_never_sends_a_name_is_disconnected_after_the_timeout() {
    let (_dir, server) = server(&["--name-timeout", "1"]);
    let mut idle = server.connect_raw();
    let started = Instant::now();
    let rest = idle.expect_closed();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        idle.seen
            .iter()
            .any(|l| l.starts_with("! ") && l.contains("name")),
        "{rest:?}"
    );
    // the others are not affected
    let mut alice = server.join("alice");
    alice.send("hi");
    alice.expect_line("alice: hi");
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_nobody_else_slows_down() {
    let (_dir, server) = server(&["--max-line", "65536", "--rate", "0"]);
    let stalled = server.join("stalled");
    let alice = server.join("alice");
    let mut bob = server.join("bob");
    let text = "z".repeat(60_000);
    let total = 400;
    let mut alice_out = alice.stream.try_clone().unwrap();
    let sender = {
        let text = text.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                writeln!(alice_out, "{i} {text}").unwrap();
            }
        })
    };
    // alice reads her own echoes as she goes, as any live client does
    let alice_reader = std::thread::spawn(move || {
        let mut alice = alice;
        for i in 0..total {
            alice.expect_line(&format!("alice: {i} zzz"));
        }
    });
    for i in 0..total {
        bob.expect_line(&format!("alice: {i} zzz"));
    }
    sender.join().unwrap();
    alice_reader.join().unwrap();
    // The stalled client is no longer online...
    let deadline = Instant::now() + PATIENCE;
    loop {
        let who = bob.sync();
        if !who.iter().any(|l| l.contains("stalled in")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled client is still online"
        );
    }
    assert!(bob.seen.iter().any(|l| l == "* stalled left the chat"));
    // ...and its connection ends: what it gets is bounded, then end of stream.
    let mut stalled = stalled;
    stalled.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut bytes = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stalled.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled connection was not closed: {e}"),
        }
    }
    assert!(bytes < total * text.len(), "it was not sent everything");
    assert_eq!(server.messages().len(), total);
}

#[test]
fn a_full_server_turns_newcomers_away_and_the_others_carry_on() {
    let (_dir, server) = server(&["--max-clients", "2"]);
    let mut alice = server.join("alice");
    let _bob = server.join("bob");
    let mut third = server.connect_raw();
    third.send("carol");
    third.expect_line("! server full");
    third.expect_closed();
    alice.send("still here");
    alice.expect_line("alice: still here");
    alice.send("/quit");
    alice.expect_closed();
    // a slot frees up once alice's thread is done
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut next = server.connect_raw();
        next.send("carol");
        let line =
            next.expect(|l| l.starts_with("! server full") || l.starts_with("* hello carol"));
        if line.starts_with("* hello") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed up");
    }
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_backs_off_without_spinning_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), &["--max-per-ip", "0"], |command| {
        // SAFETY: setrlimit is async-signal-safe; it runs in the child only.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 32,
                    rlim_max: 32,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let mut alice = server.join("alice");
    let hogs: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    server.expect_stderr("backing off");
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(1)); // measuring CPU use over a second
    let used = cpu_ticks(server.pid()) - before;
    assert!(
        used < 30,
        "the server used {used} ticks of CPU in one second while out of descriptors"
    );
    alice.send("still serving");
    alice.expect_line("alice: still serving");
    drop(hogs);
    let mut bob = server.join("bob");
    bob.send("got in");
    bob.expect_line("bob: got in");
}

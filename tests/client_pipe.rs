//! Drives the real `client` binary through pipes, as a script would, against
//! a small fake server that speaks the contract's wire protocol over real TCP.
//!
//! The fake server: a greeting and `Name:`; the name `taken` is refused (an
//! error line and `Name:` again), an empty name becomes `Guest1`; an accepted
//! name gets `* hello NAME`; messages come back as `[00:00:00] NAME: TEXT`;
//! `/quit` gets `* bye` and the connection is closed; `/crash` closes it
//! without a word; `/evil` sends a line full of terminal control characters.

use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn Error>>;

/// Long enough for a loaded machine; a client that hangs fails instead of
/// hanging the test run.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// Starts the fake server on a free port and returns the port.
fn start_fake_server() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve(stream));
        }
    });
    Ok(port)
}

fn serve(stream: TcpStream) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream).lines();
    out.write_all(b"* welcome to the fake chatroom\nName:\n")?;
    let name = loop {
        let Some(line) = lines.next() else {
            return Ok(());
        };
        let line = line?;
        match line.trim_end_matches('\r') {
            "taken" => out.write_all(b"! name taken\nName:\n")?,
            "" => break "Guest1".to_owned(),
            name => break name.to_owned(),
        }
    };
    writeln!(out, "* hello {name}")?;
    for line in lines {
        let line = line?;
        match line.trim_end_matches('\r') {
            "/quit" => {
                out.write_all(b"* bye\n")?;
                return Ok(());
            }
            "/crash" => return Ok(()),
            "/evil" => {
                out.write_all("* evil \x1b[2J\x07bell\r \u{9b}31m csi \x7f\r\n".as_bytes())?
            }
            command if command.starts_with('/') => out.write_all(b"! unknown command\n")?,
            text => writeln!(out, "[00:00:00] {name}: {text}")?,
        }
    }
    // The client closed its side: it has left.
    Ok(())
}

/// A port on which nothing listens: bound, noted, released.
fn unused_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn spawn_client(args: &[&str]) -> io::Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Reads a pipe to its end in a thread; the text arrives on the channel.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Waits for the child to exit, for [`EXIT_LIMIT`] at most.
fn wait_bounded(child: &mut Child) -> Result<ExitStatus, Box<dyn Error>> {
    let deadline = Instant::now() + EXIT_LIMIT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the client did not exit in time".into());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn finish(
    child: &mut Child,
    stdout: &mpsc::Receiver<String>,
    stderr: &mpsc::Receiver<String>,
) -> Result<Outcome, Box<dyn Error>> {
    let status = wait_bounded(child)?;
    Ok(Outcome {
        status,
        stdout: stdout.recv_timeout(EXIT_LIMIT)?,
        stderr: stderr.recv_timeout(EXIT_LIMIT)?,
    })
}

/// Runs the client with `input` on stdin, which is then closed.
fn run_client(args: &[&str], input: &str) -> Result<Outcome, Box<dyn Error>> {
    let mut child = spawn_client(args)?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = collect(child.stdout.take().ok_or("no stdout")?);
    let stderr = collect(child.stderr.take().ok_or("no stderr")?);
    let input = input.to_owned();
    thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    finish(&mut child, &stdout, &stderr)
}

/// A client whose stdin is kept open: the user has not left.
struct Running {
    child: Child,
    /// Dropping it ends the client's input.
    stdin: ChildStdin,
    /// The client's stdout, line by line as it comes.
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

/// Starts the client with `input` on stdin, which is kept open.
fn start_client_keeping_stdin(args: &[&str], input: &str) -> Result<Running, Box<dyn Error>> {
    let mut child = spawn_client(args)?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(input.as_bytes())?;
    stdin.flush()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (lines_tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = collect(child.stderr.take().ok_or("no stderr")?);
    Ok(Running {
        child,
        stdin,
        lines,
        stderr,
    })
}

/// Waits (bounded) for a stdout line containing `wanted`.
fn wait_for_line(lines: &mpsc::Receiver<String>, wanted: &str) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + EXIT_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .map_err(|_| format!("no line containing {wanted:?} came"))?;
        if line.contains(wanted) {
            return Ok(());
        }
    }
}

#[test]
fn scripted_chat_shows_every_reply_and_exits_cleanly() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(&["--port", &port.to_string()], "alice\nhello\n/quit\n")?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("* welcome to the fake chatroom\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Name:\n"), "{}", out.stdout);
    assert!(out.stdout.contains("* hello alice\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("[00:00:00] alice: hello\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("* bye\n"), "{}", out.stdout);
    assert_eq!(out.stderr, "");
    Ok(())
}

#[test]
fn end_of_input_without_quit_ends_the_session_cleanly() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(&["--port", &port.to_string()], "alice\nhello\n")?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("[00:00:00] alice: hello\n"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr, "");
    Ok(())
}

#[test]
fn name_flag_is_sent_as_soon_as_the_connection_is_made() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(
        &["--port", &port.to_string(), "--name", "bob"],
        "hi\n/quit\n",
    )?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("* hello bob\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("[00:00:00] bob: hi\n"),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn refused_name_can_be_followed_by_another() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(&["--port", &port.to_string()], "taken\ncarol\nhi\n/quit\n")?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("! name taken\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("[00:00:00] carol: hi\n"),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn empty_name_gets_a_guest_name() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(&["--port", &port.to_string()], "\nhi\n/quit\n")?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("[00:00:00] Guest1: hi\n"),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn clear_is_not_sent_to_the_server() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(
        &["--port", &port.to_string()],
        "alice\n/clear\nhello\n/quit\n",
    )?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(!out.stdout.contains("unknown command"), "{}", out.stdout);
    assert!(!out.stdout.contains("/clear"), "{}", out.stdout);
    assert!(
        out.stdout.contains("[00:00:00] alice: hello\n"),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn control_characters_from_the_server_never_reach_the_output() -> TestResult {
    let port = start_fake_server()?;
    let out = run_client(&["--port", &port.to_string()], "alice\n/evil\n/quit\n")?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("* evil [2Jbell 31m csi \n"),
        "{:?}",
        out.stdout
    );
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    assert!(!out.stdout.chars().any(unsafe_char), "{:?}", out.stdout);
    Ok(())
}

#[test]
fn server_closing_unexpectedly_is_reported_in_one_line() -> TestResult {
    let port = start_fake_server()?;
    // stdin stays open: the user has not left.
    let mut client = start_client_keeping_stdin(&["--port", &port.to_string()], "alice\n/crash\n")?;
    let status = wait_bounded(&mut client.child)?;
    drop(client.stdin);
    let stderr = client.stderr.recv_timeout(EXIT_LIMIT)?;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with(&format!("connection to 127.0.0.1:{port} lost: ")),
        "{stderr:?}"
    );
    Ok(())
}

#[test]
fn unreachable_server_is_named_with_what_to_check() -> TestResult {
    let port = unused_port()?;
    let out = run_client(&["--port", &port.to_string()], "alice\n")?;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(
        out.stderr
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "{:?}",
        out.stderr
    );
    assert!(out.stderr.contains("--port"), "{:?}", out.stderr);
    assert!(!out.stderr.contains("os error"), "{:?}", out.stderr);
    assert_eq!(out.stdout, "");
    Ok(())
}

#[test]
fn ctrl_c_leaves_cleanly() -> TestResult {
    let port = start_fake_server()?;
    let mut client = start_client_keeping_stdin(&["--port", &port.to_string()], "alice\n")?;
    wait_for_line(&client.lines, "* hello alice")?;
    let pid = i32::try_from(client.child.id())?;
    // SAFETY: sends SIGINT to the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    // The client asks the server to end the session, which says goodbye.
    wait_for_line(&client.lines, "* bye")?;
    let status = wait_bounded(&mut client.child)?;
    drop(client.stdin);
    let stderr = client.stderr.recv_timeout(EXIT_LIMIT)?;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
    Ok(())
}

#[test]
fn ctrl_c_at_the_name_prompt_leaves_without_sending_a_name() -> TestResult {
    let port = start_fake_server()?;
    let mut client = start_client_keeping_stdin(&["--port", &port.to_string()], "")?;
    wait_for_line(&client.lines, "Name:")?;
    let pid = i32::try_from(client.child.id())?;
    // SAFETY: sends SIGINT to the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = wait_bounded(&mut client.child)?;
    drop(client.stdin);
    let stderr = client.stderr.recv_timeout(EXIT_LIMIT)?;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
    // `/quit` would have been taken as a name.
    let rest: Vec<String> = client.lines.try_iter().collect();
    assert!(!rest.iter().any(|line| line.contains("hello")), "{rest:?}");
    Ok(())
}

#[test]
fn closed_output_leaves_quietly() -> TestResult {
    let port = start_fake_server()?;
    let mut child = spawn_client(&["--port", &port.to_string()])?;
    // Like `client | head -0`: nobody reads what the client prints.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(b"alice\nhello\n")?;
    stdin.flush()?;
    let stderr = collect(child.stderr.take().ok_or("no stderr")?);
    let status = wait_bounded(&mut child)?;
    drop(stdin);
    let stderr = stderr.recv_timeout(EXIT_LIMIT)?;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
    Ok(())
}

#[test]
fn help_lists_the_flags() -> TestResult {
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .arg("--help")
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--host", "--port", "--name"] {
        assert!(text.contains(flag), "{text}");
    }
    Ok(())
}

#[test]
fn name_flag_with_a_line_break_is_refused_before_connecting() -> TestResult {
    let port = unused_port()?;
    let out = run_client(&["--port", &port.to_string(), "--name", "a\nb"], "")?;
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stderr.contains("--name"), "{:?}", out.stderr);
    assert!(!out.stderr.contains("cannot connect"), "{:?}", out.stderr);
    Ok(())
}

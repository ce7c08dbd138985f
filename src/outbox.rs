//! The outgoing path of one client: a queue bounded in bytes, drained into the
//! socket by a writer that batches what is queued into few `write` calls.
//!
//! Everything else in the server only ever calls [`Outbox::send`], which never
//! waits; how the bytes reach the socket can change without anyone noticing.

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, Sender};

use crate::format::{self, Line};
use crate::limits::{LAST_WORDS, WRITE_BATCH, WRITE_STALL, WRITER_STACK};

/// What the writer is asked to do.
enum Item {
    Line(Line),
    /// Write what came before, then close the sending side.
    Close,
    /// The queue overflowed: drop what is queued, say so, close.
    Overflow,
}

/// What the outbox and its writer both see.
struct State {
    stream: Arc<TcpStream>,
    /// Bytes sent to the queue and not yet written.
    queued: AtomicUsize,
    limit: usize,
    /// No more lines are taken.
    closed: AtomicBool,
    /// The client was found too slow: the writer drops its backlog.
    overflowed: AtomicBool,
    /// The client asked for JSON lines (`/mode json`).
    json: AtomicBool,
}

/// The queue of lines on their way to one client.
///
/// Promises:
/// 1. [`send`](Outbox::send) never blocks and never waits on the client.
/// 2. Lines reach the socket in the order they were sent, each whole.
/// 3. At most `limit` bytes wait at any time; a client whose backlog would pass
///    that is too slow: it gets a last `! ` line if its socket still takes one,
///    and its connection is closed. Nobody else waits for it.
/// 4. One writer per socket: only the writer thread writes to it.
/// 5. When the last clone is dropped, the writer sends what is queued and
///    closes the connection.
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Item>,
    state: Arc<State>,
}

impl Outbox {
    /// Starts the writer of `stream`, which may hold `limit` bytes queued.
    pub fn spawn(stream: Arc<TcpStream>, limit: usize, name: String) -> io::Result<Outbox> {
        let (tx, rx) = crossbeam_channel::unbounded();
        stream.set_write_timeout(Some(WRITE_STALL))?;
        let state = Arc::new(State {
            stream,
            queued: AtomicUsize::new(0),
            limit,
            closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            json: AtomicBool::new(false),
        });
        let writer = Writer {
            rx,
            state: Arc::clone(&state),
        };
        thread::Builder::new()
            .name(name)
            .stack_size(WRITER_STACK)
            .spawn(move || writer.run())?;
        Ok(Outbox { tx, state })
    }

    /// Queues a line. Returns false if the client is gone or was just found
    /// too slow; the line is then dropped.
    pub fn send(&self, line: Line) -> bool {
        let state = &self.state;
        if state.closed.load(Ordering::Acquire) {
            return false;
        }
        let len = line.weight();
        let before = state.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > state.limit {
            state.queued.fetch_sub(len, Ordering::AcqRel);
            self.overflow();
            return false;
        }
        if self.tx.send(Item::Line(line)).is_err() {
            state.closed.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Sends what is queued, then closes the sending side of the connection.
    /// Lines sent after this are dropped.
    pub fn close(&self) {
        if !self.state.closed.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Item::Close);
        }
    }

    /// Chooses the rendering of the lines not yet written: JSON or text.
    pub fn set_json(&self, json: bool) {
        self.state.json.store(json, Ordering::Release);
    }

    /// True once the outbox takes no more lines.
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }

    fn overflow(&self) {
        self.state.overflowed.store(true, Ordering::Release);
        if !self.state.closed.swap(true, Ordering::AcqRel) {
            log::warn!(
                "dropping a client that stopped reading ({} bytes queued)",
                self.state.queued.load(Ordering::Relaxed)
            );
            // Wake the client's reader so it leaves its room at once.
            let _ = self.state.stream.shutdown(Shutdown::Read);
            let _ = self.tx.send(Item::Overflow);
        }
    }
}

/// The writer thread's half: it drains the queue into the socket.
struct Writer {
    rx: Receiver<Item>,
    state: Arc<State>,
}

impl Writer {
    fn run(self) {
        let mut batch: Vec<Line> = Vec::with_capacity(WRITE_BATCH);
        let how = loop {
            let first = match self.rx.recv() {
                Ok(item) => item,
                // Every outbox is gone and everything queued was written.
                Err(_) => break Shutdown::Both,
            };
            let mut end = None;
            let mut item = Some(first);
            while let Some(next) = item.take() {
                match next {
                    Item::Line(line) => batch.push(line),
                    Item::Close => {
                        end = Some(Shutdown::Write);
                        break;
                    }
                    Item::Overflow => {
                        end = Some(Shutdown::Both);
                        break;
                    }
                }
                if batch.len() < WRITE_BATCH {
                    item = self.rx.try_recv().ok();
                }
            }
            if self.state.overflowed.load(Ordering::Acquire) {
                self.last_words();
                break Shutdown::Both;
            }
            let bytes: usize = batch.iter().map(Line::weight).sum();
            let json = self.state.json.load(Ordering::Acquire);
            let written = write_all(&self.state.stream, &batch, json);
            batch.clear();
            self.state.queued.fetch_sub(bytes, Ordering::AcqRel);
            if let Err(e) = written {
                log::debug!("writing to a client failed: {e}");
                self.state.closed.store(true, Ordering::Release);
                break Shutdown::Both;
            }
            if let Some(how) = end {
                break how;
            }
        };
        let _ = self.state.stream.shutdown(how);
    }

    /// The `! ` line of a client dropped for not reading, if its socket takes it.
    fn last_words(&self) {
        let _ = self.state.stream.set_write_timeout(Some(LAST_WORDS));
        let line =
            format::error("disconnected: you stopped reading and too much was waiting for you");
        let json = self.state.json.load(Ordering::Acquire);
        let _ = (&*self.state.stream).write_all(line.for_mode(json).as_bytes());
    }
}

/// Writes every line, in order, in as few calls as the socket allows.
fn write_all(mut stream: &TcpStream, lines: &[Line], json: bool) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = lines
        .iter()
        .map(|l| l.for_mode(json))
        .filter(|s| !s.is_empty())
        .map(|s| IoSlice::new(s.as_bytes()))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

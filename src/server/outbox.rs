//! The outgoing path of every client: a queue bounded in bytes per client,
//! drained into the sockets by a few shared flusher threads.
//!
//! Everything else in the server only ever calls [`Outbox::send`], which never
//! waits. There is no writer thread per client: a client costs one thread (its
//! reader) and one descriptor. A send puts the line at the back of the
//! client's queue and, if the queue was idle, hands the client to its
//! [`Flushers`] thread. That thread writes everything queued with one
//! `sendmsg` that never blocks (`MSG_DONTWAIT`); what a full socket does not
//! take waits for the socket to become writable again, which the flusher
//! learns from `epoll`. Lines that pile up while a flusher is busy elsewhere
//! go out together: the busier the server, the bigger each write.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Shutdown;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{EventfdFlags, Timespec, eventfd};

use crate::format::{self, Line};
use crate::server::limits::{CLOSE_LINGER, FLUSHER_STACK, WRITE_BATCH};
use crate::server::transport::Output;

/// The epoll token of a flusher's own wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// Events taken from epoll per call.
const EVENTS: usize = 256;
/// How long an idle flusher sleeps before it looks at its stop flag.
const IDLE_WAIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 200_000_000,
};
/// How often a flusher looks for closing clients past their linger time.
const LINGER_CHECK: std::time::Duration = std::time::Duration::from_millis(100);
/// No wait: a flusher with work to do only collects what is ready.
const NO_WAIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the queue ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Still taking lines.
    Open,
    /// Write what is queued, then close the sending side.
    Close,
    /// Too slow: drop what is queued, say so if the socket takes it, close.
    Overflow,
}

struct Queue {
    lines: VecDeque<Line>,
    /// Weight of the queued lines (see [`Line::weight`]).
    bytes: usize,
    /// Bytes of the front line already written.
    offset: usize,
    /// In its flusher's hands: ready to flush, or waiting for the socket.
    scheduled: bool,
    end: End,
    /// Nothing more will be written.
    finished: bool,
    /// The rendering in force (JSON or text). It changes only between lines,
    /// so a line begun in one rendering is ended in it.
    json: bool,
    /// The rendering asked for last (`/mode`), taken up at the next line.
    wanted_json: bool,
}

/// One client's outgoing state, shared by its [`Outbox`] handles and its
/// flusher.
struct Shared {
    token: u64,
    output: Arc<dyn Output>,
    flusher: Arc<Flusher>,
    queue: Mutex<Queue>,
    limit: usize,
    live: Arc<Live>,
}

/// The queue of lines on their way to one client.
///
/// Promises:
/// 1. [`send`](Outbox::send) never blocks and never waits on the client.
/// 2. Lines reach the socket in the order they were sent, each whole.
/// 3. At most `limit` bytes wait at any time; a client whose backlog would pass
///    that is too slow: it gets a last `! ` line if its socket still takes one,
///    and its connection is closed. Nobody else waits for it.
/// 4. One writer per socket: only its flusher writes to it, one write at a time.
/// 5. After [`close`](Outbox::close), what was queued is written, then the
///    sending side of the connection is shut; a client that does not take it
///    within [`CLOSE_LINGER`] is cut off. Closing never throws queued lines
///    away before that, whoever still holds a handle.
/// 6. A switch of rendering (`/mode`) takes effect between two lines, never
///    inside one.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Queues a line. Returns false if the client is gone or was just found
    /// too slow; the line is then dropped.
    pub fn send(&self, line: Line) -> bool {
        let shared = &self.shared;
        let mut queue = lock(&shared.queue);
        if queue.end != End::Open || queue.finished {
            return false;
        }
        let weight = line.weight();
        if queue.bytes + weight > shared.limit {
            self.overflow(queue);
            return false;
        }
        queue.lines.push_back(line);
        queue.bytes += weight;
        self.schedule(queue);
        true
    }

    /// Queues lines in order, as [`send`](Outbox::send) each would, under
    /// one lock. Returns how many were queued: all, or those before the
    /// client was found gone or too slow (the rest are then dropped).
    pub fn send_all<'a>(&self, lines: impl IntoIterator<Item = &'a Line>) -> usize {
        let shared = &self.shared;
        let mut queue = lock(&shared.queue);
        if queue.end != End::Open || queue.finished {
            return 0;
        }
        let mut sent = 0;
        for line in lines {
            let weight = line.weight();
            if queue.bytes + weight > shared.limit {
                self.overflow(queue);
                return sent;
            }
            queue.lines.push_back(line.clone());
            queue.bytes += weight;
            sent += 1;
        }
        if sent > 0 {
            self.schedule(queue);
        }
        sent
    }

    /// The client is too slow: what is queued is dropped, it is told if its
    /// socket takes it, and its connection is closed.
    fn overflow(&self, mut queue: MutexGuard<'_, Queue>) {
        let shared = &self.shared;
        log::warn!(
            "dropping client {}: it stopped reading ({} bytes waiting)",
            shared.token,
            queue.bytes
        );
        queue.end = End::Overflow;
        crate::server::metrics::metrics().slow_readers_dropped.inc();
        self.schedule(queue);
        // Wake the client's reader so that it leaves its room at once.
        shared.output.shutdown(Shutdown::Read);
    }

    /// Hands the client to its flusher unless it has it already (or, while
    /// this thread holds hand-overs back, once it lets them go).
    fn schedule(&self, mut queue: MutexGuard<'_, Queue>) {
        if !queue.scheduled {
            queue.scheduled = true;
            drop(queue);
            let shared = Arc::clone(&self.shared);
            if let Some(shared) = Held::keep(shared) {
                let flusher = Arc::clone(&shared.flusher);
                flusher.ready(shared);
            }
        }
    }

    /// Holds back this thread's hand-overs of outboxes to their flushers
    /// until the returned guard is dropped, then hands them all over at
    /// once: one lock and at most one wake-up per flusher, instead of one
    /// each time an idle outbox is sent a line. For a thread that sends many
    /// lines to many outboxes in a row (the store delivering a batch); the
    /// lines are queued at once as always, and go out in the same order.
    /// While one guard is alive, more do nothing.
    pub fn hold_handovers() -> Held {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            let first = !held.holding;
            held.holding = true;
            Held {
                first,
                _not_send: std::marker::PhantomData,
            }
        })
    }

    /// Sends what is queued, then closes the sending side of the connection.
    /// Lines sent after this are dropped.
    pub fn close(&self) {
        let mut queue = lock(&self.shared.queue);
        if queue.end == End::Open {
            queue.end = End::Close;
            // The flusher keeps the outbox alive until it is written out (or
            // the linger time is up), even once every handle is dropped.
            let flusher = &self.shared.flusher;
            lock(&flusher.closing).insert(
                self.shared.token,
                (Arc::clone(&self.shared), Instant::now() + CLOSE_LINGER),
            );
            self.schedule(queue);
        }
    }

    /// True once the outbox takes no more lines.
    pub fn is_closed(&self) -> bool {
        let queue = lock(&self.shared.queue);
        queue.end != End::Open || queue.finished
    }

    /// Ends the reading side of the connection: the client's thread wakes
    /// from its read and ends (a kick, a ban, shutdown).
    pub fn stop_reading(&self) {
        self.shared.output.shutdown(Shutdown::Read);
    }

    /// Chooses the rendering of the lines not yet written: JSON or text. A
    /// line already partly written is finished in its rendering first.
    pub fn set_json(&self, json: bool) {
        lock(&self.shared.queue).wanted_json = json;
    }
}

/// The hand-overs a thread holds back (see [`Outbox::hold_handovers`]).
#[derive(Default)]
struct HeldHandovers {
    holding: bool,
    outboxes: Vec<Arc<Shared>>,
}

thread_local! {
    static HELD: std::cell::RefCell<HeldHandovers> = std::cell::RefCell::default();
}

/// Hand-overs held back until this is dropped: see
/// [`Outbox::hold_handovers`].
pub struct Held {
    /// The guard that started holding (the one that lets go).
    first: bool,
    /// Held per thread: the guard stays on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Held {
    /// Keeps `shared` for later if this thread holds hand-overs back;
    /// otherwise gives it back, to hand over now.
    fn keep(shared: Arc<Shared>) -> Option<Arc<Shared>> {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if held.holding {
                held.outboxes.push(shared);
                None
            } else {
                Some(shared)
            }
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.first {
            return;
        }
        let mut outboxes = HELD.with(|held| {
            let mut held = held.borrow_mut();
            held.holding = false;
            std::mem::take(&mut held.outboxes)
        });
        // Per flusher, in the order they were made ready.
        while let Some(first) = outboxes.first() {
            let flusher = Arc::clone(&first.flusher);
            let mut ready = lock(&flusher.ready);
            let was_empty = ready.is_empty();
            ready.extend(outboxes.extract_if(.., |shared| Arc::ptr_eq(&shared.flusher, &flusher)));
            drop(ready);
            if was_empty {
                flusher.wake_up();
            }
        }
        // The list's room is kept for the next time.
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if held.outboxes.is_empty() {
                held.outboxes = outboxes;
            }
        });
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        lock(&self.flusher.clients).remove(&self.token);
        let finished = lock(&self.queue).finished;
        if !finished {
            // Every handle is gone without a close: end the connection anyway.
            self.output.shutdown(Shutdown::Both);
            self.live.done();
        }
    }
}

/// How many outboxes are not finished, for shutdown to wait on.
#[derive(Default)]
struct Live {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Live {
    fn add(&self) {
        *lock(&self.count) += 1;
    }

    fn done(&self) {
        let mut count = lock(&self.count);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.changed.notify_all();
        }
    }
}

/// One flusher thread's state.
struct Flusher {
    epoll: OwnedFd,
    wake: OwnedFd,
    /// Outboxes handed over since the thread last looked.
    ready: Mutex<Vec<Arc<Shared>>>,
    /// Outboxes by token, to find the one an epoll event is about.
    clients: Mutex<HashMap<u64, Weak<Shared>>>,
    /// Outboxes being closed, held until written out, with the time by which
    /// their client must have taken the rest.
    closing: Mutex<HashMap<u64, (Arc<Shared>, Instant)>>,
    stop: AtomicBool,
}

impl Flusher {
    fn new() -> io::Result<Flusher> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let flusher = Flusher {
            epoll,
            wake,
            ready: Mutex::new(Vec::new()),
            clients: Mutex::new(HashMap::new()),
            closing: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        };
        epoll::add(
            &flusher.epoll,
            &flusher.wake,
            EventData::new_u64(WAKE),
            EventFlags::IN,
        )?;
        Ok(flusher)
    }

    /// Watches a socket for room to write: edge-triggered, one event each
    /// time a full socket takes bytes again.
    fn watch(&self, socket: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        epoll::add(
            &self.epoll,
            socket,
            EventData::new_u64(token),
            EventFlags::OUT | EventFlags::ET,
        )?;
        Ok(())
    }

    /// Hands an outbox to the thread, waking it if it may be asleep.
    fn ready(&self, shared: Arc<Shared>) {
        let mut ready = lock(&self.ready);
        let was_empty = ready.is_empty();
        ready.push(shared);
        drop(ready);
        if was_empty {
            self.wake_up();
        }
    }

    fn wake_up(&self) {
        // A full counter already means "wake up"; nothing else can fail here.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Cuts off the closing clients that have not taken what was queued for
    /// them within [`CLOSE_LINGER`].
    fn cut_off_lingering(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<Shared>> = {
            let mut closing = lock(&self.closing);
            let late: Vec<u64> = closing
                .iter()
                .filter(|(_, (_, by))| *by <= now)
                .map(|(token, _)| *token)
                .collect();
            late.iter()
                .filter_map(|token| closing.remove(token))
                .map(|(shared, _)| shared)
                .collect()
        };
        for shared in expired {
            let mut queue = lock(&shared.queue);
            if queue.finished {
                continue;
            }
            log::debug!(
                "client {}: closing cut short, {} bytes were not taken within {CLOSE_LINGER:?}",
                shared.token,
                queue.bytes
            );
            queue.lines.clear();
            queue.bytes = 0;
            queue.finished = true;
            drop(queue);
            shared.output.shutdown(Shutdown::Both);
            shared.live.done();
        }
    }

    /// The thread: waits for handed-over outboxes and writable sockets, and
    /// flushes each, round after round, until stopped with nothing left.
    fn run(&self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        let mut round: VecDeque<Arc<Shared>> = VecDeque::new();
        let mut batch: Vec<Line> = Vec::with_capacity(WRITE_BATCH);
        let mut next_linger_check = Instant::now();
        loop {
            if Instant::now() >= next_linger_check {
                self.cut_off_lingering();
                next_linger_check = Instant::now() + LINGER_CHECK;
            }
            let timeout = if round.is_empty() {
                &IDLE_WAIT
            } else {
                &NO_WAIT
            };
            events.clear();
            if let Err(e) = epoll::wait(&self.epoll, spare_capacity(&mut events), Some(timeout))
                && e != rustix::io::Errno::INTR
            {
                log::error!("a flusher cannot wait for sockets: {e}");
            }
            for event in &events {
                let token = event.data.u64();
                if token == WAKE {
                    let mut sink = [0u8; 8];
                    let _ = rustix::io::read(&self.wake, &mut sink);
                } else {
                    // Release the map's lock before anything else: if this is
                    // the last handle, dropping it takes that lock again.
                    let found = lock(&self.clients).get(&token).and_then(Weak::upgrade);
                    // The socket takes bytes again: flush it if it waits.
                    if let Some(shared) = found
                        && lock(&shared.queue).scheduled
                    {
                        round.push_back(shared);
                    }
                }
            }
            round.extend(lock(&self.ready).drain(..));
            if round.is_empty() {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                continue;
            }
            for _ in 0..round.len() {
                let Some(shared) = round.pop_front() else {
                    break;
                };
                if flush(&shared, &mut batch) == Flushed::More {
                    round.push_back(shared);
                }
            }
        }
    }
}

/// What one flush left to do.
#[derive(Debug, PartialEq, Eq)]
enum Flushed {
    /// Nothing: the queue is empty, finished, or waits for the socket.
    Idle,
    /// More is queued (or a close is due): flush again next round.
    More,
}

/// Writes what one outbox has queued, without blocking.
fn flush(shared: &Shared, batch: &mut Vec<Line>) -> Flushed {
    let output = &*shared.output;
    let offset;
    let json;
    {
        let mut queue = lock(&shared.queue);
        if queue.finished {
            return Flushed::Idle;
        }
        if queue.offset == 0 {
            queue.json = queue.wanted_json;
        }
        json = queue.json;
        if queue.end == End::Overflow {
            // A line cut halfway is ended, so the last words stand on their own.
            let cut = queue.offset > 0;
            queue.lines.clear();
            queue.bytes = 0;
            queue.finished = true;
            drop(queue);
            last_words(output, json, cut);
            finish(shared, Shutdown::Both);
            return Flushed::Idle;
        }
        if queue.lines.is_empty() && !output.pending() {
            if queue.end == End::Close {
                queue.finished = true;
                drop(queue);
                finish(shared, Shutdown::Write);
                return Flushed::Idle;
            }
            queue.scheduled = false;
            return Flushed::Idle;
        }
        offset = queue.offset;
        batch.extend(queue.lines.iter().take(WRITE_BATCH).cloned());
    }

    let written = output.write(batch, offset, json);
    let result = match written {
        Ok(written) => {
            let mut queue = lock(&shared.queue);
            // Pop the lines written whole; remember how far into the next.
            let mut left = written + offset;
            let mut popped = 0;
            for line in batch.iter() {
                let len = output.rendering(line, json).len();
                if left >= len {
                    left -= len;
                    popped += line.weight();
                    queue.lines.pop_front();
                } else {
                    break;
                }
            }
            queue.offset = left;
            queue.bytes -= popped;
            if queue.lines.is_empty() && queue.end == End::Open && !output.pending() {
                queue.scheduled = false;
                Flushed::Idle
            } else {
                // More came, a close is due, or the socket took only part:
                // try again next round (a full socket then says WouldBlock).
                Flushed::More
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Flushed::Idle,
        Err(e) => {
            log::debug!("writing to client {} failed: {e}", shared.token);
            let mut queue = lock(&shared.queue);
            queue.lines.clear();
            queue.bytes = 0;
            queue.finished = true;
            drop(queue);
            finish(shared, Shutdown::Both);
            Flushed::Idle
        }
    };
    batch.clear();
    result
}

/// The `! ` line of a client dropped for not reading, if its socket takes it.
fn last_words(output: &dyn Output, json: bool, cut: bool) {
    let line = format::error("disconnected: you stopped reading and too much was waiting for you");
    let mut lines = vec![line];
    if cut {
        lines.insert(0, Line::new("\n", "\n"));
    }
    let _ = output.write(&lines, 0, json);
}

/// Shuts the connection and counts the outbox as finished.
fn finish(shared: &Shared, how: Shutdown) {
    shared.output.shutdown(how);
    shared.live.done();
    // Let go of a closing outbox, outside the map's lock: this may be the
    // last handle, and dropping it takes the clients map's lock.
    let held = lock(&shared.flusher.closing).remove(&shared.token);
    drop(held);
}

/// The flusher threads of one server.
///
/// Promises:
/// 1. A fixed number of threads, whatever the number of clients.
/// 2. Each outbox is flushed by one thread only, so its lines keep their order.
/// 3. [`stop`](Flushers::stop) returns once every thread has ended.
pub struct Flushers {
    flushers: Vec<Arc<Flusher>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
    live: Arc<Live>,
}

impl Flushers {
    /// Starts `threads` flusher threads.
    pub fn start(threads: usize) -> io::Result<Flushers> {
        let mut flushers = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let flusher = Arc::new(Flusher::new()?);
            let for_thread = Arc::clone(&flusher);
            handles.push(
                thread::Builder::new()
                    .name(format!("flusher-{i}"))
                    .stack_size(FLUSHER_STACK)
                    .spawn(move || for_thread.run())?,
            );
            flushers.push(flusher);
        }
        Ok(Flushers {
            flushers,
            threads: Mutex::new(handles),
            next: AtomicUsize::new(0),
            live: Arc::new(Live::default()),
        })
    }

    /// An outbox for `output` holding at most `limit` bytes; `token` names the
    /// client (unique while it lives).
    pub fn outbox(&self, output: Arc<dyn Output>, limit: usize, token: u64) -> io::Result<Outbox> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.flushers.len();
        let flusher = Arc::clone(&self.flushers[index]);
        // Watched first: if that fails there is nothing to undo, and the
        // count of live outboxes is not touched.
        flusher.watch(output.socket(), token)?;
        let shared = Arc::new(Shared {
            token,
            output: Arc::clone(&output),
            flusher: Arc::clone(&flusher),
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                bytes: 0,
                offset: 0,
                scheduled: false,
                end: End::Open,
                finished: false,
                json: false,
                wanted_json: false,
            }),
            limit,
            live: Arc::clone(&self.live),
        });
        lock(&flusher.clients).insert(token, Arc::downgrade(&shared));
        self.live.add();
        Ok(Outbox { shared })
    }

    /// Waits until every outbox has written what it had and closed, or the
    /// deadline passes. Returns false on the deadline.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut count = lock(&self.live.count);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .live
                .changed
                .wait_timeout(count, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// Stops the threads once they have nothing left to do, and joins them.
    pub fn stop(&self) {
        for flusher in &self.flushers {
            flusher.stop.store(true, Ordering::Release);
            flusher.wake_up();
        }
        for handle in lock(&self.threads).drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use crate::server::transport::Accept;
    use crate::server::transport::tcp::Tcp;

    /// The server's writing half of a fresh TCP connection, and the client.
    fn pair() -> (Arc<dyn Output>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let connection = Tcp.open(server, peer, Instant::now(), 4096).unwrap();
        (connection.unwrap().output, client)
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_close_ends_the_stream() {
        let flushers = Flushers::start(2).unwrap();
        let (server, client) = pair();
        let outbox = flushers.outbox(server, 1 << 20, 1).unwrap();
        for i in 0..10_000 {
            assert!(outbox.send(format::notice(format_args!("line {i}"))));
        }
        outbox.close();
        assert!(!outbox.send(format::notice("after close")));
        let lines: Vec<String> = BufReader::new(client).lines().map(Result::unwrap).collect();
        assert_eq!(lines.len(), 10_000);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line, &format!("* line {i}"));
        }
        assert!(flushers.wait_idle(Instant::now() + Duration::from_secs(5)));
        flushers.stop();
    }

    #[test]
    fn a_reader_that_stops_reading_is_cut_off_and_memory_stays_bounded() {
        let flushers = Flushers::start(1).unwrap();
        let (server, mut client) = pair();
        let outbox = flushers.outbox(server, 64 * 1024, 1).unwrap();
        let big = "x".repeat(1000);
        let mut accepted = 0;
        for _ in 0..100_000 {
            if !outbox.send(format::notice(&big)) {
                break;
            }
            accepted += 1;
        }
        assert!(accepted < 100_000, "the queue never filled");
        assert!(outbox.is_closed());
        // The reader gets at most what was accepted, then the end.
        let mut received = Vec::new();
        let _ = client.read_to_end(&mut received);
        assert!(received.len() <= (accepted + 1) * 1003 + 200);
        flushers.stop();
    }

    #[test]
    fn json_clients_get_the_json_rendering() {
        let flushers = Flushers::start(1).unwrap();
        let (server, client) = pair();
        let outbox = flushers.outbox(server, 1 << 20, 1).unwrap();
        outbox.set_json(true);
        outbox.send(format::error("nope"));
        outbox.send(Line::new("text only\n", ""));
        outbox.send(format::notice("yes"));
        outbox.close();
        let lines: Vec<String> = BufReader::new(client).lines().map(Result::unwrap).collect();
        assert_eq!(
            lines,
            [
                r#"{"type":"error","text":"nope"}"#,
                r#"{"type":"notice","text":"yes"}"#
            ]
        );
        flushers.stop();
    }

    #[test]
    fn lines_sent_together_arrive_in_order_after_those_sent_before() {
        let flushers = Flushers::start(1).unwrap();
        let (server, client) = pair();
        let outbox = flushers.outbox(server, 1 << 20, 1).unwrap();
        outbox.send(format::notice("first"));
        let lines: Vec<Line> = (0..100)
            .map(|i| format::notice(format_args!("line {i}")))
            .collect();
        assert_eq!(outbox.send_all(&lines), 100);
        assert_eq!(outbox.send_all(&[]), 0);
        outbox.send(format::notice("last"));
        outbox.close();
        assert_eq!(outbox.send_all(&lines), 0);
        let got: Vec<String> = BufReader::new(client).lines().map(Result::unwrap).collect();
        let mut want = vec!["* first".to_string()];
        want.extend((0..100).map(|i| format!("* line {i}")));
        want.push("* last".to_string());
        assert_eq!(got, want);
        flushers.stop();
    }

    #[test]
    fn lines_sent_together_past_the_limit_drop_the_client() {
        let flushers = Flushers::start(1).unwrap();
        let (server, mut client) = pair();
        let outbox = flushers.outbox(server, 64 * 1024, 1).unwrap();
        let big = format::notice("x".repeat(1000));
        let lines = vec![big; 100];
        let sent = outbox.send_all(&lines);
        assert!(sent < 100 && sent > 0, "{sent}");
        assert!(outbox.is_closed());
        let mut received = Vec::new();
        let _ = client.read_to_end(&mut received);
        assert!(received.len() <= (sent + 1) * 1003 + 200);
        flushers.stop();
    }

    #[test]
    fn held_handovers_reach_the_flushers_when_let_go() {
        let flushers = Flushers::start(2).unwrap();
        let clients: Vec<_> = (0..4u64)
            .map(|token| {
                let (server, client) = pair();
                (flushers.outbox(server, 1 << 20, token).unwrap(), client)
            })
            .collect();
        {
            let _held = Outbox::hold_handovers();
            {
                // A second guard inside the first changes nothing.
                let _inner = Outbox::hold_handovers();
                for (outbox, _) in &clients {
                    assert!(outbox.send(format::notice("one")));
                }
            }
            for (outbox, _) in &clients {
                assert!(HELD.with(|held| held.borrow().holding));
                assert!(outbox.send(format::notice("two")));
            }
            assert_eq!(HELD.with(|held| held.borrow().outboxes.len()), 4);
        }
        assert!(HELD.with(|held| !held.borrow().holding && held.borrow().outboxes.is_empty()));
        for (outbox, client) in clients {
            outbox.close();
            let got: Vec<String> = BufReader::new(client).lines().map(Result::unwrap).collect();
            assert_eq!(got, ["* one", "* two"]);
        }
        flushers.stop();
    }
}

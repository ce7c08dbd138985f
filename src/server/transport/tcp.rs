//! Plain TCP: the contract's own transport. Lines in are read with a
//! [`LineReader`]; lines out are the text or JSON rendering, written with one
//! non-blocking `sendmsg` per batch (one system call, however many lines).

use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};

use super::{Accept, Connection, Input, Output, Stream, slices};
use crate::format::Line;
use crate::wire::{self, LineReader};

/// Plain TCP connections.
pub struct Tcp;

impl Accept for Tcp {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn open(
        &self,
        stream: TcpStream,
        _peer: SocketAddr,
        _deadline: Instant,
        max_line: usize,
    ) -> io::Result<Option<Connection>> {
        let stream = Arc::new(stream);
        Ok(Some(Connection {
            input: Box::new(TcpInput {
                lines: LineReader::new(Socket(Arc::clone(&stream)), max_line),
            }),
            output: Arc::new(TcpOutput { stream }),
        }))
    }
}

impl Stream for TcpStream {
    fn socket(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(&mut &*self, buf)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn send(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        send_slices(self.as_fd(), slices)
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = TcpStream::shutdown(self, how);
    }
}

/// The socket, shared by both halves; reading needs a `Read` of its own.
struct Socket(Arc<TcpStream>);

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (*self.0).read(buf)
    }
}

/// The reading half of a TCP connection.
pub struct TcpInput {
    lines: LineReader<Socket>,
}

impl Input for TcpInput {
    fn read_line(&mut self) -> io::Result<Option<wire::Line>> {
        self.lines.read_line()
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.lines.get_ref().0.set_read_timeout(timeout)
    }
}

/// The writing half of a TCP connection.
pub struct TcpOutput {
    stream: Arc<TcpStream>,
}

impl Output for TcpOutput {
    fn socket(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn rendering<'a>(&self, line: &'a Line, json: bool) -> &'a [u8] {
        line.for_mode(json).as_bytes()
    }

    fn write(&self, lines: &[Line], offset: usize, json: bool) -> io::Result<usize> {
        send_lines(self.stream.as_fd(), lines, offset, |line| {
            line.for_mode(json).as_bytes()
        })
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }
}

/// Writes the renderings of `lines` (the first from `offset` on) with one
/// non-blocking `sendmsg`. Returns the bytes the socket took.
pub fn send_lines<'a>(
    socket: BorrowedFd<'_>,
    lines: &'a [Line],
    offset: usize,
    render: impl Fn(&'a Line) -> &'a [u8],
) -> io::Result<usize> {
    send_slices(socket, &slices(lines, offset, render))
}

/// Writes `slices` with one non-blocking `sendmsg`; the bytes taken.
pub fn send_slices(socket: BorrowedFd<'_>, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    if slices.is_empty() {
        return Ok(0);
    }
    loop {
        match sendmsg(
            socket,
            slices,
            &mut SendAncillaryBuffer::default(),
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(sent) => return Ok(sent),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

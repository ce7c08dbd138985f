//! Plain TCP: the contract's own transport. Lines in are read with a
//! [`LineReader`](crate::wire::LineReader) (through [`StreamInput`]); lines
//! out are the text or JSON rendering, written with one non-blocking
//! `sendmsg` per batch (one system call, however many lines).

use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};

use super::{Accept, Connection, Stream, StreamInput, StreamOutput};

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
            input: Box::new(StreamInput::new(Arc::clone(&stream), max_line)),
            output: Arc::new(StreamOutput::new(stream)),
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

//! An in-memory duplex byte stream for the simulation: two ends, each
//! `Read + Write` like a non-blocking stream socket.
//!
//! - Each direction holds at most [`PIPE_CAPACITY`] bytes: a writer that
//!   finds it full gets `WouldBlock` (or writes part), so a reader that
//!   stops reading pushes back on the writer.
//! - A read of an empty direction gives `WouldBlock` while the writer is
//!   open, and `Ok(0)` once it has shut its side down (or closed).
//! - `shutdown(Write)` is a half-close; `shutdown(Read)`, or closing the
//!   end (dropping it), makes the peer's writes fail (`BrokenPipe`), as a
//!   write to a socket whose peer closed does.
//! - A pipe may start unconnected ([`connecting`]): the connecting end
//!   learns from `is_connected` / `take_error` whether the other side
//!   accepted or refused it, as after a non-blocking `connect`.
//!
//! Each end also keeps the readiness *edges* an edge-triggered poller
//! (epoll with `EPOLLET`) would report for it: readable when the peer
//! wrote bytes or shut down since the last report, writable when room
//! appeared after a write found the direction full, when the connect
//! completed or failed, and when the peer closed. The simulation's I/O
//! layer ([`super::mem_io`]) reports them, and only them, to the engine.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;

/// Bytes one direction holds: about a Linux unix stream socket's default
/// send buffer (212,992 bytes).
pub const PIPE_CAPACITY: usize = 208 * 1024;

thread_local! {
    /// Orders edges as they were raised (an epoll ready list is FIFO).
    static EDGE_CLOCK: Cell<u64> = const { Cell::new(0) };
}

/// One direction: written by one end, read by the other.
#[derive(Default)]
struct Direction {
    /// The bytes in flight are `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// The writer shut its side down or closed: after the bytes, EOF.
    eof: bool,
    /// The reader shut down reading or closed: writes fail.
    reader_gone: bool,
    /// A write found it full since room last appeared: room appearing is
    /// a writable edge for the writer.
    writer_blocked: bool,
}

impl Direction {
    fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.buf.len() + bytes.len() > self.buf.capacity() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Move up to `out.len()` bytes from the front into `out`.
    fn take_into(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume(n);
        n
    }

    /// Move every byte into `out`.
    fn take_all(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.len();
        out.extend_from_slice(&self.buf[self.pos..]);
        self.consume(n);
        n
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }
}

/// The readiness edges pending for one end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edges {
    pub readable: bool,
    pub writable: bool,
    /// When the first of them was raised (for delivery in that order).
    since: u64,
}

impl Edges {
    pub fn any(&self) -> bool {
        self.readable || self.writable
    }

    /// When the first of them was raised: deliver older ones first.
    pub fn since(&self) -> u64 {
        self.since
    }

    fn raise(&mut self, readable: bool, writable: bool) {
        if !self.any() {
            self.since = EDGE_CLOCK.with(|c| {
                c.set(c.get() + 1);
                c.get()
            });
        }
        self.readable |= readable;
        self.writable |= writable;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Connect {
    Pending,
    Done,
    /// Refused; the error not yet taken.
    Refused,
    /// Refused, and `take_error` said so.
    Failed,
}

struct Shared {
    /// `dirs[i]` is written by end `i` and read by end `1 - i`.
    dirs: [Direction; 2],
    edges: [Edges; 2],
    capacity: usize,
    /// End 0's connect.
    connect: Connect,
}

/// One end of a pipe. Dropping it closes it.
pub struct PipeEnd {
    shared: Rc<RefCell<Shared>>,
    side: usize,
}

fn new_pipe(connect: Connect, capacity: usize) -> (PipeEnd, PipeEnd) {
    let shared = Rc::new(RefCell::new(Shared {
        dirs: Default::default(),
        edges: Default::default(),
        capacity,
        connect,
    }));
    (
        PipeEnd {
            shared: shared.clone(),
            side: 0,
        },
        PipeEnd { shared, side: 1 },
    )
}

/// A connected pair.
pub fn pipe() -> (PipeEnd, PipeEnd) {
    new_pipe(Connect::Done, PIPE_CAPACITY)
}

/// A connected pair holding at most `capacity` bytes per direction.
#[cfg(test)]
pub fn pipe_with_capacity(capacity: usize) -> (PipeEnd, PipeEnd) {
    new_pipe(Connect::Done, capacity)
}

/// A pair whose first end is connecting: the second end decides
/// ([`PipeEnd::accept_connect`], [`PipeEnd::refuse_connect`]).
pub fn connecting() -> (PipeEnd, PipeEnd) {
    new_pipe(Connect::Pending, PIPE_CAPACITY)
}

impl PipeEnd {
    fn peer(&self) -> usize {
        1 - self.side
    }

    /// The connecting end's connect completed (called on the other end).
    pub fn accept_connect(&self) {
        let mut s = self.shared.borrow_mut();
        if s.connect == Connect::Pending {
            s.connect = Connect::Done;
            s.edges[0].raise(false, true);
        }
    }

    /// The connecting end's connect failed (called on the other end).
    pub fn refuse_connect(&self) {
        let mut s = self.shared.borrow_mut();
        if s.connect == Connect::Pending {
            s.connect = Connect::Refused;
            s.edges[0].raise(true, true);
        }
    }

    /// The connect is complete (always, for the accepting end).
    pub fn is_connected(&self) -> bool {
        self.side == 1 || self.shared.borrow().connect == Connect::Done
    }

    /// A failed connect's error, once (as `SO_ERROR`).
    pub fn take_error(&self) -> Option<io::Error> {
        let mut s = self.shared.borrow_mut();
        if self.side == 0 && s.connect == Connect::Refused {
            s.connect = Connect::Failed;
            return Some(io::ErrorKind::ConnectionRefused.into());
        }
        None
    }

    /// The edges raised since the last call (cleared).
    pub fn take_edges(&self) -> Edges {
        std::mem::take(&mut self.shared.borrow_mut().edges[self.side])
    }

    /// The edges pending, left as they are.
    pub fn pending_edges(&self) -> Edges {
        self.shared.borrow().edges[self.side]
    }

    /// Raise the edges an edge-triggered poller reports when the end is
    /// registered: writable once connected, readable when bytes (or EOF)
    /// wait.
    pub fn registered(&self) {
        let connected = self.is_connected();
        let mut s = self.shared.borrow_mut();
        let incoming = &s.dirs[1 - self.side];
        let readable = !incoming.is_empty() || incoming.eof;
        s.edges[self.side].raise(readable, connected);
    }

    /// The peer shut down its writing side (or closed): what is left to
    /// read ends with EOF (`EPOLLRDHUP`).
    pub fn read_closed(&self) -> bool {
        self.shared.borrow().dirs[self.peer()].eof
    }

    /// The peer closed (or shut down both sides): nothing it writes will
    /// come, nothing written to it will be read.
    pub fn peer_gone(&self) -> bool {
        let s = self.shared.borrow();
        s.dirs[self.peer()].eof && s.dirs[self.side].reader_gone
    }

    /// As a socket's `shutdown` (never fails).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let mut s = self.shared.borrow_mut();
        let (me, peer) = (self.side, self.peer());
        if matches!(how, Shutdown::Write | Shutdown::Both) && !s.dirs[me].eof {
            s.dirs[me].eof = true;
            s.edges[peer].raise(true, false);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) && !s.dirs[peer].reader_gone {
            s.dirs[peer].reader_gone = true;
            s.dirs[peer].clear();
            // Its writes fail from now on: a writable edge says so.
            s.edges[peer].raise(false, true);
        }
        Ok(())
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl PipeEnd {
    /// Read as `Read::read` does, with `take` moving the bytes out.
    fn read_with(&mut self, take: impl FnOnce(&mut Direction) -> usize) -> io::Result<usize> {
        if !self.is_connected() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let mut s = self.shared.borrow_mut();
        let peer = self.peer();
        let dir = &mut s.dirs[peer];
        if dir.reader_gone {
            return Ok(0);
        }
        if dir.is_empty() {
            return if dir.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        // All there is, up to the room given: a short read means "empty
        // now", as on a socket.
        let n = take(dir);
        if n > 0 && dir.writer_blocked {
            dir.writer_blocked = false;
            s.edges[peer].raise(false, true);
        }
        Ok(n)
    }

    /// Append every byte waiting to `into`; otherwise as `read`.
    pub fn read_available(&mut self, into: &mut Vec<u8>) -> io::Result<usize> {
        self.read_with(|dir| dir.take_all(into))
    }
}

impl Read for PipeEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_with(|dir| dir.take_into(buf))
    }
}

impl Write for PipeEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.is_connected() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let mut s = self.shared.borrow_mut();
        let (me, peer) = (self.side, self.peer());
        let capacity = s.capacity;
        let dir = &mut s.dirs[me];
        if dir.eof || dir.reader_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let room = capacity - dir.len();
        let n = room.min(buf.len());
        if n < buf.len() {
            dir.writer_blocked = true;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        dir.push(&buf[..n]);
        s.edges[peer].raise(true, false);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn would_block<T: std::fmt::Debug>(r: io::Result<T>) -> bool {
        matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[test]
    fn bytes_flow_both_ways_and_an_empty_pipe_would_block() {
        let (mut a, mut b) = pipe();
        let mut buf = [0u8; 16];
        assert!(would_block(b.read(&mut buf)));
        assert_eq!(a.write(b"hello").unwrap(), 5);
        assert_eq!(b.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert!(would_block(b.read(&mut buf)));
        assert_eq!(b.write(b"back").unwrap(), 4);
        assert_eq!(a.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"back");
    }

    #[test]
    fn a_full_direction_pushes_back_and_room_is_a_writable_edge() {
        let (mut a, mut b) = pipe_with_capacity(8);
        a.take_edges();
        assert_eq!(a.write(b"0123456789").unwrap(), 8);
        assert!(would_block(a.write(b"x")));
        assert!(!a.pending_edges().writable);
        let mut buf = [0u8; 3];
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        assert!(a.take_edges().writable);
        // Only once per time it was found full.
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        assert!(!a.take_edges().writable);
        assert_eq!(a.write(b"abcdefgh").unwrap(), 6);
        let mut all = [0u8; 16];
        assert_eq!(b.read(&mut all).unwrap(), 8);
        assert_eq!(&all[..8], b"67abcdef");
    }

    #[test]
    fn writes_and_shutdowns_are_readable_edges_once() {
        let (mut a, b) = pipe();
        assert!(!b.take_edges().any());
        a.write_all(b"x").unwrap();
        a.write_all(b"y").unwrap();
        let e = b.take_edges();
        assert!(e.readable && !e.writable);
        assert!(!b.take_edges().any());
        a.shutdown(Shutdown::Write).unwrap();
        assert!(b.take_edges().readable);
        assert!(b.read_closed());
    }

    #[test]
    fn a_half_close_reads_as_eof_after_the_bytes() {
        let (mut a, mut b) = pipe();
        a.write_all(b"last").unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            a.write(b"more").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let mut buf = [0u8; 16];
        assert_eq!(b.read(&mut buf).unwrap(), 4);
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        // The other direction still works.
        b.write_all(b"reply").unwrap();
        assert_eq!(a.read(&mut buf).unwrap(), 5);
    }

    #[test]
    fn a_closed_end_breaks_the_peers_writes_but_leaves_its_bytes() {
        let (mut a, mut b) = pipe();
        a.write_all(b"bye").unwrap();
        b.take_edges();
        drop(a);
        let e = b.take_edges();
        assert!(e.readable && e.writable);
        assert!(b.peer_gone());
        let mut buf = [0u8; 16];
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        assert_eq!(b.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_connect_completes_or_fails_when_the_other_side_says() {
        let (mut a, b) = connecting();
        assert!(!a.is_connected());
        assert!(!a.take_edges().any());
        assert_eq!(
            a.write(b"x").unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        b.accept_connect();
        assert!(a.is_connected());
        assert!(a.take_edges().writable);
        assert!(a.take_error().is_none());

        let (a, b) = connecting();
        b.refuse_connect();
        assert!(!a.is_connected());
        assert!(a.take_edges().any());
        assert_eq!(
            a.take_error().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
        assert!(a.take_error().is_none());
    }

    #[test]
    fn edges_come_in_the_order_they_were_raised() {
        let (mut a1, b1) = pipe();
        let (mut a2, b2) = pipe();
        a2.write_all(b"first").unwrap();
        a1.write_all(b"second").unwrap();
        a2.write_all(b"third").unwrap();
        assert!(b2.pending_edges().since < b1.pending_edges().since);
    }
}

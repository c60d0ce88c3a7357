//! Sockets and buffers shared by client and backend connections.

use std::io::{self, Read, Write};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// A connected socket: TCP or a Unix-domain stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Non-blocking connect is complete once the socket has a peer.
    pub fn is_connected(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.peer_addr().is_ok(),
            Stream::Unix(s) => s.peer_addr().is_ok(),
        }
    }

    /// Who is at the other end, read once when the connection is accepted.
    pub fn peer(&self) -> Peer {
        match self {
            Stream::Tcp(s) => Peer::Tcp(s.peer_addr().ok()),
            Stream::Unix(_) => Peer::Unix,
        }
    }
}

/// The other end of a client connection, as logs and `'user'@'host'` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// None when the kernel could no longer say (the peer already left).
    Tcp(Option<std::net::SocketAddr>),
    Unix,
}

impl Peer {
    /// Address and port (for logs).
    pub fn description(&self) -> String {
        match self {
            Peer::Tcp(Some(a)) => a.to_string(),
            Peer::Tcp(None) => "?".into(),
            Peer::Unix => "unix socket".into(),
        }
    }

    /// The host part mysqld would show in `'user'@'host'`.
    pub fn host(&self) -> String {
        match self {
            Peer::Tcp(Some(a)) => a.ip().to_string(),
            Peer::Tcp(None) => "unknown".into(),
            Peer::Unix => "localhost".into(),
        }
    }

    /// The host column of mysqld's process list: `address:port`, or
    /// `localhost` for a unix socket.
    pub fn processlist_host(&self) -> String {
        match self {
            Peer::Unix => "localhost".into(),
            _ => self.description(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// What a read attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read this many bytes and the socket has no more for now.
    Drained(usize),
    /// Stopped at the cap; more may be waiting (readiness must be remembered).
    Capped(usize),
    /// The peer closed its side (after the bytes counted here, if any).
    Closed(usize),
}

/// Size of the chunks read from a socket into a connection buffer.
pub const READ_CHUNK: usize = 16 * 1024;

/// A byte buffer with a read position, so consuming the front is O(1) and
/// reading from a socket needs no zero-filling: the backing memory stays
/// initialised for the buffer's life.
#[derive(Debug, Default)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub const fn new() -> Self {
        Buf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of backing memory held.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Drop `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Make room for `n` more bytes at the end.
    pub fn reserve(&mut self, n: usize) {
        if self.data.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() - self.end >= n {
                return;
            }
        }
        let want = (self.end + n).max(self.data.len() * 2).max(1024);
        self.data.resize(want, 0);
    }

    /// Room for at least `n` more bytes at the end, to be filled in place
    /// and then counted with [`Buf::filled`].
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        self.reserve(n);
        &mut self.data[self.end..]
    }

    /// `n` bytes of [`Buf::spare`] were filled.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Give back backing memory the bytes held no longer need: once they
    /// fill at most half of it, keep one and a half times their size (at
    /// least `floor`). With growth by doubling, a buffer so never holds
    /// more than twice its bytes (or `floor`), and the room left keeps a
    /// buffer that is filled and drained at once from copying back and
    /// forth on every write. Returns whether it shrank.
    pub fn shrink_to_pending(&mut self, floor: usize) -> bool {
        let len = self.len();
        let target = (len + len / 2).max(floor);
        if len * 2 > self.data.len() || target >= self.data.len() {
            return false;
        }
        self.data.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = len;
        self.data.truncate(target);
        self.data.shrink_to_fit();
        true
    }

    /// Read from `stream` until it would block, the peer closes, or `cap`
    /// bytes were read (so one busy connection cannot starve the loop).
    ///
    /// With `stop_on_short`, a read that returns less than asked for ends
    /// the loop (see below); callers pass false when the peer may have
    /// closed, so the close is seen now rather than never.
    pub fn read_from<R: Read>(
        &mut self,
        stream: &mut R,
        cap: usize,
        stop_on_short: bool,
    ) -> io::Result<ReadOutcome> {
        let mut total = 0;
        loop {
            if total >= cap {
                return Ok(ReadOutcome::Capped(total));
            }
            if self.data.len() - self.end < READ_CHUNK / 4 {
                self.reserve(READ_CHUNK);
            }
            let room = self.data.len() - self.end;
            match stream.read(&mut self.data[self.end..]) {
                Ok(0) => return Ok(ReadOutcome::Closed(total)),
                Ok(n) => {
                    self.end += n;
                    total += n;
                    if stop_on_short && n < room {
                        // The socket had less than we asked for: it is empty
                        // now, and under edge-triggered polling new data
                        // brings a new event, so skip the read that would
                        // only say WouldBlock (one syscall per event saved).
                        return Ok(ReadOutcome::Drained(total));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::Drained(total))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Write as much as the socket takes, consuming what was written.
    /// Returns true when the buffer is empty afterwards.
    pub fn write_to<W: Write>(&mut self, stream: &mut W) -> io::Result<bool> {
        while !self.is_empty() {
            match stream.write(self.as_slice()) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Backing memory lent to connections while they have bytes pending, so an
/// idle client holds no buffer at all and a busy one reuses memory instead
/// of allocating per packet.
pub struct BufPool {
    free: Vec<Vec<u8>>,
    /// Buffers at most this large go back to the pool; larger ones are freed
    /// so one huge result does not keep its memory forever.
    keep_capacity: usize,
    max_free: usize,
}

impl BufPool {
    pub fn new(keep_capacity: usize, max_free: usize) -> Self {
        BufPool {
            free: Vec::new(),
            keep_capacity,
            max_free,
        }
    }

    /// Give `buf` backing memory from the pool if it has none.
    pub fn ensure(&mut self, buf: &mut Buf) {
        if buf.data.is_empty() {
            if let Some(b) = self.free.pop() {
                buf.data = b;
            }
        }
    }

    /// Take `buf`'s memory back if it holds no bytes.
    pub fn release(&mut self, buf: &mut Buf) {
        if buf.is_empty() && !buf.data.is_empty() {
            let b = std::mem::take(&mut buf.data);
            buf.clear();
            if b.len() <= self.keep_capacity && self.free.len() < self.max_free {
                self.free.push(b);
            }
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buf_consume_and_compact() {
        let mut b = Buf::new();
        b.extend_from_slice(b"hello world");
        b.consume(6);
        assert_eq!(b.as_slice(), b"world");
        b.reserve(b.capacity()); // forces a compaction and growth
        b.extend_from_slice(b"!");
        assert_eq!(b.as_slice(), b"world!");
        b.consume(100);
        assert!(b.is_empty());
    }

    #[test]
    fn shrink_follows_the_bytes_held() {
        let mut b = Buf::new();
        b.extend_from_slice(&[7u8; 10_000]);
        let grown = b.capacity();
        assert_eq!(grown, 10_000);
        // More than half full: kept.
        b.consume(4_000);
        assert!(!b.shrink_to_pending(1024));
        assert_eq!(b.capacity(), grown);
        // At most half full: one and a half times the bytes held, which
        // are intact.
        b.consume(999);
        assert_eq!(b.len(), 5_001);
        assert!(!b.shrink_to_pending(1024));
        b.consume(1_001);
        assert!(b.shrink_to_pending(1024));
        assert_eq!(b.capacity(), 6_000);
        assert_eq!(b.len(), 4_000);
        b.consume(3_990);
        b.extend_from_slice(&[9u8; 3]);
        assert!(b.as_slice()[..10].iter().all(|&x| x == 7));
        assert_eq!(&b.as_slice()[10..], &[9, 9, 9]);
        // Never below the floor, and not at all once there.
        assert!(b.shrink_to_pending(2048));
        assert_eq!(b.capacity(), 2048);
        assert_eq!(b.as_slice(), &[7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 9, 9, 9]);
        assert!(!b.shrink_to_pending(2048));
        // Filling what was left room for does not grow it again.
        b.extend_from_slice(&[1u8; 2035]);
        assert_eq!(b.capacity(), 2048);
        b.extend_from_slice(&[1u8; 1]);
        assert_eq!(b.capacity(), 4096);
        assert_eq!(b.len(), 2049);
        // An empty buffer shrinks to the floor.
        b.clear();
        assert!(b.shrink_to_pending(1024));
        assert_eq!(b.capacity(), 1024);
        assert!(b.is_empty());
    }

    #[test]
    fn pool_lends_and_takes_back() {
        let mut pool = BufPool::new(64 * 1024, 4);
        let mut b = Buf::new();
        b.extend_from_slice(b"x");
        b.consume(1);
        pool.release(&mut b);
        assert_eq!(b.capacity(), 0);
        assert_eq!(pool.free_count(), 1);
        pool.ensure(&mut b);
        assert!(b.capacity() > 0);
        assert_eq!(pool.free_count(), 0);
    }
}

//! TLS on a connection of the I/O layer: rustls between the socket and the
//! engine's buffers. Reads decrypt into the engine's read buffer, writes
//! encrypt from its write buffer, so the engine sees plaintext exactly as
//! on a plain connection. The engine only says when to start (its
//! `StartClientTls` / `StartBackendTls` actions) and, for a backend, hears
//! when the handshake completed.
//!
//! Bounded like a socket: plaintext is taken from the engine's buffer only
//! while the encrypted bytes before it have gone out, so a client that
//! does not read holds at most one chunk of records here and the engine's
//! backpressure (pending output in its buffer) works as without TLS.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::io::{Buf, ReadOutcome};
use crate::tls::io_error;

/// Plaintext encrypted in one go from the engine's buffer (four records).
const WRITE_CHUNK: usize = 64 * 1024;

pub struct TlsConn {
    conn: rustls::Connection,
    /// The handshake was seen complete (and said so, once).
    handshake_done: bool,
}

impl TlsConn {
    /// The funnel as the server of a client that asked for TLS;
    /// `received` is what it sent after its SSL request.
    pub fn server(config: Arc<rustls::ServerConfig>, received: &[u8]) -> io::Result<TlsConn> {
        let conn = rustls::ServerConnection::new(config).map_err(io_error)?;
        let mut tls = TlsConn {
            conn: rustls::Connection::Server(conn),
            handshake_done: false,
        };
        let mut rest = received;
        while !rest.is_empty() {
            if tls.conn.read_tls(&mut rest)? == 0 {
                break;
            }
            tls.conn.process_new_packets().map_err(io_error)?;
        }
        Ok(tls)
    }

    /// The funnel as the client of mysqld.
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsConn> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io_error)?;
        Ok(TlsConn {
            conn: rustls::Connection::Client(conn),
            handshake_done: false,
        })
    }

    /// True once, when the handshake has just been seen complete.
    pub fn handshake_news(&mut self) -> bool {
        if self.handshake_done || self.conn.is_handshaking() {
            return false;
        }
        self.handshake_done = true;
        true
    }

    /// Write the encrypted bytes waiting (handshake messages, records,
    /// alerts). True when none is left.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// As `Buf::read_from`, the plaintext: read the socket until it would
    /// block, the peer closes or `cap` plaintext bytes were read, decrypting
    /// into `rbuf` (and answering the handshake meanwhile).
    pub fn read_into<S: Read + Write>(
        &mut self,
        sock: &mut S,
        rbuf: &mut Buf,
        cap: usize,
    ) -> io::Result<ReadOutcome> {
        let mut total = 0;
        let mut eof = false;
        loop {
            // What rustls has decrypted already (left by an earlier read
            // stopped at its cap, or just now).
            match rbuf.read_from(&mut self.conn.reader(), cap - total, false) {
                Ok(ReadOutcome::Drained(n)) => total += n,
                Ok(ReadOutcome::Capped(n)) => return Ok(ReadOutcome::Capped(total + n)),
                // close_notify: the peer closed its side cleanly.
                Ok(ReadOutcome::Closed(n)) => return Ok(ReadOutcome::Closed(total + n)),
                // The socket closed without close_notify, as many clients
                // close: the same to the engine.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(ReadOutcome::Closed(total))
                }
                Err(e) => return Err(e),
            }
            if total >= cap {
                return Ok(ReadOutcome::Capped(total));
            }
            if eof {
                return Ok(ReadOutcome::Closed(total));
            }
            match self.conn.read_tls(sock) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flush(sock)?;
                    return Ok(ReadOutcome::Drained(total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // The alert saying why, if the socket takes it.
                let _ = self.flush(sock);
                return Err(io_error(e));
            }
            // Handshake answers are written at once.
            self.flush(sock)?;
        }
    }

    /// As `Buf::write_to`: encrypt and write the engine's pending output,
    /// consuming what was encrypted, as far as the socket takes it. True
    /// when everything (the buffer and the records) went out.
    pub fn write_from<S: Write>(&mut self, sock: &mut S, wbuf: &mut Buf) -> io::Result<bool> {
        loop {
            if !self.flush(sock)? {
                return Ok(false);
            }
            if wbuf.is_empty() {
                return Ok(true);
            }
            if self.conn.is_handshaking() {
                // Nothing is written before the handshake is done (the
                // engine does not), and rustls would buffer it unbounded.
                return Ok(false);
            }
            let n = wbuf.len().min(WRITE_CHUNK);
            let taken = self.conn.writer().write(&wbuf.as_slice()[..n])?;
            wbuf.consume(taken);
            if taken == 0 {
                return Ok(false);
            }
        }
    }

    /// Before a close: `last_words` (an error for the client, if any) and
    /// close_notify, in one attempt.
    pub fn close<S: Write>(&mut self, sock: &mut S, last_words: &[u8]) {
        if !last_words.is_empty() && !self.conn.is_handshaking() {
            let _ = self.conn.writer().write_all(last_words);
        }
        self.conn.send_close_notify();
        let _ = self.flush(sock);
    }
}

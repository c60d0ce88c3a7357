//! Moving bytes between a connection and the engine's buffers, once for
//! both I/O layers and both sides: each layer only says how to reach a
//! connection's byte stream (a socket with or without TLS; a pipe in the
//! simulation) through [`Connections`], and the engine does the rest
//! (which buffer, whether it may read or write now, what to tell itself
//! after).

use std::io;

use super::action::ConnId;
use super::event_loop::READ_CAP_PER_EVENT;
use super::io::{Buf, ReadOutcome};
use super::Engine;

/// Whose connection it is. The engine may have let go of it (and reused
/// the key) before its close is carried out: the serial tells.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner {
    Client {
        key: usize,
        serial: u64,
    },
    Backend {
        key: usize,
        serial: u64,
    },
    /// Accepted and refused, closing.
    Nobody,
}

/// A connection's byte stream as an I/O layer holds it.
pub(crate) trait Transport {
    /// Write from `wbuf`, consuming what went out: true when nothing is
    /// left to write (TLS records included).
    fn send(&mut self, wbuf: &mut Buf) -> io::Result<bool>;
    /// Read into `rbuf`, at most `cap` bytes (see `Buf::read_from`).
    fn receive(
        &mut self,
        rbuf: &mut Buf,
        cap: usize,
        stop_on_short: bool,
    ) -> io::Result<ReadOutcome>;
    /// Its TLS handshake completed since last asked.
    fn handshake_news(&mut self) -> bool {
        false
    }
    /// Whether a connect in progress has completed (an error: it failed).
    fn connect_done(&self) -> io::Result<bool>;
}

/// An I/O layer's connections, by the ids the engine knows them by.
pub(crate) trait Connections {
    type Transport<'a>: Transport
    where
        Self: 'a;
    fn transport(&mut self, conn: ConnId) -> Option<Self::Transport<'_>>;
    /// Whose it is (None: closed already).
    fn owner(&self, conn: ConnId) -> Option<Owner>;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

impl Engine {
    /// The layer's connection `conn` is readable and/or writable: complete
    /// a connect in progress, write what is pending, read what came.
    pub(crate) fn conn_event(
        &mut self,
        conn: ConnId,
        readable: bool,
        writable: bool,
        stop_on_short: bool,
        conns: &mut impl Connections,
    ) {
        let Some(owner) = conns.owner(conn) else {
            return;
        };
        match owner {
            Owner::Client { key, serial } => {
                if !self.client_is(key, serial) {
                    return;
                }
                if writable {
                    self.write_out(Side::Client, key, conns);
                }
                if readable {
                    self.read_in(Side::Client, key, stop_on_short, conns);
                }
            }
            Owner::Backend { key, serial } => {
                if !self.backend_is(key, serial) {
                    return;
                }
                if self.backend_awaits_connect(key) {
                    if !writable && !readable {
                        return;
                    }
                    let Some(t) = conns.transport(conn) else {
                        return;
                    };
                    match t.connect_done() {
                        Ok(true) => self.backend_connected(key),
                        Ok(false) => return, // spurious wake-up: still connecting
                        Err(e) => {
                            self.backend_open_failed(key, e);
                            return;
                        }
                    }
                }
                if writable {
                    self.write_out(Side::Backend, key, conns);
                }
                if readable || writable {
                    self.read_in(Side::Backend, key, stop_on_short, conns);
                }
            }
            Owner::Nobody => {}
        }
    }

    /// Write the client's pending output (`FlushClient`).
    pub(crate) fn write_client_out(&mut self, key: usize, conns: &mut impl Connections) {
        self.write_out(Side::Client, key, conns);
    }

    /// Write the backend's pending output (`FlushBackend`).
    pub(crate) fn write_backend_out(&mut self, key: usize, conns: &mut impl Connections) {
        self.write_out(Side::Backend, key, conns);
    }

    /// Read what the client sent (`ReadClient`).
    pub(crate) fn read_client_in(
        &mut self,
        key: usize,
        stop_on_short: bool,
        conns: &mut impl Connections,
    ) {
        self.read_in(Side::Client, key, stop_on_short, conns);
    }

    /// Read what mysqld sent (`ReadBackend`).
    pub(crate) fn read_backend_in(
        &mut self,
        key: usize,
        stop_on_short: bool,
        conns: &mut impl Connections,
    ) {
        self.read_in(Side::Backend, key, stop_on_short, conns);
    }

    // Inlined into each caller, where `side` is a constant: the branches on
    // it fold away, as in a path written once per side.
    #[inline(always)]
    fn write_out(&mut self, side: Side, key: usize, conns: &mut impl Connections) {
        if side == Side::Backend && !self.backend_may_write(key) {
            return;
        }
        let output = match side {
            Side::Client => self.client_output(key),
            Side::Backend => self.backend_output(key),
        };
        let Some((conn, wbuf)) = output else {
            return;
        };
        let before = wbuf.len();
        let result = match conns.transport(conn) {
            Some(mut t) => t.send(wbuf),
            None => Err(io::Error::other("connection gone")),
        };
        let written = before - wbuf.len();
        match side {
            Side::Client => self.client_written(key, result.map(|_| written)),
            Side::Backend => self.backend_written(key, result.map(|_| written)),
        }
    }

    #[inline(always)]
    fn read_in(
        &mut self,
        side: Side,
        key: usize,
        stop_on_short: bool,
        conns: &mut impl Connections,
    ) {
        let (may, conn) = match side {
            Side::Client => (self.client_may_read(key), self.client_conn(key)),
            Side::Backend => (self.backend_may_read(key), self.backend_conn(key)),
        };
        let Some(conn) = conn.filter(|_| may) else {
            return;
        };
        let Some(mut t) = conns.transport(conn) else {
            return;
        };
        let rbuf = match side {
            Side::Client => self.client_rbuf(key),
            Side::Backend => self.backend_rbuf(key),
        };
        let Some(rbuf) = rbuf else {
            return;
        };
        let outcome = t.receive(rbuf, READ_CAP_PER_EVENT, stop_on_short);
        // A backend's login goes on once its TLS handshake is done.
        let tls_ready = side == Side::Backend && outcome.is_ok() && t.handshake_news();
        drop(t);
        match side {
            Side::Client => self.client_read_done(key, outcome),
            Side::Backend => {
                self.backend_read_done(key, outcome);
                if tls_ready && self.backend_conn(key) == Some(conn) {
                    self.backend_tls_ready(key);
                }
            }
        }
    }
}

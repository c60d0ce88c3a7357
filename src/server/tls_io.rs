//! TLS on a connection of the I/O layer: rustls between the socket and the
//! engine's buffers. Reads decrypt into the engine's read buffer, writes
//! encrypt from its write buffer, so the engine sees plaintext exactly as
//! on a plain connection. The engine only says when to start (its
//! `StartClientTls` / `StartBackendTls` actions) and, for a backend, hears
//! when the handshake completed.
//!
//! rustls's unbuffered API: the connection keeps its state and keys, and
//! the bytes in transit are in this module's buffers, lent from the I/O
//! layer's buffer pool while they hold anything. So an idle TLS client
//! holds no buffer at all (rustls's buffered `ServerConnection` keeps a
//! 4 KiB receive buffer per connection for good). Once a client's
//! handshake is done, rustls hands its keys over and is dropped: the
//! records are then `tls_record`'s, which keeps raw keys only (as kTLS
//! would). Backend connections (few) stay with rustls throughout.
//!
//! Bounded like a socket: plaintext is taken from the engine's buffer only
//! while the encrypted bytes before it have gone out, so a client that
//! does not read holds at most one chunk of records here and the engine's
//! backpressure (pending output in its buffer) works as without TLS.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus,
};

use super::io::{Buf, BufPool, ReadOutcome};
use crate::tls::io_error;
use crate::tls_record::{self, Alert, Session};

/// Plaintext encrypted in one go from the engine's buffer (four records).
const WRITE_CHUNK: usize = 64 * 1024;
/// Room for the records of one chunk beyond its plaintext (a TLS 1.2
/// record adds 29 bytes, a TLS 1.3 one 22).
const RECORD_OVERHEAD: usize = 64;

/// Boxed while handshaking, so that what is kept after it is small.
enum Side {
    Server(Box<UnbufferedServerConnection>),
    Client(Box<UnbufferedClientConnection>),
    /// A client's connection after its handshake.
    Records(Session),
    /// Only while the keys are handed over.
    HandingOver,
}

/// `process_tls_records`, which rustls has for each side separately.
trait Records<Data> {
    /// The handshake done, the records are to be ours (a client's).
    const HAND_OVER: bool;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Data>;
}

impl Records<ServerConnectionData> for UnbufferedConnectionCommon<ServerConnectionData> {
    const HAND_OVER: bool = true;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Records<ClientConnectionData> for UnbufferedConnectionCommon<ClientConnectionData> {
    const HAND_OVER: bool = false;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// What to do with the engine's output in one round of records.
enum Plain<'a> {
    /// Nothing to encrypt.
    None,
    /// Encrypt (a chunk of) this, consuming what was.
    Encrypt(&'a mut Buf),
    /// close_notify, after these last words if the handshake is done.
    Close(&'a [u8]),
}

/// Where processing stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// More records from the peer are needed (handshake, or traffic).
    NeedInput,
    /// The engine's output was taken (all, or one chunk).
    Encrypted,
    /// Both sides said close_notify.
    Closed,
    /// A client's handshake is done: its records are to be ours.
    HandOver,
}

pub struct TlsConn {
    side: Side,
    transit: Transit,
}

/// The records in transit, and what they said so far (whichever side).
struct Transit {
    /// Records received, not yet processed (a partial one, mostly).
    incoming: Buf,
    /// Records to send, not yet taken by the socket.
    outgoing: Buf,
    /// The handshake completed (application data may flow).
    established: bool,
    /// ... and the I/O layer was told so.
    told: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
}

impl TlsConn {
    fn new(side: Side) -> TlsConn {
        TlsConn {
            side,
            transit: Transit {
                incoming: Buf::new(),
                outgoing: Buf::new(),
                established: false,
                told: false,
                peer_closed: false,
            },
        }
    }

    /// The funnel as the server of a client that asked for TLS;
    /// `received` is what it sent after its SSL request (the start of its
    /// handshake), processed at once: call `flush` next.
    pub fn server(
        config: Arc<rustls::ServerConfig>,
        received: &[u8],
        pool: &mut BufPool,
    ) -> io::Result<TlsConn> {
        let conn = UnbufferedServerConnection::new(config).map_err(io_error)?;
        let mut tls = TlsConn::new(Side::Server(Box::new(conn)));
        pool.ensure(&mut tls.transit.incoming);
        tls.transit.incoming.extend_from_slice(received);
        let mut ignored = Buf::new();
        tls.records(&mut ignored, Plain::None, pool)?;
        Ok(tls)
    }

    /// The funnel as the client of mysqld (its ClientHello is ready: call
    /// `flush` next).
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        pool: &mut BufPool,
    ) -> io::Result<TlsConn> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(io_error)?;
        let mut tls = TlsConn::new(Side::Client(Box::new(conn)));
        let mut ignored = Buf::new();
        tls.records(&mut ignored, Plain::None, pool)?;
        Ok(tls)
    }

    /// True once, when the handshake has just been seen complete.
    pub fn handshake_news(&mut self) -> bool {
        if self.transit.told || !self.transit.established {
            return false;
        }
        self.transit.told = true;
        true
    }

    /// Write the records waiting. True when none is left.
    pub fn flush<S: Write>(&mut self, sock: &mut S, pool: &mut BufPool) -> io::Result<bool> {
        let done = self.transit.outgoing.write_to(sock);
        pool.release(&mut self.transit.outgoing);
        done
    }

    /// As `Buf::read_from` for the plaintext: read the socket (at most
    /// `cap` bytes of records; `stop_on_short` as there) and decrypt what
    /// came into `rbuf`, answering the handshake meanwhile.
    pub fn read_into<S: Read + Write>(
        &mut self,
        sock: &mut S,
        rbuf: &mut Buf,
        cap: usize,
        stop_on_short: bool,
        pool: &mut BufPool,
    ) -> io::Result<ReadOutcome> {
        pool.ensure(&mut self.transit.incoming);
        let before = rbuf.len();
        let read = self.transit.incoming.read_from(sock, cap, stop_on_short);
        let processed = self.records(rbuf, Plain::None, pool);
        pool.release(&mut self.transit.incoming);
        let plain = rbuf.len() - before;
        let read = read?;
        if let Err(e) = processed {
            // The alert saying why, if the socket takes it.
            let _ = self.flush(sock, pool);
            return Err(e);
        }
        // Handshake answers go out at once.
        self.flush(sock, pool)?;
        Ok(match read {
            _ if self.transit.peer_closed => ReadOutcome::Closed(plain),
            ReadOutcome::Drained(_) => ReadOutcome::Drained(plain),
            ReadOutcome::Capped(_) => ReadOutcome::Capped(plain),
            ReadOutcome::Closed(_) => ReadOutcome::Closed(plain),
        })
    }

    /// As `Buf::write_to`: encrypt and write the engine's pending output,
    /// consuming what was encrypted, as far as the socket takes it. True
    /// when everything (the buffer and the records) went out.
    pub fn write_from<S: Write>(
        &mut self,
        sock: &mut S,
        wbuf: &mut Buf,
        pool: &mut BufPool,
    ) -> io::Result<bool> {
        loop {
            if !self.flush(sock, pool)? {
                return Ok(false);
            }
            if wbuf.is_empty() {
                return Ok(true);
            }
            let mut stash = Buf::new();
            let stop = self.records(&mut stash, Plain::Encrypt(wbuf), pool)?;
            if !stash.is_empty() {
                // Records are processed as they are read, so none is
                // complete and unread here.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: unexpected application data",
                ));
            }
            match stop {
                Stop::Encrypted => {}
                Stop::NeedInput => {
                    // Not before the handshake is done (the engine does
                    // not write before; a reply to the peer is flushed).
                    self.flush(sock, pool)?;
                    return Ok(false);
                }
                Stop::Closed | Stop::HandOver => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "TLS connection closed",
                    ))
                }
            }
        }
    }

    /// Before a close: `last_words` (an error for the client, if any) and
    /// close_notify, in one attempt.
    pub fn close<S: Write>(&mut self, sock: &mut S, last_words: &[u8], pool: &mut BufPool) {
        let mut stash = Buf::new();
        let _ = self.records(&mut stash, Plain::Close(last_words), pool);
        let _ = self.flush(sock, pool);
    }

    /// Run rustls over the records received until it needs more of them,
    /// encrypting `plain` once it may: decrypted data goes to `rbuf`,
    /// records to send to `outgoing`.
    fn records(
        &mut self,
        rbuf: &mut Buf,
        mut plain: Plain,
        pool: &mut BufPool,
    ) -> io::Result<Stop> {
        loop {
            let stop = match &mut self.side {
                Side::Server(c) => drive(c, &mut self.transit, rbuf, &mut plain, pool)?,
                Side::Client(c) => drive(c, &mut self.transit, rbuf, &mut plain, pool)?,
                Side::Records(session) => {
                    return own_records(session, &mut self.transit, rbuf, plain, pool)
                }
                Side::HandingOver => {
                    return Err(io::Error::other("TLS: keys lost in the hand-over"))
                }
            };
            if stop != Stop::HandOver {
                return Ok(stop);
            }
            let Side::Server(conn) = std::mem::replace(&mut self.side, Side::HandingOver) else {
                return Err(io::Error::other("TLS: hand-over of a backend connection"));
            };
            let session = Session::new(*conn).map_err(io::Error::other)?;
            self.side = Side::Records(session);
        }
    }
}

/// A client's records after its handshake: open what came (with
/// `Plain::None`), else seal the engine's output; a KeyUpdate owed to the
/// client goes out either way. On an error, its alert is queued for the
/// caller's flush.
fn own_records(
    session: &mut Session,
    transit: &mut Transit,
    rbuf: &mut Buf,
    plain: Plain,
    pool: &mut BufPool,
) -> io::Result<Stop> {
    let Transit {
        incoming,
        outgoing,
        peer_closed,
        ..
    } = transit;
    seal_and_open(session, incoming, outgoing, peer_closed, rbuf, plain, pool).map_err(|fatal| {
        if let Some(alert) = fatal.alert {
            pool.ensure(outgoing);
            let n = session.seal_alert(alert, outgoing.spare(tls_record::ALERT_RECORD_LEN));
            outgoing.filled(n);
        }
        io::Error::new(io::ErrorKind::InvalidData, fatal)
    })
}

fn seal_and_open(
    session: &mut Session,
    incoming: &mut Buf,
    outgoing: &mut Buf,
    peer_closed: &mut bool,
    rbuf: &mut Buf,
    plain: Plain,
    pool: &mut BufPool,
) -> Result<Stop, tls_record::Fatal> {
    match plain {
        Plain::None => {
            if !incoming.is_empty() && !*peer_closed {
                let opened =
                    session.open(incoming.as_mut_slice(), |data| rbuf.extend_from_slice(data))?;
                incoming.consume(opened.consumed);
                if opened.peer_closed {
                    *peer_closed = true;
                    incoming.clear();
                }
            }
            if session.owes_key_update() {
                seal(session, &[], outgoing, pool)?;
            }
            Ok(Stop::NeedInput)
        }
        Plain::Encrypt(wbuf) => {
            let n = wbuf.len().min(WRITE_CHUNK);
            seal(session, &wbuf.as_slice()[..n], outgoing, pool)?;
            wbuf.consume(n);
            Ok(Stop::Encrypted)
        }
        Plain::Close(last_words) => {
            if !last_words.is_empty() {
                seal(session, last_words, outgoing, pool)?;
            }
            pool.ensure(outgoing);
            let n = session.seal_alert(
                Alert::CloseNotify,
                outgoing.spare(tls_record::ALERT_RECORD_LEN),
            );
            outgoing.filled(n);
            Ok(Stop::Closed)
        }
    }
}

/// Seal `data` into `outgoing`.
fn seal(
    session: &mut Session,
    data: &[u8],
    outgoing: &mut Buf,
    pool: &mut BufPool,
) -> Result<(), tls_record::Fatal> {
    pool.ensure(outgoing);
    let n = session.seal(data, outgoing.spare(session.sealed_len(data.len())))?;
    outgoing.filled(n);
    Ok(())
}

fn drive<Data>(
    conn: &mut UnbufferedConnectionCommon<Data>,
    transit: &mut Transit,
    rbuf: &mut Buf,
    plain: &mut Plain,
    pool: &mut BufPool,
) -> io::Result<Stop>
where
    UnbufferedConnectionCommon<Data>: Records<Data>,
{
    let Transit {
        incoming,
        outgoing,
        established,
        peer_closed,
        ..
    } = transit;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(incoming.as_mut_slice());
        let stop = match state.map_err(io_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(io_error)?;
                    discard += record.discard;
                    rbuf.extend_from_slice(record.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                pool.ensure(outgoing);
                let mut room = 512;
                loop {
                    match encode.encode(outgoing.spare(room)) {
                        Ok(n) => {
                            outgoing.filled(n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(e)) => room = e.required_size,
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    }
                }
                None
            }
            // The records are in `outgoing`, which the caller writes.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(Stop::NeedInput),
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                None
            }
            ConnectionState::Closed => Some(Stop::Closed),
            ConnectionState::WriteTraffic(_) if UnbufferedConnectionCommon::<Data>::HAND_OVER => {
                *established = true;
                Some(Stop::HandOver)
            }
            ConnectionState::WriteTraffic(mut traffic) => {
                *established = true;
                match std::mem::replace(plain, Plain::None) {
                    Plain::None => Some(Stop::NeedInput),
                    Plain::Encrypt(wbuf) => {
                        let n = wbuf.len().min(WRITE_CHUNK);
                        pool.ensure(outgoing);
                        let mut room = n + RECORD_OVERHEAD * (n / 16384 + 1);
                        loop {
                            match traffic.encrypt(&wbuf.as_slice()[..n], outgoing.spare(room)) {
                                Ok(written) => {
                                    outgoing.filled(written);
                                    break;
                                }
                                Err(EncryptError::InsufficientSize(e)) => room = e.required_size,
                                Err(e) => {
                                    return Err(io::Error::new(io::ErrorKind::InvalidData, e))
                                }
                            }
                        }
                        wbuf.consume(n);
                        Some(Stop::Encrypted)
                    }
                    Plain::Close(last_words) => {
                        // Best effort, one try each: a record encrypted
                        // into too small a room would be lost along with
                        // its sequence number.
                        pool.ensure(outgoing);
                        let out = outgoing.spare(last_words.len() + 4 * RECORD_OVERHEAD);
                        let n = if last_words.is_empty() {
                            Ok(0)
                        } else {
                            traffic.encrypt(last_words, out)
                        };
                        if let Ok(n) = n {
                            let m = traffic.queue_close_notify(&mut out[n..]).unwrap_or(0);
                            outgoing.filled(n + m);
                        }
                        Some(Stop::Closed)
                    }
                }
            }
            // No early data is accepted (the server configuration allows
            // none), and nothing else is known.
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: unexpected state",
                ))
            }
        };
        incoming.consume(discard);
        if let Some(stop) = stop {
            return Ok(stop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket in memory: reads what the peer sent (WouldBlock when
    /// none), takes at most `room` bytes of writes (then WouldBlock).
    #[derive(Default)]
    struct Sock {
        input: VecDeque<u8>,
        output: Vec<u8>,
        room: usize,
    }

    impl Read for Sock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            for (b, x) in buf.iter_mut().zip(self.input.drain(..n)) {
                *b = x;
            }
            Ok(n)
        }
    }

    impl Write for Sock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.output.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A CA and a certificate for 127.0.0.1 (`tls::test_pki`), as rustls
    /// configurations of both ends.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::test_pki(dir.path());
        let p = |f: &str| dir.path().join(f).display().to_string();
        let server = crate::tls::load_server(&p("s.crt"), &p("s.key")).unwrap();
        let backend = crate::tls::load_backend(
            crate::tls::BackendTlsMode::VerifyIdentity,
            &p("ca.crt"),
            "127.0.0.1",
        )
        .unwrap();
        (server.config, backend.config.unwrap())
    }

    /// Move what `from` wrote into `to`'s input.
    fn carry(from: &mut Sock, to: &mut Sock) {
        to.input.extend(from.output.drain(..));
    }

    #[test]
    fn handshake_from_received_bytes_then_bounded_writes_and_no_buffers_when_idle() {
        let (server_config, client_config) = configs();
        let mut pool = BufPool::new(1 << 20, 8);
        // The funnel as the client of a funnel-as-server: both ends are
        // this module's, over an in-memory socket pair.
        let mut client = TlsConn::client(
            client_config,
            ServerName::try_from("127.0.0.1").unwrap(),
            &mut pool,
        )
        .unwrap();
        let (mut at_client, mut at_server) = (Sock::default(), Sock::default());
        at_client.room = usize::MAX;
        assert!(client.flush(&mut at_client, &mut pool).unwrap());
        // The ClientHello arrived with the SSL request: `received`.
        let hello = std::mem::take(&mut at_client.output);
        let mut server = TlsConn::server(server_config, &hello, &mut pool).unwrap();
        at_server.room = usize::MAX;
        let (mut from_server, mut from_client) = (Buf::new(), Buf::new());
        for _ in 0..10 {
            server.flush(&mut at_server, &mut pool).unwrap();
            carry(&mut at_server, &mut at_client);
            client
                .read_into(&mut at_client, &mut from_server, 1 << 20, false, &mut pool)
                .unwrap();
            carry(&mut at_client, &mut at_server);
            server
                .read_into(&mut at_server, &mut from_client, 1 << 20, false, &mut pool)
                .unwrap();
        }
        assert!(client.handshake_news(), "the client's handshake completed");
        assert!(!client.handshake_news(), "said once");
        // The funnel-as-server's records are its own from here on.
        assert!(matches!(server.side, Side::Records(_)));

        // 300 KB from the server through a socket that takes 10,000 bytes
        // per turn: the plaintext is taken only as the records go out.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut wbuf = Buf::new();
        wbuf.extend_from_slice(&data);
        let mut turns = 0;
        while from_server.len() < data.len() {
            turns += 1;
            assert!(turns < 1000, "stuck at {} bytes", from_server.len());
            at_server.room = 10_000;
            let before = wbuf.len();
            let done = server
                .write_from(&mut at_server, &mut wbuf, &mut pool)
                .unwrap();
            // Never more than one chunk of records waits beyond the socket.
            assert!(before - wbuf.len() <= WRITE_CHUNK);
            assert!(server.transit.outgoing.len() <= WRITE_CHUNK + 4 * RECORD_OVERHEAD);
            assert_eq!(done, wbuf.is_empty() && server.transit.outgoing.is_empty());
            carry(&mut at_server, &mut at_client);
            let got = client
                .read_into(&mut at_client, &mut from_server, 1 << 20, false, &mut pool)
                .unwrap();
            assert!(matches!(got, ReadOutcome::Drained(_)), "{got:?}");
        }
        assert_eq!(from_server.as_slice(), &data[..]);
        // And back, in one go.
        let mut wbuf = Buf::new();
        wbuf.extend_from_slice(b"the other way");
        at_client.room = usize::MAX;
        assert!(client
            .write_from(&mut at_client, &mut wbuf, &mut pool)
            .unwrap());
        carry(&mut at_client, &mut at_server);
        server
            .read_into(&mut at_server, &mut from_client, 1 << 20, false, &mut pool)
            .unwrap();
        assert_eq!(from_client.as_slice(), b"the other way");
        // Idle: no buffer held by either end.
        for t in [&server, &client] {
            assert_eq!(
                (t.transit.incoming.capacity(), t.transit.outgoing.capacity()),
                (0, 0)
            );
        }

        // close_notify: the other end reads a close.
        at_client.room = usize::MAX;
        client.close(&mut at_client, b"", &mut pool);
        carry(&mut at_client, &mut at_server);
        let got = server
            .read_into(&mut at_server, &mut from_client, 1 << 20, false, &mut pool)
            .unwrap();
        assert_eq!(got, ReadOutcome::Closed(0));
    }
}

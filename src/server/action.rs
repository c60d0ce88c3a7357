//! What the engine asks of the I/O layer.
//!
//! The engine (`Engine`, in `mod.rs` and the files beside it) owns every
//! client's and backend's state and buffers, and never touches a socket.
//! Its handlers queue [`Action`]s; the I/O layer (`event_loop.rs`, or the
//! simulation's in-memory one) carries them out after the handler has
//! returned, and reports back through the engine's `*_written`,
//! `*_read_done` and `backend_*` entry points. So no handler ever closes a
//! connection its caller is about to touch: a closed client or backend is
//! gone from the engine at once, and its socket is closed later by the
//! I/O layer, which alone knows sockets.

use crate::config::BackendAddr;

/// A socket of the I/O layer. The engine keeps each connection's, to name
/// it in actions that outlive the connection's state (closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub usize);

impl ConnId {
    /// A backend's until its connect has been carried out.
    pub const NONE: ConnId = ConnId(usize::MAX);
}

/// One thing for the I/O layer to do. Flushes and reads name the engine's
/// object by key and serial: one that is gone (or whose key was reused) by
/// the time the action is carried out is skipped.
#[derive(Debug)]
pub enum Action {
    /// Write the client's pending output, then `Engine::client_written`.
    FlushClient { key: usize, serial: u64 },
    /// Write the backend's pending output, then `Engine::backend_written`.
    FlushBackend { key: usize, serial: u64 },
    /// Read from the client: readiness was left unused (a read stopped at
    /// its cap, or reading resumed after a pause). Then
    /// `Engine::client_read_done`.
    ReadClient { key: usize, serial: u64 },
    /// The same for a backend.
    ReadBackend { key: usize, serial: u64 },
    /// Open a connection for the backend; then `Engine::backend_opened`,
    /// or `Engine::backend_open_failed` when that fails at once.
    Connect {
        key: usize,
        serial: u64,
        addr: BackendAddr,
    },
    /// Close a client's connection after one attempt to write
    /// `last_words` (an error the client should see, if it reads). With
    /// `reset`, the close is abortive (SO_LINGER 0), as mysqld closes a
    /// connection past its wait_timeout.
    CloseClient {
        conn: ConnId,
        last_words: Vec<u8>,
        reset: bool,
    },
    /// Close a backend's connection.
    CloseBackend { conn: ConnId },
    /// Give a client's connection to the funnel taking over (`handoff.rs`),
    /// with its encoded image; without one, just close it (the client is
    /// between commands).
    HandOffClient { conn: ConnId, image: Vec<u8> },
    /// Move a client in its login to loop `to`, which serves its pool
    /// (`loops.rs`): its socket goes with what its login said so far.
    MoveClient {
        conn: ConnId,
        to: usize,
        login: Box<super::loops::MovedLogin>,
    },
    /// Move a client between its commands to loop `to`, which adopts it
    /// from its encoded image (`loops.rs`).
    MoveIdleClient {
        conn: ConnId,
        to: usize,
        image: Vec<u8>,
        /// Its command waited in this loop's backlog since then
        /// (`balance.rs`).
        queued_at: Option<std::time::Instant>,
    },
    /// Hand `msg` to loop `to` (`loops.rs`).
    ToLoop {
        to: usize,
        msg: Box<super::loops::LoopMsg>,
    },
    /// Tell systemd (sd_notify), when it listens.
    Notify(String),
    /// The client asked for TLS (its SSL request): from now on its
    /// connection is TLS with `config` as the server, `received` (what it
    /// sent after its request) being the start of the TLS handshake. The
    /// engine reads and writes plaintext as before; a failed handshake is
    /// a failed read.
    StartClientTls {
        key: usize,
        serial: u64,
        received: Vec<u8>,
        config: std::sync::Arc<rustls::ServerConfig>,
    },
    /// The backend's SSL request is queued: write it, then start TLS as the
    /// client of `server_name`; `Engine::backend_tls_ready` once the TLS
    /// handshake completed (a failed one is a failed read).
    StartBackendTls {
        key: usize,
        serial: u64,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    },
}

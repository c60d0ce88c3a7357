//! Deadlines kept in a binary heap. Timers are never cancelled: each carries
//! the serial of the connection it was set for, and a timer whose connection
//! is gone or has moved on is ignored when it fires.

use std::cmp::Ordering;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// A client must finish its handshake and authentication by now.
    ClientHandshake { key: usize, serial: u64 },
    /// A client that sent its FIN with a command still queued or running.
    ClientHalfClosed { key: usize, serial: u64 },
    /// A logged-in client's `wait_timeout` may be over: one per client in
    /// the heap (`Client::idle_timer_at`), moved on as it keeps busy.
    ClientIdle { key: usize, serial: u64 },
    /// A login held back after failed logins may be checked now.
    ClientAuthHold { key: usize, serial: u64 },
    /// A backend connection must be connected and logged in by now.
    BackendConnect { key: usize, serial: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    pub at: Instant,
    pub kind: TimerKind,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

//! Rate limit for the log lines that remote parties and failures can cause
//! over and over (refused logins, garbage connections, a flapping backend),
//! so that a flood cannot fill the disk: for each kind of event, at most
//! [`LINES_PER_WINDOW`] lines per [`WINDOW`], then, once the window is over,
//! one line saying how many lines of that kind were left out. The stats
//! counters are kept elsewhere and count every event.
//!
//! A window starts at the first event of its kind and lasts [`WINDOW`];
//! the loop's janitor reports windows that ended with lines left out even
//! when no further event of that kind comes. The admin and stats threads
//! have their own counts ([`ThreadLogLimiter`]): the loop shares no lock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::Level;

/// Lines written per kind of event and window; enough to see what happens,
/// few enough that a flood of any one kind costs about one line a second.
pub const LINES_PER_WINDOW: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(10);

/// Kinds of notable events whose lines are rate-limited. Events rare by
/// nature (start, shutdown, admin PAUSE) are logged without a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEvent {
    /// A connection refused: `max_client_connections` reached, TLS asked.
    ClientRefused,
    /// Wrong password or unknown user.
    AuthFailure,
    /// Malformed packets, wrong sequence ids, garbage instead of a handshake.
    BadClientInput,
    HandshakeTimeout,
    /// A client that read none of its output for `client_write_timeout_ms`.
    ClientWriteTimeout,
    /// A packet over `max_allowed_packet`.
    PacketTooLarge,
    BacklogFull,
    QueueTimeout,
    /// `max_pinned_backends` reached: a client's session state discarded.
    PinnedExhausted,
    BackendLost,
    /// A backend connection (or a KILL QUERY one) that could not be opened.
    BackendConnectFailed,
    /// mysqld reachable again after failed connection attempts.
    BackendRestored,
    /// `accept` failed (out of file descriptors): accepting paused.
    AcceptPaused,
    ReloadDone,
    ReloadRefused,
    /// Wrong admin console credentials.
    AdminLoginRefused,
    /// An admin or stats connection not served: too many open, no thread.
    AdminConnectionRefused,
}

impl LogEvent {
    pub const ALL: [LogEvent; 17] = [
        LogEvent::ClientRefused,
        LogEvent::AuthFailure,
        LogEvent::BadClientInput,
        LogEvent::HandshakeTimeout,
        LogEvent::ClientWriteTimeout,
        LogEvent::PacketTooLarge,
        LogEvent::BacklogFull,
        LogEvent::QueueTimeout,
        LogEvent::PinnedExhausted,
        LogEvent::BackendLost,
        LogEvent::BackendConnectFailed,
        LogEvent::BackendRestored,
        LogEvent::AcceptPaused,
        LogEvent::ReloadDone,
        LogEvent::ReloadRefused,
        LogEvent::AdminLoginRefused,
        LogEvent::AdminConnectionRefused,
    ];

    /// How the summary line names the kind.
    pub fn name(self) -> &'static str {
        match self {
            LogEvent::ClientRefused => "client refused",
            LogEvent::AuthFailure => "login refused",
            LogEvent::BadClientInput => "bad client input",
            LogEvent::HandshakeTimeout => "handshake timeout",
            LogEvent::ClientWriteTimeout => "client write timeout",
            LogEvent::PacketTooLarge => "packet over max_allowed_packet",
            LogEvent::BacklogFull => "backlog full",
            LogEvent::QueueTimeout => "queue timeout",
            LogEvent::PinnedExhausted => "max_pinned_backends reached",
            LogEvent::BackendLost => "backend lost",
            LogEvent::BackendConnectFailed => "backend connect failure",
            LogEvent::BackendRestored => "backend reachable again",
            LogEvent::AcceptPaused => "accept paused",
            LogEvent::ReloadDone => "reload",
            LogEvent::ReloadRefused => "reload refused",
            LogEvent::AdminLoginRefused => "admin login refused",
            LogEvent::AdminConnectionRefused => "admin/stats connection refused",
        }
    }

    /// The level of the kind's lines and of its summary line.
    pub fn level(self) -> Level {
        match self {
            LogEvent::BadClientInput
            | LogEvent::HandshakeTimeout
            | LogEvent::BackendRestored
            | LogEvent::ReloadDone => Level::Info,
            _ => Level::Warn,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct KindWindow {
    /// None: no window open (no event of this kind since the last one ended).
    started: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

/// What to do with one event's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Write the line.
    pub log: bool,
    /// Lines of this kind left out in the window that this event found
    /// over and not yet reported: to be reported before the line.
    pub ended_suppressed: u64,
}

pub struct LogLimiter {
    max_lines: u32,
    window: Duration,
    kinds: [KindWindow; LogEvent::ALL.len()],
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LINES_PER_WINDOW, WINDOW)
    }
}

impl LogLimiter {
    pub fn new(max_lines: u32, window: Duration) -> Self {
        LogLimiter {
            max_lines,
            window,
            kinds: [KindWindow::default(); LogEvent::ALL.len()],
        }
    }

    /// An event of `kind` happened at `now`: may its line be written?
    pub fn admit(&mut self, kind: LogEvent, now: Instant) -> Admission {
        let window = self.window;
        let w = &mut self.kinds[kind.index()];
        let mut ended_suppressed = 0;
        if w.started
            .is_some_and(|t| now.saturating_duration_since(t) >= window)
        {
            ended_suppressed = w.suppressed;
            *w = KindWindow::default();
        }
        w.started.get_or_insert(now);
        let log = w.lines < self.max_lines;
        if log {
            w.lines += 1;
        } else {
            w.suppressed += 1;
        }
        Admission {
            log,
            ended_suppressed,
        }
    }

    /// Close the windows that are over at `now`; `report` gets each kind
    /// whose window left lines out, with how many.
    pub fn take_ended(&mut self, now: Instant, mut report: impl FnMut(LogEvent, u64)) {
        for kind in LogEvent::ALL {
            let w = &mut self.kinds[kind.index()];
            if w.started
                .is_some_and(|t| now.saturating_duration_since(t) >= self.window)
            {
                if w.suppressed > 0 {
                    report(kind, w.suppressed);
                }
                *w = KindWindow::default();
            }
        }
    }

    /// Report every count not yet reported, windows over or not (at exit).
    pub fn take_all(&mut self, mut report: impl FnMut(LogEvent, u64)) {
        for kind in LogEvent::ALL {
            let w = &mut self.kinds[kind.index()];
            if w.suppressed > 0 {
                report(kind, w.suppressed);
            }
            *w = KindWindow::default();
        }
    }
}

/// A limiter for threads other than the event loop's, shared among them.
#[derive(Default)]
pub struct ThreadLogLimiter(Mutex<LogLimiter>);

impl ThreadLogLimiter {
    /// Like [`LogLimiter::admit`], writing the ended window's summary line.
    pub fn admit(&self, kind: LogEvent) -> bool {
        let admission = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(kind, Instant::now());
        if admission.ended_suppressed > 0 {
            log_suppressed(kind, admission.ended_suppressed);
        }
        admission.log
    }

    /// Write the summary lines of the windows that are over (call this
    /// about once a second).
    pub fn report_ended(&self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_ended(Instant::now(), log_suppressed);
    }
}

/// The line that reports what a window left out.
pub fn log_suppressed(kind: LogEvent, lines: u64) {
    log::log!(
        kind.level(),
        "{lines} more \"{}\" log lines suppressed (at most {LINES_PER_WINDOW} per {} s for each kind of event; the stats count every event)",
        kind.name(),
        WINDOW.as_secs()
    );
}

/// `log_limited!(server, LogEvent::X, "format", args...)`: write the line
/// unless its kind is over its limit (then it is counted for the summary).
/// The arguments are only evaluated when the line is written.
macro_rules! log_limited {
    ($server:expr, $kind:expr, $($arg:tt)+) => {{
        let kind: $crate::log_limit::LogEvent = $kind;
        let admission = $server.log_limit.admit(kind, $server.now);
        if admission.ended_suppressed > 0 {
            $crate::log_limit::log_suppressed(kind, admission.ended_suppressed);
        }
        if admission.log {
            log::log!(kind.level(), $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(l: &mut LogLimiter, now: Instant) -> Vec<(LogEvent, u64)> {
        let mut out = Vec::new();
        l.take_ended(now, |k, n| out.push((k, n)));
        out
    }

    #[test]
    fn at_most_n_lines_per_window_then_one_summary() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = LogLimiter::new(3, Duration::from_secs(10));
        let logged = (0..1000)
            .filter(|i| l.admit(LogEvent::AuthFailure, ms(*i)).log)
            .count();
        assert_eq!(logged, 3);
        // Not before the window is over, then exactly once.
        assert_eq!(reports(&mut l, ms(9_999)), []);
        assert_eq!(reports(&mut l, ms(10_000)), [(LogEvent::AuthFailure, 997)]);
        assert_eq!(reports(&mut l, ms(10_001)), []);
        assert_eq!(reports(&mut l, ms(60_000)), []);
        // A new window starts with the next event.
        let a = l.admit(LogEvent::AuthFailure, ms(60_000));
        assert_eq!(
            a,
            Admission {
                log: true,
                ended_suppressed: 0
            }
        );
    }

    #[test]
    fn kinds_are_limited_separately() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2, Duration::from_secs(10));
        for _ in 0..5 {
            l.admit(LogEvent::BadClientInput, t0);
        }
        assert!(l.admit(LogEvent::BackendLost, t0).log);
        assert!(l.admit(LogEvent::BackendLost, t0).log);
        assert!(!l.admit(LogEvent::BackendLost, t0).log);
        let mut got = reports(&mut l, t0 + Duration::from_secs(10));
        got.sort_by_key(|(k, _)| k.index());
        assert_eq!(
            got,
            [(LogEvent::BadClientInput, 3), (LogEvent::BackendLost, 1)]
        );
    }

    #[test]
    fn an_event_after_an_unreported_window_reports_it_first() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(1, Duration::from_secs(10));
        assert!(l.admit(LogEvent::QueueTimeout, t0).log);
        assert!(!l.admit(LogEvent::QueueTimeout, t0).log);
        assert!(
            !l.admit(LogEvent::QueueTimeout, t0 + Duration::from_secs(9))
                .log
        );
        let a = l.admit(LogEvent::QueueTimeout, t0 + Duration::from_secs(11));
        assert_eq!(
            a,
            Admission {
                log: true,
                ended_suppressed: 2
            }
        );
        // Reported once: the new window has nothing left out yet.
        assert_eq!(reports(&mut l, t0 + Duration::from_secs(30)), []);
    }

    #[test]
    fn a_window_without_suppressed_lines_reports_nothing() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(10, Duration::from_secs(10));
        for i in 0..10 {
            assert!(
                l.admit(LogEvent::ReloadDone, t0 + Duration::from_secs(i))
                    .log
            );
        }
        assert_eq!(reports(&mut l, t0 + Duration::from_secs(20)), []);
    }

    #[test]
    fn take_all_reports_open_windows() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(1, Duration::from_secs(10));
        l.admit(LogEvent::ClientRefused, t0);
        l.admit(LogEvent::ClientRefused, t0);
        l.admit(LogEvent::HandshakeTimeout, t0);
        let mut out = Vec::new();
        l.take_all(|k, n| out.push((k, n)));
        assert_eq!(out, [(LogEvent::ClientRefused, 1)]);
        assert_eq!(reports(&mut l, t0 + Duration::from_secs(20)), []);
    }

    #[test]
    fn thread_limiter_admits_up_to_the_limit() {
        let l = ThreadLogLimiter::default();
        let admitted = (0..100)
            .filter(|_| l.admit(LogEvent::AdminLoginRefused))
            .count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        assert!(l.admit(LogEvent::AdminConnectionRefused));
    }

    #[test]
    fn kind_table_is_complete_and_in_index_order() {
        for (i, k) in LogEvent::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert!(!k.name().is_empty());
        }
    }
}

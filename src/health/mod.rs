//! Backend health: a checker thread per server asks it, over a connection of
//! its own, whether it is reachable, `read_only`, and for a replica whether
//! it replicates and how far behind it is; [`Rotation`] turns those reports
//! into "takes traffic or not", with hysteresis.
//!
//! # The checks
//! One thread per [`HealthTarget`], the first check at once, then one every
//! `interval` (counted from the start of the previous check; a check longer
//! than the interval is followed by the next at once). Each check sends, on a
//! connection kept open between checks (reopened after any error):
//! - `SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos`;
//! - for a replica, `SHOW ALL SLAVES STATUS` (MariaDB; on error 1064 it falls
//!   back to `SHOW REPLICA STATUS`, then `SHOW SLAVE STATUS`), read by column
//!   name: `Slave_IO_Running`, `Slave_SQL_Running`, `Seconds_Behind_Master`.
//!   With several replication sources, the replica replicates when every
//!   source does, and its lag is the largest.
//!
//! MariaDB only: the positions are MariaDB GTIDs; a MySQL server answers
//! the first query with "Unknown system variable 'gtid_binlog_pos' (1193)"
//! and is reported down with that error.
//!
//! `connect_timeout` bounds the connect, then the login, then each query's
//! answer: a hung server yields a `Down` report at most `connect_timeout`
//! after its first unanswered request, never a stuck thread.
//!
//! # The monitor account
//! It logs in with mysql_native_password, caching_sha2_password (fast
//! path, or full authentication: in clear over a unix socket, RSA-encrypted
//! over TCP) or client_ed25519, **without TLS**. The variables need no
//! privilege; `SHOW ALL SLAVES STATUS` needs, on MariaDB 10.5.9 and later:
//!
//! ```sql
//! CREATE USER 'funnel_monitor'@'funnel-host' IDENTIFIED BY '...';
//! GRANT SLAVE MONITOR ON *.* TO 'funnel_monitor'@'funnel-host';
//! ```
//!
//! (`REPLICA MONITOR` is the same privilege; before 10.5.9, `REPLICATION
//! CLIENT`.) Without it, a replica's checks
//! fail with the server's "Access denied; you need (at least one of) the
//! SUPER, SLAVE MONITOR privilege(s)" and the replica is `Down`.
//!
//! # Rotation rules
//! - A server starts `Unknown`, which counts as in rotation: its first check
//!   runs at once, so the window is one round trip; a server that is down
//!   then is found so by the engine's own connections too. The first good
//!   report makes it `InRotation`.
//! - It goes out at the **first** bad report: the check failed (`Down`: fast
//!   failover), a primary-role server is `read_only` (`ReadOnlyPrimary`), a
//!   replica's replication is not running — IO or SQL thread stopped, or no
//!   `Seconds_Behind_Master` — (`ReplicationStopped`), or a replica lags more
//!   than its `max_lag` (`Lagging`).
//! - It comes back only after [`RISE`] (2) good reports in a row; for a
//!   replica with a `max_lag`, a report is good enough to come back only
//!   when the lag is at most **half** the limit (while in rotation it stays
//!   up to the limit itself), so a replica hovering around its limit does
//!   not flap.
//! - A replica without `max_lag` is never out for lag, but **is** out when
//!   its replication is stopped (unlike ProxySQL, which keeps it unless a
//!   max lag is set): a replica that does not replicate is behind by an
//!   unknown and growing amount, its data never reaches a client's recent
//!   write (read-your-writes would wait on it in vain), and nothing would
//!   ever take it out.
//! - Out of rotation, a report with another reason of the same kind (a new
//!   lag, a new error message) updates the reason without a transition; a
//!   reason of another kind (lagging, then down) is a transition.

mod checker;
mod client;
mod gtid;
mod rotation;

use std::fmt;
use std::time::{Duration, Instant};

pub use checker::{spawn_checkers, Checkers};
pub use gtid::GtidPosition;
pub use rotation::{OutReason, Rotation, RotationState, RISE};

/// What the server is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    Primary,
    Replica,
}

/// A server to check, and how.
#[derive(Clone)]
pub struct HealthTarget {
    /// The engine's index of the server; echoed in reports.
    pub server: usize,
    /// For logs.
    pub name: String,
    pub address: crate::config::BackendAddr,
    pub role: ServerRole,
    /// The monitor account.
    pub user: String,
    pub password: String,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// Bounds the connect, the login and each query's answer.
    pub connect_timeout: Duration,
}

/// Without the password: targets end up in logs.
impl fmt::Debug for HealthTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthTarget")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("address", &self.address)
            .field("role", &self.role)
            .field("user", &self.user)
            .field("interval", &self.interval)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// One check's result.
#[derive(Clone, Debug)]
pub struct HealthReport {
    pub server: usize,
    /// When the check's queries were sent (when it started, for a check that
    /// failed before): the facts are at least as fresh as this.
    pub checked_at: Instant,
    /// From `checked_at` to the end of the check: the queries' round trips
    /// (for a failure: how long it took to fail).
    pub rtt: Duration,
    /// Err: why the server is unreachable, refused the login, or the check
    /// failed.
    pub outcome: Result<ServerFacts, String>,
}

/// What a good check learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    pub read_only: bool,
    /// Replicas: the replication lag, None when replication is not running
    /// (IO or SQL thread stopped, or Seconds_Behind_Master NULL); primaries:
    /// None.
    pub lag: Option<Duration>,
    /// A replica whose IO and SQL threads both run (for every source).
    pub replicating: bool,
    /// `@@gtid_binlog_pos` for a primary, `@@gtid_slave_pos` for a replica.
    pub gtid: GtidPosition,
}

//! Which of a pool's servers may run a command: all of them, unless the
//! user has `read_write_split`, where reads outside a transaction go to
//! replicas and everything else to primaries, and a client's reads follow
//! its writes to the primary until a replica has caught up with them. A
//! matching `[rule] route` overrides the split's choice: `primary` always,
//! `replica` for plain reads only.

use std::time::Instant;

use super::backend_server::BackendServer;
use super::client::Client;
use super::pool::Pool;
use super::Engine;
use crate::config::ServerRole;
use crate::protocol::consts::{
    COM_QUERY, COM_STMT_BULK_EXECUTE, COM_STMT_EXECUTE, SERVER_STATUS_IN_TRANS,
};

/// The servers a command may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route {
    primary: bool,
    replica: bool,
    /// Replicas only once the primary's state after this time is applied
    /// there (the client's last write completed then).
    fresh_after: Option<Instant>,
}

impl Route {
    /// Any server of the pool (no split: its servers are of one role).
    pub const ANY: Route = Route {
        primary: true,
        replica: true,
        fresh_after: None,
    };
    const PRIMARY: Route = Route {
        primary: true,
        replica: false,
        fresh_after: None,
    };

    /// The server may take the command now.
    pub fn allows(&self, server: &BackendServer) -> bool {
        server.in_rotation()
            && match server.role {
                ServerRole::Any => true,
                ServerRole::Primary => self.primary,
                ServerRole::Replica => {
                    self.replica
                        && self.fresh_after.is_none_or(|after| {
                            server.health.fresh_as_of.is_some_and(|f| f >= after)
                        })
                }
            }
    }
}

/// The client's command only reads and may run on any server: a plain
/// read (`safe_to_repeat`: no locking read, no user variable, no
/// non-built-in function, nothing the previous statement left), in
/// autocommit mode, outside a transaction, with nothing of its session on
/// one backend alone.
pub(super) fn is_read(c: &Client) -> bool {
    c.facts.safe_to_repeat
        && c.pinned.is_none()
        && c.pins.is_empty()
        && c.last_status & SERVER_STATUS_IN_TRANS == 0
        && !c.session.autocommit_off()
}

impl Engine {
    /// Where the client's current command may run in `pool`.
    pub(super) fn route(&self, c: &Client, pool: &Pool) -> Route {
        if !pool.user.read_write_split {
            return Route::ANY;
        }
        let rule_route = c.in_flight.and_then(|f| f.route);
        if rule_route == Some(ServerRole::Primary) || !is_read(c) {
            return Route::PRIMARY;
        }
        let read = Route {
            primary: false,
            replica: true,
            fresh_after: c.wrote_at,
        };
        // No replica of the pool can take it (down, lagging, or behind the
        // client's own write): the primary does, rather than waiting.
        let replica_ready = pool
            .servers
            .iter()
            .filter(|s| !s.removed)
            .any(|s| read.allows(&self.servers[s.server]));
        if replica_ready {
            read
        } else {
            Route::PRIMARY
        }
    }

    /// A command of a split pool's client is over on a primary: when it
    /// may have written (a statement that is not a plain read nor a plain
    /// SET), the client's reads stay on the primary until a replica has
    /// applied the primary's state after now (read-your-writes).
    pub(super) fn note_primary_command(&mut self, backend: usize) {
        let Some(b) = self.backends.get(backend) else {
            return;
        };
        if self.servers[b.server].role != ServerRole::Primary
            || !self.pools[b.pool].user.read_write_split
        {
            return;
        }
        let Some(cr) = b.client else {
            return;
        };
        // Statements only: a SET, USE or ping changes no data a read could
        // miss.
        if !matches!(
            b.command,
            COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE
        ) {
            return;
        }
        let now = self.now;
        if let Some(c) = self
            .clients
            .get_mut(cr.key)
            .filter(|c| c.serial == cr.serial)
        {
            if !c.facts.safe_to_repeat && !c.facts.set_only {
                c.wrote_at = Some(now);
            }
        }
    }
}

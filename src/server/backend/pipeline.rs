//! Pipelined backends (`[backend] pipeline_depth` above 1): when no
//! connection of a pool is idle, a provably stateless read may be sent
//! behind other such reads on a busy connection; mysqld runs a
//! connection's commands one by one, and their answers come back in order.
//!
//! The running command's fields on `Backend` (client, command, sequence
//! offset, EOF translation, response, tracker) stay those of the head;
//! `Backend::pipeline` holds the commands behind it, and each becomes the
//! head when the answer before it is complete (`promote_pipelined`).

use super::*;
use crate::server::client::{ClientState, CommandBytes, OwnError};

/// A command sent behind the running one on the same connection.
#[derive(Clone, Copy, Debug)]
pub struct Pipelined {
    pub client: ClientRef,
    pub sent_at: Instant,
    pub query_shape: u32,
    pub seq_offset: u8,
    /// The client's capabilities (its EOF translation).
    pub capabilities: u32,
    /// A `KILL QUERY` for it waits until it runs alone (`kill_running`).
    pub kill_deferred: bool,
}

impl Engine {
    /// The rule: whether the client's command (being handled, or just sent)
    /// may share a connection with other clients' commands in flight. Only
    /// when it is provably stateless: one `COM_QUERY` packet of a single
    /// statement the scan proves a plain read whose answer depends on
    /// nothing of the connection (`StatementFacts::cacheable`: no user
    /// variable, no session function, no warnings or row count read, no
    /// locking read, nothing non-deterministic), that changes nothing
    /// (no `SET STATEMENT`, no `LOAD DATA`), under no `sql_select_limit`
    /// (the rows it holds back count for `FOUND_ROWS()`), of a client in
    /// autocommit mode
    /// outside a transaction that holds nothing (no pin, no read-back, no
    /// pending error, no rest of a query with a `KILL`), with no rule
    /// `timeout_ms` watching it. The session fingerprint is checked
    /// against the backend's by the caller.
    pub(in crate::server) fn stateless_command(
        &self,
        key: usize,
        c: &crate::server::client::Client,
    ) -> bool {
        let f = &c.facts;
        let Some(span) = c.current().or_else(|| c.sent()) else {
            return false;
        };
        let payload = span.payload_in(c.rbuf.as_slice());
        span.packets == 1
            && payload.first() == Some(&COM_QUERY)
            // One statement: a `;` anywhere (even in a literal) says maybe not.
            && !payload.contains(&b';')
            && f.cacheable()
            && f.unproven.is_none()
            && f.takes == 0
            && !f.opaque_state
            && !f.load_local
            && !f.set_statement
            && !f.begins_transaction
            && !f.reads_diagnostics
            && !f.reads_row_count
            && !f.reads_found_rows
            // What FOUND_ROWS() says after it must be known from its rows
            // (`note_found_rows`): no sql_select_limit may cut them.
            && c.session.select_limit() == u64::MAX
            && !f.needs_privileges()
            && c.session_ready
            && c.pinned.is_none()
            && c.pins.is_empty()
            && !c.read_back_pending
            && !c.own_error_due()
            && c.multi_rest.is_none()
            && c.running_connect_db.is_none()
            && c.current_stmt().is_none()
            && !c.awaiting_privileges()
            && c.last_status & SERVER_STATUS_IN_TRANS == 0
            && !c.session.autocommit_off()
            && !self.rules.times(key, c.serial)
    }

    /// Whether backend `b` may take one more stateless command of a client
    /// with this session: it runs a stateless command of a client still
    /// there, has room, carries that session and nothing else of anyone's,
    /// and no `KILL` waits on it.
    fn takes_pipelined(&self, b: &Backend, fingerprint: u64, multi_statements: bool) -> bool {
        b.state == BackendState::Running
            && b.head_stateless
            && b.client.is_some()
            && b.pipeline.len() + 1 < self.config.backend.pipeline_depth
            && !b.pinned
            && !b.dirty
            && !b.paused
            && !b.infile
            && !b.close_when_done
            && !b.garbage_after_answer
            && !b.tracker_pending
            && !b.own_timeouts
            && b.kill_query.is_none()
            && b.relay.is_none()
            && b.kills_pending == 0
            && !b.head_kill_deferred
            && !b.pipeline.iter().any(|p| p.kill_deferred)
            && b.multi_statements == multi_statements
            && b.session.fingerprint() == fingerprint
    }

    /// No connection of the pool is idle: send the oldest waiting commands,
    /// while each is stateless, behind the commands running on the pool's
    /// connections that can take them (the one with the fewest in flight
    /// first).
    pub(super) fn dispatch_pipelined(&mut self, pool: usize) {
        loop {
            if !self.pools[pool].idle().is_empty() {
                return;
            }
            let Some(req) = self.pools[pool].pop() else {
                return;
            };
            // Its session as it will run (the character set of its login).
            self.ensure_client_session(req.client.key);
            let Some(c) = self.clients.get(req.client.key) else {
                continue;
            };
            if c.serial != req.client.serial || !c.is_queued() {
                continue;
            }
            if !matches!(c.state, ClientState::Queued) || !self.stateless_command(req.client.key, c)
            {
                self.pools[pool].push_front(req);
                return;
            }
            let Some(key) = self.pipeline_target(pool, c) else {
                self.pools[pool].push_front(req);
                return;
            };
            if self.pools[pool].servers.len() > 1 {
                let server = self.backends[key].server;
                self.servers[server].take_turn(&mut self.turns);
            }
            let waited = self.now.saturating_duration_since(req.enqueued);
            self.stats_queue_wait(pool, waited);
            self.append_pipelined(key, req.client);
        }
    }

    /// The busy backend of `pool` the client's stateless command would be
    /// sent behind now, if any: the one with the fewest in flight.
    pub(in crate::server) fn pipeline_target(
        &self,
        pool: usize,
        c: &crate::server::client::Client,
    ) -> Option<usize> {
        let fingerprint = c.session.fingerprint();
        let multi = c.multi_statements;
        let route = self.route(c, &self.pools[pool]);
        let servers = &self.servers;
        self.backends
            .iter()
            .filter(|(_, b)| {
                b.pool == pool
                    && route.allows(&servers[b.server])
                    && !servers[b.server].admission.others_wait(pool)
                    // As for an idle connection: none on a server out of
                    // rotation or taken out of the pool.
                    && servers[b.server].in_rotation()
                    && !self.pools[pool].servers.get(b.slot).is_none_or(|s| s.removed)
                    && self.takes_pipelined(b, fingerprint, multi)
            })
            .min_by_key(|(_, b)| b.pipeline.len())
            .map(|(k, _)| k)
    }

    /// Copy the client's command behind those in flight on the backend.
    /// Written with them in one send (one `FlushBackend` per pass).
    fn append_pipelined(&mut self, key: usize, client: ClientRef) {
        let Some(c) = self.clients.get_mut(client.key) else {
            return;
        };
        let Some(span) = c.current() else {
            return;
        };
        let b = &mut self.backends[key];
        let end = span.wire_len.min(HEADER_LEN + span.payload_len);
        let query_shape = self.stats.query_shape_hashed(
            b.pool,
            c.facts.shape,
            c.rbuf
                .as_slice()
                .get(HEADER_LEN + 1..end)
                .unwrap_or_default(),
        );
        self.bufs.ensure(&mut b.wbuf);
        b.wbuf
            .extend_from_slice(&c.rbuf.as_slice()[..span.wire_len]);
        // Kept in the client's input until its answer starts: if the
        // backend dies first, it may run again elsewhere.
        if let Some(f) = &mut c.in_flight {
            f.bytes = CommandBytes::Sent(span);
        }
        c.set_running(key);
        b.commands += 1;
        b.pipeline.push_back(Pipelined {
            client,
            sent_at: self.now,
            query_shape,
            seq_offset: c.seq_offset,
            capabilities: c.capabilities,
            kill_deferred: false,
        });
        let pool = b.pool;
        self.bump(pool, |c| c.pipelined += 1);
        self.flush_backend(key);
    }

    /// The head's answer is complete and commands are in flight behind it
    /// (called by `finish_response` instead of the one-command path's
    /// release). Its client is done; the next command becomes the head.
    /// Should the head have left anything on the session (it cannot, for
    /// a stateless read; `read_back` or a pin says it did), the commands
    /// behind it ran in a session nobody knows: the connection is closed
    /// and they run again elsewhere.
    pub(super) fn pipelined_head_done(&mut self, key: usize, draining: bool, read_back: bool) {
        let b = &mut self.backends[key];
        let pool = b.pool;
        let client = b.client.filter(|_| !draining);
        let mut session_known = !read_back
            && !b.dirty
            && !b.own_timeouts
            && !b.tracker_pending
            && !b.close_when_done
            && b.kills_pending == 0;
        b.head_kill_deferred = false;
        if !draining {
            self.note_primary_command(key);
        }
        let mut closing = false;
        if let Some(cr) = client {
            if let Some(c) = self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
            {
                if c.pins == PinSet::only(PinCause::Diagnostics) {
                    // Its warnings (or error) are overwritten by the
                    // command behind it: lost, as when no pin is free
                    // (`release_after_response`). `diagnostics_of` still
                    // says whose the connection's may be, so nobody else
                    // reads them.
                    c.unpin(PinCause::Diagnostics);
                }
                if !c.pins.is_empty() || c.read_back_pending {
                    c.drop_pins();
                    c.own_error = Some(OwnError::due(
                        crate::protocol::consts::err::CR_SERVER_LOST,
                        "funnel: a pipelined statement changed the session; the session's state is gone".to_string(),
                    ));
                    session_known = false;
                }
                c.pinned = None;
                c.set_idle();
                closing = c.close_after_flush;
            }
        }
        self.detach_backend_client(key);
        if session_known {
            self.promote_pipelined(key);
        } else {
            log_limited!(
                self,
                LogEvent::BackendLost,
                "pool {}: a pipelined statement left session state; closing its backend, the commands behind it run again",
                self.pools[pool].name()
            );
            self.close_backend(key);
            self.maintain_pool(pool);
        }
        if let Some(cr) = client {
            if closing {
                self.flush_client(cr.key);
            } else {
                self.client_ready(cr.key);
            }
        }
        self.dispatch(pool);
    }

    /// The next command in flight becomes the head: its answer is read
    /// next (a client that left meanwhile has it read and discarded).
    fn promote_pipelined(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let Some(next) = b.pipeline.pop_front() else {
            return;
        };
        b.command = COM_QUERY;
        b.seq_offset = next.seq_offset;
        b.eof = EofTranslator::new(next.capabilities);
        b.sent_at = next.sent_at;
        b.query_shape = next.query_shape;
        b.response = ResponseRead::default();
        b.tracker.start(expect_for(COM_QUERY));
        b.command_len = 0;
        b.head_stateless = true;
        b.head_kill_deferred = next.kill_deferred;
        b.init_db = None;
        b.set_names = None;
        b.names_learn = None;
        b.replay_skipped = false;
        b.prepare = None;
        b.schema_unset_tried = false;
        b.prepare_retries = 0;
        // Its answer may be in the bytes already read.
        b.answer_switched = true;
        if b.paused {
            // Paused for the head's slow reader: this client reads its own.
            b.paused = false;
            self.actions.push(Action::ReadBackend {
                key,
                serial: b.serial,
            });
        }
        let alone = b.pipeline.is_empty();
        let pool = b.pool;
        let alive = self.clients.get(next.client.key).is_some_and(|c| {
            c.serial == next.client.serial && matches!(c.state, ClientState::Running(k) if k == key)
        });
        if alive {
            // Running again, after a head whose client had left.
            self.set_backend_state(key, BackendState::Running);
            self.attach_backend_client(key, next.client);
            if next.kill_deferred && alone {
                self.open_killer(pool, key);
            }
        } else {
            self.set_backend_state(key, BackendState::Draining);
            self.backends[key].drain_started = self.now;
        }
    }

    /// `KILL QUERY` (or a rule's timeout) for the client's command running
    /// on `backend`. mysqld runs one command at a time per connection, so
    /// a `KILL QUERY` sent while other commands are in flight on it may
    /// stop another client's statement (the target's answer may be complete
    /// on its way to the funnel, the next one running): it is sent only when
    /// the target is the only command in flight, deferred otherwise (and
    /// nothing more is sent behind it meanwhile); a target whose answer
    /// completes first is not killed at all.
    pub(in crate::server) fn kill_running(
        &mut self,
        pool: usize,
        backend: usize,
        target: ClientRef,
    ) {
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        if b.pipeline.is_empty() {
            self.open_killer(pool, backend);
        } else if b.client == Some(target) {
            b.head_kill_deferred = true;
        } else if let Some(p) = b.pipeline.iter_mut().find(|p| p.client == target) {
            p.kill_deferred = true;
        }
    }

    /// Commands sent behind others that have waited longer than their
    /// pool's `queue_timeout_ms` (a head whose client reads slowly, or a
    /// long read, holds them up): their clients get ERR 1969, as when
    /// waiting in the backlog, and their answers, when they come, are
    /// read and discarded (the entry names no client any more). Checked
    /// at each pass of the loop (at least once a second).
    pub(in crate::server) fn expire_pipelined(&mut self) {
        let now = self.now;
        let mut expired = Vec::new();
        for (key, b) in self.backends.iter_mut() {
            if b.pipeline.is_empty() {
                continue;
            }
            let timeout = self.pools[b.pool].user.queue_timeout;
            for p in b.pipeline.iter_mut() {
                let Some(c) = self
                    .clients
                    .get(p.client.key)
                    .filter(|c| c.serial == p.client.serial)
                else {
                    continue;
                };
                let waited = now.saturating_duration_since(c.command_read_at);
                if matches!(c.state, ClientState::Running(k) if k == key) && waited > timeout {
                    expired.push((p.client, b.pool, waited));
                    p.client = ClientRef {
                        key: usize::MAX,
                        serial: 0,
                    };
                }
            }
        }
        for (client, pool, waited) in expired {
            let p = &self.pools[pool];
            let msg = format!(
                "funnel: the command waited {} ms on a backend connection of pool '{}' behind another client's answer (pipeline_depth; queue_timeout_ms = {}); it was not answered",
                waited.as_millis(),
                p.name(),
                p.user.queue_timeout.as_millis()
            );
            self.bump(pool, |c| c.queue_timeouts += 1);
            self.fail_request(
                client,
                crate::protocol::consts::err::ER_STATEMENT_TIMEOUT,
                &msg,
            );
        }
    }

    /// The backend is gone with commands in flight behind its head (the
    /// head's client was dealt with by `backend_lost`): none of their
    /// answers had started, and each is a plain read, so each runs again
    /// elsewhere (within the retry bounds of `backend_lost`), but one a
    /// `KILL` asked to stop, which ends with the error the KILL gives.
    pub(super) fn requeue_pipelined(
        &mut self,
        behind: std::collections::VecDeque<Pipelined>,
        ready_at: Instant,
        backend: usize,
    ) {
        // Put back at the head of the backlog in their order.
        for p in behind.into_iter().rev() {
            let Some(c) = self
                .clients
                .get_mut(p.client.key)
                .filter(|c| c.serial == p.client.serial)
            else {
                continue;
            };
            if !matches!(c.state, ClientState::Running(k) if k == backend) || c.sent().is_none() {
                continue;
            }
            let (retries, retries_reached, retried_at) = c.in_flight.map_or((0, 0, None), |f| {
                (f.retries, f.retries_reached, f.retried_at)
            });
            let reached = retried_at.is_none_or(|t| ready_at > t);
            let within_bound =
                retries < MAX_RETRIES && (!reached || retries_reached < MAX_RETRIES_REACHED);
            if p.kill_deferred {
                self.fail_request(
                    p.client,
                    crate::protocol::consts::err::ER_QUERY_INTERRUPTED,
                    "Query execution was interrupted",
                );
            } else if within_bound && self.shutting_down.is_none() {
                if let Some(f) = c.in_flight.as_mut().filter(|_| reached) {
                    f.retries_reached += 1;
                }
                self.retry_current(p.client.key);
            } else {
                self.fail_request(
                    p.client,
                    crate::protocol::consts::err::CR_SERVER_LOST,
                    "funnel: lost connection to backend during query",
                );
            }
        }
    }
}

//! Pairing commands with backends: dispatch from the backlog, the session
//! replay a command needs first, sending it, and what happens to the backend
//! when its answer is complete (back to the pool, pinned, or reset).

use super::*;

/// Requests of a pool of several servers looked past when the oldest
/// cannot run on any idle connection (bounded: dispatch stays cheap).
pub(in crate::server) const DISPATCH_SCAN: usize = 16;
/// A backend's rank (`Pool::pick_idle`), highest first: the server first
/// (the most lightly loaded per weight, then the one furthest behind in the
/// weighted turns, so that servers equally loaded share the commands by
/// weight and a server added by a reload gets work at once), then the
/// backend of that server whose session needs the least replay. With one
/// server, only the session counts.
const LOAD_MAX: u64 = (1 << 39) - 1;
const BEHIND_MAX: u64 = (1 << 17) - 1;
const SCORE_MAX: u64 = (1 << 8) - 1;

impl Engine {
    /// The backend is set up (or freed): give it to the pinned client that
    /// waits for it, or back to its pool.
    pub(in crate::server) fn backend_ready(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let pool = b.pool;
        if b.state == BackendState::Connecting
            || matches!(
                b.state,
                BackendState::AwaitGreeting | BackendState::Authenticating
            )
        {
            return;
        }
        if let Some(target) = b.kill_query {
            let state = b.state;
            self.set_backend_role(key, false, false);
            let still_running = state != BackendState::Internal(Internal::KillQuery)
                && self.backends.get(target.backend).is_some_and(|t| {
                    t.serial == target.serial
                        && t.commands == target.command
                        && t.state == BackendState::Running
                });
            if still_running {
                let sql = format!("KILL QUERY {}", target.thread);
                self.start_internal(key, Internal::KillQuery, sql.into_bytes());
            } else {
                // Done already (or the KILL ran): never stop someone else's query.
                self.close_backend(key);
            }
            return;
        }
        if self.relay_backend_ready(key) {
            return;
        }
        let was_connecting = self.backends[key].connecting;
        let was_pinned = self.backends[key].pinned;
        // Connected now, and shared: a pinned connection whose client is
        // gone is given back (closed below when it is one too many).
        self.set_backend_role(key, false, false);
        let (slot, server) = (self.backends[key].slot, self.backends[key].server);
        if was_connecting {
            self.backends[key].ready_at = self.now;
            self.servers[server].reached = true;
            self.servers[server].health.last_error = None;
        }
        // On the idle list from here; the steps below that keep it from
        // serving (close, reset, statement closes) take it off again.
        self.detach_backend_client(key);
        self.set_backend_state(key, BackendState::Idle);
        let b = &mut self.backends[key];
        let p = &mut self.pools[pool];
        if was_connecting {
            if !p.servers[slot].backoff.is_zero() {
                let srv = &self.servers[server];
                log_limited!(
                    self,
                    LogEvent::BackendRestored,
                    "pool {}: backend {}{} reachable again",
                    p.name(),
                    srv.address,
                    server_label(srv)
                );
            }
            p.servers[slot].backoff = Duration::ZERO;
            p.last_backend_error = None;
            if p.login_refused.take().is_some() {
                error!("pool {}: mysqld accepts the pool's login again", p.name());
            }
        }
        if b.close_when_done
            || (p.shared > p.capacity() && (was_pinned || !p.keeps_extra()))
            || !self.servers[server].in_rotation()
            || p.servers[slot].removed
            || (p.is_removed() && p.backlog_len() == 0)
        {
            // More shared backends than configured: this was a pinned
            // client's extra connection, given back while the client stays
            // (one whose client left may be kept: `Pool::keeps_extra`);
            // close it. A removed user's pool closes its backends as they
            // go idle (none waits for them).
            self.close_backend(key);
            return;
        }
        if b.dirty {
            // An unproven statement ran on it and its client is gone: the
            // backend is dirty until reset, whatever step brought it here.
            self.reset_backend(key);
            return;
        }
        if !b.stmts.to_close.is_empty() {
            // Statements nobody holds any more go before the backend is
            // anyone's again, and it is idle once mysqld has closed them.
            self.start_close_stmts(key);
            return;
        }
        self.dispatch(pool);
    }

    /// Pair queued requests with idle backends.
    pub(in crate::server) fn dispatch(&mut self, pool: usize) {
        if self.paused || self.pools[pool].paused {
            return;
        }
        // Requests passed over, in order, put back at the head after.
        let mut skipped: Vec<crate::server::pool::Request> = Vec::new();
        loop {
            if self.pools[pool].idle().is_empty() {
                break;
            }
            let Some(req) = self.pools[pool].pop() else {
                break;
            };
            let Some(c) = self.clients.get(req.client.key) else {
                continue;
            };
            if c.serial != req.client.serial || !c.is_queued() {
                continue;
            }
            // Servers whose max_concurrency (or other users' turns) kept
            // this command off an idle connection.
            let mut held_by: Vec<usize> = Vec::new();
            let picked = self.pick_idle_for(pool, c, &mut held_by);
            let several = self.pools[pool].servers.len() > 1;
            if picked.is_none() {
                for server in held_by {
                    self.wait_turn(server, pool);
                }
            }
            let Some(b) = picked else {
                if several && skipped.len() < DISPATCH_SCAN {
                    // No server it may run on has an idle connection, but
                    // one behind it may (a read waits for a replica, a
                    // write behind it takes the idle primary).
                    skipped.push(req);
                    continue;
                }
                self.pools[pool].push_front(req);
                break;
            };
            let server = self.backends[b].server;
            self.servers[server].admission.started(pool);
            if several {
                self.servers[server].take_turn(&mut self.turns);
            }
            let waited = self.now.saturating_duration_since(req.enqueued);
            self.stats_queue_wait(pool, waited);
            self.start_request(b, req.client);
        }
        for req in skipped.into_iter().rev() {
            self.pools[pool].push_front(req);
        }
        if self.config.backend.pipeline_depth > 1 {
            self.dispatch_pipelined(pool);
        }
    }

    /// The idle backend of `pool` the client's queued command would run on
    /// now, if any; servers whose max_concurrency (or other users' turns)
    /// kept it off an idle connection are added to `held_by`.
    pub(in crate::server) fn pick_idle_for(
        &self,
        pool: usize,
        c: &crate::server::client::Client,
        held_by: &mut Vec<usize>,
    ) -> Option<usize> {
        let fingerprint = c.session.fingerprint();
        let schema = c.session.schema.as_deref();
        let backends = &self.backends;
        let servers = &self.servers;
        let overwrites = command_overwrites(c);
        let route = self.route(c, &self.pools[pool]);
        let turns = self.turns;
        let several = self.pools[pool].servers.len() > 1;
        self.pools[pool].pick_idle(|b| {
            let b = backends.get(b)?;
            let server = &servers[b.server];
            if !route.allows(server) {
                return None;
            }
            if !server.admission.admits(pool) {
                if !held_by.contains(&b.server) {
                    held_by.push(b.server);
                }
                return None;
            }
            let score = session_score(&b.session, fingerprint, schema);
            let score = match &overwrites {
                // A plain SET that overwrites all the backend has
                // otherwise needs no replay there either; such a
                // backend comes before the same session, which
                // stays for commands that need it as it is (the SET
                // makes its backend's session something else).
                Some(o)
                    if b.session.fingerprint() != fingerprint
                        && c.session.equal_except(&b.session, o) =>
                {
                    2 * (score + 2) + 1
                }
                _ => 2 * score,
            };
            let score = u64::from(score).min(SCORE_MAX);
            if !several {
                return Some((b.slot, score));
            }
            let lightness = LOAD_MAX - server.load().min(LOAD_MAX);
            // In units of a weight-1000 server's turn.
            let ahead = server.pass.saturating_sub(turns) / 1000;
            let waited = BEHIND_MAX - ahead.min(BEHIND_MAX);
            Some((b.slot, (lightness << 25) | (waited << 8) | score))
        })
    }

    /// A command of `pool` could run on `server` but for its
    /// max_concurrency: the pool waits for a turn there.
    fn wait_turn(&mut self, server: usize, pool: usize) {
        let a = &mut self.servers[server].admission;
        a.wait_turn(pool);
        if a.defer_turns() {
            self.deferred.push(Deferred::ServerTurns(server));
        }
    }

    /// Room is free on `server`: the pools waiting for it start a command
    /// each, in turn, while room lasts (`Admission`).
    pub(in crate::server) fn serve_turns(&mut self, server: usize) {
        let Some(s) = self.servers.get_mut(server) else {
            return;
        };
        s.admission.turns_due = false;
        while let Some(pool) = self.servers[server].admission.next_turn() {
            self.dispatch(pool);
            self.servers[server].admission.end_turn();
        }
    }

    /// Give a backend to a client's command: replay its session first where
    /// the backend's differs, then send the command.
    pub(in crate::server) fn start_request(&mut self, key: usize, client: ClientRef) {
        self.ensure_client_session(client.key);
        self.attach_backend_client(key, client);
        let b = &mut self.backends[key];
        b.schema_unset_tried = false;
        b.prepare_retries = 0;
        // Nothing of this command has been forwarded yet.
        b.response.bytes = 0;
        if let Some(c) = self.clients.get_mut(client.key) {
            c.set_running(key);
        }
        self.continue_request(key);
    }

    /// Next step for the client's command on this backend.
    pub(super) fn continue_request(&mut self, key: usize) {
        let b = &self.backends[key];
        let Some(client) = b.client else {
            self.release_orphan(key);
            return;
        };
        let Some(c) = self
            .clients
            .get(client.key)
            .filter(|c| c.serial == client.serial)
        else {
            self.release_orphan(key);
            return;
        };
        if c.awaiting_privileges() {
            // The command is the funnel's to answer once the user's
            // privileges are known: learn them here, then give it back.
            if !self.privileges_known(client.key) {
                self.start_internal(key, Internal::Privileges, PRIVILEGES_SQL.to_vec());
            } else {
                self.hand_back(key, client);
            }
            return;
        }
        // A statement prepared without a default schema runs without one
        // (mysqld switches to the statement's schema for each execute,
        // NULL included): it is prepared here on a connection without one.
        let stmt_needs_no_schema = match c.current_stmt().and_then(|id| c.stmts.get(&id)) {
            Some(st) if st.schema.is_none() => self.backends[key]
                .stmts
                .get_mut(st.key, None, &st.sql)
                .is_none(),
            _ => false,
        };
        let b = &self.backends[key];
        if (c.session.schema.is_none() || stmt_needs_no_schema)
            && b.session.schema.is_some()
            && !b.pinned
            && !b.dirty
            && !b.schema_unset_tried
        {
            // A client without a default schema must not run where another
            // client's schema is (its unqualified names would resolve there,
            // and DATABASE() would show it). Before anything else: the
            // change-user forgets the connection's prepared statements.
            self.unset_schema(key);
            return;
        }
        if let Some(st) = c.current_stmt().and_then(|id| c.stmts.get(&id)) {
            let cached = self.backends[key]
                .stmts
                .get_mut(st.key, st.schema.as_deref(), &st.sql)
                .is_some();
            if !cached {
                let b = &self.backends[key];
                if st.schema.is_some() && st.schema != b.session.schema {
                    // Prepare in the schema the client prepared it in.
                    let schema = st.schema.clone().unwrap_or_default();
                    self.backends[key].init_db = Some(schema.clone());
                    self.start_internal(key, Internal::InitDb, schema.into_bytes());
                } else {
                    let sql = st.sql.to_vec();
                    self.start_internal(key, Internal::Prepare, sql);
                }
                return;
            }
        }
        let b = &self.backends[key];
        if c.multi_statements != b.multi_statements {
            // 0 = MYSQL_OPTION_MULTI_STATEMENTS_ON, 1 = OFF.
            let option: u16 = if c.multi_statements { 0 } else { 1 };
            self.start_internal(key, Internal::SetOption, option.to_le_bytes().to_vec());
            return;
        }
        if c.session.fingerprint() != b.session.fingerprint() {
            if c.session.schema.is_some() && c.session.schema != b.session.schema {
                let schema = c.session.schema.clone().unwrap_or_default();
                self.bump(b.pool, |c| c.replays += 1);
                self.backends[key].init_db = Some(schema.clone());
                self.start_internal(key, Internal::InitDb, schema.into_bytes());
                return;
            }
            // The variables a plain SET overwrites need no replay first
            // (on a shared backend: no transaction is open there).
            let overwrites = command_overwrites(c).filter(|_| !b.pinned && !b.dirty);
            let sql = match &overwrites {
                Some(o) => c.session.replay_vars_sql_except(&b.session, o),
                None => c.session.replay_vars_sql(&b.session),
            };
            if let Some(sql) = sql {
                let vars = c.session.user_vars_to_replay(&b.session) as u64;
                self.bump(b.pool, |c| {
                    c.replays += 1;
                    c.user_vars_replayed += vars;
                });
                self.backends[key].replay_skip = overwrites;
                self.start_internal(key, Internal::SetVars, sql);
                return;
            }
        }
        if let Some(e) = c.own_error_given().filter(|_| c.facts.reads_diagnostics) {
            // mysqld would hold this error: the funnel made it.
            let sql = e.raise_sql();
            self.bump(b.pool, |c| c.replays += 1);
            self.start_internal(key, Internal::RaiseOwnError, sql);
            return;
        }
        let clears =
            c.facts.reads_diagnostics && b.diagnostics_of.is_some_and(|s| s != client.serial);
        let sets_insert_id = c.facts.reads_insert_id
            && !c.read_back_insert_id
            && c.last_insert_id != b.last_insert_id;
        if (clears || sets_insert_id)
            && c.found_rows == crate::server::client::FOUND_ROWS_ON_BACKEND
        {
            // Either step below changes what FOUND_ROWS() says, and only
            // this backend knows the client's count: learn it first.
            self.start_internal(key, Internal::ReadFoundRows, FOUND_ROWS_SQL.to_vec());
            return;
        }
        if clears {
            // Another client's warnings are in this connection's
            // diagnostics area: empty it first.
            self.bump(b.pool, |c| c.diagnostics_cleared += 1);
            self.start_internal(
                key,
                Internal::ClearDiagnostics,
                CLEAR_DIAGNOSTICS_SQL.to_vec(),
            );
            return;
        }
        // (Not while the client's own is this backend's, to be read back.)
        if sets_insert_id {
            let sql = format!("SELECT LAST_INSERT_ID({})", c.last_insert_id);
            self.bump(b.pool, |c| c.replays += 1);
            self.start_internal(key, Internal::SetInsertId, sql.into_bytes());
            return;
        }
        if self.backends[key].tracker_pending {
            self.start_internal(key, Internal::ClearTracker, CLEAR_TRACKER_SQL.to_vec());
            return;
        }
        if c.facts.mentions_timeouts && !b.own_timeouts {
            // The statement may read the client's timeouts: the backend
            // has the global ones (restored after the response).
            let server = self.servers[b.server].timeouts;
            let (wait, interactive) = c.timeouts.effective(server);
            if (wait, interactive) != (server.wait, server.interactive) {
                let sql = format!(
                    "SET SESSION wait_timeout = {wait}, interactive_timeout = {interactive}"
                );
                self.backends[key].own_timeouts = true;
                self.start_internal(key, Internal::SetTimeouts, sql.into_bytes());
                return;
            }
        }
        // Last: every step above is a statement of its own, which changes
        // what ROW_COUNT() and FOUND_ROWS() say.
        let c = &self.clients[client.key];
        if let Some(sql) = previous_counts_sql(c, &mut self.backends[key].counts_replayed) {
            self.bump(self.backends[key].pool, |c| c.replays += 1);
            self.start_internal(key, Internal::SetPreviousCounts, sql);
            return;
        }
        self.send_client_command(key, client);
    }

    /// Whether the client's current command, a plain `SET` (`set`), can
    /// be answered without a backend, because the funnel knows exactly
    /// what mysqld would do and say: it sets only `autocommit` (to 0, 1,
    /// ON or OFF) and `NAMES` (a character set whose collation for `SET
    /// NAMES` the server's defaults fix and a read-back has told, or one
    /// `COLLATE` names), for a client that holds no backend, no
    /// transaction (which `autocommit = 1` would commit) and nothing else,
    /// and that does not track its session (whose OK would list the
    /// changes); and nothing but the statement comes (a comment after a
    /// `;` is a statement of its own to mysqld with multi-statements). If so, the client's session takes the changes as mysqld's
    /// tracker reports them, and the backend that runs its next statement
    /// gets them with the replay where it has not got them already; the
    /// caller answers with an OK (no warnings, `ROW_COUNT()` 0 after it).
    pub(in crate::server) fn set_without_backend(&mut self, key: usize, set: &PlainSet) -> bool {
        self.ensure_client_session(key);
        let Some(c) = self.clients.get(key) else {
            return false;
        };
        if !c.session_ready
            || !c.pins.is_empty()
            || c.pinned.is_some()
            || c.last_status & SERVER_STATUS_IN_TRANS != 0
            || c.capabilities & CLIENT_SESSION_TRACK != 0
            || c.multi_rest.is_some()
            || c.read_back_pending
            || set.comment_after
        {
            return false;
        }
        let srv = &self.servers[self.pools[c.pool].home_server()];
        // mysqld flags an OK `SERVER_QUERY_WAS_SLOW` when the statement
        // took `long_query_time` or more: with one of a second or more, a
        // SET never does.
        if c.session.vars.contains_key("long_query_time")
            || !srv.long_query_time.is_some_and(|t| t >= 1.0)
        {
            return false;
        }
        let mut autocommit = None;
        for (name, value) in &set.vars {
            if name != "autocommit" {
                return false;
            }
            autocommit = Some(match value.to_ascii_uppercase().as_str() {
                "0" | "OFF" => false,
                "1" | "ON" => true,
                _ => return false,
            });
        }
        let names = match &set.names {
            None => None,
            // Learnt (by name, as the server calls the character set) only
            // where the server's default fixes it.
            Some(SetNames::Charset(cs)) => match srv.names_defaults.get(cs) {
                Some(coll) if srv.names_default_fixed() => Some((cs.clone(), coll.clone())),
                _ => return false,
            },
            Some(SetNames::Collate(cs, coll)) => {
                let table = srv.charsets.as_ref();
                match table.and_then(|t| t.values().find(|(c, l)| c == cs && l == coll)) {
                    Some(names) if is_client_charset(cs) => Some(names.clone()),
                    _ => return false,
                }
            }
            Some(SetNames::Default) => return false,
        };
        if names.is_some()
            && NAMES_CHOOSERS
                .iter()
                .any(|v| c.session.vars.contains_key(*v))
        {
            return false;
        }
        let c = &mut self.clients[key];
        if let Some(on) = autocommit {
            c.session
                .set_var("autocommit", if on { "ON" } else { "OFF" });
            c.last_status &= !SERVER_STATUS_AUTOCOMMIT;
            if on {
                c.last_status |= SERVER_STATUS_AUTOCOMMIT;
            }
        }
        if let Some((cs, coll)) = names {
            for name in &CHARSET_VARS[..3] {
                c.session.set_var(name, &cs);
            }
            c.session.set_var(CHARSET_VARS[3], &coll);
            c.session.set_results_collation(Some(coll));
        }
        c.row_count = 0;
        true
    }

    /// Copy the client's command from its input buffer to the backend.
    pub(super) fn send_client_command(&mut self, key: usize, client: ClientRef) {
        self.backends[key].counts_replayed = 0;
        let stateless = self.config.backend.pipeline_depth > 1
            && self
                .clients
                .get(client.key)
                .is_some_and(|c| self.stateless_command(client.key, c));
        let Some(c) = self.clients.get_mut(client.key) else {
            return;
        };
        let Some(span) = c.current() else {
            // Nothing to send (cannot happen: a running client has a command).
            self.detach_backend_client(key);
            self.backend_ready(key);
            return;
        };
        let b = &mut self.backends[key];
        let cmd = c.rbuf.as_slice().get(HEADER_LEN).copied().unwrap_or(0);
        b.query_shape = if cmd == COM_QUERY {
            let end = span.wire_len.min(HEADER_LEN + span.payload_len);
            self.stats.query_shape_hashed(
                b.pool,
                c.facts.shape,
                &c.rbuf.as_slice()[HEADER_LEN + 1..end],
            )
        } else {
            0
        };
        self.bufs.ensure(&mut b.wbuf);
        // Statements this backend no longer needs (no answer comes).
        let closed = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        if closed > 0 {
            self.counters.stmts_closed += closed;
            if let Some(p) = self.pools.get_mut(b.pool) {
                p.counters.stmts_closed += closed;
            }
        }
        let stmt = c.current_stmt().and_then(|id| c.stmts.get(&id));
        b.init_db = None;
        if cmd == COM_INIT_DB {
            let end = span.wire_len.min(HEADER_LEN + span.payload_len);
            b.init_db =
                Some(String::from_utf8_lossy(&c.rbuf.as_slice()[HEADER_LEN + 1..end]).into_owned());
        }
        b.replay_skipped = false;
        b.names_learn = None;
        b.set_names = None;
        if let Some(set) = command_plain_set(c) {
            // A plain SET run where the backend's values of what it
            // overwrites were left as they were (`continue_request`).
            b.replay_skipped = Overwrites::of(&set)
                .is_some_and(|o| !b.pinned && !b.dirty && !c.session.agrees_on(&b.session, &o));
            // A `SET NAMES` tells what the tracker does not report.
            let charset_vars = set
                .vars
                .iter()
                .any(|(v, _)| v.starts_with("character_set") || v.starts_with("collation"));
            b.set_names = set.names.filter(|_| !charset_vars);
        }
        let queued_before = b.wbuf.len();
        match (cmd, stmt) {
            (COM_STMT_PREPARE, _) => {
                let end = span.wire_len.min(HEADER_LEN + span.payload_len);
                c.next_stmt_id = c.next_stmt_id.wrapping_add(1).max(1);
                b.prepare = Some(PendingPrepare {
                    funnel_id: c.next_stmt_id,
                    sql: Rc::from(&c.rbuf.as_slice()[HEADER_LEN + 1..end]),
                    schema: c.session.schema.clone(),
                });
                b.wbuf
                    .extend_from_slice(&c.rbuf.as_slice()[..span.wire_len]);
            }
            (
                COM_STMT_EXECUTE
                | COM_STMT_BULK_EXECUTE
                | COM_STMT_SEND_LONG_DATA
                | COM_STMT_RESET
                | COM_STMT_FETCH,
                Some(st),
            ) => {
                // The backend's own id for this statement, and for an
                // execute the parameter types it needs.
                let mut payload = std::mem::take(&mut self.scratch);
                payload.clear();
                crate::protocol::packet::join_payload(c.rbuf.as_slice(), &span, &mut payload);
                let mut out =
                    Vec::with_capacity(payload.len() + 2 * usize::from(st.num_params) + 1);
                if let Some(entry) = b.stmts.get_mut(st.key, st.schema.as_deref(), &st.sql) {
                    if cmd == COM_STMT_EXECUTE {
                        let layout = execute_layout(&payload, st.num_params);
                        match layout {
                            Some(layout) => {
                                let insert = (!layout.bound
                                    && layout.bound_at.is_some()
                                    && !st.types.is_empty()
                                    && entry.types != st.types)
                                    .then_some(st.types.as_slice());
                                rewrite_execute(&mut out, &payload, entry.id, layout, insert);
                                if layout.bound || insert.is_some() {
                                    entry.types.clone_from(&st.types);
                                }
                            }
                            None => out.extend_from_slice(&payload),
                        }
                    } else if cmd == COM_STMT_BULK_EXECUTE {
                        match bulk_layout(&payload, st.num_params) {
                            Ok(layout) => {
                                // Types inserted as for an execute: the
                                // backend's statement keeps the last it got.
                                let insert = (!layout.has_types
                                    && !st.types.is_empty()
                                    && entry.types != st.types)
                                    .then_some(st.types.as_slice());
                                rewrite_bulk(&mut out, &payload, entry.id, layout, insert);
                                if layout.has_types || insert.is_some() {
                                    entry.types.clone_from(&st.types);
                                }
                            }
                            Err(_) => out.extend_from_slice(&payload),
                        }
                    } else {
                        out.extend_from_slice(&payload);
                        if out.len() >= 5 {
                            out[1..5].copy_from_slice(&entry.id.to_le_bytes());
                        }
                    }
                } else {
                    out.extend_from_slice(&payload);
                }
                let mut framed = Vec::with_capacity(out.len() + 8);
                write_packet(&mut framed, 0, &out);
                b.wbuf.extend_from_slice(&framed);
                self.scratch = payload;
            }
            _ => b
                .wbuf
                .extend_from_slice(&c.rbuf.as_slice()[..span.wire_len]),
        }
        // The command stays in the client's input until its answer starts:
        // if this backend dies first, it may be sent again elsewhere.
        b.command_len = b.wbuf.len() - queued_before;
        if let Some(f) = &mut c.in_flight {
            f.bytes = crate::server::client::CommandBytes::Sent(span);
        }
        b.command = cmd;
        b.head_stateless = stateless;
        b.head_kill_deferred = false;
        b.seq_offset = c.seq_offset;
        b.eof = EofTranslator::new(c.capabilities);
        b.sent_at = self.now;
        b.response = ResponseRead::default();
        b.commands += 1;
        let expect = expect_for(cmd);
        b.tracker.start(expect);
        let serial = b.serial;
        self.set_backend_state(key, BackendState::Running);
        self.flush_backend(key);
        // A failed write has lost the backend (and told its client).
        let alive = self.backends.get(key).is_some_and(|b| b.serial == serial);
        if expect == Expect::None && alive {
            // COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA: no answer comes.
            self.finish_response(key, 0, EndKind::Other);
        }
    }

    pub(super) fn after_response(&mut self, key: usize, read_back: bool, draining: bool) {
        let b = &mut self.backends[key];
        if b.own_timeouts && !draining && b.client.is_some() {
            // A client's timeouts must not stay on a backend: mysqld would
            // close it when idle for the client's wait_timeout. (A backend
            // whose client left is reset, which restores them too.)
            b.read_back_after_restore = read_back;
            self.start_internal(
                key,
                Internal::RestoreTimeouts,
                RESTORE_TIMEOUTS_SQL.to_vec(),
            );
            return;
        }
        let found_rows_unknown = b
            .client
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .is_some_and(|c| c.found_rows == crate::server::client::FOUND_ROWS_ON_BACKEND);
        if !read_back && !draining && found_rows_unknown {
            // Learnt at once: the backend may serve others, or steps of
            // the funnel's may run on it, before the client reads it.
            self.start_internal(key, Internal::LearnFoundRows, FOUND_ROWS_SQL.to_vec());
            return;
        }
        if read_back {
            let limited = ["max_statement_time", "max_join_size", "sql_select_limit"]
                .iter()
                .any(|v| self.backends[key].session.vars.contains_key(*v));
            let mut sql = Vec::with_capacity(USER_VARS_LIFT.len() + USER_VARS_SQL.len());
            if limited {
                sql.extend_from_slice(USER_VARS_LIFT);
            }
            sql.extend_from_slice(USER_VARS_SQL);
            self.start_internal(key, Internal::ReadUserVars, sql);
            return;
        }
        self.release_after_response(key, draining);
    }

    /// The last `KILL QUERY` against this connection has landed (or given
    /// up): carry on with what its response's end decided.
    pub(in crate::server) fn resume_after_kill(&mut self, key: usize) {
        let Some(b) = self.backends.get(key) else {
            return;
        };
        if let BackendState::AwaitKill {
            read_back,
            draining,
        } = b.state
        {
            if b.kills_pending == 0 {
                self.after_response(key, read_back, draining);
            }
        }
    }

    /// The client's command is over: the backend stays with the client
    /// (pinned), goes back to the pool, or is reset.
    pub(super) fn release_after_response(&mut self, key: usize, draining: bool) {
        let b = &mut self.backends[key];
        // A big last packet may have paused it; the response is complete,
        // so nothing is left to hold back (the next answer must be read).
        b.paused = false;
        let pool = b.pool;
        let client = b.client;
        if !draining {
            self.note_primary_command(key);
        }
        self.set_backend_state(key, BackendState::Idle);
        let b = &mut self.backends[key];
        let pins_now = client
            .filter(|_| !draining)
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .map(|c| c.pins);
        let p = &self.pools[pool];
        if !b.pinned
            && p.pinned >= p.pin_limit()
            && pins_now.is_some_and(|s| !s.is_empty() && s != PinSet::only(PinCause::Diagnostics))
        {
            // An idle client's warnings may make room for state that must
            // not be lost.
            self.revoke_diagnostics_pin(pool, key);
        }
        let b = &mut self.backends[key];
        match (client, pins_now) {
            (Some(cr), Some(pins)) if !pins.is_empty() => {
                // The client keeps this backend.
                let newly_pinned = !b.pinned;
                if newly_pinned {
                    let p = &mut self.pools[pool];
                    if p.pinned >= p.pin_limit() && pins == PinSet::only(PinCause::Diagnostics) {
                        // Warnings are worth a pin only while one is free;
                        // they stay marked as this client's on the backend.
                        if let Some(c) = self.clients.get_mut(cr.key) {
                            c.unpin(PinCause::Diagnostics);
                        }
                        return self.release_after_response(key, draining);
                    }
                    if p.pinned >= p.pin_limit() {
                        // Over the cap: the state dies with a reset, and the
                        // client learns at its next command.
                        let limit = p.user.max_pinned_backends;
                        if let Some(c) = self.clients.get_mut(cr.key) {
                            c.drop_pins();
                            c.own_error = Some(OwnError::due(
                                crate::protocol::consts::err::ER_CON_COUNT_ERROR,
                                format!(
                                    "funnel: too many pinned clients in pool '{}' (max_pinned_backends = {limit}); your transaction or session state was discarded",
                                    p.name()
                                ),
                            ));
                            c.set_idle();
                        }
                        log_limited!(
                            self,
                            LogEvent::PinnedExhausted,
                            "pool {}: max_pinned_backends = {limit} reached; a client's session state was discarded",
                            p.name()
                        );
                        self.detach_backend_client(key);
                        self.reset_backend(key);
                        self.client_ready(cr.key);
                        return;
                    }
                    let connecting = b.connecting;
                    self.set_backend_role(key, true, connecting);
                }
                if let Some(c) = self.clients.get_mut(cr.key) {
                    c.pinned = Some(key);
                    c.set_idle();
                }
                // Statements let go of meanwhile go now, not with the
                // client's next command.
                self.write_stmt_closes_now(key);
                self.client_ready(cr.key);
                self.maintain_pool(pool);
                if newly_pinned {
                    // A shared connection that served a command is the
                    // client's now: a command waiting for room under
                    // `connections` (`Pool::pick_idle`) may run on an idle
                    // one.
                    self.dispatch(pool);
                }
            }
            (Some(cr), Some(_)) => {
                // Nothing holds the client to this backend any more.
                let mut closing = false;
                if let Some(c) = self.clients.get_mut(cr.key) {
                    c.pinned = None;
                    c.set_idle();
                    closing = c.close_after_flush;
                }
                self.detach_backend_client(key);
                self.backend_ready(key);
                if closing {
                    self.flush_client(cr.key);
                } else {
                    self.client_ready(cr.key);
                }
            }
            _ => {
                // The client left during the response: whatever the command
                // did to the session (a transaction, variables, locks) must
                // not reach the next client.
                self.detach_backend_client(key);
                self.end_pin(key);
                let b = &mut self.backends[key];
                if b.close_when_done {
                    self.close_backend(key);
                } else {
                    self.reset_backend(key);
                }
            }
        }
    }

    /// A step of the funnel's own before a client's command failed in a way
    /// that leaves the backend fine: the command is answered with the
    /// error instead of run. A backend the client holds pinned stays its
    /// (idle, before the client may send its next command); a shared one
    /// goes back to the pool.
    pub(super) fn fail_before_command(&mut self, key: usize, code: (u16, &'static str), msg: &str) {
        let b = &mut self.backends[key];
        let client = b.client;
        let pinned_here = client
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .is_some_and(|c| c.pinned == Some(key));
        if pinned_here {
            self.set_backend_state(key, BackendState::Idle);
        } else {
            self.detach_backend_client(key);
            self.backend_ready(key);
        }
        if let Some(cr) = client {
            self.fail_request(cr, code, msg);
        }
    }

    /// The client's command waited for a backend only for a step of the
    /// funnel's own: the backend goes back (to the pool, or idle with the
    /// client that holds it pinned) and the funnel handles the command.
    pub(super) fn hand_back(&mut self, key: usize, client: ClientRef) {
        let pinned_here = self
            .clients
            .get(client.key)
            .is_some_and(|c| c.pinned == Some(key));
        if pinned_here {
            self.set_backend_state(key, BackendState::Idle);
        } else {
            self.detach_backend_client(key);
            self.backend_ready(key);
        }
        if let Some(c) = self.clients.get_mut(client.key) {
            if let Some(f) = &mut c.in_flight {
                f.awaiting_privileges = false;
            }
            // Not set_idle: the command's sequence ids stay as they were.
            c.set_state(crate::server::client::ClientState::Idle);
            self.handle_command(client.key);
        }
    }

    /// The client a step of the funnel's own ran for has left before its
    /// command: a backend it held pinned (or made dirty) carries its session
    /// and is reset; a shared one only had its tracked session replayed,
    /// which the backend's own view records, and goes back to the pool.
    pub(super) fn release_orphan(&mut self, key: usize) {
        self.detach_backend_client(key);
        let b = &mut self.backends[key];
        if b.pinned || b.dirty || b.own_timeouts {
            self.end_pin(key);
            self.reset_backend(key);
        } else {
            self.backend_ready(key);
        }
    }

    /// A client of `pool` could be given a pinned backend now: the allowance
    /// has room, or an idle client's warnings hold one that can be taken
    /// back.
    pub(in crate::server) fn pin_available(&self, pool: usize) -> bool {
        let p = &self.pools[pool];
        p.pinned < p.pin_limit() || self.revocable_pin(pool, usize::MAX).is_some()
    }

    /// A pinned backend of `pool` (not `except`) that only an idle client's
    /// warnings hold, and that client: (backend, client key).
    pub(super) fn revocable_pin(&self, pool: usize, except: usize) -> Option<(usize, usize)> {
        self.backends.iter().find_map(|(k, b)| {
            let cr = b.client?;
            let c = self.clients.get(cr.key).filter(|c| c.serial == cr.serial)?;
            (k != except
                && b.pool == pool
                && b.pinned
                && b.state == BackendState::Idle
                && !c.is_busy()
                && !c.read_back_pending
                && c.pins == PinSet::only(PinCause::Diagnostics))
            .then_some((k, cr.key))
        })
    }

    /// Take back one pinned backend of `pool` (not `except`) that only an
    /// idle client's warnings hold: they are lost (that client's next
    /// `SHOW WARNINGS` shows none), so that a transaction or a lock can
    /// have the pin.
    pub(super) fn revoke_diagnostics_pin(&mut self, pool: usize, except: usize) {
        let Some((backend, client)) = self.revocable_pin(pool, except) else {
            return;
        };
        if let Some(c) = self.clients.get_mut(client) {
            c.unpin(PinCause::Diagnostics);
            c.pinned = None;
        }
        self.detach_backend_client(backend);
        self.backend_ready(backend);
    }

    /// The idle client `key` holds a pinned backend but nothing pins it any
    /// more (it closed its last open cursor): the backend goes back to the
    /// pool as after a response.
    pub(in crate::server) fn unpin_if_free(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.pins.is_empty() || c.is_busy() {
            return;
        }
        let Some(b) = c.pinned.take() else {
            return;
        };
        if self.backends.contains(b) {
            self.detach_backend_client(b);
            if self.backends[b].state == BackendState::Idle {
                self.backend_ready(b);
            }
        }
    }

    /// The client that held this backend pinned is gone: the pin is over,
    /// and the connection counts among the pool's shared ones from now on
    /// (while it is reset or rolled back), so that `backend_ready` may keep
    /// it open for the next pinned client instead of closing it.
    pub(super) fn end_pin(&mut self, key: usize) {
        let b = &self.backends[key];
        if b.pinned && b.relay.is_none() {
            let connecting = b.connecting;
            self.set_backend_role(key, false, connecting);
        }
    }

    /// The client that held this backend pinned has let go of it with its
    /// session (`COM_RESET_CONNECTION`, `COM_CHANGE_USER`): it is reset.
    pub(in crate::server) fn release_pinned(&mut self, key: usize) {
        self.release_pinned_as(key, false);
    }

    /// The client `c` that held this backend pinned has left: a `ROLLBACK`
    /// ends its session there when its pin was an open transaction and
    /// nothing else (`ends_with_rollback`); otherwise it is reset.
    pub(in crate::server) fn release_pinned_by(
        &mut self,
        key: usize,
        c: &crate::server::client::Client,
    ) {
        let rollback = self
            .backends
            .get(key)
            .is_some_and(|b| ends_with_rollback(c, b));
        self.release_pinned_as(key, rollback);
    }

    pub(super) fn release_pinned_as(&mut self, key: usize, rollback: bool) {
        if !self.backends.contains(key) {
            return;
        }
        self.detach_backend_client(key);
        let b = &mut self.backends[key];
        if b.state == BackendState::Idle && b.relay.is_some() {
            // A relayed login's connection is never anyone else's.
            b.relay = None;
            self.close_backend(key);
            return;
        }
        match b.state {
            BackendState::Idle => {
                self.end_pin(key);
                if rollback {
                    self.end_transaction(key);
                } else {
                    self.reset_backend(key);
                }
            }
            BackendState::Running => {
                self.set_backend_state(key, BackendState::Draining);
                let b = &mut self.backends[key];
                b.drain_started = self.now;
            }
            // Draining or internal steps: finish_response / internal_done
            // see that the client is gone.
            _ => {}
        }
    }
}

/// The client's command, when it is a plain `SET` (`statement::plain_set`)
/// sent as one packet: what it assigns.
fn command_plain_set(c: &crate::server::client::Client) -> Option<PlainSet> {
    if !c.facts.set_only {
        return None;
    }
    let span = c.current()?;
    let buf = c.rbuf.as_slice();
    if span.packets != 1 || buf.get(HEADER_LEN) != Some(&COM_QUERY) {
        return None;
    }
    let end = span.wire_len.min(HEADER_LEN + span.payload_len);
    plain_set(buf.get(HEADER_LEN + 1..end)?)
}

/// What the client's command overwrites whatever a backend's session has,
/// when it is a plain `SET` (`Overwrites`).
fn command_overwrites(c: &crate::server::client::Client) -> Option<Overwrites> {
    Overwrites::of(&command_plain_set(c)?)
}

//! The funnel's own steps on a backend (`Internal`): set-up and the clean-session
//! check, session replay, user-variable read-backs, the end of a transaction-only
//! pin, and resets.

use super::*;

impl Engine {
    /// Send a command the funnel itself needs answered.
    pub(in crate::server) fn start_internal(&mut self, key: usize, step: Internal, sql: Vec<u8>) {
        if !self.backends.contains(key) {
            return;
        }
        let (cmd, expect) = match step {
            Internal::InitDb => (COM_INIT_DB, Expect::Simple),
            Internal::Reset => (COM_RESET_CONNECTION, Expect::Simple),
            Internal::Ping | Internal::CloseStmts => (COM_PING, Expect::Simple),
            Internal::Prepare => (COM_STMT_PREPARE, Expect::Prepare),
            Internal::SetOption => (COM_SET_OPTION, Expect::Simple),
            _ => (COM_QUERY, Expect::Query),
        };
        self.set_backend_state(key, BackendState::Internal(step));
        let b = &mut self.backends[key];
        b.tracker.start(expect);
        b.rows.clear();
        b.rows_charset = None;
        b.sent_at = self.now;
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(cmd);
        payload.extend_from_slice(&sql);
        self.send_to_backend(key, 0, &payload);
    }

    pub(super) fn backend_internal_packet(&mut self, key: usize, step: Internal, payload: &[u8]) {
        let b = &mut self.backends[key];
        let progress = match b.tracker.feed(payload) {
            Ok(p) => p,
            Err(e) => {
                self.backend_lost(key, format!("malformed response to {step:?}: {e}"));
                return;
            }
        };
        // Warnings of this packet, if it is an OK or a rows' EOF.
        let warnings = match b.tracker.last_kind() {
            PacketKind::Row => {
                b.rows.push(parse_text_row(payload));
                0
            }
            PacketKind::ColumnDef if b.rows_charset.is_none() => {
                b.rows_charset = column_def_charset(
                    payload,
                    b.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0,
                )
                .ok();
                0
            }
            PacketKind::Ok => match decode_ok(payload, b.capabilities) {
                Ok(ok) => {
                    if let (Some(block), Internal::LearnTrackOrder) = (ok.session_state, step) {
                        let server = b.server;
                        self.servers[server].track_order = session_state_changes(block)
                            .filter_map(|c| match c {
                                Ok(StateChange::SystemVariable { name, .. }) => {
                                    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
                                }
                                _ => None,
                            })
                            .collect();
                    }
                    if let Some(block) = ok.session_state.filter(|_| {
                        !matches!(step, Internal::ClearTracker | Internal::LearnTrackOrder)
                    }) {
                        let changes = b.session.apply_tracked(block);
                        b.discard_on_reset |= changes.survives_reset;
                    }
                    if ok.session_state.is_some() {
                        // Reported: nothing is pending any more.
                        b.tracker_pending = false;
                    }
                    if step == Internal::Rollback {
                        // The ROLLBACK's OK must report no change, nor say
                        // a transaction is open. Otherwise more than the
                        // transaction was there: reset (`internal_done`).
                        let changed = ok.status & SERVER_SESSION_STATE_CHANGED != 0;
                        if ok.status & SERVER_STATUS_IN_TRANS != 0 || changed {
                            b.dirty = true;
                        }
                    }
                    ok.warnings
                }
                Err(_) => 0,
            },
            PacketKind::Eof => match crate::protocol::response::decode_eof(payload) {
                Ok(e) => {
                    b.tracker_pending |= e.status & SERVER_SESSION_STATE_CHANGED != 0;
                    e.warnings
                }
                Err(_) => 0,
            },
            _ => 0,
        };
        let Progress::Complete { end, .. } = progress else {
            if progress == Progress::LocalInfile {
                self.backend_lost(key, "unexpected LOCAL INFILE request".into());
            }
            return;
        };
        // `ROLLBACK` answers with an OK only: any other answer (a result
        // set, from a misbehaving server or a proxy in between) proves
        // nothing about the transaction: reset.
        if matches!(step, Internal::Rollback) && end != EndKind::Ok {
            self.backends[key].dirty = true;
        }
        let b = &mut self.backends[key];
        // A step of the funnel's own that ended with an error or warnings
        // left them in the diagnostics area: nobody's to see but the
        // client it ran for (0: nobody's).
        if end == EndKind::Err || warnings > 0 {
            b.diagnostics_of = Some(b.client.map_or(0, |c| c.serial));
        }
        if matches!(
            step,
            Internal::InitDb
                | Internal::SetVars
                | Internal::SetInsertId
                | Internal::SetOption
                | Internal::Prepare
                | Internal::ReadUserVars
                | Internal::ReadUserVarValues
                | Internal::SetTimeouts
                | Internal::RestoreTimeouts
                | Internal::RaiseOwnError
                | Internal::SetPreviousCounts
        ) {
            // What multiplexing costs a client, beyond its own commands.
            let b = &self.backends[key];
            let spent = self.now.saturating_duration_since(b.sent_at).as_micros() as u64;
            self.bump(b.pool, |c| c.replay_micros += spent);
        }
        if step == Internal::SetPreviousCounts {
            // Whatever the answer (a client's own limits may refuse the
            // expression): the statement runs next.
            self.backends[key].rows.clear();
            self.continue_request(key);
            return;
        }
        if step == Internal::RaiseOwnError {
            // The error is the backend's now, as if mysqld had said it
            // here: the client keeps the backend while it lasts, as for
            // an error of mysqld's (`forward.rs`). Any other answer says
            // nothing of what the area holds (someone else's warnings,
            // maybe): nobody's, so that it is emptied before the client's
            // statement reads it (which shows no error then).
            let raised = end == EndKind::Err;
            if let Some(cr) = self.backends[key].client {
                if let Some(c) = self
                    .clients
                    .get_mut(cr.key)
                    .filter(|c| c.serial == cr.serial)
                {
                    c.own_error = None;
                    if raised {
                        c.pin(PinCause::Diagnostics);
                    }
                }
                self.backends[key].diagnostics_of = Some(if raised { cr.serial } else { 0 });
            }
            self.continue_request(key);
            return;
        }
        if step == Internal::LearnTrackOrder {
            // Refused or not: tracking is set up next.
            self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
            return;
        }
        if end == EndKind::Err && step == Internal::Prepare {
            // The statement no longer prepares (a table dropped since): the
            // client gets mysqld's error for its execute.
            let (code, msg) = decode_err(payload)
                .map(|e| (e.code, String::from_utf8_lossy(e.message).into_owned()))
                .unwrap_or((1105, "malformed error".into()));
            if code == crate::protocol::consts::err::ER_MAX_PREPARED_STMT_COUNT_REACHED.0 {
                // Out of statement slots: cached statements make room.
                match self.make_stmt_room(key) {
                    StmtRoom::Now => return self.retry_prepare(key),
                    StmtRoom::Wait => return,
                    StmtRoom::None => {}
                }
            }
            self.fail_before_command(key, (code, "HY000"), &msg);
            return;
        }
        if end == EndKind::Err
            && step == Internal::InitDb
            && decode_err(payload)
                .is_ok_and(|e| e.code == crate::protocol::consts::err::ER_BAD_DB_ERROR.0)
            && self.forget_dropped_stmt_schema(key)
        {
            self.continue_request(key);
            return;
        }
        if end == EndKind::Err {
            let msg = decode_err(payload)
                .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                .unwrap_or_else(|_| "malformed error".into());
            self.internal_failed(key, step, msg);
            return;
        }
        self.internal_done(key, step);
    }

    pub(super) fn internal_done(&mut self, key: usize, step: Internal) {
        match step {
            Internal::Setup => {
                self.start_internal(key, Internal::Baseline, BASELINE_SQL.to_vec());
            }
            Internal::Baseline => {
                let b = &mut self.backends[key];
                let row = b.rows.first().cloned().unwrap_or_default();
                let mut session = SessionVars::new();
                for (i, name) in CHARSET_VARS.iter().enumerate() {
                    if let Some(Some(v)) = row.get(i) {
                        session.set_var(name, v);
                    }
                }
                session.set_schema(row.get(4).cloned().flatten());
                let results = b.rows_charset;
                b.baseline_results = results;
                b.session = session;
                // A new session: `SET NAMES` is learnt again.
                b.names_defaults.clear();
                self.learn_results_collation(key, results);
                let server = self.server_of(key);
                self.servers[server].long_query_time = row
                    .get(BASELINE_LONG_QUERY_TIME)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<f64>().ok());
                for (i, name) in BASELINE_TRACK {
                    if let Some(Some(v)) = row.get(i) {
                        self.servers[server].track_defaults.set(name, v);
                    }
                }
                if let Some(n) = row
                    .get(BASELINE_MAX_PREPARED)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    self.servers[server].max_prepared = Some(n);
                }
                let global = |i: usize| {
                    row.get(i)
                        .cloned()
                        .flatten()
                        .and_then(|v| v.parse::<u64>().ok())
                };
                if let (Some(wait), Some(interactive)) = (
                    global(BASELINE_WAIT_TIMEOUT),
                    global(BASELINE_INTERACTIVE_TIMEOUT),
                ) {
                    self.set_server_timeouts(
                        server,
                        crate::server::session::ServerTimeouts { wait, interactive },
                    );
                }
                let timeouts_clean = row
                    .get(BASELINE_TIMEOUTS_CLEAN)
                    .cloned()
                    .flatten()
                    .as_deref()
                    != Some("0");
                self.backends[key].own_timeouts = false;
                if row.get(BASELINE_CLEAN).cloned().flatten().as_deref() != Some("1")
                    || !timeouts_clean
                {
                    self.backend_lost(
                        key,
                        "session not clean after connect or reset (user variables, transaction, profiling, tracking or a variable left)".into(),
                    );
                    return;
                }
                let b = &self.backends[key];
                if b.client.is_some() {
                    // Set up again after a COM_CHANGE_USER that unset the
                    // schema for a client's command (a new or reset
                    // connection has no client): the command goes on.
                    let spent = self.now.saturating_duration_since(b.schema_unset_at);
                    let spent = spent.as_micros() as u64;
                    let pool = b.pool;
                    self.bump(pool, |c| c.replay_micros += spent);
                    self.continue_request(key);
                } else if self.servers[self.server_of(key)].charsets.is_none() {
                    self.start_internal(key, Internal::LoadCollations, COLLATIONS_SQL.to_vec());
                } else {
                    self.setup_done(key);
                }
            }
            Internal::LoadCollations => {
                let server = self.server_of(key);
                let b = &mut self.backends[key];
                let mut table = crate::server::backend_server::CharsetTable::new();
                let rows_seen = b.rows.len();
                for row in b.rows.drain(..) {
                    if let [Some(id), Some(cs), Some(coll)] = row.as_slice() {
                        if let Ok(id) = id.parse::<u8>() {
                            table.insert(id, (cs.clone(), coll.clone()));
                        }
                    }
                }
                debug!(
                    "loaded {} collations from the backend ({} rows)",
                    table.len(),
                    rows_seen
                );
                self.servers[server].charsets = Some(table);
                // The baseline that came before could not name it yet.
                let results = self.backends[key].baseline_results;
                self.learn_results_collation(key, results);
                self.setup_done(key);
            }
            Internal::Rollback => {
                let b = &mut self.backends[key];
                if b.dirty {
                    self.reset_backend(key);
                    return;
                }
                let pool = b.pool;
                self.bump(pool, |c| c.pin_rollbacks += 1);
                // The variables stay as the client left them: the session
                // is tracked, and whoever comes next has its own replayed
                // where it differs, as after any shared command.
                self.backend_ready(key);
            }
            Internal::Reset => {
                self.bump(self.backends[key].pool, |c| c.backend_resets += 1);
                // The reset returned the session to the server defaults:
                // tracking is off again, and the charset is the handshake's.
                self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
            }
            Internal::KillQuery => self.close_backend(key),
            // Its answer is read by `backend_change_user_reply`, not here.
            Internal::ChangeUser => self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec()),
            Internal::SetOption => {
                let b = &mut self.backends[key];
                b.multi_statements = !b.multi_statements;
                self.continue_request(key);
            }
            Internal::Prepare => {
                let b = &mut self.backends[key];
                let prepared = b.tracker.prepared();
                let st = b
                    .client
                    .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
                    .and_then(|c| c.current_stmt().and_then(|id| c.stmts.get(&id)));
                match (prepared, st) {
                    (Some(ok), Some(st)) => {
                        b.stmts
                            .insert(st.key, ok.statement_id, st.sql.clone(), st.schema.clone());
                        self.continue_request(key);
                    }
                    (Some(ok), None) => {
                        // The client left meanwhile: keep nothing half-known.
                        b.stmts.to_close.push(ok.statement_id);
                        self.continue_request(key);
                    }
                    _ => self.continue_request(key),
                }
            }
            Internal::Ping => self.backend_ready(key),
            Internal::CloseStmts => {
                let mut waiters = std::mem::take(&mut self.backends[key].close_waiters);
                self.closes_done(&mut waiters);
                if let Some(b) = self.backends.get_mut(key) {
                    b.close_waiters = waiters;
                }
                self.backend_ready(key);
            }
            // Nothing is in flight in this state: an answer is unasked for.
            Internal::AwaitCloses => {
                self.backend_lost(key, "server sent a packet no command asked for".into())
            }
            Internal::ClearDiagnostics => {
                self.backends[key].diagnostics_of = None;
                self.continue_request(key);
            }
            Internal::ReadFoundRows => {
                self.found_rows_read(key);
                self.continue_request(key);
            }
            Internal::LearnFoundRows => {
                self.found_rows_read(key);
                self.after_response(key, false, false);
            }
            Internal::SetTimeouts => {
                if self.backends[key].client.is_some() {
                    self.continue_request(key);
                } else {
                    self.release_orphan(key);
                }
            }
            Internal::RestoreTimeouts => {
                let b = &mut self.backends[key];
                b.own_timeouts = false;
                let read_back = std::mem::take(&mut b.read_back_after_restore);
                self.after_response(key, read_back, false);
            }
            Internal::ClearTracker => self.continue_request(key),
            // Handled as its answer arrives (whatever it is).
            Internal::LearnTrackOrder | Internal::RaiseOwnError | Internal::SetPreviousCounts => {}
            Internal::ReadUserVars => self.user_vars_read(key),
            Internal::ReadUserVarValues => self.user_var_values_read(key),
            Internal::Privileges => {
                let b = &mut self.backends[key];
                let privileges = crate::server::processlist::Privileges::from_grants(
                    b.rows.iter().filter_map(|r| r.first()?.as_deref()),
                );
                b.rows.clear();
                debug!(
                    "pool {}: privileges {privileges:?}",
                    self.pools[b.pool].name()
                );
                self.store_privileges(key, privileges);
                if self.backends[key].client.is_some() {
                    self.continue_request(key);
                } else {
                    self.backend_ready(key);
                }
            }
            Internal::SetInsertId => {
                let b = &mut self.backends[key];
                if let Some(c) = b.client.and_then(|cr| self.clients.get(cr.key)) {
                    b.last_insert_id = c.last_insert_id;
                }
                if b.client.is_some() {
                    self.continue_request(key);
                } else {
                    self.release_orphan(key);
                }
            }
            Internal::InitDb | Internal::SetVars => {
                let b = &mut self.backends[key];
                if let Some(schema) = b.init_db.take() {
                    b.session.set_schema(Some(schema));
                }
                let Some(client) = b.client else {
                    // The client left while its state was being replayed.
                    self.release_orphan(key);
                    return;
                };
                if step == Internal::SetVars {
                    let skip = b.replay_skip.take();
                    if let Some(c) = self.clients.get(client.key) {
                        // The variables are the client's now (but what its
                        // plain SET overwrites, left as it was); the schema
                        // is what the connection has (a SET leaves it).
                        if let Some(o) = skip {
                            b.session = c.session.replayed_except(&b.session, &o);
                        } else {
                            let schema = b.session.schema.take();
                            b.session.copy_from(&c.session);
                            b.session.set_schema(schema);
                        }
                    }
                }
                self.continue_request(key);
            }
        }
    }

    /// The schema a client's statement was prepared in no longer exists
    /// (the `COM_INIT_DB` before re-preparing it here failed with 1049),
    /// though it is not the client's own schema: mysqld runs such a
    /// statement with no default schema, so the statement is prepared
    /// without one from now on (under a key of its own: the backend
    /// statement is not the one others prepared in that schema). False when
    /// this was not such a step.
    pub(super) fn forget_dropped_stmt_schema(&mut self, key: usize) -> bool {
        let b = &mut self.backends[key];
        let (Some(schema), Some(cr)) = (b.init_db.clone(), b.client) else {
            return false;
        };
        let Some(c) = self
            .clients
            .get_mut(cr.key)
            .filter(|c| c.serial == cr.serial)
        else {
            return false;
        };
        if c.session.schema.as_deref() == Some(schema.as_str()) {
            return false;
        }
        let Some(id) = c.current_stmt() else {
            return false;
        };
        let Some(st) = c.stmts.get_mut(&id) else {
            return false;
        };
        if st.schema.as_deref() != Some(schema.as_str()) {
            return false;
        }
        st.schema = None;
        let new_key = own_stmt_key(stmt_key(b.pool, None, &st.sql), id);
        c.stmts.rekey(id, new_key);
        b.init_db = None;
        // The failed COM_INIT_DB's error is nobody's to see.
        b.diagnostics_of = Some(0);
        self.pools[b.pool].known_schemas.remove(&schema);
        true
    }

    /// A backend connection (new or reset) is set up: the first of its
    /// pool (or the first after a reload) also learns the pool user's
    /// privileges, so that a KILL never waits for a busy pool to ask.
    pub(super) fn setup_done(&mut self, key: usize) {
        let b = &self.backends[key];
        let p = &self.pools[b.pool];
        let ask = match &b.relay {
            // A relayed login's own user: asked on its own connection.
            Some(r) => self
                .clients
                .get(r.owner.key)
                .is_some_and(|c| c.relay_privileges.is_none()),
            None => p.privileges.is_none() || p.privileges_stale,
        };
        if ask {
            self.start_internal(key, Internal::Privileges, PRIVILEGES_SQL.to_vec());
        } else {
            self.backend_ready(key);
        }
    }

    pub(super) fn internal_failed(&mut self, key: usize, step: Internal, msg: String) {
        match step {
            Internal::InitDb => {
                // The client's schema is gone (dropped since): tell the client,
                // as its next statement would have told it on a direct
                // connection; the backend itself is fine.
                let b = &mut self.backends[key];
                if let Some(schema) = b.init_db.take() {
                    self.pools[b.pool].known_schemas.remove(&schema);
                }
                self.fail_before_command(
                    key,
                    crate::protocol::consts::err::ER_BAD_DB_ERROR,
                    &format!("funnel: cannot restore your default schema: {msg}"),
                );
            }
            Internal::RestoreTimeouts => {
                // The client has its answer already (see below); the
                // backend, which may keep the client's timeouts, goes
                // once the client is done with it.
                debug!("backend {key}: restoring the global timeouts failed: {msg}");
                let b = &mut self.backends[key];
                b.own_timeouts = false;
                b.close_when_done = true;
                let read_back = std::mem::take(&mut b.read_back_after_restore);
                self.after_response(key, read_back, false);
            }
            Internal::Privileges => {
                // mysqld refused to say: none beyond the user's own
                // connections, as for a user without them.
                debug!("backend {key}: reading privileges failed: {msg}");
                self.store_privileges(key, Default::default());
                if self.backends[key].client.is_some() {
                    self.continue_request(key);
                } else {
                    self.backend_ready(key);
                }
            }
            Internal::Rollback => {
                // (Say, an XA transaction's.) The reset ends whatever it is.
                debug!("backend {key}: {step:?} failed: {msg}; resetting");
                self.reset_backend(key);
            }
            Internal::LearnFoundRows => {
                // The client has its answer already (as for the read-back
                // below): the count stays the backend's, which the client
                // keeps.
                debug!("backend {key}: reading FOUND_ROWS() failed: {msg}");
                self.backends[key].rows.clear();
                self.release_after_response(key, false);
            }
            Internal::ReadUserVars | Internal::ReadUserVarValues => {
                // The client has its answer already: an ERR now would be
                // taken as the answer to its next command. What could not
                // be read back keeps the client on this backend instead.
                debug!("backend {key}: reading user variables failed: {msg}");
                let b = &mut self.backends[key];
                b.user_vars_pending = None;
                self.finish_user_vars(key, UserVarsOutcome::Failed, None, None);
            }
            _ => {
                if let Some(client) = self.backends[key].client {
                    self.detach_backend_client(key);
                    // The backend goes: a client that held it pinned holds
                    // nothing any more (its state went with it).
                    if let Some(c) = self
                        .clients
                        .get_mut(client.key)
                        .filter(|c| c.serial == client.serial && c.pinned == Some(key))
                    {
                        c.pinned = None;
                        c.drop_pins();
                    }
                    self.fail_request(
                        client,
                        crate::protocol::consts::err::ER_UNKNOWN_ERROR,
                        &format!(
                            "funnel: cannot restore your session on a backend connection: {msg}"
                        ),
                    );
                }
                self.backend_lost(key, format!("{step:?} failed: {msg}"));
            }
        }
    }

    /// The collation `character_set_results` has on this backend, from an
    /// internal query's metadata (`id`: its first column's, a string's).
    /// Not known (None) when the table cannot name it or it is not of the
    /// character set the variable names (`character_set_results` NULL: the
    /// column's own).
    pub(super) fn learn_results_collation(&mut self, key: usize, id: Option<u16>) {
        let server = self.server_of(key);
        let b = &mut self.backends[key];
        let charsets = self.servers[server].charsets.as_ref();
        let name = id
            .and_then(|id| u8::try_from(id).ok())
            .and_then(|id| charsets?.get(&id))
            .filter(|(cs, _)| b.session.vars.get("character_set_results") == Some(cs))
            .map(|(_, coll)| coll.clone());
        b.session.set_results_collation(name);
    }

    /// A client's `SET NAMES` (`b.set_names`, taken) was answered with
    /// `end`: when mysqld said OK, set `collation_connection` and the
    /// results collation it gave, which its tracker does not report (it
    /// reports the three character sets), if the funnel knows them without
    /// reading them back: `SET NAMES cs COLLATE coll` gives both coll (as
    /// the collation table names it), `SET NAMES cs` the collation an
    /// earlier one gave on this connection (`names_defaults`); else the
    /// read-back that follows learns it (`names_learn`). True when set.
    pub(super) fn set_names_collation(&mut self, key: usize, end: EndKind) -> bool {
        let b = &mut self.backends[key];
        let Some(names) = b.set_names.take() else {
            return false;
        };
        let server = b.server;
        let vars = &b.session.vars;
        let Some(cs) = vars.get("character_set_results") else {
            return false;
        };
        if end != EndKind::Ok
            || b.command != COM_QUERY
            || !b.response.charset_changed
            || vars.get("character_set_client") != Some(cs)
            || vars.get("character_set_connection") != Some(cs)
            || NAMES_CHOOSERS.iter().any(|v| vars.contains_key(*v))
        {
            return false;
        }
        let coll = match names {
            SetNames::Charset(_) => match b.names_defaults.iter().find(|(c, _)| c == cs) {
                Some((_, coll)) => coll.clone(),
                None => {
                    b.names_learn = Some(cs.to_string());
                    return false;
                }
            },
            SetNames::Collate(_, name) => {
                let table = self.servers[server].charsets.as_ref();
                match table.and_then(|t| {
                    t.values()
                        .find(|(c, coll)| c == cs && coll.eq_ignore_ascii_case(&name))
                }) {
                    Some((_, coll)) => coll.clone(),
                    None => return false,
                }
            }
            SetNames::Default => return false,
        };
        b.session.set_var("collation_connection", &coll);
        b.session.set_results_collation(Some(coll));
        true
    }

    /// The user variables of the client of `key` were read back from
    /// `information_schema.USER_VARIABLES`: numbers are exact as shown;
    /// strings are read again with their bytes, character set and
    /// collation; a client with more than `max_replayed_user_vars` stays
    /// on this backend instead.
    pub(super) fn user_vars_read(&mut self, key: usize) {
        let results = self.backends[key].rows_charset;
        self.learn_results_collation(key, results);
        let limit = self.config.max_replayed_user_vars;
        let b = &mut self.backends[key];
        let mut read = UserVarsRead {
            exact: true,
            ..UserVarsRead::default()
        };
        let mut count = 0usize;
        for row in b.rows.drain(..) {
            let [Some(name), value, Some(ty), _charset] = row.as_slice() else {
                read.exact = false;
                continue;
            };
            if name == COLLATION_ROW {
                if let Some(v) = value {
                    b.session.set_var("collation_connection", v);
                }
                continue;
            }
            if name == INSERT_ID_ROW {
                read.insert_id = value.as_deref().and_then(|v| v.parse::<u64>().ok());
                continue;
            }
            if name == FOUND_ROWS_ROW {
                read.found_rows = value.as_deref().and_then(|v| v.parse::<u64>().ok());
                continue;
            }
            if name.contains(char::REPLACEMENT_CHARACTER) {
                // Not UTF-8 as read (the client's character_set_results):
                // a replay could not name it.
                read.exact = false;
                continue;
            }
            match user_var_literal(value.as_deref(), ty) {
                // A NULL of a type the funnel does not know: as if unset.
                UserVarRead::Null => continue,
                UserVarRead::Literal(lit) => {
                    read.vars.insert(name.clone(), lit);
                }
                UserVarRead::String => read.strings.push(name.clone()),
                UserVarRead::Inexact => read.exact = false,
            }
            // A variable set to NULL is replayed (for its type) but does not
            // count against max_replayed_user_vars: setting one to NULL is
            // how a client goes back below it.
            count += usize::from(value.is_some());
        }
        if let Some(cs) = b.names_learn.take() {
            // After `SET NAMES cs`: the collation it gave both.
            let s = &b.session;
            if let (Some(coll), Some(results)) = (
                s.vars.get("collation_connection"),
                s.results_collation.as_ref(),
            ) {
                if coll == results
                    && s.vars.get("character_set_results") == Some(&cs)
                    && !b.names_defaults.iter().any(|(c, _)| *c == cs)
                {
                    let coll = coll.to_string();
                    b.names_defaults.push((cs.clone(), coll.clone()));
                    let server = b.server;
                    let srv = &mut self.servers[server];
                    if srv.names_default_fixed() {
                        srv.names_defaults.insert(cs, coll);
                    }
                }
            }
        }
        let b = &mut self.backends[key];
        if count > limit {
            self.finish_user_vars(
                key,
                UserVarsOutcome::TooMany,
                read.insert_id,
                read.found_rows,
            );
            return;
        }
        if read.strings.is_empty() {
            self.finish_read(key, read);
            return;
        }
        let names: Vec<&str> = read.strings.iter().map(String::as_str).collect();
        // As USER_VARS_SQL, whatever the client's max_statement_time.
        let mut sql = if b.session.vars.contains_key("max_statement_time") {
            b"SET STATEMENT max_statement_time = 0 FOR ".to_vec()
        } else {
            Vec::new()
        };
        sql.extend_from_slice(&user_var_values_sql(&names));
        b.user_vars_pending = Some(read);
        self.start_internal(key, Internal::ReadUserVarValues, sql);
    }

    /// The string user variables' values arrived (`user_var_values_sql`).
    pub(super) fn user_var_values_read(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let Some(mut read) = b.user_vars_pending.take() else {
            self.finish_user_vars(key, UserVarsOutcome::Failed, None, None);
            return;
        };
        if b.rows.len() != read.strings.len() {
            read.exact = false;
        }
        for (row, name) in b.rows.drain(..).zip(&read.strings) {
            let literal = match row.as_slice() {
                [Some(hex_name), value, charset, collation]
                    if unhex_name(hex_name).as_deref() == Some(name.as_str()) =>
                {
                    match (value, charset, collation) {
                        (hex, Some(cs), Some(coll)) => {
                            string_user_var_literal(hex.as_deref(), cs, coll)
                        }
                        // No character set: the name did not reach the
                        // variable (a character lost on the way).
                        _ => None,
                    }
                }
                _ => None,
            };
            match literal {
                Some(lit) => {
                    read.vars.insert(name.clone(), lit);
                }
                None => read.exact = false,
            }
        }
        self.finish_read(key, read);
    }

    /// A read-back complete: what it found.
    fn finish_read(&mut self, key: usize, read: UserVarsRead) {
        let (insert_id, found_rows) = (read.insert_id, read.found_rows);
        self.finish_user_vars(
            key,
            UserVarsOutcome::Read(read.vars, read.exact),
            insert_id,
            found_rows,
        );
    }

    /// Record what the read-back found, for the backend and its client, and
    /// finish the client's command.
    pub(super) fn finish_user_vars(
        &mut self,
        key: usize,
        outcome: UserVarsOutcome,
        insert_id: Option<u64>,
        found_rows: Option<u64>,
    ) {
        let b = &mut self.backends[key];
        let outcome = match outcome {
            UserVarsOutcome::Read(vars, _)
                if vars.iter().map(|(n, l)| n.len() + l.len()).sum::<usize>()
                    > MAX_REPLAYED_USER_VAR_BYTES =>
            {
                UserVarsOutcome::TooMany
            }
            other => other,
        };
        let pin = match outcome {
            UserVarsOutcome::Read(vars, exact) => {
                b.session.set_user_vars(vars);
                (!exact).then_some(PinCause::SessionState)
            }
            UserVarsOutcome::TooMany => {
                // Nothing will be replayed: the client keeps this backend,
                // whose variables are its own.
                b.session.set_user_vars(BTreeMap::new());
                Some(PinCause::UserVars)
            }
            UserVarsOutcome::Failed => Some(PinCause::SessionState),
        };
        if let Some(cr) = b.client {
            if let Some(c) = self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
            {
                c.session.copy_from(&b.session);
                if pin != Some(PinCause::UserVars) {
                    c.unpin(PinCause::UserVars);
                }
                if let Some(pin) = pin {
                    c.pin(pin);
                }
                // Only the client's own `LAST_INSERT_ID(expr)` made this
                // connection's value the client's.
                if let Some(id) =
                    insert_id.filter(|_| c.facts.sets_insert_id || c.read_back_insert_id)
                {
                    c.last_insert_id = id;
                    b.last_insert_id = id;
                }
                c.read_back_pending = false;
                c.read_back_insert_id = false;
                // A count the backend held (`SQL_CALC_FOUND_ROWS`).
                if let Some(n) = found_rows
                    .filter(|_| c.found_rows == crate::server::client::FOUND_ROWS_ON_BACKEND)
                {
                    c.found_rows_learnt(n);
                }
            }
        }
        self.release_after_response(key, false);
    }

    /// The answer to `SELECT FOUND_ROWS()`: the client's count (0 if
    /// unreadable, so that it is not asked again).
    fn found_rows_read(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let n = b
            .rows
            .first()
            .and_then(|r| r.first()?.as_deref()?.parse::<u64>().ok())
            .unwrap_or(0);
        b.rows.clear();
        let Some(cr) = b.client else {
            return;
        };
        if let Some(c) = self
            .clients
            .get_mut(cr.key)
            .filter(|c| c.serial == cr.serial)
        {
            c.found_rows_learnt(n);
        }
    }

    /// `ROLLBACK` the transaction a departed client left on its backend.
    /// The variables it set stay: giving them their defaults back would
    /// cost a statement whether or not the next command needs it, and the
    /// next DB-API page sets autocommit off again (the funnel answers that
    /// `SET` itself, so the page's first select finds a backend that has
    /// it already).
    pub(super) fn end_transaction(&mut self, key: usize) {
        self.start_internal(key, Internal::Rollback, ROLLBACK_SQL.to_vec());
    }

    /// Return a backend's session to a clean state before anyone else uses it.
    pub(in crate::server) fn reset_backend(&mut self, key: usize) {
        self.detach_backend_client(key);
        let b = &mut self.backends[key];
        // The option survives COM_RESET_CONNECTION (it is a capability).
        b.stmts.clear();
        b.prepare = None;
        b.last_insert_id = 0;
        b.session = SessionVars::new();
        b.diagnostics_of = None;
        b.dirty = false;
        b.own_timeouts = false;
        if b.discard_on_reset {
            // Its profiling history would survive the reset.
            let pool = b.pool;
            self.close_backend(key);
            self.maintain_pool(pool);
            return;
        }
        self.start_internal(key, Internal::Reset, Vec::new());
    }
}

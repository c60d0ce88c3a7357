//! A client's commands: what the funnel answers itself, what it refuses, and
//! what goes to the backlog and a backend (`KILL`, retries, queue timeouts).

use super::*;
use crate::server::loops::{AfterLoops, KillOutcome};

impl Engine {
    /// Decide what to do with the client's next command.
    pub(in crate::server) fn handle_command(&mut self, key: usize) {
        // Whatever the previous command's answer was captured for.
        self.drop_cache_fill(key);
        let c = &mut self.clients[key];
        let Some(span) = c.current() else {
            return;
        };
        let data = c.rbuf.as_slice();
        let cmd = data.get(HEADER_LEN).copied();
        let Some(cmd) = cmd.filter(|_| span.payload_len > 0) else {
            self.close_client_logged(
                key,
                LogEvent::BadClientInput,
                ER_NET_READ_ERROR,
                "funnel: empty command packet",
            );
            return;
        };
        if cmd == COM_QUIT {
            self.close_client(key, "quit");
            return;
        }
        // The error is the answer to the next command that has one
        // (COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA have none).
        if !matches!(cmd, COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) {
            if let Some(e) = c.own_error.take_if(|e| e.due) {
                let seq = 1u8.wrapping_add(c.seq_offset);
                self.discard_current(key);
                self.client_error(key, seq, e.code, &e.message);
                return;
            }
        }
        // A slot taken for the previous command's prepare that made no
        // statement (mysqld refused it) is free again.
        c.stmts.release();
        if cmd == COM_STMT_PREPARE {
            let (per_client, total) = (
                self.config.max_prepared_stmts_per_client,
                self.config.max_prepared_stmt_count.min(
                    self.servers[self.pools[c.pool].home_server()]
                        .max_prepared
                        .unwrap_or(usize::MAX),
                ),
            );
            if let Err(limit) = c.stmts.reserve(per_client, total) {
                self.discard_current(key);
                self.client_error(key, 1, ER_MAX_PREPARED_STMT_COUNT_REACHED, &limit.message());
                return;
            }
        }
        let privileges_known = self.privileges_known(key);
        let c = &mut self.clients[key];
        let data = c.rbuf.as_slice();
        let pinned = c.pinned;
        // Set again below where the command waits for them.
        if let Some(f) = &mut c.in_flight {
            f.awaiting_privileges = false;
        }
        // Set again below for the commands that may take or release locks.
        c.unreported_taken = 0;
        c.unreported_released = 0;
        match cmd {
            COM_PING => {
                self.discard_current(key);
                self.client_ok(key, 1);
            }
            COM_SET_OPTION => {
                // Per client: the backend keeps multi-statements on.
                let option = set_option_value(span.payload_in(data));
                let known = matches!(
                    option,
                    MYSQL_OPTION_MULTI_STATEMENTS_ON | MYSQL_OPTION_MULTI_STATEMENTS_OFF
                );
                if known {
                    c.multi_statements = option == MYSQL_OPTION_MULTI_STATEMENTS_ON;
                }
                self.discard_current(key);
                if known {
                    self.client_eof(key, 1);
                } else {
                    // As mysqld answers it, the setting unchanged.
                    self.client_error(key, 1, ER_UNKNOWN_COM_ERROR, "Unknown command");
                }
            }
            COM_CHANGE_USER => {
                let parsed = if span.packets == 1 {
                    decode_change_user(span.payload_in(data), c.capabilities).ok()
                } else {
                    None
                };
                if let Some(to) = parsed
                    .as_ref()
                    .and_then(|cu| self.login_elsewhere(&cu.username))
                {
                    // The new user's pool is served by another loop: the
                    // client goes there, and its command with it.
                    if self.move_between_commands(key, to) {
                        return;
                    }
                }
                self.discard_current(key);
                match parsed {
                    Some(cu) => self.change_user(key, cu),
                    None => self.close_client_logged(
                        key,
                        LogEvent::BadClientInput,
                        ER_NET_READ_ERROR,
                        "funnel: malformed COM_CHANGE_USER packet",
                    ),
                }
            }
            COM_RESET_CONNECTION => {
                // The client gets a fresh session; the backend it held (if
                // any) is reset before anyone else uses it.
                self.discard_current(key);
                if self.relay_reset(key) {
                    return;
                }
                self.reset_client_session(key);
                self.client_ok(key, 1);
            }
            COM_STMT_CLOSE => {
                // No answer is due. Backends keep the statement while
                // another client holds the same SQL (and schema); when none
                // does, its copies are closed, and this client's next
                // command waits for the idle backends to have done so. An
                // open cursor's statement is closed on the pinned backend
                // in any case (before its next command), and the client may
                // be free.
                let id = stmt_id_of(&data[HEADER_LEN..]);
                let st = id.and_then(|id| c.stmts.remove(&id));
                c.retally();
                let cursor = id.filter(|id| c.open_cursors.contains(id));
                let cref = c.cref(key);
                self.discard_current(key);
                if let (Some(id), Some(st)) = (cursor, &st) {
                    let c = &mut self.clients[key];
                    c.set_cursor_open(id, false);
                    if let Some(b) = c.pinned.and_then(|b| self.backends.get_mut(b)) {
                        b.stmts.close(st.key);
                    }
                    self.unpin_if_free(key);
                }
                if st.is_some() {
                    self.close_released_stmts(Some(cref));
                }
            }
            COM_STMT_BULK_EXECUTE if c.mariadb_caps & MARIADB_CLIENT_STMT_BULK_OPERATIONS == 0 => {
                // mysqld's answer to a bulk execute from a client that did
                // not negotiate bulk operations.
                self.discard_current(key);
                self.client_error(
                    key,
                    1,
                    ER_UNSUPPORTED_PS,
                    "This command is not supported in the prepared statement protocol yet",
                );
            }
            COM_STMT_EXECUTE
            | COM_STMT_BULK_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_RESET
            | COM_STMT_FETCH => {
                let payload = span.payload_in(data);
                let Some(id) = stmt_id_of(payload) else {
                    self.close_client_logged(
                        key,
                        LogEvent::BadClientInput,
                        ER_NET_READ_ERROR,
                        "funnel: malformed statement command",
                    );
                    return;
                };
                let Some(st) = c.stmts.get_mut(&id) else {
                    self.discard_current(key);
                    if cmd != COM_STMT_SEND_LONG_DATA {
                        let msg = format!(
                            "Unknown prepared statement handler ({id}) given to {}",
                            match cmd {
                                COM_STMT_EXECUTE => "mysqld_stmt_execute",
                                COM_STMT_BULK_EXECUTE => "mysqld_stmt_bulk_execute",
                                COM_STMT_RESET => "mysqld_stmt_reset",
                                _ => "mysqld_stmt_fetch",
                            }
                        );
                        self.client_error(key, 1, ER_UNKNOWN_STMT_HANDLER, &msg);
                    }
                    return;
                };
                c.facts = StatementFacts::default();
                if cmd == COM_STMT_BULK_EXECUTE {
                    // Judged, counted and pinned as an execute of its statement.
                    let facts = st.facts;
                    c.unreported_taken = facts.takes;
                    c.unreported_released = facts.releases;
                    c.facts = facts;
                    let Ok(layout) = bulk_layout(payload, st.num_params) else {
                        self.close_client_logged(
                            key,
                            LogEvent::BadClientInput,
                            ER_NET_READ_ERROR,
                            "funnel: malformed COM_STMT_BULK_EXECUTE",
                        );
                        return;
                    };
                    if let Some(types) = bulk_types(payload, layout, st.num_params) {
                        if st.types != types {
                            st.types = types.to_vec();
                        }
                    }
                }
                if cmd == COM_STMT_EXECUTE {
                    // A prepared `SELECT GET_LOCK(?, 0)` takes a lock as
                    // surely as the text one, and a prepared `CALL` is as
                    // unproven.
                    let facts = st.facts;
                    c.unreported_taken = facts.takes;
                    c.unreported_released = facts.releases;
                    c.facts = facts;
                    let Some(layout) = execute_layout(payload, st.num_params) else {
                        self.close_client_logged(
                            key,
                            LogEvent::BadClientInput,
                            ER_NET_READ_ERROR,
                            "funnel: malformed COM_STMT_EXECUTE",
                        );
                        return;
                    };
                    if let Some(types) = execute_types(payload, layout, st.num_params) {
                        if st.types != types {
                            st.types = types.to_vec();
                        }
                    }
                }
                if cmd == COM_STMT_RESET && pinned.is_none() {
                    // Nothing (long data, cursor) is pending anywhere.
                    self.discard_current(key);
                    self.client_ok(key, 1);
                    return;
                }
                if let Some(f) = &mut c.in_flight {
                    f.stmt = Some(id);
                }
                if cmd == COM_STMT_EXECUTE && self.apply_execute_rules(key, id) {
                    return;
                }
                if cmd == COM_STMT_BULK_EXECUTE {
                    self.note_execute_writes(key, id);
                }
                self.forward_current(key);
            }
            COM_QUERY | COM_INIT_DB | COM_FIELD_LIST | COM_STATISTICS | COM_STMT_PREPARE
            | COM_PROCESS_INFO | COM_REFRESH | COM_DEBUG | COM_CREATE_DB | COM_DROP_DB => {
                c.facts = StatementFacts::default();
                if cmd == COM_REFRESH {
                    // FLUSH by another name (it resets session status, too).
                    c.facts.unproven = Some("COM_REFRESH");
                }
                if cmd == COM_QUERY {
                    let sql = span.payload_in(data).get(1..).unwrap_or_default();
                    let facts = query_facts(sql, self.stats.shape_buf());
                    let set = (facts.set_only && span.packets == 1)
                        .then(|| crate::server::statement::plain_set(sql))
                        .flatten();
                    if !privileges_known && facts.needs_privileges() {
                        // What the funnel answers (KILL, the process list)
                        // depends on the user's privileges: a backend is
                        // asked for them first, then the command comes back.
                        if let Some(f) = &mut c.in_flight {
                            f.awaiting_privileges = true;
                            f.stmt = None;
                        }
                        self.forward_current(key);
                        return;
                    }
                    if let Some(full) = facts.show_processlist {
                        // mysqld would list backend connections: the
                        // funnel lists its clients, with the ids they KILL.
                        let sql = sql.to_vec();
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        if self.share.count > 1 {
                            // With the other loops' clients (`loops.rs`).
                            let ask = self.processlist_ask(key);
                            let then = AfterLoops::ShowProcesslist { seq, full, sql };
                            self.ask_loops(key, ask, then);
                            return;
                        }
                        self.answer_processlist(key, seq, full, &sql, &[]);
                        return;
                    }
                    // After `SQL_CALC_FOUND_ROWS` the count is the backend's;
                    // so is a `LAST_INSERT_ID(n)` whose read-back waits for
                    // the client's warnings to go (`read_back_insert_id`),
                    // or that a dirty backend, which reads nothing back,
                    // keeps (`PinCause::Unproven`).
                    let answered = facts.answered.filter(|(which, _)| match which {
                        FunnelAnswered::FoundRows => c.found_rows != FOUND_ROWS_ON_BACKEND,
                        FunnelAnswered::LastInsertId => {
                            !c.read_back_insert_id && !c.pins.contains(PinCause::Unproven)
                        }
                        _ => true,
                    });
                    if let Some((which, (start, end))) = answered {
                        let name = sql[start..end].to_vec();
                        // Typed as MariaDB types them: (type, length, flags).
                        const UNSIGNED: u16 = 0x0001 | 0x0020 | 0x0080;
                        let (value, column) = match which {
                            FunnelAnswered::LastInsertId => {
                                (c.last_insert_id.to_string(), (0x08, 21, UNSIGNED))
                            }
                            FunnelAnswered::ConnectionId => {
                                (c.id.to_string(), (0x03, 10, UNSIGNED))
                            }
                            FunnelAnswered::RowCount => {
                                (c.row_count.to_string(), (0x08, 21, 0x0001 | 0x0080))
                            }
                            FunnelAnswered::FoundRows => {
                                (c.found_rows.to_string(), (0x08, 21, 0x0001 | 0x0080))
                            }
                        };
                        // As after any SELECT of one row.
                        c.row_count = -1;
                        c.found_rows = 1;
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.client_single_value(key, seq, &name, &value, column);
                        return;
                    }
                    if facts.first_is_kill || facts.later_kill {
                        let sql = sql.to_vec();
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.query_with_kill(key, sql, seq);
                        return;
                    }
                    let rewritten = c
                        .in_flight
                        .as_mut()
                        .is_some_and(|f| std::mem::take(&mut f.rewritten));
                    if !rewritten && facts.names_processlist {
                        let bare = c
                            .session
                            .schema
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case("information_schema"));
                        if let Ok(refs) = crate::server::statement::processlist_refs(sql, bare) {
                            if refs.iter().any(|r| !r.connection_id) {
                                // mysqld's table lists backend connections:
                                // the client gets the funnel's clients, for
                                // mysqld to evaluate the query over.
                                let sql = sql.to_vec();
                                let seq = 1u8.wrapping_add(self.clients[key].seq_offset);
                                self.discard_current(key);
                                if self.share.count > 1 {
                                    // With the other loops' clients.
                                    let ask = self.processlist_ask(key);
                                    let then = AfterLoops::RewriteProcesslist { seq, sql, refs };
                                    self.ask_loops(key, ask, then);
                                    return;
                                }
                                let sql = self.rewrite_processlist(key, &sql, &refs, &[]);
                                self.push_query_part(key, &sql, seq);
                                if let Some(f) = &mut self.clients[key].in_flight {
                                    f.rewritten = true;
                                }
                                self.handle_command(key);
                                return;
                            }
                        }
                    }
                    if facts.load_local && c.capabilities & CLIENT_LOCAL_FILES == 0 {
                        // As mysqld answers such a client, which must never
                        // get the backend's request for a file.
                        let seq = 1u8.wrapping_add(c.seq_offset);
                        self.discard_current(key);
                        self.client_error(
                            key,
                            seq,
                            ER_LOAD_INFILE_CAPABILITY_DISABLED,
                            "The used command is not allowed because the MariaDB server or client has disabled the local infile capability",
                        );
                        return;
                    }
                    if self.apply_query_rules(key, &facts) {
                        return;
                    }
                    let c = &mut self.clients[key];
                    let (pool, unpinned) = (c.pool, c.pinned.is_none());
                    if facts.will_pin() && unpinned && !self.pin_available(pool) {
                        // Refused before it runs, rather than run and its
                        // state discarded after: the connection stays usable.
                        let p = &self.pools[pool];
                        let msg = format!(
                            "funnel: too many pinned clients in pool '{}' (max_pinned_backends = {}); this statement would keep a backend connection for this client and was not run",
                            p.name(),
                            p.user.max_pinned_backends
                        );
                        log_limited!(
                            self,
                            LogEvent::PinnedExhausted,
                            "pool {}: max_pinned_backends = {} reached; a statement that would pin was refused",
                            p.name(),
                            p.user.max_pinned_backends
                        );
                        let seq = 1u8.wrapping_add(self.clients[key].seq_offset);
                        self.discard_current(key);
                        self.client_error(key, seq, ER_CON_COUNT_ERROR, &msg);
                        return;
                    }
                    if let Some(set) = set {
                        // `SET autocommit = 0`, `SET NAMES cs`: known
                        // exactly, they need no backend.
                        if self.set_without_backend(key, &set) {
                            let seq = 1u8.wrapping_add(self.clients[key].seq_offset);
                            self.discard_current(key);
                            self.client_ok(key, seq);
                            return;
                        }
                    }
                    let c = &mut self.clients[key];
                    c.unreported_taken = facts.takes;
                    c.unreported_released = facts.releases;
                    c.facts = facts;
                }
                if let Some(f) = &mut self.clients[key].in_flight {
                    f.stmt = None;
                }
                self.forward_current(key);
            }
            _ => {
                self.discard_current(key);
                let msg = format!(
                    "funnel: {} is not supported through the funnel (commands are multiplexed over shared backend connections)",
                    command_name(cmd)
                );
                self.client_error(key, 1, ER_UNKNOWN_COM_ERROR, &msg);
            }
        }
    }

    /// A query with a `KILL` statement in it: the statements before the
    /// first `KILL` run on a backend as a query of their own, the `KILL` is
    /// the funnel's, and the rest runs after, each part's answer numbered on
    /// from the last (`seq`: the first answer packet's sequence id).
    pub(super) fn query_with_kill(&mut self, key: usize, sql: Vec<u8>, seq: u8) {
        let split = match kill_split(&sql) {
            Ok(Some(split)) => split,
            _ => {
                // Not splittable: a KILL inside a compound statement, ...
                self.client_error(key, seq, ER_UNKNOWN_COM_ERROR, KILL_UNSUPPORTED);
                return;
            }
        };
        if let Some(end) = split.before {
            // The statements before the KILL, as a query of their own; the
            // KILL and what follows wait for its answer.
            let rest = sql[split.kill.0..].to_vec();
            self.clients[key].multi_rest = Some(Box::new(MultiRest {
                sql: rest,
                seq: 0,
                ready: false,
            }));
            self.push_query_part(key, &sql[..end], seq);
            self.handle_command(key);
            return;
        }
        let more = split.more_after(&sql);
        match parse_kill(&sql[split.kill.0..split.kill.1]) {
            Ok(Some(kill)) => {
                let rest = sql.get(split.rest..).unwrap_or_default();
                if self.kill(key, kill, seq, more, rest) && more {
                    if let Some(c) = self.clients.get_mut(key) {
                        c.multi_rest = Some(Box::new(MultiRest {
                            sql: sql[split.rest..].to_vec(),
                            seq: seq.wrapping_add(1),
                            ready: true,
                        }));
                    }
                }
            }
            _ => self.client_error(key, seq, ER_UNKNOWN_COM_ERROR, KILL_UNSUPPORTED),
        }
    }

    /// Make `sql` the client's current command, a `COM_QUERY` whose answer
    /// starts with sequence id `seq`, ahead of anything it sent after.
    pub(in crate::server) fn push_query_part(&mut self, key: usize, sql: &[u8], seq: u8) {
        let c = &mut self.clients[key];
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql);
        let mut framed = Vec::with_capacity(payload.len() + 8);
        write_packet(&mut framed, 0, &payload);
        let Ok(Some(span)) = scan_message(&framed, usize::MAX) else {
            return;
        };
        framed.extend_from_slice(c.rbuf.as_slice());
        c.rbuf.clear();
        self.bufs.ensure(&mut c.rbuf);
        c.rbuf.extend_from_slice(&framed);
        c.in_flight = Some(InFlight::new(span));
        c.seq_offset = seq.wrapping_sub(1);
    }

    /// The next part of a query with a `KILL` in it.
    pub(super) fn start_multi_rest(&mut self, key: usize, m: MultiRest) {
        self.push_query_part(key, &m.sql, m.seq);
        self.handle_command(key);
    }

    /// `KILL [QUERY] id` from client `key`, for a funnel connection id,
    /// answered with sequence id `seq`; `more`: statements follow in the
    /// same query. `true` when the client got an OK and its query goes on.
    pub(super) fn kill(
        &mut self,
        key: usize,
        kill: Kill,
        seq: u8,
        more: bool,
        rest: &[u8],
    ) -> bool {
        let id = u32::try_from(kill.id).ok();
        if id == Some(self.clients[key].id) {
            if kill.query_only {
                // The statement being killed is the KILL itself, as on mysqld.
                self.client_error(
                    key,
                    seq,
                    ER_QUERY_INTERRUPTED,
                    "Query execution was interrupted",
                );
            } else {
                // mysqld answers a self-kill with an error and closes.
                self.interrupt_client(key);
                self.clients[key].seq_offset = seq.wrapping_sub(1);
                self.close_client_with_error(key, (1927, "70100"), "Connection was killed");
            }
            return false;
        }
        let Some(id) = id else {
            return self.answer_kill(key, kill.id, KillOutcome::NotHere, seq, more);
        };
        let user = self.clients[key].user.clone();
        let kill_any = self.privileges_of(key).kill_any;
        let outcome = self.kill_here(id, kill.query_only, &user, kill_any);
        if outcome == KillOutcome::NotHere && self.share.count > 1 {
            // Maybe another loop's client (`loops.rs`): the answer waits
            // for theirs.
            let ask = crate::server::loops::LoopAsk::Kill {
                id,
                query_only: kill.query_only,
                user,
                kill_any,
            };
            let then = AfterLoops::Kill {
                id: kill.id,
                seq,
                more,
                rest: rest.to_vec(),
            };
            self.ask_loops(key, ask, then);
            return false;
        }
        self.answer_kill(key, kill.id, outcome, seq, more)
    }

    /// `KILL [QUERY] id` of another client of this loop, by a client of
    /// `user` (`kill_any`: SUPER or CONNECTION ADMIN), from this loop or
    /// another: done, or why not.
    pub(in crate::server) fn kill_here(
        &mut self,
        id: u32,
        query_only: bool,
        user: &str,
        kill_any: bool,
    ) -> KillOutcome {
        let Some(target) = self
            .client_ids
            .get(&id)
            .copied()
            .filter(|&t| self.clients.get(t).is_some_and(|c| c.logged_in()))
        else {
            return KillOutcome::NotHere;
        };
        // As mysqld decides: its own user's connections, any with SUPER or
        // CONNECTION ADMIN.
        if self.clients[target].user != user && !kill_any {
            return KillOutcome::Denied;
        }
        if query_only && self.clients[target].is_running() && self.relayed_backend(target).is_some()
        {
            return KillOutcome::Relayed;
        }
        self.interrupt_client(target);
        if !query_only {
            self.close_client(target, "killed");
        }
        KillOutcome::Done
    }

    /// Answer client `key`'s `KILL id` as it went: an OK (true: its query
    /// goes on) or mysqld's error.
    pub(in crate::server) fn answer_kill(
        &mut self,
        key: usize,
        id: u64,
        outcome: KillOutcome,
        seq: u8,
        more: bool,
    ) -> bool {
        const ER_KILL_DENIED: (u16, &str) = (1095, "HY000");
        match outcome {
            KillOutcome::Done => {
                let more = if more { SERVER_MORE_RESULTS_EXISTS } else { 0 };
                self.client_ok_with(key, seq, more);
                return true;
            }
            KillOutcome::NotHere => self.client_error(
                key,
                seq,
                ER_NO_SUCH_THREAD,
                &format!("Unknown thread id: {id}"),
            ),
            KillOutcome::Denied => self.client_error(
                key,
                seq,
                ER_KILL_DENIED,
                &format!("You are not owner of thread {id}"),
            ),
            // Stopping it takes a second connection as that user, which
            // only mysqld could authenticate.
            KillOutcome::Relayed => self.client_error(
                key,
                seq,
                ER_UNKNOWN_COM_ERROR,
                "funnel: KILL QUERY of a relayed login's statement is not supported; KILL CONNECTION is",
            ),
        }
        false
    }

    /// What `KILL` does to its target's current command: taken out of the
    /// backlog with an error, or killed on mysqld.
    pub(in crate::server) fn interrupt_client(&mut self, target: usize) {
        let pool = self.clients[target].pool;
        self.bump(pool, |c| c.killed += 1);
        let tref = self.clients[target].cref(target);
        let c = &self.clients[target];
        let cmd = c
            .current()
            .and_then(|_| c.rbuf.as_slice().get(HEADER_LEN).copied());
        match c.state {
            // A command without an answer (COM_STMT_SEND_LONG_DATA,
            // COM_STMT_CLOSE) is no statement a KILL QUERY could stop on
            // mysqld: it runs. Failing it would hand its error to the
            // client's next command, one the KILL never saw.
            ClientState::Queued if cmd.is_some_and(|cmd| expect_for(cmd) == Expect::None) => {}
            ClientState::Queued => {
                self.pools[pool].remove_client(tref);
                self.fail_request(
                    tref,
                    ER_QUERY_INTERRUPTED,
                    "Query execution was interrupted",
                );
            }
            ClientState::Running(b) => self.kill_running(pool, b, tref),
            _ => {}
        }
    }

    /// Send the current command to the client's pinned backend, or queue it.
    pub(in crate::server) fn forward_current(&mut self, key: usize) {
        let c = &self.clients[key];
        let pool = c.pool;
        let cref = c.cref(key);
        let pinned = c.pinned;
        if self.queued_elsewhere(key).is_none() {
            self.bump(pool, |c| c.requests += 1);
        }
        match pinned {
            Some(b) => self.start_request(b, cref),
            None => self.enqueue_current(key),
        }
    }

    /// Put the client's current command in its pool's backlog.
    pub(in crate::server) fn enqueue_current(&mut self, key: usize) {
        let queued_elsewhere = self.queued_elsewhere(key);
        let c = &mut self.clients[key];
        let pool = c.pool;
        let req = Request {
            client: c.cref(key),
            enqueued: queued_elsewhere.unwrap_or(self.now),
            moved: queued_elsewhere.is_some(),
        };
        if !matches!(c.state, ClientState::ConnectDb) {
            c.set_state(ClientState::Queued);
        }
        let queued = match queued_elsewhere {
            // Taken from another loop's backlog: where its clock puts it.
            Some(_) => {
                self.pools[pool].enqueue_in_order(req);
                Ok(())
            }
            None => self.pools[pool].enqueue(req),
        };
        match queued {
            Ok(()) => {
                self.stats
                    .backlog_depth(pool, self.pools[pool].backlog_len(), self.now);
                self.dispatch(pool);
                self.fail_refused_backlog(pool);
            }
            Err(full) => {
                self.bump(pool, |c| c.backlog_full += 1);
                let msg = format!(
                    "funnel: backlog full in pool '{}' (backlog_size = {}); the command was not run",
                    self.pools[pool].name(), full.limit
                );
                let c = &self.clients[key];
                log_limited!(self, LogEvent::BacklogFull, "{}: {msg}", c.label());
                self.fail_request(req.client, ER_CON_COUNT_ERROR, &msg);
            }
        }
    }

    /// Put the client's command back at the head of its pool's backlog: its
    /// backend died before any of its answer reached the client, and the
    /// command either never reached mysqld or is safe to repeat (see
    /// `Server::backend_lost`). It waits for a backend like any queued
    /// command, and times out like one: its clock is that of the oldest
    /// command waiting (its own, now, when none is), so the backlog stays
    /// in the order of its clocks.
    pub(in crate::server) fn retry_current(&mut self, key: usize) {
        let c = &mut self.clients[key];
        let now = self.now;
        if let Some(f) = &mut c.in_flight {
            if let CommandBytes::Sent(span) = f.bytes {
                // Still the first message in the client's input.
                f.bytes = CommandBytes::Handling(span);
            }
            f.retries = f.retries.saturating_add(1);
            f.retried_at = Some(now);
        }
        c.set_state(ClientState::Queued);
        let pool = c.pool;
        let client = c.cref(key);
        let p = &mut self.pools[pool];
        let enqueued = p.oldest_enqueued().map_or(self.now, |t| t.min(self.now));
        // Not refused when the backlog is full: the command was let in once.
        p.push_front(Request {
            client,
            enqueued,
            moved: false,
        });
        self.bump(pool, |c| c.retried += 1);
        self.stats
            .backlog_depth(pool, self.pools[pool].backlog_len(), self.now);
        self.dispatch(pool);
    }

    /// Answer a queued (or just started) command with an error instead.
    pub(in crate::server) fn fail_request(
        &mut self,
        client: ClientRef,
        code: (u16, &'static str),
        msg: &str,
    ) {
        let Some(c) = self
            .clients
            .get_mut(client.key)
            .filter(|c| c.serial == client.serial)
        else {
            return;
        };
        let connect_db = matches!(c.state, ClientState::ConnectDb);
        let seq = 1u8.wrapping_add(c.seq_offset);
        let cmd = c
            .current()
            .and_then(|_| c.rbuf.as_slice().get(HEADER_LEN).copied());
        if let Some(span) = c.take_current() {
            c.rbuf.consume(span.wire_len);
        }
        c.drop_sent();
        self.bufs.release(&mut c.rbuf);
        c.set_idle();
        if cmd.is_some_and(|cmd| expect_for(cmd) == Expect::None) {
            // COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE: no answer is due
            // (an ERR now would answer the next command); mysqld reports a
            // long-data error at the execute, the funnel at the next
            // command that has an answer.
            if !c.own_error_due() {
                c.own_error = Some(OwnError::due(code, msg.to_string()));
            }
            self.client_ready(client.key);
            return;
        }
        self.client_error(client.key, seq, code, msg);
        if connect_db {
            if let Some(c) = self.clients.get_mut(client.key) {
                c.close_after_flush = true;
            }
            self.flush_client(client.key);
            return;
        }
        self.client_ready(client.key);
    }

    pub(in crate::server) fn queue_timeout(&mut self, req: Request) {
        let Some(c) = self.clients.get(req.client.key) else {
            return;
        };
        if c.serial != req.client.serial || !c.is_queued() {
            return;
        }
        let pool = c.pool;
        self.bump(pool, |c| c.queue_timeouts += 1);
        let pool = &self.pools[pool];
        let mut msg = format!(
            "funnel: the command waited {} ms in the backlog of pool '{}' (queue_timeout_ms = {}) without getting a backend connection; it was not run",
            self.now.saturating_duration_since(req.enqueued).as_millis(),
            pool.name(),
            pool.user.queue_timeout.as_millis()
        );
        if let Some(e) = &pool.last_backend_error {
            msg.push_str(&format!(" (backend unavailable: {e})"));
        }
        let c = &self.clients[req.client.key];
        log_limited!(self, LogEvent::QueueTimeout, "{}: {msg}", c.label());
        self.fail_request(req.client, ER_STATEMENT_TIMEOUT, &msg);
    }

    /// The client's command is done: handle what it sent meanwhile.
    pub(in crate::server) fn client_ready(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            if c.close_after_flush {
                return;
            }
            self.process_client_input(key);
        }
    }

    /// Drop the current command's bytes (it was answered by the funnel).
    pub(in crate::server) fn discard_current(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            if let Some(span) = c.take_current() {
                c.rbuf.consume(span.wire_len);
            }
        }
    }
}

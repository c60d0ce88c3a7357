//! The answer's path: forwarding mysqld's response to the client frame by
//! frame (rows untouched), learning the session from it, and backpressure
//! towards a slow reader.

use super::*;

impl Engine {
    /// Forward complete response packets to the client, rewriting only OK
    /// packets that carry session state (their session-tracking part is the
    /// funnel's: a client with CLIENT_SESSION_TRACK gets what its own
    /// settings track, `client_track`; others nothing).
    pub(super) fn forward_response(&mut self, key: usize) {
        let track_server = self.server_of(key);
        let b = &mut self.backends[key];
        let client = b.client;
        let draining = b.state == BackendState::Draining;
        let mut c = match client {
            Some(cr) if !draining => self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial),
            _ => None,
        };
        if let Some(c) = c.as_mut() {
            self.bufs.ensure(&mut c.wbuf);
        }
        // Where this call's output starts (for the result cache's capture).
        let out_start = c.as_ref().map_or(0, |c| c.wbuf.len());
        let mut pos = 0; // bytes of rbuf handled
        let mut run_start = 0; // start of frames not yet copied to the client
        let mut finished: Option<(u16, EndKind)> = None;
        let mut infile = false;
        let mut timeouts_changed = false;
        let mut error: Option<String> = None;
        // mysqld's ERR 1461 to a client's prepare, held back while cached
        // statements make room for a retry: the frame, and its end.
        let mut refused: Option<(Vec<u8>, u16, EndKind)> = None;
        let offset = b.seq_offset;
        // Extended column metadata: the backend's and the client's.
        let ext_backend = b.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0;
        let ext_client = c.as_ref().map_or(ext_backend, |c| {
            c.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0
        });
        // A query with a KILL after this part: its last result must say
        // that more follow, as in mysqld's answer to the whole query.
        let more_after = c
            .as_ref()
            .is_some_and(|c| c.multi_rest.as_ref().is_some_and(|m| !m.ready));
        {
            let data = b.rbuf.as_mut_slice();
            while let Some((header, _)) = next_frame(&data[pos..]) {
                let total = header.total_len();
                let payload = &data[pos + HEADER_LEN..pos + total];
                let progress = match b.tracker.feed(payload) {
                    Ok(p) => p,
                    Err(e) => {
                        error = Some(format!("malformed response: {e}"));
                        break;
                    }
                };
                let kind = b.tracker.last_kind();
                let part_done = more_after
                    && matches!(progress, Progress::Complete { end, .. } if end != EndKind::Err);
                if more_after
                    && matches!(
                        kind,
                        PacketKind::Ok | PacketKind::Eof | PacketKind::MetadataEof
                    )
                {
                    // Every status of a result but the last already says
                    // so; the last one's too (its column definitions' EOF
                    // included).
                    add_status_flags(
                        &mut data[pos + HEADER_LEN..pos + total],
                        SERVER_MORE_RESULTS_EXISTS,
                    );
                }
                let payload = &data[pos + HEADER_LEN..pos + total];
                // What the client gets for this packet: the backend speaks
                // EOF packets, the client may have asked for OK terminators.
                let action = match b.eof.translate(kind, payload) {
                    Ok(a) => a,
                    Err(e) => {
                        error = Some(format!("malformed response: {e}"));
                        break;
                    }
                };
                let seq = b.eof.client_seq(header.seq.wrapping_add(offset));
                if part_done {
                    if let Some(m) = c.as_mut().and_then(|c| c.multi_rest.as_mut()) {
                        m.ready = true;
                        m.seq = seq.wrapping_add(1);
                    }
                }
                if kind == PacketKind::Err
                    && b.command == COM_STMT_PREPARE
                    && pos == 0
                    && b.response.bytes == 0
                    && c.is_some()
                    && b.prepare.is_some()
                    && b.prepare_retries < PREPARE_RETRIES
                    && decode_err(payload).is_ok_and(|e| {
                        e.code == crate::protocol::consts::err::ER_MAX_PREPARED_STMT_COUNT_REACHED.0
                    })
                {
                    if let Progress::Complete { status, end } = progress {
                        let mut frame = data[pos..pos + total].to_vec();
                        set_seq(&mut frame, seq);
                        refused = Some((frame, status, end));
                        pos += total;
                        run_start = pos;
                        break;
                    }
                }
                match action {
                    EofAction::Pass if seq != header.seq => {
                        set_seq(&mut data[pos..pos + total], seq);
                    }
                    EofAction::Pass => {}
                    EofAction::Drop | EofAction::ReplaceWithOk(_) => {
                        if let Some(c) = c.as_mut() {
                            c.wbuf.extend_from_slice(&data[run_start..pos]);
                            if let EofAction::ReplaceWithOk(ok) = action {
                                let len = ok.len() as u8;
                                c.wbuf.extend_from_slice(&[len, 0, 0, seq]);
                                c.wbuf.extend_from_slice(&ok);
                            }
                        }
                        run_start = pos + total;
                    }
                }
                let payload = &data[pos + HEADER_LEN..pos + total];
                if kind == PacketKind::PrepareOk {
                    if let (Some(p), Ok(ok)) = (
                        b.prepare.take(),
                        crate::protocol::response::decode_stmt_prepare_ok(payload),
                    ) {
                        let mut key_hash = stmt_key(b.pool, p.schema.as_deref(), &p.sql);
                        if c.as_ref()
                            .is_some_and(|c| c.stmts.values().any(|s| s.key == key_hash))
                        {
                            key_hash = own_stmt_key(key_hash, p.funnel_id);
                        }
                        b.stmts
                            .insert(key_hash, ok.statement_id, p.sql.clone(), p.schema.clone());
                        if c.is_none() && !self.stmt_holders.borrow().is_held(key_hash) {
                            // Its client left: nobody will execute it.
                            b.stmts.close(key_hash);
                        }
                        if let Some(c) = c.as_mut() {
                            c.stmts.insert(
                                p.funnel_id,
                                ClientStmt {
                                    // Scanned once, for all its executes.
                                    facts: statement_facts(&p.sql),
                                    sql: p.sql,
                                    schema: p.schema,
                                    key: key_hash,
                                    num_params: ok.num_params,
                                    types: Vec::new(),
                                },
                            );
                            c.retally();
                        }
                        // The client sees the funnel's id, not this backend's.
                        let at = pos + HEADER_LEN + 1;
                        data[at..at + 4].copy_from_slice(&p.funnel_id.to_le_bytes());
                    }
                    pos += total;
                    match progress {
                        Progress::Complete { status, end } => {
                            finished = Some((status, end));
                            break;
                        }
                        _ => continue,
                    }
                }
                if kind == PacketKind::ColumnDef && ext_backend != ext_client {
                    // As mysqld describes columns to this client: with or
                    // without the extended metadata it negotiated.
                    let edit = match column_def_edit(payload, ext_backend, ext_client) {
                        Ok(e) => e,
                        Err(e) => {
                            error = Some(format!("malformed column definition: {e}"));
                            break;
                        }
                    };
                    if let Some(c) = c.as_mut() {
                        c.wbuf.extend_from_slice(&data[run_start..pos]);
                        let (head, pad, rest): (&[u8], &[u8], &[u8]) = match edit {
                            ColumnDefEdit::Strip { at, len } => {
                                (&payload[..at], &[], &payload[at + len..])
                            }
                            ColumnDefEdit::InsertEmpty { at } => {
                                (&payload[..at], &[0], &payload[at..])
                            }
                            ColumnDefEdit::Pass => (payload, &[], &[]),
                        };
                        // A column definition is far below the 16 MiB split.
                        let len = head.len() + pad.len() + rest.len();
                        c.wbuf.extend_from_slice(&[
                            len as u8,
                            (len >> 8) as u8,
                            (len >> 16) as u8,
                            seq,
                        ]);
                        c.wbuf.extend_from_slice(head);
                        c.wbuf.extend_from_slice(pad);
                        c.wbuf.extend_from_slice(rest);
                    }
                    run_start = pos + total;
                }
                match kind {
                    PacketKind::Row => b.response.rows += 1,
                    PacketKind::ColumnCount => {
                        b.response.rows = 0;
                        b.response.result_set = true;
                    }
                    PacketKind::Err if pos == 0 && b.response.bytes == 0 => {
                        b.response.parse_error_only = decode_err(payload).is_ok_and(|e| {
                            e.code == crate::protocol::consts::err::ER_PARSE_ERROR.0
                        });
                    }
                    PacketKind::Ok => {
                        if let Ok(ok) = decode_ok(payload, b.capabilities) {
                            if ok.session_state.is_some()
                                || ok.status & SERVER_SESSION_STATE_CHANGED != 0
                            {
                                if let Some(block) = ok.session_state {
                                    // Whatever was pending is reported now.
                                    b.tracker_pending = false;
                                    let changes = b.session.apply_tracked(block);
                                    b.response.saw_unreplayable |= changes.unreplayable;
                                    b.discard_on_reset |= changes.survives_reset;
                                    b.response.saw_state_change |= changes.state_changed;
                                    b.response.state_applied += changes.applied;
                                    b.response.charset_changed |= changes.charset_changed;
                                    if changes.wait_timeout.is_some()
                                        || changes.interactive_timeout.is_some()
                                    {
                                        // The client's own; the backend
                                        // gets the global ones back.
                                        b.own_timeouts = true;
                                        if let Some(c) = c.as_mut() {
                                            c.timeouts.apply(&changes);
                                            timeouts_changed = true;
                                        }
                                    }
                                } else {
                                    b.response.saw_state_change = true;
                                }
                                if let Some(c) = c.as_mut() {
                                    c.wbuf.extend_from_slice(&data[run_start..pos]);
                                    let mut state = None;
                                    if let Some(block) = ok
                                        .session_state
                                        .filter(|_| c.capabilities & CLIENT_SESSION_TRACK != 0)
                                    {
                                        // mysqld reports the statement that
                                        // changes the settings under the new ones.
                                        c.track.update(block);
                                        self.track_buf.clear();
                                        if c.track
                                            .filter(
                                                block,
                                                &mut self.track_buf,
                                                &self.servers[track_server].track_order,
                                            )
                                            .is_ok_and(|n| n > 0)
                                        {
                                            state = Some(&self.track_buf[..]);
                                        }
                                    }
                                    let flag = if state.is_some() {
                                        SERVER_SESSION_STATE_CHANGED
                                    } else {
                                        0
                                    };
                                    let rewritten = OkPacket {
                                        status: (ok.status & !SERVER_SESSION_STATE_CHANGED) | flag,
                                        session_state: state,
                                        ..ok
                                    };
                                    self.scratch.clear();
                                    encode_ok(&mut self.scratch, &rewritten, c.capabilities);
                                    // An OK packet is far below the 16 MiB split.
                                    let len = self.scratch.len();
                                    c.wbuf.extend_from_slice(&[
                                        len as u8,
                                        (len >> 8) as u8,
                                        (len >> 16) as u8,
                                        seq,
                                    ]);
                                    c.wbuf.extend_from_slice(&self.scratch);
                                }
                                run_start = pos + total;
                            }
                            b.response.saw_warnings |= ok.warnings > 0;
                            b.last_affected_rows = ok.affected_rows;
                            if ok.last_insert_id != 0 {
                                b.last_insert_id = ok.last_insert_id;
                                if let Some(c) = c.as_mut() {
                                    c.last_insert_id = ok.last_insert_id;
                                }
                            }
                        }
                    }
                    PacketKind::Eof | PacketKind::MetadataEof => {
                        if let Ok(eof) = crate::protocol::response::decode_eof(payload) {
                            if eof.status & SERVER_SESSION_STATE_CHANGED != 0 {
                                b.response.saw_eof_state_change = true;
                                b.tracker_pending = true;
                            }
                            if kind == PacketKind::Eof {
                                b.response.saw_warnings |= eof.warnings > 0;
                            }
                        }
                    }
                    _ => {}
                }
                pos += total;
                match progress {
                    Progress::NeedMore => {}
                    Progress::Complete { status, end } => {
                        finished = Some((status, end));
                        break;
                    }
                    Progress::LocalInfile => {
                        infile = true;
                        break;
                    }
                }
            }
            if let Some(c) = c.as_mut() {
                if run_start == 0 && pos == data.len() && c.wbuf.is_empty() {
                    // All that was read goes to the client as it is (the
                    // common case: one whole answer, its packets edited in
                    // place if at all): hand over the buffer it was read
                    // into, and the client's socket is written from it,
                    // instead of copying it. The backend gets the client's
                    // empty buffer, as if it had consumed it all.
                    std::mem::swap(&mut c.wbuf, &mut b.rbuf);
                } else {
                    c.wbuf.extend_from_slice(&data[run_start..pos]);
                }
                c.bytes_out += pos as u64;
                if let Some(cr) = client {
                    let out = c.wbuf.as_slice();
                    self.rules
                        .cache
                        .capture(cr.key, cr.serial, &out[out_start.min(out.len())..]);
                }
                if pos > 0 && c.sent().is_some() {
                    // The answer has started: the command cannot be sent again.
                    c.drop_sent();
                    self.bufs.release(&mut c.rbuf);
                }
            }
        }
        b.rbuf.consume(pos);
        if let Some((frame, status, end)) = refused {
            match self.make_stmt_room(key) {
                StmtRoom::Now => self.retry_prepare(key),
                StmtRoom::Wait => {}
                StmtRoom::None => {
                    // As mysqld said it.
                    let b = &mut self.backends[key];
                    b.response.bytes += frame.len() as u64;
                    if let Some(cr) = b.client {
                        if let Some(c) = self.clients.get_mut(cr.key) {
                            self.bufs.ensure(&mut c.wbuf);
                            c.wbuf.extend_from_slice(&frame);
                            c.bytes_out += frame.len() as u64;
                        }
                        self.flush_client(cr.key);
                    }
                    let b = &mut self.backends[key];
                    b.garbage_after_answer = !b.rbuf.is_empty();
                    self.finish_response(key, status, end);
                }
            }
            return;
        }
        b.response.bytes += pos as u64;
        let pool = b.pool;
        self.counters.bytes_to_clients += pos as u64;
        self.pools[pool].counters.bytes_to_clients += pos as u64;
        if let Some(reason) = error {
            self.backend_lost(key, reason);
            return;
        }
        if infile {
            b.infile = true;
        }
        // The session after the command: the backend's is the client's
        // (after a plain SET that overwrote what the backend had of its
        // own, once it has said OK: `finish_response`).
        if let Some(cr) = client {
            if !draining && !b.replay_skipped {
                if let Some(c) = self.clients.get_mut(cr.key) {
                    if c.serial == cr.serial {
                        c.session.copy_from(&b.session);
                    }
                }
            }
        }
        if let Some(cr) = client {
            if !draining {
                if timeouts_changed {
                    // A smaller wait_timeout may come due before the timer set.
                    self.arm_idle_timer(cr.key);
                }
                self.flush_client(cr.key);
            }
        }
        if infile {
            // The client now sends the file; its input is forwarded.
            if let Some(cr) = client {
                self.process_client_input(cr.key);
            }
        }
        if let Some((status, end)) = finished {
            // mysqld answers one command at a time: bytes after a complete
            // answer are no answer to anything. The backend goes once the
            // client's answer is settled, before a command pipelined behind
            // it could be sent there and take them for its own.
            let b = &mut self.backends[key];
            b.garbage_after_answer = !b.rbuf.is_empty() && b.pipeline.is_empty();
            if !draining {
                self.cache_answer_done(key, status, end);
            }
            self.finish_response(key, status, end);
        }
    }

    /// A response is complete: update the client's session and pins, then
    /// decide what happens to the client and the backend.
    pub(in crate::server) fn finish_response(&mut self, key: usize, status: u16, end: EndKind) {
        let b = &mut self.backends[key];
        let pool = b.pool;
        let service = self.now.saturating_duration_since(b.sent_at);
        b.infile = false;
        b.prepare = None;
        let client = b.client;
        let draining = b.state == BackendState::Draining;
        let cmd = b.command;
        let buffered_whole =
            b.response.slow_reader == SlowReader::Buffering && client.is_some() && !draining;
        // COM_STMT_CLOSE / SEND_LONG_DATA have no answer, COM_STATISTICS no
        // status: neither says anything about the transaction.
        let has_status = end != EndKind::Other;
        let mut read_user_vars = false;
        let mut newly_dirty = false;
        // A `SET NAMES` whose collation is known needs no read-back for it.
        let names_known =
            self.backends[key].set_names.is_some() && self.set_names_collation(key, end);
        let b = &mut self.backends[key];
        let replay_skipped = std::mem::take(&mut b.replay_skipped);
        if let Some(cr) = client.filter(|_| !draining) {
            if let Some(c) = self
                .clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
            {
                if c.sent().is_some() {
                    // A command without an answer (COM_STMT_SEND_LONG_DATA).
                    c.drop_sent();
                    self.bufs.release(&mut c.rbuf);
                }
                if names_known || (replay_skipped && end != EndKind::Err) {
                    c.session.copy_from(&b.session);
                }
                if end == EndKind::Err {
                    // An ERR carries no status flags. A transaction that was
                    // open stays open; with autocommit off, the failed
                    // statement may have opened one.
                    if c.session.autocommit_off() {
                        c.pin(PinCause::Transaction);
                    }
                } else if has_status {
                    c.last_status = status;
                    if status & SERVER_STATUS_IN_TRANS != 0 {
                        c.pin(PinCause::Transaction);
                    } else {
                        c.unpin(PinCause::Transaction);
                    }
                }
                // `GET DIAGNOSTICS` (no result, not a SELECT) leaves it as
                // it was (MariaDB 10.11).
                let get_diagnostics = c.facts.reads_diagnostics
                    && !c.facts.selects
                    && !b.response.result_set
                    && end != EndKind::Err;
                if matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE)
                    && !get_diagnostics
                {
                    c.row_count = match end {
                        EndKind::Ok => i64::try_from(b.last_affected_rows).unwrap_or(i64::MAX),
                        _ => -1,
                    };
                    note_found_rows(c, b, end);
                }
                if c.running_connect_db.is_some() && end == EndKind::Err {
                    // The schema given at login does not exist: the login fails.
                    c.close_after_flush = true;
                }
                // A statement's cursor is open from the execute that opens
                // it until the fetch that reads its last row, a reset, an
                // execute without one (mysqld closes the cursor of a
                // statement it runs again) or the statement's close. After
                // an ERR it is left as it was.
                if let Some(stmt) = c.current_stmt().filter(|_| end != EndKind::Err) {
                    match cmd {
                        COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                            c.set_cursor_open(stmt, b.tracker.cursor_opened())
                        }
                        COM_STMT_FETCH if status & SERVER_STATUS_LAST_ROW_SENT != 0 => {
                            c.set_cursor_open(stmt, false)
                        }
                        COM_STMT_RESET => c.set_cursor_open(stmt, false),
                        _ => {}
                    }
                }
                match cmd {
                    // Long data lives in that backend's statement until the
                    // execute (or a reset) consumes it.
                    COM_STMT_SEND_LONG_DATA => c.pin(PinCause::PreparedStatement),
                    COM_STMT_EXECUTE | COM_STMT_RESET => c.unpin(PinCause::PreparedStatement),
                    _ => {}
                }
                if end != EndKind::Err {
                    c.unreported_held =
                        (c.unreported_held & !c.unreported_released) | c.unreported_taken;
                    if c.unreported_held != 0 {
                        c.pin(PinCause::Lock);
                    } else {
                        c.unpin(PinCause::Lock);
                    }
                }
                c.unreported_taken = 0;
                c.unreported_released = 0;
                if cmd == COM_INIT_DB && end == EndKind::Ok {
                    // The command's whole effect is the schema, whatever
                    // else the tracker says: take it from the command.
                    if let Some(schema) = b.init_db.take() {
                        self.pools[pool].schema_confirmed(&schema);
                        b.session.set_schema(Some(schema));
                        c.session.copy_from(&b.session);
                    }
                } else if cmd == COM_INIT_DB {
                    if let Some(schema) = b.init_db.take() {
                        self.pools[pool].known_schemas.remove(&schema);
                    }
                } else {
                    let facts = c.facts;
                    // "State changed" that no schema or variable change
                    // explains (or that may hide a user variable beside
                    // them): user variables, temporary tables, ...
                    let unexplained = b.response.saw_state_change
                        && (b.response.state_applied == 0 || facts.mentions_user_var);
                    let dirty = facts
                        .unproven
                        .filter(|_| !b.response.parse_error_only)
                        .or((b.response.saw_eof_state_change && !facts.set_statement)
                            .then_some("a stored program changed the session"))
                        .or((b.response.saw_state_change && facts.may_fire_triggers)
                            .then_some("a trigger changed the session"));
                    let clean_end = end != EndKind::Err && !b.response.saw_warnings;
                    // After this statement, the diagnostics area holds the
                    // client's warnings, which a read-back (it reads a
                    // table) would empty.
                    let holds_diagnostics = !clean_end
                        || (c.pins.contains(PinCause::Diagnostics) && !facts.clears_diagnostics);
                    if let Some(why) = dirty {
                        if !c.pins.contains(PinCause::Unproven) {
                            debug!(
                                "client {}: backend dirty ({why}); pinned until it leaves",
                                c.id
                            );
                        }
                        c.pin(PinCause::Unproven);
                        newly_dirty = !b.dirty;
                        b.dirty = true;
                    } else if b.response.saw_unreplayable {
                        c.pin(PinCause::SessionState);
                    } else if unexplained
                        || (b.response.charset_changed && !names_known)
                        || facts.assigns_user_var
                        || facts.sets_insert_id
                    {
                        // Most often user variables, which the funnel reads
                        // back and replays (with the collation the tracker
                        // omits); what cannot be read back pins. While the
                        // client's warnings are on the backend (it keeps it
                        // meanwhile), the read-back waits for the statement
                        // that empties them.
                        if !matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE)
                            || (facts.opaque_state && unexplained)
                        {
                            c.pin(PinCause::SessionState);
                        } else if holds_diagnostics {
                            c.read_back_pending = true;
                            c.read_back_insert_id |= facts.sets_insert_id;
                        } else {
                            read_user_vars = true;
                        }
                    }
                    if !clean_end {
                        // SHOW WARNINGS / SHOW ERRORS may follow: they must
                        // run here, and nobody else may see these. They
                        // last until a statement that empties the area.
                        c.pin(PinCause::Diagnostics);
                        c.diagnostics_replaced();
                        b.diagnostics_of = Some(cr.serial);
                    } else if facts.clears_diagnostics {
                        c.diagnostics_replaced();
                        c.unpin(PinCause::Diagnostics);
                        b.diagnostics_of = None;
                        read_user_vars |= c.read_back_pending && dirty.is_none();
                    }
                }
                if c.wbuf.is_empty() {
                    let d = self.now.saturating_duration_since(c.command_read_at);
                    self.stats.end_to_end(pool, d, self.now);
                } else {
                    c.e2e_pending = true;
                }
            }
        }
        if newly_dirty {
            self.bump(pool, |c| c.dirty_backends += 1);
        }
        self.stats_service_time(pool, service);
        let server = self.backends[key].server;
        if self.servers[server].role != crate::config::ServerRole::Any {
            // With `[backend] address` the pools' figures are the server's.
            self.stats.server_service(server, service);
        }
        let b = &mut self.backends[key];
        if b.query_shape != 0 {
            self.stats
                .query_done(pool, b.query_shape, service, end == EndKind::Err);
        }
        if end == EndKind::Err {
            self.bump(pool, |c| c.backend_errors += 1);
        }
        if buffered_whole {
            self.bump(pool, |c| c.buffered_results += 1);
        }
        let b = &mut self.backends[key];
        if !b.pipeline.is_empty() {
            self.pipelined_head_done(key, draining, read_user_vars);
            return;
        }
        if b.garbage_after_answer {
            // As if lost while idle: the client's answer is complete; a
            // session it held is gone, and it hears so at its next command.
            self.set_backend_state(key, BackendState::Idle);
            self.backend_lost(key, "server sent bytes after a complete answer".into());
            return;
        }
        if b.kills_pending > 0 {
            self.set_backend_state(
                key,
                BackendState::AwaitKill {
                    read_back: read_user_vars,
                    draining,
                },
            );
            return;
        }
        self.after_response(key, read_user_vars, draining);
    }

    /// Stop paying attention to a backend's output because the client's
    /// output queue is full, or resume when it has drained.
    pub(in crate::server) fn set_backend_paused(&mut self, key: usize, paused: bool) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if b.paused == paused {
            return;
        }
        b.paused = paused;
        if !paused {
            self.actions.push(Action::ReadBackend {
                key,
                serial: b.serial,
            });
        }
    }

    /// Connection first (`max_buffered_result`): whether to go on reading
    /// backend `key` although the output pending for `client` passed
    /// output_high_watermark. Yes while that output stays within
    /// max_buffered_result and all output held this way within
    /// max_buffered_total; the first no falls back to the watermarks for
    /// the rest of the response, and is counted.
    pub(in crate::server) fn keep_reading_for_slow_reader(
        &mut self,
        key: usize,
        client: usize,
    ) -> bool {
        let limit = self.config.max_buffered_result;
        let (Some(b), Some(c)) = (self.backends.get_mut(key), self.clients.get_mut(client)) else {
            return false;
        };
        match (b.state, b.response.slow_reader) {
            (BackendState::Running, SlowReader::FellBack) => return false,
            // Memory first; and a pinned client would free nothing.
            (BackendState::Running, SlowReader::Watermarks) if limit == 0 || b.pinned => {
                return false
            }
            (BackendState::Running, _) => {}
            // The response is complete, buffered whole: the funnel's own
            // step after it (reading user variables back) adds no output.
            (_, SlowReader::Buffering) => return true,
            _ => return false,
        }
        let pending = c.wbuf.len();
        let others = self.buffered_total - c.buffered;
        if pending <= limit && others + pending <= self.config.max_buffered_total {
            b.response.slow_reader = SlowReader::Buffering;
            self.buffered_total = others + pending;
            c.set_buffered(pending);
            return true;
        }
        b.response.slow_reader = SlowReader::FellBack;
        let pool = b.pool;
        self.bump(pool, |c| c.buffered_fallbacks += 1);
        false
    }
}

/// What `FOUND_ROWS()` says after the client's statement that just ended
/// on `b` (`Client::found_rows`). A failed statement leaves it as it was.
/// After a `SELECT`: the rows of its last result (0 for `SELECT ... INTO`).
/// Only the backend knows it (which the client then keeps, `takes`, until
/// the funnel learns it: `Internal::ReadFoundRows`, the user-variable
/// read-back, or its next `SELECT`) after `SQL_CALC_FOUND_ROWS`; after a
/// `SELECT` whose rows `sql_select_limit` may have held back (they count);
/// and on a dirty backend (a stored program may have set that limit
/// unseen). Other statements with a result: `SHOW WARNINGS` and `SHOW
/// ERRORS` leave it; most others (`SHOW TABLES`, `SHOW VARIABLES`,
/// `DESCRIBE`, ...) set it to their rows, as taken here, though a few
/// (`SHOW CREATE ...`, `HELP`) leave it and `EXPLAIN` sets 0 (MariaDB
/// 10.11).
fn note_found_rows(c: &mut crate::server::client::Client, b: &Backend, end: EndKind) {
    use crate::server::client::FOUND_ROWS_ON_BACKEND;
    use crate::server::statement::unreported::FOUND_ROWS;
    let f = &c.facts;
    if end == EndKind::Err {
        return;
    }
    if f.takes & FOUND_ROWS != 0 {
        c.found_rows = FOUND_ROWS_ON_BACKEND;
        return;
    }
    // `SET STATEMENT ... FOR SELECT ...` too.
    let selects = f.selects || (f.set_statement && b.response.result_set);
    if !selects && (!b.response.result_set || f.reads_diagnostics) {
        return;
    }
    let limit = c.session.select_limit();
    let rows = b.response.rows;
    let statement_limit = f.set_statement && f.mentions_select_limit;
    if rows >= limit || (statement_limit && rows > 0) || b.dirty {
        c.unreported_taken |= FOUND_ROWS;
        c.found_rows = FOUND_ROWS_ON_BACKEND;
    } else {
        // Known again: the backend's count no longer matters (nor keeps
        // the client there).
        c.found_rows = rows;
        c.unreported_released |= FOUND_ROWS;
    }
}

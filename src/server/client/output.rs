//! What the funnel writes to a client (OK, ERR, EOF, its own result sets),
//! the accounting after the I/O layer wrote it, and closing.

use super::*;

impl Engine {
    pub(in crate::server) fn send_to_client(&mut self, key: usize, seq: u8, payload: &[u8]) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        self.bufs.ensure(&mut c.wbuf);
        let mut framed = std::mem::take(&mut self.scratch);
        framed.clear();
        write_packet(&mut framed, seq, payload);
        c.wbuf.extend_from_slice(&framed);
        self.scratch = framed;
        self.flush_client(key);
    }

    pub(in crate::server) fn client_ok(&mut self, key: usize, seq: u8) {
        self.client_ok_with(key, seq, 0);
    }

    /// An OK whose status has `flags` besides the session's.
    pub(super) fn client_ok_with(&mut self, key: usize, seq: u8, flags: u16) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let ok = OkPacket {
            header: OK_HEADER,
            affected_rows: 0,
            last_insert_id: 0,
            status: c.answer_status() | flags,
            warnings: 0,
            info: b"",
            session_state: None,
        };
        let mut payload = Vec::with_capacity(16);
        encode_ok(&mut payload, &ok, c.capabilities);
        self.send_to_client(key, seq, &payload);
    }

    /// The OK that ends a login with a default schema: mysqld reports the
    /// schema in it to a client that tracks it.
    pub(super) fn client_login_ok(&mut self, key: usize, seq: u8) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let Some(schema) = c
            .session
            .schema
            .as_deref()
            .filter(|_| c.capabilities & CLIENT_SESSION_TRACK != 0 && c.track.schema)
        else {
            self.client_ok(key, seq);
            return;
        };
        let mut block = Vec::with_capacity(schema.len() + 4);
        encode_state_change(&mut block, &StateChange::Schema(schema.as_bytes()));
        let ok = OkPacket {
            header: OK_HEADER,
            affected_rows: 0,
            last_insert_id: 0,
            status: c.answer_status() | SERVER_SESSION_STATE_CHANGED,
            warnings: 0,
            info: b"",
            session_state: Some(&block),
        };
        let mut payload = Vec::with_capacity(16 + block.len());
        encode_ok(&mut payload, &ok, c.capabilities);
        self.send_to_client(key, seq, &payload);
    }

    /// Answer with a one-row, one-column result set of an unsigned integer,
    /// typed as mysqld types `LAST_INSERT_ID()` (BIGINT UNSIGNED NOT NULL).
    pub(super) fn client_single_value(
        &mut self,
        key: usize,
        seq: u8,
        name: &[u8],
        value: &str,
        (column_type, length, flags): (u8, u32, u16),
    ) {
        use crate::protocol::response::{encode_column_def, encode_text_row};
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let mut status = c.answer_status();
        let more = c.multi_rest.as_ref().is_some_and(|m| !m.ready);
        if more {
            // A part of a query with a KILL after it.
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        let mut out = Vec::with_capacity(128);
        let mut payload = Vec::with_capacity(64);
        let mut seq = write_packet(&mut out, seq, &[1]);
        let name = String::from_utf8_lossy(name);
        // Binary charset; `column` is (type, display length, flags).
        encode_column_def(&mut payload, &name, column_type, 63, length, flags, 0);
        if c.mariadb_caps & MARIADB_CLIENT_EXTENDED_METADATA != 0 {
            // mysqld's empty extended metadata for a plain type.
            if let Ok(at) = column_def_names_end(&payload) {
                payload.insert(at, 0);
            }
        }
        seq = write_packet(&mut out, seq, &payload);
        if c.capabilities & CLIENT_DEPRECATE_EOF == 0 {
            payload.clear();
            encode_eof(&mut payload, 0, status);
            seq = write_packet(&mut out, seq, &payload);
        }
        payload.clear();
        encode_text_row(&mut payload, &[Some(value.as_bytes())]);
        seq = write_packet(&mut out, seq, &payload);
        payload.clear();
        encode_end_of_rows(&mut payload, c.capabilities, 0, status);
        let next = write_packet(&mut out, seq, &payload);
        let c = &mut self.clients[key];
        if let Some(m) = c.multi_rest.as_mut().filter(|_| more) {
            m.ready = true;
            m.seq = next;
        }
        self.bufs.ensure(&mut c.wbuf);
        c.wbuf.extend_from_slice(&out);
        self.flush_client(key);
    }

    /// The answer to COM_SET_OPTION: an EOF, or an OK with a 0xfe header
    /// under CLIENT_DEPRECATE_EOF, as mysqld answers it.
    pub(super) fn client_eof(&mut self, key: usize, seq: u8) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let mut payload = Vec::with_capacity(8);
        let status = c.answer_status();
        encode_end_of_rows(&mut payload, c.capabilities, 0, status);
        self.send_to_client(key, seq, &payload);
    }

    pub(in crate::server) fn client_error(
        &mut self,
        key: usize,
        seq: u8,
        code: (u16, &'static str),
        msg: &str,
    ) {
        let mut payload = Vec::with_capacity(msg.len() + 16);
        encode_err(&mut payload, code.0, code.1, msg);
        self.send_to_client(key, seq, &payload);
        if let Some(c) = self.clients.get_mut(key) {
            c.answered_own_error(code, msg);
        }
    }

    /// Have what is queued for the client written (by the I/O layer, at
    /// the end of the handler); `client_written` follows.
    pub(in crate::server) fn flush_client(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.flush_queued {
            c.flush_queued = true;
            self.actions.push(Action::FlushClient {
                key,
                serial: c.serial,
            });
        }
    }

    /// The I/O layer wrote `written` bytes of the client's output (or
    /// failed): account for it, and apply backpressure to the backend
    /// that feeds the client.
    pub(crate) fn client_written(&mut self, key: usize, written: std::io::Result<usize>) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        c.flush_queued = false;
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                self.close_client(key, &format!("write failed: {e}"));
                return;
            }
        };
        let before = c.wbuf.len() + written;
        if before > 0 {
            // mysqld's wait_timeout counts from its last write.
            c.last_active = self.now;
        }
        let pending = c.wbuf.len();
        if pending == 0 {
            c.write_stalled_since = None;
        } else if pending < before || c.write_stalled_since.is_none() {
            // Progress (or new output): the stall clock starts now.
            c.write_stalled_since = Some(self.now);
        }
        if c.buffered > 0 {
            // Output held for a slow reader: the charge follows what is
            // left, and the memory too as it drains (down to what the
            // buffer pool would keep).
            c.wbuf.shrink_to_pending(POOLED_BUF_MAX);
            self.buffered_total = self.buffered_total - c.buffered + pending;
            c.set_buffered(pending);
        }
        if pending == 0 {
            self.bufs.release(&mut c.wbuf);
            if c.e2e_pending {
                c.e2e_pending = false;
                let d = self.now.saturating_duration_since(c.command_read_at);
                self.stats.end_to_end(c.pool, d, self.now);
            }
            if c.close_after_flush {
                self.close_client(key, "closed after error");
                return;
            }
        }
        let feeding = match c.state {
            ClientState::Running(b) => Some(b),
            _ => c.running_connect_db,
        };
        let serial = c.serial;
        // A command pipelined behind another's is fed nothing yet: the
        // watermarks are the head's (`Backend::pipeline`).
        let feeding = feeding.filter(|&b| {
            self.backends
                .get(b)
                .is_none_or(|bk| bk.client.is_some_and(|r| r.serial == serial))
        });
        if let Some(b) = feeding {
            if pending > self.config.output_high_watermark {
                if !self.keep_reading_for_slow_reader(b, key) {
                    self.set_backend_paused(b, true);
                }
            } else if pending <= self.config.output_low_watermark
                && self.backends.get(b).is_some_and(|b| b.paused)
            {
                if let Some(bk) = self.backends.get_mut(b) {
                    bk.paused = false;
                    self.actions.push(Action::ReadBackend {
                        key: b,
                        serial: bk.serial,
                    });
                }
            }
        }
    }

    /// Close a client with an error because of `kind` of event, and say so
    /// in the log (rate-limited).
    pub(super) fn close_client_logged(
        &mut self,
        key: usize,
        kind: LogEvent,
        code: (u16, &'static str),
        msg: &str,
    ) {
        if let Some(c) = self.clients.get(key) {
            log_limited!(self, kind, "{} closed: {msg}", c.label());
        }
        self.close_client_with_error(key, code, msg);
    }

    /// Send an error and close the connection.
    pub(in crate::server) fn close_client_with_error(
        &mut self,
        key: usize,
        code: (u16, &'static str),
        msg: &str,
    ) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let seq = match c.state {
            _ if c.auth_hold.is_some() => c.auth_hold.as_ref().map_or(2, |h| h.seq),
            ClientState::Handshake => 2,
            ClientState::AuthSwitch(_) => 4,
            ClientState::Relay {
                backend,
                login: true,
            } => self
                .backends
                .get(backend)
                .and_then(|b| b.relay.as_ref())
                .map_or(2, |r| r.client_seq),
            _ => 1u8.wrapping_add(c.seq_offset),
        };
        c.close_after_flush = true;
        let mut payload = Vec::with_capacity(msg.len() + 16);
        encode_err(&mut payload, code.0, code.1, msg);
        self.bufs.ensure(&mut c.wbuf);
        let mut framed = Vec::new();
        write_packet(&mut framed, seq, &payload);
        c.wbuf.extend_from_slice(&framed);
        // Written once as the connection closes: a client that does not
        // read its error is not waited for.
        self.close_client(key, msg);
    }

    /// Remove a client; whatever backend it was using is drained or reset.
    pub(in crate::server) fn close_client(&mut self, key: usize, reason: &str) {
        self.close_client_socket(key, reason, false);
    }

    /// `close_client`; with `reset`, abortively (SO_LINGER 0).
    pub(in crate::server) fn close_client_socket(&mut self, key: usize, reason: &str, reset: bool) {
        if !self.clients.contains(key) {
            return;
        }
        let mut c = self.clients.remove(key);
        self.client_ids.remove(&c.id);
        self.shared.client_gone();
        self.rules.cache.client_left(key);
        self.buffered_total -= c.buffered;
        debug!("{} closed: {reason}", c.label());
        // An error queued for the client (close_after_flush) is written
        // once as the socket closes; other pending output is dropped.
        let last_words = if c.close_after_flush {
            c.wbuf.as_slice().to_vec()
        } else {
            Vec::new()
        };
        self.actions.push(Action::CloseClient {
            conn: c.conn,
            last_words,
            reset,
        });
        let running = match c.state {
            ClientState::Running(b) => Some(b),
            _ => c.running_connect_db,
        };
        if let Some(b) = running {
            if self
                .backends
                .get(b)
                .is_some_and(|bk| bk.infile && bk.client.map(|r| r.serial) == Some(c.serial))
            {
                // mysqld waits for the rest of the file and nothing will
                // send it: close the connection, as the client's own
                // disconnect would have, so mysqld rolls the statement back
                // (an empty packet would commit a partial load instead).
                debug!("closing backend {b}: its client left during a LOAD DATA LOCAL upload");
                let pool = self.backends[b].pool;
                self.close_backend(b);
                self.maintain_pool(pool);
            }
            if self
                .backends
                .get(b)
                .is_some_and(|bk| bk.client.map(|r| r.serial) == Some(c.serial))
            {
                self.detach_backend_client(b);
                if self.backends[b].state == crate::server::backend::BackendState::Running {
                    self.set_backend_state(b, crate::server::backend::BackendState::Draining);
                    let bk = &mut self.backends[b];
                    bk.drain_started = self.now;
                    bk.paused = false;
                    self.actions.push(Action::ReadBackend {
                        key: b,
                        serial: bk.serial,
                    });
                }
            }
        }
        if let Some(b) = c.pinned {
            if running != Some(b) {
                self.release_pinned_by(b, &c);
            } else if self.backends.contains(b) {
                // Drained first, then reset (finish_response sees `pinned`).
                self.detach_backend_client(b);
            }
        }
        c.rbuf.clear();
        c.wbuf.clear();
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
        let trim = c.stmts.bytes() >= TRIM_AFTER_BYTES;
        drop(c);
        if trim {
            // Its statements' SQL was many small blocks: without this,
            // glibc keeps them and the RSS stays where the client left it.
            release_free_memory();
        }
    }
}

//! Prepared statements on backends: closing those no client holds, making room
//! when mysqld runs out of statement slots, and retrying a refused prepare.

use super::*;

impl Engine {
    /// Close the statements queued on this backend, then `COM_PING`:
    /// `Internal::CloseStmts` until its answer.
    pub(super) fn start_close_stmts(&mut self, key: usize) {
        let b = &mut self.backends[key];
        self.bufs.ensure(&mut b.wbuf);
        let n = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        let pool = b.pool;
        self.bump(pool, |c| c.stmts_closed += n);
        self.start_internal(key, Internal::CloseStmts, Vec::new());
    }

    /// Close on every backend the statements no client holds any more
    /// (see `StmtHolders`). `waiter`: the client whose `COM_STMT_CLOSE` let
    /// go of them; its next command waits until the idle backends have
    /// closed them.
    pub(in crate::server) fn close_released_stmts(&mut self, waiter: Option<ClientRef>) {
        let mut keys = std::mem::take(&mut self.released_keys);
        self.stmt_holders.borrow_mut().take_released(&mut keys);
        if !keys.is_empty() {
            for (_, b) in self.backends.iter_mut() {
                if b.stmts.is_empty() {
                    continue;
                }
                for &k in &keys {
                    b.stmts.close(k);
                }
            }
        }
        keys.clear();
        self.released_keys = keys;
        let waits = self.send_stmt_closes(waiter.map(CloseWaiter::Client));
        if let Some(c) = waiter.and_then(|cr| {
            self.clients
                .get_mut(cr.key)
                .filter(|c| c.serial == cr.serial)
        }) {
            c.closes_awaited = c.closes_awaited.saturating_add(waits);
        }
    }

    /// Send the closes queued on idle backends now (a busy one sends its
    /// own before its next command, or when it goes idle). An idle shared
    /// backend closes them as `Internal::CloseStmts`, and `waiter` waits
    /// for it; a pinned one gets them ahead of its client's next command.
    /// How many backends `waiter` waits for.
    pub(super) fn send_stmt_closes(&mut self, waiter: Option<CloseWaiter>) -> u16 {
        let mut waits = 0u16;
        let mut i = 0;
        while let Some((key, b)) = self
            .backends
            .iter()
            .find(|&(k, b)| k >= i && b.state == BackendState::Idle && !b.stmts.to_close.is_empty())
        {
            i = key + 1;
            if b.idle_listed {
                self.start_close_stmts(key);
                if let (Some(w), Some(b)) = (waiter, self.backends.get_mut(key)) {
                    if b.state == BackendState::Internal(Internal::CloseStmts) {
                        b.close_waiters.push(w);
                        waits = waits.saturating_add(1);
                    }
                }
            } else {
                self.write_stmt_closes_now(key);
            }
        }
        waits
    }

    /// Send the closes queued on a backend that waits for its pinned
    /// client's next command (no answer comes; they go ahead of it).
    pub(super) fn write_stmt_closes_now(&mut self, key: usize) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if b.stmts.to_close.is_empty() {
            return;
        }
        self.bufs.ensure(&mut b.wbuf);
        let n = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        let pool = b.pool;
        self.bump(pool, |c| c.stmts_closed += n);
        self.flush_backend(key);
    }

    /// This backend's closes are done (or it is gone): tell who waited.
    pub(super) fn closes_done(&mut self, waiters: &mut Vec<CloseWaiter>) {
        for w in waiters.drain(..) {
            match w {
                CloseWaiter::Client(cr) => {
                    if let Some(c) = self
                        .clients
                        .get_mut(cr.key)
                        .filter(|c| c.serial == cr.serial)
                    {
                        c.closes_awaited = c.closes_awaited.saturating_sub(1);
                        if c.closes_awaited == 0 {
                            self.deferred.push(Deferred::ClientInput(cr.key, cr.serial));
                        }
                    }
                }
                CloseWaiter::Backend(key, serial) => {
                    if let Some(b) = self.backends.get_mut(key).filter(|b| {
                        b.serial == serial
                            && b.state == BackendState::Internal(Internal::AwaitCloses)
                    }) {
                        b.closes_awaited = b.closes_awaited.saturating_sub(1);
                        if b.closes_awaited == 0 {
                            self.retry_prepare(key);
                        }
                    }
                }
            }
        }
    }

    /// The statement keys on backend `key` that must not be closed to make
    /// room: those of the client pinned there while it has a cursor open
    /// or long data sent (they live in that backend statement).
    pub(super) fn protected_stmt_keys(&self, key: usize) -> Vec<u64> {
        let Some(b) = self.backends.get(key) else {
            return Vec::new();
        };
        b.client
            .filter(|_| b.pinned)
            .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
            .filter(|c| !c.open_cursors.is_empty() || c.pins.contains(PinCause::PreparedStatement))
            .map(|c| c.stmts.values().map(|s| s.key).collect())
            .unwrap_or_default()
    }

    /// mysqld refused to prepare a statement on backend `key` with ERR
    /// 1461: it holds `max_prepared_stmt_count` statements, the funnel's
    /// backend caches among them (the funnel's own limit already keeps the
    /// clients' statements within it). Make room: the cached statements of
    /// this backend go first (closed ahead of the retried prepare); failing
    /// those, the idle shared backends', and the retry waits for them.
    pub(super) fn make_stmt_room(&mut self, key: usize) -> StmtRoom {
        if self.backends[key].prepare_retries >= PREPARE_RETRIES {
            return StmtRoom::None;
        }
        let keep = self.protected_stmt_keys(key);
        if self.backends[key].stmts.evict(|k| keep.contains(&k)) > 0 {
            return StmtRoom::Now;
        }
        let idle: Vec<usize> = self
            .backends
            .iter()
            .filter(|&(k, b)| {
                k != key
                    && b.state == BackendState::Idle
                    && !b.pinned
                    && b.kill_query.is_none()
                    && !b.stmts.is_empty()
            })
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            self.backends[k].stmts.evict(|_| false);
        }
        let serial = self.backends[key].serial;
        let waits = self.send_stmt_closes(Some(CloseWaiter::Backend(key, serial)));
        if waits == 0 {
            return StmtRoom::None;
        }
        let b = &mut self.backends[key];
        b.closes_awaited = waits;
        self.set_backend_state(key, BackendState::Internal(Internal::AwaitCloses));
        let b = &mut self.backends[key];
        b.sent_at = self.now;
        StmtRoom::Wait
    }

    /// Send the refused prepare again, after the closes that made room:
    /// the client's own `COM_STMT_PREPARE` (its answer is forwarded as if
    /// it were the first), or the funnel's before a client's execute.
    pub(super) fn retry_prepare(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let client_alive = b.client.is_some_and(|cr| {
            self.clients
                .get(cr.key)
                .is_some_and(|c| c.serial == cr.serial)
        });
        if !client_alive {
            b.prepare = None;
            self.release_orphan(key);
            return;
        }
        b.prepare_retries += 1;
        let pool = b.pool;
        self.bump(pool, |c| c.prepare_retries += 1);
        let b = &mut self.backends[key];
        self.bufs.ensure(&mut b.wbuf);
        let n = write_stmt_closes(&mut b.wbuf, &mut b.stmts.to_close) as u64;
        self.bump(pool, |c| c.stmts_closed += n);
        let b = &mut self.backends[key];
        let Some(sql) = b.prepare.as_ref().map(|p| p.sql.clone()) else {
            // The funnel's own prepare for an execute: the next step is it
            // again, the statement not being on this backend yet.
            self.set_backend_state(key, BackendState::Running);
            self.continue_request(key);
            return;
        };
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_STMT_PREPARE);
        payload.extend_from_slice(&sql);
        if let Some(c) = b.client.and_then(|cr| self.clients.get(cr.key)) {
            b.eof = EofTranslator::new(c.capabilities);
        }
        b.tracker.start(Expect::Prepare);
        self.set_backend_state(key, BackendState::Running);
        let b = &mut self.backends[key];
        b.sent_at = self.now;
        self.send_to_backend(key, 0, &payload);
    }
}

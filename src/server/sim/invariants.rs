//! What must hold between any two turns of the loop, whatever clients and
//! mysqld did: every client waiting for an answer is either queued or on a
//! backend that knows it, every backend is accounted for in its pool, no
//! idle backend is lost, and buffers stay within their configured bounds.

use super::super::backend::{BackendState, DISPATCH_SCAN};
use super::super::client::ClientState;
use super::super::event_loop::READ_CAP_PER_EVENT;
use super::super::pool::ClientRef;
use super::super::Engine;
use crate::protocol::packet::HEADER_LEN;

/// Output the funnel writes itself on top of relayed packets (an error, a
/// rewritten OK): small, but counted so the bound is exact.
const OWN_OUTPUT_SLACK: usize = 64 * 1024;

impl Engine {
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.check_clients()?;
        self.check_backends()?;
        self.check_pools()?;
        self.check_dispatched()?;
        self.check_tallies()
    }

    fn check_clients(&self) -> Result<(), String> {
        let input_bound = self.config.max_allowed_packet
            + HEADER_LEN
            + self.config.max_client_pending_input
            + READ_CAP_PER_EVENT;
        let output_bound = self
            .config
            .output_high_watermark
            .max(self.config.max_buffered_result)
            + READ_CAP_PER_EVENT
            + self.config.max_allowed_packet
            + OWN_OUTPUT_SLACK;
        for (key, c) in self.clients.iter() {
            let me = ClientRef {
                key,
                serial: c.serial,
            };
            let on_backend = |b: usize| -> Result<(), String> {
                match self.backends.get(b) {
                    Some(bk) if bk.client == Some(me) => Ok(()),
                    Some(bk) if bk.pipeline.iter().any(|p| p.client == me) => Ok(()),
                    Some(bk) => Err(format!(
                        "client {key} runs on backend {b}, which serves {:?} ({:?})",
                        bk.client, bk.state
                    )),
                    None => Err(format!("client {key} runs on backend {b}, which is gone")),
                }
            };
            match c.state {
                ClientState::Running(b) => on_backend(b)?,
                ClientState::ConnectDb if c.running_connect_db.is_some() => {
                    on_backend(c.running_connect_db.unwrap_or_default())?
                }
                ClientState::Queued | ClientState::ConnectDb
                    if !self.pools[c.pool].is_waiting(me)
                        && !self.rules.is_waiting(key, c.serial) =>
                {
                    return Err(format!(
                        "client {key} is {:?} but not in pool {}'s backlog: it would wait forever",
                        c.state, c.pool
                    ));
                }
                ClientState::Idle
                    if c.in_flight.is_some() && c.current().is_none() && !c.close_after_flush =>
                {
                    return Err(format!(
                        "client {key} is idle with a command still in flight ({:?}): it outlived its answer",
                        c.in_flight
                    ));
                }
                ClientState::Idle if c.current().is_some() && !c.close_after_flush => {
                    return Err(format!(
                        "client {key} is idle with a command nobody handles: it would wait forever"
                    ));
                }
                _ => {}
            }
            if let Some(sent) = c.sent() {
                // Kept only while its backend may still die before the
                // answer starts: it is then queued again from the buffer.
                let on = match c.state {
                    ClientState::Running(b) => Some(b),
                    ClientState::ConnectDb => c.running_connect_db,
                    _ => None,
                };
                let awaiting = on.and_then(|b| self.backends.get(b)).is_some_and(|bk| {
                    (bk.state == BackendState::Running && bk.response.bytes == 0)
                        || bk.pipeline.iter().any(|p| p.client == me)
                });
                if !awaiting || c.rbuf.len() < sent.wire_len {
                    return Err(format!(
                        "client {key} ({:?}) keeps a sent command ({} bytes of {} in its input) whose answer is no longer awaited",
                        c.state,
                        sent.wire_len,
                        c.rbuf.len()
                    ));
                }
            }
            if let Some(b) = c.pinned {
                let bk = self.backends.get(b).ok_or_else(|| {
                    format!("client {key} is pinned to backend {b}, which is gone")
                })?;
                if !bk.pinned || bk.client != Some(me) {
                    return Err(format!(
                        "client {key} is pinned to backend {b}, which has pinned = {} and serves {:?}",
                        bk.pinned, bk.client
                    ));
                }
            }
            if self.client_ids.get(&c.id) != Some(&key) {
                return Err(format!("client {key}'s id {} is not in the id map", c.id));
            }
            if c.rbuf.len() > input_bound {
                return Err(format!(
                    "client {key} holds {} bytes of input (bound {input_bound})",
                    c.rbuf.len()
                ));
            }
            if c.wbuf.len() > output_bound {
                return Err(format!(
                    "client {key} holds {} bytes of output (bound {output_bound})",
                    c.wbuf.len()
                ));
            }
        }
        let held: usize = self.clients.iter().map(|(_, c)| c.stmts.held()).sum();
        if held != self.prepared_stmts.get() {
            return Err(format!(
                "clients hold {held} prepared statements (and reserved slots) but the total says {}",
                self.prepared_stmts.get()
            ));
        }
        if let Some((key, c)) = self
            .clients
            .iter()
            .find(|(_, c)| c.stmts.len() > self.config.max_prepared_stmts_per_client)
        {
            return Err(format!(
                "client {key} holds {} prepared statements, over max_prepared_stmts_per_client {}",
                c.stmts.len(),
                self.config.max_prepared_stmts_per_client
            ));
        }
        if held > self.config.max_prepared_stmt_count {
            return Err(format!(
                "{held} prepared statements, over max_prepared_stmt_count {}",
                self.config.max_prepared_stmt_count
            ));
        }
        // A backend keeps prepared only statements some client holds: the
        // others were closed (or queued for closing) when let go of.
        let holders = self.stmt_holders.borrow();
        if holders.has_released() {
            return Err("statements let go of were left unclosed after a turn".into());
        }
        let keys_held: usize = self
            .clients
            .iter()
            .map(|(_, c)| {
                let mut keys: Vec<u64> = c.stmts.values().map(|s| s.key).collect();
                keys.sort_unstable();
                keys.dedup();
                keys.len()
            })
            .sum();
        if holders.len() > keys_held {
            return Err(format!(
                "{} statement keys held, but clients hold at most {keys_held} distinct ones",
                holders.len()
            ));
        }
        for (key, b) in self.backends.iter() {
            if let Some(k) = b.stmts.keys().find(|&k| !holders.is_held(k)) {
                return Err(format!(
                    "backend {key} keeps statement key {k:x} prepared, which no client holds"
                ));
            }
        }
        drop(holders);
        let buffered: usize = self.clients.iter().map(|(_, c)| c.buffered).sum();
        if buffered != self.buffered_total {
            return Err(format!(
                "clients hold {buffered} buffered bytes but the total says {}",
                self.buffered_total
            ));
        }
        if self.buffered_total > self.config.max_buffered_total + READ_CAP_PER_EVENT {
            return Err(format!(
                "{} bytes buffered for slow readers, over max_buffered_total {} by more than one read",
                self.buffered_total, self.config.max_buffered_total
            ));
        }
        if self.client_ids.len() != self.clients.len() {
            return Err(format!(
                "{} ids for {} clients",
                self.client_ids.len(),
                self.clients.len()
            ));
        }
        Ok(())
    }

    fn check_backends(&self) -> Result<(), String> {
        for (key, b) in self.backends.iter() {
            if b.kill_query.is_some() {
                continue;
            }
            if let Some(cr) = b.client {
                let c = self
                    .clients
                    .get(cr.key)
                    .filter(|c| c.serial == cr.serial)
                    .ok_or_else(|| {
                        format!("backend {key} ({:?}) serves a client that left", b.state)
                    })?;
                let running_here = matches!(c.state, ClientState::Running(k) if k == key)
                    || c.running_connect_db == Some(key);
                if !running_here && c.pinned != Some(key) {
                    return Err(format!(
                        "backend {key} ({:?}) serves client {} which is {:?}, pinned to {:?}",
                        b.state, cr.key, c.state, c.pinned
                    ));
                }
            }
            if b.state == BackendState::Running && b.client.is_none() {
                return Err(format!("backend {key} runs a command for nobody"));
            }
            if b.state == BackendState::Draining && b.client.is_some() {
                return Err(format!(
                    "backend {key} drains an answer its client {:?} is waiting for",
                    b.client
                ));
            }
            if !b.pipeline.is_empty() {
                // Commands behind the head: only behind a stateless one,
                // on a shared connection, within the depth.
                if !matches!(b.state, BackendState::Running | BackendState::Draining)
                    || b.pinned
                    || b.dirty
                    || b.pipeline.len() + 1 > self.config.backend.pipeline_depth
                {
                    return Err(format!(
                        "backend {key} ({:?}, pinned {}, dirty {}) has {} commands pipelined (depth {})",
                        b.state,
                        b.pinned,
                        b.dirty,
                        b.pipeline.len(),
                        self.config.backend.pipeline_depth
                    ));
                }
                for p in &b.pipeline {
                    let Some(c) = self
                        .clients
                        .get(p.client.key)
                        .filter(|c| c.serial == p.client.serial)
                    else {
                        continue; // left: its answer is read and discarded
                    };
                    if !matches!(c.state, ClientState::Running(k) if k == key) || c.sent().is_none()
                    {
                        return Err(format!(
                            "client {} pipelined on backend {key} is {:?} (sent: {})",
                            p.client.key,
                            c.state,
                            c.sent().is_some()
                        ));
                    }
                }
            }
            let in_idle = self.pools[b.pool].idle().contains(&key);
            if in_idle != b.idle_listed {
                return Err(format!(
                    "backend {key}'s idle_listed ({}) disagrees with its pool's list",
                    b.idle_listed
                ));
            }
            let should_be_idle = b.state == BackendState::Idle && !b.pinned;
            if in_idle != should_be_idle {
                return Err(format!(
                    "backend {key} is {:?} (pinned {}) but {} the idle list",
                    b.state,
                    b.pinned,
                    if in_idle { "in" } else { "not in" }
                ));
            }
            if in_idle && b.client.is_some() {
                return Err(format!("idle backend {key} still serves {:?}", b.client));
            }
            if b.dirty && b.client.is_none() && b.state == BackendState::Idle {
                return Err(format!(
                    "backend {key} is dirty (an unproven statement ran) but neither pinned nor being reset"
                ));
            }
        }
        Ok(())
    }

    fn check_pools(&self) -> Result<(), String> {
        for (p, pool) in self.pools.iter().enumerate() {
            let mine = || {
                self.backends
                    .iter()
                    .filter(move |(_, b)| b.pool == p && b.kill_query.is_none())
            };
            let shared = mine().filter(|(_, b)| !b.pinned).count();
            let pinned = mine().filter(|(_, b)| b.pinned).count();
            let connecting = mine().filter(|(_, b)| b.connecting).count();
            if (shared, pinned, connecting) != (pool.shared, pool.pinned, pool.connecting) {
                return Err(format!(
                    "pool {p} counts shared/pinned/connecting {}/{}/{} but has {shared}/{pinned}/{connecting}",
                    pool.shared, pool.pinned, pool.connecting
                ));
            }
            for (slot, ps) in pool.servers.iter().enumerate() {
                let on = || mine().filter(move |(_, b)| b.slot == slot);
                let shared = on().filter(|(_, b)| !b.pinned).count();
                let pinned = on().filter(|(_, b)| b.pinned).count();
                let connecting = on().filter(|(_, b)| b.connecting).count();
                let idle = on().filter(|(_, b)| b.idle_listed).count();
                let counted = (ps.shared, ps.pinned, ps.connecting, ps.idle);
                if (shared, pinned, connecting, idle) != counted {
                    return Err(format!(
                        "pool {p} server slot {slot} counts shared/pinned/connecting/idle {counted:?} but has {shared}/{pinned}/{connecting}/{idle}"
                    ));
                }
                if let Some((key, _)) = on().find(|(_, b)| b.server != ps.server) {
                    return Err(format!(
                        "backend {key} of pool {p} slot {slot} names server {} instead of {}",
                        self.backends[key].server, ps.server
                    ));
                }
            }
            let in_use = self.backends.iter().filter(|(_, b)| b.client.is_some());
            for (i, server) in self.servers.iter().enumerate() {
                let n = in_use.clone().filter(|(_, b)| b.server == i).count();
                if n != server.in_use {
                    return Err(format!(
                        "server {i} counts {} backends in use but has {n}",
                        server.in_use
                    ));
                }
                let running = self
                    .backends
                    .iter()
                    .filter(|(_, b)| {
                        b.server == i
                            && b.kill_query.is_none()
                            && b.client.is_some()
                            && b.state != BackendState::Idle
                    })
                    .count();
                if running != server.admission.running {
                    return Err(format!(
                        "server {i} counts {} backends running but has {running}",
                        server.admission.running
                    ));
                }
                if server.admission.turns_wanted() && !server.admission.turns_due {
                    return Err(format!(
                        "server {i} has room and pools waiting for it, and no turns are due"
                    ));
                }
            }
            let mut idle = pool.idle().to_vec();
            idle.sort_unstable();
            idle.dedup();
            if idle.len() != pool.idle().len() {
                return Err(format!("pool {p} lists a backend twice as idle"));
            }
        }
        Ok(())
    }

    /// No command waits in a backlog while a backend could take it now:
    /// every way a backend comes free, or room appears, dispatches (as
    /// `dispatch` would: an idle connection for any of the commands it
    /// looks at, else a busy one for the oldest, if stateless).
    fn check_dispatched(&self) -> Result<(), String> {
        if self.paused {
            return Ok(());
        }
        for (p, pool) in self.pools.iter().enumerate() {
            if pool.paused {
                continue;
            }
            let queued = pool.waiting().filter_map(|req| {
                let c = self.clients.get(req.client.key)?;
                (c.serial == req.client.serial && c.is_queued()).then_some((req.client.key, c))
            });
            // With several servers, dispatch looks past commands none of
            // their servers can take now.
            let looked_at = if pool.servers.len() > 1 {
                DISPATCH_SCAN + 1
            } else {
                1
            };
            for (i, (key, c)) in queued.take(looked_at).enumerate() {
                if let Some(b) = self.pick_idle_for(p, c, &mut Vec::new()) {
                    return Err(format!(
                        "client {key} waits in pool {p}'s backlog while idle backend {b} could run its command"
                    ));
                }
                let pipelined = (i == 0
                    && self.config.backend.pipeline_depth > 1
                    && pool.idle().is_empty()
                    && matches!(c.state, ClientState::Queued)
                    && self.stateless_command(key, c))
                .then(|| self.pipeline_target(p, c))
                .flatten();
                if let Some(b) = pipelined {
                    return Err(format!(
                        "client {key}'s stateless command waits in pool {p}'s backlog while backend {b} could take it pipelined"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Nothing left to do: no clients, no queued work, every backend idle
    /// (or gone) and the pools back at their configured size.
    pub(crate) fn is_settled(&self) -> bool {
        self.clients.is_empty()
            && self.pools.iter().all(|p| {
                p.backlog_len() == 0 && p.missing_shared(|s| self.servers[s].in_rotation()) == 0
            })
            && self
                .backends
                .iter()
                .all(|(_, b)| b.state == BackendState::Idle && !b.pinned && b.client.is_none())
    }

    /// A one-line picture of the loop's state, for failure messages.
    pub(crate) fn describe_state(&self) -> String {
        let clients: Vec<String> = self
            .clients
            .iter()
            .map(|(k, c)| format!("{k}:{:?}", c.state))
            .collect();
        let backends: Vec<String> = self
            .backends
            .iter()
            .map(|(k, b)| {
                format!(
                    "{k}:{:?}{}{}",
                    b.state,
                    if b.pinned { " pinned" } else { "" },
                    if b.kill_query.is_some() {
                        " killer"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let pools: Vec<String> = self
            .pools
            .iter()
            .map(|p| {
                format!(
                    "{}: shared {} pinned {} connecting {} idle {:?} backlog {}",
                    p.user.name,
                    p.shared,
                    p.pinned,
                    p.connecting,
                    p.idle(),
                    p.backlog_len()
                )
            })
            .collect();
        format!(
            "clients [{}] backends [{}] pools [{}]",
            clients.join(", "),
            backends.join(", "),
            pools.join("; ")
        )
    }
}

//! The engine's backend servers as a set: built from the configuration,
//! changed by a reload (added, reconfigured, drained and removed without
//! dropping clients), and named by the pools that use them.

use log::info;

use std::time::Instant;

use super::backend_server::BackendServer;
use super::{Deferred, Engine};
use crate::config::{Config, ServerRole};
use crate::health::{HealthReport, RotationState};

/// The servers of a configuration, in its order.
pub(super) fn from_config(config: &Config) -> Vec<BackendServer> {
    config.servers.iter().map(BackendServer::new).collect()
}

/// The engine's indexes of the servers `names` (of `servers`), in order;
/// names no server has are skipped (the configuration was checked).
pub(super) fn indexes(servers: &[BackendServer], names: &[String]) -> Vec<usize> {
    let found: Vec<usize> = names
        .iter()
        .filter_map(|n| servers.iter().position(|s| !s.removed && &s.name == n))
        .collect();
    if found.is_empty() {
        // Never a pool without a server: the first one that is left.
        vec![servers.iter().position(|s| !s.removed).unwrap_or(0)]
    } else {
        found
    }
}

impl Engine {
    /// A reload's servers: those of the same name take its settings, new
    /// ones are added, and those it no longer lists are drained (no new
    /// connections; idle ones close now, busy ones when their command is
    /// done). Then every pool follows its user's `servers`.
    pub(super) fn reload_servers(&mut self, new: &Config, notes: &mut Vec<String>) {
        for config in &new.servers {
            match self.servers.iter_mut().find(|s| s.name == config.name) {
                Some(server) => {
                    if server.removed {
                        notes.push(format!("server {} added again", config.name));
                    } else if server.address != config.address {
                        notes.push(format!(
                            "server {}: address {} -> {} (new connections)",
                            config.name, server.address, config.address
                        ));
                    }
                    server.reconfigure(config);
                }
                None => {
                    notes.push(format!("server {} added", config.name));
                    self.servers.push(BackendServer::new(config));
                }
            }
        }
        for server in &mut self.servers {
            if !server.removed && !new.servers.iter().any(|c| c.name == server.name) {
                notes.push(format!(
                    "server {} removed: its connections close as their commands finish",
                    server.name
                ));
                server.removed = true;
            }
        }
        for p in 0..self.pools.len() {
            let names = &self.pools[p].user.servers;
            let wanted = indexes(&self.servers, names);
            self.pools[p].use_servers(&wanted, self.now);
        }
        for (i, server) in self.servers.iter_mut().enumerate() {
            // A raised (or lifted) max_concurrency makes room for the
            // pools waiting.
            if server.admission.defer_turns() {
                self.deferred.push(Deferred::ServerTurns(i));
            }
        }
        self.health_targets_stale = true;
    }

    /// Log a server's change of rotation.
    pub(super) fn log_rotation(&self, server: usize, out: Option<&str>) {
        let s = &self.servers[server];
        match out {
            Some(why) => info!("server {} ({}) out of rotation: {why}", s.name, s.address),
            None => info!("server {} ({}) back in rotation", s.name, s.address),
        }
    }
}

impl Engine {
    /// What the I/O layer's checker threads are to look at: every server
    /// of a role (not `[backend] address`) that is not removed.
    pub(crate) fn health_targets(&self) -> Vec<crate::health::HealthTarget> {
        let (user, password) = self.config.health_account();
        self.servers
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.removed && s.rotation.is_some())
            .map(|(i, s)| crate::health::HealthTarget {
                server: i,
                name: s.name.clone(),
                address: s.address.clone(),
                role: if s.role == ServerRole::Replica {
                    crate::health::ServerRole::Replica
                } else {
                    crate::health::ServerRole::Primary
                },
                user: user.clone(),
                password: password.clone(),
                interval: self.config.backend.server_check_interval,
                connect_timeout: self.config.backend.connect_timeout,
            })
            .collect()
    }

    /// The checkers are to be started (anew) with `health_targets`: at
    /// start and after a reload (None: nothing changed since asked).
    pub(crate) fn take_health_targets(&mut self) -> Option<Vec<crate::health::HealthTarget>> {
        if !std::mem::take(&mut self.health_targets_stale) {
            return None;
        }
        Some(self.health_targets())
    }

    /// A server's check: its rotation follows (logged and counted), a
    /// replica's freshness for read-your-writes is worked out, and the
    /// pools open or close connections and hand out waiting commands.
    pub(super) fn health_report(&mut self, report: &HealthReport) {
        let now = self.now;
        let Some(server) = self.servers.get_mut(report.server) else {
            return;
        };
        if server.removed {
            return;
        }
        let Some(rotation) = server.rotation.as_mut() else {
            return;
        };
        let change = rotation.observe(report);
        let in_rotation = rotation.in_rotation();
        let reason = match rotation.state() {
            RotationState::OutOfRotation(why) => Some(why.to_string()),
            _ => None,
        };
        let h = &mut server.health;
        // `checked_at` is of the checker's clock; the engine's may be a
        // pass behind, never ahead by more.
        h.checked_at = Some(report.checked_at.min(now));
        h.check_time = report.rtt;
        match &report.outcome {
            Ok(facts) => {
                h.read_only = Some(facts.read_only);
                h.lag = facts.lag;
                h.last_error = None;
                h.gtid = Some(facts.gtid.clone());
            }
            Err(e) => {
                h.last_error = Some(e.clone());
                h.gtid = None;
            }
        }
        let was_out = h.out.is_some();
        h.out = if in_rotation { None } else { reason };
        match (was_out, h.out.is_some()) {
            (false, true) => h.went_out += 1,
            (true, false) => h.came_back += 1,
            _ => {}
        }
        if change.is_some() && was_out != h.out.is_some() {
            let out = h.out.clone();
            self.log_rotation(report.server, out.as_deref());
        } else if let (Some(_), Some(out)) = (change, &h.out) {
            // Still out, for another reason now.
            let out = out.clone();
            self.log_rotation(report.server, Some(&out));
        }
        self.update_freshness();
        for p in 0..self.pools.len() {
            self.maintain_pool(p);
            self.dispatch(p);
        }
    }

    /// Read-your-writes: a replica whose applied position covers the
    /// primary's position read at time T has every write that completed
    /// before T (the position is read after T: `checked_at` is when the
    /// check's queries were sent). A replica's `fresh_as_of` is the latest
    /// such T, over every primary's last good check.
    fn update_freshness(&mut self) {
        let primaries: Vec<(Instant, crate::health::GtidPosition)> = self
            .servers
            .iter()
            .filter(|s| s.role == ServerRole::Primary && !s.removed)
            .filter_map(|s| Some((s.health.checked_at?, s.health.gtid.clone()?)))
            .collect();
        let Some(as_of) = primaries.iter().map(|(t, _)| *t).min() else {
            return;
        };
        for s in &mut self.servers {
            if s.role != ServerRole::Replica || s.removed {
                continue;
            }
            let caught_up = s
                .health
                .gtid
                .as_ref()
                .is_some_and(|applied| primaries.iter().all(|(_, pos)| applied.covers(pos)));
            if caught_up && s.health.fresh_as_of.is_none_or(|f| f < as_of) {
                s.health.fresh_as_of = Some(as_of);
            }
        }
    }
}

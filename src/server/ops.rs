//! Operations asked of the loop from outside: admin requests, reload,
//! snapshots for the stats side.

use std::time::Duration;

use log::info;

use super::backend::BackendState;
use super::client::ClientState;
use super::log_limit::LogEvent;
use super::pool::{Pool, REMOVED_PREFIX};
use super::session::PinCause;
use super::tally::TallyBook;
use super::Engine;
use crate::config::{Config, SetError, Setting};
use crate::control::{
    AdminCredentials, BackendCounts, BackendRow, ClientCounts, ClientRow, Control, PoolSnapshot,
    ServerSnapshot, Snapshot,
};

impl Engine {
    pub(super) fn handle_control(&mut self) {
        let Some(rx) = self.control.clone() else {
            return;
        };
        while let Ok(req) = rx.try_recv() {
            match req {
                Control::Snapshot { detail, reply } => {
                    let _ = reply.send(Box::new(self.snapshot(detail)));
                }
                Control::Pause { reply } => {
                    self.paused = true;
                    info!("paused by admin: requests stay in the backlog");
                    let _ = reply.send("paused: requests wait in the backlog until RESUME".into());
                }
                Control::Resume { reply } => {
                    self.paused = false;
                    info!("resumed by admin");
                    for p in 0..self.pools.len() {
                        self.dispatch(p);
                    }
                    let _ = reply.send("resumed".into());
                }
                Control::Reload { reply } => {
                    let _ = reply.send(self.reload("admin RELOAD"));
                }
                Control::Set {
                    setting,
                    value,
                    reply,
                } => {
                    let _ = reply.send(self.admin_set(&setting, value.as_deref()));
                }
                Control::KillClient { id, reply } => {
                    let _ = reply.send(self.admin_kill_client(id));
                }
                Control::PausePool { pool, pause, reply } => {
                    let _ = reply.send(self.admin_pause_pool(&pool, pause));
                }
                Control::ReconnectPool { pool, reply } => {
                    let _ = reply.send(self.admin_reconnect_pool(&pool));
                }
                Control::Health(report) => self.health_report(&report),
                Control::Credentials { reply } => {
                    let _ = reply.send(self.admin_credentials());
                }
                Control::Shutdown { reply } => {
                    let _ = reply.send("shutting down".into());
                    self.begin_shutdown();
                }
            }
        }
    }

    /// Admin `KILL CLIENT id`: as a client's `KILL CONNECTION id` would,
    /// its running statement is killed on mysqld and its backend drained or
    /// reset as when a client leaves.
    fn admin_kill_client(&mut self, id: u64) -> Result<String, String> {
        let target = u32::try_from(id)
            .ok()
            .and_then(|id| self.client_ids.get(&id).copied())
            .filter(|&t| self.clients.contains(t));
        let Some(target) = target else {
            return Err(format!("Unknown thread id: {id}"));
        };
        self.interrupt_client(target);
        info!("client {id} killed by admin");
        self.close_client(target, "killed by admin");
        Ok(format!("client {id} killed"))
    }

    /// Admin `PAUSE pool` / `RESUME pool`: the named user's pools (with
    /// their found_rows twin) stop or resume handing requests to backends.
    fn admin_pause_pool(&mut self, name: &str, pause: bool) -> Result<String, String> {
        let found = self.pools_named(name)?;
        for &p in &found {
            self.pools[p].paused = pause;
        }
        if pause {
            info!("pool {name} paused by admin: its requests stay in the backlog");
            Ok(format!(
                "pool {name} paused: its requests wait in the backlog until RESUME {name}"
            ))
        } else {
            info!("pool {name} resumed by admin");
            for p in found {
                self.dispatch(p);
            }
            Ok(format!("pool {name} resumed"))
        }
    }

    /// The pools an admin command names: a user's pool and its found_rows
    /// twin, or one pool by its SHOW POOLS name.
    fn pools_named(&self, name: &str) -> Result<Vec<usize>, String> {
        let found: Vec<usize> = self
            .pools
            .iter()
            .filter(|p| !p.relay && !p.is_removed() && (p.user.name == name || p.name() == name))
            .map(|p| p.index)
            .collect();
        if found.is_empty() {
            return Err(format!("funnel admin: no pool '{name}'"));
        }
        Ok(found)
    }

    /// Admin `RECONNECT pool`: idle backends are closed now, busy and
    /// pinned ones once their client is done with them (as a backend whose
    /// state could not be restored), and new ones opened in their place.
    fn admin_reconnect_pool(&mut self, name: &str) -> Result<String, String> {
        let found = self.pools_named(name)?;
        let keys: Vec<usize> = self
            .backends
            .iter()
            .filter(|(_, b)| found.contains(&b.pool) && b.kill_query.is_none())
            .map(|(k, _)| k)
            .collect();
        let (mut now, mut later) = (0, 0);
        for k in keys {
            let pool = self.backends[k].pool;
            if self.pools[pool].idle().contains(&k) {
                self.close_backend(k);
                now += 1;
            } else {
                self.backends[k].close_when_done = true;
                later += 1;
            }
        }
        for &p in &found {
            self.maintain_pool(p);
        }
        info!(
            "pool {name}: reconnect by admin: {now} idle backends closed, {later} close when done"
        );
        Ok(format!(
            "pool {name}: {now} idle backend connections closed and reopened, {later} busy ones close after their current command"
        ))
    }

    /// Re-read the configuration file and apply what can change live;
    /// `trigger` (SIGHUP, admin RELOAD) is named in the log line.
    pub(super) fn reload(&mut self, trigger: &str) -> Result<String, String> {
        let path = std::path::PathBuf::from(&self.config.source);
        let new = match Config::from_file(&path) {
            Ok(new) => new,
            Err(e) => {
                let msg = format!("reload refused, keeping the current configuration: {e}");
                log_limited!(self, LogEvent::ReloadRefused, "{msg} ({trigger})");
                return Err(msg);
            }
        };
        let notes = self.apply_config(new);
        let summary = if notes.is_empty() {
            "configuration reloaded (no changes)".to_string()
        } else {
            format!("configuration reloaded: {}", notes.join("; "))
        };
        if self.share.index == 0 {
            // Said once, by the first loop (the others apply it alike).
            log_limited!(
                self,
                LogEvent::ReloadDone,
                "{summary} ({trigger}, {})",
                self.config.source
            );
        }
        Ok(summary)
    }

    /// Admin `SET key = value`: the running configuration with that one
    /// setting changed, applied as a reload applies the file's; the next
    /// reload from the file undoes it.
    fn admin_set(&mut self, setting: &Setting, value: Option<&str>) -> Result<String, SetError> {
        let new = self.full_config.set(setting, value)?;
        let mut notes = self.apply_config(new);
        // A SET never changes a restart-only key; such lines are a reloaded
        // file's changes still waiting for the restart.
        notes.retain(|n| !n.ends_with("(needs a restart)"));
        let changed = if notes.is_empty() {
            format!("{setting}: no change")
        } else {
            notes.join("; ")
        };
        let summary = format!(
            "set {changed}; until the next reload of the file (RELOAD, SIGHUP) or a restart"
        );
        log_limited!(
            self,
            LogEvent::ReloadDone,
            "configuration changed by admin SET: {changed} (until the next reload of {})",
            self.config.source
        );
        Ok(summary)
    }

    /// Put a new configuration in place of the running one and apply what
    /// can change live; what needs a restart keeps its running value.
    /// Returns what changed, for the log and the admin's answer.
    fn apply_config(&mut self, new_full: Config) -> Vec<String> {
        // Every key that changed, old -> new (restart-only ones say so), as
        // the file has them; this loop runs its share of them.
        let mut notes = self.full_config.changes(&new_full);
        let new = new_full.for_loop(self.share);
        let old_full = std::mem::replace(&mut self.full_config, new_full);
        // A pool's connections as configured (this loop has a share).
        let configured = |c: &Config, name: &str| {
            c.users
                .iter()
                .find(|u| u.name == name)
                .map_or(0, |u| u.connections)
        };
        self.full_config.listen = self.config.listen.clone();
        self.full_config.unix_socket = self.config.unix_socket.clone();
        self.full_config.backend.address = self.config.backend.address.clone();
        // The files were read again: new connections get what they hold
        // (connected clients keep the TLS session they have).
        match (&self.config.tls, &new.tls) {
            (old, Some(tls)) if old.as_ref() != Some(tls) => notes.push(format!(
                "TLS certificate reloaded: new connections get {} (SHA-256 {})",
                tls.cert_path, tls.fingerprint
            )),
            (Some(_), None) => notes.push("TLS no longer offered to new connections".into()),
            _ => {}
        }
        if self.config.backend.tls != new.backend.tls
            && self.config.backend.tls.mode == new.backend.tls.mode
        {
            notes.push("[backend] TLS settings reloaded: new backend connections use them".into());
        }
        // Pools: existing users are updated in place (both pools of a user
        // whose clients use CLIENT_FOUND_ROWS); new users get a pool; a user
        // removed earlier and listed again gets its old pool back (one pool
        // per user, drained or not). Removed users' pools drain: no new
        // logins, their clients keep working (as mysqld's sessions outlive
        // a DROP USER) on backends opened only for their commands and
        // closed as they go idle; the pool is no longer shown once it has
        // neither clients nor backends.
        for user in &new.users {
            let mut known = false;
            for p in self
                .pools
                .iter_mut()
                .filter(|p| !p.relay)
                .filter(|p| p.user.name == user.name || p.removed_user() == Some(&user.name))
            {
                known = true;
                if p.is_removed() {
                    if !p.found_rows {
                        notes.push(format!("user {} added again: its pool is back", user.name));
                    }
                } else {
                    let (old, new) = (
                        configured(&old_full, &user.name),
                        configured(&self.full_config, &user.name),
                    );
                    if old != new {
                        notes.push(format!("pool {}: connections {old} -> {new}", p.name()));
                    }
                }
                // The backend user or its grants may have changed: ask
                // mysqld again (a new backend user's are unknown until then).
                if p.user.backend_user != user.backend_user {
                    p.privileges = None;
                }
                p.privileges_stale = true;
                p.user = user.clone();
                // Its connections here may be none now, or some again.
                p.publish_head();
            }
            if !known {
                let index = self.pools.len();
                let servers = super::servers::indexes(&self.servers, &user.servers);
                self.add_pool(Pool::new(index, user.clone(), &servers, self.now));
                notes.push(format!("pool {} added", user.name));
            }
        }
        for p in self.pools.iter_mut().filter(|p| p.relay) {
            p.user = super::relay::relay_pool_user(&new);
        }
        self.reload_servers(&new, &mut notes);
        for p in &mut self.pools {
            if !p.relay && !p.is_removed() && !new.users.iter().any(|u| u.name == p.user.name) {
                if !p.found_rows {
                    notes.push(format!(
                        "user {} removed: no new logins, its pool drains",
                        p.user.name
                    ));
                }
                p.user.name = format!("{REMOVED_PREFIX}{}", p.user.name);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(new.log_level);
        }
        let keep_listen = self.config.listen.clone();
        let keep_socket = self.config.unix_socket.clone();
        let keep_backend = self.config.backend.address.clone();
        let rules_changed = self.config.rules != new.rules;
        if rules_changed {
            notes.push(format!(
                "query rules replaced ({} rules; hit counts start again, the result cache is emptied)",
                new.rules.rules.len()
            ));
        }
        self.config = new;
        if rules_changed {
            self.reload_rules();
        }
        // What needs a restart keeps its running value.
        self.config.listen = keep_listen;
        self.config.unix_socket = keep_socket;
        self.config.backend.address = keep_backend;
        // More clients or backends may now need more descriptors (the
        // process's: the first loop checks, with the whole configuration).
        if self.share.index == 0 {
            crate::process::check_fd_limit(&self.full_config);
        }
        for p in 0..self.pools.len() {
            self.shrink_pool(p);
            self.maintain_pool(p);
            self.dispatch(p);
        }
        notes
    }

    /// Start serving a new pool (its index must be `self.pools.len()`).
    pub(super) fn add_pool(&mut self, pool: Pool) -> usize {
        let index = self.pools.len();
        debug_assert_eq!(pool.index, index);
        self.pools.push(pool);
        self.stats.add_pool();
        self.attach_pool_head(index);
        self.maintain_pool(index);
        index
    }

    /// Close idle shared backends beyond the configured count.
    fn shrink_pool(&mut self, pool: usize) {
        if self.pools[pool].is_removed() && self.pools[pool].backlog_len() == 0 {
            while let Some(&b) = self.pools[pool].idle().last() {
                self.close_backend(b);
            }
        }
        while self.pools[pool].shared > self.pools[pool].capacity() {
            let Some(&b) = self.pools[pool].idle().last() else {
                // Busy ones close when they come back (backend_ready).
                return;
            };
            self.close_backend(b);
        }
    }

    pub(super) fn snapshot(&self, detail: bool) -> Snapshot {
        if cfg!(debug_assertions) {
            if let Err(e) = self.check_tallies() {
                panic!("{e}");
            }
        }
        let mut pools: Vec<PoolSnapshot> = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p, self.tallies.get(i)))
            .map(|(p, tally)| PoolSnapshot {
                name: p.name(),
                paused: p.paused,
                found_rows: p.found_rows,
                backend_user: p.user.backend_user.clone(),
                configured_connections: p.user.connections,
                max_pinned_backends: p.user.max_pinned_backends,
                backlog_size: p.user.backlog_size,
                queue_timeout: p.user.queue_timeout,
                clients: ClientCounts {
                    connected: tally.connected,
                    idle: tally.idle,
                    queued: tally.queued,
                    running: tally.running,
                    pinned: PinCause::ALL
                        .iter()
                        .zip(tally.pinned)
                        .map(|(c, n)| (c.name(), n))
                        .collect(),
                },
                backends: BackendCounts {
                    broken: p.missing_shared(|s| self.servers[s].in_rotation()),
                    ..BackendCounts::default()
                },
                backlog_depth: p.backlog_len(),
                backlog_max_since_start: p.backlog_max,
                // The relayed logins' pool has no shared backends to be up.
                backend_up: p.relay,
                last_backend_error: p.last_backend_error.clone(),
                counters: p.counters.clone(),
                latency: self.stats.pool_latency(p.index),
                oldest_wait: p
                    .oldest_enqueued()
                    .map(|t| self.now.saturating_duration_since(t))
                    .unwrap_or(Duration::ZERO),
                buffered_bytes: tally.buffered_bytes,
                prepared_stmts: tally.prepared_stmts,
            })
            .collect();
        // The pools' figures come from the tallies: only the rows of SHOW
        // CLIENTS walk the clients.
        let mut clients = Vec::new();
        if detail {
            for (_, c) in &self.clients {
                let state = match c.state {
                    ClientState::Handshake
                    | ClientState::AuthSwitch(_)
                    | ClientState::Relay { login: true, .. } => "handshake",
                    ClientState::Relay { login: false, .. } => "connecting",
                    ClientState::ConnectDb => "connecting",
                    ClientState::Idle => "idle",
                    ClientState::Queued => "queued",
                    ClientState::Running(_) => "running",
                };
                clients.push(ClientRow {
                    id: c.id,
                    user: c.user.clone(),
                    host: c.host.clone(),
                    state,
                    schema: c.session.schema.clone(),
                    pinned_backend: c
                        .pinned
                        .and_then(|b| self.backends.get(b))
                        .map(|b| b.thread_id),
                    pin_cause: c.pins.primary().map(|p| p.name()),
                    prepared_stmts: c.stmts.len(),
                    user_vars: c.session.user_vars.len(),
                    busy_for: if c.is_busy() {
                        self.now.saturating_duration_since(c.command_read_at)
                    } else {
                        Duration::ZERO
                    },
                    bytes_out: c.bytes_out,
                    event_loop: self.share.index + 1,
                });
            }
        }
        let mut servers: Vec<ServerSnapshot> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| ServerSnapshot {
                service: self.stats.server_latency(i),
                name: s.name.clone(),
                address: s.address.to_string(),
                role: s.role.name(),
                weight: s.weight,
                removed: s.removed,
                out: s.health.out.clone(),
                checked: s.role != crate::config::ServerRole::Any,
                last_check_ago: s
                    .health
                    .checked_at
                    .map(|t| self.now.saturating_duration_since(t)),
                check_time: s.health.check_time,
                read_only: s.health.read_only,
                lag: s.health.lag,
                last_error: s.health.last_error.clone(),
                went_out: s.health.went_out,
                came_back: s.health.came_back,
                connect_failures: s.health.connect_failures,
                lost: s.health.lost,
                connections: 0,
                in_use: s.in_use,
                running: s.admission.running,
                max_concurrency: s.admission.limit,
                waiting_users: s.admission.waiting_pools(),
                turn_waits: s.admission.waits,
                version: s.version.clone(),
            })
            .collect();
        let mut backends = Vec::new();
        for (_, b) in &self.backends {
            if let Some(s) = servers.get_mut(b.server) {
                s.connections += 1;
            }
            let Some(p) = pools.get_mut(b.pool) else {
                continue;
            };
            let state = match b.state {
                BackendState::Connecting
                | BackendState::AwaitGreeting
                | BackendState::Authenticating => "connecting",
                BackendState::Internal(_) if b.connecting => "connecting",
                BackendState::Internal(_) => "internal",
                BackendState::Idle => "idle",
                BackendState::Running | BackendState::AwaitKill { .. } => "busy",
                BackendState::Draining => "draining",
            };
            if !b.connecting {
                p.backend_up = true;
            }
            let bc = &mut p.backends;
            match state {
                "connecting" => bc.connecting += 1,
                _ if b.pinned => bc.pinned += 1,
                "idle" => bc.idle += 1,
                "internal" => bc.internal += 1,
                _ => bc.busy += 1,
            }
            if detail {
                backends.push(BackendRow {
                    pool: p.name.clone(),
                    thread_id: b.thread_id,
                    state,
                    pinned: b.pinned,
                    client_id: b
                        .client
                        .and_then(|cr| self.clients.get(cr.key).filter(|c| c.serial == cr.serial))
                        .map(|c| c.id),
                    schema: b.session.schema.clone(),
                    busy_for: if state == "idle" {
                        Duration::ZERO
                    } else {
                        self.now.saturating_duration_since(b.sent_at)
                    },
                    event_loop: self.share.index + 1,
                });
            }
        }
        // A removed server is gone once its connections have closed.
        servers.retain(|s| !s.removed || s.connections > 0);
        // A removed user's pool is gone once it has drained.
        pools.retain(|p| {
            let b = &p.backends;
            !(p.is_removed()
                && p.clients.connected == 0
                && p.backlog_depth == 0
                && b.connecting + b.idle + b.busy + b.pinned + b.internal == 0)
        });
        let counters = self.counters.clone();
        // This loop's clients' statements (the count the limit checks is
        // all loops'; the admin side adds the loops' snapshots up).
        let prepared_stmts = (0..self.pools.len())
            .map(|i| self.tallies.get(i).prepared_stmts)
            .sum();
        Snapshot {
            taken_at: std::time::SystemTime::now(),
            uptime: self.now.saturating_duration_since(self.started),
            version: env!("CARGO_PKG_VERSION"),
            backend_version: self.servers[0].version.clone(),
            backend_address: self.config.backend.address.to_string(),
            paused: self.paused,
            shutting_down: self.shutting_down.is_some(),
            counters,
            clients_connected: self.clients.len(),
            clients_handshaking: self.tallies.handshaking(),
            pools,
            servers,
            clients,
            backends,
            config_text: self.full_config.describe(),
            max_client_connections: self.full_config.max_client_connections,
            buffered_bytes: self.buffered_total,
            max_buffered_result: self.config.max_buffered_result,
            max_buffered_total: self.config.max_buffered_total,
            prepared_stmts,
            max_prepared_stmt_count: self
                .config
                .max_prepared_stmt_count
                .min(self.servers[0].max_prepared.unwrap_or(usize::MAX)),
            health_backlog_ratio: self
                .config
                .stats
                .as_ref()
                .map_or(0.9, |s| s.health_backlog_ratio),
            health_pools: self
                .config
                .stats
                .as_ref()
                .map(|s| s.health_pools.clone())
                .unwrap_or_default(),
            queries: if detail {
                self.stats.query_table()
            } else {
                Vec::new()
            },
            rules: self.rules.rows(),
            cache: self.rules.cache_stats(),
        }
    }

    /// The pools' client tallies are what a walk over the clients finds
    /// (the snapshot's figures in debug builds, and the simulation after
    /// every step).
    pub(super) fn check_tallies(&self) -> Result<(), String> {
        let mut walked = TallyBook::walk(self.clients.iter().map(|(_, c)| c.counted_as()));
        let kept = self.tallies.all(walked.len().max(self.pools.len()));
        walked.resize(kept.len(), Default::default());
        if let Some((key, _)) = self
            .clients
            .iter()
            .find(|(_, c)| c.counted() != Some(c.counted_as()))
        {
            return Err(format!(
                "client {key} is tallied as {:?} but is {:?}",
                self.clients[key].counted(),
                self.clients[key].counted_as()
            ));
        }
        if kept != walked {
            return Err(format!(
                "the pools' client tallies {kept:?} differ from a walk {walked:?}"
            ));
        }
        Ok(())
    }

    /// The admin accounts as configured now (reloadable): what a console
    /// login is checked against. Cheap, unlike a snapshot.
    fn admin_credentials(&self) -> AdminCredentials {
        let stage2 =
            |password: &str| crate::protocol::auth::native_password_stage2(password.as_bytes());
        let admin = self.config.admin.as_ref();
        AdminCredentials {
            admin: admin.map(|a| (a.user.clone(), stage2(&a.password))),
            stats: admin
                .filter(|a| !a.stats_user.is_empty())
                .map(|a| (a.stats_user.clone(), stage2(&a.stats_password))),
            tls: self.config.tls.as_ref().map(|t| t.config.clone()),
        }
    }
}

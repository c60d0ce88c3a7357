//! The engine's backend servers as a set: built from the configuration,
//! changed by a reload (added, reconfigured, drained and removed without
//! dropping clients), and named by the pools that use them.

use log::info;

use super::backend_server::BackendServer;
use super::Engine;
use crate::config::Config;

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
    }

    /// Log a server's change of rotation.
    #[allow(dead_code)] // TEMP until health reports are wired
    pub(super) fn log_rotation(&self, server: usize, out: Option<&str>) {
        let s = &self.servers[server];
        match out {
            Some(why) => info!("server {} ({}) out of rotation: {why}", s.name, s.address),
            None => info!("server {} ({}) back in rotation", s.name, s.address),
        }
    }
}

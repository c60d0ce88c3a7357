//! Logins of users no `[user]` section lists, with `unlisted_users = relay`:
//! mysqld authenticates them itself.
//!
//! The funnel has already greeted the client with its own scramble when it
//! learns the user name, so it cannot pass the client's answer on. Instead
//! it opens a backend connection for the client and answers mysqld's
//! greeting with the client's user, schema, character set and connection
//! attributes, an empty auth response and a plugin name no server plugin
//! asks for ([`RELAY_PLUGIN`]). mysqld then always asks for a switch to the
//! account's own plugin (`AuthSwitchRequest`, with its own scramble or
//! nonce): that request goes to the client, the client's answers go to
//! mysqld, packet for packet with their sequence ids (both sides count from
//! the greeting alike), until mysqld says OK or ERR. Any plugin works that
//! way (mysql_native_password, client_ed25519, dialog, ...). An ERR reaches
//! the client as mysqld sent it; an OK only after the funnel has set the
//! connection up as any backend (session tracking, baseline), then the
//! client is pinned to it (`PinCause::UnlistedUser`) for as long as it
//! stays. When it leaves (or changes user) the connection is closed: it
//! carries that user's identity and is never given to anyone else. If the
//! connection is lost, the client is disconnected, as it would be from a
//! mysqld that went away.

use log::debug;

use super::backend::BackendState;
use super::client::{ClientState, SERVER_CAPS};
use super::log_limit::LogEvent;
use super::pool::{ClientRef, Pool};
use super::session::{PinCause, SessionVars};
use super::Engine;
use crate::config::{Config, Credential, UserConfig};
use crate::protocol::consts::err::*;
use crate::protocol::consts::*;
use crate::protocol::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use crate::protocol::response::encode_err;

/// The plugin the funnel names in its handshake response for a relayed
/// login: none of mysqld's, so mysqld always asks the client (through the
/// funnel) for the account's own plugin instead of reading the empty auth
/// response.
pub const RELAY_PLUGIN: &str = "funnel_relay";

/// Pool name (as the user name of its pseudo-user: `\0` so no client can
/// log in as it, and reload leaves it alone).
const RELAY_POOL_USER: &str = "\0unlisted";

/// A backend connection that belongs to one relayed client for its life.
#[derive(Clone, Debug)]
pub struct Relay {
    pub owner: ClientRef,
    /// While logging in: what the client sent in its handshake response.
    pub login: Option<Box<RelayLogin>>,
    /// The sequence id of the next packet the client expects during the
    /// login (for an error the funnel itself must send).
    pub client_seq: u8,
    /// The OK the client is owed once the connection is ready (after the
    /// login, or after its COM_RESET_CONNECTION), with its sequence id.
    pub ok_seq: Option<u8>,
}

#[derive(Clone, Debug)]
pub struct RelayLogin {
    pub username: String,
    pub database: Option<String>,
    pub capabilities: u32,
    pub charset: u8,
    pub attrs: Vec<(String, String)>,
    /// The client has answered mysqld at least once.
    pub client_spoke: bool,
}

/// The pseudo-user of the relayed logins' pool: no shared connections,
/// `max_unlisted_connections` pinned ones, the `[pool]` backlog and queue
/// timeout.
pub fn relay_pool_user(config: &Config) -> UserConfig {
    let defaults = config.users.first();
    UserConfig {
        name: RELAY_POOL_USER.to_string(),
        credential: Credential::Plain(String::new()),
        backend_user: String::new(),
        backend_password: String::new(),
        connections: 0,
        backlog_size: defaults.map_or(1, |u| u.backlog_size),
        queue_timeout: defaults.map_or(std::time::Duration::from_secs(10), |u| u.queue_timeout),
        max_pinned_backends: config.max_unlisted_connections,
        max_client_connections: 0,
        allowed_networks: Vec::new(),
        require_tls: false,
        // Relayed logins go where a plain `[backend] address` would: the
        // first server (the first primary with [server] sections).
        servers: config
            .servers
            .iter()
            .find(|s| s.role != crate::config::ServerRole::Replica)
            .or(config.servers.first())
            .map(|s| vec![s.name.clone()])
            .unwrap_or_default(),
        read_write_split: false,
        max_concurrency: None,
        rate: None,
    }
}

impl Engine {
    /// The pool of relayed logins, created at the first one.
    fn relay_pool(&mut self) -> usize {
        if let Some(p) = self.pools.iter().position(|p| p.relay) {
            return p;
        }
        let index = self.pools.len();
        let user = relay_pool_user(&self.config);
        let servers = super::servers::indexes(&self.servers, &user.servers);
        let mut pool = Pool::new(index, user, &servers, self.now);
        pool.relay = true;
        self.add_pool(pool)
    }

    /// A client logs in as a user no `[user]` lists, and relaying is on:
    /// open a backend connection of its own and log in there as the client.
    pub(super) fn relay_login(&mut self, key: usize, resp: HandshakeResponse, seq: u8) {
        let next = seq.wrapping_add(1);
        if resp.capabilities & CLIENT_PLUGIN_AUTH == 0 {
            // It could not follow mysqld's switch to the account's plugin.
            self.relay_refuse(
                key,
                next,
                ER_NOT_SUPPORTED_AUTH_MODE,
                "Client does not support authentication protocol requested by server; consider upgrading MariaDB client",
            );
            return;
        }
        let pool = self.relay_pool();
        let p = &self.pools[pool];
        if p.pinned >= p.user.max_pinned_backends {
            let msg = format!(
                "funnel: too many relayed logins (max_unlisted_connections = {}); try again later",
                p.user.max_pinned_backends
            );
            log_limited!(
                self,
                LogEvent::PinnedExhausted,
                "refusing a relayed login: {msg}"
            );
            self.relay_refuse(key, next, ER_CON_COUNT_ERROR, &msg);
            return;
        }
        let backend = self.backends.vacant_key();
        let before = self.backends.len();
        self.open_backend(pool, 0, true);
        if self.backends.len() == before {
            let why = self.pools[pool]
                .last_backend_error
                .clone()
                .unwrap_or_else(|| "cannot connect".into());
            let msg = format!("funnel: cannot reach mysqld to log in: {why}");
            self.relay_refuse(key, next, CR_SERVER_LOST, &msg);
            return;
        }
        let c = &mut self.clients[key];
        let owner = ClientRef {
            key,
            serial: c.serial,
        };
        c.pool = pool;
        c.user = resp.username.clone();
        c.capabilities = resp.capabilities & (SERVER_CAPS | CLIENT_LOCAL_FILES);
        c.charset = resp.charset;
        c.multi_statements = resp.capabilities & CLIENT_MULTI_STATEMENTS != 0;
        c.pinned = Some(backend);
        c.pin(PinCause::UnlistedUser);
        c.set_state(ClientState::Relay {
            backend,
            login: true,
        });
        debug!(
            "{}: relaying the login of unlisted user {} to backend {backend}",
            c.label(),
            c.user
        );
        self.attach_backend_client(backend, owner);
        let b = &mut self.backends[backend];
        b.relay = Some(Box::new(Relay {
            owner,
            login: Some(Box::new(RelayLogin {
                username: resp.username,
                database: resp.database.filter(|d| !d.is_empty()),
                capabilities: resp.capabilities,
                charset: resp.charset,
                attrs: resp.attrs,
                client_spoke: false,
            })),
            client_seq: next,
            ok_seq: None,
        }));
    }

    /// Refuse a login before any backend is involved.
    fn relay_refuse(&mut self, key: usize, seq: u8, code: (u16, &'static str), msg: &str) {
        self.counters.auth_failures += 1;
        let mut payload = Vec::with_capacity(msg.len() + 16);
        encode_err(&mut payload, code.0, code.1, msg);
        self.send_to_client(key, seq, &payload);
        if let Some(c) = self.clients.get_mut(key) {
            c.set_state(ClientState::Idle);
            c.close_after_flush = true;
        }
        self.flush_client(key);
    }

    /// mysqld's greeting on a relayed connection: answer as the client.
    /// Returns false for a connection that is not a relayed login.
    pub(super) fn relay_greeting(
        &mut self,
        key: usize,
        greeting: &HandshakeV10,
        payload: &[u8],
    ) -> bool {
        let local_files = if self.config.allow_local_infile {
            CLIENT_LOCAL_FILES
        } else {
            0
        };
        let b = &mut self.backends[key];
        let Some(login) = b.relay.as_ref().and_then(|r| r.login.as_ref()) else {
            return false;
        };
        // The funnel's own capabilities (session tracking, EOF packets),
        // plus what only a login can fix and the client asked for.
        let mut caps =
            super::backend::BACKEND_CAPS | local_files | (login.capabilities & CLIENT_FOUND_ROWS);
        if login.database.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        b.capabilities = caps & greeting.capabilities;
        // MariaDB's extensions, as for any backend (see `backend_greeting`).
        b.mariadb_caps = if greeting.capabilities & crate::protocol::mariadb_ext::CLIENT_MYSQL == 0
        {
            crate::protocol::mariadb_ext::greeting_mariadb_caps(payload)
                & super::backend::MARIADB_CAPS
        } else {
            0
        };
        b.tracker = crate::protocol::tracker::ResponseTracker::new(b.capabilities);
        b.charset = login.charset;
        let mut attrs = login.attrs.clone();
        attrs.push(("_funnel_relay".into(), env!("CARGO_PKG_VERSION").into()));
        let response = HandshakeResponse {
            capabilities: b.capabilities,
            max_packet: 1 << 30,
            charset: login.charset,
            username: login.username.clone(),
            auth_response: Vec::new(),
            database: login.database.clone(),
            auth_plugin: Some(RELAY_PLUGIN.to_string()),
            attrs,
        };
        self.set_backend_state(key, BackendState::Authenticating);
        let b = &mut self.backends[key];
        let mut payload = Vec::with_capacity(128);
        response.encode(&mut payload);
        if b.mariadb_caps != 0 {
            crate::protocol::mariadb_ext::set_response_mariadb_caps(&mut payload, b.mariadb_caps);
        }
        // TLS to mysqld exactly when the client has it (`login_tls`).
        let tls = self.login_tls(key, greeting.capabilities) == Ok(true);
        self.send_login_response(key, &payload, tls);
        true
    }

    /// A packet from mysqld during a relayed login. Returns false when the
    /// backend's own login code is to handle it (not relayed, or the OK).
    pub(super) fn relay_auth_reply(&mut self, key: usize, payload: &[u8], seq: u8) -> bool {
        let b = &mut self.backends[key];
        let Some(relay) = b.relay.as_mut() else {
            return false;
        };
        let Some(login) = relay.login.as_ref() else {
            return false;
        };
        let owner = relay.owner;
        let client_spoke = login.client_spoke;
        let user = login.username.clone();
        if !self
            .clients
            .get(owner.key)
            .is_some_and(|c| c.serial == owner.serial && !c.close_after_flush)
        {
            // The client left during its login.
            b.relay = None;
            self.detach_backend_client(key);
            self.close_backend(key);
            return true;
        }
        match payload.first() {
            Some(&OK_HEADER) if !client_spoke => {
                // mysqld let the user in on the connection's own identity
                // (unix_socket and the like), without the client proving
                // anything: that identity is the funnel's, not the client's.
                b.relay = None;
                self.detach_backend_client(key);
                self.close_backend(key);
                let msg = format!(
                    "funnel: mysqld accepted user '{user}' without an authentication exchange; the funnel does not relay such logins"
                );
                self.relay_refuse(owner.key, seq, ER_ACCESS_DENIED_ERROR, &msg);
                true
            }
            Some(&OK_HEADER) => {
                // Logged in: set up as any backend; the client's OK comes
                // when the connection is ready (`relay_backend_ready`).
                relay.login = None;
                relay.ok_seq = Some(seq);
                false
            }
            Some(&ERR_HEADER) => {
                // Refused: mysqld's own ERR is the client's answer.
                b.relay = None;
                self.detach_backend_client(key);
                self.close_backend(key);
                let pool = self.clients[owner.key].pool;
                self.bump(pool, |c| c.auth_failures += 1);
                let c = &self.clients[owner.key];
                let msg = crate::protocol::response::decode_err(payload)
                    .map(|e| String::from_utf8_lossy(e.message).into_owned())
                    .unwrap_or_default();
                log_limited!(
                    self,
                    LogEvent::AuthFailure,
                    "{} refused by mysqld (relayed login): {msg}",
                    c.label()
                );
                self.send_to_client(owner.key, seq, payload);
                if let Some(c) = self.clients.get_mut(owner.key) {
                    c.pinned = None;
                    c.set_state(ClientState::Idle);
                    c.close_after_flush = true;
                }
                self.flush_client(owner.key);
                true
            }
            _ => {
                // An auth switch or more plugin data: the client's turn.
                relay.client_seq = seq.wrapping_add(1);
                if let Ok(switch) = AuthSwitchRequest::decode(payload) {
                    if let Some(scramble) = switch.data.get(..20) {
                        if switch.plugin == MYSQL_NATIVE_PASSWORD {
                            // Clients answer a later COM_CHANGE_USER with
                            // the scramble they saw last (mysqld's own).
                            self.clients[owner.key].scramble.copy_from_slice(scramble);
                        }
                    }
                }
                self.send_to_client(owner.key, seq, payload);
                true
            }
        }
    }

    /// A packet from the client during its relayed login: for mysqld.
    pub(super) fn relay_client_packet(
        &mut self,
        key: usize,
        backend: usize,
        payload: &[u8],
        seq: u8,
    ) {
        let serial = self.clients[key].serial;
        let Some(relay) = self
            .backends
            .get_mut(backend)
            .and_then(|b| b.relay.as_mut())
            .filter(|r| r.owner.key == key && r.owner.serial == serial)
        else {
            self.close_client(key, "relayed login lost its backend");
            return;
        };
        let Some(login) = relay.login.as_mut() else {
            self.close_client(key, "packet after the relayed login");
            return;
        };
        login.client_spoke = true;
        relay.client_seq = seq.wrapping_add(1);
        self.send_to_backend(backend, seq, payload);
    }

    /// A relayed connection finished its set-up (after the login or a
    /// reset): it goes back to its client, which gets its OK if it is
    /// owed one; if the client left meanwhile, it is closed. Returns false
    /// for a connection that is not relayed.
    pub(super) fn relay_backend_ready(&mut self, key: usize) -> bool {
        let b = &mut self.backends[key];
        let Some(relay) = b.relay.as_mut() else {
            return false;
        };
        let owner = relay.owner;
        let ok_seq = relay.ok_seq.take();
        if b.connecting {
            let pinned = b.pinned;
            self.set_backend_role(key, pinned, false);
        }
        let b = &mut self.backends[key];
        let alive = self.clients.get(owner.key).is_some_and(|c| {
            c.serial == owner.serial && !c.close_after_flush && c.pinned == Some(key)
        });
        if !alive {
            b.relay = None;
            self.detach_backend_client(key);
            self.close_backend(key);
            return true;
        }
        b.idle_since = self.now;
        self.attach_backend_client(key, owner);
        self.set_backend_state(key, BackendState::Idle);
        let b = &mut self.backends[key];
        let session = b.session.clone();
        let c = &mut self.clients[owner.key];
        c.session = session;
        c.session_ready = true;
        c.pin(PinCause::UnlistedUser);
        if matches!(c.state, ClientState::Relay { .. }) {
            c.set_idle();
        }
        if let Some(seq) = ok_seq {
            debug!("{} logged in as {} by mysqld", c.label(), c.user);
            self.client_ok(owner.key, seq);
        }
        self.client_ready(owner.key);
        true
    }

    /// COM_RESET_CONNECTION of a relayed client: its own connection is
    /// reset (and set up again), and it answers when that is done.
    /// Returns false for a client that is not relayed.
    pub(super) fn relay_reset(&mut self, key: usize) -> bool {
        let Some(backend) = self.relayed_backend(key) else {
            return false;
        };
        let c = &mut self.clients[key];
        let schema = c.session.schema.clone();
        c.session = SessionVars::new();
        c.session.set_schema(schema);
        c.drop_pins();
        c.pin(PinCause::UnlistedUser);
        c.stmts.clear();
        c.last_insert_id = 0;
        c.last_status = SERVER_STATUS_AUTOCOMMIT;
        c.set_state(ClientState::Relay {
            backend,
            login: false,
        });
        let b = &mut self.backends[backend];
        b.stmts.clear();
        b.prepare = None;
        b.last_insert_id = 0;
        b.session = SessionVars::new();
        b.diagnostics_of = None;
        b.dirty = false;
        if let Some(r) = b.relay.as_mut() {
            r.ok_seq = Some(1);
        }
        self.start_internal(backend, super::backend::Internal::Reset, Vec::new());
        true
    }

    /// The relayed client's own connection, if it is a relayed client.
    pub(super) fn relayed_backend(&self, key: usize) -> Option<usize> {
        let c = self.clients.get(key)?;
        let b = c.pinned?;
        self.backends
            .get(b)?
            .relay
            .as_ref()
            .filter(|r| r.owner.key == key && r.owner.serial == c.serial)
            .map(|_| b)
    }

    /// A relayed client changes user: its connection (mysqld's login as
    /// the old user) is closed; the client no longer holds it.
    pub(super) fn relay_drop(&mut self, key: usize) {
        let Some(backend) = self.relayed_backend(key) else {
            return;
        };
        let c = &mut self.clients[key];
        c.pinned = None;
        c.unpin(PinCause::UnlistedUser);
        let b = &mut self.backends[backend];
        b.relay = None;
        self.detach_backend_client(backend);
        self.close_backend(backend);
    }

    /// `close_backend` of a relayed connection its client still holds: the
    /// client goes too (after the error it may have been given), as it
    /// would from a mysqld that closed its connection.
    pub(super) fn relay_backend_closed(&mut self, key: usize, relay: Relay) {
        let owner = relay.owner;
        // (A failed step may have unpinned it already: it is still this
        // connection's client, with no way to another.)
        let Some(c) = self
            .clients
            .get_mut(owner.key)
            .filter(|c| c.serial == owner.serial && (c.pinned == Some(key) || c.pinned.is_none()))
        else {
            return;
        };
        c.pinned = None;
        c.drop_pins();
        if relay.login.is_some() {
            let msg = "funnel: lost the backend connection during the relayed login";
            let mut payload = Vec::with_capacity(msg.len() + 16);
            encode_err(&mut payload, CR_SERVER_LOST.0, CR_SERVER_LOST.1, msg);
            c.set_state(ClientState::Idle);
            self.send_to_client(owner.key, relay.client_seq, &payload);
        }
        if let Some(c) = self.clients.get_mut(owner.key) {
            c.close_after_flush = true;
            if matches!(c.state, ClientState::Relay { .. }) {
                c.set_idle();
            }
        }
        self.flush_client(owner.key);
    }
}

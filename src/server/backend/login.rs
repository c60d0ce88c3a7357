//! Logging in to mysqld: the greeting, the auth exchange (mysql_native_password,
//! caching_sha2_password, client_ed25519), and `COM_CHANGE_USER` back to the
//! pool's account without a schema.

use super::*;

impl Engine {
    /// mysqld refused the login of a backend of the pool: a configuration
    /// error, not a transient one. The connection goes like any failed one
    /// (retried with the backoff, so a fixed password or a reload recovers),
    /// and the pool's waiting clients get ERR 1045 at once, as do new
    /// commands that find no backend, until a login succeeds.
    pub(super) fn backend_login_refused(&mut self, key: usize, why: String) {
        let Some(b) = self.backends.get(key) else {
            return;
        };
        let pool = b.pool;
        if b.kill_query.is_none() && b.relay.is_none() {
            let p = &mut self.pools[pool];
            let msg = format!(
                "funnel: mysqld refused the pool's login as '{}': {why}",
                p.user.backend_user
            );
            if p.login_refused.as_deref() != Some(msg.as_str()) {
                error!("pool {}: {msg}", p.name());
            }
            p.login_refused = Some(msg);
        }
        self.backend_lost(key, format!("login refused: {why}"));
        self.fail_refused_backlog(pool);
    }

    pub(super) fn backend_greeting(&mut self, key: usize, payload: &[u8]) {
        if payload.first() == Some(&ERR_HEADER) {
            let msg = decode_err(payload)
                .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                .unwrap_or_else(|_| "malformed error".into());
            self.backend_lost(key, format!("server refused the connection: {msg}"));
            return;
        }
        let greeting = match HandshakeV10::decode(payload) {
            Ok(g) => g,
            Err(e) => {
                self.backend_lost(key, format!("bad handshake from server: {e}"));
                return;
            }
        };
        let server = self.server_of(key);
        let srv = &mut self.servers[server];
        if srv.version.is_none() {
            info!("backend {} is {}", srv.address, greeting.server_version);
            srv.version = Some(greeting.server_version.clone());
        }
        let b = &mut self.backends[key];
        b.thread_id = greeting.connection_id;
        b.scramble = greeting.scramble.clone();
        if let Err(why) = self.login_tls(key, greeting.capabilities) {
            self.backend_login_refused(key, why);
            return;
        }
        if self.relay_greeting(key, &greeting, payload) {
            return;
        }
        let b = &mut self.backends[key];
        let found_rows = if self.pools[b.pool].found_rows {
            CLIENT_FOUND_ROWS
        } else {
            0
        };
        let pool = &self.pools[b.pool].user;
        let local_files = if self.config.allow_local_infile {
            CLIENT_LOCAL_FILES
        } else {
            0
        };
        b.capabilities = (BACKEND_CAPS | local_files | found_rows) & greeting.capabilities;
        // MariaDB's extensions, when mysqld offers them (it reads the
        // client's only when the client leaves CLIENT_MYSQL out, as it does).
        b.mariadb_caps = if greeting.capabilities & CLIENT_MYSQL == 0 {
            greeting_mariadb_caps(payload) & MARIADB_CAPS
        } else {
            0
        };
        self.servers[server].mariadb_caps = Some(b.mariadb_caps);
        b.tracker = ResponseTracker::new(b.capabilities);
        b.thread_id = greeting.connection_id;
        b.charset = greeting.charset;
        self.servers[server].charset.get_or_insert(greeting.charset);
        if server == 0 && self.share.count > 1 {
            // What clients are greeted with, in every loop (`loops.rs`).
            self.shared.publish_greeting(
                &greeting.server_version,
                greeting.charset,
                b.mariadb_caps,
            );
        }
        b.scramble = greeting.scramble.clone();
        // MySQL 8's default is answered in its own terms (saves the switch).
        let (plugin, auth_response) = if greeting.auth_plugin == CACHING_SHA2_PASSWORD {
            let pw = pool.backend_password.as_bytes();
            (
                CACHING_SHA2_PASSWORD,
                caching_sha2::scramble(pw, &greeting.scramble),
            )
        } else {
            let pw = pool.backend_password.as_bytes();
            (
                MYSQL_NATIVE_PASSWORD,
                scramble_native(pw, &greeting.scramble),
            )
        };
        let response = HandshakeResponse {
            capabilities: b.capabilities,
            max_packet: 1 << 30,
            charset: greeting.charset,
            username: pool.backend_user.clone(),
            auth_response,
            database: None,
            auth_plugin: Some(plugin.to_string()),
            attrs: vec![
                ("_client_name".into(), "funnel".into()),
                ("_client_version".into(), env!("CARGO_PKG_VERSION").into()),
            ],
        };
        self.scratch.clear();
        response.encode(&mut self.scratch);
        if b.mariadb_caps != 0 {
            set_response_mariadb_caps(&mut self.scratch, b.mariadb_caps);
        }
        self.set_backend_state(key, BackendState::Authenticating);
        let payload = std::mem::take(&mut self.scratch);
        let tls = self.login_tls(key, greeting.capabilities) == Ok(true);
        self.send_login_response(key, &payload, tls);
        self.scratch = payload;
    }

    /// Whether the login to mysqld goes over TLS (`[backend] tls`, what
    /// mysqld offers), or why it cannot be made. A relayed login passes
    /// the client's packets with their sequence ids: TLS to mysqld exactly
    /// when the client used TLS (its SSL request counts one packet).
    pub(in crate::server) fn login_tls(
        &self,
        key: usize,
        offered_caps: u32,
    ) -> Result<bool, String> {
        let tls = &self.config.backend.tls;
        let over_tcp = matches!(
            self.servers[self.server_of(key)].address,
            BackendAddr::Tcp(_)
        );
        let possible = tls.config.is_some() && offered_caps & CLIENT_SSL != 0 && over_tcp;
        let relay_client = self
            .backends
            .get(key)
            .and_then(|b| b.relay.as_ref())
            .map(|r| {
                self.clients
                    .get(r.owner.key)
                    .is_some_and(|c| c.serial == r.owner.serial && c.tls)
            });
        match relay_client {
            Some(true) if possible => Ok(true),
            Some(true) => Err(format!(
                "a relayed login of a TLS client needs TLS to mysqld, and {}",
                if tls.config.is_none() {
                    "[backend] tls is off"
                } else {
                    "mysqld does not offer it"
                }
            )),
            Some(false) if tls.mode.required() => Err(format!(
                "a relayed login without TLS cannot use TLS to mysqld, which [backend] tls = {} requires",
                tls.mode.name()
            )),
            Some(false) => Ok(false),
            None if possible => Ok(true),
            None if tls.mode.required() => Err(format!(
                "mysqld does not offer TLS, and [backend] tls = {} requires it",
                tls.mode.name()
            )),
            None => Ok(false),
        }
    }

    /// Send the login's handshake response: with `tls`, the SSL request
    /// (the response's first 32 bytes, with CLIENT_SSL) and TLS, the
    /// response following inside it (`backend_tls_ready`).
    pub(in crate::server) fn send_login_response(&mut self, key: usize, payload: &[u8], tls: bool) {
        let config = self.config.backend.tls.config.clone();
        let (Some(config), true) = (config, tls) else {
            self.send_to_backend(key, 1, payload);
            return;
        };
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        let mut response = payload.to_vec();
        let caps = match response.get(..4) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) | CLIENT_SSL,
            _ => return,
        };
        response[..4].copy_from_slice(&caps.to_le_bytes());
        let len = crate::protocol::handshake::SSL_REQUEST_LEN.min(response.len());
        let request = response[..len].to_vec();
        b.tls = true;
        b.login_after_tls = Some(response);
        let serial = b.serial;
        let server_name = self.config.backend.tls.server_name.clone();
        self.send_to_backend(key, 1, &request);
        self.actions.push(Action::StartBackendTls {
            key,
            serial,
            config,
            server_name,
        });
    }

    /// The I/O layer completed the TLS handshake with mysqld: the login
    /// goes on inside TLS.
    pub(crate) fn backend_tls_ready(&mut self, key: usize) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if let Some(response) = b.login_after_tls.take() {
            debug!("backend {key}: TLS with mysqld established");
            self.send_to_backend(key, 2, &response);
        }
    }

    pub(super) fn backend_auth_reply(&mut self, key: usize, payload: &[u8], seq: u8) {
        if self.relay_auth_reply(key, payload, seq) {
            return;
        }
        match payload.first() {
            Some(&OK_HEADER) => {
                let b = &mut self.backends[key];
                debug!("backend {} (thread {}) logged in", key, b.thread_id);
                if b.kill_query.is_some() {
                    // Runs one KILL for the funnel, for no client: quick.
                    self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
                } else {
                    self.start_internal(
                        key,
                        Internal::LearnTrackOrder,
                        LEARN_TRACK_ORDER_SQL.to_vec(),
                    );
                }
            }
            Some(&AUTH_SWITCH_HEADER | &caching_sha2::AUTH_MORE_DATA) => {
                if let Err(msg) = self.answer_auth_request(key, payload, seq) {
                    self.backend_login_refused(key, msg);
                }
            }
            Some(&ERR_HEADER) => {
                let err = decode_err(payload).ok();
                let msg = err
                    .as_ref()
                    .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                    .unwrap_or_else(|| "malformed error".into());
                if err
                    .as_ref()
                    .is_some_and(|e| LOGIN_REFUSALS.contains(&e.code))
                {
                    let text = err.map(|e| String::from_utf8_lossy(e.message).into_owned());
                    self.backend_login_refused(key, text.unwrap_or(msg));
                } else {
                    self.backend_lost(key, format!("login refused: {msg}"));
                }
            }
            _ => self.backend_lost(key, "unexpected packet during login".into()),
        }
    }

    /// Answer mysqld's auth switch request or AuthMoreData packet during a
    /// login or a `COM_CHANGE_USER`, as the account's plugin needs:
    /// mysql_native_password, client_ed25519, or caching_sha2_password
    /// (its fast path, or its full authentication: the password in clear
    /// over a unix socket or TLS, as MySQL's clients send it there, else
    /// RSA-OAEP encrypted with the server's public key). `Err`: what makes the
    /// login impossible.
    pub(super) fn answer_auth_request(
        &mut self,
        key: usize,
        payload: &[u8],
        seq: u8,
    ) -> Result<(), String> {
        let pool = self.backends[key].pool;
        let pw = self.pools[pool].user.backend_password.clone();
        let pw = pw.as_bytes();
        let reply = if payload.first() == Some(&caching_sha2::AUTH_MORE_DATA) {
            let data = caching_sha2::decode_auth_more_data(payload)
                .map_err(|e| format!("bad AuthMoreData from server: {e}"))?;
            match data {
                [caching_sha2::FAST_AUTH_SUCCESS] => return Ok(()), // an OK follows
                [caching_sha2::PERFORM_FULL_AUTH] => {
                    let server = self.backends[key].server;
                    // Over TLS too, as MySQL's clients send it there.
                    if self.backends[key].tls
                        || matches!(self.servers[server].address, BackendAddr::Unix(_))
                    {
                        let mut clear = pw.to_vec();
                        clear.push(0);
                        clear
                    } else {
                        vec![caching_sha2::REQUEST_PUBLIC_KEY]
                    }
                }
                pem => caching_sha2::encrypt_password(pw, &self.backends[key].scramble, pem)
                    .map_err(|e| format!("cannot use the server's RSA public key: {e}"))?,
            }
        } else {
            let req = AuthSwitchRequest::decode(payload)
                .map_err(|e| format!("bad auth switch from server: {e}"))?;
            match req.plugin.as_str() {
                MYSQL_NATIVE_PASSWORD => scramble_native(pw, &req.data),
                CACHING_SHA2_PASSWORD => {
                    let reply = caching_sha2::scramble(pw, &req.data);
                    // Full authentication, if asked for, uses this nonce.
                    self.backends[key].scramble = req.data;
                    reply
                }
                crate::protocol::auth::CLIENT_ED25519 => {
                    // The nonce is the rest of the packet as is: 32 random
                    // bytes (decode drops a last NUL, which may be one).
                    let nonce = payload.get(2 + req.plugin.len()..).unwrap_or_default();
                    crate::protocol::auth::sign_ed25519(pw, nonce).to_vec()
                }
                other => {
                    return Err(format!(
                        "server asks for auth plugin {other}; the funnel logs in with mysql_native_password, caching_sha2_password or client_ed25519 only"
                    ))
                }
            }
        };
        self.send_to_backend(key, seq.wrapping_add(1), &reply);
        Ok(())
    }

    /// Bring the connection back to "no default schema" for the client
    /// whose command is about to run on it: `COM_CHANGE_USER` to the pool's
    /// own backend account, without a schema (then tracking is set up and
    /// the baseline checked, as after a reset, and the command goes on).
    pub(super) fn unset_schema(&mut self, key: usize) {
        let b = &mut self.backends[key];
        let user = &self.pools[b.pool].user;
        b.schema_unset_tried = true;
        b.schema_unset_at = self.now;
        // What the change-user clears, as a reset does.
        b.stmts.clear();
        b.prepare = None;
        b.last_insert_id = 0;
        b.session = SessionVars::new();
        b.diagnostics_of = None;
        let cu = ChangeUser {
            username: user.backend_user.clone(),
            auth_response: scramble_native(user.backend_password.as_bytes(), &b.scramble),
            database: None,
            charset: Some(u16::from(b.charset)),
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.to_string()),
        };
        let attrs = [
            ("_client_name".to_string(), "funnel".to_string()),
            (
                "_client_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        let mut payload = Vec::with_capacity(64 + cu.username.len());
        cu.encode(&mut payload, b.capabilities, &attrs);
        self.set_backend_state(key, BackendState::Internal(Internal::ChangeUser));
        let b = &mut self.backends[key];
        b.rows.clear();
        b.sent_at = self.now;
        self.send_to_backend(key, 0, &payload);
    }

    /// mysqld's answer to [`Server::unset_schema`]'s `COM_CHANGE_USER`.
    pub(super) fn backend_change_user_reply(&mut self, key: usize, payload: &[u8], seq: u8) {
        match payload.first() {
            Some(&OK_HEADER) => {
                self.bump(self.backends[key].pool, |c| c.schema_unsets += 1);
                // The session is the account's fresh one: tracking is off
                // again, and the charset is the one the packet named.
                self.start_internal(key, Internal::Setup, SETUP_SQL.to_vec());
            }
            Some(&AUTH_SWITCH_HEADER | &caching_sha2::AUTH_MORE_DATA) => {
                if let Err(msg) = self.answer_auth_request(key, payload, seq) {
                    self.internal_failed(key, Internal::ChangeUser, msg);
                }
            }
            Some(&ERR_HEADER) => {
                let msg = decode_err(payload)
                    .map(|e| format!("{} ({})", String::from_utf8_lossy(e.message), e.code))
                    .unwrap_or_else(|_| "malformed error".into());
                self.internal_failed(key, Internal::ChangeUser, msg);
            }
            _ => self.internal_failed(
                key,
                Internal::ChangeUser,
                "unexpected packet in answer to COM_CHANGE_USER".into(),
            ),
        }
    }
}

//! A client's login: the greeting's answer, the auth plugins (switches,
//! verification, failed-login holds), the user's pool, `COM_CHANGE_USER`, and
//! the session a login starts with.

use super::*;

impl Engine {
    /// MariaDB's extended capabilities offered to clients: those the
    /// backends negotiated with mysqld (see `backend::MARIADB_CAPS`), none
    /// until a backend has answered.
    pub(super) fn offered_mariadb_caps(&self) -> u32 {
        self.servers[0].mariadb_caps.unwrap_or(0)
    }

    pub(super) fn announced_version(&self) -> String {
        if !self.config.server_version.is_empty() {
            return self.config.server_version.clone();
        }
        match &self.servers[0].version {
            Some(v) => v.clone(),
            // Until a backend has answered: MariaDB's own convention, so
            // clients that look for "MariaDB" see it.
            None => "5.5.5-10.11.0-MariaDB-funnel".to_string(),
        }
    }

    pub(super) fn client_handshake_response(&mut self, key: usize, payload: &[u8], seq: u8) {
        if is_ssl_request(payload) {
            let c = &mut self.clients[key];
            match &self.config.tls {
                Some(tls) if !c.tls && c.wbuf.is_empty() => {
                    // The TLS handshake follows at once: what the client
                    // sent after its request is the start of it, for the
                    // I/O layer, and its handshake response comes inside.
                    c.tls = true;
                    let received = c.rbuf.as_slice().to_vec();
                    c.rbuf.clear();
                    self.actions.push(Action::StartClientTls {
                        key,
                        serial: c.serial,
                        received,
                        config: tls.config.clone(),
                    });
                }
                // A second SSL request, inside TLS, or one before the
                // greeting was out: no client does that.
                Some(_) => self.close_client_logged(
                    key,
                    LogEvent::BadClientInput,
                    ER_HANDSHAKE_ERROR,
                    "Bad handshake",
                ),
                None => self.close_client_logged(
                    key,
                    LogEvent::ClientRefused,
                    ER_HANDSHAKE_ERROR,
                    "funnel: TLS is not supported without a certificate ([funnel] tls_cert); connect without TLS (e.g. --ssl-mode=DISABLED / --skip-ssl)",
                ),
            }
            return;
        }
        let resp = match HandshakeResponse::decode(payload) {
            Ok(r) => r,
            Err(_) => {
                self.close_client_logged(
                    key,
                    LogEvent::BadClientInput,
                    ER_HANDSHAKE_ERROR,
                    "Bad handshake",
                );
                return;
            }
        };
        if let Some(to) = self.login_elsewhere(&resp.username) {
            // Its pool is served by another loop (`loops.rs`).
            self.move_login(key, payload, seq, to);
            return;
        }
        // mysqld gives an interactive client's session wait_timeout the
        // global interactive_timeout, at login only.
        self.clients[key].timeouts.interactive_login = resp.capabilities & CLIENT_INTERACTIVE != 0;
        if self.config.relay_unlisted && self.user_pool(&resp.username).is_none() {
            if let Some(why) = self.tls_refusal(key, None) {
                let given = !resp.auth_response.is_empty();
                self.refuse_without_tls(key, seq.wrapping_add(1), &resp.username, given, why);
                return;
            }
            // The relay passes packets with their sequence ids as they are,
            // and a TLS client counts one more (its SSL request): its login
            // to mysqld must use TLS too, and a plain one none.
            let tls = &self.config.backend.tls;
            let why = match (self.clients[key].tls, tls.config.is_some()) {
                (true, false) => Some("the client uses TLS, and a relayed login then needs TLS to mysqld ([backend] tls is off)".to_string()),
                (false, _) if tls.mode.required() => Some(format!(
                    "a relayed login without TLS cannot use TLS to mysqld, which [backend] tls = {} requires; connect with TLS",
                    tls.mode.name()
                )),
                _ => None,
            };
            if let Some(why) = why {
                let msg = format!(
                    "funnel: user '{}' is not in the funnel's configuration, and its relayed login cannot be made: {why}",
                    resp.username
                );
                self.refuse_login(
                    key,
                    seq.wrapping_add(1),
                    ER_ACCESS_DENIED_ERROR,
                    &msg,
                    &resp.username,
                );
                return;
            }
            // What it negotiated of MariaDB's extensions with the funnel's
            // greeting (its column definitions are edited to it).
            self.clients[key].mariadb_caps =
                response_mariadb_caps(payload) & self.offered_mariadb_caps();
            self.relay_login(key, resp, seq);
            return;
        }
        let pending = PendingAuth {
            pool: self.user_pool(&resp.username),
            user: resp.username.clone(),
            database: resp.database.clone().filter(|d| !d.is_empty()),
            capabilities: resp.capabilities,
            charset: resp.charset,
            mariadb_caps: response_mariadb_caps(payload) & self.offered_mariadb_caps(),
            nonce: None,
            sha2: false,
        };
        let plugin = resp.auth_plugin.as_deref().filter(|p| !p.is_empty());
        let wanted = self.auth_plugin_of(pending.pool);
        // A client that answered the greeting's scramble with the plugin
        // its user needs goes on without a switch (MySQL 8 clients answer
        // with caching_sha2_password by default).
        let switch = match plugin {
            None => wanted != MYSQL_NATIVE_PASSWORD,
            Some(p) => p != wanted,
        };
        let mut pending = pending;
        pending.sha2 = !switch && wanted == CACHING_SHA2_PASSWORD;
        if switch && resp.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            self.ask_auth_switch(key, pending, seq.wrapping_add(1));
            return;
        }
        self.client_verify(key, pending, &resp.auth_response, seq.wrapping_add(1));
    }

    /// The client offered another auth plugin than its user's: ask it to
    /// switch (to mysql_native_password or caching_sha2_password with this
    /// connection's scramble, to client_ed25519 with a fresh nonce).
    pub(super) fn ask_auth_switch(&mut self, key: usize, mut pending: PendingAuth, seq: u8) {
        let wanted = self.auth_plugin_of(pending.pool);
        let switch = if wanted == CLIENT_ED25519 {
            // MariaDB's ed25519: a fresh 32-byte nonce, as mysqld sends it.
            let mut nonce = [0u8; ED25519_NONCE_LEN];
            let _ = getrandom::getrandom(&mut nonce);
            pending.nonce = Some(nonce);
            AuthSwitchRequest {
                plugin: CLIENT_ED25519.to_string(),
                data: nonce.to_vec(),
            }
        } else {
            let mut data = self.clients[key].scramble.to_vec();
            data.push(0);
            pending.sha2 = wanted == CACHING_SHA2_PASSWORD;
            AuthSwitchRequest {
                plugin: wanted.to_string(),
                data,
            }
        };
        let c = &mut self.clients[key];
        c.set_state(ClientState::AuthSwitch(Box::new(pending)));
        let mut out = Vec::new();
        switch.encode(&mut out);
        self.send_to_client(key, seq, &out);
    }

    /// The auth plugin a pool's user logs in with (`auth_plugin`); for an
    /// unknown user, mysql_native_password (its login fails either way).
    pub(super) fn auth_plugin_of(&self, pool: Option<usize>) -> &'static str {
        match pool.map(|p| &self.pools[p].user.credential) {
            Some(Credential::Ed25519(_) | Credential::Ed25519Key(_)) => CLIENT_ED25519,
            Some(Credential::CachingSha2(_) | Credential::CachingSha2Hash(_)) => {
                CACHING_SHA2_PASSWORD
            }
            _ => MYSQL_NATIVE_PASSWORD,
        }
    }

    pub(super) fn client_auth_switch_response(&mut self, key: usize, payload: &[u8], seq: u8) {
        let c = &mut self.clients[key];
        let ClientState::AuthSwitch(pending) =
            std::mem::replace(&mut c.state, ClientState::Handshake)
        else {
            return;
        };
        self.client_verify(key, *pending, payload, seq.wrapping_add(1));
    }

    /// The key a user's failed logins are counted under: unknown users
    /// share one, so that made-up names cannot fill the table.
    pub(super) fn throttle_user(auth: &PendingAuth) -> &str {
        if auth.pool.is_some() {
            &auth.user
        } else {
            "\0unknown user"
        }
    }

    pub(super) fn client_verify(
        &mut self,
        key: usize,
        auth: PendingAuth,
        response: &[u8],
        seq: u8,
    ) {
        let limits = self.auth_limits();
        if !limits.delay.is_zero() {
            let c = &self.clients[key];
            let addr = c.host.parse().ok().map(AddrKey::of);
            let deadline = c.accepted_at + self.config.handshake_timeout;
            let user = Self::throttle_user(&auth);
            let admit = self
                .auth_throttle()
                .admit(addr, user, self.now, deadline, &limits);
            match admit {
                Admit::Now => {}
                Admit::HoldUntil(at) => {
                    self.counters.auth_held += 1;
                    let c = &mut self.clients[key];
                    c.auth_hold = Some(Box::new(AuthHold {
                        auth,
                        response: response.to_vec(),
                        seq,
                    }));
                    let serial = c.serial;
                    self.add_timer(at, TimerKind::ClientAuthHold { key, serial });
                    return;
                }
                Admit::Refuse => {
                    self.counters.auth_throttled += 1;
                    let c = &mut self.clients[key];
                    let peer = c.peer.description();
                    log_limited!(
                        self,
                        LogEvent::AuthFailure,
                        "client {} from {peer} refused unchecked: too many failed logins for user '{}' or from this address",
                        c.id,
                        auth.user
                    );
                    let c = &self.clients[key];
                    let msg = format!(
                        "funnel: Host '{}' is blocked because of many failed logins for this user or from this address; try again later",
                        c.host
                    );
                    self.answer_refusal(key, seq, ER_HOST_IS_BLOCKED, &msg);
                    return;
                }
            }
        }
        self.client_check(key, auth, response, seq);
    }

    /// Answer a login (or COM_CHANGE_USER) with an error and close.
    pub(super) fn refuse_login(
        &mut self,
        key: usize,
        seq: u8,
        code: (u16, &'static str),
        msg: &str,
        user: &str,
    ) {
        self.counters.clients_refused += 1;
        let c = &mut self.clients[key];
        let peer = c.peer.description();
        log_limited!(
            self,
            LogEvent::ClientRefused,
            "client {} from {peer} refused as user '{user}': {msg}",
            c.id
        );
        self.answer_refusal(key, seq, code, msg);
    }

    /// The error that ends a refused login: its connection is closed. A
    /// refused COM_CHANGE_USER leaves the client logged in as before (its
    /// session reset), as mysqld does; a client that has logged in is one
    /// with a user (its user and pool change only when a change succeeds).
    fn answer_refusal(&mut self, key: usize, seq: u8, code: (u16, &'static str), msg: &str) {
        let c = &mut self.clients[key];
        c.set_state(ClientState::Idle);
        let logged_in = !c.user.is_empty();
        self.client_error(key, seq, code, msg);
        if !logged_in {
            if let Some(c) = self.clients.get_mut(key) {
                c.close_after_flush = true;
            }
        }
        self.flush_client(key);
    }

    pub(super) fn auth_limits(&self) -> Limits {
        Limits {
            threshold: u32::try_from(self.config.auth_failure_threshold).unwrap_or(u32::MAX),
            delay: self.config.auth_failure_delay,
            max_delay: self.config.auth_failure_max_delay,
        }
    }

    /// A held login's turn has come.
    pub(in crate::server) fn client_auth_hold_over(&mut self, key: usize, serial: u64) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.serial != serial {
            return;
        }
        let Some(hold) = c.auth_hold.take() else {
            return;
        };
        let AuthHold {
            auth,
            response,
            seq,
        } = *hold;
        self.client_check(key, auth, &response, seq);
        // Whatever it sent meanwhile (a pipelined first command).
        self.process_client_input(key);
    }

    pub(super) fn client_check(&mut self, key: usize, auth: PendingAuth, response: &[u8], seq: u8) {
        if let Some(p) = auth.pool {
            // As mysqld checks the host before the password.
            let nets = &self.pools[p].user.allowed_networks;
            let host = &self.clients[key].host;
            let ip = match host.as_str() {
                "localhost" => Some(std::net::IpAddr::from([127, 0, 0, 1])),
                h => h.parse().ok(),
            };
            if !nets.is_empty() && !ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip))) {
                let msg = format!("Host '{host}' is not allowed to connect to this MariaDB server");
                self.refuse_login(key, seq, ER_HOST_NOT_PRIVILEGED, &msg, &auth.user);
                return;
            }
        }
        let verified = auth.pool.is_some_and(|p| {
            let stage2 = match &self.pools[p].user.credential {
                Credential::Plain(pw) if pw.is_empty() => None,
                Credential::Plain(pw) => Some(native_password_stage2(pw.as_bytes())),
                Credential::Stage2(h) => Some(*h),
                Credential::Ed25519(pw) => {
                    return auth.nonce.is_some_and(|nonce| {
                        verify_ed25519(&ed25519_public_key(pw.as_bytes()), &nonce, response)
                    })
                }
                Credential::Ed25519Key(key) => {
                    return auth
                        .nonce
                        .is_some_and(|nonce| verify_ed25519(key, &nonce, response))
                }
                Credential::CachingSha2Hash(h) => {
                    return auth.sha2
                        && caching_sha2::verify(Some(h), &self.clients[key].scramble, response);
                }
                Credential::CachingSha2(pw) => {
                    let stage2 = (!pw.is_empty()).then(|| caching_sha2::stage2(pw.as_bytes()));
                    return auth.sha2
                        && caching_sha2::verify(
                            stage2.as_ref(),
                            &self.clients[key].scramble,
                            response,
                        );
                }
            };
            verify_native(stage2.as_ref(), &self.clients[key].scramble, response)
        });
        if !verified {
            match auth.pool {
                Some(p) => self.bump(p, |c| c.auth_failures += 1),
                None => self.counters.auth_failures += 1,
            }
            let limits = self.auth_limits();
            let addr = self.clients[key].host.parse().ok().map(AddrKey::of);
            let user = Self::throttle_user(&auth);
            let (by_addr, by_user) = {
                let mut throttle = self.auth_throttle();
                throttle.failed(addr, user, self.now, &limits);
                throttle.failures(addr, user)
            };
            let c = &self.clients[key];
            let msg = format!(
                "Access denied for user '{}'@'{}' (using password: {})",
                auth.user,
                c.host,
                if response.is_empty() { "NO" } else { "YES" }
            );
            let peer = c.peer.description();
            log_limited!(
                self,
                LogEvent::AuthFailure,
                "client {} from {peer} refused: {msg} (consecutive failures: {by_addr} from this address, {by_user} for this user)",
                c.id
            );
            self.answer_refusal(key, seq, ER_ACCESS_DENIED_ERROR, &msg);
            return;
        }
        if let Some(why) = self.tls_refusal(key, auth.pool) {
            self.refuse_without_tls(key, seq, &auth.user, !response.is_empty(), why);
            return;
        }
        let addr = self.clients[key].host.parse().ok().map(AddrKey::of);
        self.auth_throttle()
            .succeeded(addr, Self::throttle_user(&auth), self.now);
        let mut seq = seq;
        if auth.sha2 {
            // caching_sha2_password: the fast path succeeded (the funnel
            // knows the password: no full authentication ever). What
            // follows (OK or an error) comes after it.
            self.send_to_client(
                key,
                seq,
                &[
                    caching_sha2::AUTH_MORE_DATA,
                    caching_sha2::FAST_AUTH_SUCCESS,
                ],
            );
            seq = seq.wrapping_add(1);
        }
        let max = auth
            .pool
            .map_or(0, |p| self.pools[p].user.max_client_connections);
        if max > 0 {
            // Only for users with a limit, so a scan of the clients is fine.
            let others = self
                .clients
                .iter()
                .filter(|(k, c)| {
                    *k != key
                        && c.user == auth.user
                        && !c.close_after_flush
                        && !matches!(
                            c.state,
                            ClientState::Handshake
                                | ClientState::AuthSwitch(_)
                                | ClientState::Relay { .. }
                        )
                })
                .count();
            if others >= max {
                let msg = format!(
                    "User {} already has more than 'max_user_connections' active connections",
                    auth.user
                );
                self.refuse_login(key, seq, ER_TOO_MANY_USER_CONNECTIONS, &msg, &auth.user);
                return;
            }
        }
        let pool = self.login_pool(auth.pool.unwrap_or(0), auth.capabilities);
        let server = self.pools[pool].home_server();
        let c = &mut self.clients[key];
        c.pool = pool;
        c.retally();
        c.user = auth.user;
        c.capabilities = auth.capabilities & (SERVER_CAPS | CLIENT_LOCAL_FILES);
        c.mariadb_caps = auth.mariadb_caps;
        c.charset = auth.charset;
        c.track.clone_from(&self.servers[server].track_defaults);
        c.multi_statements = auth.capabilities & CLIENT_MULTI_STATEMENTS != 0;
        c.last_active = self.now;
        // (A COM_CHANGE_USER's client had its old schema until now.)
        c.session.set_schema(None);
        debug!("{} authenticated as {}", c.label(), c.user);
        match auth.database {
            Some(db) if self.pools[pool].known_schemas.contains(&db) => {
                // mysqld confirmed this schema for this user before: no
                // need to wait in the backlog for it again.
                let c = &mut self.clients[key];
                c.session.set_schema(Some(db));
                c.set_state(ClientState::Idle);
                self.arm_idle_timer(key);
                self.client_login_ok(key, seq);
                self.process_client_input(key);
            }
            Some(db) => {
                // The schema must exist: ask a backend, and let its answer
                // (OK, or ERR 1049) be the answer to the login.
                let mut payload = Vec::with_capacity(db.len() + 1);
                payload.push(COM_INIT_DB);
                payload.extend_from_slice(db.as_bytes());
                let mut framed = Vec::new();
                write_packet(&mut framed, 0, &payload);
                let rest = c.rbuf.as_slice().to_vec();
                c.rbuf.clear();
                c.rbuf.extend_from_slice(&framed);
                c.rbuf.extend_from_slice(&rest);
                c.seq_offset = seq.wrapping_sub(1);
                c.set_state(ClientState::ConnectDb);
                // Counted as a request: it waits in the backlog and runs on
                // a backend like one, so latency counts stay equal to it.
                self.pools[pool].counters.requests += 1;
                self.counters.requests += 1;
                let c = &mut self.clients[key];
                match scan_message(c.rbuf.as_slice(), usize::MAX) {
                    Ok(Some(span)) => c.in_flight = Some(InFlight::new(span)),
                    _ => {
                        self.close_client_with_error(key, ER_HANDSHAKE_ERROR, "Bad handshake");
                        return;
                    }
                }
                self.arm_idle_timer(key);
                self.enqueue_current(key);
            }
            None => {
                c.set_state(ClientState::Idle);
                self.arm_idle_timer(key);
                self.client_ok(key, seq);
                self.process_client_input(key);
            }
        }
    }

    /// Why a client without TLS may not log in to `pool`'s user: the
    /// user's `require_tls`, or `[funnel] require_tls` for a TCP client
    /// (a unix socket is as safe as mysqld's `require_secure_transport`
    /// takes it to be). None when it may, or it has TLS.
    pub(super) fn tls_refusal(&self, key: usize, pool: Option<usize>) -> Option<&'static str> {
        let c = self.clients.get(key)?;
        if c.tls {
            return None;
        }
        if pool.is_some_and(|p| self.pools[p].user.require_tls) {
            return Some("the user has require_tls and the client did not connect with TLS");
        }
        if self.config.require_tls && c.peer != Peer::Unix {
            return Some("[funnel] require_tls and the client did not connect with TLS");
        }
        None
    }

    /// Refuse a login that needs TLS, as mysqld answers both an account
    /// with REQUIRE SSL and `require_secure_transport`: access denied,
    /// nothing more (the log says why).
    pub(super) fn refuse_without_tls(
        &mut self,
        key: usize,
        seq: u8,
        user: &str,
        password_given: bool,
        why: &str,
    ) {
        let c = &self.clients[key];
        let msg = format!(
            "Access denied for user '{user}'@'{}' (using password: {})",
            c.host,
            if password_given { "YES" } else { "NO" }
        );
        self.counters.clients_refused += 1;
        let (id, peer) = (c.id, c.peer.description());
        log_limited!(
            self,
            LogEvent::ClientRefused,
            "client {id} from {peer} refused as user '{user}' without TLS: {why}"
        );
        self.answer_refusal(key, seq, ER_ACCESS_DENIED_ERROR, &msg);
    }

    /// The pool that verifies logins as `user` (its `CLIENT_FOUND_ROWS`
    /// twin has the same user).
    pub(in crate::server) fn user_pool(&self, user: &str) -> Option<usize> {
        self.pools
            .iter()
            .position(|p| p.user.name == user && !p.found_rows)
    }

    /// The pool a client logged in through `user_pool` runs its commands
    /// in: that one, or for a client that negotiated `CLIENT_FOUND_ROWS`
    /// its twin, created at the first such login.
    pub(in crate::server) fn login_pool(&mut self, user_pool: usize, capabilities: u32) -> usize {
        if capabilities & CLIENT_FOUND_ROWS == 0 {
            return user_pool;
        }
        let name = &self.pools[user_pool].user.name;
        if let Some(twin) = self
            .pools
            .iter()
            .position(|p| p.found_rows && p.user.name == *name)
        {
            return twin;
        }
        let twin = self.pools[user_pool].found_rows_twin(self.pools.len(), self.now);
        info!(
            "pool {} added: the first client of user {} that asked for CLIENT_FOUND_ROWS",
            twin.name(),
            twin.user.name
        );
        self.add_pool(twin)
    }

    pub(in crate::server) fn client_handshake_timeout(&mut self, key: usize, serial: u64) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        if c.serial == serial
            && matches!(
                c.state,
                ClientState::Handshake
                    | ClientState::AuthSwitch(_)
                    | ClientState::Relay { login: true, .. }
            )
        {
            let ms = self.config.handshake_timeout.as_millis();
            self.close_client_logged(
                key,
                LogEvent::HandshakeTimeout,
                ER_HANDSHAKE_ERROR,
                &format!("funnel: handshake not completed within handshake_timeout_ms = {ms}"),
            );
        }
    }

    /// COM_CHANGE_USER: a fresh session, authenticated again against the
    /// funnel's users and moved to that user's pool.
    pub(super) fn change_user(&mut self, key: usize, cu: ChangeUser) {
        let relayed = self.relayed_backend(key).is_some();
        self.relay_drop(key);
        self.reset_client_session(key);
        let pool = self.user_pool(&cu.username);
        let c = &mut self.clients[key];
        if relayed {
            // Its login to mysqld is gone with its connection: a refusal
            // closes it, as a refused login.
            c.user.clear();
        }
        // Schema and character set change only if the change succeeds
        // (mysqld keeps both when it refuses it).
        let charset = cu
            .charset
            .and_then(|cs| u8::try_from(cs).ok())
            .unwrap_or(c.charset);
        let pending = PendingAuth {
            pool,
            user: cu.username,
            database: cu.database,
            capabilities: c.capabilities,
            charset,
            mariadb_caps: c.mariadb_caps,
            nonce: None,
            sha2: false,
        };
        let plugin = cu.auth_plugin.as_deref().filter(|p| !p.is_empty());
        let wanted = self.auth_plugin_of(pending.pool);
        if plugin.unwrap_or(MYSQL_NATIVE_PASSWORD) != wanted {
            self.ask_auth_switch(key, pending, 1);
            return;
        }
        let mut pending = pending;
        pending.sha2 = wanted == CACHING_SHA2_PASSWORD;
        self.client_verify(key, pending, &cu.auth_response, 1);
    }

    /// Back to the session the client had right after its login.
    pub(super) fn reset_client_session(&mut self, key: usize) {
        let server = self.pools[self.clients[key].pool].home_server();
        let c = &mut self.clients[key];
        let schema = c.session.schema.clone();
        c.session = SessionVars::new();
        c.session.set_schema(schema);
        c.session_ready = false;
        c.track.clone_from(&self.servers[server].track_defaults);
        c.drop_pins();
        c.own_error = None;
        let trim = c.stmts.bytes() >= TRIM_AFTER_BYTES;
        c.stmts.clear();
        c.retally();
        c.last_insert_id = 0;
        c.last_status = SERVER_STATUS_AUTOCOMMIT;
        // The global wait_timeout, even for an interactive client (as
        // MariaDB 10.11 does after a reset or a change of user).
        c.timeouts = ClientTimeouts::default();
        let cref = c.cref(key);
        if let Some(b) = c.pinned.take() {
            self.release_pinned(b);
        }
        // Its statements are gone, as on mysqld, before its next command.
        self.close_released_stmts(Some(cref));
        self.arm_idle_timer(key);
        if trim {
            release_free_memory();
        }
    }

    /// Give a client the character-set variables its handshake asked for.
    pub(in crate::server) fn ensure_client_session(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.session_ready {
            return;
        }
        let server = self.pools.get(c.pool).map_or(0, |p| p.home_server());
        if let Some(table) = &self.servers[server].charsets {
            if let Some((cs, coll)) = table.get(&c.charset) {
                let names = crate::server::backend::charset_vars();
                for name in &names[..3] {
                    c.session.set_var(name, cs);
                }
                c.session.set_var(names[3], coll);
                // The handshake's collation labels result columns, too.
                c.session.set_results_collation(Some(coll.clone()));
            }
            c.session_ready = true;
        }
    }
}

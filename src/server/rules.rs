//! Query rules in the engine: the first `[rule]` that matches a client's
//! query decides (block it, or answer it from the result cache), with a hit
//! count per rule. The cache itself is `result_cache.rs`; the hooks are in
//! `client/command.rs` (a query arrives) and `backend/forward.rs` (its
//! answer goes to the client, and is complete). With `cache_invalidation`,
//! a statement that may write is noted as it arrives (`note_writes`) and
//! ends with its answer, or its transaction (`cache_answer_done`), or at a
//! periodic pass when no answer said so (`end_unseen_writes`).

use std::time::{Duration, Instant};

use crate::config::{QueryRules, RuleAction, RuleConfig};
use crate::control::RuleRow;
use crate::protocol::consts::err::{ER_OPTION_PREVENTS_STATEMENT, ER_STATEMENT_TIMEOUT};
use crate::protocol::consts::{COM_QUERY, COM_STMT_EXECUTE, SERVER_STATUS_IN_TRANS};
use crate::protocol::tracker::EndKind;

use super::backend::BackendState;
use super::client::ClientState;
use super::pool::ClientRef;
use super::result_cache::{
    renumber_frames, shaping_capabilities, table_hash, AnswerEnd, CacheKey, ResultCache, Shared,
    Waiter,
};
use super::statement::{mentioned_tables, statement_writes, StatementFacts, TableName, Writes};
use super::stats::{normalize_query, shape_hash};
use super::Engine;

/// One rule, ready to match.
struct Rule {
    config: RuleConfig,
    /// The shape hash of `digest` (as `StatementFacts::shape`).
    digest: Option<u64>,
    hits: u64,
    /// Of its hits, those answered from the cache.
    cached: u64,
    /// Of its hits, those that waited under `max_concurrency`.
    delayed: u64,
    /// Its cached answers found stale after a write (`cache_invalidation`).
    invalidated: u64,
    /// Its statements on mysqld now, and those waiting for room or turn.
    running: Vec<Waiter>,
    held: std::collections::VecDeque<Held>,
    /// `rate_limit`.
    bucket: Option<Bucket>,
    /// `timeout_ms`: its statements let go to mysqld, and when.
    timed: Vec<(Waiter, Instant)>,
}

/// A statement held by a rule's limits, and when it times out.
struct Held {
    waiter: Waiter,
    deadline: Instant,
    /// Held by its user's limits: the matching rule, whose limits it
    /// passes next.
    then: Option<usize>,
}

/// Whose limits: a `[rule]`'s (by index) or a user's own (`users`).
#[derive(Clone, Copy, Debug)]
enum Limiter {
    Rule(usize),
    User(usize),
}

/// `rate_limit`, `rate_burst`: a token bucket.
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was counted; None: full.
    at: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        self.tokens = match self.at {
            None => self.burst,
            Some(at) => (self.tokens
                + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
                .min(self.burst),
        };
        self.at = Some(now);
    }

    /// A token, if one is there (a statement may start).
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // A deadline computed for the next token may land a hair early.
        if self.tokens >= 1.0 - 1e-6 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// When the next token is there.
    fn next_token(&self) -> Option<Instant> {
        let at = self.at?;
        let missing = (1.0 - self.tokens).max(0.0);
        Some(at + Duration::from_secs_f64(missing / self.per_second))
    }
}

/// The rules in force and the result cache.
pub struct RuleBook {
    rules: Vec<Rule>,
    /// The users' own limits (`QueryRules::user_limits`), and by user name.
    users: Vec<Rule>,
    user_index: std::collections::HashMap<String, usize>,
    /// Writes through the funnel make cached reads stale: some rule
    /// caches, the cache is on and `cache_invalidation` too.
    tracks_writes: bool,
    /// Some rule has a `digest` (executes need their statement's shape).
    has_digest: bool,
    pub cache: ResultCache,
}

impl RuleBook {
    pub fn new(config: &QueryRules) -> RuleBook {
        let users = compile(&config.user_limits);
        let caches = config
            .rules
            .iter()
            .any(|r| matches!(r.action, RuleAction::Cache { .. }));
        RuleBook {
            tracks_writes: caches && config.invalidate_on_write && config.cache_size > 0,
            has_digest: config.rules.iter().any(|r| r.digest.is_some()),
            rules: compile(&config.rules),
            user_index: users
                .iter()
                .enumerate()
                .map(|(i, u)| (u.config.name.clone(), i))
                .collect(),
            users,
            cache: ResultCache::new(config.cache_size, config.cache_max_result_size),
        }
    }

    fn limiter(&mut self, l: Limiter) -> &mut Rule {
        match l {
            Limiter::Rule(i) => &mut self.rules[i],
            Limiter::User(i) => &mut self.users[i],
        }
    }

    /// Nothing to match nor limit: statements go on untouched.
    fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.users.is_empty()
    }

    /// A reload: the new rules replace the old (hit counts start again
    /// from zero) and the cache is emptied, since the rules that filled
    /// it may be gone or have a shorter TTL. Its counters go on.
    pub fn reload(&mut self, config: &QueryRules) -> Vec<Waiter> {
        let held: Vec<Waiter> = self
            .rules
            .iter_mut()
            .chain(self.users.iter_mut())
            .flat_map(|r| r.held.drain(..).map(|h| h.waiter))
            .collect();
        *self = RuleBook {
            cache: std::mem::replace(&mut self.cache, ResultCache::new(0, 0)),
            ..RuleBook::new(config)
        };
        let mut waiting = self
            .cache
            .reset(config.cache_size, config.cache_max_result_size);
        waiting.extend(held);
        waiting
    }

    /// The next moment a held statement may run or time out (the loop
    /// polls no longer than that).
    pub fn next_deadline(&self) -> Option<Instant> {
        let held = self
            .rules
            .iter()
            .chain(&self.users)
            .filter(|r| !r.held.is_empty())
            .flat_map(|r| {
                let timeout = r.held.iter().map(|h| h.deadline).min();
                let token = r.bucket.as_ref().and_then(Bucket::next_token);
                timeout.into_iter().chain(token)
            });
        let kills = self.rules.iter().flat_map(|r| {
            r.config
                .timeout
                .and_then(|t| r.timed.iter().map(|(_, since)| *since + t).min())
        });
        held.chain(kills).chain(self.cache.next_deadline()).min()
    }

    /// The client's command waits for another's answer or for room under
    /// a rule's `max_concurrency` (it is queued outside the backlog).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn is_waiting(&self, client: usize, serial: u64) -> bool {
        self.cache.is_waiting(client, serial)
            || self.rules.iter().chain(&self.users).any(|r| {
                r.held
                    .iter()
                    .any(|h| h.waiter.client == client && h.waiter.serial == serial)
            })
    }

    /// A rule's `timeout_ms` watches the client's command: it may be
    /// interrupted by time (such a command is not pipelined).
    pub fn times(&self, client: usize, serial: u64) -> bool {
        self.rules.iter().any(|r| {
            r.timed
                .iter()
                .any(|(w, _)| w.client == client && w.serial == serial)
        })
    }

    /// The first rule that matches, by index.
    fn decide(
        &mut self,
        user: &str,
        schema: Option<&str>,
        shape: Option<u64>,
        sql: &[u8],
    ) -> Option<usize> {
        let index = self.rules.iter().position(|r| {
            let c = &r.config;
            c.user.as_deref().is_none_or(|u| u == user)
                && c.schema.as_deref().is_none_or(|s| Some(s) == schema)
                && r.digest.is_none_or(|d| Some(d) == shape)
                && c.pattern.as_ref().is_none_or(|p| p.0.is_match(sql))
        })?;
        self.rules[index].hits += 1;
        Some(index)
    }

    /// `SHOW RULES`, `/metrics`, `/stats.json`.
    pub fn rows(&self) -> Vec<RuleRow> {
        self.rules
            .iter()
            .map(|r| {
                let c = &r.config;
                let mut conditions = Vec::new();
                for (what, value) in [
                    ("user", c.user.as_deref()),
                    ("schema", c.schema.as_deref()),
                    ("digest", c.digest.as_deref()),
                    ("pattern", c.pattern.as_ref().map(|p| p.0.as_str())),
                ] {
                    if let Some(value) = value {
                        conditions.push(format!("{what} = {value:?}"));
                    }
                }
                RuleRow {
                    name: c.name.clone(),
                    conditions: conditions.join(", "),
                    action: match &c.action {
                        RuleAction::Cache { ttl } => format!("cache_ttl_ms = {}", ttl.as_millis()),
                        RuleAction::Block { message } => format!("block = {message:?}"),
                        RuleAction::Run => String::new(),
                    } + &c
                        .max_concurrency
                        .map_or(String::new(), |n| format!(" max_concurrency = {n}"))
                        + &c.rate.map_or(String::new(), |(limit, burst)| {
                            format!(" rate_limit = {limit} rate_burst = {burst}")
                        })
                        + &c.timeout.map_or(String::new(), |t| {
                            format!(" timeout_ms = {}", t.as_millis())
                        })
                        + &c.route
                            .map_or(String::new(), |r| format!(" route = {}", r.name())),
                    hits: r.hits,
                    cached: r.cached,
                    delayed: r.delayed,
                    invalidated: r.invalidated,
                }
            })
            .collect()
    }
}

fn compile(rules: &[RuleConfig]) -> Vec<Rule> {
    let mut text = Vec::new();
    rules
        .iter()
        .map(|c| Rule {
            digest: c.digest.as_ref().map(|d| {
                text.clear();
                normalize_query(d.as_bytes(), &mut text);
                shape_hash(&text)
            }),
            config: c.clone(),
            hits: 0,
            cached: 0,
            delayed: 0,
            invalidated: 0,
            running: Vec::new(),
            held: Default::default(),
            bucket: c.rate.map(|(limit, burst)| Bucket {
                per_second: limit as f64,
                burst: burst as f64,
                tokens: burst as f64,
                at: None,
            }),
            timed: Vec::new(),
        })
        .collect()
}

impl Engine {
    /// A client's query (`COM_QUERY`, in one packet or not) before it is
    /// queued: the first matching rule blocks it or answers it from the
    /// cache (true: answered), or has its answer captured for the cache.
    pub(super) fn apply_query_rules(&mut self, key: usize, facts: &StatementFacts) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let c = &self.clients[key];
        let Some(sql) = c.current_sql() else {
            return false;
        };
        let schema = c.session.schema.as_deref();
        if self.rules.tracks_writes {
            // A query in several packets is not all in `sql`: unseen.
            let one_packet = c.current().is_some_and(|s| s.packets == 1);
            let writes = if !one_packet {
                Writes::Unknown
            } else if facts.safe_to_repeat {
                // Plain reads only (the common case): no second scan.
                Writes::Nothing
            } else {
                statement_writes(sql)
            };
            note_writes(&mut self.rules.cache, key, writes, [schema, None]);
        }
        let Some(index) = self.rules.decide(&c.user, schema, facts.shape, sql) else {
            return self.limit_statement(key, None);
        };
        self.apply_rule(key, index, facts, None, None)
    }

    /// An execute of prepared statement `id` (`COM_STMT_EXECUTE`, or
    /// `COM_STMT_BULK_EXECUTE`) may write: cached reads of its tables
    /// (named in the statement's schema or the client's now) go stale.
    pub(super) fn note_execute_writes(&mut self, key: usize, id: u32) {
        if !self.rules.tracks_writes {
            return;
        }
        let c = &self.clients[key];
        let writes = match c.stmts.get(&id) {
            Some(st) if st.facts.safe_to_repeat => return,
            Some(st) => statement_writes(&st.sql),
            None => return,
        };
        let st_schema = c.stmts.get(&id).and_then(|st| st.schema.as_deref());
        let schemas = [st_schema, c.session.schema.as_deref()];
        note_writes(&mut self.rules.cache, key, writes, schemas);
    }

    /// A client's execute of a prepared statement (`COM_STMT_EXECUTE` of
    /// statement `id`): matched on the statement's text (`digest` on the
    /// shape of that text, its `?` as they are), acted on as a query; its
    /// cache key is the statement, its parameter types and the execute's
    /// parameters as sent. An execute that opens a cursor is not cached.
    pub(super) fn apply_execute_rules(&mut self, key: usize, id: u32) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        self.note_execute_writes(key, id);
        let c = &self.clients[key];
        let (Some(span), Some(st)) = (c.current(), c.stmts.get(&id)) else {
            return false;
        };
        let schema = c.session.schema.as_deref();
        // The shape SHOW QUERIES gives the statement's text (its `?` stay).
        let shape = self.rules.has_digest.then(|| {
            let buf = self.stats.shape_buf();
            buf.clear();
            normalize_query(&st.sql, buf);
            shape_hash(buf)
        });
        let Some(index) = self.rules.decide(&c.user, schema, shape, &st.sql) else {
            return self.limit_statement(key, None);
        };
        // Command byte, statement id (4), flags (1), iteration count (4),
        // then the parameters.
        let payload = span.payload_in(c.rbuf.as_slice());
        let cursor = payload.get(5).is_none_or(|&flags| flags != 0);
        let statement = (!cursor).then(|| {
            let mut k = Vec::with_capacity(st.sql.len() + st.types.len() + payload.len() + 8);
            k.push(COM_STMT_EXECUTE);
            k.extend_from_slice(st.schema.as_deref().unwrap_or("").as_bytes());
            k.push(0);
            k.extend_from_slice(&st.sql);
            k.push(0);
            k.extend_from_slice(&st.types);
            k.push(0);
            k.extend_from_slice(payload.get(5..).unwrap_or_default());
            k.into_boxed_slice()
        });
        let facts = st.facts;
        if cursor {
            let mut facts = facts;
            // Never from the cache; the rule's other actions apply.
            facts.safe_to_repeat = false;
            return self.apply_rule(key, index, &facts, None, Some(id));
        }
        self.apply_rule(key, index, &facts, statement, Some(id))
    }

    /// The first matching rule (`index`) acts on the client's current
    /// command: true when it was answered (refused, from the cache) or
    /// waits (coalesced, held by a limit). `statement`: the cache key's
    /// statement part, if not the query's text; `stmt`: the prepared
    /// statement executed, if any.
    fn apply_rule(
        &mut self,
        key: usize,
        index: usize,
        facts: &StatementFacts,
        statement: Option<Box<[u8]>>,
        stmt: Option<u32>,
    ) -> bool {
        let route = self.rules.rules[index].config.route;
        if let Some(f) = &mut self.clients[key].in_flight {
            f.route = route;
        }
        let seq = 1u8.wrapping_add(self.clients[key].seq_offset);
        let ttl: Duration = match &self.rules.rules[index].config.action {
            RuleAction::Block { message } => {
                let message = message.clone();
                self.discard_current(key);
                self.client_error(key, seq, ER_OPTION_PREVENTS_STATEMENT, &message);
                return true;
            }
            RuleAction::Cache { ttl } => *ttl,
            RuleAction::Run => return self.limit_statement(key, Some(index)),
        };
        let answered = self.answer_or_fill(key, index, facts, ttl, seq, statement, stmt);
        answered || self.limit_statement(key, Some(index))
    }

    /// The limits on a statement that goes to mysqld: its user's own, then
    /// those of its matching rule (`rule`). True: it waits, queued.
    fn limit_statement(&mut self, key: usize, rule: Option<usize>) -> bool {
        let user_limit = self.rules.user_index.get(&self.clients[key].user).copied();
        if let Some(f) = &mut self.clients[key].in_flight {
            f.ruled = rule.is_some() || user_limit.is_some();
        }
        if let Some(user) = user_limit {
            if self.limit_concurrency(key, Limiter::User(user), rule) {
                return true;
            }
        }
        rule.is_some_and(|index| self.limit_concurrency(key, Limiter::Rule(index), None))
    }

    /// The query matched a rule with `cache_ttl_ms`: answered from the
    /// cache or by the same read in flight (true), else its answer is to
    /// be captured (if it may be cached) and it runs.
    #[allow(clippy::too_many_arguments)]
    fn answer_or_fill(
        &mut self,
        key: usize,
        index: usize,
        facts: &StatementFacts,
        ttl: Duration,
        seq: u8,
        statement: Option<Box<[u8]>>,
        stmt: Option<u32>,
    ) -> bool {
        let c = &self.clients[key];
        let (Some(span), Some(sql)) = (c.current(), c.current_sql()) else {
            return false;
        };
        let schema = c.session.schema.as_deref();
        // Only what runs alone on any shared backend, outside a
        // transaction (autocommit off: a read would open one), in one
        // packet (the answer's ids follow the command's).
        if !self.rules.cache.enabled()
            || !facts.cacheable()
            || span.packets != 1
            || c.pinned.is_some()
            || !c.pins.is_empty()
            || c.multi_rest.is_some()
            || c.session.autocommit_off()
            || c.last_status & SERVER_STATUS_IN_TRANS != 0
        {
            return false;
        }
        let cache_key = CacheKey {
            pool: c.pool,
            user: c.user.as_str().into(),
            schema: schema.map(Into::into),
            session: c.session.fingerprint(),
            capabilities: shaping_capabilities(c.capabilities, c.mariadb_caps, c.multi_statements),
            sql: statement.unwrap_or_else(|| sql.into()),
        };
        let serial = c.serial;
        let stale_before = self.rules.cache.counters.invalidated;
        let hit = self.rules.cache.lookup(&cache_key, self.now).is_some();
        if self.rules.cache.counters.invalidated > stale_before {
            self.rules.rules[index].invalidated += 1;
        }
        if !hit {
            let waiter = Waiter {
                client: key,
                serial,
                read_at: c.command_read_at,
            };
            let deadline = c.command_read_at + self.pools[c.pool].user.queue_timeout;
            if self.rules.cache.wait_for(&cache_key, waiter, deadline) {
                // The same read of another client is running: its answer
                // is this one's too (coalescing). Counted as queued.
                self.rules.rules[index].cached += 1;
                self.clients[key].set_state(ClientState::Queued);
                return true;
            }
            // The tables its answer depends on: a prepared statement's
            // names may be of the schema it was prepared in.
            let (text, schemas) = match stmt.and_then(|id| c.stmts.get(&id)) {
                Some(st) => (&st.sql[..], [schema, st.schema.as_deref()]),
                None => (sql, [schema, None]),
            };
            let tables = resolve(&mentioned_tables(text), schemas);
            self.rules
                .cache
                .start_fill(key, serial, cache_key, ttl, tables.into_boxed_slice());
            return false;
        }
        self.rules.rules[index].cached += 1;
        self.discard_current(key);
        self.answer_from_cache(key, &cache_key, seq);
        true
    }

    /// A rule's limits (`max_concurrency`, `rate_limit`): the query runs
    /// now (false; counted as running until its command is over) or waits,
    /// queued, for room or its turn (true). A pinned client's query is
    /// never held (it may hold locks others wait for) but counts. `then`:
    /// the rule whose limits it passes after these (a user's).
    fn limit_concurrency(&mut self, key: usize, limiter: Limiter, then: Option<usize>) -> bool {
        let config = &self.rules.limiter(limiter).config;
        if config.max_concurrency.is_none() && config.rate.is_none() && config.timeout.is_none() {
            return false;
        }
        self.prune_running(limiter);
        let now = self.now;
        let c = &self.clients[key];
        let me = Waiter {
            client: key,
            serial: c.serial,
            read_at: c.command_read_at,
        };
        let pinned = c.pinned.is_some();
        let deadline = c.command_read_at + self.pools[c.pool].user.queue_timeout;
        let rule = self.rules.limiter(limiter);
        let room = rule
            .config
            .max_concurrency
            .is_none_or(|n| rule.running.len() < n);
        let runs = pinned
            || (rule.held.is_empty() && room && rule.bucket.as_mut().is_none_or(|b| b.take(now)));
        if runs {
            if rule.config.max_concurrency.is_some() {
                rule.running.push(me);
            }
            if rule.config.timeout.is_some() {
                rule.timed.push((me, now));
            }
            return false;
        }
        rule.held.push_back(Held {
            waiter: me,
            deadline,
            then,
        });
        rule.delayed += 1;
        self.clients[key].set_state(ClientState::Queued);
        true
    }

    /// The rule's running statements whose command is over go.
    fn prune_running(&mut self, limiter: Limiter) {
        let clients = &self.clients;
        let rule = match limiter {
            Limiter::Rule(i) => &mut self.rules.rules[i],
            Limiter::User(i) => &mut self.rules.users[i],
        };
        rule.running.retain(|w| {
            clients.get(w.client).is_some_and(|c| {
                c.serial == w.serial && c.command_read_at == w.read_at && c.is_busy()
            })
        });
    }

    /// Periodic: a rule's statements running past its `timeout_ms` are
    /// interrupted as a `KILL QUERY` would (on mysqld, or out of the
    /// backlog); those whose command is over are forgotten.
    fn enforce_timeouts(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        for rule in &mut self.rules.rules {
            let Some(timeout) = rule.config.timeout else {
                continue;
            };
            let clients = &self.clients;
            rule.timed.retain(|(w, since)| {
                let same = clients.get(w.client).is_some_and(|c| {
                    c.serial == w.serial && c.command_read_at == w.read_at && c.is_busy()
                });
                if same && now >= *since + timeout {
                    due.push(w.client);
                    return false;
                }
                same
            });
        }
        for client in due {
            self.interrupt_client(client);
        }
    }

    /// Periodic: statements held by a rule's limits run, oldest first, as
    /// room frees up and their turn comes, or get ERR 1969 past their
    /// pool's queue_timeout_ms.
    fn release_held(&mut self) {
        let limiters = (0..self.rules.users.len())
            .map(Limiter::User)
            .chain((0..self.rules.rules.len()).map(Limiter::Rule));
        for limiter in limiters.collect::<Vec<_>>() {
            self.release_held_by(limiter);
        }
    }

    fn release_held_by(&mut self, limiter: Limiter) {
        let now = self.now;
        if self.rules.limiter(limiter).held.is_empty() {
            return;
        }
        self.prune_running(limiter);
        let mut expired = Vec::new();
        let mut runnable = Vec::new();
        let held = std::mem::take(&mut self.rules.limiter(limiter).held);
        for h in held {
            if !self.waiter_valid(&h.waiter) {
                continue;
            }
            let rule = self.rules.limiter(limiter);
            let room = rule
                .config
                .max_concurrency
                .is_none_or(|n| rule.running.len() < n);
            if rule.held.is_empty() && room && rule.bucket.as_mut().is_none_or(|b| b.take(now)) {
                if rule.config.max_concurrency.is_some() {
                    rule.running.push(h.waiter);
                }
                if rule.config.timeout.is_some() {
                    rule.timed.push((h.waiter, now));
                }
                runnable.push((h.waiter, h.then));
            } else if now >= h.deadline {
                expired.push(h.waiter);
            } else {
                rule.held.push_back(h);
            }
        }
        for (w, then) in runnable {
            // Past its user's limits, its rule's may still hold it.
            if then
                .is_some_and(|index| self.limit_concurrency(w.client, Limiter::Rule(index), None))
            {
                continue;
            }
            self.forward_current(w.client);
        }
        for w in expired {
            let whose = match limiter {
                Limiter::Rule(_) => "rule",
                Limiter::User(_) => "user",
            };
            let name = &self.rules.limiter(limiter).config.name;
            let what = format!("for {whose} '{name}' (max_concurrency, rate_limit)");
            self.fail_waited(&w, &what);
        }
    }

    /// ERR 1969 for a statement that waited past its pool's
    /// `queue_timeout_ms` outside the backlog (held by a limit, or for
    /// another client's identical read): `what` says for what.
    fn fail_waited(&mut self, w: &Waiter, what: &str) {
        let pool = &self.pools[self.clients[w.client].pool];
        let msg = format!(
            "funnel: the command waited {} ms {what} in pool '{}' (queue_timeout_ms = {}); it was not run",
            self.now.saturating_duration_since(w.read_at).as_millis(),
            pool.name(),
            pool.user.queue_timeout.as_millis()
        );
        self.fail_request(
            ClientRef {
                key: w.client,
                serial: w.serial,
            },
            ER_STATEMENT_TIMEOUT,
            &msg,
        );
    }

    /// Write the cached answer to `cache_key` (which must be live) as the
    /// answer to the client's command (already taken off its input).
    fn answer_from_cache(&mut self, key: usize, cache_key: &CacheKey, seq: u8) {
        let Some(hit) = self.rules.cache.get(cache_key, self.now) else {
            return;
        };
        let end = hit.end;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        renumber_frames(&hit.frames, seq, &mut out);
        self.answer_with(key, out, end);
    }

    /// Write `out` (an answer, renumbered for the client) as the answer to
    /// the client's command; `out` becomes the scratch buffer again.
    fn answer_with(&mut self, key: usize, out: Vec<u8>, end: AnswerEnd) {
        let c = &mut self.clients[key];
        // As after the same answer from mysqld (`finish_response`).
        c.row_count = end.row_count;
        if c.facts.selects {
            c.found_rows = end.found_rows;
        }
        c.last_status = end.status;
        if c.facts.clears_diagnostics {
            c.diagnostics_replaced();
        }
        c.bytes_out += out.len() as u64;
        self.bufs.ensure(&mut c.wbuf);
        c.wbuf.extend_from_slice(&out);
        self.scratch = out;
        self.flush_client(key);
    }

    /// A waiter whose command is still the one that waits.
    fn waiter_valid(&self, w: &Waiter) -> bool {
        self.clients.get(w.client).is_some_and(|c| {
            c.serial == w.serial
                && matches!(c.state, ClientState::Queued)
                && c.command_read_at == w.read_at
                && c.current().is_some()
                && !self.pools[c.pool].is_waiting(ClientRef {
                    key: w.client,
                    serial: w.serial,
                })
        })
    }

    /// The answer the waiters waited for (`Some`: in the cache, or kept
    /// for them only): each gets it; else each runs its own read, as if it
    /// had not waited.
    fn release_waiters(&mut self, waiters: Vec<Waiter>, shared: Option<&Shared>) {
        for w in waiters {
            if !self.waiter_valid(&w) {
                continue;
            }
            let Some(shared) = shared else {
                self.forward_current(w.client);
                continue;
            };
            let c = &mut self.clients[w.client];
            let seq = 1u8.wrapping_add(c.seq_offset);
            if let Some(span) = c.take_current() {
                c.rbuf.consume(span.wire_len);
            }
            c.set_idle();
            match shared {
                Shared::Stored(cache_key) => self.answer_from_cache(w.client, cache_key, seq),
                Shared::Unkept(answer) => {
                    let mut out = std::mem::take(&mut self.scratch);
                    out.clear();
                    renumber_frames(&answer.frames, seq, &mut out);
                    self.answer_with(w.client, out, answer.end);
                }
            }
            self.client_ready(w.client);
        }
    }

    /// The client's previous command's capture for the cache is over (a
    /// new command, the client left); who waited for it runs its own read.
    pub(super) fn drop_cache_fill(&mut self, key: usize) {
        // No rules, no fills (a reload that removes them releases all).
        if self.rules.is_empty() {
            return;
        }
        let waiters = self.rules.cache.forget_fill(key);
        self.release_waiters(waiters, None);
    }

    /// Periodic: reads that wait for a command that ended without an
    /// answer here (an error, a timeout, a KILL) run their own.
    /// Also: statements held by `max_concurrency` run as room frees up.
    pub(super) fn release_stranded_waiters(&mut self) {
        if self.rules.is_empty() {
            return;
        }
        let clients = &self.clients;
        let waiters = self.rules.cache.stranded(|key, serial| {
            clients
                .get(key)
                .is_some_and(|c| c.serial == serial && c.is_busy())
        });
        self.release_waiters(waiters, None);
        self.expire_waiters();
        self.release_held();
        self.enforce_timeouts();
        self.end_unseen_writes();
    }

    /// Periodic: reads waiting for the same read of another client get
    /// ERR 1969 past their pool's `queue_timeout_ms`, as in the backlog.
    fn expire_waiters(&mut self) {
        let expired = self.rules.cache.expired(self.now);
        for w in expired {
            if !self.waiter_valid(&w) {
                continue;
            }
            self.fail_waited(
                &w,
                "for the same read of another client (result cache coalescing)",
            );
        }
    }

    /// Periodic: writes whose end was not seen as an answer (refused,
    /// failed without one, the backend lost) end once their client is idle
    /// outside a transaction; those of clients that left, once no backend
    /// reads the rest of a left client's answer.
    fn end_unseen_writes(&mut self) {
        if !self.rules.cache.has_pending_writes() {
            return;
        }
        for client in self.rules.cache.writing_clients() {
            let over = self.clients.get(client).is_none_or(|c| {
                !c.is_busy()
                    && c.in_flight.is_none()
                    && c.last_status & SERVER_STATUS_IN_TRANS == 0
                    && !c.session.autocommit_off()
            });
            if over {
                self.rules.cache.writes_end(client);
            }
        }
        if !self.rules.cache.has_left_writes() {
            return;
        }
        // A draining backend reads the rest of the answer to a client that
        // left: its statement (a write, maybe) is not over.
        let drains: Vec<Instant> = self
            .backends
            .iter()
            .filter(|(_, b)| b.state == BackendState::Draining)
            .map(|(_, b)| b.drain_started)
            .collect();
        self.rules
            .cache
            .left_writes_end(self.now, |stamp| drains.iter().any(|&d| d <= stamp));
    }

    /// A reload: new rules, an empty cache; waiting reads run their own.
    pub(super) fn reload_rules(&mut self) {
        let waiters = self.rules.reload(&self.config.rules);
        self.release_waiters(waiters, None);
        if self.rules.tracks_writes {
            // Writes may be running that were not tracked (no rule cached
            // before): whatever runs now may write anything.
            let busy: Vec<usize> = self
                .clients
                .iter()
                .filter(|(_, c)| c.is_busy() || c.last_status & SERVER_STATUS_IN_TRANS != 0)
                .map(|(k, _)| k)
                .collect();
            for key in busy {
                self.rules.cache.write_begins(key, None);
            }
        }
    }

    /// A backend's answer is complete: a capture for the cache of its
    /// client's query is stored if the answer is a clean result.
    pub(super) fn cache_answer_done(&mut self, backend: usize, status: u16, end: EndKind) {
        if self.rules.is_empty() {
            return;
        }
        let b = &self.backends[backend];
        let Some(cr) = b.client else {
            return;
        };
        let r = &b.response;
        let clean = matches!(b.command, COM_QUERY | COM_STMT_EXECUTE)
            && end != EndKind::Err
            && !r.saw_warnings
            && !r.saw_state_change
            && !r.saw_eof_state_change
            && status & SERVER_STATUS_IN_TRANS == 0;
        let row_count = match end {
            EndKind::Ok => i64::try_from(b.last_affected_rows).unwrap_or(i64::MAX),
            _ => -1,
        };
        let (waiters, shared) = self.rules.cache.finish_fill(
            cr.key,
            cr.serial,
            clean.then_some(AnswerEnd {
                status,
                row_count,
                // For a SELECT (`answer_with`).
                found_rows: r.rows,
            }),
            self.now,
        );
        if !waiters.is_empty() {
            self.release_waiters(waiters, shared.as_ref());
        }
        if self.rules.cache.has_pending_writes() && end != EndKind::Other {
            // The client's writes end with its command, unless it is (or,
            // after an error, may be) in a transaction: then with it.
            let in_transaction = self.clients.get(cr.key).is_none_or(|c| match end {
                EndKind::Err => {
                    c.last_status & SERVER_STATUS_IN_TRANS != 0 || c.session.autocommit_off()
                }
                _ => status & SERVER_STATUS_IN_TRANS != 0,
            });
            if !in_transaction {
                self.rules.cache.writes_end(cr.key);
            }
        }
    }
}

/// Table names as hashes ([`table_hash`]): a qualified one as written, an
/// unqualified one in each of `schemas` (none: the empty schema).
fn resolve(names: &[TableName], schemas: [Option<&str>; 2]) -> Vec<u64> {
    let mut out = Vec::with_capacity(names.len());
    let mut lower = Vec::new();
    for n in names {
        match &n.schema {
            Some(s) => out.push(table_hash(s, &n.name)),
            None => {
                for (i, schema) in schemas.iter().enumerate() {
                    if i > 0 && (schema.is_none() || *schema == schemas[0]) {
                        continue;
                    }
                    lower.clear();
                    lower.extend_from_slice(schema.unwrap_or("").as_bytes());
                    lower.make_ascii_lowercase();
                    out.push(table_hash(&lower, &n.name));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A client's statement that may write begins (see `result_cache.rs`).
fn note_writes(cache: &mut ResultCache, client: usize, writes: Writes, schemas: [Option<&str>; 2]) {
    match writes {
        Writes::Nothing => {}
        Writes::Unknown => cache.write_begins(client, None),
        Writes::Tables(names) => cache.write_begins(client, Some(&resolve(&names, schemas))),
    }
}

impl RuleBook {
    pub fn cache_stats(&self) -> crate::control::CacheStats {
        let c = &self.cache.counters;
        crate::control::CacheStats {
            entries: self.cache.entries(),
            bytes: self.cache.bytes(),
            limit: self.cache.limit(),
            hits: c.hits,
            misses: c.misses,
            stores: c.stores,
            evictions: c.evictions,
            expired: c.expired,
            too_big: c.too_big,
            coalesced: c.coalesced,
            invalidations: c.invalidations,
            invalidated: c.invalidated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::statement::query_facts;

    fn book(rules: &str) -> RuleBook {
        let text =
            format!("[backend]\naddress = 127.0.0.1:3306\n[user app]\npassword = x\n{rules}");
        RuleBook::new(&Config::parse(&text, "t").unwrap().rules)
    }

    fn first(book: &mut RuleBook, user: &str, schema: Option<&str>, sql: &str) -> Option<String> {
        let facts = query_facts(sql.as_bytes(), &mut Vec::new());
        book.decide(user, schema, facts.shape, sql.as_bytes())
            .map(|i| book.rules[i].config.name.clone())
    }

    #[test]
    fn the_first_rule_whose_conditions_all_hold_decides() {
        let mut b = book(
            "[rule by_shape]\ndigest = \"SELECT v FROM t WHERE id = ?\"\nblock = a\n\
             [rule by_user_and_schema]\nuser = app\nschema = shop\ncache_ttl_ms = 5\n\
             [rule by_pattern]\npattern = \"(?i)from\\\\s+products\"\ncache_ttl_ms = 5\n",
        );
        // The shape as SHOW QUERIES shows it, whatever the literal and spacing.
        assert_eq!(
            first(&mut b, "x", None, "SELECT v  FROM t WHERE id = 77").as_deref(),
            Some("by_shape")
        );
        assert_eq!(
            first(&mut b, "x", None, "SELECT v FROM t WHERE id = 'a'").as_deref(),
            Some("by_shape")
        );
        assert_eq!(
            first(&mut b, "x", None, "SELECT w FROM t WHERE id = 1"),
            None
        );
        assert_eq!(
            first(&mut b, "app", Some("shop"), "SELECT 1").as_deref(),
            Some("by_user_and_schema")
        );
        assert_eq!(first(&mut b, "app", Some("other"), "SELECT 1"), None);
        assert_eq!(
            first(&mut b, "app", Some("other"), "select * FROM  products").as_deref(),
            Some("by_pattern")
        );
        let rows = b.rows();
        assert_eq!(
            rows.iter().map(|r| r.hits).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert_eq!(rows[2].conditions, "pattern = \"(?i)from\\\\s+products\"");
        // A reload starts the counts again.
        b.reload(&Config::parse(
            "[backend]\naddress = 127.0.0.1:3306\n[user app]\npassword = x\n[rule only]\nblock = b\n",
            "t",
        )
        .unwrap()
        .rules);
        assert_eq!(
            first(&mut b, "x", None, "SELECT 1").as_deref(),
            Some("only")
        );
        assert_eq!(b.rows().len(), 1);
    }
}

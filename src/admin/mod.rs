//! The admin port (MySQL protocol) and the stats port (HTTP), served from
//! their own threads with snapshots from the event loop.
//!
//! Threads: one acceptor per listener, and one short-lived thread per
//! accepted connection, at most [`MAX_ADMIN_CONNECTIONS`] /
//! [`MAX_HTTP_CONNECTIONS`] at once (more are answered with an error and
//! closed). They talk to the loop only through the [`ControlHandle`]: a
//! request on a channel plus a wake-up, the answer on a one-shot channel,
//! with a timeout; nothing here shares a lock with the loop.
//!
//! * [`console`]: the admin console (`mariadb -h127.0.0.1 -P6033 -uadmin -p`).
//! * [`report`]: the tables behind its SHOW commands.
//! * [`http`]: `/metrics`, `/stats.json`, `/health` and the live page `/`.
//! * [`cli`]: `funnel stats`, a top-like view over the admin console.

pub mod cli;
mod client;
mod console;
mod http;
mod json;
mod metrics;

pub mod report;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};

use crate::config::Config;
use crate::control::{ControlHandle, Snapshot};
use crate::log_limit::{LogEvent, ThreadLogLimiter};

/// Admin console sessions served at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
/// HTTP requests served at once.
pub const MAX_HTTP_CONNECTIONS: usize = 32;
/// Of those, what one client address may hold: silent connections from one
/// host cannot lock out the others (a load balancer's health check, an admin).
pub const MAX_ADMIN_PER_ADDRESS: usize = 4;
pub const MAX_HTTP_PER_ADDRESS: usize = 8;
/// Connections served beyond the limits above, for a short time only: on
/// the stats port they answer `/health` (anything else gets 429) after
/// reading the request for at most [`http::RESERVED_READ_TIMEOUT`]; on the
/// admin port they are a console session like any other, whose login must
/// come within the console's (short) handshake timeout.
pub const RESERVED_ADMIN_CONNECTIONS: usize = 1;
pub const RESERVED_HTTP_CONNECTIONS: usize = 2;
/// How long to wait for the loop to answer a snapshot request.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for PAUSE/RESUME/RELOAD/SHUTDOWN to be carried out.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bind the admin and stats listeners and serve them from new threads.
/// A listener that cannot be bound is an error (nothing was started).
pub fn spawn(config: &Config, control: ControlHandle) -> Result<(), String> {
    let admin = match &config.admin {
        Some(a) => {
            let l = bind(a.listen, "admin console")?;
            let mut creds = console::Credentials::new(&a.user, &a.password);
            creds.tls = config.tls.as_ref().map(|t| t.config.clone());
            if !a.stats_user.is_empty() {
                creds.stats = Some((
                    a.stats_user.clone(),
                    crate::protocol::auth::native_password_stage2(a.stats_password.as_bytes()),
                ));
            }
            Some((l, creds))
        }
        None => None,
    };
    let stats = match &config.stats {
        Some(s) => Some(bind(s.listen, "stats")?),
        None => None,
    };
    let log_limit = Arc::new(ThreadLogLimiter::default());
    if admin.is_some() || stats.is_some() {
        // Summaries of windows that left lines out, also when nothing follows.
        let log_limit = Arc::clone(&log_limit);
        std::thread::Builder::new()
            .name("funnel-log-limit".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                log_limit.report_ended();
            })
            .map_err(|e| format!("cannot start the log-limit thread: {e}"))?;
    }
    if let Some((listener, creds)) = admin {
        let shared = Arc::new(console::Shared::new(
            control.clone(),
            creds,
            Arc::clone(&log_limit),
        ));
        let limit = Limit::new(
            MAX_ADMIN_CONNECTIONS,
            MAX_ADMIN_PER_ADDRESS,
            RESERVED_ADMIN_CONNECTIONS,
            Arc::clone(&log_limit),
        );
        std::thread::Builder::new()
            .name("funnel-admin".into())
            .spawn(move || {
                accept_loop(listener, limit, "admin", move |stream, peer, slot, _| {
                    let shared = Arc::clone(&shared);
                    spawn_conn("funnel-admin-conn", move || {
                        let _slot = slot;
                        console::serve(stream, peer, &shared);
                    })
                })
            })
            .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    }
    if let Some(listener) = stats {
        let token: Arc<str> = config
            .stats
            .as_ref()
            .map_or("", |s| s.stats_token.as_str())
            .into();
        let limit = Limit::new(
            MAX_HTTP_CONNECTIONS,
            MAX_HTTP_PER_ADDRESS,
            RESERVED_HTTP_CONNECTIONS,
            log_limit,
        );
        std::thread::Builder::new()
            .name("funnel-stats".into())
            .spawn(move || {
                accept_loop(
                    listener,
                    limit,
                    "stats",
                    move |stream, peer, slot, reserved| {
                        let control = control.clone();
                        let token = Arc::clone(&token);
                        spawn_conn("funnel-stats-conn", move || {
                            let _slot = slot;
                            http::serve(stream, peer, &control, reserved, &token);
                        })
                    },
                )
            })
            .map_err(|e| format!("cannot start the stats thread: {e}"))?;
    }
    Ok(())
}

/// Bound with SO_REUSEPORT: a funnel taking over from this one (same
/// configuration, see `server/handoff_io.rs`) listens beside it until this
/// one exits. Someone else on the port is refused before this is called.
fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    use socket2::{Domain, Socket, Type};
    let bind = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        Ok(socket.into())
    };
    let l = bind().map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))?;
    let local = l.local_addr().unwrap_or(addr);
    info!("{what} listening on {local}");
    Ok(l)
}

fn spawn_conn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

/// Counts connections being served; a [`Slot`] gives its place back on drop.
#[derive(Clone)]
struct Limit {
    active: Arc<AtomicUsize>,
    max: usize,
    /// Connections served per client address (only the acceptor adds).
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
    /// Reserved connections being served, and how many may be.
    reserved: Arc<AtomicUsize>,
    max_reserved: usize,
    /// For the lines about connections refused or not accepted.
    log_limit: Arc<ThreadLogLimiter>,
}

struct Slot {
    /// The counter it was taken from (the normal or the reserved one).
    count: Arc<AtomicUsize>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut m) = self.per_address.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl Limit {
    fn new(
        max: usize,
        max_per_address: usize,
        max_reserved: usize,
        log_limit: Arc<ThreadLogLimiter>,
    ) -> Self {
        Limit {
            active: Arc::new(AtomicUsize::new(0)),
            max,
            per_address: Arc::new(Mutex::new(HashMap::new())),
            max_per_address,
            reserved: Arc::new(AtomicUsize::new(0)),
            max_reserved,
            log_limit,
        }
    }

    /// A slot for a connection from `ip`: a normal one while the address
    /// and the whole port are within their limits, else a reserved one
    /// (`true`) if one is free.
    fn try_take(&self, ip: IpAddr) -> Option<(Slot, bool)> {
        let Ok(mut m) = self.per_address.lock() else {
            return None;
        };
        let mine = m.get(&ip).copied().unwrap_or(0);
        let (count, reserved) = if mine < self.max_per_address && take(&self.active, self.max) {
            (&self.active, false)
        } else if take(&self.reserved, self.max_reserved) {
            (&self.reserved, true)
        } else {
            return None;
        };
        *m.entry(ip).or_insert(0) += 1;
        Some((
            Slot {
                count: Arc::clone(count),
                per_address: Arc::clone(&self.per_address),
                ip,
            },
            reserved,
        ))
    }
}

/// One more on `n` if it is below `max`.
fn take(n: &AtomicUsize, max: usize) -> bool {
    let mut cur = n.load(Ordering::Acquire);
    loop {
        if cur >= max {
            return false;
        }
        match n.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Accept connections for ever. `start` gets each one with its slot and
/// fails if it could not start serving it. Over the limit, the
/// connection is answered by `refuse` (an error in its protocol) and closed.
fn accept_loop(
    listener: TcpListener,
    limit: Limit,
    what: &'static str,
    start: impl Fn(TcpStream, SocketAddr, Slot, bool) -> std::io::Result<()>,
) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                if limit.log_limit.admit(LogEvent::AcceptPaused) {
                    warn!("{what}: accept failed: {e}");
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match limit.try_take(peer.ip()) {
            Some((slot, reserved)) => {
                if let Err(e) = start(stream, peer, slot, reserved) {
                    if limit.log_limit.admit(LogEvent::AdminConnectionRefused) {
                        warn!("{what}: cannot start a thread for a connection: {e}");
                    }
                }
            }
            None => {
                if limit.log_limit.admit(LogEvent::AdminConnectionRefused) {
                    warn!(
                        "{what}: refusing {peer}: {} connections already open, or {} from its address",
                        limit.max, limit.max_per_address
                    );
                }
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                if what == "admin" {
                    console::refuse_busy(stream);
                } else {
                    http::refuse_busy(stream);
                }
            }
        }
    }
}

/// What `/health` asks about: the host (the pools that count), one pool
/// (`?pool=NAME`: the user's pools) or one server (`?server=NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthOf<'a> {
    Host,
    Pool(&'a str),
    Server(&'a str),
}

/// Health as `/health` reports it for the host: Ok(summary) or Err(one-line
/// reason).
pub fn health(s: &Snapshot) -> Result<String, String> {
    health_of(s, HealthOf::Host)
}

/// Why a pool cannot serve now, if it cannot.
fn pool_trouble(s: &Snapshot, p: &crate::control::PoolSnapshot) -> Option<String> {
    if !p.backend_up {
        let why = p
            .last_backend_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Some(format!(
            "backend down: pool {} has no backend connection up{why}",
            p.name
        ));
    }
    let limit = (p.backlog_size as f64 * s.health_backlog_ratio).max(1.0);
    if p.backlog_depth as f64 >= limit {
        return Some(format!(
            "backlog saturated: pool {} has {} of {} requests queued (health_backlog_ratio = {})",
            p.name, p.backlog_depth, p.backlog_size, s.health_backlog_ratio
        ));
    }
    None
}

/// The user a pool belongs to (`app/found_rows` is app's).
fn pool_user(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

/// Health of the host, one pool or one server. The host is healthy while
/// the pools that count are (`[stats] health_pools`, else those with
/// clients, else all): one user with a wrong backend password must not take
/// the host out of a load balancer for every other user. Pools and servers
/// in trouble that do not count are named in the OK line.
pub fn health_of(s: &Snapshot, of: HealthOf) -> Result<String, String> {
    if s.shutting_down {
        return Err("draining for shutdown".into());
    }
    if s.paused {
        return Err("paused by the admin console (RESUME to continue)".into());
    }
    let live = || s.pools.iter().filter(|p| !p.is_removed());
    match of {
        HealthOf::Server(name) => {
            let Some(server) = s.servers.iter().find(|v| v.name == name) else {
                return Err(format!("no server {name:?}"));
            };
            return match &server.out {
                Some(why) => Err(format!("server {name} out of rotation: {why}")),
                None if server.removed => Err(format!("server {name} removed by a reload")),
                None => Ok(format!("OK: server {name} in rotation")),
            };
        }
        HealthOf::Pool(name) => {
            let mut found = 0;
            for p in live().filter(|p| p.name == name || pool_user(&p.name) == name) {
                found += 1;
                if let Some(why) = pool_trouble(s, p) {
                    return Err(why);
                }
            }
            return if found == 0 {
                Err(format!("no pool {name:?}"))
            } else {
                Ok(format!("OK: pool {name} up, backlog below the limit"))
            };
        }
        HealthOf::Host => {}
    }
    let with_clients = live().any(|p| p.clients.connected > 0);
    let counts = |p: &crate::control::PoolSnapshot| {
        if !s.health_pools.is_empty() {
            s.health_pools.iter().any(|u| u == pool_user(&p.name))
        } else {
            !with_clients || p.clients.connected > 0
        }
    };
    let mut pools = 0;
    let mut aside = Vec::new();
    for p in live() {
        let trouble = pool_trouble(s, p);
        if counts(p) {
            pools += 1;
            if let Some(why) = trouble {
                return Err(why);
            }
        } else if let Some(why) = trouble {
            aside.push(format!("{why} (not counted)"));
        }
    }
    for server in s.servers.iter().filter(|v| !v.removed) {
        if let Some(why) = &server.out {
            aside.push(format!("server {} out of rotation: {why}", server.name));
        }
    }
    let mut line = format!("OK: {pools} pool(s) up, backlog below the limit");
    if !aside.is_empty() {
        line.push_str("; ");
        line.push_str(&aside.join("; "));
    }
    Ok(line)
}

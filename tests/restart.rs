//! Restart and upgrade without dropping clients (README "Upgrade and
//! restart without dropping clients"): a second funnel started with the
//! same configuration takes over the listeners, and SIGTERM makes the first
//! hand its clients over between their commands, sessions and prepared
//! statements included; without a second funnel, SIGTERM closes idle
//! clients between their commands, without an error they did not ask for.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

/// A directory of the test's own (not a funnel's scratch directory), for
/// what two funnels share: the unix socket, the handoff socket.
fn shared_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("funnel-restart-")
        .tempdir_in("/tmp")
        .unwrap()
}

/// A configuration two funnels can share: its unix socket lives in `dir`
/// (from [`shared_dir`]).
fn shared_config(db_port: u16, dir: &std::path::Path, extra: &str) -> (String, u16, u16, u16) {
    let port = common::free_port();
    let admin = common::free_port();
    let stats = common::free_port();
    let cfg = FunnelConfig::user_a()
        .backend_port(db_port)
        .funnel(&format!("unix_socket = {}/funnel.sock", dir.display()))
        .funnel("shutdown_timeout_ms = 15000")
        .funnel(extra)
        .pool("connections = 4")
        .admin(admin, "adm")
        .stats(stats)
        .text(port);
    (cfg, port, admin, stats)
}

fn start_second(cfg: &str) -> FunnelProcess {
    let f = FunnelProcess::builder(cfg).start();
    assert!(
        f.wait_for_log(
            "stopped accepting: this one serves new clients",
            Duration::from_secs(30)
        ),
        "the second funnel did not take over:\n{}",
        f.log()
    );
    f
}

fn conn(port: u16) -> Conn {
    Conn::new(common::opts(USER_A, PASS_A, port)).expect("connect through the funnel")
}

fn unix_conn(dir: &std::path::Path) -> Conn {
    let o = OptsBuilder::new()
        .socket(Some(dir.join("funnel.sock").display().to_string()))
        .user(Some(USER_A))
        .pass(Some(PASS_A))
        .db_name(Some(TEST_DB))
        .read_timeout(Some(Duration::from_secs(60)));
    Conn::new(o).expect("connect over the unix socket")
}

/// The status code of `GET /health` on the stats port.
fn health(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("stats port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// What an idle client set up, and reads back after the handoff.
struct Idle {
    conn: Conn,
    id: u64,
    schema: String,
    tz: String,
    marker: String,
    stmt: mysql::Statement,
}

type Session = (u64, Option<String>, String, String, Option<String>);

/// The funnel's connection id (what `SELECT CONNECTION_ID()` alone
/// answers), then the session's schema, variables and user variable.
fn session(c: &mut Conn) -> Session {
    let id: u64 = c
        .query_first("SELECT CONNECTION_ID()")
        .expect("connection id")
        .expect("a row");
    let (schema, tz, mode, marker) = c
        .query_first("SELECT DATABASE(), @@time_zone, @@sql_mode, @marker")
        .expect("session query")
        .expect("a row");
    (id, schema, tz, mode, marker)
}

#[test]
fn restart_hands_clients_over_with_their_sessions() {
    let db = common::mariadb();
    let dir = shared_dir();
    let (cfg, port, admin, stats) = shared_config(db.port, dir.path(), "");
    let mut a = FunnelProcess::start(&cfg, port);
    let other_schema = common::unique_name("restart_s");
    db.admin_sql(&format!("CREATE DATABASE {other_schema}"));

    // Idle clients, each with a session of its own and a prepared
    // statement; one over the unix socket.
    let mut idle: Vec<Idle> = Vec::new();
    for i in 0..6 {
        let mut c = if i == 5 {
            unix_conn(dir.path())
        } else {
            conn(port)
        };
        let schema = if i % 2 == 0 {
            other_schema.clone()
        } else {
            TEST_DB.to_string()
        };
        let tz = format!("+0{i}:00");
        let marker = format!("client-{i}-{}", common::unique_name("m"));
        c.query_drop(format!("USE {schema}")).unwrap();
        c.query_drop(format!(
            "SET time_zone = '{tz}', sql_mode = 'ANSI_QUOTES', @marker = '{marker}'"
        ))
        .unwrap();
        let stmt = c.prep("SELECT ? + 1, @marker, DATABASE()").unwrap();
        let (n, m, d): (i64, String, String) = c.exec_first(&stmt, (i,)).unwrap().unwrap();
        assert_eq!(
            (n, m.as_str(), d.as_str()),
            (i + 1, marker.as_str(), schema.as_str())
        );
        if i == 3 {
            // Its warnings keep it on its backend until its next statement
            // that uses a table: it goes over anyway, without them.
            c.query_drop("SELECT CAST('1x' AS SIGNED)").unwrap();
        }
        let id = session(&mut c).0;
        idle.push(Idle {
            conn: c,
            id,
            schema,
            tz,
            marker,
            stmt,
        });
    }
    // A client in a transaction: pinned until it commits.
    let mut in_tx = conn(port);
    let table = common::unique_name("restart_t");
    in_tx
        .query_drop(format!("CREATE TABLE {table} (id INT PRIMARY KEY, v INT)"))
        .unwrap();
    in_tx.query_drop("BEGIN").unwrap();
    in_tx
        .query_drop(format!("INSERT INTO {table} VALUES (1, 1)"))
        .unwrap();
    let in_tx_id = session(&mut in_tx).0;

    // The second funnel, with the same configuration: it gets the
    // listeners (admin and stats ports shared) and continues the ids.
    let b = start_second(&cfg);
    let log_a = a.log();
    assert!(log_a.contains("took over the listeners"), "{log_a}");
    // New clients go to the new funnel at once.
    let mut fresh = conn(port);
    let fresh_id = session(&mut fresh).0;
    assert!(
        fresh_id > in_tx_id,
        "ids go on: {fresh_id} after {in_tx_id}"
    );
    let mut fresh_unix = unix_conn(dir.path());
    session(&mut fresh_unix);
    // The admin console answers (either process until the old one exits).
    common::admin_console(admin, "admin", "adm")
        .query_drop("SHOW POOLS")
        .unwrap();
    assert_eq!(health(stats), "200");

    // Clients of the old funnel running a statement when SIGTERM comes
    // get their result, and go over after it.
    let sleepers: Vec<_> = idle
        .drain(..2)
        .map(|mut s| {
            thread::spawn(move || {
                let r: Option<(i64, String)> =
                    s.conn.query_first("SELECT SLEEP(2), @marker").unwrap();
                (r, s)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let t_term = Instant::now();
    a.signal(libc::SIGTERM);
    assert!(a.wait_for_log("handing clients over to funnel pid", Duration::from_secs(5)));
    // The transaction ends: its client goes over then.
    thread::sleep(Duration::from_millis(300));
    in_tx.query_drop("COMMIT").unwrap();

    let status = a
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the old funnel did not exit:\n{}", a.log()));
    assert!(status.success(), "{status}\n{}", a.log());
    let took = t_term.elapsed();
    eprintln!("[restart] old funnel exited {took:?} after SIGTERM");
    // Nobody waited for shutdown_timeout_ms (15 s): the sleeps took 2 s.
    assert!(took < Duration::from_secs(8), "{took:?}");
    let log_a = a.log();
    assert!(
        log_a.contains("client(s) handed over to the new funnel"),
        "{log_a}"
    );
    assert!(!log_a.contains("closed between its commands"), "{log_a}");

    for t in sleepers {
        let (r, s) = t.join().unwrap();
        assert_eq!(r, Some((0, s.marker.clone())));
        idle.push(s);
    }
    // Every idle client's next commands: its own session, its statement.
    for (i, s) in idle.iter_mut().enumerate() {
        let got = session(&mut s.conn);
        assert_eq!(
            got,
            (
                s.id,
                Some(s.schema.clone()),
                s.tz.clone(),
                "ANSI_QUOTES".to_string(),
                Some(s.marker.clone())
            ),
            "client {i}"
        );
        let (n, m, d): (i64, String, String) = s.conn.exec_first(&s.stmt, (40,)).unwrap().unwrap();
        assert_eq!((n, m, d), (41, s.marker.clone(), s.schema.clone()));
        // A new statement works too.
        let v: Option<i64> = s.conn.exec_first("SELECT ? * 2", (21,)).unwrap();
        assert_eq!(v, Some(42));
    }
    // The transaction's client: committed, and on its way.
    let got: Option<(u64, i64)> = in_tx
        .query_first(format!("SELECT v FROM {table} WHERE id = 1"))
        .unwrap()
        .map(|v: i64| (session(&mut in_tx).0, v));
    assert_eq!(got, Some((in_tx_id, 1)));
    // The new funnel serves everyone: its log says it adopted them, and a
    // new client gets an id of its own.
    let log_b = b.log();
    assert!(
        log_b.contains("is handing its clients over to this one"),
        "{log_b}"
    );
    let mut late = conn(port);
    let late_id = session(&mut late).0;
    let mut ids: Vec<u64> = idle.iter().map(|s| s.id).collect();
    ids.extend([in_tx_id, fresh_id, late_id]);
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "connection ids are unique: {ids:?}");
    session(&mut fresh_unix);
    common::admin_console(admin, "admin", "adm")
        .query_drop("SHOW POOLS")
        .unwrap();
    assert_eq!(health(stats), "200");
    in_tx.query_drop(format!("DROP TABLE {table}")).unwrap();
    db.admin_sql(&format!("DROP DATABASE {other_schema}"));
    // The socket file is the new funnel's: it was not removed by the old one.
    assert!(dir.path().join("funnel.sock").exists());
}

/// SIGTERM with nobody to take over: a client waiting for its next command
/// has its connection closed, with no ERR 1053 waiting for it (its next
/// command fails as on a connection the server closed, not with an error
/// that answers a command it had not sent); a running statement finishes.
#[test]
fn sigterm_without_a_new_funnel_closes_idle_clients_between_commands() {
    let db = common::mariadb();
    let dir = shared_dir();
    let (cfg, port, _, _) = shared_config(db.port, dir.path(), "");
    let mut f = FunnelProcess::start(&cfg, port);
    let mut idle = conn(port);
    session(&mut idle);
    let mut busy = conn(port);
    let running = thread::spawn(move || {
        busy.query_first::<(i64, i64), _>("SELECT SLEEP(1), 7")
            .map(|r| r.map(|r| r.1))
    });
    thread::sleep(Duration::from_millis(300));
    f.signal(libc::SIGTERM);
    assert!(f.wait_for_log("closed between their commands", Duration::from_secs(5)));
    let status = f.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    assert_eq!(running.join().unwrap().unwrap(), Some(7));
    match idle.query_drop("SELECT 1") {
        Err(mysql::Error::MySqlError(e)) => {
            panic!("the idle client got an error packet for a command it sent later: {e:?}")
        }
        Err(_) => {}
        Ok(()) => panic!("the idle client's connection still works"),
    }
    // The unix socket file is gone with it.
    assert!(!dir.path().join("funnel.sock").exists());
}

/// Two funnels with different handoff sockets (different configurations)
/// on the same port: the second is refused, not silently sharing it.
#[test]
fn another_funnel_on_the_same_port_is_refused() {
    let db = common::mariadb();
    let dir = shared_dir();
    let (cfg, port, _, _) = shared_config(db.port, dir.path(), "");
    let _a = FunnelProcess::start(&cfg, port);
    let other = cfg.replace(
        "shutdown_timeout_ms = 15000\n",
        &format!(
            "shutdown_timeout_ms = 15000\nhandoff_socket = @{}\n",
            common::unique_name("other")
        ),
    );
    let (status, log) = FunnelProcess::builder(&other).run_to_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("another process listens there"), "{log}");
}

/// A second funnel whose configuration differs from the running one's
/// (same addresses) takes over, and says in which settings they differ.
/// The handoff socket is a file here: the newest funnel's, removed by
/// nobody else.
#[test]
fn a_differing_configuration_is_logged_at_takeover() {
    let db = common::mariadb();
    let dir = shared_dir();
    let handoff = dir.path().join("handoff.sock");
    let extra = format!("handoff_socket = {}", handoff.display());
    let (cfg, port, _, _) = shared_config(db.port, dir.path(), &extra);
    let mut a = FunnelProcess::start(&cfg, port);
    let mut c = conn(port);
    let id = session(&mut c).0;
    let changed = cfg.replace("connections = 4", "connections = 3");
    let mut b = start_second(&changed);
    assert!(
        b.wait_for_log("differs from that of pid", Duration::from_secs(5)),
        "{}",
        b.log()
    );
    let log = b.log();
    assert!(
        log.contains("- connections = 4") && log.contains("+ connections = 3"),
        "{log}"
    );
    a.terminate(Duration::from_secs(20));
    assert_eq!(session(&mut c).0, id);
    assert!(
        handoff.exists(),
        "the old funnel removed the new one's handoff socket"
    );
    drop(c);
    b.terminate(Duration::from_secs(20));
    assert!(
        !handoff.exists(),
        "the last funnel left its handoff socket behind"
    );
}

/// The measure: 500 clients running point selects without a pause through
/// a restart (start the new funnel, SIGTERM the old): zero client errors.
/// Prints the queries before, during and after the switch and the longest
/// latency around it (docs/performance.md).
#[test]
fn restart_under_load_of_500_clients_has_no_errors() {
    const CLIENTS: usize = 500;
    common::raise_nofile(8192);
    let db = common::mariadb();
    let dir = shared_dir();
    let (cfg, port, _, _) = shared_config(db.port, dir.path(), "");
    let table = common::unique_name("restart_load");
    let mut setup = common::mysql_direct(USER_A, PASS_A);
    setup
        .query_drop(format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, c CHAR(60)) ENGINE=InnoDB"
        ))
        .unwrap();
    let values: Vec<String> = (1..=1000).map(|i| format!("({i}, 'row-{i}')")).collect();
    setup
        .query_drop(format!("INSERT INTO {table} VALUES {}", values.join(",")))
        .unwrap();
    let mut a = FunnelProcess::start(&cfg, port);

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // Per client: (end of query since t0, latency) of every success, and errors.
    type Samples = Vec<(Duration, Duration)>;
    type PerClient = (Samples, Vec<String>);
    let results: Arc<Mutex<Vec<PerClient>>> = Arc::new(Mutex::new(Vec::new()));
    let connected = Arc::new(Barrier::new(CLIENTS + 1));
    let mut threads = Vec::new();
    for i in 0..CLIENTS {
        let stop = Arc::clone(&stop);
        let results = Arc::clone(&results);
        let connected = Arc::clone(&connected);
        let sql = format!("SELECT c FROM {table} WHERE id = ");
        threads.push(
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut c = conn(port);
                    connected.wait();
                    let mut samples = Vec::with_capacity(4096);
                    let mut errors = Vec::new();
                    let mut n = i;
                    while !stop.load(Ordering::Relaxed) {
                        n = n * 7 % 1000 + 1;
                        let t = Instant::now();
                        match c.query_first::<String, _>(format!("{sql}{n}")) {
                            Ok(Some(v)) if v == format!("row-{n}") => {
                                samples.push((t0.elapsed(), t.elapsed()))
                            }
                            other => {
                                errors.push(format!("{other:?}"));
                                break;
                            }
                        }
                    }
                    results.lock().unwrap().push((samples, errors));
                })
                .unwrap(),
        );
    }
    connected.wait();
    thread::sleep(Duration::from_secs(3));
    let t_start_b = t0.elapsed();
    let b = start_second(&cfg);
    thread::sleep(Duration::from_secs(2));
    let t_term = t0.elapsed();
    a.signal(libc::SIGTERM);
    let status = a
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the old funnel did not exit:\n{}", a.log()));
    let t_exit = t0.elapsed();
    assert!(status.success());
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let t_end = t0.elapsed();
    let results = results.lock().unwrap();
    let errors: Vec<&String> = results.iter().flat_map(|(_, e)| e).collect();
    let phase = |from: Duration, to: Duration| {
        let mut n = 0usize;
        let mut max = Duration::ZERO;
        for (s, _) in results.iter() {
            for &(end, lat) in s {
                if end >= from && end < to {
                    n += 1;
                    max = max.max(lat);
                }
            }
        }
        (n, max)
    };
    let warm = Duration::from_millis(500);
    let before = phase(warm, t_start_b);
    let both = phase(t_start_b, t_term);
    let switch = phase(t_term, t_exit);
    let after = phase(t_exit, t_end);
    let rate = |(n, _): (usize, Duration), from: Duration, to: Duration| {
        n as f64 / (to - from).as_secs_f64()
    };
    eprintln!(
        "[restart] {CLIENTS} clients: before {:.0} q/s (max {:?}); new funnel up {:.0} q/s (max {:?}); \
         SIGTERM to exit {:?}: {} queries, {:.0} q/s, max latency {:?}; after {:.0} q/s (max {:?}); errors {}",
        rate(before, warm, t_start_b),
        before.1,
        rate(both, t_start_b, t_term),
        both.1,
        t_exit - t_term,
        switch.0,
        rate(switch, t_term, t_exit),
        switch.1,
        rate(after, t_exit, t_end),
        after.1,
        errors.len()
    );
    assert!(errors.is_empty(), "client errors: {errors:?}\n{}", a.log());
    assert_eq!(results.len(), CLIENTS);
    // Every client went on after the old funnel was gone.
    let late = results
        .iter()
        .filter(|(s, _)| s.last().is_some_and(|&(end, _)| end > t_exit))
        .count();
    assert_eq!(late, CLIENTS);
    let log_a = a.log();
    assert!(
        log_a.contains(&format!("{CLIENTS} client(s) handed over")),
        "{log_a}"
    );
    drop(b);
    setup.query_drop(format!("DROP TABLE {table}")).unwrap();
}

/// Every loop accepts on the listening sockets (`threads`): after a
/// takeover none of the old funnel's loops may accept any more, or the
/// clients they took would wait for its SIGTERM to be handed over (and
/// take connection ids the new funnel gives too).
#[test]
fn after_a_takeover_no_loop_of_the_old_funnel_accepts() {
    let db = common::mariadb();
    let dir = shared_dir();
    let (cfg, port, _, _) = shared_config(db.port, dir.path(), "threads = 2");
    let mut a = FunnelProcess::start(&cfg, port);
    let mut b = start_second(&cfg);
    // Each loop of both processes waits in its poll: with the old one's
    // copies still open, about half of these would go to it.
    let mut clients: Vec<Conn> = (0..40)
        .map(|_| {
            let mut c = conn(port);
            session(&mut c);
            c
        })
        .collect();
    let mut unix = unix_conn(dir.path());
    session(&mut unix);
    a.signal(libc::SIGTERM);
    a.wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the old funnel did not exit:\n{}", a.log()));
    let log_a = a.log();
    assert!(
        !log_a.contains("handed over to the new funnel"),
        "the old funnel accepted clients after the takeover:\n{log_a}"
    );
    for c in clients.iter_mut().chain(std::iter::once(&mut unix)) {
        session(c);
    }
    b.terminate(Duration::from_secs(20));
}

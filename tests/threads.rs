//! Several event loops (`[funnel] threads = 2`), against a real MariaDB:
//! clients are spread over the loops and both serve them (the second
//! loop's thread spends CPU on them); connection ids are unique across
//! loops; a pool's backend connections total exactly its `connections`
//! (counted in mysqld's own process list); a pool too small to split has
//! its clients moved, as they log in, to the loop that serves it (TLS
//! clients too, with their TLS session); `max_client_connections` holds
//! across loops; the admin side sees and acts on every loop (SHOW CLIENTS,
//! SHOW POOLS, KILL CLIENT, PAUSE/RESUME, RELOAD), and SIGTERM stops them
//! all; a command waiting on a loop whose connections are all busy runs on
//! another loop's idle one (one first-come first-served order).
//!
//! The rest of the suite runs with `threads = 2` too in CI
//! (`FUNNEL_TEST_FUNNEL`, scripts/test.sh).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::admin::{admin_console, query};
use common::sql::{one, server_error};
use common::{free_port, private_account, FunnelConfig, TestCa};
use mysql::prelude::Queryable;

/// mysqld's connections of `user` (the funnel's backend connections).
fn backend_connections(user: &str) -> i64 {
    let mut root = common::mariadb().admin_conn();
    one(
        &mut root,
        &format!("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{user}'"),
    )
}

/// Wait until `user` has `want` backend connections; the last count.
fn settle_backends(user: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = backend_connections(user);
        if n == want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (user + system, in clock ticks) of the funnel's thread named
/// `name`, from /proc.
fn thread_cpu(pid: u32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the command name's closing parenthesis: state is
        // the 3rd field overall, utime the 14th and stime the 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        return Some(utime + stime);
    }
    None
}

#[test]
fn clients_are_spread_over_the_loops_and_the_pool_keeps_its_connections() {
    let (user, pw) = private_account("thr_spread");
    let admin_port = free_port();
    let f = FunnelConfig::empty()
        .user(&user, &pw, &[])
        .funnel("threads = 2")
        .pool("connections = 4")
        .admin(admin_port, "adminpw")
        .rust_log("warn")
        .start();
    let pid = f.pid().expect("funnel pid");
    let mut clients: Vec<mysql::Conn> = (0..40).map(|_| f.conn(&user, &pw)).collect();
    let ids: HashSet<u64> = clients
        .iter_mut()
        .map(|c| one::<u64>(c, "SELECT CONNECTION_ID()"))
        .collect();
    assert_eq!(ids.len(), 40, "connection ids repeat across loops");
    assert_eq!(settle_backends(&user, 4), 4, "backend connections");
    // Each loop accepts, and hands a client over only when the other
    // has clearly fewer (two, and an eighth): the shares stay even. (Read
    // before the queries below, whose waits may move clients between the
    // loops: `balance.rs`.)
    let mut admin = admin_console(admin_port, "admin", "adminpw");
    let on_first = query(&mut admin, "SHOW CLIENTS")
        .iter()
        .filter(|r| r.get("event_loop").cloned().flatten().as_deref() == Some("1"))
        .count();
    assert!(
        (14..=26).contains(&on_first),
        "{on_first} of 40 clients on the first loop"
    );

    let before = thread_cpu(pid, "funnel-loop-1").expect("the second loop's thread");
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                for n in 0..200u64 {
                    let v: u64 = one(&mut c, &format!("SELECT {n} + {i}"));
                    assert_eq!(v, n + i as u64);
                }
                c
            })
        })
        .collect();
    let clients: Vec<mysql::Conn> = workers.into_iter().map(|t| t.join().unwrap()).collect();
    let after = thread_cpu(pid, "funnel-loop-1").expect("the second loop's thread");
    // 4,000 queries, about half on the second loop: well over one tick
    // (10 ms) of its CPU.
    assert!(
        after > before,
        "the second loop spent no CPU: it served no client"
    );
    // Still exactly the configured connections, never more.
    assert_eq!(backend_connections(&user), 4);

    // The admin side sees both loops: every client, the pool's whole
    // count of connections.
    let rows = query(&mut admin, "SHOW CLIENTS");
    assert_eq!(rows.len(), 40, "SHOW CLIENTS lists every loop's clients");
    let configured = common::admin::pool_counter(&mut admin, "SHOW POOLS", &user, "backends");
    assert_eq!(
        configured, 4,
        "SHOW POOLS: the pool's backends in all loops"
    );
    drop(clients);
}

#[test]
fn a_small_pool_is_served_by_one_loop_and_its_clients_move_there() {
    let (user, pw) = private_account("thr_small");
    let f = FunnelConfig::empty()
        .user(&user, &pw, &[])
        .funnel("threads = 2")
        .pool("connections = 1")
        .rust_log("warn")
        .start();
    // Half of them are accepted by the loop that does not serve the pool.
    let mut clients: Vec<mysql::Conn> = (0..20).map(|_| f.conn(&user, &pw)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.query_drop(format!("SET @mine = {i}, SESSION sql_mode = 'ANSI_QUOTES'"))
            .unwrap();
    }
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let (mine, mode): (u64, String) =
                        c.query_first("SELECT @mine, @@sql_mode").unwrap().unwrap();
                    assert_eq!(mine, i as u64);
                    assert_eq!(mode, "ANSI_QUOTES");
                }
            })
        })
        .collect();
    for t in workers {
        t.join().expect("client");
    }
    assert_eq!(settle_backends(&user, 1), 1, "backend connections");
}

#[test]
fn tls_clients_move_with_their_tls_session() {
    let (user, pw) = private_account("thr_tls");
    let ca = TestCa::new("threads");
    let cert = ca.localhost("funnel");
    let f = FunnelConfig::empty()
        .user(&user, &pw, &[])
        .funnel("threads = 2")
        .funnel(&format!(
            "tls_cert = {}\ntls_key = {}",
            cert.cert.display(),
            cert.key.display()
        ))
        .pool("connections = 1")
        .rust_log("warn")
        .start();
    let port = f.port;
    for _ in 0..6 {
        let out = std::process::Command::new(common::mariadb_client())
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{port}"),
                &format!("-u{user}"),
                &format!("-p{pw}"),
                "--ssl",
                &format!("--ssl-ca={}", ca.cert.display()),
                "--ssl-verify-server-cert",
                "--connect-timeout=10",
                "-e",
                "status; SELECT 40 + 2 AS answer",
            ])
            .output()
            .expect("mariadb CLI runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Cipher in use is"), "{text}");
        assert!(text.contains("42"), "{text}");
    }
}

#[test]
fn max_client_connections_holds_across_loops() {
    let f = FunnelConfig::user_a()
        .funnel("threads = 2\nmax_client_connections = 6")
        .pool("connections = 4")
        .rust_log("error")
        .start();
    let mut clients: Vec<mysql::Conn> = (0..6)
        .map(|_| f.conn(common::USER_A, common::PASS_A))
        .collect();
    for _ in 0..3 {
        let (code, _, msg) = server_error(f.try_conn(common::USER_A, common::PASS_A));
        assert_eq!(code, 1040, "{msg}");
    }
    clients.pop();
    // Its close reaches the loop that had it; then there is room again.
    assert!(common::wait_until(Duration::from_secs(5), || f
        .try_conn(common::USER_A, common::PASS_A)
        .map(|c| clients.push(c))
        .is_ok()));
    let (code, _, _) = server_error(f.try_conn(common::USER_A, common::PASS_A));
    assert_eq!(code, 1040);
}

#[test]
fn admin_commands_act_on_every_loop() {
    let (user, pw) = private_account("thr_admin");
    let admin_port = free_port();
    let f = FunnelConfig::empty()
        .user(&user, &pw, &[])
        .funnel("threads = 2")
        .pool("connections = 4\nqueue_timeout_ms = 20000")
        .admin(admin_port, "adminpw")
        .rust_log("warn")
        .start();
    let mut admin = admin_console(admin_port, "admin", "adminpw");
    let mut clients: Vec<mysql::Conn> = (0..6).map(|_| f.conn(&user, &pw)).collect();
    let ids: Vec<u64> = clients
        .iter_mut()
        .map(|c| one::<u64>(c, "SELECT CONNECTION_ID()"))
        .collect();

    // PAUSE holds every loop's commands; RESUME lets them all run.
    admin.query_drop("PAUSE").unwrap();
    let waiting: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            std::thread::spawn(move || {
                let asked = Instant::now();
                let v: u64 = one(&mut c, "SELECT 7");
                (v, asked.elapsed(), c)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    admin.query_drop("RESUME").unwrap();
    for t in waiting {
        let (v, took, c) = t.join().unwrap();
        assert_eq!(v, 7);
        assert!(took >= Duration::from_millis(500), "not paused: {took:?}");
        clients.push(c);
    }

    // KILL CLIENT finds a client whichever loop has it.
    for (c, id) in clients.iter_mut().zip(&ids) {
        admin.query_drop(format!("KILL CLIENT {id}")).unwrap();
        assert!(
            c.query_drop("SELECT 1").is_err(),
            "client {id} still served after KILL CLIENT"
        );
    }
    let unknown = admin.query_drop("KILL CLIENT 999999");
    assert!(unknown.is_err(), "an unknown id was killed");

    // RELOAD reaches every loop: 4 -> 6 connections, all opened (3 + 3).
    let config = FunnelConfig::empty()
        .user(&user, &pw, &[])
        .funnel("threads = 2")
        .pool("connections = 6\nqueue_timeout_ms = 20000")
        .admin(admin_port, "adminpw")
        .rust_log("warn")
        .text(f.port);
    f.write_config(&config);
    admin.query_drop("RELOAD").unwrap();
    assert_eq!(settle_backends(&user, 6), 6, "connections after RELOAD");
}

#[test]
fn sigterm_stops_every_loop() {
    let mut f = FunnelConfig::user_a()
        .funnel("threads = 2")
        .pool("connections = 4")
        .rust_log("warn")
        .start();
    let mut clients: Vec<mysql::Conn> = (0..8)
        .map(|_| f.conn(common::USER_A, common::PASS_A))
        .collect();
    for c in &mut clients {
        assert_eq!(one::<u64>(c, "SELECT 1"), 1);
    }
    let status = f.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    drop(clients);
}

#[test]
fn kill_and_the_process_list_reach_every_loop() {
    let f = FunnelConfig::new()
        .funnel("threads = 2")
        .pool("connections = 4")
        .rust_log("warn")
        .start();
    // The loops' client counts stay within two of each other: these four
    // are on both.
    let mut clients: Vec<mysql::Conn> = (0..4)
        .map(|_| f.conn(common::USER_A, common::PASS_A))
        .collect();
    let ids: Vec<u64> = clients
        .iter_mut()
        .map(|c| one::<u64>(c, "SELECT CONNECTION_ID()"))
        .collect();
    let mut listed: Vec<u64> = clients[0]
        .query::<mysql::Row, _>("SHOW PROCESSLIST")
        .unwrap()
        .iter()
        .map(|r| r.get::<u64, _>(0).unwrap())
        .collect();
    listed.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(listed, want, "SHOW PROCESSLIST lists both loops' clients");
    let mut from_table: Vec<u64> = clients[1]
        .query("SELECT ID FROM information_schema.PROCESSLIST ORDER BY ID")
        .unwrap();
    from_table.sort_unstable();
    assert_eq!(from_table, want, "information_schema.PROCESSLIST");

    // KILL QUERY of a statement running on the other loop, and of this
    // loop's: both interrupted at once.
    let mut killer = clients.remove(0);
    let mut victims = Vec::new();
    for (mut c, id) in clients.into_iter().zip(&ids[1..]) {
        let id = *id;
        let t = std::thread::spawn(move || {
            let asked = Instant::now();
            let r = c.query_drop("SELECT SLEEP(10)");
            (r, asked.elapsed(), c, id)
        });
        victims.push(t);
    }
    std::thread::sleep(Duration::from_millis(500));
    for id in &ids[1..] {
        killer.query_drop(format!("KILL QUERY {id}")).unwrap();
    }
    let mut survivors = Vec::new();
    for t in victims {
        let (r, took, c, id) = t.join().unwrap();
        // SLEEP answers 1 when killed (MariaDB), or the statement fails.
        let _ = r;
        assert!(
            took < Duration::from_secs(5),
            "client {id}: KILL QUERY took {took:?}"
        );
        survivors.push((c, id));
    }
    // KILL CONNECTION of each: gone, whichever loop had it; the killer's
    // query goes on after an OK in the same statement list.
    for (c, id) in &mut survivors {
        killer.query_drop(format!("KILL {id}")).unwrap();
        assert!(
            c.query_drop("SELECT 1").is_err(),
            "client {id} survived KILL"
        );
    }
    let (code, _, msg) = server_error(killer.query_drop("KILL 999999"));
    assert_eq!(code, 1094, "{msg}");

    // Another user's connection, without the privilege: refused (1095).
    let mut other = f.conn(common::USER_B, common::PASS_B);
    let other_id: u64 = one(&mut other, "SELECT CONNECTION_ID()");
    let mut mine = f.conn(common::USER_A, common::PASS_A);
    let r = mine.query_drop(format!("KILL {other_id}"));
    if let Err(e) = r {
        assert_eq!(common::sql::code_of(&e), Some(1095), "{e}");
    }
    // (funnel_a may have CONNECTION ADMIN on the test server; then it is
    // killed, as mysqld would.)
}

#[test]
fn a_reload_that_takes_a_pool_from_a_loop_moves_its_clients() {
    let (user, pw) = private_account("thr_shrink");
    let config = |connections: u32| {
        FunnelConfig::empty()
            .user(&user, &pw, &[])
            .funnel("threads = 2")
            .pool(&format!(
                "connections = {connections}\nqueue_timeout_ms = 3000"
            ))
            .rust_log("warn")
    };
    let f = config(4).start();
    // Both loops serve the pool (2 connections each); clients on both.
    let mut clients: Vec<mysql::Conn> = (0..6).map(|_| f.conn(&user, &pw)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.query_drop(format!("SET @n = {i}")).unwrap();
    }
    assert_eq!(settle_backends(&user, 4), 4);
    // Two connections: one loop serves the pool now. The other loop's
    // clients move with their next command, session and all.
    f.write_config(&config(2).text(f.port));
    f.signal(libc::SIGHUP);
    assert_eq!(settle_backends(&user, 2), 2, "connections after the reload");
    for (i, c) in clients.iter_mut().enumerate() {
        let n: u64 = one(c, "SELECT @n");
        assert_eq!(n, i as u64, "client {i} after the reload");
    }
}

/// One first-come first-served order across loops (`balance.rs`): a
/// loop whose connections all run long queries hands its waiting command
/// to the other loop, whose connections are idle, instead of letting it
/// wait for the long ones.
#[test]
fn a_command_waiting_behind_long_queries_runs_on_the_other_loops_idle_connection() {
    let (waited, moved) = behind_long_queries("thr_balance", None);
    assert!(
        waited < Duration::from_millis(2500),
        "the command waited {waited:?} for its own loop's connections (the sleeps end after about 3.5 s) while the other loop's were idle"
    );
    assert!(moved >= 1, "SHOW STATS counts no rebalanced command");
}

/// Query rules configured: a command no rule matches moves as without
/// rules (the other loop decides it alike); one a rule matched stays, its
/// rule's decision (here a concurrency slot) being its loop's.
#[test]
fn with_rules_only_commands_no_rule_matched_move() {
    let unmatched = "[rule elsewhere]\npattern = \"never_matches_this\"\nblock = \"no\"\n";
    let (waited, moved) = behind_long_queries("thr_bal_rule", Some(unmatched));
    assert!(
        waited < Duration::from_millis(2500) && moved >= 1,
        "no rule matched it, yet it waited {waited:?} for its own loop ({moved} moved)"
    );
    let matched = "[rule mine]\npattern = \"@mine\"\nmax_concurrency = 100\n";
    let (waited, moved) = behind_long_queries("thr_bal_ruled", Some(matched));
    assert_eq!(moved, 0, "a command a rule decided on was moved");
    assert!(
        waited > Duration::from_millis(2500),
        "it stayed, so it waited for its own loop's connections: {waited:?}"
    );
}

/// Two clients of one loop run `SLEEP(4)` on both of its connections; a
/// third client of that loop then executes a prepared statement. How long
/// that took, and the pool's `rebalanced` count (SHOW CLIENTS shows the
/// client on the other loop exactly when it moved).
fn behind_long_queries(name: &str, rules: Option<&str>) -> (Duration, u64) {
    let (user, pw) = private_account(name);
    let admin_port = free_port();
    let mut config = FunnelConfig::empty()
        .user(&user, &pw, &[])
        .funnel("threads = 2")
        // Two connections per loop.
        .pool("connections = 4")
        .admin(admin_port, "adminpw")
        .rust_log("warn");
    if let Some(rules) = rules {
        config = config.section(rules);
    }
    let f = config.start();
    assert_eq!(settle_backends(&user, 4), 4, "backend connections");
    let mut admin = admin_console(admin_port, "admin", "adminpw");
    // Three clients of one loop (SHOW CLIENTS says which loop each is on;
    // of six, one loop has three at least).
    let mut clients: Vec<(u64, mysql::Conn)> = (0..6)
        .map(|_| {
            let mut c = f.conn(&user, &pw);
            (one(&mut c, "SELECT CONNECTION_ID()"), c)
        })
        .collect();
    let loop_of = |admin: &mut mysql::Conn, id: u64| -> String {
        query(admin, "SHOW CLIENTS")
            .into_iter()
            .find(|r| r.get("id").cloned().flatten() == Some(id.to_string()))
            .and_then(|r| r.get("event_loop").cloned().flatten())
            .unwrap_or_else(|| panic!("SHOW CLIENTS has no client {id}"))
    };
    let first_loop = loop_of(&mut admin, clients[0].0);
    let mut same: Vec<mysql::Conn> = Vec::new();
    let mut _others: Vec<mysql::Conn> = Vec::new();
    for (id, c) in clients.drain(..) {
        if loop_of(&mut admin, id) == first_loop {
            same.push(c);
        } else {
            _others.push(c);
        }
    }
    if same.len() < 3 {
        std::mem::swap(&mut same, &mut _others);
    }
    assert!(
        same.len() >= 3,
        "the loops' clients: {} and {}",
        same.len(),
        _others.len()
    );
    for (i, c) in same.iter_mut().enumerate() {
        c.query_drop(format!("SET @mine = {i}")).unwrap();
    }
    let mut waiter = same.remove(2);
    let sleepers = [same.remove(0), same.remove(0)];
    // Its prepared statement goes with it, as at a restart's handoff.
    let stmt = waiter.prep("SELECT @mine + ?").unwrap();
    let waiter_id: u64 = one(&mut waiter, "SELECT CONNECTION_ID()");
    let sleepers: Vec<_> = sleepers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let slept: i64 = one(&mut c, "SELECT SLEEP(4)");
                assert_eq!(slept, 0);
            })
        })
        .collect();
    // Both of that loop's connections are taken by the sleeps.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mine: u64 = waiter.exec_first(&stmt, (10,)).unwrap().unwrap();
    let waited = started.elapsed();
    assert_eq!(mine, 12, "the client's session and statement");
    let moved = common::admin::pool_counter(&mut admin, "SHOW STATS", &user, "rebalanced");
    // SHOW CLIENTS says where it is now.
    let now_on = loop_of(&mut admin, waiter_id);
    assert_eq!(
        now_on != first_loop,
        moved > 0,
        "rebalanced {moved}, and the client is on loop {now_on} (was {first_loop})"
    );
    // Wherever it is now, its session and statement are with it.
    let again: u64 = one(&mut waiter, "SELECT @mine");
    assert_eq!(again, 2);
    let again: u64 = waiter.exec_first(&stmt, (20,)).unwrap().unwrap();
    assert_eq!(again, 22);
    for t in sleepers {
        t.join().expect("sleeper");
    }
    (waited, moved)
}

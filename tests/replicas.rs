//! Several backend servers (`[server NAME]`): commands are balanced over
//! the servers in rotation, a server that dies is left out without client
//! errors for reads that are safe to repeat, and with `read_write_split`
//! reads go to replicas and everything else to the primary, a client's
//! reads following its own writes. Real MariaDB servers throughout; the
//! split and health tests replicate with GTID (`common::replication`).

mod common;

use std::time::{Duration, Instant};

use common::replication::Replication;
use common::{FunnelConfig, MariaDb, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

/// How many of `n` concurrent clients' `rounds` reads each server ran, by
/// its port.
fn ports_serving(funnel: &common::FunnelProcess, n: usize, rounds: usize) -> BTreeMap<u16, usize> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let mut c = funnel.conn(USER_A, PASS_A);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut seen = Vec::new();
                for _ in 0..rounds {
                    let port: u16 = c
                        .query_first("SELECT @@port FROM (SELECT SLEEP(0.01)) AS s")
                        .expect("a read through the funnel")
                        .expect("one row");
                    seen.push(port);
                }
                seen
            })
        })
        .collect();
    let mut by_port = BTreeMap::new();
    for t in threads {
        for port in t.join().expect("client thread") {
            *by_port.entry(port).or_insert(0) += 1;
        }
    }
    by_port
}

#[test]
fn commands_are_balanced_over_servers_and_a_dead_one_is_left_out() {
    let a = MariaDb::new();
    let b = MariaDb::new();
    let funnel = FunnelConfig::new()
        .server("a", a.port, &[])
        .server("b", b.port, &[])
        .pool("connections = 4")
        .rust_log("warn")
        .start();

    // 8 clients, 4 connections per server: both servers serve, about
    // evenly (the least loaded server takes each command).
    let by_port = ports_serving(&funnel, 8, 25);
    let total: usize = by_port.values().sum();
    assert_eq!(total, 200);
    for port in [a.port, b.port] {
        let n = by_port.get(&port).copied().unwrap_or(0);
        assert!(
            n >= total / 4,
            "server on port {port} ran {n} of {total} reads: {by_port:?}"
        );
    }

    // Clients in transactions, one of them on server b.
    let mut in_tx: Vec<(mysql::Conn, u16)> = Vec::new();
    while !in_tx.iter().any(|(_, port)| *port == b.port) {
        assert!(in_tx.len() < 8, "no transaction landed on server b");
        let mut c = funnel.conn(USER_A, PASS_A);
        c.query_drop("BEGIN").unwrap();
        let port: u16 = c.query_first("SELECT @@port").unwrap().unwrap();
        in_tx.push((c, port));
    }

    // Server b dies: reads keep working, on a only, without an error
    // (a read whose connection died before its answer is run again).
    b.kill();
    let by_port = ports_serving(&funnel, 8, 10);
    assert_eq!(by_port.keys().copied().collect::<Vec<_>>(), [a.port]);
    assert_eq!(by_port.values().sum::<usize>(), 80);

    // The transaction on b is gone, and its client is told which server
    // went; those on a go on.
    for (mut c, port) in in_tx {
        let r = c.query_first::<u16, _>("SELECT @@port");
        if port == b.port {
            match r {
                Err(mysql::Error::MySqlError(e)) => {
                    assert_eq!(e.code, 2013, "{e:?}");
                    assert!(
                        e.message.contains("(server b: ")
                            && e.message.contains("transaction and state are gone"),
                        "{}",
                        e.message
                    );
                }
                other => panic!("a transaction on the dead server went on: {other:?}"),
            }
        } else {
            assert_eq!(r.unwrap(), Some(a.port));
            c.query_drop("COMMIT").unwrap();
        }
    }
}

#[test]
fn a_reload_adds_drains_and_removes_servers_without_dropping_clients() {
    let a = MariaDb::new();
    let b = MariaDb::new();
    let config = |servers: &[(&str, u16)]| {
        let mut f = FunnelConfig::new().pool("connections = 2").rust_log("info");
        for (name, port) in servers {
            f = f.server(name, *port, &[]);
        }
        f
    };
    let funnel = config(&[("a", a.port)]).start();
    let mut clients: Vec<mysql::Conn> = (0..6).map(|_| funnel.conn(USER_A, PASS_A)).collect();
    let ports = |clients: &mut Vec<mysql::Conn>| {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            for c in clients.iter_mut() {
                let port: u16 = c.query_first("SELECT @@port").unwrap().unwrap();
                seen.insert(port);
            }
        }
        seen.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(ports(&mut clients), [a.port]);

    let reload = |f: FunnelConfig, note: &str| {
        funnel.write_config(&f.text(funnel.port));
        funnel.signal(libc::SIGHUP);
        assert!(
            funnel.wait_for_log(note, Duration::from_secs(10)),
            "{}",
            funnel.log()
        );
    };
    // Server b added: it takes commands too.
    reload(config(&[("a", a.port), ("b", b.port)]), "server b added");
    assert!(common::wait_until(Duration::from_secs(10), || b
        .connections_of(USER_A)
        >= 2));
    let both = common::wait_until(Duration::from_secs(10), || {
        ports(&mut clients) == [a.port.min(b.port), a.port.max(b.port)]
    });
    assert!(both, "server b took no command after the reload");

    // Server a removed: its connections close, every command goes to b,
    // and no client notices.
    reload(config(&[("b", b.port)]), "server a removed");
    a.wait_connections(USER_A, 0, Duration::from_secs(10));
    assert_eq!(ports(&mut clients), [b.port]);
    let mut fresh = funnel.conn(USER_A, PASS_A);
    let port: u16 = fresh.query_first("SELECT @@port").unwrap().unwrap();
    assert_eq!(port, b.port);
}

#[test]
fn weights_share_the_commands() {
    let a = MariaDb::new();
    let b = MariaDb::new();
    let funnel = FunnelConfig::new()
        .server("heavy", a.port, &["weight = 300"])
        .server("light", b.port, &["weight = 100"])
        .pool("connections = 8")
        .rust_log("warn")
        .start();
    let by_port = ports_serving(&funnel, 8, 25);
    let heavy = by_port.get(&a.port).copied().unwrap_or(0);
    let light = by_port.get(&b.port).copied().unwrap_or(0);
    // 3:1 by weight; loose bounds, the point is the direction and rough size.
    assert!(
        heavy >= 2 * light && light > 0,
        "weights 300:100 gave {heavy}:{light}"
    );
}

/// A funnel in front of a primary and its replica, funnel_a splitting
/// reads from writes, checks every 100 ms, and a stats port.
fn split_funnel(set: &Replication, replica_lines: &[&str]) -> (common::FunnelProcess, u16) {
    let stats_port = common::free_port();
    let mut lines = vec!["role = replica"];
    lines.extend_from_slice(replica_lines);
    let funnel = FunnelConfig::empty()
        .user(USER_A, PASS_A, &["read_write_split = true"])
        .server("main", set.primary.port, &["role = primary"])
        .server("copy", set.replicas[0].port, &lines)
        .backend("server_check_interval_ms = 100\nconnect_timeout_ms = 1000")
        .backend("reconnect_backoff_min_ms = 50\nreconnect_backoff_max_ms = 200")
        .pool("connections = 2")
        .stats(stats_port)
        .rust_log("info")
        .start();
    (funnel, stats_port)
}

fn server_id(c: &mut mysql::Conn, sql: &str) -> u32 {
    c.query_first(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("one row")
}

/// Waits until `/health?server=NAME` answers `status`; its body.
fn wait_server_health(stats_port: u16, name: &str, status: u16) -> String {
    wait_server_health_saying(stats_port, name, status, "")
}

/// ... with a body that contains `words`.
fn wait_server_health_saying(stats_port: u16, name: &str, status: u16, words: &str) -> String {
    let mut last = (0, String::new());
    let ok = common::wait_until(Duration::from_secs(30), || {
        last = common::stats::get(stats_port, &format!("/health?server={name}"));
        last.0 == status && last.1.contains(words)
    });
    assert!(
        ok,
        "server {name} never answered {status} with {words:?}: {last:?}"
    );
    last.1
}

#[test]
fn read_write_split_routes_reads_to_the_replica_and_reads_follow_writes() {
    let set = Replication::start(1);
    set.primary.admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.rw_items (id INT PRIMARY KEY, v INT)"
    ));
    set.wait_caught_up(Duration::from_secs(30));
    let (funnel, stats_port) = split_funnel(&set, &[]);
    wait_server_health(stats_port, "copy", 200);

    let mut reader = funnel.conn(USER_A, PASS_A);
    let mut writer = funnel.conn(USER_A, PASS_A);
    // Reads go to the replica (server id 2), everything else to the primary.
    assert_eq!(server_id(&mut reader, "SELECT @@server_id"), 2);
    // Each server's figures: in rotation, its commands' service time.
    let metrics = common::stats::get(stats_port, "/metrics").1;
    for line in [
        "funnel_server_up{server=\"copy\",role=\"replica\"} 1",
        "funnel_server_up{server=\"main\",role=\"primary\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let served = metrics
        .lines()
        .find_map(|l| l.strip_prefix("funnel_server_service_seconds_count{server=\"copy\"} "))
        .and_then(|n| n.parse::<f64>().ok());
    assert!(served.is_some_and(|n| n >= 1.0), "{served:?}");
    reader.query_drop("BEGIN").unwrap();
    assert_eq!(
        server_id(&mut reader, "SELECT @@server_id"),
        1,
        "a read inside a transaction runs where the transaction does"
    );
    reader.query_drop("COMMIT").unwrap();
    // A COMMIT may have written: reads stay on the primary until a check
    // has seen the replica reach the primary's position after it.
    assert!(common::wait_until(Duration::from_secs(5), || server_id(
        &mut reader,
        "SELECT @@server_id"
    ) == 2));
    // The client's session goes with its reads: a user variable set on
    // the primary is there on the replica.
    reader.query_drop("SET @x = 5").unwrap();
    assert_eq!(server_id(&mut reader, "SELECT @@server_id + @x - 5"), 2);
    assert_eq!(
        server_id(&mut reader, "SELECT @@server_id FROM DUAL FOR UPDATE"),
        1,
        "a locking read is not a plain read"
    );
    assert_eq!(
        server_id(&mut reader, "SELECT @@server_id + 0 * GET_LOCK('rw', 0)"),
        1,
        "a lock is not a plain read"
    );
    reader.query_drop("DO RELEASE_LOCK('rw')").unwrap();

    // Read-your-writes with the replica 2 s behind: a client's reads after
    // its own write never miss it.
    set.set_replica_delay(0, Duration::from_secs(2));
    writer.query_drop(format!("USE {TEST_DB}")).unwrap();
    let mut rng = common::rng::Rng(common::rng::random_seed(15));
    let mut expected = 0u64;
    let started = Instant::now();
    for id in 0..10_000 {
        if id % 7 == 0 || rng.below(3) == 0 {
            writer
                .exec_drop("INSERT INTO rw_items VALUES (?, ?)", (id, id))
                .unwrap();
            expected += 1;
        }
        let seen: u64 = writer
            .query_first("SELECT COUNT(*) FROM rw_items")
            .unwrap()
            .unwrap();
        assert_eq!(seen, expected, "read {id} missed the client's own write");
    }
    eprintln!("10,000 reads after writes in {:?}", started.elapsed());
    // Another client that wrote nothing still reads from the replica,
    // stale as it is: that is what replicas are for.
    let mut bystander = funnel.conn(USER_A, PASS_A);
    assert_eq!(server_id(&mut bystander, "SELECT @@server_id"), 2);
    let replica_count: u64 = bystander
        .query_first(format!("SELECT COUNT(*) FROM {TEST_DB}.rw_items"))
        .unwrap()
        .unwrap();
    assert!(
        replica_count < expected,
        "the replica was not behind: {replica_count}"
    );

    // Once the replica has caught up, the writer's reads go back to it.
    set.set_replica_delay(0, Duration::ZERO);
    set.wait_caught_up(Duration::from_secs(30));
    let back = common::wait_until(Duration::from_secs(10), || {
        server_id(&mut writer, "SELECT @@server_id") == 2
    });
    assert!(back, "the writer's reads stayed on the primary");
}

#[test]
fn a_stopped_lagging_or_killed_replica_leaves_rotation_and_reads_go_on() {
    let set = Replication::start(1);
    set.primary.admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.lag_items (id INT PRIMARY KEY)"
    ));
    set.wait_caught_up(Duration::from_secs(30));
    let (funnel, stats_port) = split_funnel(&set, &["max_replication_lag_ms = 1000"]);
    wait_server_health(stats_port, "copy", 200);
    let mut c = funnel.conn(USER_A, PASS_A);
    assert_eq!(server_id(&mut c, "SELECT @@server_id"), 2);

    // Replication stopped: out, reads on the primary; started: back.
    set.stop_replica(0);
    let why = wait_server_health(stats_port, "copy", 503);
    assert!(why.contains("replication"), "{why}");
    assert_eq!(server_id(&mut c, "SELECT @@server_id"), 1);
    let (status, body) = common::stats::get(stats_port, "/health");
    assert_eq!(status, 200, "the host stays healthy: {body}");
    assert!(body.contains("server copy out of rotation"), "{body}");
    set.start_replica(0);
    wait_server_health(stats_port, "copy", 200);
    assert_eq!(server_id(&mut c, "SELECT @@server_id"), 2);
    // Both changes are logged, and counted.
    let log = funnel.log();
    assert!(
        log.contains("server copy (") && log.contains("out of rotation: replication stopped"),
        "{log}"
    );
    assert!(log.contains("back in rotation"), "{log}");
    let metrics = common::stats::get(stats_port, "/metrics").1;
    for change in ["out", "back"] {
        let line = format!(
            "funnel_server_rotation_changes_total{{server=\"copy\",change=\"{change}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }

    // Lagging beyond 1 s: out until it is back under 0.5 s.
    set.set_replica_delay(0, Duration::from_secs(4));
    let writes = std::thread::spawn({
        let mut w = set.primary.conn(USER_A, PASS_A);
        move || {
            for id in 0..40 {
                w.query_drop(format!("INSERT INTO {TEST_DB}.lag_items VALUES ({id})"))
                    .unwrap_or_else(|e| panic!("insert {id} on the primary: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    // (Changing the delay restarts replication: out for that first.)
    wait_server_health_saying(stats_port, "copy", 503, "lag");
    assert_eq!(server_id(&mut c, "SELECT @@server_id"), 1);
    writes.join().unwrap();
    set.set_replica_delay(0, Duration::ZERO);
    wait_server_health(stats_port, "copy", 200);

    // Killed under load: no client sees an error for its reads.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut r = funnel.conn(USER_A, PASS_A);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id: u32 = r
                        .query_first("SELECT @@server_id")
                        .unwrap_or_else(|e| panic!("read {n} failed: {e}"))
                        .unwrap();
                    assert!(id == 1 || id == 2);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    set.replicas[0].kill();
    let why = wait_server_health(stats_port, "copy", 503);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(reads > 100, "only {reads} reads");
    assert_eq!(server_id(&mut c, "SELECT @@server_id"), 1, "{why}");
}

/// The `[server]` example of the README's "Replicas" section, as written
/// there but for its addresses.
fn readme_example() -> String {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("### Replicas")
        .expect("README has ### Replicas")..];
    let start = section.find("```ini\n").expect("an ini block") + "```ini\n".len();
    let end = start + section[start..].find("```").expect("its end");
    section[start..end].to_string()
}

#[test]
fn the_readme_replicas_example_routes_as_documented() {
    let set = Replication::start(2);
    set.account("funnel_health", "health-pw", "SLAVE MONITOR ON *.*");
    set.account("app", "app-pw", &format!("ALL ON {TEST_DB}.*"));
    set.account("reports", "reports-pw", &format!("SELECT ON {TEST_DB}.*"));
    let port = common::free_port();
    let stats_port = common::free_port();
    let text = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\n\n[stats]\nlisten = 127.0.0.1:{stats_port}\n\n{}",
        readme_example()
    )
    .replace("10.0.0.11:3306", &format!("127.0.0.1:{}", set.primary.port))
    .replace(
        "10.0.0.12:3306",
        &format!("127.0.0.1:{}", set.replicas[0].port),
    )
    .replace(
        "10.0.0.13:3306",
        &format!("127.0.0.1:{}", set.replicas[1].port),
    );
    let funnel = common::FunnelProcess::start(&text, port);

    let mut app = funnel.conn("app", "app-pw");
    app.query_drop(format!("CREATE TABLE {TEST_DB}.readme_t (id INT)"))
        .unwrap();
    // A write goes to db1 (the replicas are read_only for app: 1290).
    app.query_drop(format!("INSERT INTO {TEST_DB}.readme_t VALUES (1)"))
        .unwrap();
    // Reads go to the replicas once they have the app's write.
    set.wait_caught_up(Duration::from_secs(30));
    let mut seen = std::collections::BTreeSet::new();
    let spread = common::wait_until(Duration::from_secs(10), || {
        seen.insert(server_id(&mut app, "SELECT @@server_id"));
        seen.contains(&2) && seen.contains(&3)
    });
    assert!(
        spread,
        "app's reads ran on {seen:?}: {}",
        common::stats::get(stats_port, "/stats.json").1
    );
    // reports uses the replicas only, for everything.
    let mut reports = funnel.conn("reports", "reports-pw");
    for _ in 0..10 {
        let id = server_id(&mut reports, "SELECT @@server_id");
        assert!(id == 2 || id == 3, "reports ran on server {id}");
    }
}

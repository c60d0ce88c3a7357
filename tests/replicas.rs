//! Several backend servers (`[server NAME]`): commands are balanced over
//! the servers in rotation, a server that dies is left out without client
//! errors for reads that are safe to repeat, and with `read_write_split`
//! reads go to replicas and everything else to the primary, a client's
//! reads following its own writes. Real MariaDB servers throughout; the
//! split and health tests replicate with GTID (`common::replication`).

mod common;

use common::{FunnelConfig, MariaDb, PASS_A, USER_A};
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

    // Server b dies: reads keep working, on a only, without an error
    // (a read whose connection died before its answer is run again).
    b.kill();
    let by_port = ports_serving(&funnel, 8, 10);
    assert_eq!(by_port.keys().copied().collect::<Vec<_>>(), [a.port]);
    assert_eq!(by_port.values().sum::<usize>(), 80);
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

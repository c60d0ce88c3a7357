//! `KILL QUERY <id>` must stop exactly the statement it names: never a
//! bystander whose statement runs next on the same backend connection.
//!
//! One shared backend; client A runs short statements in a loop, client K
//! kills A's query as fast as it can, client B runs its own statements on
//! the same backend. A may be interrupted (that is what K asks for); B
//! never may. Before the funnel held a killed statement's backend until
//! the KILL had landed, B was interrupted a few times in ten thousand.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{FunnelConfig, PASS_A, USER_A};
use mysql::prelude::Queryable;

const RUN_FOR: Duration = Duration::from_secs(4);
const ER_QUERY_INTERRUPTED: u16 = 1317;

#[test]
fn kill_query_never_reaches_a_bystander() {
    let f = FunnelConfig::user_a().pool("connections = 1").start();
    let mut a = f.conn(USER_A, PASS_A);
    let a_id: u64 = a
        .query_first("SELECT CONNECTION_ID()")
        .expect("connection id")
        .expect("a row");
    let stop = Arc::new(AtomicBool::new(false));
    let a_interrupted = Arc::new(AtomicU64::new(0));

    let victim = {
        let stop = stop.clone();
        let interrupted = a_interrupted.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match a.query_first::<u64, _>("SELECT SLEEP(0.001)") {
                    Ok(Some(0)) => {}
                    Ok(_) => {
                        interrupted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mysql::Error::MySqlError(e)) if e.code == ER_QUERY_INTERRUPTED => {
                        interrupted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("victim: {e}"),
                }
                n += 1;
            }
            n
        })
    };
    let killer = {
        let stop = stop.clone();
        let mut k = f.conn(USER_A, PASS_A);
        thread::spawn(move || {
            let mut kills = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k.query_drop(format!("KILL QUERY {a_id}"))
                    .expect("KILL QUERY");
                kills += 1;
            }
            kills
        })
    };
    let mut b = f.conn(USER_A, PASS_A);
    let started = Instant::now();
    let mut bystander_queries = 0u64;
    let mut bystander_interrupted = Vec::new();
    while started.elapsed() < RUN_FOR {
        // An interrupted SLEEP() returns 1 instead of 0; other statements
        // fail with 1317. The bystander sleeps longer than the victim so
        // that a KILL arriving late finds it running.
        match b.query_first::<u64, _>("SELECT SLEEP(0.003)") {
            Ok(Some(0)) => {}
            Ok(Some(1)) => bystander_interrupted.push(bystander_queries),
            Ok(other) => panic!("bystander got {other:?} for SELECT SLEEP(0.003)"),
            Err(mysql::Error::MySqlError(e)) if e.code == ER_QUERY_INTERRUPTED => {
                bystander_interrupted.push(bystander_queries);
            }
            Err(e) => panic!("bystander: {e}"),
        }
        bystander_queries += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let victim_queries = victim.join().expect("victim thread");
    let kills = killer.join().expect("killer thread");
    eprintln!(
        "{kills} kills, victim {victim_queries} statements ({} interrupted), bystander {bystander_queries} statements",
        a_interrupted.load(Ordering::Relaxed)
    );
    assert!(
        kills > 100 && bystander_queries > 50,
        "too little traffic to tell anything: {kills} kills, {bystander_queries} bystander statements"
    );
    assert!(
        bystander_interrupted.is_empty(),
        "KILL QUERY for client {a_id} interrupted a bystander {} times in {bystander_queries} statements",
        bystander_interrupted.len()
    );
}

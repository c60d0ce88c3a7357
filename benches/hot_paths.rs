//! Micro-benchmarks of the funnel's hot paths, with a tiny harness of our
//! own (no extra dependency, fast to build in CI).
//!
//! `cargo bench --bench hot_paths` runs them properly; under `cargo test`
//! (which passes no `--bench`) each runs a handful of iterations only, as a
//! smoke test that they still work.

use std::hint::black_box;
use std::time::{Duration, Instant};

use funnel::config::{Credential, UserConfig};
use funnel::protocol::consts::*;
use funnel::protocol::deprecate_eof::{EofAction, EofTranslator};
use funnel::protocol::packet::{next_frame, write_packet, HEADER_LEN};
use funnel::protocol::response::{encode_column_def, encode_eof, encode_text_row};
use funnel::protocol::tracker::{Expect, Progress, ResponseTracker};
use funnel::server::pool::{ClientRef, Pool, Request};
use funnel::server::session::SessionVars;
use funnel::server::statement::{query_facts, statement_facts};
use funnel::server::stats::Stats;

struct Bench {
    full: bool,
}

impl Bench {
    /// Run `f` (which does `ops` operations per call) for about a second and
    /// print the time per operation.
    fn run(&self, name: &str, ops: u64, mut f: impl FnMut()) {
        let budget = if self.full {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        f(); // warm-up
        let start = Instant::now();
        let mut calls = 0u64;
        // Check the clock every `batch` calls so that timing itself does
        // not dominate the cheapest operations.
        let batch = if ops == 1 { 1000 } else { 1 };
        loop {
            for _ in 0..batch {
                f();
            }
            calls += batch;
            if start.elapsed() >= budget && calls >= 3 {
                break;
            }
        }
        let per_op = start.elapsed().as_nanos() as f64 / (calls * ops) as f64;
        println!("{name:<48} {per_op:>10.1} ns/op  ({} ops)", calls * ops);
    }
}

/// A text result set of `rows` rows of ~120 bytes, as mysqld frames it.
fn result_set(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut p = Vec::new();
    let mut seq = write_packet(&mut out, 1, &[2]);
    for name in ["id", "c"] {
        p.clear();
        encode_column_def(&mut p, name, 0xfd, 45, 480, 0, 0);
        seq = write_packet(&mut out, seq, &p);
    }
    p.clear();
    encode_eof(&mut p, 0, SERVER_STATUS_AUTOCOMMIT);
    seq = write_packet(&mut out, seq, &p);
    let c = [b'x'; 120];
    for i in 0..rows {
        p.clear();
        let id = i.to_string();
        encode_text_row(&mut p, &[Some(id.as_bytes()), Some(&c)]);
        seq = write_packet(&mut out, seq, &p);
    }
    p.clear();
    encode_eof(&mut p, 0, SERVER_STATUS_AUTOCOMMIT);
    write_packet(&mut out, seq, &p);
    out
}

fn main() {
    let bench = Bench {
        full: std::env::args().any(|a| a == "--bench"),
    };

    // Framing and response tracking over a large result set: what the
    // funnel does per forwarded packet (no row is decoded or copied).
    let rows = 100_000;
    let rs = result_set(rows);
    bench.run("frame + track result set (per row)", rows as u64, || {
        let mut t = ResponseTracker::new(CLIENT_PROTOCOL_41);
        t.start(Expect::Query);
        let mut pos = 0;
        while let Some((h, _)) = next_frame(&rs[pos..]) {
            let payload = &rs[pos + HEADER_LEN..pos + h.total_len()];
            pos += h.total_len();
            if let Ok(Progress::Complete { .. }) = t.feed(payload) {
                break;
            }
        }
        black_box(pos);
    });

    // The same for a client with CLIENT_DEPRECATE_EOF: every packet also
    // gets its translation decision and renumbered sequence id.
    bench.run(
        "frame + track + DEPRECATE_EOF (per row)",
        rows as u64,
        || {
            let mut t = ResponseTracker::new(CLIENT_PROTOCOL_41);
            let mut x = EofTranslator::new(CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF);
            t.start(Expect::Query);
            let mut pos = 0;
            let mut seqs = 0u32;
            while let Some((h, _)) = next_frame(&rs[pos..]) {
                let payload = &rs[pos + HEADER_LEN..pos + h.total_len()];
                pos += h.total_len();
                let progress = t.feed(payload);
                if let Ok(EofAction::Pass) = x.translate(t.last_kind(), payload) {
                    seqs += u32::from(x.client_seq(h.seq));
                }
                if let Ok(Progress::Complete { .. }) = progress {
                    break;
                }
            }
            black_box((pos, seqs));
        },
    );

    // The dispatcher with 10,000 queued requests: enqueue, pop, expire.
    let user = UserConfig {
        name: "app".into(),
        credential: Credential::Plain("pw".into()),
        backend_user: "app".into(),
        backend_password: "pw".into(),
        connections: 8,
        backlog_size: 10_000,
        queue_timeout: Duration::from_secs(10),
        max_pinned_backends: 8,
        max_client_connections: 0,
        allowed_networks: Vec::new(),
        require_tls: false,
        servers: vec!["backend".into()],
        read_write_split: false,
        max_concurrency: None,
        rate: None,
    };
    let now = Instant::now();
    let mut pool = Pool::new(0, user, &[0], now);
    bench.run("backlog: enqueue + pop at depth 10,000", 10_000, || {
        for k in 0..10_000 {
            let _ = pool.enqueue(Request {
                client: ClientRef {
                    key: k,
                    serial: k as u64,
                },
                enqueued: now,
                moved: false,
            });
        }
        while let Some(r) = pool.pop() {
            black_box(r);
        }
    });
    for b in 0..8 {
        pool.list_idle(b, 0);
    }
    bench.run("idle backend choice among 8 (session match)", 1, || {
        let b = pool.pick_idle(|b| Some((0, u64::from(b == 3))));
        if let Some(b) = b {
            pool.unlist_idle(b, 0);
            pool.list_idle(b, 0);
        }
    });

    // Session-state diff and replay building.
    let mut client = SessionVars::new();
    client.set_var("character_set_client", "utf8mb4");
    client.set_var("character_set_connection", "utf8mb4");
    client.set_var("character_set_results", "utf8mb4");
    client.set_var("collation_connection", "utf8mb4_general_ci");
    let mut backend = client.clone();
    bench.run("session: fingerprint compare (no replay)", 1, || {
        black_box(client.fingerprint() == backend.fingerprint());
    });
    client.set_var("sql_mode", "ANSI_QUOTES");
    client.set_var("time_zone", "+02:00");
    backend.set_var("sql_select_limit", "10");
    bench.run("session: build replay SET (3 changes)", 1, || {
        black_box(client.replay_vars_sql(&backend));
    });

    // Stats recording on the hot path: three latency samples and the
    // query-shape lookup of one query.
    let mut stats = Stats::new(1);
    let t0 = Instant::now();
    let sql = b"SELECT c FROM sbtest1 WHERE id = 4711";
    bench.run("stats: record 3 latencies + query shape", 1, || {
        let shape = stats.query_shape(0, black_box(sql));
        stats.queue_wait(0, Duration::from_micros(120), t0);
        stats.service(0, Duration::from_micros(80), t0);
        stats.end_to_end(0, Duration::from_micros(230), t0);
        stats.query_done(0, shape, Duration::from_micros(80), false);
    });

    // The one scan of each COM_QUERY (the proven-or-dirty rule).
    let point = b"SELECT c FROM sbtest1 WHERE id = 4711";
    bench.run("statement facts: point select", 1, || {
        black_box(statement_facts(black_box(point)));
    });
    let busy = b"SELECT a.id, CONCAT(a.name, ' ', b.title), COUNT(*), MAX(b.at) FROM t1 a \
        JOIN t2 b ON b.a_id = a.id WHERE a.created > NOW() - INTERVAL 1 DAY AND b.kind IN (1, 2, 3) \
        GROUP BY a.id ORDER BY COUNT(*) DESC LIMIT 20";
    bench.run("statement facts: join with 5 function calls", 1, || {
        black_box(statement_facts(black_box(busy)));
    });

    // Everything the funnel reads of a COM_QUERY's text on its way to a
    // backend: the one scan (the facts, what the funnel answers itself, the
    // shape) and, when it goes to a backend, the stats' lookup of its shape.
    let typical: [&[u8]; 8] = [
        b"SELECT c FROM sbtest1 WHERE id=4711",
        b"SELECT `users`.* FROM `users` WHERE `users`.`id` = 1 LIMIT 1",
        b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5, 6, 'x', 'y')",
        b"UPDATE sbtest1 SET k=k+1 WHERE id=5",
        b"SET NAMES utf8mb4",
        b"SELECT LAST_INSERT_ID()",
        b"/* app:42 */ SELECT a, b FROM t WHERE x IN (1, 2, 3) AND y = 'it''s'",
        busy,
    ];
    let mut shape = Vec::with_capacity(2048);
    for sql in typical {
        let name = String::from_utf8_lossy(&sql[..sql.len().min(28)]).into_owned();
        bench.run(&format!("COM_QUERY text: {name}"), 1, || {
            let sql = black_box(sql);
            let f = query_facts(sql, &mut shape);
            if f.answered.is_none() {
                black_box(stats.query_shape_hashed(0, f.shape, sql));
            }
            black_box(f);
        });
    }
}

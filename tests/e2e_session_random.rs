//! Randomized interleaving: hundreds of clients share two backend
//! connections; each runs a random mix of session-changing statements, and
//! after every step its answer through the funnel must equal the answer of
//! its twin, a direct connection to mysqld that ran the same statements.

mod common;

use common::{FunnelProcess, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, Row, Value};

const CLIENTS: usize = 200;
const STEPS: usize = 3000;

/// A tiny deterministic PRNG (xorshift64*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn values(row: Option<Row>) -> Vec<Value> {
    row.map(|r| r.unwrap()).unwrap_or_default()
}

/// The statements a step may run; `{n}` is a random number.
const CHANGES: &[&str] = &[
    "SET @v = {n}",
    "SET @s = CONCAT('client-', {n})",
    "SET @d = {n} / 7",
    "SET @v = NULL",
    "SET sql_mode = 'ANSI_QUOTES'",
    "SET sql_mode = DEFAULT",
    "SET time_zone = '+0{d}:00'",
    "SET time_zone = DEFAULT",
    "SET NAMES latin1",
    "SET NAMES utf8mb4",
    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
    "SET autocommit = 0",
    "SET autocommit = 1",
    "SET group_concat_max_len = 1{n}",
    "SET sql_select_limit = {d}0",
    "USE mysql",
    "USE funnel_test",
    "SET @a = {n}, sql_mode = 'NO_ZERO_DATE'",
    "SELECT @x := {n}",
    "COMMIT",
];

const PROBE: &str = "SELECT @v, @s, @d, @a, @x, @@sql_mode, @@time_zone, \
    @@character_set_client, @@character_set_connection, @@character_set_results, \
    @@collation_connection, @@autocommit, @@group_concat_max_len, @@sql_select_limit, \
    DATABASE(), @@in_transaction";

#[test]
fn random_session_mixes_answer_as_direct_connections_do() {
    let db = common::mariadb();
    let port = common::free_port();
    // autocommit = 0 makes the next statement open a transaction, which
    // pins its client (as a direct connection holds it): allow all of them.
    let cfg = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\nmax_client_connections = 1000\n\n\
         [backend]\naddress = 127.0.0.1:{}\n\n[pool]\nconnections = 2\nmax_pinned_backends = 250\n\n\
         [user \"{USER_A}\"]\npassword = \"{PASS_A}\"\n",
        db.port
    );
    let funnel = FunnelProcess::builder(&cfg)
        .port(port)
        .rust_log("warn")
        .start();
    let seed = std::env::var("FUNNEL_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let mut rng = Rng(seed | 1);
    let mut pairs: Vec<(Conn, Conn)> = (0..CLIENTS)
        .map(|_| {
            let mut f = funnel.conn(USER_A, PASS_A);
            let mut d = db.conn(USER_A, PASS_A);
            f.query_drop(format!("USE {TEST_DB}")).expect("funnel USE");
            d.query_drop(format!("USE {TEST_DB}")).expect("direct USE");
            (f, d)
        })
        .collect();
    for step in 0..STEPS {
        let i = rng.below(CLIENTS);
        let n = rng.below(1000);
        let sql = CHANGES[rng.below(CHANGES.len())]
            .replace("{n}", &n.to_string())
            .replace("{d}", &(n % 9 + 1).to_string());
        let (f, d) = &mut pairs[i];
        let rf = f
            .query_iter(&sql)
            .map(|mut r| r.next().transpose().ok().flatten().map(|r| r.unwrap()));
        let rd = d
            .query_iter(&sql)
            .map(|mut r| r.next().transpose().ok().flatten().map(|r| r.unwrap()));
        assert_eq!(
            rf.is_ok(),
            rd.is_ok(),
            "seed {seed} step {step} client {i}: {sql}: funnel {rf:?} direct {rd:?}"
        );
        // Every few steps, and always after a statement, probe the session
        // of this client and of another one chosen at random.
        for j in [i, rng.below(CLIENTS)] {
            let (f, d) = &mut pairs[j];
            let pf = values(f.query_first(PROBE).expect("funnel probe"));
            let pd = values(d.query_first(PROBE).expect("direct probe"));
            assert_eq!(
                pf, pd,
                "seed {seed} step {step}: client {j} after client {i} ran {sql}: funnel session differs from direct"
            );
        }
    }
}

//! Randomized interleaving: hundreds of clients share two backend
//! connections; each runs a random mix of session-changing statements, and
//! after every step its answer through the funnel must equal the answer of
//! its twin, a direct connection to mysqld that ran the same statements.
//!
//! Besides plain `SET`s the mix has statements that change the session
//! behind the funnel's back (stored functions, a trigger, `EXECUTE
//! IMMEDIATE`), leave diagnostics (warnings, `ROW_COUNT()`), and take named
//! locks. Locks are server-global, so the funnel clients and their twins use
//! separate lock names (`rnd_f_K` and `rnd_d_K`, shared by the clients of
//! each side, so contention is mirrored exactly).

mod common;

use common::rng::{random_seed, Rng};
use common::{FunnelConfig, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, Row, Value};

const CLIENTS: usize = 200;
const STEPS: usize = 3000;
/// Clients whose index is a multiple of this run the lock statements.
const LOCKERS: usize = 8;

/// A probe row as (column, value) pairs, so a failure names what differs.
fn values(row: Option<Row>) -> Vec<(String, Value)> {
    let Some(row) = row else { return Vec::new() };
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    names.into_iter().zip(row.unwrap()).collect()
}

/// All rows of a statement's answer, or its error code.
fn answer(c: &mut Conn, sql: &str) -> Result<Vec<Vec<Value>>, String> {
    c.query::<Row, _>(sql)
        .map(|rows| rows.into_iter().map(|r| r.unwrap()).collect())
        .map_err(|e| match e {
            mysql::Error::MySqlError(m) => format!("ERR {}", m.code),
            other => format!("client error: {other}"),
        })
}

/// Stored functions and a trigger the statement mix uses. Both sides
/// insert into the trigger's table: it has no AUTO_INCREMENT, whose ids
/// (and so LAST_INSERT_ID()) would differ between them.
const FIXTURE: &str = "
    CREATE OR REPLACE FUNCTION funnel_test.rnd_set_limit(n INT) RETURNS INT
      BEGIN SET SESSION sql_select_limit = n; RETURN n; END;
    CREATE OR REPLACE FUNCTION funnel_test.rnd_set_tz() RETURNS INT
      BEGIN SET SESSION time_zone = '+04:00'; RETURN 4; END;
    CREATE OR REPLACE FUNCTION funnel_test.rnd_set_uvar(n INT) RETURNS INT
      BEGIN SET @fv = n; RETURN n; END;
    CREATE OR REPLACE FUNCTION funnel_test.rnd_take(name VARCHAR(64)) RETURNS INT
      RETURN GET_LOCK(name, 0);
    CREATE OR REPLACE TABLE funnel_test.rnd_trg (c INT);
    CREATE TRIGGER funnel_test.rnd_trg_ai AFTER INSERT ON funnel_test.rnd_trg
      FOR EACH ROW SET @trig = NEW.c;
";

/// The statements a step may run; `{n}` is a random number, `{d}` a digit
/// (1-9), `{lock}` one of three lock names of the client's side, `{self}`
/// the connection's own id.
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
    "SELECT {n} INTO @x",
    "COMMIT",
    "SELECT 1/0",
    "SELECT CAST('x{n}' AS INT)",
    "SHOW WARNINGS",
    "SHOW COUNT(*) WARNINGS",
    "SELECT funnel_test.rnd_set_limit({d})",
    "SELECT funnel_test.rnd_set_tz()",
    "SELECT funnel_test.rnd_set_uvar({n})",
    "INSERT INTO funnel_test.rnd_trg (c) VALUES ({n})",
    "EXECUTE IMMEDIATE 'SET @ei = {n}'",
    "EXECUTE IMMEDIATE 'SET SESSION sql_select_limit = {d}0'",
    "SELECT GET_LOCK('{lock}', 0)",
    "SELECT funnel_test.rnd_take('{lock}')",
    "EXECUTE IMMEDIATE 'SELECT GET_LOCK(''{lock}'', 0)'",
    "SELECT RELEASE_LOCK('{lock}')",
    "SELECT RELEASE_ALL_LOCKS()",
    "SELECT ROW_COUNT()",
    "SELECT COUNT(*) >= 0 FROM funnel_test.rnd_trg",
    "GET DIAGNOSTICS CONDITION 1 @gm = MESSAGE_TEXT",
    // Errors the funnel answers itself (ERR 1317 and 1094): the
    // diagnostics area must hold them as mysqld's would.
    "KILL QUERY {self}",
    "KILL QUERY 987654321",
    // Session objects: a temporary table (its AUTO_INCREMENT ids are the
    // session's own: LAST_INSERT_ID() compares), SQL prepared statements,
    // found rows, the isolation level, a transaction, SET STATEMENT. (Not
    // MAX(id) of it: an index lookup finding no row leaves FOUND_ROWS() as
    // it was on mysqld, which the funnel does not follow: README.)
    "CREATE TEMPORARY TABLE IF NOT EXISTS rnd_tmp (id INT AUTO_INCREMENT PRIMARY KEY, a INT)",
    "INSERT INTO rnd_tmp (a) VALUES ({n})",
    "SELECT COUNT(*), SUM(id) FROM rnd_tmp",
    "DROP TEMPORARY TABLE IF EXISTS rnd_tmp",
    "SELECT LAST_INSERT_ID()",
    "SELECT LAST_INSERT_ID({n})",
    "PREPARE rnd_ps FROM 'SELECT ? + {d}, @v'",
    "EXECUTE rnd_ps USING {n}",
    "DEALLOCATE PREPARE rnd_ps",
    "SELECT ROW_COUNT() + 0, {d}",
    "SELECT SQL_CALC_FOUND_ROWS a FROM rnd_tmp LIMIT 1",
    "SELECT FOUND_ROWS()",
    "SELECT FOUND_ROWS() + {d}, ROW_COUNT() - {d}",
    "SELECT {d} UNION SELECT {n} UNION SELECT 0",
    "DO {d}",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "BEGIN",
    "ROLLBACK",
    "SET STATEMENT sql_select_limit = 1 FOR SELECT {d} UNION SELECT {n}",
];

/// `{side}` is `f` (funnel) or `d` (direct twin). `@@warning_count` and
/// `FOUND_ROWS()` are those of the client's previous statement. (`ROW_COUNT()`
/// is not probed: after an `INSERT` only the backend that ran it has it; it
/// is compared where the mix runs it.)
const PROBE: &str = "SELECT @@warning_count, FOUND_ROWS(), @gm, @v, @s, @d, @a, @x, @fv, @trig, @ei, \
    @@sql_mode, @@time_zone, @@tx_isolation, \
    @@character_set_client, @@character_set_connection, @@character_set_results, \
    @@collation_connection, @@autocommit, @@group_concat_max_len, @@sql_select_limit, \
    DATABASE(), @@in_transaction, IS_USED_LOCK('rnd_{side}_0') IS NOT NULL AS lock0, \
    IS_USED_LOCK('rnd_{side}_1') IS NOT NULL AS lock1, IS_USED_LOCK('rnd_{side}_2') IS NOT NULL AS lock2";

fn probe(side: char) -> String {
    PROBE.replace("{side}", &side.to_string())
}

#[test]
fn random_session_mixes_answer_as_direct_connections_do() {
    let db = common::mariadb();
    common::admin_sql(FIXTURE);
    // autocommit = 0 makes the next statement open a transaction, which
    // pins its client (as a direct connection holds it): allow all of them.
    let funnel = FunnelConfig::user_a()
        .funnel("max_client_connections = 1000")
        .pool("connections = 2\nmax_pinned_backends = 250")
        .rust_log("warn")
        .start();
    let seed = random_seed(0x5eed_f00d_u64);
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
    // Each client's statements so far (the probes between them left out),
    // for a failure's message.
    let mut history: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    for step in 0..STEPS {
        let mut i = rng.below(CLIENTS);
        let n = rng.below(1000);
        let lock = rng.below(3);
        let template = CHANGES[rng.below(CHANGES.len())];
        if template.contains("{lock}") {
            // A named lock pins its client until RELEASE_ALL_LOCKS: only
            // every LOCKERS-th client takes locks, which keeps the number of
            // pinned backends (and the run time) down.
            i -= i % LOCKERS;
        }
        let sql = template
            .replace("{n}", &n.to_string())
            .replace("{d}", &(n % 9 + 1).to_string());
        let (f, d) = &mut pairs[i];
        let sql_f = sql
            .replace("{lock}", &format!("rnd_f_{lock}"))
            .replace("{self}", &f.connection_id().to_string());
        let sql_d = sql
            .replace("{lock}", &format!("rnd_d_{lock}"))
            .replace("{self}", &d.connection_id().to_string());
        let rf = answer(f, &sql_f);
        let rd = answer(d, &sql_d);
        assert_eq!(
            rf,
            rd,
            "seed {seed} step {step} client {i}: {sql_f}: funnel answer differs from direct (its statements before: {:?})",
            &history[i]
        );
        history[i].push(sql_f.clone());
        // Every few steps, and always after a statement, probe the session
        // of this client and of another one chosen at random.
        for j in [i, rng.below(CLIENTS)] {
            let (f, d) = &mut pairs[j];
            let pf = values(f.query_first(probe('f')).expect("funnel probe"));
            let pd = values(d.query_first(probe('d')).expect("direct probe"));
            assert_eq!(
                pf,
                pd,
                "seed {seed} step {step}: client {j} after client {i} ran {sql}: funnel session differs from direct (its statements: {:?})",
                &history[j]
            );
        }
    }
}

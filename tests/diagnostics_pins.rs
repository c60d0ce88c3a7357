//! Warnings keep their client's backend for the `SHOW WARNINGS` that may
//! follow, but never at the price of state that must not be lost: when the
//! pinned allowance is full, warnings give way (to a transaction, or to
//! nothing), and no client gets an error for it.

mod common;

use common::{FunnelConfig, FunnelProcess, PASS_A, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, Row};

fn start(pool: &str) -> FunnelProcess {
    FunnelConfig::user_a().pool(pool).start()
}

fn warnings(c: &mut Conn) -> Vec<(String, u32, String)> {
    c.query::<Row, _>("SHOW WARNINGS")
        .expect("SHOW WARNINGS")
        .into_iter()
        .map(mysql::from_row::<(String, u32, String)>)
        .collect()
}

#[test]
fn warnings_are_shown_to_their_client_only() {
    let f = start("connections = 1\nmax_pinned_backends = 4");
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut b = f.conn_after_use(USER_A, PASS_A);
    a.query_drop("SELECT 1/0").expect("1/0");
    assert!(warnings(&mut b).is_empty(), "B saw A's warnings");
    b.query_drop("SELECT CAST('x' AS INT)").expect("cast");
    let wa = warnings(&mut a);
    assert_eq!(wa.len(), 1, "A's own warnings: {wa:?}");
    assert_eq!(wa[0].1, 1365, "division by 0: {wa:?}");
    let wb = warnings(&mut b);
    assert_eq!(wb.len(), 1, "B's own warnings: {wb:?}");
    assert_eq!(wb[0].1, 1292, "truncated value: {wb:?}");
    // After a statement without warnings, the pin ends; another client's
    // SHOW WARNINGS on that backend still sees nothing of A's.
    a.query_drop("SELECT 1").expect("select 1");
    let mut c = f.conn_after_use(USER_A, PASS_A);
    assert!(warnings(&mut c).is_empty(), "C saw someone's warnings");
    let count: Option<u32> = c.query_first("SELECT @@warning_count").expect("count");
    assert_eq!(count, Some(0));
}

#[test]
fn warnings_give_way_to_a_transaction_when_pins_run_out() {
    let f = start("connections = 1\nmax_pinned_backends = 2");
    let t = common::unique_name("diag_tx");
    let mut setup = f.conn_after_use(USER_A, PASS_A);
    setup
        .query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .expect("create");
    // Two idle clients hold the whole allowance with their warnings.
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut b = f.conn_after_use(USER_A, PASS_A);
    a.query_drop("SELECT 1/0").expect("a 1/0");
    b.query_drop("SELECT 1/0").expect("b 1/0");
    // A transaction still gets its backend and keeps it to the end.
    let mut c = f.conn_after_use(USER_A, PASS_A);
    c.query_drop("BEGIN").expect("begin");
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .expect("insert");
    c.query_drop(format!("INSERT INTO {t} VALUES (2)"))
        .expect("insert 2");
    c.query_drop("COMMIT").expect("commit");
    let n: Option<u32> = setup
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .expect("count");
    assert_eq!(n, Some(2));
    // A client whose statement has warnings while no pin is free gets its
    // answer, no error; its warnings may be gone, but never someone else's.
    let mut d = f.conn_after_use(USER_A, PASS_A);
    d.query_drop("BEGIN").expect("d begin");
    let mut e = f.conn_after_use(USER_A, PASS_A);
    e.query_drop("BEGIN").expect("e begin");
    e.query_drop(format!("SELECT * FROM {t} FOR UPDATE"))
        .expect("e lock");
    d.query_drop(format!("SELECT * FROM {t}")).expect("d read");
    let mut g = f.conn_after_use(USER_A, PASS_A);
    g.query_drop("SELECT 1/0").expect("g 1/0 answered");
    let wg = warnings(&mut g);
    assert!(
        wg.iter().all(|w| w.1 == 1365),
        "G must see its own warning or none: {wg:?}"
    );
    d.query_drop("COMMIT").expect("d commit");
    e.query_drop("COMMIT").expect("e commit");
    setup.query_drop(format!("DROP TABLE {t}")).expect("drop");
}

/// A statement that would surely pin (here a temporary table) while the
/// pinned allowance is full is refused before it runs, with a clear error,
/// instead of being run and its state discarded: the connection stays
/// usable, and the same statement works once a pin is free.
#[test]
fn a_statement_that_would_pin_is_refused_when_no_pin_is_free() {
    let f = start("connections = 1\nmax_pinned_backends = 1");
    let tmp = common::unique_name("pin_tmp");
    let mut a = f.conn_after_use(USER_A, PASS_A);
    a.query_drop("BEGIN").expect("begin");
    a.query_drop("SELECT 1").expect("a holds the only pin");
    let mut b = f.conn_after_use(USER_A, PASS_A);
    let err = b
        .query_drop(format!("CREATE TEMPORARY TABLE {tmp} (x INT)"))
        .expect_err("no pin is free");
    let mysql::Error::MySqlError(e) = err else {
        panic!("expected a server error, got {err}");
    };
    assert_eq!(e.code, 1040, "{e:?}");
    assert!(
        e.message.contains("max_pinned_backends = 1") && e.message.contains("was not run"),
        "{}",
        e.message
    );
    // Usable, and the statement really did not run.
    assert_eq!(b.query_first::<u32, _>("SELECT 7").unwrap(), Some(7));
    let missing = b
        .query_drop(format!("SELECT * FROM {tmp}"))
        .expect_err("no table");
    assert!(
        matches!(missing, mysql::Error::MySqlError(ref e) if e.code == 1146),
        "{missing}"
    );
    // Once the pin is free, the same statement runs and pins B.
    a.query_drop("COMMIT").expect("commit");
    b.query_drop(format!("CREATE TEMPORARY TABLE {tmp} (x INT)"))
        .expect("a pin is free now");
    b.query_drop(format!("INSERT INTO {tmp} VALUES (1)"))
        .unwrap();
    assert_eq!(
        b.query_first::<u32, _>(format!("SELECT COUNT(*) FROM {tmp}"))
            .unwrap(),
        Some(1)
    );
}

/// A multi-statement query whose warnings come from a statement before the
/// last: mysqld's last OK/EOF counts only the last statement's warnings
/// (0 here), but the diagnostics area keeps the earlier statement's, as a
/// direct connection shows. Those are the client's own (it keeps them, or
/// they give way when no pin is free) and no other client may see them.
#[test]
fn warnings_of_an_earlier_statement_of_a_query_stay_with_their_client() {
    const QUERY: &str = "SELECT 1/0 AS w; SELECT 1";
    // As on mysqld: the last statement reports no warnings, yet they are there.
    let mut direct = common::mysql_direct(USER_A, PASS_A);
    direct.query_drop(QUERY).expect("direct query");
    assert_eq!(direct.warnings(), 0, "the last statement's own count");
    let wd = warnings(&mut direct);
    assert_eq!(wd.len(), 1, "direct: {wd:?}");
    assert_eq!(wd[0].1, 1365, "direct: {wd:?}");
    for pins in [4, 0] {
        let f = start(&format!("connections = 1\nmax_pinned_backends = {pins}"));
        let mut a = f.conn_after_use(USER_A, PASS_A);
        let mut b = f.conn_after_use(USER_A, PASS_A);
        a.query_drop(QUERY).expect("a query");
        let wb = warnings(&mut b);
        assert!(
            wb.is_empty(),
            "max_pinned_backends = {pins}: B saw A's warnings: {wb:?}"
        );
        let count: Option<u32> = b.query_first("SELECT @@warning_count").expect("count");
        assert_eq!(count, Some(0), "max_pinned_backends = {pins}");
        let wa = warnings(&mut a);
        if pins > 0 {
            // A kept its backend for them, as a direct connection shows.
            assert_eq!(wa, wd, "max_pinned_backends = {pins}: A's own warnings");
        } else {
            // No pin to keep them: they gave way (never someone else's).
            assert!(wa.is_empty(), "max_pinned_backends = {pins}: {wa:?}");
        }
    }
}

/// An error replaces the diagnostics area, whoever's warnings it held: on
/// mysqld, `SHOW WARNINGS` after a failed prepare shows that error only.
/// Through the funnel, with another client's warnings left on the only
/// backend (no pin to keep them), the failed prepare's client sees its own
/// error, as directly, and nothing of the other client's.
#[test]
fn a_failed_prepare_shows_its_own_error_only() {
    let missing = common::unique_name("diag_missing");
    let sql = format!("SELECT * FROM {missing}");
    let mut direct = common::mysql_direct(USER_A, PASS_A);
    direct.query_drop("SELECT 1/0").expect("direct 1/0");
    direct.prep(&sql).expect_err("direct: no table");
    let wd = warnings(&mut direct);
    assert_eq!(wd.len(), 1, "direct: {wd:?}");
    assert_eq!(wd[0].1, 1146, "direct: {wd:?}");
    let f = start("connections = 1\nmax_pinned_backends = 0");
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut b = f.conn_after_use(USER_A, PASS_A);
    a.query_drop("SELECT 1/0").expect("a 1/0");
    b.prep(&sql).expect_err("no table");
    let wb = warnings(&mut b);
    assert_eq!(wb.len(), 1, "{wb:?}");
    assert_eq!(wb[0].1, 1146, "B's own error only: {wb:?}");
}

/// A statement's rows as text, or its error (code, SQLSTATE, message).
type Answer = Result<Vec<Vec<Option<String>>>, (u16, String, String)>;

fn answer(c: &mut Conn, sql: &str) -> Answer {
    match c.query::<Row, _>(sql) {
        Ok(rows) => Ok(rows
            .into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql::Value::NULL => None,
                        mysql::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                        other => Some(format!("{other:?}")),
                    })
                    .collect()
            })
            .collect()),
        Err(mysql::Error::MySqlError(e)) => Err((e.code, e.state, e.message)),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Errors the funnel answers itself (here a `KILL` of no connection, of
/// the client's own statement, and a refusing rule) stay in the
/// diagnostics area as mysqld's errors do: `SHOW WARNINGS`, the counts,
/// `GET DIAGNOSTICS` and `ROW_COUNT()` read them until a statement that
/// uses a table, and no other client sees them.
#[test]
fn the_funnels_own_errors_are_in_the_diagnostics_area_as_mysqlds_are() {
    let db = common::mariadb();
    let f = FunnelConfig::user_a()
        .pool("connections = 1\nmax_pinned_backends = 4")
        .section("[rule no_drops]\npattern = \"(?i)^\\\\s*drop\\\\b\"\nblock = \"funnel: DROP is not allowed here\"\n")
        .start();
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut b = f.conn_after_use(USER_A, PASS_A);
    let mut direct = db.conn(USER_A, PASS_A);
    let script = [
        "KILL QUERY 987654321",
        "SHOW WARNINGS",
        "SELECT @@warning_count, @@error_count",
        "SELECT 1",
        "SET @x = 1",
        "SHOW ERRORS",
        "GET DIAGNOSTICS CONDITION 1 @s = RETURNED_SQLSTATE, @n = MYSQL_ERRNO, @m = MESSAGE_TEXT",
        "SELECT @s, @n, @m, ROW_COUNT()",
        "KILL QUERY {self}",
        "SHOW COUNT(*) ERRORS",
        "SHOW WARNINGS",
        "SELECT COUNT(*) >= 0 FROM information_schema.ENGINES",
        "SHOW WARNINGS",
        "SELECT @@warning_count",
    ];
    for (step, sql) in script.iter().enumerate() {
        let on_a = sql.replace("{self}", &a.connection_id().to_string());
        let on_direct = sql.replace("{self}", &direct.connection_id().to_string());
        let got = answer(&mut a, &on_a);
        assert_eq!(
            got,
            answer(&mut direct, &on_direct),
            "step {step}: {sql}: through the funnel and directly"
        );
        if step == 1 {
            assert!(!got.unwrap().is_empty(), "the script shows an error");
            // A's error is on the backend now: B (with nothing of its
            // own) still sees nothing.
            assert_eq!(
                answer(&mut b, "SHOW WARNINGS"),
                Ok(Vec::new()),
                "B saw A's error"
            );
            assert_eq!(
                answer(&mut b, "SELECT @@warning_count"),
                Ok(vec![vec![Some("0".into())]])
            );
        }
    }
    // An error no mysqld would give: the rule's refusal.
    let refused = answer(&mut a, "DROP TABLE IF EXISTS no_such_table");
    assert_eq!(
        refused,
        Err((
            1290,
            "HY000".into(),
            "funnel: DROP is not allowed here".into()
        ))
    );
    let row = |level: &str, code: &str, message: &str| {
        vec![
            Some(level.to_string()),
            Some(code.to_string()),
            Some(message.to_string()),
        ]
    };
    assert_eq!(
        answer(&mut b, "SELECT 1 FROM DUAL").map(|r| r.len()),
        Ok(1),
        "B runs in between"
    );
    assert_eq!(
        answer(&mut a, "SHOW WARNINGS"),
        Ok(vec![row(
            "Error",
            "1290",
            "funnel: DROP is not allowed here"
        )])
    );
    // A reset empties it, as on mysqld.
    a.reset().expect("reset");
    assert_eq!(answer(&mut a, "SHOW WARNINGS"), Ok(Vec::new()));
}

/// `FOUND_ROWS()` and `ROW_COUNT()` say what the client's own previous
/// statement left, as on a direct connection, though another client's
/// statements ran on the one shared backend in between (and the funnel's
/// own steps): as standalone `SELECT`s the funnel answers, and inside
/// expressions, after `SQL_CALC_FOUND_ROWS`, under `sql_select_limit`
/// and beside warnings.
#[test]
fn found_rows_and_row_count_are_the_clients_own() {
    let db = common::mariadb();
    let f = start("connections = 1\nmax_pinned_backends = 4");
    let mut a = f.conn_after_use(USER_A, PASS_A);
    let mut other = f.conn_after_use(USER_A, PASS_A);
    let mut direct = db.conn(USER_A, PASS_A);
    direct
        .query_drop(format!("USE {}", common::TEST_DB))
        .expect("direct USE");
    let script = [
        "SELECT 1 UNION SELECT 2 UNION SELECT 3",
        "SELECT FOUND_ROWS()",
        "SELECT 1 UNION SELECT 2 UNION SELECT 3",
        "SELECT FOUND_ROWS() + 0, ROW_COUNT() + 0",
        "SELECT SQL_CALC_FOUND_ROWS * FROM (VALUES (1), (2), (3), (4)) t LIMIT 1",
        "SELECT FOUND_ROWS() + 0",
        "SELECT SQL_CALC_FOUND_ROWS * FROM (VALUES (1), (2), (3), (4), (5)) t LIMIT 2",
        "SELECT FOUND_ROWS()",
        "DO 1",
        "SELECT ROW_COUNT() + 0",
        "SET sql_select_limit = 2",
        "SELECT 1 UNION SELECT 2 UNION SELECT 3",
        "SELECT FOUND_ROWS() + 0",
        "SET sql_select_limit = DEFAULT",
        "SELECT 1/0",
        "SELECT 1 UNION SELECT 2",
        "SELECT @@warning_count, FOUND_ROWS()",
        "SELECT 5 INTO @x",
        "SELECT FOUND_ROWS() + 0",
        // An affected-rows count is exact standalone; inside an expression
        // only on the backend that left it (README).
        "SELECT 5 INTO @x",
        "SELECT ROW_COUNT()",
    ];
    for (step, sql) in script.iter().enumerate() {
        let got = answer(&mut a, sql);
        assert_eq!(
            got,
            answer(&mut direct, sql),
            "step {step}: {sql}: through the funnel and directly"
        );
        // The other client leaves counts of its own on the backend.
        let _ = answer(&mut other, "SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6 UNION SELECT 7");
        let _ = answer(&mut other, "DO 1");
    }
}

//! A client without a default schema, among clients with one, through
//! funnels with one and two backend connections: it must see no schema
//! (`SELECT DATABASE()` NULL, ERR 1046 for an unqualified table), exactly as
//! a direct client does, whatever schema another client left on the
//! backend. Also `DROP DATABASE` of the current schema, `COM_CHANGE_USER`
//! and `COM_RESET_CONNECTION` by the client, and a random interleaving of
//! clients with and without schemas checked against direct answers
//! (`FUNNEL_RANDOM_SEED` picks it).
//!
//! Every script runs on fresh connections: directly on the private MariaDB,
//! then through each funnel; the answers must be the same.

mod common;

use common::rng::{random_seed, Rng};
use common::sql::err_str;
use common::{FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{ChangeUserOpts, Conn, OptsBuilder, Value};

const ADMIN_USER: &str = "ns_admin";
const ADMIN_PW: &str = "ns_admin_pw";

struct Funnel {
    f: FunnelProcess,
    connections: usize,
    admin_port: u16,
    stats_port: u16,
}

fn start_funnel(connections: usize) -> Funnel {
    let admin_port = common::free_port();
    let stats_port = common::free_port();
    let f = FunnelConfig::user_a()
        .funnel("max_client_connections = 1000")
        .pool(&format!("connections = {connections}"))
        .admin(admin_port, ADMIN_PW)
        .admin_line(&format!("user = {ADMIN_USER}"))
        .stats(stats_port)
        .rust_log("warn")
        .start();
    Funnel {
        f,
        connections,
        admin_port,
        stats_port,
    }
}

impl Funnel {
    /// A counter of this pool's `SHOW STATS` row.
    fn stat(&self, name: &str) -> u64 {
        let mut a = common::admin_console(self.admin_port, ADMIN_USER, ADMIN_PW);
        common::admin::pool_counter(&mut a, "SHOW STATS", USER_A, name)
    }

    fn http_get(&self, path: &str) -> String {
        common::stats::get(self.stats_port, path).1
    }

    /// The count of schema unsets, which SHOW STATS, /metrics and
    /// /stats.json must agree on.
    fn schema_unsets(&self) -> u64 {
        let shown = self.stat("schema_unsets");
        let metrics = self.http_get("/metrics");
        let line = format!("funnel_schema_unsets_total{{pool=\"{USER_A}\"}} ");
        let metric: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in /metrics"))
            .trim()
            .parse::<f64>()
            .unwrap() as u64;
        let json: serde_json::Value = serde_json::from_str(&self.http_get("/stats.json")).unwrap();
        let in_json = json["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == USER_A || p["pool"] == USER_A)
            .map(|p| p["counters"]["schema_unsets"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no pool {USER_A} in /stats.json: {json}"));
        assert_eq!(
            (shown, metric, in_json),
            (shown, shown, shown),
            "SHOW STATS, /metrics, /stats.json"
        );
        shown
    }
}

#[derive(Clone, Copy)]
enum Target<'a> {
    Direct,
    Funnel(&'a Funnel),
}

impl Target<'_> {
    fn label(&self) -> String {
        match self {
            Target::Direct => "direct".into(),
            Target::Funnel(f) => format!("funnel(connections = {})", f.connections),
        }
    }

    fn connect(&self, schema: bool) -> Conn {
        let port = match self {
            Target::Direct => common::mariadb().port,
            Target::Funnel(f) => f.f.port,
        };
        let opts = OptsBuilder::from_opts(common::opts(USER_A, PASS_A, port)).db_name(if schema {
            Some(TEST_DB)
        } else {
            None
        });
        Conn::new(opts).unwrap_or_else(|e| panic!("{} connect: {e}", self.label()))
    }
}

fn value_str(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => format!("'{}'", String::from_utf8_lossy(b)),
        other => format!("{other:?}"),
    }
}

/// What a client does at one step.
#[derive(Clone, Debug)]
enum Op {
    /// A query (text protocol): its rows, affected rows and warnings.
    Sql(String),
    /// The same query prepared and executed (binary protocol).
    Exec(String),
    /// COM_INIT_DB.
    InitDb(String),
    /// COM_CHANGE_USER to the same account, with this schema or none.
    ChangeUser(Option<String>),
    /// COM_RESET_CONNECTION.
    Reset,
}

fn sql(s: impl Into<String>) -> Op {
    Op::Sql(s.into())
}

fn run_op(c: &mut Conn, op: &Op) -> String {
    match op {
        Op::Sql(s) => match c.query_iter(s.as_str()) {
            Err(e) => err_str(&e),
            Ok(mut res) => {
                let mut out = Vec::new();
                while let Some(set) = res.iter() {
                    let mut rows = Vec::new();
                    for row in set {
                        match row {
                            Ok(r) => rows.push(
                                r.unwrap()
                                    .iter()
                                    .map(value_str)
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ),
                            Err(e) => rows.push(err_str(&e)),
                        }
                    }
                    out.push(format!("[{}]", rows.join(" ")));
                }
                format!(
                    "{} affected={} warnings={}",
                    out.join(" "),
                    res.affected_rows(),
                    res.warnings()
                )
            }
        },
        Op::Exec(s) => match c.exec_iter(s.as_str(), ()) {
            Err(e) => err_str(&e),
            Ok(res) => {
                let mut rows = Vec::new();
                for row in res {
                    match row {
                        Ok(r) => rows.push(
                            r.unwrap()
                                .iter()
                                .map(value_str)
                                .collect::<Vec<_>>()
                                .join(","),
                        ),
                        Err(e) => rows.push(err_str(&e)),
                    }
                }
                format!("exec [{}]", rows.join(" "))
            }
        },
        Op::InitDb(db) => match c.select_db(db) {
            Ok(()) => "init_db ok".into(),
            Err(e) => err_str(&e),
        },
        Op::ChangeUser(db) => {
            match c.change_user(ChangeUserOpts::DEFAULT.with_db_name(db.clone())) {
                Ok(()) => "change_user ok".into(),
                Err(e) => err_str(&e),
            }
        }
        Op::Reset => match c.reset() {
            Ok(()) => "reset ok".into(),
            Err(e) => err_str(&e),
        },
    }
}

/// Runs a script on fresh connections (client i has a default schema when
/// `with_schema[i]`); returns each step's answer, labelled.
fn run_script(target: Target, with_schema: &[bool], steps: &[(usize, Op)]) -> Vec<String> {
    let mut conns: Vec<Conn> = with_schema.iter().map(|&s| target.connect(s)).collect();
    steps
        .iter()
        .map(|(who, op)| format!("c{who} {op:?} -> {}", run_op(&mut conns[*who], op)))
        .collect()
}

/// Root SQL on the shared server.
fn root(sqls: &[&str]) {
    let mut r = common::mysql_direct("root", "");
    for s in sqls {
        r.query_drop(s)
            .unwrap_or_else(|e| panic!("root `{s}` failed: {e}"));
    }
}

/// Runs the script directly, then through funnels with one and two
/// backends, and compares; returns the funnels' schema-unset counts.
fn check(
    name: &str,
    with_schema: &[bool],
    steps: &[(usize, Op)],
    before_each: &[&str],
) -> Vec<(usize, u64)> {
    root(before_each);
    let want = run_script(Target::Direct, with_schema, steps);
    if std::env::var_os("FUNNEL_TEST_VERBOSE").is_some() {
        eprintln!("[{name}] direct:\n  {}", want.join("\n  "));
    }
    let mut unsets = Vec::new();
    for n in [1, 2] {
        let f = start_funnel(n);
        root(before_each);
        let have = run_script(Target::Funnel(&f), with_schema, steps);
        let diffs: Vec<String> = want
            .iter()
            .zip(&have)
            .filter(|(w, h)| w != h)
            .map(|(w, h)| format!("    direct: {w}\n    funnel: {h}"))
            .collect();
        assert!(
            diffs.is_empty(),
            "[{name}] {} answers differ from direct:\n{}\n{}",
            Target::Funnel(&f).label(),
            diffs.join("\n"),
            f.f.log()
        );
        unsets.push((n, f.schema_unsets()));
    }
    unsets
}

#[test]
fn a_client_without_schema_sees_none_where_another_had_one() {
    let other = common::unique_name("ns_other");
    root(&[
        "CREATE TABLE IF NOT EXISTS funnel_test.ns_t (id INT)",
        "DELETE FROM funnel_test.ns_t",
        "INSERT INTO funnel_test.ns_t VALUES (1), (2)",
        &format!("CREATE DATABASE IF NOT EXISTS {other}"),
        &format!("CREATE TABLE IF NOT EXISTS {other}.ot (v INT)"),
    ]);
    // c0, c1 have the test schema; c2, c3 none.
    let with_schema = [true, true, false, false];
    let steps = vec![
        (0, sql("SELECT DATABASE()")),
        (0, sql("SELECT COUNT(*) FROM ns_t")),
        (2, sql("SELECT DATABASE()")),
        (2, sql("SELECT COUNT(*) FROM ns_t")),
        (1, sql(format!("USE {other}"))),
        (1, sql("SELECT DATABASE(), COUNT(*) FROM ot")),
        (3, sql("SELECT DATABASE()")),
        (3, sql("SELECT * FROM ot")),
        (3, sql("SHOW TABLES")),
        (3, Op::Exec("SELECT DATABASE()".into())),
        (0, sql("SELECT DATABASE(), COUNT(*) FROM ns_t")),
        (2, Op::Exec("SELECT DATABASE()".into())),
        (2, sql("SELECT COUNT(*) FROM funnel_test.ns_t")),
        // The other direction: a client without a schema chooses one.
        (2, sql("USE funnel_test")),
        (2, sql("SELECT DATABASE(), COUNT(*) FROM ns_t")),
        (3, sql("SELECT DATABASE()")),
        (3, sql("SELECT COUNT(*) FROM ns_t")),
        (3, Op::InitDb(other.clone())),
        (3, sql("SELECT DATABASE(), COUNT(*) FROM ot")),
        (1, sql("SELECT DATABASE()")),
        (2, sql("SELECT DATABASE()")),
    ];
    let unsets = check("no schema", &with_schema, &steps, &[]);
    // One backend shared by all: the schema had to be unset for them.
    assert!(unsets[0].1 > 0, "{unsets:?}");
    root(&[&format!("DROP DATABASE IF EXISTS {other}")]);
}

#[test]
fn backends_without_schema_stay_so_for_clients_without_one() {
    // With two backends, alternating clients with and without a schema
    // each keep to a backend of their kind: no COM_CHANGE_USER at all.
    let with_schema = [true, false, true, false];
    let mut steps = Vec::new();
    for round in 0..10 {
        for who in 0..4 {
            // No errors: an ERR would pin its client to its backend for
            // the diagnostics, and the others would have to do without.
            let q = match (round % 2, who % 2) {
                (0, _) => "SELECT DATABASE()",
                (_, 0) => "SELECT COUNT(*) FROM ns_t2",
                _ => "SELECT COUNT(*) FROM funnel_test.ns_t2",
            };
            steps.push((who, sql(q)));
        }
    }
    root(&[
        "CREATE TABLE IF NOT EXISTS funnel_test.ns_t2 (id INT)",
        "DELETE FROM funnel_test.ns_t2",
    ]);
    let unsets = check("alternating", &with_schema, &steps, &[]);
    assert_eq!(unsets[1], (2, 0), "{unsets:?}");
    // With one shared backend the schema must go each time a client
    // without one follows one with: twice a round (more when the client
    // library's own queries at connect count too).
    assert!(unsets[0].1 >= 20, "{unsets:?}");
}

#[test]
fn drop_database_of_the_current_schema() {
    let gone = common::unique_name("ns_gone");
    let with_schema = [true, false, true];
    let steps = vec![
        (0, sql(format!("CREATE DATABASE {gone}"))),
        (0, sql(format!("USE {gone}"))),
        (0, sql("CREATE TABLE t1 (a INT)")),
        (0, sql("SELECT DATABASE(), COUNT(*) FROM t1")),
        (1, sql("SELECT DATABASE()")),
        (0, sql(format!("DROP DATABASE {gone}"))),
        (0, sql("SELECT DATABASE()")),
        (0, sql("SELECT * FROM t1")),
        (2, sql("SELECT DATABASE()")),
        (0, sql("SELECT DATABASE()")),
        (1, sql("SELECT DATABASE()")),
        (0, Op::Exec("SELECT DATABASE()".into())),
        (0, sql("USE funnel_test")),
        (0, sql("SELECT DATABASE()")),
        (1, sql("SELECT DATABASE()")),
        (0, sql(format!("CREATE DATABASE {gone}"))),
        (1, sql(format!("USE {gone}"))),
        (1, sql(format!("DROP DATABASE {gone}"))),
        (1, sql("SELECT DATABASE()")),
        (2, sql("SELECT DATABASE()")),
        (1, sql("SELECT DATABASE()")),
    ];
    let drop = format!("DROP DATABASE IF EXISTS {gone}");
    check("drop database", &with_schema, &steps, &[&drop]);
}

#[test]
fn change_user_and_reset_by_the_client() {
    let with_schema = [true, false, true];
    let steps = vec![
        (0, sql("SELECT DATABASE()")),
        (0, Op::ChangeUser(None)),
        (0, sql("SELECT DATABASE()")),
        (0, sql("SELECT * FROM ns_t3")),
        (2, sql("SELECT DATABASE()")),
        (0, sql("SELECT DATABASE()")),
        (1, Op::ChangeUser(Some(TEST_DB.into()))),
        (1, sql("SELECT DATABASE(), COUNT(*) FROM ns_t3")),
        (0, sql("SELECT DATABASE()")),
        // A reset keeps the schema, as mysqld's does.
        (1, Op::Reset),
        (1, sql("SELECT DATABASE()")),
        (0, Op::Reset),
        (2, sql("SELECT DATABASE()")),
        (0, sql("SELECT DATABASE()")),
        (0, Op::Exec("SELECT DATABASE()".into())),
        (2, Op::ChangeUser(None)),
        (1, sql("SELECT DATABASE()")),
        (2, sql("SELECT DATABASE()")),
    ];
    root(&["CREATE TABLE IF NOT EXISTS funnel_test.ns_t3 (id INT)"]);
    check("change user", &with_schema, &steps, &[]);
}

/// The multi-statements option (COM_SET_OPTION) survives the funnel's
/// change-user, as it does a direct one: checked with mysqlclient's
/// `set_server_option` when Python has it.
#[test]
fn multi_statements_off_survives_the_schema_unset() {
    if !common::clients::python_has("MySQLdb") {
        eprintln!("[no_schema] python3 with MySQLdb not available: skipped");
        return;
    }
    let script = r#"
import sys, MySQLdb
from MySQLdb.constants import CLIENT
port = int(sys.argv[1])
def conn(db):
    kw = dict(host='127.0.0.1', port=port, user=sys.argv[2], passwd=sys.argv[3],
              client_flag=CLIENT.MULTI_STATEMENTS)
    if db: kw['db'] = db
    return MySQLdb.connect(**kw)
s = conn(sys.argv[4]); n = conn(None)
n.set_server_option(1)  # MYSQL_OPTION_MULTI_STATEMENTS_OFF
out = []
for i in range(3):
    c = s.cursor(); c.execute("SELECT DATABASE()"); out.append(repr(c.fetchall()))
    c = n.cursor()
    try:
        c.execute("SELECT DATABASE(); SELECT 2"); out.append(repr(c.fetchall()))
    except Exception as e:
        out.append("ERR %d" % e.args[0])
    c = n.cursor(); c.execute("SELECT DATABASE()"); out.append(repr(c.fetchall()))
print(" | ".join(out))
"#;
    let run = |port: u16| {
        common::clients::python_ok(script, &[&port.to_string(), USER_A, PASS_A, TEST_DB])
    };
    let want = run(common::mariadb().port);
    assert!(want.contains("ERR 1064"), "{want}");
    let f = start_funnel(1);
    let have = run(f.f.port);
    assert_eq!(have, want, "{}", f.f.log());
    assert!(f.schema_unsets() > 0);
}

#[test]
fn random_mix_of_clients_with_and_without_schemas() {
    let seed = random_seed(0x5eed_0001_u64);
    eprintln!("[no_schema] random mix, FUNNEL_RANDOM_SEED={seed}");
    let mut rng = Rng(seed | 1);
    const CLIENTS: usize = 8;
    const STEPS: usize = 400;
    let other = common::unique_name("ns_rother");
    root(&[
        "CREATE TABLE IF NOT EXISTS funnel_test.ns_rt (id INT)",
        "DELETE FROM funnel_test.ns_rt",
        "INSERT INTO funnel_test.ns_rt VALUES (7)",
        &format!("CREATE DATABASE IF NOT EXISTS {other}"),
        &format!("CREATE TABLE IF NOT EXISTS {other}.ns_rt (id INT, b INT)"),
    ]);
    let own: Vec<String> = (0..CLIENTS)
        .map(|k| common::unique_name(&format!("ns_r{k}")))
        .collect();
    let with_schema: Vec<bool> = (0..CLIENTS).map(|k| k % 2 == 0).collect();
    let mut steps = Vec::new();
    for _ in 0..STEPS {
        let who = rng.below(CLIENTS);
        let op = match rng.below(16) {
            0..=3 => sql("SELECT DATABASE()"),
            4 | 5 => sql("SELECT * FROM ns_rt"),
            6 => sql("SELECT COUNT(*) FROM funnel_test.ns_rt"),
            7 => sql("USE funnel_test"),
            8 => sql(format!("USE {other}")),
            9 => Op::InitDb(TEST_DB.into()),
            10 => Op::Exec("SELECT DATABASE()".into()),
            11 => Op::ChangeUser(None),
            12 => Op::ChangeUser(Some(TEST_DB.into())),
            13 => Op::Reset,
            14 => sql(format!(
                "CREATE DATABASE IF NOT EXISTS {0}; USE {0}",
                own[who]
            )),
            _ => sql(format!("DROP DATABASE IF EXISTS {}", own[who])),
        };
        steps.push((who, op));
    }
    let drops: Vec<String> = own
        .iter()
        .map(|d| format!("DROP DATABASE IF EXISTS {d}"))
        .collect();
    let drops: Vec<&str> = drops.iter().map(String::as_str).collect();
    let unsets = check("random mix", &with_schema, &steps, &drops);
    eprintln!("[no_schema] random mix: schema unsets {unsets:?} in {STEPS} steps");
    root(&drops);
    root(&[&format!("DROP DATABASE IF EXISTS {other}")]);
}

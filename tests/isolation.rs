//! Isolation between clients that share backend connections.
//!
//! Each scenario is a fixed two-client script: client A and client B (both
//! `funnel_a`, so through the funnel they share one pool) take turns running
//! SQL. The script runs three times with fresh connections: both clients
//! directly on the private MariaDB, then both through a funnel with
//! `connections = 1`, then through one with `connections = 4`. Everything
//! each client sees at each step (columns, rows, affected rows, insert id,
//! warnings, info, or the error) must be the same through the funnel as
//! directly. After each run, once both clients are gone, nothing of theirs
//! may be left: no named lock, no metadata lock (FLUSH TABLES WITH READ LOCK,
//! BACKUP LOCK, LOCK TABLES), and a fresh client sees a default session (user
//! variables NULL, no temporary tables, default session variables).
//!
//! Set FUNNEL_ISOTEST_VERBOSE=1 to print every direct answer.

mod common;

use std::sync::{OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use common::sql::err_str;
use common::{mysql_direct, FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Value};

// ---------------------------------------------------------------------------
// Scenario description.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    A,
    B,
}
use Who::{A, B};

#[derive(Clone, Debug)]
enum Step {
    /// `who` runs `sql`; columns listed in `mask` are blanked in the rows
    /// (for values that differ by nature, such as durations).
    Sql {
        who: Who,
        sql: String,
        mask: Vec<usize>,
    },
    /// `who` disconnects (COM_QUIT).
    Quit(Who),
}

fn q(who: Who, sql: impl Into<String>) -> Step {
    Step::Sql {
        who,
        sql: sql.into(),
        mask: Vec::new(),
    }
}

fn masked(who: Who, sql: impl Into<String>, mask: &[usize]) -> Step {
    Step::Sql {
        who,
        sql: sql.into(),
        mask: mask.to_vec(),
    }
}

#[derive(Default)]
struct Scenario {
    name: String,
    /// Root SQL (database funnel_test) run once before the runs.
    fixture: Vec<String>,
    /// Root SQL run before each run (e.g. to restore table contents).
    reset: Vec<String>,
    steps: Vec<Step>,
    /// Named locks the scenario takes: must be free after each run.
    locks: Vec<String>,
    /// User variables (without `@`) a fresh client must see as NULL.
    uvars: Vec<String>,
    /// Temporary tables a fresh client must not see (ERR 1146).
    temps: Vec<String>,
    /// Root statements that must succeed within 2 s of lock waiting after
    /// each run (besides an INSERT into a probe table, always checked).
    root_probes: Vec<String>,
    /// Also check that a fresh client sees no warnings or errors (off by
    /// default: a leak of diagnostics would show in every scenario).
    fresh_diagnostics: bool,
    /// Takes server-global locks (FTWRL, BACKUP LOCK, global variables):
    /// runs alone, not in parallel with other scenarios.
    exclusive: bool,
}

impl Scenario {
    fn new(name: &str) -> Scenario {
        Scenario {
            name: name.to_string(),
            ..Default::default()
        }
    }
    fn fixture(mut self, sql: impl Into<String>) -> Self {
        self.fixture.push(sql.into());
        self
    }
    fn reset(mut self, sql: impl Into<String>) -> Self {
        self.reset.push(sql.into());
        self
    }
    fn steps(mut self, steps: Vec<Step>) -> Self {
        self.steps.extend(steps);
        self
    }
    fn locks(mut self, names: &[&str]) -> Self {
        self.locks.extend(names.iter().map(|s| s.to_string()));
        self
    }
    fn uvars(mut self, names: &[&str]) -> Self {
        self.uvars.extend(names.iter().map(|s| s.to_string()));
        self
    }
    fn temps(mut self, names: &[&str]) -> Self {
        self.temps.extend(names.iter().map(|s| s.to_string()));
        self
    }
    fn root_probe(mut self, sql: impl Into<String>) -> Self {
        self.root_probes.push(sql.into());
        self
    }
    fn fresh_diagnostics(mut self) -> Self {
        self.fresh_diagnostics = true;
        self
    }
    fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
}

// ---------------------------------------------------------------------------
// Server-wide helpers.

/// Scenarios that take server-global locks or change globals take this
/// exclusively; all others share it.
static GLOBAL: RwLock<()> = RwLock::new(());

fn verbose() -> bool {
    std::env::var_os("FUNNEL_ISOTEST_VERBOSE").is_some()
}

/// Runs root statements one by one, panicking with the statement on error.
fn root_sql(c: &mut Conn, sqls: &[String]) {
    for s in sqls {
        c.query_drop(s)
            .unwrap_or_else(|e| panic!("root fixture `{s}` failed: {e}"));
    }
}

/// Once per binary: a probe table for root writes and the
/// metadata_lock_info plugin if the server has it.
fn server_setup() -> &'static (String, bool) {
    static SETUP: OnceLock<(String, bool)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut r = mysql_direct("root", "");
        let probe = common::unique_name("iso_probe");
        r.query_drop(format!(
            "CREATE TABLE {probe} (id INT AUTO_INCREMENT PRIMARY KEY, at VARCHAR(64))"
        ))
        .unwrap();
        let _ = r.query_drop("INSTALL SONAME 'metadata_lock_info'");
        let mdl: Option<i64> = r
            .query_first(
                "SELECT COUNT(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'METADATA_LOCK_INFO'",
            )
            .unwrap();
        let mdl = mdl == Some(1);
        if !mdl {
            eprintln!("[isolation] METADATA_LOCK_INFO not available; checking named locks only");
        }
        (probe, mdl)
    })
}

fn start_funnel(connections: usize, extra_pool: &str) -> FunnelProcess {
    FunnelConfig::user_a()
        .funnel("max_client_connections = 1000")
        .pool(&format!("connections = {connections}"))
        .pool(extra_pool)
        .rust_log("warn")
        .start()
}

/// Where the clients of a run connect.
#[derive(Clone, Copy)]
enum Target {
    Direct,
    Funnel(u16, usize),
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Direct => "direct".into(),
            Target::Funnel(_, n) => format!("funnel(connections = {n})"),
        }
    }
    fn connect(&self) -> Conn {
        let port = match self {
            Target::Direct => common::mariadb().port,
            Target::Funnel(p, _) => *p,
        };
        Conn::new(common::opts(USER_A, PASS_A, port))
            .unwrap_or_else(|e| panic!("{} connect: {e}", self.label()))
    }
}

// ---------------------------------------------------------------------------
// Recording answers.

fn value_str(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("'{s}'"),
            Err(_) => format!(
                "x'{}'",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        },
        other => format!("{other:?}"),
    }
}

/// Runs `sql` (text protocol) and describes everything the client sees:
/// for each result, its columns (name, type, charset, length, decimals),
/// rows, affected rows, insert id, warning count and info; or the error.
fn run_sql(c: &mut Conn, sql: &str, mask: &[usize]) -> String {
    let mut out = Vec::new();
    match c.query_iter(sql) {
        Err(e) => return err_str(&e),
        Ok(mut res) => {
            let mut n = 0;
            while let Some(mut set) = res.iter() {
                let cols: Vec<mysql::Column> = set.columns().as_ref().to_vec();
                let mut part = format!("#{n}");
                // OK results: affected rows etc. are known now (iterating
                // moves on to the next result).
                let mut ok = format!(
                    " affected={} insert_id={:?} warnings={}",
                    set.affected_rows(),
                    set.last_insert_id(),
                    set.warnings()
                );
                let info = set.info_str();
                if !info.is_empty() {
                    ok.push_str(&format!(" info={info:?}"));
                }
                let mut all_null = vec![true; cols.len()];
                let mut rows = Vec::new();
                let mut error = None;
                for row in set.by_ref() {
                    match row {
                        Ok(r) => {
                            let vals: Vec<String> = r
                                .unwrap()
                                .iter()
                                .enumerate()
                                .map(|(i, v)| {
                                    if *v != Value::NULL {
                                        all_null[i] = false;
                                    }
                                    if mask.contains(&i) {
                                        "<masked>".into()
                                    } else {
                                        value_str(v)
                                    }
                                })
                                .collect();
                            rows.push(format!("({})", vals.join(", ")));
                        }
                        Err(e) => {
                            error = Some(err_str(&e));
                            break;
                        }
                    }
                }
                if cols.is_empty() {
                    part.push_str(&ok);
                } else {
                    let descr: Vec<String> = cols
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let name = c.name_str();
                            // A user variable that is NULL: mysqld types it
                            // by its last value (LONGBLOB if never set). The
                            // funnel cannot unset a variable on a shared
                            // backend, so only the value is compared.
                            if all_null[i] && name.starts_with('@') && !name.starts_with("@@") {
                                format!("{name}:<null user variable>")
                            } else {
                                format!(
                                    "{name}:{}/cs{}/len{}/dec{}",
                                    format!("{:?}", c.column_type())
                                        .trim_start_matches("MYSQL_TYPE_"),
                                    c.character_set(),
                                    c.column_length(),
                                    c.decimals()
                                )
                            }
                        })
                        .collect();
                    part.push_str(&format!(
                        " cols[{}] rows[{}]",
                        descr.join(", "),
                        rows.join(" ")
                    ));
                }
                out.push(part);
                if let Some(e) = error {
                    out.push(e);
                    // The connection's warning count is stale after an error.
                    return out.join(" | ");
                }
                n += 1;
            }
        }
    }
    // The warning count of the last result (for a result set, from its EOF).
    out.push(format!("end warnings={}", c.warnings()));
    out.join(" | ")
}

/// One run of a script: what each step answered.
fn run_script(target: Target, steps: &[Step]) -> Vec<String> {
    let mut a = Some(target.connect());
    let mut b = Some(target.connect());
    // `{id:A}` and `{id:B}` stand for the connection ids the clients got
    // at login (the funnel's own ids through the funnel).
    let ids = [
        ("{id:A}", a.as_ref().unwrap().connection_id()),
        ("{id:B}", b.as_ref().unwrap().connection_id()),
    ];
    let mut answers = Vec::new();
    for step in steps {
        match step {
            Step::Sql { who, sql, mask } => {
                let mut sql = sql.clone();
                for (k, v) in ids {
                    sql = sql.replace(k, &v.to_string());
                }
                let sql = &sql;
                let c = match who {
                    A => a.as_mut(),
                    B => b.as_mut(),
                };
                let ans = match c {
                    Some(c) => run_sql(c, sql, mask),
                    None => panic!("script uses {who:?} after it quit"),
                };
                answers.push(ans);
            }
            Step::Quit(who) => {
                match who {
                    A => a = None,
                    B => b = None,
                }
                answers.push("(quit)".into());
            }
        }
    }
    answers
}

/// 1 when the session's tracking list is the server default or the
/// funnel's own `'*'` (README, known differences), 0 when it is anything a
/// client set.
const TRACKING_IS_OWN_OR_DEFAULT: &str =
    "@@session_track_system_variables IN ('*', @@global.session_track_system_variables) AS tracking_default";

/// What a fresh client sees of its session and of the scenario's objects.
fn fresh_probe(c: &mut Conn, sc: &Scenario) -> Vec<(String, String)> {
    let mut sqls = if sc.fresh_diagnostics {
        vec![
            "SHOW WARNINGS".to_string(),
            "SELECT @@warning_count, @@error_count".to_string(),
        ]
    } else {
        Vec::new()
    };
    let mut vars = vec![
        "@@sql_select_limit",
        "@@time_zone",
        "@@profiling",
        // The funnel's backends track every variable ('*'), a documented
        // difference; what matters is that no client's own value leaks.
        TRACKING_IS_OWN_OR_DEFAULT,
        "@@max_statement_time",
        "@@max_join_size",
        "@@sql_mode",
        "@@tx_read_only",
        "@@tx_isolation",
        "@@autocommit",
        "@@in_transaction",
        "@@lock_wait_timeout",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for v in &sc.uvars {
        vars.push(format!("@{v}"));
    }
    for l in &sc.locks {
        vars.push(format!("IS_USED_LOCK('{l}') IS NULL"));
    }
    sqls.push(format!("SELECT {}", vars.join(", ")));
    for t in &sc.temps {
        sqls.push(format!("SELECT * FROM {t}"));
    }
    sqls.push("SHOW PROFILES".into());
    sqls.into_iter()
        .map(|s| {
            let a = run_sql(c, &s, &[]);
            (s, a)
        })
        .collect()
}

/// After a run, with both clients gone: no lock of theirs may remain, and a
/// fresh client (through the same target) must see what a fresh direct
/// client sees. Returns the problems found.
fn leftovers(sc: &Scenario, target: Target, fresh_before: &[(String, String)]) -> Vec<String> {
    let (probe, mdl) = server_setup();
    let mut problems = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut r = mysql_direct("root", "");
    // Named locks and metadata locks: give the disconnects a moment.
    loop {
        let mut held = Vec::new();
        for l in &sc.locks {
            let free: Option<i64> = r
                .query_first(format!("SELECT IS_USED_LOCK('{l}') IS NULL"))
                .unwrap();
            if free != Some(1) {
                held.push(format!("named lock '{l}' is still held"));
            }
        }
        if *mdl {
            let rows: Vec<(String, String, String, String)> = r
                .query(
                    "SELECT LOCK_MODE, LOCK_TYPE, TABLE_SCHEMA, TABLE_NAME \
                     FROM information_schema.METADATA_LOCK_INFO WHERE THREAD_ID <> CONNECTION_ID()",
                )
                .unwrap();
            for (mode, ty, schema, table) in rows {
                let ours = sc.locks.iter().any(|l| *l == schema || *l == table)
                    || (!sc.name.is_empty() && table.starts_with(&tag_of(sc)))
                    || (sc.exclusive && table.is_empty());
                if ours {
                    held.push(format!(
                        "metadata lock {mode} ({ty}) on '{schema}'.'{table}' is still held"
                    ));
                }
            }
        }
        if held.is_empty() || Instant::now() > deadline {
            problems.extend(held);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    r.query_drop("SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2")
        .unwrap();
    let mut root_probes = vec![format!(
        "INSERT INTO {TEST_DB}.{probe} (at) VALUES ('{}')",
        sc.name
    )];
    root_probes.extend(sc.root_probes.iter().cloned());
    for s in &root_probes {
        if let Err(e) = r.query_drop(s) {
            problems.push(format!(
                "root `{s}` did not succeed within 2 s: {}",
                err_str(&e)
            ));
        }
    }
    // Fresh clients: through the funnel, several at once so that more than
    // one backend connection is looked at.
    let n = match target {
        Target::Direct => 1,
        Target::Funnel(_, c) => c.max(1) * 2,
    };
    // The second probe on the same client skips the diagnostics statements
    // (they would show the first probe's).
    let skip = if sc.fresh_diagnostics { 2 } else { 0 };
    let seen: Vec<Vec<(String, String)>> = thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || {
                    let mut c = target.connect();
                    let mut all = fresh_probe(&mut c, sc);
                    // A second look on the same client, maybe on another backend.
                    all.extend(fresh_probe(&mut c, sc).into_iter().skip(skip));
                    all
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut expect = fresh_before.to_vec();
    expect.extend(fresh_before.iter().skip(skip).cloned());
    for (i, got) in seen.iter().enumerate() {
        for ((sql, want), (_, have)) in expect.iter().zip(got) {
            if want != have {
                problems.push(format!(
                    "fresh client {i}: `{sql}`\n        before the run: {want}\n        after the run:  {have}"
                ));
            }
        }
    }
    for (sql, want) in fresh_before {
        if sql.starts_with("SELECT * FROM") && !want.contains("ERR 1146") {
            problems.push(format!(
                "fresh client before the run: `{sql}` should fail with 1146: {want}"
            ));
        }
    }
    problems
}

fn tag_of(sc: &Scenario) -> String {
    // Scenario objects are named `<tag>_...`; the tag is the scenario name's
    // unique suffix if it has one.
    sc.name.split(' ').next().unwrap_or("").to_string()
}

/// Runs each scenario directly and through funnels with 1 and 4 backend
/// connections; panics with every difference found.
fn check(scenarios: Vec<Scenario>) {
    let mut failures = Vec::new();
    for sc in &scenarios {
        failures.extend(check_one(sc, &[1, 4]));
    }
    if !failures.is_empty() {
        panic!(
            "\n{} difference(s):\n{}\n",
            failures.len(),
            failures.join("\n")
        );
    }
}

fn check_one(sc: &Scenario, conns: &[usize]) -> Vec<String> {
    let _shared;
    let _excl;
    if sc.exclusive {
        _excl = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _shared = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    }
    server_setup();
    let mut r = mysql_direct("root", "");
    root_sql(&mut r, &sc.fixture);
    root_sql(&mut r, &sc.reset);
    // What a fresh client sees before the run is what one must see after.
    let fresh_direct = baseline(Target::Direct, sc);
    let direct = run_script(Target::Direct, &sc.steps);
    if verbose() {
        eprintln!("=== {} (direct)", sc.name);
        for (step, ans) in sc.steps.iter().zip(&direct) {
            eprintln!("  {}\n      -> {ans}", step_str(step));
        }
    }
    let mut failures = Vec::new();
    for p in leftovers(sc, Target::Direct, &fresh_direct) {
        failures.push(format!(
            "[{}] the DIRECT run left something (scenario bug): {p}",
            sc.name
        ));
    }
    for &n in conns {
        root_sql(&mut r, &sc.reset);
        let f = start_funnel(n, "");
        let target = Target::Funnel(f.port, n);
        // Compared with the same funnel's fresh session before the run:
        // how a fresh session through the funnel differs from a direct one
        // is checked once, in s00.
        let fresh_funnel = baseline(target, sc);
        let got = run_script(target, &sc.steps);
        for (i, ((step, want), have)) in sc.steps.iter().zip(&direct).zip(&got).enumerate() {
            if want != have {
                failures.push(format!(
                    "[{}] {} step {i} {}\n    direct: {want}\n    funnel: {have}",
                    sc.name,
                    target.label(),
                    step_str(step)
                ));
            }
        }
        for p in leftovers(sc, target, &fresh_funnel) {
            failures.push(format!(
                "[{}] {} after both clients left: {p}",
                sc.name,
                target.label()
            ));
        }
        drop(f);
    }
    failures
}

fn baseline(target: Target, sc: &Scenario) -> Vec<(String, String)> {
    let mut c = target.connect();
    fresh_probe(&mut c, sc)
}

fn step_str(step: &Step) -> String {
    match step {
        Step::Sql { who, sql, .. } => format!("{who:?}: {sql}"),
        Step::Quit(who) => format!("{who:?} quits"),
    }
}

/// A unique tag for a scenario's objects.
fn tag(what: &str) -> String {
    common::unique_name(&format!("iso_{what}"))
}

fn five_rows(t: &str) -> String {
    format!("CREATE TABLE {t} (id INT PRIMARY KEY); INSERT INTO {t} VALUES (1),(2),(3),(4),(5)")
}

// ---------------------------------------------------------------------------
// 0. A fresh session through the funnel is a fresh direct session.

#[test]
fn s00_fresh_session_through_the_funnel_is_as_direct() {
    let _shared = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    let sc = Scenario::new("fresh session").fresh_diagnostics();
    let direct = baseline(Target::Direct, &sc);
    let mut failures = Vec::new();
    for n in [1, 4] {
        let f = start_funnel(n, "");
        let got = baseline(Target::Funnel(f.port, n), &sc);
        for ((sql, want), (_, have)) in direct.iter().zip(&got) {
            if want != have {
                failures.push(format!(
                    "connections = {n}: `{sql}`\n    direct: {want}\n    funnel: {have}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 1. Warnings and diagnostics.

#[test]
fn s01_warnings_and_diagnostics_stay_with_their_client() {
    let t = tag("warn");
    let missing = format!("{t}_missing");
    let sc = Scenario::new(&format!("{t} warnings")).steps(vec![
        q(A, "SELECT 1/0"),
        q(B, "SHOW WARNINGS"),
        q(B, "SHOW COUNT(*) WARNINGS"),
        q(A, "SHOW WARNINGS"),
        q(A, "SHOW COUNT(*) WARNINGS"),
        q(A, "SELECT @@warning_count"),
        q(A, "SELECT CAST('x' AS INT)"),
        q(B, "SELECT @@warning_count"),
        q(A, "SELECT @@warning_count"),
        q(A, "SHOW WARNINGS"),
        q(A, format!("SELECT * FROM {missing}")),
        q(B, "SHOW ERRORS"),
        q(B, "SELECT @@error_count"),
        q(A, "SHOW ERRORS"),
        q(A, "SELECT @@error_count"),
        q(A, format!("SELECT * FROM {missing}")),
        q(A, "GET DIAGNOSTICS @n = NUMBER"),
        q(B, "SELECT @n"),
        q(A, "SELECT @n"),
        q(A, format!("SELECT * FROM {missing}")),
        q(
            A,
            "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT, @e = MYSQL_ERRNO",
        ),
        q(B, "SELECT @m, @e"),
        q(A, "SELECT @m, @e"),
        // Does a statement without tables clear the warnings? Whatever
        // mysqld does, the funnel must do the same.
        q(A, "SELECT 1/0"),
        q(A, "SELECT 1"),
        q(A, "SHOW WARNINGS"),
        q(A, "SELECT 1/0"),
        q(B, "SELECT 1"),
        q(A, "SHOW WARNINGS"),
        q(A, "SELECT 1/0"),
        q(B, "SELECT 1/0, CAST('y' AS INT)"),
        q(A, "SHOW WARNINGS"),
        q(B, "SHOW WARNINGS"),
        q(A, "SET @w = 1/0"),
        q(B, "SHOW WARNINGS"),
        q(A, "SHOW WARNINGS"),
    ]);
    let quits = Scenario::new(&format!("{t} warnings of a client that left"))
        .steps(vec![
            q(B, "SELECT 1"),
            q(A, "SELECT 1/0, CAST('z' AS INT)"),
            Step::Quit(A),
            q(B, "SHOW WARNINGS"),
            q(B, "SELECT @@warning_count, @@error_count"),
        ])
        .fresh_diagnostics();
    let errs = Scenario::new(&format!("{t} errors of a client that left"))
        .steps(vec![
            q(A, format!("SELECT * FROM {missing}")),
            Step::Quit(A),
            q(B, "SHOW ERRORS"),
        ])
        .fresh_diagnostics();
    check(vec![
        sc.uvars(&["n", "m", "e", "w"]).fresh_diagnostics(),
        quits,
        errs,
    ]);
}

// ---------------------------------------------------------------------------
// 2. Stored functions that change the session.

#[test]
fn s02_stored_function_session_changes_stay_with_their_client() {
    let t = tag("sfn");
    let sc = Scenario::new(&format!("{t} stored function sets session variables"))
        .fixture(five_rows(&format!("{t}_five")))
        .fixture(format!(
            "CREATE FUNCTION {t}_set_limit() RETURNS INT \
             BEGIN SET SESSION sql_select_limit = 1; RETURN 1; END"
        ))
        .fixture(format!(
            "CREATE FUNCTION {t}_set_tz() RETURNS INT \
             BEGIN SET SESSION time_zone = '+05:00'; RETURN 1; END"
        ))
        .fixture(format!(
            "CREATE FUNCTION {t}_set_uvar() RETURNS INT BEGIN SET @fv = 'from-function'; RETURN 1; END"
        ))
        .steps(vec![
            q(A, format!("SELECT {t}_set_limit()")),
            q(B, format!("SELECT * FROM {t}_five ORDER BY id")),
            q(A, format!("SELECT * FROM {t}_five ORDER BY id")),
            q(B, "SELECT @@sql_select_limit"),
            q(A, "SELECT @@sql_select_limit"),
            q(A, format!("SELECT {t}_set_tz()")),
            q(B, "SELECT @@time_zone"),
            q(A, "SELECT @@time_zone"),
            q(B, "SELECT FROM_UNIXTIME(0)"),
            q(A, "SELECT FROM_UNIXTIME(0)"),
            q(B, format!("SELECT COUNT(*) FROM {t}_five")),
            q(A, format!("SELECT {t}_set_uvar()")),
            q(B, "SELECT @fv"),
            q(A, "SELECT @fv"),
            q(B, format!("SELECT * FROM {t}_five ORDER BY id")),
            q(A, format!("SELECT * FROM {t}_five ORDER BY id")),
        ])
        .uvars(&["fv"]);
    check(vec![sc]);
}

// ---------------------------------------------------------------------------
// 3. EXECUTE IMMEDIATE.

#[test]
fn s03_execute_immediate_changes_stay_with_their_client() {
    let t = tag("ei");
    let five = format!("{t}_five");
    let tmp = format!("{t}_tmp");
    let limit = Scenario::new(&format!("{t} EXECUTE IMMEDIATE sql_select_limit"))
        .fixture(five_rows(&five))
        .steps(vec![
            q(A, "EXECUTE IMMEDIATE 'SET SESSION sql_select_limit = 1'"),
            q(B, format!("SELECT * FROM {five} ORDER BY id")),
            q(A, format!("SELECT * FROM {five} ORDER BY id")),
            q(A, "EXECUTE IMMEDIATE 'SET @ei = 5'"),
            q(B, "SELECT @ei"),
            q(A, "SELECT @ei"),
            q(A, "EXECUTE IMMEDIATE 'SET SESSION time_zone = ''+03:00'''"),
            q(B, "SELECT @@time_zone"),
            q(A, "SELECT @@time_zone"),
        ])
        .uvars(&["ei"]);
    let temp = Scenario::new(&format!("{t} EXECUTE IMMEDIATE temporary table"))
        .steps(vec![
            q(
                A,
                format!("EXECUTE IMMEDIATE 'CREATE TEMPORARY TABLE {tmp} (x INT)'"),
            ),
            q(B, format!("SELECT * FROM {tmp}")),
            q(A, format!("INSERT INTO {tmp} VALUES (1)")),
            q(A, format!("SELECT * FROM {tmp}")),
            q(B, format!("SELECT * FROM {tmp}")),
        ])
        .temps(&[&tmp]);
    let tracking = Scenario::new(&format!(
        "{t} EXECUTE IMMEDIATE session_track_system_variables"
    ))
    .steps(vec![
        q(
            A,
            "EXECUTE IMMEDIATE 'SET SESSION session_track_system_variables = '''''",
        ),
        q(A, "SET @@sql_select_limit = 2"),
        q(B, format!("SELECT * FROM {five} ORDER BY id")),
        q(A, format!("SELECT * FROM {five} ORDER BY id")),
        q(A, "SET @tr = 'after tracking off'"),
        q(B, "SELECT @tr, @@sql_select_limit"),
        q(A, "SELECT @tr, @@sql_select_limit"),
        q(A, "SELECT @@session_track_system_variables"),
        q(B, format!("SELECT {TRACKING_IS_OWN_OR_DEFAULT}")),
        q(A, "SET time_zone = '+07:00'"),
        q(B, "SELECT @@time_zone"),
        q(A, "SELECT @@time_zone"),
    ])
    .uvars(&["tr"]);
    check(vec![limit, temp, tracking]);
}

// ---------------------------------------------------------------------------
// 4. Temporary tables created by stored routines.

#[test]
fn s04_temporary_tables_from_stored_routines_stay_with_their_client() {
    let t = tag("tmpr");
    let tp = format!("{t}_tp");
    let tf = format!("{t}_tf");
    let proc_sc = Scenario::new(&format!("{t} CALL creates a temporary table"))
        .fixture(format!(
            "CREATE PROCEDURE {t}_mk() BEGIN CREATE TEMPORARY TABLE {tp} (x INT); \
             INSERT INTO {tp} VALUES (7); END"
        ))
        .steps(vec![
            q(A, format!("CALL {t}_mk()")),
            q(B, format!("SELECT * FROM {tp}")),
            q(A, format!("SELECT * FROM {tp}")),
            q(B, format!("CREATE TEMPORARY TABLE {tp} (y INT)")),
            q(B, format!("SELECT * FROM {tp}")),
            q(A, format!("SELECT * FROM {tp}")),
        ])
        .temps(&[&tp]);
    let mut scs = vec![proc_sc];
    // MariaDB may refuse CREATE TEMPORARY TABLE in a function; test it if
    // it does not.
    let mut r = mysql_direct("root", "");
    let f = format!(
        "CREATE FUNCTION {t}_mkf() RETURNS INT BEGIN CREATE TEMPORARY TABLE {tf} (x INT); RETURN 1; END"
    );
    match r
        .query_drop(format!("USE {TEST_DB}"))
        .and_then(|_| r.query_drop(&f))
    {
        Ok(()) => scs.push(
            Scenario::new(&format!("{t} function creates a temporary table"))
                .steps(vec![
                    q(A, format!("SELECT {t}_mkf()")),
                    q(B, format!("SELECT * FROM {tf}")),
                    q(A, format!("SELECT * FROM {tf}")),
                ])
                .temps(&[&tf]),
        ),
        Err(e) => eprintln!(
            "[isolation] MariaDB refuses CREATE TEMPORARY TABLE in a stored function: {}",
            err_str(&e)
        ),
    }
    check(scs);
}

// ---------------------------------------------------------------------------
// 5. A trigger sets a user variable.

#[test]
fn s05_trigger_user_variable_stays_with_its_client() {
    let t = tag("trg");
    let sc = Scenario::new(&format!("{t} trigger sets @trig"))
        .fixture(format!(
            "CREATE TABLE {t}_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
        ))
        .fixture(format!(
            "CREATE TRIGGER {t}_ai AFTER INSERT ON {t}_t FOR EACH ROW SET @trig = NEW.id"
        ))
        .reset(format!("TRUNCATE TABLE {t}_t"))
        .steps(vec![
            q(A, format!("INSERT INTO {t}_t (v) VALUES (10)")),
            q(B, "SELECT @trig"),
            q(A, "SELECT @trig"),
            q(B, format!("INSERT INTO {t}_t (v) VALUES (20), (30)")),
            q(A, "SELECT @trig"),
            q(B, "SELECT @trig"),
            q(A, "SELECT @trig + 100"),
        ])
        .uvars(&["trig"]);
    check(vec![sc]);
}

// ---------------------------------------------------------------------------
// 6. Profiling.

#[test]
fn s06_profiles_stay_with_their_client() {
    let t = tag("prof");
    let secret = format!("{t}_secret");
    let sc = Scenario::new(&format!("{t} SHOW PROFILES")).steps(vec![
        q(A, "SET profiling = 1"),
        q(A, format!("SELECT '{secret}' AS s")),
        masked(B, "SHOW PROFILES", &[0, 1]),
        q(B, "SELECT @@profiling"),
        masked(A, "SHOW PROFILES", &[0, 1]),
        q(A, "SELECT @@profiling"),
        q(B, "SET profiling = 1"),
        q(B, "SELECT 'b-only'"),
        masked(B, "SHOW PROFILES", &[0, 1]),
        masked(A, "SHOW PROFILES", &[0, 1]),
        q(A, "SELECT COUNT(*) > 0 FROM information_schema.PROFILING"),
        q(B, "SELECT COUNT(*) > 0 FROM information_schema.PROFILING"),
    ]);
    check(vec![sc]);
}

// ---------------------------------------------------------------------------
// 7. SET TRANSACTION READ ONLY.

#[test]
fn s07_transaction_characteristics_stay_with_their_client() {
    let t = tag("ro");
    let tbl = format!("{t}_t");
    let next = Scenario::new(&format!("{t} SET TRANSACTION READ ONLY"))
        .fixture(format!("CREATE TABLE {tbl} (id INT PRIMARY KEY)"))
        .reset(format!("TRUNCATE TABLE {tbl}"))
        .steps(vec![
            q(A, "SET TRANSACTION READ ONLY"),
            q(B, format!("INSERT INTO {tbl} VALUES (1)")),
            q(B, format!("SELECT COUNT(*) FROM {tbl}")),
            q(A, "START TRANSACTION"),
            q(A, format!("INSERT INTO {tbl} VALUES (2)")),
            q(A, "ROLLBACK"),
            q(A, format!("INSERT INTO {tbl} VALUES (3)")),
            q(B, format!("SELECT * FROM {tbl} ORDER BY id")),
        ]);
    let session = Scenario::new(&format!("{t} SET SESSION TRANSACTION READ ONLY"))
        .fixture(format!("CREATE TABLE {tbl}2 (id INT PRIMARY KEY)"))
        .reset(format!("TRUNCATE TABLE {tbl}2"))
        .steps(vec![
            q(A, "SET SESSION TRANSACTION READ ONLY"),
            q(B, format!("INSERT INTO {tbl}2 VALUES (1)")),
            q(A, format!("INSERT INTO {tbl}2 VALUES (2)")),
            q(A, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            q(B, "SELECT @@tx_isolation, @@tx_read_only"),
            q(A, "SELECT @@tx_isolation, @@tx_read_only"),
            q(A, "SET SESSION TRANSACTION READ WRITE"),
            q(A, format!("INSERT INTO {tbl}2 VALUES (3)")),
            q(B, format!("SELECT * FROM {tbl}2 ORDER BY id")),
        ]);
    check(vec![next, session]);
}

// ---------------------------------------------------------------------------
// 8. ROW_COUNT().

#[test]
fn s08_row_count_stays_with_its_client() {
    let t = tag("rc");
    let tbl = format!("{t}_t");
    let sc = Scenario::new(&format!("{t} ROW_COUNT()"))
        .fixture(format!("CREATE TABLE {tbl} (id INT PRIMARY KEY, v INT)"))
        .reset(format!("DELETE FROM {tbl}"))
        .reset(format!(
            "INSERT INTO {tbl} VALUES (1,0),(2,0),(3,0),(4,0),(5,0)"
        ))
        .steps(vec![
            q(B, "SELECT ROW_COUNT()"),
            q(A, format!("UPDATE {tbl} SET v = v + 1 WHERE id <= 3")),
            q(B, "SELECT ROW_COUNT()"),
            q(A, "SELECT ROW_COUNT()"),
            q(A, "SELECT ROW_COUNT()"),
            q(A, format!("DELETE FROM {tbl} WHERE id = 5")),
            q(B, format!("UPDATE {tbl} SET v = 9 WHERE id IN (1, 2)")),
            q(A, "SELECT ROW_COUNT()"),
            q(B, "SELECT ROW_COUNT()"),
            q(A, "SET @x = 1"),
            q(A, "SELECT ROW_COUNT()"),
        ])
        .uvars(&["x"]);
    check(vec![sc]);
}

// ---------------------------------------------------------------------------
// 9. Locks a leaving client must not leave behind.

#[test]
fn s09_locks_of_a_leaving_client_are_released() {
    let t = tag("lk");
    let (probe, _) = server_setup();
    let tbl = format!("{t}_t");
    // Its own table, emptied before each run, so that insert ids compare.
    let ftwrl_tbl = format!("{tbl}_f");
    let ftwrl = Scenario::new(&format!("{t} FLUSH TABLES WITH READ LOCK then quit"))
        .exclusive()
        .fixture(format!(
            "CREATE TABLE {ftwrl_tbl} (id INT AUTO_INCREMENT PRIMARY KEY, at VARCHAR(64))"
        ))
        .reset(format!("TRUNCATE TABLE {ftwrl_tbl}"))
        .steps(vec![
            q(A, "FLUSH TABLES WITH READ LOCK"),
            q(B, "SET SESSION lock_wait_timeout = 1"),
            q(
                B,
                format!("INSERT INTO {ftwrl_tbl} (at) VALUES ('b during ftwrl')"),
            ),
            Step::Quit(A),
            q(B, "SET SESSION lock_wait_timeout = 10"),
            q(
                B,
                format!("INSERT INTO {ftwrl_tbl} (at) VALUES ('b after ftwrl')"),
            ),
        ])
        .root_probe(format!(
            "INSERT INTO {TEST_DB}.{probe} (at) VALUES ('root after ftwrl')"
        ));
    let backup = Scenario::new(&format!("{t} BACKUP LOCK then quit"))
        .exclusive()
        .fixture(format!("CREATE TABLE {tbl} (id INT)"))
        .steps(vec![
            q(A, format!("BACKUP LOCK {tbl}")),
            q(B, format!("SELECT COUNT(*) FROM {tbl}")),
            Step::Quit(A),
        ])
        .root_probe(format!(
            "ALTER TABLE {TEST_DB}.{tbl} COMMENT = 'after backup lock'"
        ));
    let lock_tables = Scenario::new(&format!("{t} multi-statement LOCK TABLES then quit"))
        .fixture(format!("CREATE TABLE {tbl}2 (id INT)"))
        .reset(format!("DELETE FROM {tbl}2"))
        .steps(vec![
            q(A, format!("SELECT 1; LOCK TABLES {tbl}2 WRITE")),
            q(B, "SET SESSION lock_wait_timeout = 1"),
            q(B, format!("SELECT COUNT(*) FROM {tbl}2")),
            q(A, format!("INSERT INTO {tbl}2 VALUES (1)")),
            Step::Quit(A),
            q(B, "SET SESSION lock_wait_timeout = 10"),
            q(B, format!("SELECT COUNT(*) FROM {tbl}2")),
        ])
        .root_probe(format!("INSERT INTO {TEST_DB}.{tbl}2 VALUES (99)"));
    let lx = format!("{t}_x");
    let named = Scenario::new(&format!("{t} EXECUTE IMMEDIATE GET_LOCK then quit"))
        .steps(vec![
            q(
                A,
                format!("EXECUTE IMMEDIATE 'SELECT GET_LOCK(''{lx}'', 0)'"),
            ),
            q(
                B,
                format!("SELECT IS_FREE_LOCK('{lx}'), GET_LOCK('{lx}', 0)"),
            ),
            Step::Quit(A),
        ])
        .locks(&[&lx]);
    check(vec![ftwrl, backup, lock_tables, named]);
}

// ---------------------------------------------------------------------------
// 10. Named locks exclude the other client.

#[test]
fn s10_named_locks_exclude_other_clients() {
    let t = tag("mx");
    let m1 = format!("{t}_m1");
    let m2 = format!("{t}_m2");
    let m3 = format!("{t}_m3");
    let m4 = format!("{t}_m4");
    let probes = |m: &str| {
        vec![
            q(B, format!("SELECT GET_LOCK('{m}', 0)")),
            q(
                B,
                format!("SELECT IS_USED_LOCK('{m}') IS NOT NULL, IS_FREE_LOCK('{m}')"),
            ),
            q(
                A,
                format!("SELECT IS_USED_LOCK('{m}') IS NOT NULL, IS_FREE_LOCK('{m}')"),
            ),
            q(B, format!("SELECT RELEASE_LOCK('{m}')")),
            q(A, format!("SELECT RELEASE_LOCK('{m}')")),
            q(B, format!("SELECT GET_LOCK('{m}', 0)")),
            q(A, format!("SELECT GET_LOCK('{m}', 0)")),
            q(B, format!("SELECT RELEASE_LOCK('{m}')")),
        ]
    };
    let mut steps = vec![q(A, format!("SELECT {t}_take()"))];
    steps.extend(probes(&m1));
    let func = Scenario::new(&format!("{t} GET_LOCK in a stored function"))
        .fixture(format!(
            "CREATE FUNCTION {t}_take() RETURNS INT RETURN GET_LOCK('{m1}', 0)"
        ))
        .steps(steps)
        .locks(&[&m1]);
    let mut steps = vec![q(
        A,
        format!("EXECUTE IMMEDIATE 'SELECT GET_LOCK(''{m2}'', 0)'"),
    )];
    steps.extend(probes(&m2));
    let ei = Scenario::new(&format!("{t} GET_LOCK in EXECUTE IMMEDIATE"))
        .steps(steps)
        .locks(&[&m2]);
    // With NO_BACKSLASH_ESCAPES, 'a\' is a complete string: GET_LOCK is
    // real SQL, not inside a string.
    let mut steps = vec![
        q(A, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'"),
        q(A, format!("SELECT 'a\\', GET_LOCK('{m3}', 0)")),
    ];
    steps.extend(probes(&m3));
    steps.push(q(A, format!("SELECT 'a\\\\', GET_LOCK('{m4}', 0)")));
    steps.extend(probes(&m4));
    let nbe = Scenario::new(&format!(
        "{t} GET_LOCK after a backslash, NO_BACKSLASH_ESCAPES"
    ))
    .steps(steps)
    .locks(&[&m3, &m4]);
    check(vec![func, ei, nbe]);
}

// ---------------------------------------------------------------------------
// 11. User variables of every type.

#[test]
fn s11_user_variables_of_every_type() {
    let t = tag("uv");
    let values = [
        "42",
        "-7",
        "18446744073709551615",
        "1.50",
        "123456789012345678901234567890.123456789",
        "'text'",
        "_latin1 'caf\u{e9}'",
        "'x' COLLATE utf8mb4_bin",
        "CAST('abc' AS CHAR(10))",
        "CONVERT('varchar' USING latin1)",
        "1.5e0",
        "0.1e0 + 0.2e0",
        "CAST(0.1 AS FLOAT)",
        "CAST(1.25 AS DOUBLE)",
        "X'00FF'",
        "_binary 'bin'",
        "CAST('b' AS BINARY(3))",
        "NULL",
        "TRUE",
        "DATE '2020-01-02'",
        "''",
    ];
    let mut steps = Vec::new();
    for (i, v) in values.iter().enumerate() {
        steps.push(q(A, format!("SET @v = {v}")));
        steps.push(q(B, format!("SET @v = 'b-{i}'")));
        steps.push(q(A, "SELECT @v"));
        steps.push(q(
            A,
            "SELECT @v IS NULL, HEX(@v), CHARSET(@v), COLLATION(@v), @v + 0",
        ));
        steps.push(q(B, "SELECT @v"));
        steps.push(q(
            A,
            "SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME \
             FROM information_schema.USER_VARIABLES ORDER BY VARIABLE_NAME",
        ));
    }
    let sc = Scenario::new(&format!("{t} user variable types"))
        .steps(steps)
        .uvars(&["v"]);
    check(vec![sc]);
}

#[test]
fn s11_forty_clients_with_string_variables_on_two_backends() {
    let _shared = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    let f = start_funnel(2, "max_pinned_backends = 4");
    let target = Target::Funnel(f.port, 2);
    let mut clients: Vec<Conn> = (0..40).map(|_| target.connect()).collect();
    let mut failures = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let a = run_sql(c, &format!("SET @v = 'text of client {i}'"), &[]);
        if a.starts_with("ERR") {
            failures.push(format!("client {i}: SET @v: {a}"));
        }
    }
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let a = run_sql(c, "SELECT @v", &[]);
            if !a.contains(&format!("rows[('text of client {i}')]")) {
                failures.push(format!("round {round} client {i}: SELECT @v: {a}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed answers from 40 clients (connections = 2, max_pinned_backends = 4):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 12. LAST_INSERT_ID(expr).

#[test]
fn s12_last_insert_id_with_an_argument() {
    let t = tag("lid");
    let tbl = format!("{t}_t");
    let auto = format!("{t}_auto");
    let sc = Scenario::new(&format!("{t} LAST_INSERT_ID(expr)"))
        .fixture(format!("CREATE TABLE {tbl} (id INT PRIMARY KEY, v INT)"))
        .fixture(format!(
            "CREATE TABLE {auto} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
        ))
        .reset(format!("DELETE FROM {tbl}"))
        .reset(format!("INSERT INTO {tbl} VALUES (1,0),(2,0),(3,0)"))
        .reset(format!("TRUNCATE TABLE {auto}"))
        .steps(vec![
            q(A, "SELECT LAST_INSERT_ID(42)"),
            q(B, "SELECT LAST_INSERT_ID()"),
            q(A, "SELECT LAST_INSERT_ID()"),
            q(A, "SELECT LAST_INSERT_ID() + 0"),
            q(
                A,
                format!("UPDATE {tbl} SET id = LAST_INSERT_ID(id + 10) WHERE id = 2"),
            ),
            q(A, "SELECT LAST_INSERT_ID()"),
            q(B, "SELECT LAST_INSERT_ID()"),
            q(B, format!("INSERT INTO {auto} (v) VALUES (1), (2)")),
            q(B, "SELECT LAST_INSERT_ID()"),
            q(A, "SELECT LAST_INSERT_ID()"),
            q(A, "SET @l = LAST_INSERT_ID(99)"),
            q(A, "SELECT LAST_INSERT_ID(), @l"),
            q(B, "SELECT LAST_INSERT_ID()"),
            q(A, "SELECT LAST_INSERT_ID(LAST_INSERT_ID() + 1)"),
            q(A, "SELECT LAST_INSERT_ID()"),
            q(
                A,
                format!("INSERT INTO {auto} (v) VALUES (LAST_INSERT_ID())"),
            ),
            q(A, format!("SELECT * FROM {auto} ORDER BY id")),
            q(A, "SELECT LAST_INSERT_ID()"),
        ])
        .uvars(&["l"]);
    check(vec![sc]);
}

// ---------------------------------------------------------------------------
// 13. Limits that make statements fail: every answer is its own.

#[test]
fn s13_max_join_size_answers_are_not_shifted() {
    let t = tag("mjs");
    let five = format!("{t}_five");
    let sc = Scenario::new(&format!("{t} max_join_size = 1"))
        .fixture(five_rows(&five))
        .fixture(five_rows(&format!("{five}2")))
        .steps(vec![
            q(A, "SET max_join_size = 1"),
            q(A, "SET @a = 1"),
            q(A, "SELECT @a"),
            q(B, format!("SELECT COUNT(*) FROM {five} x, {five}2 y")),
            q(A, format!("SELECT COUNT(*) FROM {five} x, {five}2 y")),
            q(A, "SELECT 2"),
            q(A, "SET @a = 3"),
            q(B, "SELECT @a"),
            q(A, "SELECT @a, 4"),
            q(A, format!("SELECT * FROM {five} ORDER BY id")),
            q(A, "SELECT 5"),
            q(A, "SET sql_select_limit = 3"),
            q(A, format!("SELECT * FROM {five} ORDER BY id")),
            q(B, format!("SELECT * FROM {five} ORDER BY id")),
            q(A, "SELECT 6"),
        ])
        .uvars(&["a"]);
    let mst = Scenario::new(&format!(
        "{t} max_statement_time = 0.2 s, SLEEP interrupted"
    ))
    .steps(vec![
        q(A, "SET max_statement_time = 0.2"),
        q(A, "SELECT SLEEP(1)"),
        q(A, "SET @a = 1"),
        q(A, "SELECT @a"),
        q(B, "SELECT SLEEP(0.3)"),
        q(A, "SELECT 2"),
        q(A, "SELECT @@max_statement_time"),
        q(B, "SELECT @@max_statement_time"),
    ])
    .uvars(&["a"]);
    check(vec![sc, mst]);
}

/// With a 1 µs statement time limit, whether a statement is interrupted is
/// up to timing, so this compares each answer with its own query: either
/// ERR 1969 or the right value, never the answer to another statement.
#[test]
fn s13_tiny_max_statement_time_answers_are_not_shifted() {
    let _shared = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    let mut problems = Vec::new();
    let mut stats = Vec::new();
    for n in [0usize, 1, 4] {
        let f = (n > 0).then(|| start_funnel(n, ""));
        let target = match &f {
            Some(f) => Target::Funnel(f.port, n),
            None => Target::Direct,
        };
        let mut a = target.connect();
        let mut b = target.connect();
        let set = run_sql(&mut a, "SET max_statement_time = 0.000001", &[]);
        assert!(!set.starts_with("ERR"), "{}: {set}", target.label());
        let mut interrupted = 0;
        let mut a_val: Option<usize> = None;
        for i in 0..60 {
            let label = target.label();
            let mut expect = |who: &str, got: String, ok: &[String]| {
                if got.contains("ERR 1969") {
                    interrupted += 1;
                    return false;
                }
                if !ok.iter().any(|o| got.contains(o.as_str())) {
                    problems.push(format!(
                        "{label} {who} step {i}: got {got}, want one of {ok:?} or ERR 1969"
                    ));
                }
                true
            };
            let got = run_sql(&mut a, &format!("SELECT {i} + 1000"), &[]);
            expect("A SELECT", got, &[format!("rows[('{}')]", i + 1000)]);
            let got = run_sql(&mut a, &format!("SET @a = {i}"), &[]);
            if expect("A SET", got, &["affected=0".into()]) {
                a_val = Some(i);
            }
            let got = run_sql(&mut a, "SELECT @a", &[]);
            let want = match a_val {
                Some(v) => format!("rows[('{v}')]"),
                None => "rows[(NULL)]".into(),
            };
            expect("A SELECT @a", got, &[want]);
            let got = run_sql(&mut b, &format!("SELECT {i} + 2000, @a"), &[]);
            if !got.contains(&format!("rows[('{}', NULL)]", i + 2000)) {
                problems.push(format!("{label} B step {i}: {got}"));
            }
        }
        stats.push(format!(
            "{}: {interrupted} of 180 interrupted",
            target.label()
        ));
        drop((a, b));
    }
    eprintln!(
        "[isolation] max_statement_time = 1 µs: {}",
        stats.join("; ")
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// KILL QUERY aimed at an idle client: whatever mysqld does with it, the
// funnel must do the same, and it must not hit another client's statement.

#[test]
fn s13_kill_query_of_an_idle_client() {
    let t = tag("kq");
    let sc = Scenario::new(&format!("{t} KILL QUERY of an idle client"))
        .steps(vec![
            q(A, "SELECT 1"),
            q(B, "KILL QUERY {id:A}"),
            q(B, "SELECT 'b after kill'"),
            q(A, "SELECT 2"),
            q(A, "SELECT 3"),
            q(B, "KILL QUERY {id:B}"),
            q(B, "SELECT 'b after killing itself'"),
            q(A, "SET @k = 4"),
            q(B, "KILL QUERY {id:A}"),
            q(B, "SET @k = 5"),
            q(B, "SELECT @k"),
            q(A, "SELECT @k"),
        ])
        .uvars(&["k"]);
    check(vec![sc]);
}

// ---------------------------------------------------------------------------
// 16. Other ways to change the session: user variables set by statements
// other than SET, SET STATEMENT ... FOR (must not persist), a trigger that
// changes a session variable.

#[test]
fn s16_other_ways_to_change_the_session() {
    let t = tag("oth");
    let five = format!("{t}_five");
    let uvars = Scenario::new(&format!("{t} user variables set without SET"))
        .fixture(five_rows(&five))
        .steps(vec![
            q(A, "SELECT 5 INTO @si"),
            q(B, "SELECT @si"),
            q(A, "SELECT @si"),
            q(A, "DO @sc := 7"),
            q(B, "SELECT @sc"),
            q(A, "SELECT @sc"),
            q(
                A,
                format!("SELECT id FROM {five} WHERE (@sd := id) >= 4 ORDER BY id"),
            ),
            q(B, "SELECT @sd"),
            q(A, "SELECT @sd"),
            q(A, format!("SET @sb = (SELECT COUNT(*) FROM {five})")),
            q(B, "SELECT @sb"),
            q(A, "SELECT @sb"),
            q(A, format!("SELECT MAX(id) INTO @sm FROM {five}")),
            q(B, "SELECT @sm"),
            q(A, "SELECT @sm"),
            q(A, "SELECT @sa := 'assigned', @sa2 := 2.5"),
            q(B, "SELECT @sa, @sa2"),
            q(A, "SELECT @sa, @sa2"),
        ])
        .uvars(&["si", "sc", "sd", "sb", "sm", "sa", "sa2"]);
    let set_statement = Scenario::new(&format!("{t} SET STATEMENT ... FOR")).steps(vec![
        q(
            A,
            format!("SET STATEMENT sql_select_limit = 1 FOR SELECT * FROM {five} ORDER BY id"),
        ),
        q(A, format!("SELECT * FROM {five} ORDER BY id")),
        q(B, format!("SELECT * FROM {five} ORDER BY id")),
        q(
            A,
            "SET STATEMENT time_zone = '+01:00' FOR SELECT @@time_zone",
        ),
        q(A, "SELECT @@time_zone"),
        q(B, "SELECT @@time_zone"),
        q(
            A,
            "SET @@session.sql_select_limit = 2, @@local.time_zone = '+02:00'",
        ),
        q(B, format!("SELECT * FROM {five} ORDER BY id")),
        q(A, format!("SELECT * FROM {five} ORDER BY id")),
        q(A, "SELECT @@time_zone"),
        q(B, "SELECT @@time_zone"),
    ]);
    let mut scs = vec![uvars, set_statement];
    // A trigger that changes a session variable, if MariaDB allows it.
    let mut r = mysql_direct("root", "");
    let trg = format!("{t}_trg");
    let created = r
        .query_drop(format!(
            "CREATE TABLE {trg} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
        ))
        .and_then(|_| {
            r.query_drop(format!(
                "CREATE TRIGGER {trg}_ai AFTER INSERT ON {trg} FOR EACH ROW \
                 SET SESSION sql_select_limit = 2"
            ))
        });
    match created {
        Ok(()) => scs.push(
            Scenario::new(&format!("{t} trigger sets a session variable"))
                .reset(format!("TRUNCATE TABLE {trg}"))
                .steps(vec![
                    q(A, format!("INSERT INTO {trg} (v) VALUES (1)")),
                    q(B, format!("SELECT * FROM {five} ORDER BY id")),
                    q(A, format!("SELECT * FROM {five} ORDER BY id")),
                    q(B, "SELECT @@sql_select_limit"),
                    q(A, "SELECT @@sql_select_limit"),
                ]),
        ),
        Err(e) => eprintln!(
            "[isolation] MariaDB refuses SET SESSION in a trigger: {}",
            err_str(&e)
        ),
    }
    check(scs);
}

// ---------------------------------------------------------------------------
// 14. COM_SET_OPTION with an unknown option.

mod raw {
    use super::common::raw::{Login, Wire, CLIENT_MULTI_STATEMENTS};
    use std::time::Duration;

    pub struct Raw {
        wire: Wire,
    }

    impl Raw {
        pub fn connect(port: u16, user: &str, pw: &str, db: &str) -> Raw {
            let mut wire = Wire::connect(port, Duration::from_secs(30), None);
            let g = wire.read_greeting().expect("greeting");
            let login = Login::new(user, pw, Some(db)).caps(CLIENT_MULTI_STATEMENTS);
            match wire.login(&g, &login).expect("login") {
                Ok(_) => Raw { wire },
                Err(r) => panic!("login failed: {}", describe(&r)),
            }
        }

        /// Sends a command and describes the first packet of the answer.
        pub fn command(&mut self, p: &[u8]) -> String {
            self.wire.command(p).expect("write");
            describe(&self.wire.read_packet().expect("read").1)
        }
    }

    pub fn describe(p: &[u8]) -> String {
        match p.first() {
            Some(0x00) => "OK".into(),
            Some(0xfe) if p.len() < 9 => "EOF".into(),
            Some(0xff) => {
                let code = u16::from_le_bytes([p[1], p[2]]);
                let msg = if p.get(3) == Some(&b'#') {
                    &p[9..]
                } else {
                    &p[3..]
                };
                format!("ERR {code}: {}", String::from_utf8_lossy(msg))
            }
            _ => format!("packet {:02x?}", &p[..p.len().min(16)]),
        }
    }
}

#[test]
fn s14_com_set_option_with_an_unknown_option() {
    let _shared = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    let script: Vec<(&str, Vec<u8>)> = vec![
        ("COM_SET_OPTION 0 (multi-statements on)", vec![0x1b, 0, 0]),
        ("COM_PING", vec![0x0e]),
        ("COM_SET_OPTION 1 (multi-statements off)", vec![0x1b, 1, 0]),
        ("COM_SET_OPTION 2 (unknown)", vec![0x1b, 2, 0]),
        ("COM_PING", vec![0x0e]),
        ("COM_SET_OPTION 0xffff (unknown)", vec![0x1b, 0xff, 0xff]),
        ("COM_PING", vec![0x0e]),
    ];
    let run = |port: u16| -> Vec<String> {
        let mut c = raw::Raw::connect(port, USER_A, PASS_A, TEST_DB);
        script.iter().map(|(_, p)| c.command(p)).collect()
    };
    let direct = run(common::mariadb().port);
    let mut failures = Vec::new();
    for n in [1, 4] {
        let f = start_funnel(n, "");
        let got = run(f.port);
        for (((what, _), want), have) in script.iter().zip(&direct).zip(&got) {
            if want != have {
                failures.push(format!(
                    "connections = {n}: {what}\n    direct: {want}\n    funnel: {have}"
                ));
            }
        }
    }
    if verbose() {
        eprintln!("COM_SET_OPTION direct: {direct:?}");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 15. Prepared statement limits.

/// Restores max_prepared_stmt_count when dropped.
struct RestorePsLimit(i64);

impl Drop for RestorePsLimit {
    fn drop(&mut self) {
        let _ = mysql_direct("root", "")
            .query_drop(format!("SET GLOBAL max_prepared_stmt_count = {}", self.0));
    }
}

fn prepared_on_server() -> i64 {
    common::sql::global_status(&mut mysql_direct("root", ""), "Prepared_stmt_count")
}

/// Prepares `n` distinct statements on one client; returns the index and
/// error of the first failure, if any.
fn prepare_many(port: u16, n: usize) -> Option<(usize, String)> {
    let opts = OptsBuilder::from_opts(common::opts(USER_A, PASS_A, port)).stmt_cache_size(0);
    let mut c = Conn::new(opts).expect("connect");
    for i in 0..n {
        if let Err(e) = c.prep(format!("SELECT ? + {i}")) {
            return Some((i, err_str(&e)));
        }
    }
    None
}

#[test]
fn s15_prepared_statement_limit_is_reached_as_directly() {
    let _excl = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    let limit: Option<i64> = mysql_direct("root", "")
        .query_first("SELECT @@global.max_prepared_stmt_count")
        .unwrap();
    let _restore = RestorePsLimit(limit.unwrap());
    let settle = |what: &str| -> i64 {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let n = prepared_on_server();
            if n == 0 || Instant::now() > deadline {
                if n != 0 {
                    eprintln!("[isolation] {what}: {n} prepared statements remain on mysqld");
                }
                return n;
            }
            thread::sleep(Duration::from_millis(50));
        }
    };
    let mut failures = Vec::new();
    for (count, global) in [(20_000usize, None), (1100, Some(1000))] {
        if let Some(g) = global {
            mysql_direct("root", "")
                .query_drop(format!("SET GLOBAL max_prepared_stmt_count = {g}"))
                .unwrap();
        }
        let direct = prepare_many(common::mariadb().port, count);
        let left_direct = settle("after the direct client left");
        for n in [1usize, 4] {
            let f = start_funnel(n, "");
            let got = prepare_many(f.port, count);
            if got != direct {
                failures.push(format!(
                    "{count} prepares, max_prepared_stmt_count = {}, connections = {n}: \
                     first failure direct {direct:?}, funnel {got:?}",
                    global.unwrap_or(limit.unwrap())
                ));
            }
            // The backends' copies of a client's statements go with it.
            let left = settle(&format!("after the funnel client left (connections = {n})"));
            if left > left_direct {
                failures.push(format!(
                    "{count} prepares, connections = {n}: {left} prepared statements \
                     stay on mysqld after the client left (direct: {left_direct})"
                ));
            }
            // Funnel gone: its backends' statements go with it.
            drop(f);
            settle("after the funnel stopped");
        }
        eprintln!("[isolation] {count} prepares: direct first failure {direct:?}");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

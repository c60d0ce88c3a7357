//! `KILL` inside multi-statement queries, and the process list, through the
//! funnel compared with a direct connection to the private MariaDB.
//!
//! The funnel's connection ids are what its clients see and KILL, so a
//! query such as `SELECT 1; KILL 12; SELECT 2` runs in parts (the statements
//! before the KILL on a backend, the KILL by the funnel, the rest after);
//! the client must get exactly the packets mysqld would send for the whole
//! query. Each script runs with fresh connections directly and through
//! funnels with one and two backend connections; every packet of every
//! answer (sequence ids, status flags, errors) is compared, with and without
//! CLIENT_DEPRECATE_EOF.

mod common;

use common::{FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};

// The tests of this binary run one at a time (common::serial): a direct
// process list must not show the backend connections of another test's
// funnel.

fn start_funnel(connections: usize) -> FunnelProcess {
    FunnelConfig::new()
        .pool(&format!("connections = {connections}"))
        .rust_log("warn")
        .start()
}

mod raw {
    pub use super::common::raw::CLIENT_DEPRECATE_EOF as DEPRECATE_EOF;
    use super::common::raw::{hex, ok_status, Login, Wire, CLIENT_MULTI_STATEMENTS};
    use std::time::Duration;

    pub struct Raw {
        wire: Wire,
        pub caps: u32,
        pub id: u32,
    }

    impl Raw {
        pub fn connect(port: u16, user: &str, pw: &str, db: &str, extra_caps: u32) -> Raw {
            let mut wire = Wire::connect(port, Duration::from_secs(30), None);
            let g = wire.read_greeting().expect("greeting");
            let login = Login::new(user, pw, Some(db)).caps(CLIENT_MULTI_STATEMENTS | extra_caps);
            match wire.login(&g, &login).expect("login answer") {
                Ok(_) => Raw {
                    wire,
                    caps: login.sent_capabilities(),
                    id: g.connection_id,
                },
                Err(r) => panic!("login failed: {r:02x?}"),
            }
        }

        /// A packet and its sequence id, or `None` when the connection is
        /// closed.
        fn read(&mut self) -> Option<(u8, Vec<u8>)> {
            self.wire.read_packet().ok()
        }

        fn command(&mut self, p: &[u8]) {
            let _ = self.wire.command(p);
        }

        /// Every packet of the answer to `sql` (all its result sets), as
        /// `seq:hex`, with "closed" when the connection closes.
        pub fn query(&mut self, sql: &str) -> Vec<String> {
            let mut q = vec![3u8];
            q.extend_from_slice(sql.as_bytes());
            self.command(&q);
            self.answer()
        }

        pub fn ping(&mut self) -> Vec<String> {
            self.command(&[0x0e]);
            self.answer()
        }

        fn answer(&mut self) -> Vec<String> {
            let deprecate = self.caps & DEPRECATE_EOF != 0;
            let mut out = Vec::new();
            let mut next = |out: &mut Vec<String>| -> Option<Vec<u8>> {
                match self.read() {
                    Some((seq, p)) => {
                        out.push(format!("{seq}:{}", hex(&p)));
                        Some(p)
                    }
                    None => {
                        out.push("closed".into());
                        None
                    }
                }
            };
            loop {
                let Some(first) = next(&mut out) else {
                    return out;
                };
                let status = match first[0] {
                    0xff => return out,
                    0x00 => ok_status(&first),
                    _ => {
                        // A result set: column definitions, then rows.
                        let n = first[0] as usize;
                        for _ in 0..n {
                            if next(&mut out).is_none() {
                                return out;
                            }
                        }
                        if !deprecate && next(&mut out).is_none() {
                            return out;
                        }
                        loop {
                            let Some(p) = next(&mut out) else {
                                return out;
                            };
                            if p[0] == 0xff {
                                return out;
                            }
                            if p[0] == 0xfe && p.len() < 9 && !deprecate {
                                break u16::from_le_bytes([p[3], p[4]]);
                            }
                            if p[0] == 0xfe && deprecate {
                                break ok_status(&p);
                            }
                        }
                    }
                };
                if status & 8 == 0 {
                    return out;
                }
            }
        }
    }
}

use raw::Raw;

/// Multi-statement scripts; `{a}` is the running client's own id, `{b}`
/// the id of another (idle) connection of the same user.
const SCRIPTS: &[&str] = &[
    "SELECT 1; KILL QUERY {b}; SELECT 2",
    "KILL QUERY {b}; SELECT 2",
    "KILL {b}; SELECT 3",
    "SELECT 1; KILL {b}; SELECT 3",
    "SELECT 1; KILL QUERY {b}",
    "SELECT 1; KILL QUERY {b};",
    "SELECT 1; KILL QUERY {b}; -- a comment",
    "SELECT 1; KILL QUERY {a}; SELECT 2",
    "KILL QUERY {a}; SELECT 2",
    "SELECT 1; KILL {a}; SELECT 2",
    "KILL CONNECTION {a}; SELECT 2",
    "SELECT 1; KILL 999999; SELECT 2",
    "SELECT 1; KILL QUERY 999999",
    "DO 1; KILL QUERY {b}; KILL QUERY {b}; SELECT 7 AS seven; KILL QUERY {b}",
    "SELECT * FROM no_such_table_here; KILL {b}; SELECT 1",
    "SET @x = 5; KILL QUERY {b}; SELECT @x, 'a;b' AS s",
    "SELECT 1 /* KILL 5; */; SELECT 'KILL 5'",
];

/// What the two clients see for one script: the answer to it, then
/// whether each connection still answers a ping.
fn run_script(port: u16, script: &str, caps: u32) -> Vec<String> {
    let mut a = Raw::connect(port, USER_A, PASS_A, TEST_DB, caps);
    let mut b = Raw::connect(port, USER_A, PASS_A, TEST_DB, caps);
    let sql = script
        .replace("{a}", &a.id.to_string())
        .replace("{b}", &b.id.to_string());
    let mut seen = a.query(&sql);
    seen.push("-- a ping".into());
    seen.extend(a.ping());
    seen.push("-- b ping".into());
    seen.extend(b.ping());
    seen
}

#[test]
fn kill_inside_multi_statement_queries_is_answered_as_by_mysqld() {
    let _serial = common::serial();
    let db = common::mariadb();
    let funnels = [start_funnel(1), start_funnel(2)];
    let mut failures = Vec::new();
    for caps in [0, raw::DEPRECATE_EOF] {
        for script in SCRIPTS {
            let direct = run_script(db.port, script, caps);
            for (f, n) in funnels.iter().zip([1, 2]) {
                let got = run_script(f.port, script, caps);
                if got != direct {
                    failures.push(format!(
                        "{script:?} (connections = {n}, deprecate_eof = {}):\n  direct: {direct:?}\n  funnel: {got:?}",
                        caps != 0
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `(Id, User, db, Command, Info)` of every row of `sql`'s answer.
type PlRow = (u64, String, Option<String>, String, Option<String>);

fn processlist(c: &mut mysql::Conn, sql: &str) -> Vec<PlRow> {
    use mysql::prelude::Queryable;
    let rows: Vec<mysql::Row> = c.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|mut r| {
            (
                r.take::<u64, _>("Id").unwrap(),
                r.take::<String, _>("User").unwrap(),
                r.take::<Option<String>, _>("db").unwrap(),
                r.take::<String, _>("Command").unwrap(),
                r.take::<Option<String>, _>("Info").unwrap(),
            )
        })
        .collect()
}

fn connection_id(c: &mut mysql::Conn) -> u64 {
    use mysql::prelude::Queryable;
    c.query_first("SELECT CONNECTION_ID()").unwrap().unwrap()
}

/// How a query on a killed connection fails: mysqld's error code, or the
/// connection is gone.
fn failure(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(e) => format!("ERR {}", e.code),
        _ => "connection lost".into(),
    }
}

/// One user's view of the process list, then KILL of its other connection
/// found there, as PyMySQL's test_issue_36 does; `port` is mysqld's or a
/// funnel's. Returns what may be compared with a direct connection.
fn find_and_kill(port: u16) -> Vec<String> {
    use mysql::prelude::Queryable;
    let user = |u: &str, p: &str| mysql::Conn::new(common::opts(u, p, port)).unwrap();
    let (ub, pb) = (common::USER_B, common::PASS_B);
    let mut me = user(ub, pb);
    let mut other = user(ub, pb);
    let mut third = user(ub, pb);
    // Another user's connection: not visible without PROCESS.
    let mut stranger = user(USER_A, PASS_A);
    stranger.query_drop("DO 1").unwrap();
    let ids: Vec<u64> = [&mut me, &mut other, &mut third]
        .into_iter()
        .map(connection_id)
        .collect();
    let mut seen = Vec::new();
    for sql in ["SHOW PROCESSLIST", "SHOW FULL PROCESSLIST"] {
        // mysqld marks a thread `Sleep` only after it has sent its answer:
        // on a busy machine another connection may still read `Query` for
        // a moment after its client got the result. Look again then.
        let mut rows = processlist(&mut me, sql);
        for _ in 0..50 {
            if rows.iter().all(|r| r.0 == ids[0] || r.3 != "Query") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            rows = processlist(&mut me, sql);
        }
        let mut listed: Vec<u64> = rows.iter().map(|r| r.0).collect();
        listed.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(
            listed, want,
            "{sql} on port {port} lists exactly this user's connections: {rows:?}"
        );
        let mut summary: Vec<String> = rows
            .iter()
            .map(|r| {
                let who = if r.0 == ids[0] { "me" } else { "other" };
                format!("{who} {} {:?} {} {:?}", r.1, r.2, r.3, r.4)
            })
            .collect();
        summary.sort();
        seen.push(format!("{sql}: {summary:?}"));
    }
    // Find the other connection by its id in the list, and kill it.
    let target = processlist(&mut me, "SHOW PROCESSLIST")
        .into_iter()
        .map(|r| r.0)
        .find(|&id| id == ids[1])
        .expect("the other connection is listed");
    me.query_drop(format!("KILL {target}")).unwrap();
    let killed = other.query_drop("SELECT 1");
    seen.push(format!(
        "killed connection: {}",
        killed
            .as_ref()
            .map_or_else(failure, |_| "still works".into())
    ));
    third.query_drop("SELECT 1").unwrap();
    // mysqld lists a killed thread (command `Killed`) until the thread has
    // finished tearing down, which on a busy machine can take a moment after
    // its client saw the connection drop: look again for up to 2 s.
    let mut listed_after = true;
    for _ in 0..100 {
        listed_after = processlist(&mut me, "SHOW PROCESSLIST")
            .into_iter()
            .any(|r| r.0 == target);
        if !listed_after {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    seen.push(format!("killed one listed after: {listed_after}"));
    seen
}

#[test]
fn show_processlist_lists_the_users_funnel_connections_to_find_and_kill() {
    let _serial = common::serial();
    let db = common::mariadb();
    let direct = find_and_kill(db.port);
    for n in [1, 2] {
        let f = start_funnel(n);
        let got = find_and_kill(f.port);
        assert_eq!(got, direct, "connections = {n}");
    }
}

#[test]
fn show_processlist_columns_are_typed_as_by_mysqld() {
    let _serial = common::serial();
    let db = common::mariadb();
    let f = start_funnel(1);
    for caps in [0, raw::DEPRECATE_EOF] {
        for sql in ["SHOW PROCESSLIST", "SHOW FULL PROCESSLIST"] {
            let head = |port: u16| -> Vec<String> {
                let mut c = Raw::connect(port, common::USER_B, common::PASS_B, TEST_DB, caps);
                let all = c.query(sql);
                // Column count and definitions (and their EOF), then the
                // last packet (status); rows differ by nature.
                let mut v: Vec<String> = all[..if caps == 0 { 11 } else { 10 }].to_vec();
                let last = all.last().unwrap();
                v.push(last.split_once(':').unwrap().1.to_string());
                v
            };
            assert_eq!(head(f.port), head(db.port), "{sql}, caps {caps:#x}");
        }
    }
}

/// `(id, User, Command)` rows for `ids` only, in the order of `ids`, from
/// `sql`'s answer (the id first, then the user, and a column named
/// `Command` in any case).
fn rows_for(c: &mut mysql::Conn, sql: &str, ids: &[u64]) -> Vec<(u64, String, String)> {
    use mysql::prelude::Queryable;
    let rows: Vec<(u64, String, String)> = c
        .query_map(sql, |r: mysql::Row| {
            let at = r
                .columns_ref()
                .iter()
                .position(|c| c.name_str().eq_ignore_ascii_case("command"))
                .unwrap();
            let (id, user, command): (u64, String, String) =
                (r.get(0).unwrap(), r.get(1).unwrap(), r.get(at).unwrap());
            (id, user, command)
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    ids.iter()
        .map(|id| {
            rows.iter().find(|r| r.0 == *id).cloned().unwrap_or((
                *id,
                "missing".into(),
                String::new(),
            ))
        })
        .collect()
}

/// Every id `sql` lists.
fn listed_ids(c: &mut mysql::Conn, sql: &str) -> Vec<u64> {
    use mysql::prelude::Queryable;
    let mut ids: Vec<u64> = c
        .query_map(sql, |r: mysql::Row| r.get::<u64, _>(0).unwrap())
        .unwrap();
    ids.sort_unstable();
    ids
}

/// What a user with PROCESS and CONNECTION ADMIN (USER_A: ALL PRIVILEGES
/// ON *.*) and one without (USER_B) see and may KILL; `port` is mysqld's
/// or a funnel's. Returns what is compared with a direct connection, and
/// the ids the privileged user listed beyond the test's own connections.
fn privileged_view(port: u16) -> (Vec<String>, Vec<u64>) {
    use mysql::prelude::Queryable;
    let user = |u: &str, p: &str| mysql::Conn::new(common::opts(u, p, port)).unwrap();
    let (ub, pb) = (common::USER_B, common::PASS_B);
    let mut a1 = user(USER_A, PASS_A);
    let mut a2 = user(USER_A, PASS_A);
    let mut b1 = user(ub, pb);
    let mut b2 = user(ub, pb);
    let mut b3 = user(ub, pb);
    let ids: Vec<u64> = [&mut a1, &mut a2, &mut b1, &mut b2, &mut b3]
        .into_iter()
        .map(connection_id)
        .collect();
    let name = |id: u64| {
        ["a1", "a2", "b1", "b2", "b3"][ids.iter().position(|&i| i == id).unwrap()].to_string()
    };
    let mut seen = Vec::new();
    let mut extra = Vec::new();
    const SHOW: &str = "SHOW PROCESSLIST";
    const SHOW_FULL: &str = "SHOW FULL PROCESSLIST";
    const IS: &str = "SELECT ID, USER, COMMAND, INFO FROM information_schema.PROCESSLIST";
    const IS_ALIAS: &str =
        "SELECT p.ID, p.USER AS u, `p`.COMMAND FROM INFORMATION_SCHEMA.`PROCESSLIST` p WHERE p.TIME >= 0 ORDER BY p.ID DESC";
    for sql in [SHOW, SHOW_FULL, IS, IS_ALIAS] {
        // With PROCESS: everyone's connections (on mysqld, its own threads
        // and the funnel's backends too; those must not show through it).
        let rows = rows_for(&mut a1, sql, &ids);
        // Another connection's Command may still say Query for a moment
        // after its answer on mysqld: only the asking one's is compared.
        let rows: Vec<String> = rows
            .iter()
            .map(|(id, u, c)| match *id == ids[0] {
                true => format!("{} {u} {c}", name(*id)),
                false => format!("{} {u}", name(*id)),
            })
            .collect();
        seen.push(format!("{sql} as a1: {rows:?}"));
        extra.extend(
            listed_ids(&mut a1, sql)
                .into_iter()
                .filter(|id| !ids.contains(id)),
        );
        // Without: its own user's only, exactly.
        let listed = listed_ids(&mut b1, sql);
        let names: Vec<String> = listed.iter().map(|&id| name(id)).collect();
        seen.push(format!("{sql} as b1: {names:?}"));
    }
    // The asking connection's own row, by CONNECTION_ID() (the funnel's id).
    let own: Vec<(String, Option<String>, Option<String>, i64)> = b1
        .query(
            "SELECT COMMAND, STATE, INFO, TIME FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
        )
        .unwrap();
    seen.push(format!("own row: {own:?}"));
    let count: Option<u64> = b1
        .query_first("SELECT COUNT(*) FROM (SELECT 1 FROM information_schema.PROCESSLIST WHERE USER = CURRENT_USER() OR USER = SUBSTRING_INDEX(USER(), '@', 1)) t")
        .unwrap();
    seen.push(format!("b1 counts its user's: {count:?}"));
    // Column names as mysqld's table has them.
    let cols: Vec<String> = b1
        .query_iter("SELECT * FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        .unwrap()
        .columns()
        .as_ref()
        .iter()
        .map(|c| c.name_str().to_string())
        .collect();
    seen.push(format!("columns: {cols:?}"));
    // Without CONNECTION ADMIN no KILL of another user's connection ...
    let denied = b1.query_drop(format!("KILL {}", ids[1]));
    seen.push(format!(
        "b1 KILL a2: {}",
        denied.as_ref().map_or_else(failure, |_| "OK".into())
    ));
    // ... with it, yes, whoever's: found in the list, then killed.
    let target = listed_ids(&mut a1, IS)
        .into_iter()
        .find(|&id| id == ids[3])
        .expect("b2 is listed for a1");
    let killed = a1.query_drop(format!("KILL {target}"));
    seen.push(format!(
        "a1 KILL b2: {}",
        killed.as_ref().map_or_else(failure, |_| "OK".into())
    ));
    let after = b2.query_drop("SELECT 1");
    seen.push(format!(
        "b2 after: {}",
        after
            .as_ref()
            .map_or_else(failure, |_| "still works".into())
    ));
    let q = a1.query_drop(format!("KILL QUERY {}", ids[4]));
    seen.push(format!(
        "a1 KILL QUERY b3 (idle): {}",
        q.as_ref().map_or_else(failure, |_| "OK".into())
    ));
    b3.query_drop("SELECT 1").unwrap();
    a2.query_drop("SELECT 1").unwrap();
    (seen, extra)
}

#[test]
fn privileges_decide_whose_connections_are_listed_and_killed_as_on_mysqld() {
    let _serial = common::serial();
    let db = common::mariadb();
    let (direct, _) = privileged_view(db.port);
    for n in [1, 2] {
        let f = start_funnel(n);
        let (got, extra) = privileged_view(f.port);
        assert_eq!(got, direct, "connections = {n}");
        assert!(
            extra.is_empty(),
            "connections = {n}: the funnel listed ids that are none of its clients' (backends?): {extra:?}"
        );
    }
}

/// find_and_kill's flow, the other connection found in
/// information_schema.PROCESSLIST inside a larger query.
#[test]
fn information_schema_processlist_finds_the_connection_to_kill() {
    use mysql::prelude::Queryable;
    let _serial = common::serial();
    let db = common::mariadb();
    let run = |port: u16| -> Vec<String> {
        let user = || mysql::Conn::new(common::opts(common::USER_B, common::PASS_B, port)).unwrap();
        let (mut me, mut other) = (user(), user());
        let other_id = connection_id(&mut other);
        // mysqld marks a thread `Sleep` only after it has sent its answer:
        // on a busy machine the other connection may still read `Query`
        // for a moment after its client got the result. Look again then.
        let mut found: Vec<(u64, String)> = Vec::new();
        for _ in 0..50 {
            found = me
                .query(
                    "SELECT ID, COMMAND FROM information_schema.PROCESSLIST \
                     WHERE ID <> CONNECTION_ID() AND USER = 'funnel_b' ORDER BY ID",
                )
                .unwrap();
            if found.iter().all(|(_, c)| c != "Query") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut seen = vec![format!(
            "found: {:?}",
            found
                .iter()
                .map(|(id, c)| (*id == other_id, c.clone()))
                .collect::<Vec<_>>()
        )];
        let (id, _) = found[0].clone();
        // The KILL and a look at the list again, in one query.
        let mut r = me
            .query_iter(format!(
                "KILL {id}; SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id} AND COMMAND <> 'Killed'"
            ))
            .unwrap();
        while let Some(set) = r.iter() {
            for row in set {
                let row = row.unwrap();
                seen.push(format!("row: {:?}", row.unwrap()));
            }
        }
        drop(r);
        let after = other.query_drop("SELECT 1");
        seen.push(format!(
            "killed: {}",
            after
                .as_ref()
                .map_or_else(failure, |_| "still works".into())
        ));
        seen
    };
    let direct = run(db.port);
    for n in [1, 2] {
        let f = start_funnel(n);
        assert_eq!(run(f.port), direct, "connections = {n}");
    }
}

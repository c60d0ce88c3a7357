//! A client's `wait_timeout` / `interactive_timeout` govern that client's
//! own idle time at the funnel, never a shared backend: checked against a
//! direct connection to the private MariaDB (what a client sees when it
//! idles too long, what it reads back, what an interactive client gets),
//! and by watching that mysqld closes none of the funnel's backends.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::{FunnelConfig, FunnelProcess, MariaDb, TEST_DB};
use mysql::consts::CapabilityFlags;
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

/// A MariaDB account of the test's own (`ALL ON funnel_test.*`), so that
/// its connections in PROCESSLIST are this test's alone.
fn own_user(db: &MariaDb, prefix: &str) -> (String, String) {
    let user = common::unique_name(prefix);
    let pw = format!("{user}_pw");
    db.admin_sql(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
         GRANT ALL ON {TEST_DB}.* TO '{user}'@'127.0.0.1'"
    ));
    (user, pw)
}

fn start_funnel(db: &MariaDb, user: &str, pw: &str, pool: &str) -> FunnelProcess {
    FunnelConfig::empty()
        .backend_port(db.port)
        .pool(pool)
        .user(user, pw, &[])
        .start()
}

fn conn_at(port: u16, user: &str, pw: &str, interactive: bool) -> Conn {
    let mut o = OptsBuilder::from_opts(common::opts(user, pw, port));
    if interactive {
        o = o.additional_capabilities(CapabilityFlags::CLIENT_INTERACTIVE);
    }
    Conn::new(o).unwrap_or_else(|e| panic!("connect to {port}: {e}"))
}

fn two(c: &mut Conn, sql: &str) -> (u64, u64) {
    common::sql::one(c, sql)
}

fn one(c: &mut Conn, sql: &str) -> String {
    common::sql::one(c, sql)
}

/// What a client that set `wait_timeout = 1` and then waited got: the
/// bytes it received, how its connection ended, and after how long.
#[derive(Debug)]
struct IdleEnd {
    bytes: Vec<u8>,
    how: &'static str,
    after: Duration,
}

fn idle_until_closed(r: &mut raw::Raw) -> IdleEnd {
    r.wire
        .stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let t0 = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let how = loop {
        match r.wire.stream.read(&mut buf) {
            Ok(0) => break "closed (FIN)",
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("still open after {:?}: {e}", t0.elapsed()),
        }
    };
    IdleEnd {
        bytes,
        how,
        after: t0.elapsed(),
    }
}

#[test]
fn idle_client_is_closed_as_mysqld_closes_it_and_backends_stay() {
    let db = common::mariadb();
    let (user, pw) = own_user(db, "tmo_idle");

    // Directly: what MariaDB does to a client idle past its wait_timeout.
    let mut direct = raw::Raw::open(db.port, &user, &pw, false);
    assert_eq!(direct.query("SET wait_timeout = 1"), raw::Reply::Ok);
    let direct_end = idle_until_closed(&mut direct);
    assert!(
        direct_end.after >= Duration::from_millis(900) && direct_end.after < Duration::from_secs(3),
        "{direct_end:?}"
    );

    // Through a funnel with one shared backend.
    let f = start_funnel(db, &user, &pw, "connections = 1");
    let mut others = conn_at(f.port, &user, &pw, false);
    let mut large = conn_at(f.port, &user, &pw, false);
    let mut a = raw::Raw::open(f.port, &user, &pw, false);
    assert_eq!(
        a.query("SELECT 'warm'"),
        raw::Reply::Rows(vec![vec![Some("warm".into())]])
    );
    let backends = db.threads_of(&user, None);
    assert_eq!(backends.len(), 1, "{backends:?}");
    assert_eq!(a.query("SET wait_timeout = 1"), raw::Reply::Ok);
    // Another client with a large value set after, on the same backend.
    large.query_drop("SET SESSION wait_timeout = 30").unwrap();
    others.query_drop("SELECT 1").unwrap();
    let funnel_end = idle_until_closed(&mut a);
    assert_eq!(
        (&funnel_end.bytes, funnel_end.how),
        (&direct_end.bytes, direct_end.how),
        "direct: {direct_end:?}, funnel: {funnel_end:?}"
    );
    assert!(
        funnel_end.after >= Duration::from_millis(900) && funnel_end.after < Duration::from_secs(3),
        "{funnel_end:?}"
    );
    // The others waited as long (and more): they are still there, and the
    // backend that ran `SET wait_timeout = 1` was not closed by mysqld.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(one(&mut others, "SELECT 'still here'"), "still here");
    assert_eq!(two(&mut large, "SELECT @@wait_timeout, 0"), (30, 0));
    assert_eq!(db.threads_of(&user, None), backends);

    // A client in a transaction (pinned to its own backend) is closed too,
    // and its transaction rolled back.
    let t = common::unique_name("tmo_t");
    others
        .query_drop(format!("CREATE TABLE {t} (x INT) ENGINE=InnoDB"))
        .unwrap();
    let mut p = raw::Raw::open(f.port, &user, &pw, true);
    assert_eq!(p.query("SET wait_timeout = 1"), raw::Reply::Ok);
    assert_eq!(p.query("BEGIN"), raw::Reply::Ok);
    assert_eq!(
        p.query(&format!("INSERT INTO {t} VALUES (1)")),
        raw::Reply::Ok
    );
    let pinned_end = idle_until_closed(&mut p);
    assert_eq!(pinned_end.how, direct_end.how, "{pinned_end:?}");
    assert!(pinned_end.bytes.is_empty(), "{pinned_end:?}");
    thread::sleep(Duration::from_millis(300));
    let n: u64 = others
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(one(&mut others, "SELECT 'still here'"), "still here");
}

#[test]
fn clients_read_their_own_timeouts() {
    let db = common::mariadb();
    let (user, pw) = own_user(db, "tmo_read");
    let f = start_funnel(db, &user, &pw, "connections = 1");
    let reads = [
        "SELECT @@wait_timeout, @@session.interactive_timeout",
        "SELECT @@SESSION.WAIT_TIMEOUT, @@interactive_timeout",
        "SELECT (SELECT VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES WHERE VARIABLE_NAME = 'WAIT_TIMEOUT'), \
         (SELECT SESSION_VALUE FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = 'INTERACTIVE_TIMEOUT')",
    ];
    // The same script directly and through the funnel: A and B share the
    // funnel's one backend.
    let mut seen = Vec::new();
    for port in [db.port, f.port] {
        let mut a = conn_at(port, &user, &pw, false);
        let mut b = conn_at(port, &user, &pw, false);
        let mut got: Vec<(u64, u64)> = Vec::new();
        a.query_drop("SET wait_timeout = 100, interactive_timeout = 200")
            .unwrap();
        for sql in reads {
            got.push(two(&mut a, sql));
            got.push(two(&mut b, sql));
        }
        let shown: Vec<(String, String)> = a.query("SHOW VARIABLES LIKE '%_timeout'").unwrap();
        for (name, v) in shown {
            if name == "wait_timeout" || name == "interactive_timeout" {
                got.push((v.parse().unwrap(), 0));
            }
        }
        b.query_drop("SET SESSION interactive_timeout = 7").unwrap();
        got.push(two(&mut a, reads[0]));
        got.push(two(&mut b, reads[0]));
        // Relative to the client's own value.
        a.query_drop("SET @@session.wait_timeout = @@session.wait_timeout + 1")
            .unwrap();
        got.push(two(&mut a, reads[0]));
        // In a transaction (pinned), and back to the default.
        a.query_drop("BEGIN").unwrap();
        got.push(two(&mut a, reads[0]));
        a.query_drop("COMMIT").unwrap();
        a.query_drop("SET wait_timeout = DEFAULT").unwrap();
        got.push(two(&mut a, reads[0]));
        got.push(two(&mut b, reads[1]));
        seen.push(got);
    }
    assert_eq!(
        seen[1], seen[0],
        "through the funnel (right) vs direct (left)"
    );
    assert!(seen[0].contains(&(100, 200)), "{:?}", seen[0]);
}

#[test]
fn interactive_clients_get_interactive_timeout() {
    // Global values of its own: a server for this test alone.
    let db = MariaDb::new();
    db.admin_sql("SET GLOBAL interactive_timeout = 2; SET GLOBAL wait_timeout = 50");
    let (user, pw) = own_user(&db, "tmo_inter");
    let f = start_funnel(&db, &user, &pw, "connections = 2");
    let read = "SELECT @@wait_timeout, @@interactive_timeout";
    let mut seen = Vec::new();
    for port in [db.port, f.port] {
        let mut inter = conn_at(port, &user, &pw, true);
        let mut plain = conn_at(port, &user, &pw, false);
        let mut got = vec![two(&mut inter, read), two(&mut plain, read)];
        // The login's value goes with a reset (as on MariaDB 10.11).
        let mut reset = conn_at(port, &user, &pw, true);
        reset.reset().unwrap();
        got.push(two(&mut reset, read));
        let mut changed = conn_at(port, &user, &pw, true);
        changed
            .change_user(
                mysql::ChangeUserOpts::default()
                    .with_user(Some(user.clone()))
                    .with_pass(Some(pw.clone())),
            )
            .unwrap();
        got.push(two(&mut changed, read));
        // The interactive client idles past 2 s, the other does not time out.
        thread::sleep(Duration::from_millis(3500));
        let inter_alive = inter.query_drop("SELECT 1").is_ok();
        let plain_alive = plain.query_drop("SELECT 1").is_ok();
        got.push((u64::from(inter_alive), u64::from(plain_alive)));
        seen.push(got);
    }
    assert_eq!(
        seen[1], seen[0],
        "through the funnel (right) vs direct (left)"
    );
    assert_eq!(seen[0][0], (2, 2));
    assert_eq!(seen[0][1], (50, 2));
    assert_eq!(seen[0][4], (0, 1));
}

/// Just enough of the protocol by hand ([`common::raw`]) to see what
/// arrives on the socket.
mod raw {
    use super::common::raw::{lossy_rows, Answer, Login, ReadFault, Wire, CLIENT_INTERACTIVE};
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Reply {
        Ok,
        Rows(Vec<Vec<Option<String>>>),
        Err(u16, String),
        Other(String),
    }

    /// A logged-in client.
    pub struct Raw {
        pub wire: Wire,
    }

    impl Raw {
        /// Connects to 127.0.0.1:`port` and logs in (database funnel_test);
        /// panics on failure.
        pub fn open(port: u16, user: &str, pw: &str, interactive: bool) -> Raw {
            let mut login = Login::new(user, pw, Some(super::TEST_DB));
            if interactive {
                login = login.caps(CLIENT_INTERACTIVE);
            }
            let (wire, _, _) = Wire::open(port, Duration::from_secs(20), &login);
            Raw { wire }
        }

        /// Runs a query whose answer is an OK, an ERR or rows.
        pub fn query(&mut self, sql: &str) -> Reply {
            self.wire.send_query(sql.as_bytes()).unwrap();
            match self.wire.read_result() {
                Ok(Answer::Ok { .. }) => Reply::Ok,
                Ok(Answer::Err(p)) => Reply::Err(
                    u16::from_le_bytes([p[1], p[2]]),
                    String::from_utf8_lossy(&p[3..]).into_owned(),
                ),
                Ok(Answer::Rows { rows, .. }) => Reply::Rows(lossy_rows(rows)),
                Err(ReadFault::Garbage(what)) => Reply::Other(what),
                Err(ReadFault::Io(e)) => panic!("reply: {e}"),
            }
        }
    }
}

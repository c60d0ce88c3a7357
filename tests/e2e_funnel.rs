//! End-to-end tests of the funnel ("The funnel" issue): the real `funnel`
//! binary in front of the test binary's private MariaDB, driven by the real
//! `mysql` crate and, where a test needs to misbehave on the wire (drop the
//! socket mid-result, pipeline commands, pick a handshake charset), by the
//! small raw protocol client in [`raw`].
//!
//! Every test starts its own funnel with a small pool so that clients really
//! share backend connections. Tests that count backend connections log the
//! pool in to mysqld with a private account (see [`common::private_account`]), so
//! that tests running in parallel cannot disturb the count.
//!
//! Nothing here sleeps to synchronise: conditions are polled (mysqld's
//! process list, channels), and slow queries are ended with `KILL QUERY`
//! rather than waited out.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::sql::{one, server_error};
use common::{FunnelConfig, FunnelProcess, PASS_A, PASS_B, TEST_DB, USER_A, USER_B};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Value};

// ---------------------------------------------------------------------------
// Helpers.

/// Connection options through the funnel; the client's own
/// max_allowed_packet is given, so the crate does not ask the server.
fn opts_for(f: &FunnelProcess, user: &str, pw: &str) -> OptsBuilder {
    OptsBuilder::from_opts(f.opts(user, pw)).max_allowed_packet(Some(64 << 20))
}

fn connect(f: &FunnelProcess, user: &str, pw: &str) -> Conn {
    Conn::new(opts_for(f, user, pw)).unwrap_or_else(|e| {
        panic!(
            "cannot connect through funnel (port {}) as {user}: {e}",
            f.port
        )
    })
}

fn conn_a(f: &FunnelProcess) -> Conn {
    connect(f, USER_A, PASS_A)
}

/// Raw bytes of column `i` (None for NULL).
fn bytes_at(row: &mysql::Row, i: usize) -> Option<Vec<u8>> {
    match row.as_ref(i).expect("column index") {
        Value::NULL => None,
        Value::Bytes(b) => Some(b.clone()),
        other => Some(other.as_sql(true).into_bytes()),
    }
}

/// Processlist id of the statement whose text contains `tag` (polled: the
/// statement was sent by another thread).
fn wait_for_statement(tag: &str) -> u64 {
    let db = common::mariadb();
    let mut admin = db.admin_conn();
    let sql = format!(
        "SELECT ID FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE '%{tag}%' AND INFO NOT LIKE '%PROCESSLIST%'"
    );
    let mut id = None;
    let found = common::wait_until(Duration::from_secs(30), || {
        id = admin.query_first::<u64, _>(&sql).unwrap();
        id.is_some()
    });
    assert!(found, "no statement tagged {tag} ever ran on mysqld");
    id.unwrap()
}

fn kill_query(id: u64) {
    common::admin_sql(&format!("KILL QUERY {id}"));
}

/// Watches mysqld's process list for `user` in the background and records
/// the largest number of connections seen.
struct BackendWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    handle: Option<thread::JoinHandle<()>>,
}

impl BackendWatch {
    fn start(user: &str) -> BackendWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let (s, m, user) = (stop.clone(), max.clone(), user.to_string());
        let handle = thread::spawn(move || {
            let mut admin = common::mariadb().admin_conn();
            let sql = format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
            );
            while !s.load(Ordering::Relaxed) {
                let n: u64 = admin.query_first(&sql).unwrap().unwrap();
                m.fetch_max(n as usize, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(25));
            }
        });
        BackendWatch {
            stop,
            max,
            handle: Some(handle),
        }
    }

    /// Stops watching; the largest count seen.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.max.load(Ordering::Relaxed)
    }
}

/// The server's default sql_mode (what a fresh session has).
fn default_sql_mode() -> String {
    let v: Vec<String> = common::mariadb().admin_query("SELECT @@GLOBAL.sql_mode");
    v[0].clone()
}

/// A client speaking the MySQL protocol by hand ([`common::raw`]), for
/// what real client libraries will not do: drop the socket in the middle
/// of a result, send commands without waiting for answers, or log in with
/// any charset.
mod raw {
    pub use super::common::raw::ServerError;
    use super::common::raw::{Answer, Login, ReadFault, Wire, CLIENT_MULTI_STATEMENTS};
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::time::Duration;

    /// One statement's answer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Reply {
        Ok { affected_rows: u64, status: u16 },
        Rows(Vec<Vec<Option<Vec<u8>>>>),
    }

    impl Reply {
        /// The rows as UTF-8 strings ("NULL" for NULL).
        pub fn text_rows(&self) -> Vec<Vec<String>> {
            match self {
                Reply::Ok { .. } => panic!("expected rows, got {self:?}"),
                Reply::Rows(rows) => rows
                    .iter()
                    .map(|r| {
                        r.iter()
                            .map(|c| match c {
                                None => "NULL".to_string(),
                                Some(b) => String::from_utf8_lossy(b).into_owned(),
                            })
                            .collect()
                    })
                    .collect(),
            }
        }
    }

    pub struct RawClient {
        wire: Wire,
    }

    impl RawClient {
        /// Logs in (mysql_native_password) with the given handshake charset
        /// (collation id) and default schema.
        pub fn connect(
            port: u16,
            user: &str,
            pw: &str,
            db: Option<&str>,
            charset: u8,
        ) -> Result<RawClient, ServerError> {
            let d = Duration::from_secs(60);
            let mut wire = Wire::connect(port, d, Some(d));
            let greeting = wire.read_greeting().expect("read the greeting");
            let login = Login::new(user, pw, db)
                .charset(charset)
                .caps(CLIENT_MULTI_STATEMENTS);
            match wire.login(&greeting, &login).expect("read the login reply") {
                Ok(_) => Ok(RawClient { wire }),
                Err(reply) if reply.first() == Some(&0xff) => Err(ServerError::parse(&reply)),
                Err(reply) => panic!("unexpected login reply {reply:02x?}"),
            }
        }

        /// Sends a command packet (sequence 0) without reading the answer.
        pub fn command(&mut self, payload: &[u8]) {
            self.wire.command(payload).expect("send command");
        }

        /// Sends a COM_QUERY without reading the answer.
        pub fn send_query(&mut self, sql: &str) {
            self.send_query_bytes(sql.as_bytes());
        }

        /// Sends a COM_QUERY of any bytes (not necessarily UTF-8).
        pub fn send_query_bytes(&mut self, sql: &[u8]) {
            self.wire.send_query(sql).expect("send query");
        }

        /// Sends several COM_QUERYs in one write (pipelined).
        pub fn send_pipelined(&mut self, sqls: &[&str]) {
            let mut all = Vec::new();
            for s in sqls {
                self.wire.seq = 0;
                all.extend(self.wire.frame(&[&[0x03][..], s.as_bytes()].concat()));
            }
            self.wire.stream.write_all(&all).expect("send queries");
        }

        /// Reads the answer to one statement (the first result of a
        /// multi-result answer; the others are read and dropped).
        pub fn read_reply(&mut self) -> Result<Reply, ServerError> {
            let mut first: Option<Result<Reply, ServerError>> = None;
            loop {
                let (reply, more) = self.read_one_result();
                if first.is_none() {
                    first = Some(reply);
                }
                if !more {
                    return first.unwrap();
                }
            }
        }

        fn read_one_result(&mut self) -> (Result<Reply, ServerError>, bool) {
            let answer = match self.wire.read_result() {
                Ok(a) => a,
                Err(ReadFault::Io(e)) => panic!("read reply: {e}"),
                Err(ReadFault::Garbage(what)) => panic!("read reply: {what}"),
            };
            let more = answer.more_results();
            let reply = match answer {
                Answer::Ok {
                    affected_rows,
                    status,
                } => Ok(Reply::Ok {
                    affected_rows,
                    status,
                }),
                Answer::Rows { rows, .. } => Ok(Reply::Rows(rows)),
                Answer::Err(p) => Err(ServerError::parse(&p)),
            };
            (reply, more)
        }

        /// Every result of a (multi-statement) query, up to the first error.
        pub fn query_all(&mut self, sql: &str) -> Vec<Result<Reply, ServerError>> {
            self.send_query(sql);
            let mut all = Vec::new();
            loop {
                let (reply, more) = self.read_one_result();
                all.push(reply);
                if !more {
                    return all;
                }
            }
        }

        pub fn query(&mut self, sql: &str) -> Result<Reply, ServerError> {
            self.send_query(sql);
            self.read_reply()
        }

        /// Rows of a query as strings; panics on error.
        pub fn rows(&mut self, sql: &str) -> Vec<Vec<String>> {
            self.query(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .text_rows()
        }

        /// Reads and throws away at least `n` bytes of whatever comes.
        pub fn read_some(&mut self, n: usize) {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < n {
                let k = self.wire.stream.read(&mut buf).expect("read");
                assert!(k > 0, "connection closed after {got} bytes");
                got += k;
            }
        }

        /// Closes the socket at once (no COM_QUIT); unread input makes the
        /// kernel send a RST.
        pub fn abort(self) {
            let _ = self.wire.stream.shutdown(Shutdown::Both);
        }
    }
}

use raw::RawClient;

use common::raw::{LATIN1_SWEDISH_CI, UTF8MB4_GENERAL_CI};

fn raw_a(f: &FunnelProcess) -> RawClient {
    RawClient::connect(f.port, USER_A, PASS_A, Some(TEST_DB), UTF8MB4_GENERAL_CI)
        .unwrap_or_else(|e| panic!("raw login failed: {e:?}"))
}

// ---------------------------------------------------------------------------
// 1. Login, queries, schema changes, errors.

#[test]
fn login_query_schema_and_errors() {
    let f = FunnelConfig::new().pool("connections = 1").start();
    let mut c = conn_a(&f);
    let mut other = conn_a(&f);

    let (sum, user, schema): (i64, String, String) =
        one(&mut c, "SELECT 1 + 1, CURRENT_USER(), DATABASE()");
    assert_eq!(
        (sum, user.as_str(), schema.as_str()),
        (2, "funnel_a@127.0.0.1", TEST_DB)
    );
    let version: String = one(&mut c, "SELECT VERSION()");
    assert!(version.contains("MariaDB"), "{version}");

    // COM_INIT_DB (the crate's select_db) and USE: per client, even on the
    // pool's single backend connection.
    c.select_db("mysql").unwrap();
    assert_eq!(one::<String>(&mut c, "SELECT DATABASE()"), "mysql");
    assert_eq!(one::<String>(&mut other, "SELECT DATABASE()"), TEST_DB);
    let n: i64 = one(&mut c, "SELECT COUNT(*) FROM user WHERE User = 'funnel_a'");
    assert!(n >= 1, "mysql.user as the default schema");
    other.query_drop("USE information_schema").unwrap();
    assert_eq!(
        one::<String>(&mut other, "SELECT DATABASE()"),
        "information_schema"
    );
    assert_eq!(one::<String>(&mut c, "SELECT DATABASE()"), "mysql");
    c.query_drop(format!("USE {TEST_DB}")).unwrap();
    assert_eq!(one::<String>(&mut c, "SELECT DATABASE()"), TEST_DB);
    assert_eq!(
        one::<String>(&mut other, "SELECT DATABASE()"),
        "information_schema"
    );

    // Unknown schema after login: mysqld's error, the old schema stays.
    let (code, state, msg) = server_error(c.select_db("no_such_db_e2e"));
    assert_eq!(
        (code, state.as_str(), msg.as_str()),
        (1049, "42000", "Unknown database 'no_such_db_e2e'")
    );
    let (code, _, _) = server_error(c.query_drop("USE no_such_db_e2e"));
    assert_eq!(code, 1049);
    assert_eq!(one::<String>(&mut c, "SELECT DATABASE()"), TEST_DB);

    // Syntax error: delivered, and the connection is still usable.
    let (code, state, msg) = server_error(c.query_drop("SELEC 1"));
    assert_eq!((code, state.as_str()), (1064, "42000"));
    assert!(
        msg.contains("You have an error in your SQL syntax"),
        "{msg}"
    );
    assert_eq!(one::<i64>(&mut c, "SELECT 41 + 1"), 42);

    // Duplicate key.
    let t = common::unique_name("e2e_dup");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1, 'one')"))
        .unwrap();
    let (code, state, msg) = server_error(c.query_drop(format!("INSERT INTO {t} VALUES (1, 'x')")));
    assert_eq!((code, state.as_str()), (1062, "23000"));
    assert_eq!(msg, "Duplicate entry '1' for key 'PRIMARY'");
    // Still usable, and the failed insert changed nothing.
    c.query_drop(format!("INSERT INTO {t} VALUES (2, 'two')"))
        .unwrap();
    let rows: Vec<(i32, String)> = c
        .query(format!("SELECT id, v FROM {t} ORDER BY id"))
        .unwrap();
    assert_eq!(rows, vec![(1, "one".into()), (2, "two".into())]);
    let n: i64 = one(&mut other, &format!("SELECT COUNT(*) FROM {TEST_DB}.{t}"));
    assert_eq!(n, 2);

    // An error in the middle of a multi-statement query ends the answer
    // there (the crate drops errors of later result sets, so ask raw).
    let mut r = raw_a(&f);
    let replies = r.query_all("SELECT 1; SELEC 2; SELECT 3");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0].clone().unwrap().text_rows(), vec![vec!["1"]]);
    assert_eq!(replies[1].clone().unwrap_err().code, 1064);
    let replies = r.query_all("SELECT 4; SELECT 5");
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[1].clone().unwrap().text_rows(), vec![vec!["5"]]);
    assert_eq!(one::<i64>(&mut c, "SELECT 7"), 7);

    // COM_PING, and errors on one client never reach another.
    c.ping().unwrap();
    assert_eq!(one::<i64>(&mut other, "SELECT 8"), 8);
    c.query_drop(format!("DROP TABLE {t}")).unwrap();
}

#[test]
fn login_refusals_look_like_mysqld() {
    let f = FunnelConfig::new().pool("connections = 1").start();
    let db = common::mariadb();

    // Each refusal: same code, SQLSTATE and message as mysqld's own.
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        (USER_A, "wrong", Some(TEST_DB)),
        (USER_B, "", Some(TEST_DB)),
        ("nobody", "secret", Some(TEST_DB)),
        ("nobody", "secret", None),
    ];
    for (user, pw, schema) in cases {
        let via_funnel = server_error(Conn::new(
            OptsBuilder::from_opts(f.opts(user, pw)).db_name(schema),
        ));
        let direct = server_error(Conn::new(
            OptsBuilder::from_opts(db.opts(user, pw)).db_name(schema),
        ));
        assert_eq!(via_funnel, direct, "user {user:?} password {pw:?}");
        assert_eq!(via_funnel.0, 1045);
    }
    let (_, _, msg) = server_error(Conn::new(f.opts(USER_A, "wrong")));
    assert_eq!(
        msg,
        "Access denied for user 'funnel_a'@'127.0.0.1' (using password: YES)"
    );
    let (_, _, msg) = server_error(Conn::new(f.opts("nobody", "x")));
    assert_eq!(
        msg,
        "Access denied for user 'nobody'@'127.0.0.1' (using password: YES)"
    );
    let (_, _, msg) = server_error(Conn::new(f.opts(USER_A, "")));
    assert_eq!(
        msg,
        "Access denied for user 'funnel_a'@'127.0.0.1' (using password: NO)"
    );

    // A schema that does not exist, or that the account may not use.
    for (user, pw, schema) in [
        (USER_A, PASS_A, "no_such_db_e2e"),
        (USER_B, PASS_B, "no_such_db_e2e"),
        (USER_B, PASS_B, "mysql"),
    ] {
        let via_funnel = server_error(Conn::new(
            OptsBuilder::from_opts(f.opts(user, pw)).db_name(Some(schema)),
        ));
        let direct = server_error(Conn::new(
            OptsBuilder::from_opts(db.opts(user, pw)).db_name(Some(schema)),
        ));
        assert_eq!(via_funnel, direct, "{user} connecting to {schema}");
    }
    let (code, state, msg) = server_error(Conn::new(
        OptsBuilder::from_opts(f.opts(USER_A, PASS_A)).db_name(Some("no_such_db_e2e")),
    ));
    assert_eq!(
        (code, state.as_str(), msg.as_str()),
        (1049, "42000", "Unknown database 'no_such_db_e2e'")
    );

    // The raw client sees the same (and the funnel closes the connection).
    let e = RawClient::connect(f.port, USER_A, "bad", None, UTF8MB4_GENERAL_CI)
        .err()
        .expect("login with a wrong password must fail");
    assert_eq!((e.code, e.state.as_str()), (1045, "28000"));

    // After all these refusals the funnel serves normally.
    let mut c = conn_a(&f);
    assert_eq!(one::<i64>(&mut c, "SELECT 5"), 5);
    let mut b = connect(&f, USER_B, PASS_B);
    assert_eq!(
        one::<String>(&mut b, "SELECT CURRENT_USER()"),
        "funnel_b@127.0.0.1"
    );
}

// ---------------------------------------------------------------------------
// 2. Large results and rows over 16 MiB.

/// Expected text of row `seq` of LARGE_QUERY.
fn large_row_text(seq: u64) -> Vec<u8> {
    let mut v = format!("r{seq}:").into_bytes();
    let ch = b'A' + (seq % 26) as u8;
    v.extend(std::iter::repeat_n(ch, 20 + (seq % 200) as usize));
    v
}

const LARGE_ROWS: u64 = 300_000;
const LARGE_QUERY: &str =
    "SELECT seq, CONCAT('r', seq, ':', REPEAT(CHAR(65 + seq % 26), 20 + seq % 200)) \
     FROM seq_1_to_300000 ORDER BY seq";

#[test]
fn large_result_arrives_complete_and_in_order() {
    let f = FunnelConfig::new().pool("connections = 2").start();
    let mut c = conn_a(&f);
    let mut bytes = 0usize;
    let mut n = 0u64;
    {
        let mut result = c.query_iter(LARGE_QUERY).unwrap();
        for row in result.by_ref() {
            let row = row.unwrap();
            n += 1;
            let seq = bytes_at(&row, 0).unwrap();
            let text = bytes_at(&row, 1).unwrap();
            assert_eq!(seq, n.to_string().into_bytes(), "row {n} out of order");
            assert!(text == large_row_text(n), "row {n}: wrong content");
            bytes += seq.len() + text.len();
        }
    }
    assert_eq!(n, LARGE_ROWS);
    assert!(bytes > 30_000_000, "only {bytes} bytes: not a large result");

    // The backend connection is clean afterwards: the same client and
    // another one (same pool) get their own small answers.
    assert_eq!(one::<i64>(&mut c, "SELECT 123"), 123);
    let mut d = conn_a(&f);
    let (count, total): (i64, String) = one(
        &mut d,
        "SELECT COUNT(*), SUM(LENGTH(CONCAT('r', seq, ':', REPEAT('x', 20 + seq % 200)))) \
         FROM seq_1_to_300000",
    );
    assert_eq!(count, LARGE_ROWS as i64);
    let expected: u64 = (1..=LARGE_ROWS)
        .map(|s| large_row_text(s).len() as u64)
        .sum();
    assert_eq!(total, expected.to_string());
}

#[test]
fn rows_over_16_mib_round_trip() {
    use sha1::{Digest, Sha1};
    let f = FunnelConfig::new()
        .pool("connections = 1")
        .funnel("max_allowed_packet = 64M")
        .start();
    let mut c = conn_a(&f);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let t = common::unique_name("e2e_big");
    // MyISAM: InnoDB refuses a blob bigger than 10% of the (small) redo log.
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB) ENGINE=MyISAM"
    ))
    .unwrap();

    // Client → server, text protocol: one COM_QUERY of ~17 MiB.
    let big_text: String = (0..(17 << 20) + 12345)
        .map(|i: usize| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    c.query_drop(format!("INSERT INTO {t} VALUES (1, '{big_text}')"))
        .unwrap();
    let (len, sha): (u64, String) = one(
        &mut c,
        &format!("SELECT LENGTH(b), SHA1(b) FROM {t} WHERE id = 1"),
    );
    assert_eq!(len, big_text.len() as u64);
    assert_eq!(sha, hex(&Sha1::digest(big_text.as_bytes())));

    // Server → client, text protocol: the row comes back in one piece.
    let row: mysql::Row = c
        .query_first(format!("SELECT id, b, 'after' FROM {t} WHERE id = 1"))
        .unwrap()
        .unwrap();
    assert_eq!(bytes_at(&row, 0).unwrap(), b"1");
    assert!(bytes_at(&row, 1).unwrap() == big_text.as_bytes());
    assert_eq!(bytes_at(&row, 2).unwrap(), b"after");

    // Binary data both ways with a prepared statement (the crate sends a
    // parameter this big with COM_STMT_SEND_LONG_DATA).
    let blob: Vec<u8> = (0..(18 << 20) + 777)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    c.exec_drop(format!("INSERT INTO {t} VALUES (?, ?)"), (2, &blob))
        .unwrap();
    let (len, sha): (u64, String) = one(
        &mut c,
        &format!("SELECT LENGTH(b), SHA1(b) FROM {t} WHERE id = 2"),
    );
    assert_eq!(len, blob.len() as u64);
    assert_eq!(sha, hex(&Sha1::digest(&blob)));
    let back: Vec<u8> = c
        .exec_first(format!("SELECT b FROM {t} WHERE id = ?"), (2,))
        .unwrap()
        .unwrap();
    assert!(
        back == blob,
        "blob changed on the way back (binary protocol)"
    );
    let row: mysql::Row = c
        .query_first(format!("SELECT b FROM {t} WHERE id = 2"))
        .unwrap()
        .unwrap();
    assert!(
        bytes_at(&row, 0).unwrap() == blob,
        "blob changed (text protocol)"
    );

    // A row built by the server, several packets long, followed by more rows.
    let rows: Vec<(u64, Vec<u8>)> = c
        .query("SELECT seq, REPEAT(CHAR(96 + seq), (16 << 20) + seq * 1000) FROM seq_1_to_3")
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (seq, v) in rows {
        assert_eq!(v.len(), (16 << 20) + seq as usize * 1000);
        assert!(v.iter().all(|&x| x == 96 + seq as u8));
    }

    // Another client on the same single backend is unaffected.
    let mut d = conn_a(&f);
    assert_eq!(one::<String>(&mut d, "SELECT 'small'"), "small");
    c.query_drop(format!("DROP TABLE {t}")).unwrap();
}

// ---------------------------------------------------------------------------
// 3. Many clients on a few backend connections.

#[test]
fn two_thousand_clients_on_four_backends() {
    const CLIENTS: usize = 2000;
    const THREADS: usize = 50;
    const ROUNDS: u64 = 5;
    let limit = common::raise_nofile(CLIENTS as u64 * 2 + 500);
    assert!(
        limit >= CLIENTS as u64 + 200,
        "open files limit {limit} too low for {CLIENTS} clients"
    );
    let (user, pw) = common::private_account("e2e_many");
    let f = FunnelConfig::empty()
        .funnel("max_client_connections = 2500")
        .pool("connections = 4")
        .pool("backlog_size = 5000")
        .pool("queue_timeout_ms = 60000")
        .user(&user, &pw, &[])
        .rust_log("info")
        .start();
    let t = common::unique_name("e2e_many");
    // One statement per call: admin_sql reports only the first statement's
    // errors.
    common::admin_sql(&format!(
        "CREATE TABLE {TEST_DB}.{t} (id INT PRIMARY KEY, v BIGINT) ENGINE=InnoDB"
    ));
    common::admin_sql(&format!(
        "INSERT INTO {TEST_DB}.{t} SELECT seq, seq * 7 + 3 FROM {TEST_DB}.seq_0_to_{}",
        CLIENTS - 1
    ));
    let watch = BackendWatch::start(&user);
    let barrier = Arc::new(Barrier::new(THREADS));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|th| {
            let opts: Opts = opts_for(&f, &user, &pw).into();
            let barrier = barrier.clone();
            let t = t.clone();
            thread::spawn(move || {
                let ids: Vec<usize> = (th..CLIENTS).step_by(THREADS).collect();
                let mut conns: Vec<Conn> = ids
                    .iter()
                    .map(|i| Conn::new(opts.clone()).unwrap_or_else(|e| panic!("client {i}: {e}")))
                    .collect();
                // Every client holds its connection before anyone queries.
                barrier.wait();
                for (c, &i) in conns.iter_mut().zip(&ids) {
                    c.query_drop(format!("SET SESSION sql_select_limit = {}", 1000 + i))
                        .unwrap();
                    if i % 2 == 1 {
                        c.select_db("mysql").unwrap();
                    }
                }
                let mut checks = 0;
                for r in 0..ROUNDS {
                    for (c, &i) in conns.iter_mut().zip(&ids) {
                        let i64_ = i as u64;
                        let got: (u64, u64, u64, String, String) = c
                            .query_first(format!(
                                "SELECT {i}, {i} * {i} + {r}, @@sql_select_limit, DATABASE(), \
                                 CONCAT('c', {i}, 'r', {r})"
                            ))
                            .unwrap()
                            .unwrap();
                        let schema = if i % 2 == 1 { "mysql" } else { TEST_DB };
                        assert_eq!(
                            got,
                            (
                                i64_,
                                i64_ * i64_ + r,
                                1000 + i64_,
                                schema.to_string(),
                                format!("c{i}r{r}")
                            ),
                            "client {i} round {r} got someone else's answer"
                        );
                        if (i as u64 + r) % 2 == 0 {
                            let v: u64 = c
                                .query_first(format!("SELECT v FROM {TEST_DB}.{t} WHERE id = {i}"))
                                .unwrap()
                                .unwrap();
                            assert_eq!(v, i64_ * 7 + 3, "client {i} round {r}");
                        }
                        checks += 1;
                    }
                }
                checks
            })
        })
        .collect();
    let checks: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = t0.elapsed();
    let max_backends = watch.finish();
    assert_eq!(checks, CLIENTS * ROUNDS as usize);
    assert!(
        max_backends <= 4,
        "mysqld saw {max_backends} connections of the pool (connections = 4)"
    );
    eprintln!("{CLIENTS} clients, {checks} checked answers in {elapsed:?}");
    common::admin_sql(&format!("DROP TABLE {TEST_DB}.{t}"));
}

/// 2,000 clients each send two commands without waiting (pipelined), all at
/// once: the backlog holds thousands of requests, and every answer still
/// goes to the client that asked.
#[test]
fn two_thousand_pipelining_clients_at_once() {
    const CLIENTS: usize = 2000;
    const THREADS: usize = 40;
    let limit = common::raise_nofile(CLIENTS as u64 * 2 + 500);
    assert!(limit >= CLIENTS as u64 + 200, "open files limit {limit}");
    let (user, pw) = common::private_account("e2e_burst");
    let f = FunnelConfig::empty()
        .funnel("max_client_connections = 2500")
        .pool("connections = 4")
        .pool("backlog_size = 10000")
        .pool("queue_timeout_ms = 60000")
        .user(&user, &pw, &[])
        .rust_log("info")
        .start();
    let watch = BackendWatch::start(&user);
    let barrier = Arc::new(Barrier::new(THREADS));
    let port = f.port;
    let handles: Vec<_> = (0..THREADS)
        .map(|th| {
            let (user, pw) = (user.clone(), pw.clone());
            let barrier = barrier.clone();
            thread::spawn(move || {
                let ids: Vec<usize> = (th..CLIENTS).step_by(THREADS).collect();
                let mut conns: Vec<RawClient> = ids
                    .iter()
                    .map(|_| {
                        RawClient::connect(port, &user, &pw, Some(TEST_DB), UTF8MB4_GENERAL_CI)
                            .unwrap()
                    })
                    .collect();
                barrier.wait();
                for round in 0..3usize {
                    for (c, &i) in conns.iter_mut().zip(&ids) {
                        let set = format!("SET SESSION sql_select_limit = {}", i * 10 + round + 1);
                        let get = format!(
                            "SELECT {i}, @@sql_select_limit, REPEAT('x', {}), {round}",
                            (i * 13 + round) % 500
                        );
                        c.send_pipelined(&[&set, &get]);
                    }
                    for (c, &i) in conns.iter_mut().zip(&ids) {
                        match c.read_reply() {
                            Ok(raw::Reply::Ok { .. }) => {}
                            other => panic!("client {i}: SET answered {other:?}"),
                        }
                        let rows = c.read_reply().unwrap().text_rows();
                        assert_eq!(
                            rows,
                            vec![vec![
                                i.to_string(),
                                (i * 10 + round + 1).to_string(),
                                "x".repeat((i * 13 + round) % 500),
                                round.to_string()
                            ]],
                            "client {i} round {round}"
                        );
                    }
                }
                conns.len()
            })
        })
        .collect();
    let n: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(n, CLIENTS);
    let max_backends = watch.finish();
    assert!(max_backends <= 4, "mysqld saw {max_backends} connections");
}

// ---------------------------------------------------------------------------
// 4. Backlog full and queue timeout.

/// Runs a tagged `SELECT SLEEP(60)` on its own connection in a thread and
/// waits until mysqld runs it; returns (processlist id, join handle).
fn start_blocker(
    mut c: Conn,
    tag: &str,
) -> (
    u64,
    thread::JoinHandle<Result<Vec<mysql::Row>, mysql::Error>>,
) {
    let sql = format!("SELECT SLEEP(60), '{tag}'");
    let h = thread::spawn(move || c.query::<mysql::Row, _>(sql));
    (wait_for_statement(tag), h)
}

fn assert_interrupted(r: Result<Vec<mysql::Row>, mysql::Error>) {
    let (code, _, _) = server_error(r);
    assert_eq!(code, 1317, "the blocker should end by KILL QUERY");
}

#[test]
fn backlog_full_is_refused_then_served() {
    let f = FunnelConfig::new()
        .pool("connections = 1")
        .pool("backlog_size = 2")
        .pool("queue_timeout_ms = 60000")
        .start();
    // Everyone logs in before the backend is blocked (a login with a
    // default schema needs the backend too).
    let blocker = conn_a(&f);
    let waiting: Vec<Conn> = (0..5).map(|_| conn_a(&f)).collect();
    let tag = common::unique_name("blocker");
    let (blocker_id, blocker) = start_blocker(blocker, &tag);

    // Five commands while the only backend is busy: two wait in the
    // backlog, three are refused at once.
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = waiting
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            let tx = tx.clone();
            thread::spawn(move || {
                let r = c.query_first::<(u64, String), _>(format!("SELECT {k}, 'waiter'"));
                tx.send((k, r.map(|o| o.unwrap()))).unwrap();
                c
            })
        })
        .collect();
    let mut refused = Vec::new();
    for _ in 0..3 {
        let (k, r) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("three commands should be refused while the backend is busy");
        let (code, state, msg) = server_error(r);
        assert_eq!(code, 1040, "{msg}");
        assert_eq!(state, "08004");
        assert!(msg.starts_with("funnel:"), "{msg}");
        assert!(msg.contains("backlog_size = 2"), "{msg}");
        refused.push(k);
    }
    // The other two are still waiting.
    assert!(rx.try_recv().is_err(), "a queued command finished early");
    assert!(!blocker.is_finished());

    kill_query(blocker_id);
    assert_interrupted(blocker.join().unwrap());
    for _ in 0..2 {
        let (k, r) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(!refused.contains(&k));
        assert_eq!(r.unwrap(), (k as u64, "waiter".to_string()));
    }
    // Served normally again, refused clients included.
    let mut conns: Vec<Conn> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (k, c) in conns.iter_mut().enumerate() {
        assert_eq!(one::<u64>(c, &format!("SELECT {k} + 100")), k as u64 + 100);
    }
    let mut fresh = conn_a(&f);
    assert_eq!(one::<i64>(&mut fresh, "SELECT 1"), 1);
}

#[test]
fn queue_timeout_then_served() {
    let f = FunnelConfig::new()
        .pool("connections = 1")
        .pool("queue_timeout_ms = 400")
        .start();
    let blocker = conn_a(&f);
    let mut waiter = conn_a(&f);
    let mut waiter2 = conn_a(&f);
    let tag = common::unique_name("blocker");
    let (blocker_id, blocker) = start_blocker(blocker, &tag);

    let t0 = Instant::now();
    let (code, _, msg) = server_error(waiter.query_drop("SELECT 'never runs'"));
    let waited = t0.elapsed();
    assert_eq!(code, 1969, "{msg}");
    assert!(msg.starts_with("funnel:"), "{msg}");
    assert!(msg.contains("queue_timeout_ms = 400"), "{msg}");
    assert!(
        waited >= Duration::from_millis(400),
        "failed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(20), "failed after {waited:?}");
    // Again, from another client, while the first one's connection lives on.
    let (code, _, _) = server_error(waiter2.query_drop("SELECT 2"));
    assert_eq!(code, 1969);
    assert!(!blocker.is_finished());

    kill_query(blocker_id);
    assert_interrupted(blocker.join().unwrap());
    assert_eq!(one::<String>(&mut waiter, "SELECT 'runs now'"), "runs now");
    assert_eq!(one::<i64>(&mut waiter2, "SELECT 2"), 2);
    let mut fresh = conn_a(&f);
    assert_eq!(one::<i64>(&mut fresh, "SELECT 3"), 3);
}

// ---------------------------------------------------------------------------
// 5. A client that leaves in the middle of a result.

#[test]
fn client_gone_mid_result_does_not_leak_its_backend() {
    let (user, pw) = common::private_account("e2e_midres");
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user(&user, &pw, &[])
        .start();
    let default_mode = default_sql_mode();
    for round in 0..4 {
        let mut r =
            RawClient::connect(f.port, &user, &pw, Some(TEST_DB), UTF8MB4_GENERAL_CI).unwrap();
        // Session state the next user of the backend must not inherit:
        // replayable (sql_mode) in even rounds, pinning (a user variable)
        // in odd ones.
        r.query("SET SESSION sql_mode = 'ANSI_QUOTES,NO_ZERO_DATE'")
            .unwrap();
        if round % 2 == 1 {
            r.query("SET @leak = 'leaked'").unwrap();
        }
        r.send_query(LARGE_QUERY);
        r.read_some(100_000);

        // Another client asks meanwhile, on the pool's only shared backend.
        let opts = opts_for(&f, &user, &pw);
        let asker = thread::spawn(move || {
            let mut c = Conn::new(opts).unwrap();
            let got: (String, u64, String, Option<String>) = c
                .query_first(format!("SELECT 'mine', {round}, @@sql_mode, @leak"))
                .unwrap()
                .unwrap();
            got
        });
        r.abort();
        let got = asker.join().unwrap();
        assert_eq!(
            got,
            ("mine".to_string(), round, default_mode.clone(), None),
            "round {round}"
        );
        // And a client that arrives afterwards, on a fresh connection.
        let mut c = connect(&f, &user, &pw);
        let (n, mode, leak): (u64, String, Option<String>) =
            one(&mut c, &format!("SELECT {round} + 1000, @@sql_mode, @leak"));
        assert_eq!(
            (n, mode.as_str(), leak),
            (round + 1000, default_mode.as_str(), None)
        );
    }
    // The half-read backends were recycled, not leaked: only the shared
    // connection remains once the pinned one (odd rounds) is gone.
    let db = common::mariadb();
    db.wait_connections_at_most(&user, 1, Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// 6. Transactions.

fn make_table(c: &mut Conn, prefix: &str, rows: u32) -> String {
    let t = common::unique_name(prefix);
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB"
    ))
    .unwrap();
    if rows > 0 {
        c.query_drop(format!(
            "INSERT INTO {t} SELECT seq, seq * 10 FROM seq_1_to_{rows}"
        ))
        .unwrap();
    }
    t
}

/// Readers that keep querying `table` through the funnel until stopped,
/// checking every answer with `check`.
fn start_readers(
    f: &FunnelProcess,
    n: usize,
    sql: String,
    check: fn(i64) -> bool,
) -> (Arc<AtomicBool>, Vec<thread::JoinHandle<usize>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..n)
        .map(|_| {
            let mut c = conn_a(f);
            let stop = stop.clone();
            let sql = sql.clone();
            thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) || k < 5 {
                    let v: i64 = c.query_first(&sql).unwrap().unwrap();
                    assert!(check(v), "a reader saw {v} for {sql}");
                    k += 1;
                }
                k
            })
        })
        .collect();
    (stop, handles)
}

fn stop_readers(stop: Arc<AtomicBool>, handles: Vec<thread::JoinHandle<usize>>) -> usize {
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn transactions_are_isolated_and_rolled_back() {
    let f = FunnelConfig::new().pool("connections = 2").start();
    let mut t_conn = conn_a(&f);
    let t = make_table(&mut t_conn, "e2e_tx", 10);

    // Readers share the pool with the transaction from the start.
    let (stop, readers) = start_readers(
        &f,
        4,
        format!("SELECT COUNT(*) FROM {t} WHERE id > 100 OR v <> id * 10"),
        |v| v == 0,
    );
    t_conn.query_drop("BEGIN").unwrap();
    for id in 101..=120 {
        t_conn
            .query_drop(format!("INSERT INTO {t} VALUES ({id}, 0)"))
            .unwrap();
        t_conn
            .query_drop(format!("UPDATE {t} SET v = v + 1 WHERE id = {}", id - 100))
            .unwrap();
        // The transaction sees its own work.
        let n: i64 = one(
            &mut t_conn,
            &format!("SELECT COUNT(*) FROM {t} WHERE id > 100"),
        );
        assert_eq!(n, id - 100);
    }
    t_conn.query_drop("ROLLBACK").unwrap();
    let reads = stop_readers(stop, readers);
    assert!(reads >= 20, "readers only ran {reads} queries");
    let n: i64 = one(
        &mut t_conn,
        &format!("SELECT COUNT(*) FROM {t} WHERE id > 100 OR v <> id * 10"),
    );
    assert_eq!(n, 0, "ROLLBACK left something behind");

    // COMMIT: invisible until committed, visible to everyone after.
    let (stop, readers) = start_readers(
        &f,
        3,
        format!("SELECT COUNT(*) FROM {t} WHERE id = 500"),
        |v| v == 0,
    );
    t_conn.query_drop("START TRANSACTION").unwrap();
    t_conn
        .query_drop(format!("INSERT INTO {t} VALUES (500, 5000)"))
        .unwrap();
    for _ in 0..10 {
        assert_eq!(
            one::<i64>(&mut t_conn, &format!("SELECT v FROM {t} WHERE id = 500")),
            5000
        );
    }
    stop_readers(stop, readers);
    t_conn.query_drop("COMMIT").unwrap();
    let mut other = conn_a(&f);
    assert_eq!(
        one::<i64>(&mut other, &format!("SELECT v FROM {t} WHERE id = 500")),
        5000
    );

    // The crate's transaction API (START TRANSACTION ... ROLLBACK on drop).
    {
        let mut tx = t_conn.start_transaction(mysql::TxOpts::default()).unwrap();
        tx.query_drop(format!("DELETE FROM {t}")).unwrap();
        let n: i64 = tx
            .query_first(format!("SELECT COUNT(*) FROM {t}"))
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            one::<i64>(&mut other, &format!("SELECT COUNT(*) FROM {t}")),
            11
        );
    }
    assert_eq!(
        one::<i64>(&mut t_conn, &format!("SELECT COUNT(*) FROM {t}")),
        11
    );
    t_conn.query_drop(format!("DROP TABLE {t}")).unwrap();
}

#[test]
fn disconnect_inside_transaction_leaves_no_row_and_no_lock() {
    let f = FunnelConfig::new().pool("connections = 2").start();
    let mut o = conn_a(&f);
    let t = make_table(&mut o, "e2e_txgone", 10);
    // Lock waits fail fast, so a lock left behind fails the test quickly
    // instead of hanging it.
    o.query_drop("SET SESSION innodb_lock_wait_timeout = 10")
        .unwrap();

    // (a) COM_QUIT inside a transaction (the crate's Drop sends it).
    {
        let mut d = conn_a(&f);
        d.query_drop("BEGIN").unwrap();
        d.query_drop(format!("UPDATE {t} SET v = -1 WHERE id = 5"))
            .unwrap();
        d.query_drop(format!("INSERT INTO {t} VALUES (300, 0)"))
            .unwrap();
    }
    let t0 = Instant::now();
    o.query_drop(format!("UPDATE {t} SET v = 55 WHERE id = 5"))
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited {:?} for a lock",
        t0.elapsed()
    );
    assert_eq!(
        one::<i64>(&mut o, &format!("SELECT v FROM {t} WHERE id = 5")),
        55
    );
    assert_eq!(
        one::<i64>(&mut o, &format!("SELECT COUNT(*) FROM {t} WHERE id = 300")),
        0
    );

    // (b) The socket just closes (no COM_QUIT), transaction and row lock
    // held, plus a named lock.
    let mut r = raw_a(&f);
    r.query("BEGIN").unwrap();
    r.query(&format!("UPDATE {t} SET v = -1 WHERE id = 6"))
        .unwrap();
    r.query(&format!("INSERT INTO {t} VALUES (301, 0)"))
        .unwrap();
    let lock = common::unique_name("e2e_lock");
    assert_eq!(
        r.rows(&format!("SELECT GET_LOCK('{lock}', 0)")),
        vec![vec!["1"]]
    );
    r.abort();
    let t0 = Instant::now();
    o.query_drop(format!("UPDATE {t} SET v = 66 WHERE id = 6"))
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited {:?} for a lock",
        t0.elapsed()
    );
    assert_eq!(
        one::<i64>(&mut o, &format!("SELECT COUNT(*) FROM {t} WHERE id = 301")),
        0
    );
    let got: i64 = one(&mut o, &format!("SELECT GET_LOCK('{lock}', 10)"));
    assert_eq!(got, 1, "the named lock of the gone client was not released");
    o.query_drop(format!("DO RELEASE_LOCK('{lock}')")).unwrap();

    // (c) Gone while its statement waits for a lock held by someone else.
    let mut holder = conn_a(&f);
    holder.query_drop("BEGIN").unwrap();
    holder
        .query_drop(format!("SELECT v FROM {t} WHERE id = 7 FOR UPDATE"))
        .unwrap();
    let mut r = raw_a(&f);
    r.query("BEGIN").unwrap();
    let tag = common::unique_name("waiting");
    r.send_query(&format!(
        "UPDATE {t} SET v = -7 WHERE id = 7 AND '{tag}' <> ''"
    ));
    wait_for_statement(&tag);
    r.abort();
    holder.query_drop("COMMIT").unwrap();
    let t0 = Instant::now();
    o.query_drop(format!("UPDATE {t} SET v = 77 WHERE id = 7"))
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        t0.elapsed()
    );
    assert_eq!(
        one::<i64>(&mut o, &format!("SELECT v FROM {t} WHERE id = 7")),
        77
    );
    o.query_drop(format!("DROP TABLE {t}")).unwrap();
}

/// funnel.conf.example: "0 makes pinned clients use the shared connections
/// only" — a transaction must still work with max_pinned_backends = 0.
#[test]
fn transaction_with_max_pinned_backends_zero() {
    let f = FunnelConfig::new()
        .pool("connections = 2")
        .pool("max_pinned_backends = 0")
        .start();
    let mut c = conn_a(&f);
    let t = make_table(&mut c, "e2e_pin0", 3);
    let mut other = conn_a(&f);
    c.query_drop("BEGIN").unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (10, 100)"))
        .unwrap();
    let n: i64 = one(&mut c, &format!("SELECT COUNT(*) FROM {t}"));
    assert_eq!(n, 4, "the transaction lost its own insert");
    assert_eq!(
        one::<i64>(&mut other, &format!("SELECT COUNT(*) FROM {t}")),
        3
    );
    c.query_drop("COMMIT").unwrap();
    assert_eq!(
        one::<i64>(&mut other, &format!("SELECT COUNT(*) FROM {t}")),
        4
    );
    c.query_drop(format!("DROP TABLE {t}")).unwrap();
}

// ---------------------------------------------------------------------------
// 7. Session state through shared backend connections.

/// What a client of the session test expects of its own session.
#[derive(Clone, Debug)]
struct Expect {
    id: usize,
    sql_mode: String,
    time_zone: String,
    offset_hours: i64,
    charset: &'static str,
    collation: String,
    schema: String,
}

const SESSION_QUERY: &str = "SELECT @@sql_mode, @@time_zone, \
     TIMESTAMPDIFF(HOUR, UTC_TIMESTAMP(), NOW()), @@character_set_client, \
     @@character_set_connection, @@character_set_results, @@collation_connection, \
     DATABASE(), @@autocommit, CONVERT(X'C3A9' USING utf8mb4)";

fn check_session(c: &mut Conn, e: &Expect, when: &str) {
    let row: mysql::Row = c.query_first(SESSION_QUERY).unwrap().unwrap();
    let s = |i| String::from_utf8(bytes_at(&row, i).unwrap_or_default()).unwrap_or_default();
    let who = format!("client {} ({when})", e.id);
    assert_eq!(s(0), e.sql_mode, "{who}: sql_mode");
    assert_eq!(s(1), e.time_zone, "{who}: time_zone");
    assert_eq!(s(2), e.offset_hours.to_string(), "{who}: time zone offset");
    assert_eq!(s(3), e.charset, "{who}: character_set_client");
    assert_eq!(s(4), e.charset, "{who}: character_set_connection");
    assert_eq!(s(5), e.charset, "{who}: character_set_results");
    assert_eq!(s(6), e.collation, "{who}: collation_connection");
    assert_eq!(s(7), e.schema, "{who}: schema");
    assert_eq!(s(8), "1", "{who}: autocommit");
    // The result really is in the client's charset: é is E9 in latin1.
    let e_acute = bytes_at(&row, 9).unwrap();
    let want: &[u8] = if e.charset == "latin1" {
        b"\xe9"
    } else {
        b"\xc3\xa9"
    };
    assert_eq!(e_acute, want, "{who}: é in {}", e.charset);
}

#[test]
fn session_state_is_per_client_on_a_shared_backend() {
    const N: usize = 8;
    let (user, pw) = common::private_account("e2e_session");
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user(&user, &pw, &[])
        .start();
    let schemas = [common::unique_name("e2e_s"), common::unique_name("e2e_s")];
    for s in &schemas {
        common::admin_sql(&format!("CREATE DATABASE {s}"));
    }
    let modes = [
        "ANSI_QUOTES",
        "NO_ZERO_DATE",
        "PIPES_AS_CONCAT",
        "IGNORE_SPACE",
        "NO_BACKSLASH_ESCAPES",
        "STRICT_ALL_TABLES",
        "ONLY_FULL_GROUP_BY",
        "",
    ];
    // Default collations here; SET NAMES ... COLLATE has its own test.
    let charsets = [
        ("latin1", "latin1_swedish_ci"),
        ("utf8mb4", "utf8mb4_general_ci"),
        ("utf8mb3", "utf8mb3_general_ci"),
        ("latin1", "latin1_swedish_ci"),
    ];
    let mut conns: Vec<Conn> = (0..N).map(|_| connect(&f, &user, &pw)).collect();
    let mut expects = Vec::new();
    // Each client changes its session, one statement at a time, all through
    // the single backend connection.
    for (i, c) in conns.iter_mut().enumerate() {
        let (cs, coll) = charsets[i % charsets.len()];
        c.query_drop(format!("SET SESSION sql_mode = '{}'", modes[i]))
            .unwrap();
        c.query_drop(format!("SET time_zone = '+0{i}:00'")).unwrap();
        c.query_drop(format!("SET NAMES {cs} COLLATE {coll}"))
            .unwrap();
        let schema = match i % 4 {
            0 => TEST_DB.to_string(),
            1 => {
                c.select_db(&schemas[0]).unwrap();
                schemas[0].clone()
            }
            2 => {
                c.query_drop(format!("USE {}", schemas[1])).unwrap();
                schemas[1].clone()
            }
            _ => {
                c.query_drop("USE mysql").unwrap();
                "mysql".to_string()
            }
        };
        expects.push(Expect {
            id: i,
            sql_mode: modes[i].to_string(),
            time_zone: format!("+0{i}:00"),
            offset_hours: i as i64,
            charset: cs,
            collation: coll.to_string(),
            schema,
        });
    }
    // Interleaved, one thread.
    for round in 0..5 {
        for (c, e) in conns.iter_mut().zip(&expects) {
            check_session(c, e, &format!("round {round}"));
        }
    }
    // The modes really apply: || concatenates only for PIPES_AS_CONCAT,
    // "x" is an identifier only under ANSI_QUOTES.
    let concat: String = one(&mut conns[2], "SELECT 'a' || 'b'");
    assert_eq!(concat, "ab");
    let concat: i64 = one(&mut conns[1], "SELECT 'a' || 'b'");
    assert_eq!(concat, 0);
    assert_eq!(
        server_error(conns[0].query_drop("SELECT \"no_such_column\"")).0,
        1054
    );
    assert_eq!(
        one::<String>(&mut conns[1], "SELECT \"a string\""),
        "a string"
    );
    // Clients 0 and 1 got an error and warnings: each keeps its backend
    // for the SHOW WARNINGS that may follow, until a statement that uses a
    // table empties them (as mysqld keeps them until then).
    let db = common::mariadb();
    db.wait_connections(&user, 3, Duration::from_secs(10));
    for c in &mut conns[..2] {
        c.query_drop("DO (SELECT 1 FROM information_schema.ENGINES LIMIT 0)")
            .unwrap();
    }
    db.wait_connections(&user, 1, Duration::from_secs(10));

    // A client goes back to defaults mid-way; the others keep theirs.
    conns[3]
        .query_drop("SET sql_mode = DEFAULT, time_zone = DEFAULT")
        .unwrap();
    expects[3].sql_mode = default_sql_mode();
    expects[3].time_zone = "SYSTEM".into();
    let system_offset: i64 = one(
        &mut common::mysql_direct(USER_A, PASS_A),
        "SELECT TIMESTAMPDIFF(HOUR, UTC_TIMESTAMP(), NOW())",
    );
    expects[3].offset_hours = system_offset;

    // Concurrently, from one thread per client.
    let handles: Vec<_> = conns
        .into_iter()
        .zip(expects.clone())
        .map(|(mut c, e)| {
            thread::spawn(move || {
                for k in 0..25 {
                    check_session(&mut c, &e, &format!("threaded {k}"));
                }
                c
            })
        })
        .collect();
    let mut conns: Vec<Conn> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    // A new client gets the defaults, not anyone's leftovers.
    let mut fresh = connect(&f, &user, &pw);
    let fresh_expect = Expect {
        id: 99,
        sql_mode: default_sql_mode(),
        time_zone: "SYSTEM".into(),
        offset_hours: system_offset,
        charset: "utf8mb4",
        collation: "utf8mb4_general_ci".into(),
        schema: TEST_DB.into(),
    };
    check_session(&mut fresh, &fresh_expect, "fresh client");

    // COM_RESET_CONNECTION gives a client a fresh session (schema kept).
    conns[5].reset().unwrap();
    let mut e = fresh_expect.clone();
    e.id = 5;
    e.schema = expects[5].schema.clone();
    check_session(&mut conns[5], &e, "after reset");
    check_session(&mut conns[6], &expects[6], "after another's reset");

    // All of this was replayed on the one shared backend: nobody was pinned.
    assert_eq!(db.connections_of(&user), 1, "extra backend connections");
    for s in &schemas {
        common::admin_sql(&format!("DROP DATABASE {s}"));
    }
}

/// The charset a client asks for in its handshake is the one its session
/// gets, whichever backend connection runs its commands.
#[test]
fn charset_given_at_connect_is_per_client() {
    let f = FunnelConfig::new().pool("connections = 1").start();
    let mut clients: Vec<(RawClient, &str, &[u8])> = Vec::new();
    for k in 0..6 {
        let (coll, cs, e_acute): (u8, &str, &[u8]) = if k % 2 == 0 {
            (LATIN1_SWEDISH_CI, "latin1", b"\xe9")
        } else {
            (UTF8MB4_GENERAL_CI, "utf8mb4", b"\xc3\xa9")
        };
        let c = RawClient::connect(f.port, USER_A, PASS_A, Some(TEST_DB), coll).unwrap();
        clients.push((c, cs, e_acute));
    }
    for round in 0..4 {
        for (k, (c, cs, e_acute)) in clients.iter_mut().enumerate() {
            let reply = c
                .query(&format!(
                    "SELECT @@character_set_client, @@character_set_results, \
                     @@character_set_connection, CONVERT(X'C3A9' USING utf8mb4), {k}"
                ))
                .unwrap();
            let raw::Reply::Rows(rows) = reply else {
                panic!("no rows")
            };
            let row = &rows[0];
            let text = |i: usize| String::from_utf8(row[i].clone().unwrap()).unwrap();
            assert_eq!(text(0), *cs, "client {k} round {round}");
            assert_eq!(text(1), *cs, "client {k} round {round}");
            assert_eq!(text(2), *cs, "client {k} round {round}");
            assert_eq!(
                row[3].as_deref(),
                Some(*e_acute),
                "client {k} round {round}"
            );
            assert_eq!(text(4), k.to_string());
        }
    }
    // Text sent by a latin1 client is read as latin1.
    let mut l = RawClient::connect(f.port, USER_A, PASS_A, None, LATIN1_SWEDISH_CI).unwrap();
    l.send_query_bytes(b"SELECT HEX(CONVERT('\xe9' USING utf8mb4))");
    assert_eq!(l.read_reply().unwrap().text_rows(), vec![vec!["C3A9"]]);
}

/// `SET NAMES cs COLLATE coll`: MariaDB's session tracker reports the three
/// character_set_* variables but not collation_connection, so the funnel must
/// not replay a stale collation (which would also change
/// character_set_connection back).
#[test]
fn set_names_collate_survives_sharing() {
    let f = FunnelConfig::new().pool("connections = 1").start();
    let mut a = conn_a(&f);
    let mut b = conn_a(&f);
    let mut c = conn_a(&f);
    a.query_drop("SET NAMES latin1 COLLATE latin1_german1_ci")
        .unwrap();
    b.query_drop("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")
        .unwrap();
    c.query_drop("SET NAMES latin1").unwrap();
    let q = "SELECT @@character_set_client, @@character_set_connection, \
             @@character_set_results, @@collation_connection";
    for round in 0..3 {
        for (who, conn, want) in [
            (
                "a",
                &mut a,
                ["latin1", "latin1", "latin1", "latin1_german1_ci"],
            ),
            (
                "b",
                &mut b,
                ["utf8mb4", "utf8mb4", "utf8mb4", "utf8mb4_unicode_ci"],
            ),
            (
                "c",
                &mut c,
                ["latin1", "latin1", "latin1", "latin1_swedish_ci"],
            ),
        ] {
            let got: (String, String, String, String) = one(conn, q);
            assert_eq!(
                [
                    got.0.as_str(),
                    got.1.as_str(),
                    got.2.as_str(),
                    got.3.as_str()
                ],
                want,
                "client {who}, round {round}"
            );
        }
    }
    // The collation really applies to literals.
    let coll: String = one(&mut a, "SELECT COLLATION('x')");
    assert_eq!(coll, "latin1_german1_ci");
    let coll: String = one(&mut b, "SELECT COLLATION('x')");
    assert_eq!(coll, "utf8mb4_unicode_ci");
}

/// A response that completes while its backend is paused for backpressure
/// (the client has more than output_high_watermark unread) must not leave
/// the backend paused: a row just over 16 MiB arrives with its terminator,
/// and the next command on that backend must still be answered.
#[test]
fn backend_is_not_left_paused_after_a_big_row() {
    let f = FunnelConfig::new().pool("connections = 1").start();
    let opts = opts_for(&f, USER_A, PASS_A).read_timeout(Some(Duration::from_secs(15)));
    let mut c = Conn::new(opts.clone()).unwrap();
    for n in [(16 << 20) + 100, (16 << 20) + 5000, 18 << 20] {
        let v: Vec<u8> = one(&mut c, &format!("SELECT REPEAT('a', {n})"));
        assert_eq!(v.len(), n);
        assert_eq!(
            one::<i64>(&mut c, "SELECT 1"),
            1,
            "the command after a {n}-byte row"
        );
        // Another client, on the pool's only backend.
        let mut d = Conn::new(opts.clone()).unwrap();
        assert_eq!(one::<i64>(&mut d, "SELECT 2"), 2);
    }
}

#[test]
fn autocommit_off_is_per_client() {
    let f = FunnelConfig::new().pool("connections = 1").start();
    let mut setup = conn_a(&f);
    let t = make_table(&mut setup, "e2e_ac", 0);
    let mut off = conn_a(&f);
    let mut on = conn_a(&f);
    off.query_drop("SET autocommit = 0").unwrap();
    assert_eq!(one::<i64>(&mut off, "SELECT @@autocommit"), 0);
    assert_eq!(one::<i64>(&mut on, "SELECT @@autocommit"), 1);

    // Without autocommit an INSERT opens a transaction that nobody else sees.
    off.query_drop(format!("INSERT INTO {t} VALUES (1, 1)"))
        .unwrap();
    on.query_drop(format!("INSERT INTO {t} VALUES (2, 2)"))
        .unwrap();
    for _ in 0..5 {
        assert_eq!(one::<i64>(&mut on, &format!("SELECT COUNT(*) FROM {t}")), 1);
        assert_eq!(
            one::<i64>(&mut off, &format!("SELECT COUNT(*) FROM {t}")),
            2
        );
        assert_eq!(one::<i64>(&mut on, "SELECT @@autocommit"), 1);
        assert_eq!(one::<i64>(&mut off, "SELECT @@autocommit"), 0);
    }
    off.query_drop("ROLLBACK").unwrap();
    assert_eq!(
        one::<i64>(&mut off, &format!("SELECT COUNT(*) FROM {t}")),
        1
    );
    // Still autocommit = 0 after the transaction ended; COMMIT publishes.
    assert_eq!(one::<i64>(&mut off, "SELECT @@autocommit"), 0);
    off.query_drop(format!("INSERT INTO {t} VALUES (3, 3)"))
        .unwrap();
    // A failing statement does not end the transaction either.
    assert_eq!(
        server_error(off.query_drop(format!("INSERT INTO {t} VALUES (3, 3)"))).0,
        1062
    );
    assert_eq!(one::<i64>(&mut on, &format!("SELECT COUNT(*) FROM {t}")), 1);
    off.query_drop("COMMIT").unwrap();
    assert_eq!(one::<i64>(&mut on, &format!("SELECT COUNT(*) FROM {t}")), 2);

    // A client with autocommit = 0 that leaves does not commit.
    off.query_drop(format!("INSERT INTO {t} VALUES (4, 4)"))
        .unwrap();
    drop(off);
    assert_eq!(
        one::<i64>(&mut on, &format!("SELECT COUNT(*) FROM {t} WHERE id = 4")),
        0
    );
    let mut fresh = conn_a(&f);
    assert_eq!(one::<i64>(&mut fresh, "SELECT @@autocommit"), 1);
    fresh.query_drop(format!("DROP TABLE {t}")).unwrap();
}

#[test]
fn user_variables_are_per_client() {
    const N: usize = 30;
    let (user, pw) = common::private_account("e2e_uvars");
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .pool("max_pinned_backends = 40")
        .user(&user, &pw, &[])
        .start();
    let mut conns: Vec<Conn> = (0..N).map(|_| connect(&f, &user, &pw)).collect();
    // A bystander that never sets anything.
    let mut bystander = connect(&f, &user, &pw);
    for (i, c) in conns.iter_mut().enumerate() {
        c.query_drop(format!("SET @me = {i}, @name = 'client-{i}'"))
            .unwrap();
        let none: Option<i64> = one::<Option<i64>>(&mut bystander, "SELECT @me");
        assert_eq!(none, None, "the bystander sees client {i}'s @me");
    }
    for round in 0..5 {
        for (i, c) in conns.iter_mut().enumerate() {
            let (me, name): (i64, String) = one(c, "SELECT @me, @name");
            assert_eq!(
                (me, name),
                (i as i64, format!("client-{i}")),
                "round {round}"
            );
        }
    }
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                for k in 0..20 {
                    c.query_drop(format!("SET @k = {k}")).unwrap();
                    let (me, kk): (i64, i64) = c.query_first("SELECT @me, @k").unwrap().unwrap();
                    assert_eq!((me, kk), (i as i64, k));
                }
                c
            })
        })
        .collect();
    let conns: Vec<Conn> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(conns);
    // After they left, new clients on the recycled connections see nothing.
    for _ in 0..N + 2 {
        let mut c = connect(&f, &user, &pw);
        let got: (Option<i64>, Option<String>, Option<i64>) = one(&mut c, "SELECT @me, @name, @k");
        assert_eq!(got, (None, None, None));
    }
    assert_eq!(one::<Option<i64>>(&mut bystander, "SELECT @me"), None);
    // The extra (pinned) backend connections are closed again.
    let db = common::mariadb();
    db.wait_connections_at_most(&user, 1, Duration::from_secs(20));
}

/// State that cannot move to another backend connection stays with its
/// client: temporary tables, named locks, SQL-level prepared statements.
/// Others on the same pool never see it, and it is gone (not inherited by
/// the next user of the connection) once its client leaves.
#[test]
fn unmovable_state_stays_with_its_client() {
    let (user, pw) = common::private_account("e2e_unmovable");
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user(&user, &pw, &[])
        .start();
    let lock = common::unique_name("e2e_lock");
    let mut a = connect(&f, &user, &pw);
    let mut b = connect(&f, &user, &pw);
    a.query_drop("CREATE TEMPORARY TABLE e2e_tmp (x INT)")
        .unwrap();
    a.query_drop("INSERT INTO e2e_tmp VALUES (1), (2), (3)")
        .unwrap();
    let got: i64 = one(&mut a, &format!("SELECT GET_LOCK('{lock}', 0)"));
    assert_eq!(got, 1);
    a.query_drop("PREPARE e2e_stmt FROM 'SELECT ? * 2'")
        .unwrap();

    for round in 0..3 {
        // b shares the pool's connection: none of a's state is there.
        assert_eq!(
            server_error(b.query_drop("SELECT * FROM e2e_tmp")).0,
            1146,
            "round {round}: b sees a's temporary table"
        );
        assert_eq!(
            server_error(b.query_drop("EXECUTE e2e_stmt USING 1")).0,
            1243,
            "round {round}: b sees a's prepared statement"
        );
        let holder_is_b: Option<i64> = one(
            &mut b,
            &format!("SELECT IS_USED_LOCK('{lock}') = CONNECTION_ID()"),
        );
        assert_eq!(holder_is_b, Some(0), "round {round}: the lock moved to b");
        // a still has all of it.
        assert_eq!(one::<i64>(&mut a, "SELECT COUNT(*) FROM e2e_tmp"), 3);
        assert_eq!(
            one::<i64>(
                &mut a,
                &format!("SELECT IS_USED_LOCK('{lock}') = CONNECTION_ID()")
            ),
            1
        );
        a.query_drop(format!("SET @v = {round}")).unwrap();
        assert_eq!(one::<i64>(&mut a, "EXECUTE e2e_stmt USING @v"), round * 2);
    }
    // b can have its own temporary table of the same name meanwhile.
    b.query_drop("CREATE TEMPORARY TABLE e2e_tmp (y INT)")
        .unwrap();
    b.query_drop("INSERT INTO e2e_tmp VALUES (9)").unwrap();
    assert_eq!(one::<i64>(&mut b, "SELECT SUM(y) FROM e2e_tmp"), 9);
    assert_eq!(one::<i64>(&mut a, "SELECT SUM(x) FROM e2e_tmp"), 6);
    b.query_drop("DROP TEMPORARY TABLE e2e_tmp").unwrap();

    // a leaves: its lock is free at once, and nobody inherits its state.
    drop(a);
    let got: i64 = one(&mut b, &format!("SELECT GET_LOCK('{lock}', 10)"));
    assert_eq!(got, 1, "a's named lock was not released");
    b.query_drop(format!("DO RELEASE_LOCK('{lock}')")).unwrap();
    for _ in 0..3 {
        let mut c = connect(&f, &user, &pw);
        assert_eq!(server_error(c.query_drop("SELECT * FROM e2e_tmp")).0, 1146);
        assert_eq!(
            server_error(c.query_drop("EXECUTE e2e_stmt USING 1")).0,
            1243
        );
    }
    // (b's own temporary table pinned it too; once everyone has left, only
    // the shared connection remains.)
    drop(b);
    let db = common::mariadb();
    db.wait_connections_at_most(&user, 1, Duration::from_secs(20));
}

/// Past max_pinned_backends a client's unmovable state is never silently
/// shared: a statement known to pin (here BEGIN) is refused before it runs
/// (ERR 1040 naming the setting; the connection stays usable), and state a
/// statement made anyway (here: autocommit off, then an INSERT opens the
/// transaction) is discarded and the client told so at its next command.
#[test]
fn pinned_clients_over_the_cap_are_told() {
    let f = FunnelConfig::new()
        .pool("connections = 1")
        .pool("max_pinned_backends = 2")
        .start();
    let mut setup = conn_a(&f);
    let t = make_table(&mut setup, "e2e_cap", 0);
    let mut conns: Vec<Conn> = (0..3).map(|_| conn_a(&f)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.query_drop("BEGIN").unwrap();
        c.query_drop(format!("INSERT INTO {t} VALUES ({i}, {i})"))
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        if i == 1 {
            // Two transactions hold the two pinned backends now.
            break;
        }
    }
    // The third transaction has nowhere to go: BEGIN is refused at once.
    let (code, _, msg) = server_error(conns[2].query_drop("BEGIN"));
    assert_eq!(code, 1040, "{msg}");
    assert!(msg.starts_with("funnel:"), "{msg}");
    assert!(msg.contains("max_pinned_backends = 2"), "{msg}");
    assert!(msg.contains("was not run"), "{msg}");
    // A transaction opened by a statement the scan cannot foresee pinning
    // runs, and its state is discarded with ERR 1040 at the next command.
    conns[2].query_drop("SET autocommit = 0").unwrap();
    conns[2]
        .query_drop(format!("INSERT INTO {t} VALUES (2, 2)"))
        .unwrap();
    let (code, _, msg) = server_error(conns[2].query_drop("SELECT 1"));
    assert_eq!(code, 1040, "{msg}");
    assert!(msg.contains("max_pinned_backends = 2"), "{msg}");
    assert!(msg.contains("discarded"), "{msg}");
    conns[2].query_drop("SET autocommit = 1").unwrap();
    // Its transaction is gone (it is not in one any more), the others' live
    // (each sees exactly its own uncommitted row).
    let n: i64 = one(&mut conns[2], &format!("SELECT COUNT(*) FROM {t}"));
    assert_eq!(n, 0);
    for (i, c) in conns.iter_mut().enumerate().take(2) {
        let ids: Vec<i64> = c.query(format!("SELECT id FROM {t}")).unwrap();
        assert_eq!(ids, vec![i as i64], "client {i}'s transaction");
    }
    for c in conns.iter_mut().take(2) {
        c.query_drop("COMMIT").unwrap();
    }
    assert_eq!(
        one::<i64>(&mut conns[2], &format!("SELECT COUNT(*) FROM {t}")),
        2
    );
    setup.query_drop(format!("DROP TABLE {t}")).unwrap();
}

/// A session change that the funnel can replay (schema, charset, system
/// variables) must not cost the client a backend connection of its own.
#[test]
fn replayable_session_changes_do_not_pin() {
    let (user, pw) = common::private_account("e2e_nopin");
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user(&user, &pw, &[])
        .start();
    let db = common::mariadb();
    let mut clients = Vec::new();
    let steps: &[(&str, Option<&str>, &[u8])] = &[
        ("login with a default schema", Some(TEST_DB), b""),
        ("COM_INIT_DB", None, b"\x02mysql"),
        ("USE", None, b"\x03USE mysql"),
        ("SET NAMES", None, b"\x03SET NAMES latin1"),
        (
            "SET sql_mode",
            None,
            b"\x03SET SESSION sql_mode = 'ANSI_QUOTES'",
        ),
        ("SET time_zone", None, b"\x03SET time_zone = '+02:00'"),
    ];
    for (what, schema, command) in steps {
        let mut r = RawClient::connect(f.port, &user, &pw, *schema, UTF8MB4_GENERAL_CI).unwrap();
        if !command.is_empty() {
            r.command(command);
            assert!(
                matches!(r.read_reply(), Ok(raw::Reply::Ok { .. })),
                "{what} failed"
            );
        }
        assert_eq!(r.rows("SELECT 1"), vec![vec!["1"]]);
        assert_eq!(
            db.connections_of(&user),
            1,
            "after {what}: the client was given a backend connection of its own"
        );
        clients.push(r);
    }
}

// ---------------------------------------------------------------------------
// 9. Connection churn.

#[test]
fn connection_churn() {
    const THREADS: usize = 4;
    const CYCLES: usize = 50;
    let (user, pw) = common::private_account("e2e_churn");
    let f = FunnelConfig::empty()
        .pool("connections = 2")
        .user(&user, &pw, &[])
        .start();
    let watch = BackendWatch::start(&user);
    let ok = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|th| {
            let opts: Opts = opts_for(&f, &user, &pw).into();
            let port = f.port;
            let (user, pw) = (user.clone(), pw.clone());
            let ok = ok.clone();
            thread::spawn(move || {
                for k in 0..CYCLES {
                    let id = th * 1000 + k;
                    if k % 5 == 4 {
                        // Now and then a client that just hangs up.
                        let mut r =
                            RawClient::connect(port, &user, &pw, Some(TEST_DB), UTF8MB4_GENERAL_CI)
                                .unwrap();
                        assert_eq!(r.rows(&format!("SELECT {id}")), vec![vec![id.to_string()]]);
                        r.abort();
                    } else {
                        let mut c =
                            Conn::new(opts.clone()).unwrap_or_else(|e| panic!("cycle {id}: {e}"));
                        let (got, schema): (usize, String) = c
                            .query_first(format!("SELECT {id}, DATABASE()"))
                            .unwrap()
                            .unwrap();
                        assert_eq!((got, schema.as_str()), (id, TEST_DB));
                        drop(c); // COM_QUIT
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::Relaxed), THREADS * CYCLES);
    let max = watch.finish();
    assert!(max <= 2, "mysqld saw {max} connections for a pool of 2");
    let mut c = connect(&f, &user, &pw);
    assert_eq!(one::<i64>(&mut c, "SELECT 1"), 1);
}

/// A lock pin ends when the locks are released, where the funnel can know
/// it: `UNLOCK TABLES` for table locks, `RELEASE_ALL_LOCKS()` for named
/// locks (also taken by a prepared statement); `RELEASE_LOCK(name)` may
/// leave others, so the pin stays. The backend a pin held is reset and
/// given back, so mysqld sees the pool's own connections again.
#[test]
fn lock_pins_end_when_the_locks_are_released() {
    let (user, pw) = common::private_account("e2e_unlock");
    let f = FunnelConfig::empty()
        .pool("connections = 1")
        .user(&user, &pw, &[])
        .start();
    let db = common::mariadb();
    let lock = common::unique_name("e2e_unlock");
    let table = format!("{TEST_DB}.{}", common::unique_name("e2e_unlock_t"));
    let mut a = connect(&f, &user, &pw);
    let mut b = connect(&f, &user, &pw);
    a.query_drop(format!("CREATE TABLE {table} (x INT)"))
        .unwrap();
    let settles_at =
        |n: usize| common::wait_until(Duration::from_secs(10), || db.connections_of(&user) == n);
    let stays_at = |n: usize| {
        std::thread::sleep(Duration::from_millis(300));
        db.connections_of(&user) == n
    };
    assert!(settles_at(1), "{}", db.connections_of(&user));

    // A named lock pins; RELEASE_LOCK of it keeps the pin (there may be
    // others), RELEASE_ALL_LOCKS ends it.
    assert_eq!(
        one::<i64>(&mut a, &format!("SELECT GET_LOCK('{lock}', 0)")),
        1
    );
    assert!(settles_at(2), "the named lock did not pin");
    a.query_drop(format!("DO RELEASE_LOCK('{lock}')")).unwrap();
    assert!(stays_at(2), "RELEASE_LOCK of one lock ended the pin");
    assert_eq!(
        one::<i64>(&mut a, &format!("SELECT GET_LOCK('{lock}', 0)")),
        1
    );
    a.query_drop("DO RELEASE_ALL_LOCKS()").unwrap();
    assert!(settles_at(1), "RELEASE_ALL_LOCKS did not end the pin");
    assert_eq!(
        one::<i64>(&mut b, &format!("SELECT GET_LOCK('{lock}', 0)")),
        1
    );
    b.query_drop("DO RELEASE_ALL_LOCKS()").unwrap();

    // Table locks: UNLOCK TABLES ends the pin, unless a named lock is held.
    a.query_drop(format!("LOCK TABLES {table} READ")).unwrap();
    assert!(settles_at(2), "LOCK TABLES did not pin");
    assert_eq!(
        one::<i64>(&mut a, &format!("SELECT COUNT(*) FROM {table}")),
        0
    );
    a.query_drop("UNLOCK TABLES").unwrap();
    assert!(settles_at(1), "UNLOCK TABLES did not end the pin");
    a.query_drop(format!("LOCK TABLES {table} READ")).unwrap();
    assert_eq!(
        one::<i64>(&mut a, &format!("SELECT GET_LOCK('{lock}', 0)")),
        1
    );
    a.query_drop("UNLOCK TABLES").unwrap();
    assert!(stays_at(2), "UNLOCK TABLES ended the pin of a named lock");
    a.query_drop("DO RELEASE_ALL_LOCKS()").unwrap();
    assert!(settles_at(1));

    // A prepared GET_LOCK pins like the text one.
    let got: Option<i64> = a
        .exec_first("SELECT GET_LOCK(?, 0)", (lock.as_str(),))
        .unwrap();
    assert_eq!(got, Some(1));
    assert!(settles_at(2), "a prepared GET_LOCK did not pin");
    let holder_is_b: Option<i64> = one(
        &mut b,
        &format!("SELECT IS_USED_LOCK('{lock}') = CONNECTION_ID()"),
    );
    assert_eq!(
        holder_is_b,
        Some(0),
        "the lock went to another client's backend"
    );
    a.query_drop("DO RELEASE_ALL_LOCKS()").unwrap();
    assert!(settles_at(1));
    b.query_drop(format!("DROP TABLE {table}")).unwrap();
}

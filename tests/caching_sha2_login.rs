//! caching_sha2_password (MySQL 8's default authentication), both ways.
//!
//! Towards clients: a user configured with `auth_plugin =
//! caching_sha2_password` logs in with real client libraries, each its own
//! way (asked to switch from the greeting's mysql_native_password, or
//! answering with caching_sha2_password at once), gets the fast-auth
//! success the protocol promises, and a wrong password gets ERR 1045.
//!
//! Towards mysqld: MariaDB has no caching_sha2_password, so a scripted
//! MySQL 8.4-like server (written to MySQL's documentation of the
//! exchange) checks the funnel's login: the fast path, and the full
//! authentication with the server's RSA key (decrypted here).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::clients::have;
use common::{FunnelConfig, FunnelProcess};
use funnel::protocol::caching_sha2;
use funnel::protocol::handshake::{HandshakeResponse, HandshakeV10};
use funnel::protocol::packet::{next_frame, write_packet};
use mysql::prelude::Queryable;

const USER: &str = "sha_user";
/// The same password, configured only as its SHA256(SHA256()).
const HASH_USER: &str = "sha_hash_user";
// ASCII: PyMySQL sends a str password in latin-1, the others in UTF-8.
const PASS: &str = "sha pw 2x";

fn start_funnel() -> FunnelProcess {
    let db = common::mariadb();
    let port = common::free_port();
    let cfg = format!(
        "[funnel]\nlisten = 127.0.0.1:{port}\n\n\
         [backend]\naddress = 127.0.0.1:{}\n\n\
         [pool]\nconnections = 1\n\n\
         [user {USER}]\npassword = \"{PASS}\"\nauth_plugin = caching_sha2_password\n\
         backend_user = {}\nbackend_password = {}\n\n\
         [user {HASH_USER}]\ncaching_sha2_hash = {}\nauth_plugin = caching_sha2_password\n\
         backend_user = {}\nbackend_password = {}\n",
        db.port,
        common::USER_A,
        common::PASS_A,
        caching_sha2::stage2(PASS.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        common::USER_A,
        common::PASS_A,
    );
    FunnelProcess::builder(&cfg).port(port).start()
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("client runs");
    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        s.push_str(&format!(
            " [exit {:?}] {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    s
}

/// Log in with a Python driver and select 1; or print the error code.
fn python(driver: &str, port: u16, pw: &str) -> String {
    let connect = match driver {
        "pymysql" => "import pymysql as m\nc = m.connect(host='127.0.0.1', port=P, user=U, password=W)",
        "connector" => "import mysql.connector as m\nc = m.connect(host='127.0.0.1', port=P, user=U, password=W, use_pure=True)",
        // Answers the greeting with caching_sha2_password at once.
        "connector_sha2" => "import mysql.connector as m\nc = m.connect(host='127.0.0.1', port=P, user=U, password=W, use_pure=True, auth_plugin='caching_sha2_password')",
        "mysqlclient" => "import MySQLdb as m\nc = m.connect(host='127.0.0.1', port=P, user=U, password=W)",
        _ => unreachable!(),
    };
    let script = format!(
        "import sys\nP, U, W = {port}, {USER:?}, sys.argv[1]\ntry:\n    {}\n    cur = c.cursor(); cur.execute('SELECT 1 + 1'); print(cur.fetchone()[0])\nexcept Exception as e:\n    print('error', e.args[0])\n",
        connect.replace('\n', "\n    ")
    );
    output(Command::new("python3").args(["-c", &script, pw]))
}

fn cli(port: u16, pw: &str) -> String {
    let out = common::clients::mariadb_cli(port, USER, pw)
        .args(["-N", "-e", "SELECT 1 + 1"])
        .output()
        .expect("mariadb client");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        format!("error {}", err.split_whitespace().nth(1).unwrap_or("?"))
    }
}

fn php(port: u16, pw: &str) -> String {
    let code = format!(
        "mysqli_report(MYSQLI_REPORT_OFF); $c = @new mysqli('127.0.0.1', '{USER}', $argv[1], '', {port}); \
         if ($c->connect_errno) {{ echo 'error ', $c->connect_errno; exit; }} \
         echo $c->query('SELECT 1 + 1')->fetch_row()[0];"
    );
    output(Command::new("php").args(["-r", &code, pw]))
}

fn node_mysql2(port: u16, pw: &str) -> String {
    let code = format!(
        "require('mysql2').createConnection({{host: '127.0.0.1', port: {port}, user: '{USER}', password: process.argv[1]}})\
         .query('SELECT 1 + 1 AS v', (e, r, _f) => {{ console.log(e ? 'error ' + e.errno : String(r[0].v)); process.exit(0); }});"
    );
    output(
        Command::new("node")
            .args(["-e", &code, pw])
            .env("NODE_PATH", common::node_modules()),
    )
}

fn rust(port: u16, pw: &str) -> String {
    rust_as(port, USER, pw)
}

fn rust_as(port: u16, user: &str, pw: &str) -> String {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pw));
    match mysql::Conn::new(opts) {
        Ok(mut c) => c
            .query_first::<i64, _>("SELECT 1 + 1")
            .map(|v| v.unwrap_or(0).to_string())
            .unwrap_or_else(|e| e.to_string()),
        Err(mysql::Error::MySqlError(e)) => format!("error {}", e.code),
        Err(e) => e.to_string(),
    }
}

#[test]
fn clients_log_in_with_caching_sha2_password() {
    let f = start_funnel();
    let port = f.port;
    let mut seen = Vec::new();
    let mut check = |name: &str, login: &dyn Fn(&str) -> String| {
        let ok = login(PASS);
        let bad = login("wrong");
        seen.push(format!("{name}: {ok} / {bad}"));
    };
    check("rust mysql", &|pw| rust(port, pw));
    // A user configured with the hash only: verified all the same.
    check("rust mysql, hash", &|pw| rust_as(port, HASH_USER, pw));
    for d in ["pymysql", "connector", "connector_sha2", "mysqlclient"] {
        check(d, &|pw| python(d, port, pw));
    }
    check("mariadb cli", &|pw| cli(port, pw));
    if have("php") {
        check("php mysqli", &|pw| php(port, pw));
    }
    if have("node") {
        check("node mysql2", &|pw| node_mysql2(port, pw));
    }
    let expected: Vec<String> = seen
        .iter()
        .map(|s| format!("{}: 2 / error 1045", s.split(':').next().unwrap_or("")))
        .collect();
    assert_eq!(seen, expected, "funnel log:\n{}", f.log());
}

/// One packet from a blocking stream: (seq, payload).
fn read_packet(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    common::raw::read_packet_from(s).expect("packet")
}

fn send(s: &mut std::net::TcpStream, seq: u8, payload: &[u8]) {
    let mut out = Vec::new();
    write_packet(&mut out, seq, payload);
    assert!(next_frame(&out).is_some());
    s.write_all(&out).expect("send");
}

const NONCE: &[u8; 20] = b"0123456789abcdefghij";

/// A MySQL 8.4-like server for one login at a time: greets with
/// caching_sha2_password, and answers the funnel's response with the fast
/// path (`full` false) or asks for full authentication and checks the
/// RSA-encrypted password with `key`. Reports what it saw.
fn fake_mysql84(
    listener: TcpListener,
    password: &'static str,
    full: bool,
    seen: mpsc::Sender<String>,
) {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&test_key()).expect("test key");
    let pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .expect("public key pem");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut scramble = NONCE.to_vec();
            scramble.push(0);
            let greeting = HandshakeV10 {
                server_version: "8.4.3".into(),
                connection_id: 7,
                scramble,
                capabilities: {
                    use funnel::protocol::consts::*;
                    CLIENT_LONG_PASSWORD
                        | CLIENT_PROTOCOL_41
                        | CLIENT_SECURE_CONNECTION
                        | CLIENT_TRANSACTIONS
                        | CLIENT_PLUGIN_AUTH
                        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                        | CLIENT_CONNECT_WITH_DB
                        | CLIENT_MULTI_STATEMENTS
                        | CLIENT_MULTI_RESULTS
                        | CLIENT_SESSION_TRACK
                },
                charset: 255,
                status: 2,
                auth_plugin: caching_sha2::CACHING_SHA2_PASSWORD.into(),
            };
            let mut out = Vec::new();
            greeting.encode(&mut out);
            send(&mut s, 0, &out);
            let (_, payload) = read_packet(&mut s);
            let resp = HandshakeResponse::decode(&payload).expect("handshake response");
            let fast_ok = resp.auth_plugin.as_deref() == Some(caching_sha2::CACHING_SHA2_PASSWORD)
                && caching_sha2::verify(
                    Some(&caching_sha2::stage2(password.as_bytes())),
                    NONCE,
                    &resp.auth_response,
                );
            if !full {
                send(&mut s, 2, &[1, caching_sha2::FAST_AUTH_SUCCESS]);
                send(&mut s, 3, &[0, 0, 0, 2, 0, 0, 0]);
                let _ = seen.send(format!("fast: response right: {fast_ok}"));
            } else {
                send(&mut s, 2, &[1, caching_sha2::PERFORM_FULL_AUTH]);
                let (seq, req) = read_packet(&mut s);
                let asked_key = seq == 3 && req == [caching_sha2::REQUEST_PUBLIC_KEY];
                let mut more = vec![1];
                more.extend_from_slice(pem.as_bytes());
                send(&mut s, 4, &more);
                let (seq, sealed) = read_packet(&mut s);
                let plain = key
                    .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &sealed)
                    .unwrap_or_default();
                let mut expected = password.as_bytes().to_vec();
                expected.push(0);
                for (i, b) in expected.iter_mut().enumerate() {
                    *b ^= NONCE[i % 20];
                }
                send(&mut s, seq.wrapping_add(1), &[0, 0, 0, 2, 0, 0, 0]);
                let _ = seen.send(format!(
                    "full: response right: {fast_ok}, asked for the key: {asked_key}, password right: {}",
                    plain == expected
                ));
            }
            // The funnel's first query after the login: enough.
            let _ = read_packet(&mut s);
        }
    });
}

/// An RSA key for the scripted server, made by OpenSSL.
fn test_key() -> String {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("pem")
}

#[test]
fn the_funnel_logs_in_to_a_mysql84_server_both_ways() {
    for full in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        fake_mysql84(listener, "backend pw", full, tx);
        // The scripted server answers no query after the login: the login
        // is what is checked.
        let _f = FunnelConfig::empty()
            .backend_port(backend.port())
            .backend("reconnect_backoff_min_ms = 5000")
            .pool("connections = 1")
            .user("app", "x", &["backend_password = \"backend pw\""])
            .start();
        let got = rx.recv_timeout(Duration::from_secs(20)).expect("a login");
        let want = if full {
            "full: response right: true, asked for the key: true, password right: true"
        } else {
            "fast: response right: true"
        };
        assert_eq!(got, want);
    }
}

#[test]
fn change_user_to_and_from_a_caching_sha2_user() {
    let f = start_funnel();
    let opts = |user: &str, pw: &str| {
        mysql::ChangeUserOpts::default()
            .with_user(Some(user.into()))
            .with_pass(Some(pw.into()))
    };
    let mut c = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(f.port)
            .user(Some(USER))
            .pass(Some(PASS)),
    )
    .expect("login as the caching_sha2 user");
    c.query_drop("SET @x = 1").unwrap();
    // To the other caching_sha2 user (configured by hash), then back.
    c.change_user(opts(HASH_USER, PASS))
        .expect("change user to a caching_sha2_hash user");
    let x: Option<Option<i64>> = c.query_first("SELECT @x").unwrap();
    assert_eq!(x, Some(None), "the session was reset by the change");
    c.change_user(opts(USER, PASS)).expect("and back");
    assert_eq!(c.query_first::<i64, _>("SELECT 1 + 1").unwrap(), Some(2));
    // A wrong password is refused as mysqld refuses it.
    match c.change_user(opts(USER, "wrong")) {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1045),
        other => panic!("expected ERR 1045, got {other:?}"),
    }
}

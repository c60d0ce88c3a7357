//! TLS both ways, with certificates made in the test (`openssl`).
//!
//! Towards clients: real client libraries ask for TLS, check the funnel's
//! certificate against the test CA and the name 127.0.0.1, and say by
//! their own means that their connection is encrypted (mysqld's
//! `Ssl_cipher` would describe the backend's connection, not theirs). A
//! client checking against another CA fails, as does one that requires
//! TLS from a funnel without a certificate. `require_tls` refusals, a
//! certificate replaced by SIGHUP without dropping connected clients, bad
//! files refused at start-up with exit code 2.
//!
//! Towards mysqld: a MariaDB started with a certificate of the test CA;
//! the funnel logs in over TLS with `verify_identity` (mysqld's own
//! `Ssl_version` for the backend's session says so), a certificate for
//! another name is refused with `verify_identity` but taken by
//! `verify_ca`, and `require` against a mysqld without TLS fails clearly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{FunnelConfig, FunnelProcess, MariaDb, TestCa, TestCert};
use mysql::prelude::Queryable;

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("client runs");
    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        s.push_str(&format!(
            " [exit {:?}] {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    s
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// A funnel on the shared MariaDB, with `funnel_extra` in `[funnel]` and
/// `user_extra` in the `[user]` sections of users A and B.
fn start_funnel(funnel_extra: &str, user_extra: &str) -> FunnelProcess {
    FunnelConfig::empty()
        .funnel("unix_socket = @DIR@/funnel.sock")
        .funnel(funnel_extra)
        .pool("connections = 1")
        .user(common::USER_A, common::PASS_A, &[user_extra])
        .user(common::USER_B, common::PASS_B, &[])
        .start()
}

fn tls_lines(cert: &TestCert) -> String {
    format!(
        "tls_cert = {}\ntls_key = {}\n",
        path(&cert.cert),
        path(&cert.key)
    )
}

/// With `ca`: TLS required and the server's certificate checked against
/// it (`--ssl --ssl-verify-server-cert`); without: no TLS.
fn tls_args(cmd: &mut Command, ca: Option<&str>) {
    match ca {
        Some(ca) => cmd.args([
            "--ssl",
            &format!("--ssl-ca={ca}"),
            "--ssl-verify-server-cert",
        ]),
        None => cmd.arg("--skip-ssl"),
    };
}

/// The `mariadb` CLI over TCP, with or without TLS ([`tls_args`]).
fn mariadb_cli(port: u16, user: &str, pw: &str, ca: Option<&str>) -> Command {
    let mut cmd = common::clients::mariadb_cli(port, user, pw);
    tls_args(&mut cmd, ca);
    cmd
}

/// The `mariadb` CLI over the unix socket `socket` as user B.
fn mariadb_cli_socket(socket: &std::path::Path, ca: Option<&str>) -> Command {
    let mut cmd = Command::new(common::mariadb_client());
    cmd.args([
        "--no-defaults",
        &format!("--socket={}", socket.display()),
        &format!("-u{}", common::USER_B),
        &format!("-p{}", common::PASS_B),
    ]);
    tls_args(&mut cmd, ca);
    cmd
}

/// Its status (the `SSL:` line is the client's own connection), then 1 + 1.
const STATUS_AND_TWO: [&str; 2] = ["-e", "status; SELECT 1 + 1 AS two"];

/// The `mariadb` CLI ([`mariadb_cli`]) prints [`STATUS_AND_TWO`].
fn cli(port: u16, user: &str, pw: &str, ca: Option<&str>) -> String {
    output(
        mariadb_cli(port, user, pw, ca)
            .arg("--connect-timeout=10")
            .args(STATUS_AND_TWO),
    )
}

/// The cipher line of the CLI's status, or what went wrong.
fn cli_cipher(out: &str) -> Option<&str> {
    out.lines()
        .find(|l| l.starts_with("SSL:"))
        .and_then(|l| l.split_once("Cipher in use is "))
        .map(|(_, c)| c.trim())
}

fn python(code: &str, args: &[&str]) -> String {
    output(Command::new("python3").arg("-c").arg(code).args(args))
}

/// The start of the PyMySQL scripts (argv: port, user, password, CA
/// file): `connect()` logs in over TLS, checking the certificate against
/// the CA and the name; `fingerprint(c)` is the SHA-256 of the
/// certificate the connection got.
const PYMYSQL_TLS: &str = r#"
import sys, hashlib, pymysql
p, u, w, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def connect(**kw):
    return pymysql.connect(host='127.0.0.1', port=p, user=u, password=w, ssl_ca=ca,
                           ssl_verify_cert=True, ssl_verify_identity=True, **kw)
def fingerprint(c):
    der = c._sock.getpeercert(binary_form=True)
    return ':'.join('%02X' % b for b in hashlib.sha256(der).digest())
"#;

/// [`PYMYSQL_TLS`], then `body`.
fn pymysql_tls(body: &str) -> String {
    format!("{PYMYSQL_TLS}{body}")
}

/// A Python client that stays connected: it is given lines on its stdin
/// and answers with lines on its stdout.
struct LineClient {
    child: std::process::Child,
    to: Option<std::process::ChildStdin>,
    from: BufReader<std::process::ChildStdout>,
}

impl LineClient {
    fn spawn(code: &str, args: &[&str]) -> LineClient {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(code)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let to = child.stdin.take();
        let from = BufReader::new(child.stdout.take().expect("piped stdout"));
        LineClient { child, to, from }
    }

    /// Its next line, trimmed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .expect("a line from the client");
        line.trim().to_string()
    }

    fn send(&mut self, line: &str) {
        writeln!(self.to.as_mut().expect("stdin"), "{line}").expect("to the client");
    }
}

impl Drop for LineClient {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

/// PyMySQL over TLS: prints its socket's type, TLS version and 1 + 1, or
/// the login's error.
const PYMYSQL_BODY: &str = r#"
try:
    c = connect(connect_timeout=10)
except pymysql.err.OperationalError as e:
    print('error', e.args[0], e.args[1] if len(e.args) > 1 else ''); sys.exit(0)
cur = c.cursor(); cur.execute('SELECT 1 + 1')
print(type(c._sock).__name__, c._sock.version(), cur.fetchone()[0])
"#;

const CONNECTOR: &str = r#"
import sys, mysql.connector
p, u, w, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    c = mysql.connector.connect(host='127.0.0.1', port=p, user=u, password=w, use_pure=True,
                                ssl_ca=ca, ssl_verify_cert=True, ssl_verify_identity=True,
                                connection_timeout=10)
except mysql.connector.Error as e:
    print('error', e.errno); sys.exit(0)
cur = c.cursor(); cur.execute('SELECT 1 + 1')
s = c._socket.sock
print(type(s).__name__, s.version(), cur.fetchone()[0])
"#;

fn php_mysqli(port: u16, user: &str, pw: &str, ca: &str) -> String {
    let code = format!(
        "mysqli_report(MYSQLI_REPORT_OFF); $c = mysqli_init(); \
         $c->ssl_set(NULL, NULL, $argv[2], NULL, NULL); \
         $c->options(MYSQLI_OPT_SSL_VERIFY_SERVER_CERT, true); \
         if (!@$c->real_connect('127.0.0.1', '{user}', $argv[1], '', {port}, NULL, MYSQLI_CLIENT_SSL)) \
         {{ echo 'error ', mysqli_connect_errno(); exit; }} \
         echo 'tls ', $c->query('SELECT 1 + 1')->fetch_row()[0];"
    );
    output(Command::new("php").args(["-r", &code, pw, ca]))
}

fn php_pdo(port: u16, user: &str, pw: &str, ca: &str) -> String {
    let code = format!(
        "try {{ $p = new PDO('mysql:host=127.0.0.1;port={port}', '{user}', $argv[1], \
         [PDO::MYSQL_ATTR_SSL_CA => $argv[2], PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT => true]); \
         echo 'tls ', $p->query('SELECT 1 + 1')->fetchColumn(); }} \
         catch (PDOException $e) {{ echo 'error ', $e->getCode(); }}"
    );
    output(Command::new("php").args(["-r", &code, pw, ca]))
}

fn node_mysql2(port: u16, user: &str, pw: &str, ca: &str) -> String {
    let code = format!(
        "const c = require('mysql2').createConnection({{host: '127.0.0.1', port: {port}, user: '{user}', \
         password: process.argv[1], ssl: {{ca: require('fs').readFileSync(process.argv[2])}}}});\
         c.query('SELECT 1 + 1 AS v', (e, r) => {{ \
           if (e) {{ console.log('error ' + (e.errno || e.code)); process.exit(0); }} \
           const s = c.stream; \
           console.log((s.encrypted ? 'TLSSocket ' + s.getProtocol() : 'plain') + ' ' + r[0].v); process.exit(0); }});"
    );
    output(
        Command::new("node")
            .args(["-e", &code, pw, ca])
            .env("NODE_PATH", common::node_modules()),
    )
}

/// Connector/J (Debian's libmariadb-java), TLS required, the certificate
/// checked against `ca` and the host name: a funnel without TLS is refused
/// by the driver itself ("ssl not enabled in the server").
const JDBC_JAR: &str = "/usr/share/java/mariadb-java-client.jar";

fn jdbc(port: u16, user: &str, pw: &str, ca: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("Tls.java");
    std::fs::write(
        &src,
        r#"
import java.sql.*;
public class Tls {
    public static void main(String[] a) {
        String url = "jdbc:mariadb://127.0.0.1:" + a[0] + "/?user=" + a[1] + "&password=" + a[2]
            + "&useSsl=true&serverSslCert=" + a[3] + "&connectTimeout=10000";
        try (Connection c = DriverManager.getConnection(url);
             ResultSet r = c.createStatement().executeQuery("SELECT 1 + 1")) {
            r.next();
            System.out.println("tls " + r.getInt(1));
        } catch (SQLException e) {
            System.out.println("error " + e.getErrorCode() + " " + e.getMessage());
        }
    }
}
"#,
    )
    .expect("write Tls.java");
    output(Command::new("java").args([
        "-cp",
        JDBC_JAR,
        &src.display().to_string(),
        &port.to_string(),
        user,
        pw,
        ca,
    ]))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn clients_log_in_over_tls_and_check_the_certificate() {
    let ca = TestCa::new("funnel test CA");
    let cert = ca.localhost("funnel");
    let f = start_funnel(&tls_lines(&cert), "");
    let (port, user, pw) = (f.port, common::USER_A, common::PASS_A);
    let ca_path = path(&ca.cert);
    let mut failures = Vec::new();
    let mut check = |name: &str, got: String, ok: &dyn Fn(&str) -> bool| {
        eprintln!("{name}: {got}");
        if !ok(&got) {
            failures.push(format!("{name}: {got}"));
        }
    };

    let out = cli(port, user, pw, Some(&ca_path));
    let cipher = cli_cipher(&out).map(str::to_string);
    check(
        "mariadb --ssl --ssl-verify-server-cert",
        format!(
            "cipher {cipher:?}, two: {}",
            out.lines().last().unwrap_or("")
        ),
        &|s| s.contains("cipher Some(\"TLS_") && s.ends_with("two: 2"),
    );
    // TLS 1.2 too (older clients and servers).
    let out = output(
        mariadb_cli(port, user, pw, Some(&ca_path))
            .arg("--tls-version=TLSv1.2")
            .args(STATUS_AND_TWO),
    );
    let cipher = cli_cipher(&out).map(str::to_string);
    check(
        "mariadb --tls-version=TLSv1.2",
        format!(
            "cipher {cipher:?}, two: {}",
            out.lines().last().unwrap_or("")
        ),
        &|s| s.contains("cipher Some(\"ECDHE-") && s.ends_with("two: 2"),
    );
    let pymysql = pymysql_tls(PYMYSQL_BODY);
    for (name, code) in [
        ("PyMySQL", pymysql.as_str()),
        ("mysql-connector-python", CONNECTOR),
    ] {
        check(
            name,
            python(code, &[&port.to_string(), user, pw, &ca_path]),
            &|s| s.starts_with("SSLSocket TLSv1.3 2") || s.starts_with("SSLSocket TLSv1.2 2"),
        );
    }
    if have("php") {
        check("PHP mysqli", php_mysqli(port, user, pw, &ca_path), &|s| {
            s == "tls 2"
        });
        check("PHP PDO", php_pdo(port, user, pw, &ca_path), &|s| {
            s == "tls 2"
        });
    }
    if have("node") {
        check("Node mysql2", node_mysql2(port, user, pw, &ca_path), &|s| {
            s.starts_with("TLSSocket TLSv1.") && s.ends_with(" 2")
        });
    }
    if have("java") && std::path::Path::new(JDBC_JAR).exists() {
        check("JDBC (Connector/J)", jdbc(port, user, pw, &ca_path), &|s| {
            s == "tls 2"
        });
    } else {
        eprintln!("JDBC not tried: no java or no {JDBC_JAR} (apt-get install default-jre-headless libmariadb-java)");
    }
    // A wrong password over TLS is still ERR 1045.
    check(
        "PyMySQL, wrong password",
        python(&pymysql, &[&port.to_string(), user, "wrong", &ca_path]),
        &|s| s.starts_with("error 1045 Access denied"),
    );
    // Plain clients still get in (TLS is offered, not required).
    check("mariadb --skip-ssl", cli(port, user, pw, None), &|s| {
        s.ends_with("\n2") && cli_cipher(s).is_none()
    });

    // The certificate is really checked: another CA's clients refuse it.
    let other = TestCa::new("another CA");
    let other_path = path(&other.cert);
    check(
        "mariadb, another CA",
        cli(port, user, pw, Some(&other_path)),
        &|s| s.contains("[exit Some(1)]") && s.contains("2026"),
    );
    check(
        "PyMySQL, another CA",
        python(&pymysql, &[&port.to_string(), user, pw, &other_path]),
        &|s| s.starts_with("error 2003") || s.contains("CERTIFICATE_VERIFY_FAILED"),
    );
    if have("java") && std::path::Path::new(JDBC_JAR).exists() {
        check(
            "JDBC, another CA",
            jdbc(port, user, pw, &other_path),
            &|s| s.starts_with("error") && s.contains("PKIX path building failed"),
        );
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", f.log());
}

#[test]
fn without_a_certificate_tls_is_not_offered() {
    let ca = TestCa::new("funnel test CA");
    let f = start_funnel("", "");
    let (port, user, pw) = (f.port, common::USER_A, common::PASS_A);
    let ca_path = path(&ca.cert);
    // Clients that require TLS fail by their own checks (the greeting
    // has no CLIENT_SSL), before sending anything.
    let out = cli(port, user, pw, Some(&ca_path));
    assert!(
        out.contains("[exit Some(1)]") && out.contains("2026"),
        "mariadb --ssl against a funnel without TLS: {out}"
    );
    let out = python(
        &pymysql_tls(PYMYSQL_BODY),
        &[&port.to_string(), user, pw, &ca_path],
    );
    assert!(
        out.starts_with("error"),
        "PyMySQL with ssl against a funnel without TLS: {out}"
    );
    if have("php") {
        let out = php_mysqli(port, user, pw, &ca_path);
        assert!(out.starts_with("error"), "PHP mysqli: {out}");
    }
    if have("java") && std::path::Path::new(JDBC_JAR).exists() {
        let out = jdbc(port, user, pw, &ca_path);
        assert!(out.starts_with("error"), "JDBC: {out}");
    }
    // Plain clients as before.
    assert!(cli(port, user, pw, None).ends_with("\n2"));
}

#[test]
fn require_tls_refuses_plain_clients_as_mysqld_does() {
    let ca = TestCa::new("funnel test CA");
    let cert = ca.localhost("funnel");
    let ca_path = path(&ca.cert);
    // Per user: A must use TLS, B need not.
    let f = start_funnel(&tls_lines(&cert), "require_tls = true");
    let port = f.port;
    let plain_a = cli(port, common::USER_A, common::PASS_A, None);
    assert!(
        plain_a.contains("ERROR 1045 (28000)")
            && plain_a.contains(&format!(
                "Access denied for user '{}'@'127.0.0.1' (using password: YES)",
                common::USER_A
            )),
        "plain client of a require_tls user: {plain_a}"
    );
    let tls_a = cli(port, common::USER_A, common::PASS_A, Some(&ca_path));
    assert!(
        tls_a.ends_with("\n2") && cli_cipher(&tls_a).is_some(),
        "{tls_a}"
    );
    let plain_b = cli(port, common::USER_B, common::PASS_B, None);
    assert!(
        plain_b.ends_with("\n2"),
        "plain client of another user: {plain_b}"
    );
    // COM_CHANGE_USER from a plain connection to the require_tls user.
    let mut b = f.conn(common::USER_B, common::PASS_B);
    let changed = b.change_user(
        mysql::ChangeUserOpts::default()
            .with_user(Some(common::USER_A.into()))
            .with_pass(Some(common::PASS_A.into())),
    );
    match changed {
        Err(mysql::Error::MySqlError(e)) => assert_eq!(e.code, 1045, "{e}"),
        other => panic!("change user to a require_tls user without TLS: {other:?}"),
    }
    // Still logged in as before, as after a refused change on mysqld.
    let who: String = b.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert!(who.starts_with(common::USER_B), "{who}");
    assert!(f.log().contains("without TLS"), "{}", f.log());
    drop(f);

    // For everyone ([funnel] require_tls): TCP clients need TLS, the unix
    // socket is let in (as mysqld's require_secure_transport).
    let f = start_funnel(&format!("{}require_tls = true\n", tls_lines(&cert)), "");
    let plain_b = cli(f.port, common::USER_B, common::PASS_B, None);
    assert!(
        plain_b.contains("ERROR 1045 (28000)"),
        "plain TCP client with [funnel] require_tls: {plain_b}"
    );
    let tls_b = cli(f.port, common::USER_B, common::PASS_B, Some(&ca_path));
    assert!(tls_b.ends_with("\n2"), "{tls_b}");
    let socket = f.dir.join("funnel.sock");
    let over_socket = output(mariadb_cli_socket(&socket, None).args(["-N", "-e", "SELECT 1 + 1"]));
    assert_eq!(over_socket, "2", "unix socket client with require_tls");
    // TLS over the unix socket works too (the certificate is for localhost).
    let tls_socket = output(mariadb_cli_socket(&socket, Some(&ca_path)).args(STATUS_AND_TWO));
    assert!(
        cli_cipher(&tls_socket).is_some() && tls_socket.ends_with("\n2"),
        "TLS over the unix socket: {tls_socket}"
    );
}

#[test]
fn sighup_replaces_the_certificate_for_new_clients_only() {
    let ca = TestCa::new("funnel test CA");
    let first = ca.localhost("first");
    let second = ca.localhost("second");
    assert_ne!(first.fingerprint, second.fingerprint);
    // The funnel reads its certificate from these paths.
    let live = TestCert {
        cert: ca.dir.join("live.crt"),
        key: ca.dir.join("live.key"),
        fingerprint: String::new(),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let f = start_funnel(&tls_lines(&live), "");
    let ca_path = path(&ca.cert);
    // A TLS client that stays connected over the reload: prints the
    // certificate it got, then runs a query for each line it reads.
    let code = pymysql_tls(
        r#"
c = connect()
print(fingerprint(c), flush=True)
for line in sys.stdin:
    cur = c.cursor(); cur.execute('SELECT ' + line.strip()); print(cur.fetchone()[0], flush=True)
"#,
    );
    let port = f.port.to_string();
    let args = [port.as_str(), common::USER_A, common::PASS_A, &ca_path];
    let mut old = LineClient::spawn(&code, &args);
    assert_eq!(old.line(), first.fingerprint, "the first certificate");
    let fingerprint_now = || python(&pymysql_tls("print(fingerprint(connect()))\n"), &args);

    // A broken replacement: the reload is refused, the certificate kept.
    std::fs::write(&live.cert, "not a certificate\n").unwrap();
    f.signal(libc::SIGHUP);
    assert!(
        f.wait_for_log("reload refused", Duration::from_secs(10)),
        "{}",
        f.log()
    );
    assert_eq!(fingerprint_now(), first.fingerprint);

    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    f.signal(libc::SIGHUP);
    assert!(
        f.wait_for_log("TLS certificate reloaded", Duration::from_secs(10)),
        "{}",
        f.log()
    );
    assert_eq!(fingerprint_now(), second.fingerprint, "a new client");
    // The client connected before goes on, on its TLS session.
    old.send("20 + 22");
    assert_eq!(old.line(), "42", "{}", f.log());
}

#[test]
fn bad_tls_files_stop_the_start_with_exit_code_2() {
    let ca = TestCa::new("funnel test CA");
    let cert = ca.localhost("funnel");
    let other = ca.localhost("other");
    let run = |funnel_lines: &str, backend_lines: &str| {
        let (status, log) = FunnelConfig::user_a()
            .funnel(funnel_lines)
            .backend(backend_lines)
            .builder()
            .run_to_exit(Duration::from_secs(20));
        (status.and_then(|s| s.code()), log)
    };
    let missing = ca.dir.join("missing.crt");
    for (lines, backend, expect) in [
        (
            format!(
                "tls_cert = {}\ntls_key = {}\n",
                path(&missing),
                path(&cert.key)
            ),
            String::new(),
            "[funnel] tls_cert: cannot read the certificate file",
        ),
        (
            format!(
                "tls_cert = {}\ntls_key = {}\n",
                path(&cert.cert),
                path(&other.key)
            ),
            String::new(),
            "does not go with the certificate",
        ),
        (
            format!(
                "tls_cert = {}\ntls_key = {}\n",
                path(&cert.key),
                path(&cert.key)
            ),
            String::new(),
            "holds no PEM certificate",
        ),
        (
            format!("tls_cert = {}\n", path(&cert.cert)),
            String::new(),
            "[funnel] tls_key: is required with tls_cert",
        ),
        (
            "require_tls = true\n".to_string(),
            String::new(),
            "[funnel] require_tls: needs tls_cert",
        ),
        (
            String::new(),
            "tls = verify_identity\n".to_string(),
            "[backend] tls: tls = verify_identity needs tls_ca",
        ),
        (
            String::new(),
            format!("tls = verify_ca\ntls_ca = {}\n", path(&missing)),
            "[backend] tls_ca: cannot read the CA file",
        ),
        (
            String::new(),
            "tls = sometimes\n".to_string(),
            "[backend] tls: must be off, prefer, require, verify_ca or verify_identity",
        ),
    ] {
        let (code, log) = run(&lines, &backend);
        assert_eq!(code, Some(2), "{lines}{backend}: {log}");
        assert!(
            log.contains(expect),
            "{lines}{backend}: expected {expect:?} in:\n{log}"
        );
    }
}

/// A MariaDB with TLS: a certificate of `ca` for `names`.
fn mariadb_with_tls(ca: &TestCa, cert: &TestCert) -> MariaDb {
    MariaDb::with_args(&[
        format!("--ssl-ca={}", path(&ca.cert)),
        format!("--ssl-cert={}", path(&cert.cert)),
        format!("--ssl-key={}", path(&cert.key)),
    ])
}

fn backend_funnel(db: &MariaDb, backend_lines: &str) -> FunnelProcess {
    FunnelConfig::user_a()
        .backend_port(db.port)
        .backend("connect_timeout_ms = 2000\nreconnect_backoff_max_ms = 500")
        .backend(backend_lines)
        .pool("connections = 1\nqueue_timeout_ms = 3000")
        .start()
}

/// What mysqld says of the TLS of the backend connection a client's
/// query ran on.
fn backend_ssl_version(f: &FunnelProcess) -> Result<String, String> {
    let mut c = f
        .try_conn(common::USER_A, common::PASS_A)
        .map_err(|e| e.to_string())?;
    let row: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .map_err(|e| e.to_string())?;
    Ok(row.map(|(_, v)| v).unwrap_or_default())
}

#[test]
fn funnel_logs_in_to_mysqld_over_tls() {
    let ca = TestCa::new("mysqld test CA");
    let good = ca.localhost("mysqld");
    let db = mariadb_with_tls(&ca, &good);
    let ca_path = path(&ca.cert);

    // verify_identity: the certificate is for 127.0.0.1, as the address.
    let f = backend_funnel(&db, &format!("tls = verify_identity\ntls_ca = {ca_path}\n"));
    let v = backend_ssl_version(&f);
    assert!(
        v.as_ref().is_ok_and(|v| v.starts_with("TLSv1.")),
        "verify_identity: {v:?}\n{}",
        f.log()
    );
    // Without TLS, the same server answers an empty Ssl_version: the
    // check above does tell.
    let f = backend_funnel(&db, "tls = off\n");
    assert_eq!(backend_ssl_version(&f), Ok(String::new()));
    // prefer takes TLS when offered.
    let f = backend_funnel(&db, "tls = prefer\n");
    assert!(backend_ssl_version(&f).is_ok_and(|v| v.starts_with("TLSv1.")));
    drop(f);
    drop(db);

    // A mysqld that speaks TLS 1.2 only.
    let db12 = MariaDb::with_args(&[
        format!("--ssl-ca={}", path(&ca.cert)),
        format!("--ssl-cert={}", path(&good.cert)),
        format!("--ssl-key={}", path(&good.key)),
        "--tls-version=TLSv1.2".to_string(),
    ]);
    let f = backend_funnel(
        &db12,
        &format!("tls = verify_identity\ntls_ca = {ca_path}\n"),
    );
    assert_eq!(
        backend_ssl_version(&f),
        Ok("TLSv1.2".to_string()),
        "{}",
        f.log()
    );
    drop(f);
    drop(db12);

    // A certificate for another name: verify_identity refuses it,
    // verify_ca (the chain only) takes it.
    let elsewhere = ca.issue("elsewhere", &["DNS:db.example.com"]);
    let db = mariadb_with_tls(&ca, &elsewhere);
    let f = backend_funnel(&db, &format!("tls = verify_identity\ntls_ca = {ca_path}\n"));
    let v = backend_ssl_version(&f);
    assert!(
        v.is_err(),
        "verify_identity with a certificate for another name: {v:?}"
    );
    assert!(
        f.wait_for_log("certificate not valid for name", Duration::from_secs(10)),
        "{}",
        f.log()
    );
    let f = backend_funnel(&db, &format!("tls = verify_ca\ntls_ca = {ca_path}\n"));
    let v = backend_ssl_version(&f);
    assert!(
        v.as_ref().is_ok_and(|v| v.starts_with("TLSv1.")),
        "verify_ca: {v:?}\n{}",
        f.log()
    );
    // tls_server_name names what the certificate is for.
    let f = backend_funnel(
        &db,
        &format!("tls = verify_identity\ntls_ca = {ca_path}\ntls_server_name = db.example.com\n"),
    );
    let v = backend_ssl_version(&f);
    assert!(
        v.as_ref().is_ok_and(|v| v.starts_with("TLSv1.")),
        "tls_server_name: {v:?}\n{}",
        f.log()
    );
    // Another CA: verify_ca refuses.
    let other = TestCa::new("another CA");
    let f = backend_funnel(
        &db,
        &format!("tls = verify_ca\ntls_ca = {}\n", path(&other.cert)),
    );
    assert!(backend_ssl_version(&f).is_err());
    assert!(
        f.wait_for_log("invalid peer certificate", Duration::from_secs(10)),
        "{}",
        f.log()
    );
}

#[test]
fn require_against_a_mysqld_without_tls_fails_clearly() {
    // The shared server has no certificate.
    let f = FunnelConfig::user_a()
        .backend("tls = require")
        .pool("connections = 1\nqueue_timeout_ms = 5000")
        .start();
    let err = backend_ssl_version(&f).expect_err("no backend without TLS");
    assert!(
        err.contains("1045") && err.contains("mysqld does not offer TLS"),
        "{err}"
    );
    assert!(f
        .log()
        .contains("mysqld does not offer TLS, and [backend] tls = require requires it"));
}

#[test]
fn a_require_ssl_account_and_a_require_tls_user_answer_alike() {
    // mysqld's own answer to a plain client of a REQUIRE SSL account,
    // next to the funnel's for a require_tls user.
    let ca = TestCa::new("test CA");
    let cert = ca.localhost("both");
    let db = mariadb_with_tls(&ca, &cert);
    db.admin_sql(
        "CREATE USER 'tls_only'@'127.0.0.1' IDENTIFIED BY 'tls_pw' REQUIRE SSL; \
         GRANT ALL ON *.* TO 'tls_only'@'127.0.0.1'",
    );
    let direct = cli(db.port, "tls_only", "tls_pw", None);
    let f = FunnelConfig::empty()
        .backend_port(db.port)
        .funnel(&tls_lines(&cert))
        .backend("tls = require")
        .pool("connections = 1")
        .user("tls_only", "tls_pw", &["require_tls = true"])
        .start();
    let port = f.port;
    let through = cli(port, "tls_only", "tls_pw", None);
    let error_line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("ERROR"))
            .unwrap_or("")
            .to_string()
    };
    assert!(direct.contains("ERROR 1045"), "direct: {direct}");
    assert_eq!(error_line(&through), error_line(&direct));
    // Over TLS both ways, it logs in (the backend's own login needs TLS:
    // the account requires it of the funnel too).
    let ok = cli(port, "tls_only", "tls_pw", Some(&path(&ca.cert)));
    assert!(ok.ends_with("\n2"), "{ok}\n{}", f.log());
}

#[test]
fn big_commands_and_results_cross_tls_both_ways() {
    // Client -> funnel -> mysqld all over TLS: a 6 MB query, a 5 MB value,
    // 50,000 rows; several TLS records each way, written as fast as the
    // sockets take them.
    let ca = TestCa::new("test CA");
    let cert = ca.localhost("both");
    let db = mariadb_with_tls(&ca, &cert);
    let ca_path = path(&ca.cert);
    let f = FunnelConfig::user_a()
        .backend_port(db.port)
        .funnel(&tls_lines(&cert))
        .backend(&format!("tls = verify_identity\ntls_ca = {ca_path}"))
        .pool("connections = 1")
        .start();
    let port = f.port;
    let code = pymysql_tls(
        r#"
c = connect(read_timeout=60, write_timeout=60, database='funnel_test')
assert type(c._sock).__name__ == 'SSLSocket'
cur = c.cursor()
big = ''.join(chr(97 + i % 26) for i in range(3_000_000))
cur.execute("SELECT LENGTH(%s), MD5(%s)", (big, big))
n, md5 = cur.fetchone()
assert (n, md5) == (3_000_000, hashlib.md5(big.encode()).hexdigest()), (n, md5)
cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
backend_tls = cur.fetchone()[1]
cur.execute("SELECT REPEAT('x', 5000000)")
v = cur.fetchone()[0]
assert v == 'x' * 5_000_000, len(v)
cur.execute("SELECT seq, REPEAT('z', 100) FROM seq_1_to_50000")
rows = cur.fetchall()
assert len(rows) == 50000 and rows[-1] == (50000, 'z' * 100), rows[-1]
print('ok', backend_tls)
"#,
    );
    let out = python(
        &code,
        &[&port.to_string(), common::USER_A, common::PASS_A, &ca_path],
    );
    assert!(out.starts_with("ok TLSv1."), "{out}\n{}", f.log());
}

#[test]
fn the_admin_console_offers_tls_with_the_same_certificate() {
    let ca = TestCa::new("funnel test CA");
    let cert = ca.localhost("funnel");
    let admin_port = common::free_port();
    let f = start_funnel(
        &format!(
            "{}\n[admin]\nlisten = 127.0.0.1:{admin_port}\npassword = admin_pw\n",
            tls_lines(&cert)
        ),
        "",
    );
    let out = cli(admin_port, "admin", "admin_pw", Some(&path(&ca.cert)));
    assert!(
        cli_cipher(&out).is_some_and(|c| c.starts_with("TLS_")),
        "admin console over TLS: {out}\n{}",
        f.log()
    );
    // SHOW commands work inside TLS, and plain sessions as before.
    let show = |ca: Option<&str>| {
        output(mariadb_cli(admin_port, "admin", "admin_pw", ca).args(["-N", "-e", "SHOW VERSION"]))
    };
    let ca_path = path(&ca.cert);
    assert!(
        show(Some(&ca_path)).contains("funnel"),
        "{}",
        show(Some(&ca_path))
    );
    assert!(show(None).contains("funnel"), "{}", show(None));
    let other = TestCa::new("another CA");
    assert!(show(Some(&path(&other.cert))).contains("2026"));
}

#[test]
fn a_restart_hands_plain_clients_over_and_closes_tls_ones_between_commands() {
    // A TLS session cannot move to another process: its client is closed
    // between its commands (as without a successor), and connects again
    // to the new funnel; plain clients go over with their sessions.
    let ca = TestCa::new("funnel test CA");
    let cert = ca.localhost("funnel");
    let dir = tempfile::Builder::new()
        .prefix("funnel-tls-restart-")
        .tempdir_in("/tmp")
        .unwrap();
    let port = common::free_port();
    let cfg = FunnelConfig::user_a()
        .funnel(&format!(
            "unix_socket = {}/funnel.sock",
            dir.path().display()
        ))
        .funnel("shutdown_timeout_ms = 15000")
        .funnel(&tls_lines(&cert))
        .pool("connections = 2")
        .text(port);
    let mut a = FunnelProcess::start(&cfg, port);
    let mut plain = a.conn(common::USER_A, common::PASS_A);
    plain.query_drop("SET @marker = 'plain one'").unwrap();
    let code = pymysql_tls(
        r#"
c = connect()
print(type(c._sock).__name__, flush=True)
for line in sys.stdin:
    try:
        cur = c.cursor(); cur.execute('SELECT ' + line.strip()); print(cur.fetchone()[0], flush=True)
    except pymysql.err.OperationalError as e:
        print('error', e.args[0], flush=True)
        c = connect()
        print('again', type(c._sock).__name__, flush=True)
"#,
    );
    let port_arg = port.to_string();
    let ca_path = path(&ca.cert);
    let mut tls_client = LineClient::spawn(
        &code,
        &[&port_arg, common::USER_A, common::PASS_A, &ca_path],
    );
    assert_eq!(tls_client.line(), "SSLSocket");

    let b = FunnelProcess::builder(&cfg).start();
    assert!(
        b.wait_for_log(
            "stopped accepting: this one serves new clients",
            Duration::from_secs(30)
        ),
        "{}",
        b.log()
    );
    a.signal(libc::SIGTERM);
    let status = a
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the old funnel did not exit:\n{}", a.log()));
    assert!(status.success(), "{}", a.log());
    let log_a = a.log();
    assert!(log_a.contains("closed between its commands"), "{log_a}");

    // The plain client went over, session and all.
    let marker: Option<String> = plain.query_first("SELECT @marker").unwrap();
    assert_eq!(marker.as_deref(), Some("plain one"));
    // The TLS client finds its connection closed, and is served by the
    // new funnel over TLS when it connects again.
    tls_client.send("1 + 1");
    let line = tls_client.line();
    assert!(line.starts_with("error 20"), "{line}");
    assert_eq!(tls_client.line(), "again SSLSocket");
    tls_client.send("2 + 2");
    assert_eq!(tls_client.line(), "4", "{}", b.log());
}

#[test]
fn relayed_logins_use_tls_to_mysqld_exactly_when_the_client_does() {
    // A relayed login passes packets with their sequence ids, and a TLS
    // client's count one more (its SSL request): its login to mysqld is
    // made over TLS too, a plain client's without.
    let ca = TestCa::new("test CA");
    let cert = ca.localhost("both");
    let db = mariadb_with_tls(&ca, &cert);
    db.admin_sql(
        "CREATE USER 'unlisted'@'%' IDENTIFIED BY 'unlisted_pw'; \
         GRANT SELECT ON *.* TO 'unlisted'@'%'",
    );
    let ca_path = path(&ca.cert);
    let funnel = |backend_tls: &str| {
        FunnelConfig::user_a()
            .backend_port(db.port)
            .funnel("unlisted_users = relay")
            .funnel(&tls_lines(&cert))
            .backend(backend_tls)
            .pool("connections = 1")
            .start()
    };
    // What mysqld says of the relayed connection's TLS, as seen by a
    // client with or without TLS.
    let ssl_version = |port: u16, ca: Option<&str>| {
        output(mariadb_cli(port, "unlisted", "unlisted_pw", ca).args([
            "-N",
            "-e",
            "SELECT CONCAT('[', VARIABLE_VALUE, ']') FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'",
        ]))
    };
    let f = funnel("tls = prefer");
    let over_tls = ssl_version(f.port, Some(&ca_path));
    assert!(
        over_tls.starts_with("[TLSv1."),
        "TLS client: {over_tls}\n{}",
        f.log()
    );
    assert_eq!(ssl_version(f.port, None), "[]", "plain client");
    drop(f);
    // tls = require: a plain client's relayed login cannot be made.
    let f = funnel("tls = require");
    assert!(ssl_version(f.port, Some(&ca_path)).starts_with("[TLSv1."));
    let plain = ssl_version(f.port, None);
    assert!(
        plain.contains("ERROR 1045") && plain.contains("[backend] tls = require requires"),
        "{plain}"
    );
    drop(f);
    // tls = off: a TLS client's relayed login cannot be made.
    let f = funnel("");
    assert_eq!(ssl_version(f.port, None), "[]");
    let tls_client = ssl_version(f.port, Some(&ca_path));
    assert!(
        tls_client.contains("ERROR 1045") && tls_client.contains("[backend] tls is off"),
        "{tls_client}"
    );
}

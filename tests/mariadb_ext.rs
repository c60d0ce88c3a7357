//! MariaDB's extended type information (MARIADB_CLIENT_EXTENDED_METADATA)
//! and bulk operations (COM_STMT_BULK_EXECUTE) through the funnel, with real
//! clients, each run against mysqld directly and through the funnel and the
//! transcripts compared:
//! - Node's mysql2 (asks for extended metadata, parses JSON columns by it)
//!   and the `mariadb` connector (asks for it and for bulk operations; its
//!   `batch()` sends COM_STMT_BULK_EXECUTE): `tests/clients/mariadb_ext.js`.
//!   Both are installed with npm into a cache directory on first use
//!   (FUNNEL_NODE_CACHE, default /tmp/funnel-node-cache).
//! - PyMySQL and mysql-connector-python (pure), which do not ask: they must
//!   get column definitions without it, byte for byte as from mysqld
//!   (`tests/clients/no_ext_metadata.py`).
//!
//! libmariadb's and libmysqlclient's C API flows in `e2e_clients.rs` compare
//! every kind of response packet by packet.
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::clients::script;
use common::{FunnelConfig, FunnelProcess, PASS_A, TEST_DB, USER_A};

fn start_funnel() -> FunnelProcess {
    // Two backends: statements are prepared and bulk-executed on either.
    FunnelConfig::user_a().pool("connections = 2").start()
}

/// mysqld's count of prepared-statement executions (a bulk execute counts
/// once, whatever its number of rows).
fn stmt_executes() -> u64 {
    let mut c = mysql::Conn::new(mysql::Opts::from_url(&common::root_url()).expect("root url"))
        .expect("root connection");
    common::sql::global_status(&mut c, "Com_stmt_execute")
}

/// Runs `program args` with the port, user, password, database and table
/// appended; its stdout, and the number of statement executions mysqld
/// counted meanwhile.
fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, PathBuf)],
    port: u16,
    table: &str,
) -> (String, u64) {
    let before = stmt_executes();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args([&port.to_string(), USER_A, PASS_A, TEST_DB, table]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} on port {port} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stmt_executes() - before,
    )
}

#[test]
fn node_clients_get_extended_type_info_and_bulk_execute() {
    let modules = common::node_modules();
    let f = start_funnel();
    let db = common::mariadb();
    let table = common::unique_name("ext_node");
    let env = [("NODE_PATH", modules)];
    let js = script("mariadb_ext.js");
    let js = js.to_str().expect("path");
    let (direct, direct_execs) = run("node", &[js], &env, db.port, &table);
    let (through, funnel_execs) = run("node", &[js], &env, f.port, &table);
    assert_eq!(
        through,
        direct,
        "Node's clients see something else through the funnel\n--- funnel log ---\n{}",
        f.log()
    );
    // What the transcript must show, so that equal transcripts mean
    // something: the clients negotiated both extensions, mysql2 parsed JSON
    // columns into objects by their format (text and binary protocol), the
    // type names of UUID and INET4 columns came through, and every batch
    // landed.
    for line in [
        r#"["mysql2-extended-metadata",true]"#,
        r#""j":{"a":[1,2],"b":null}"#,
        r#"["j",252,null,"json"],["u",254,"uuid",null],["i4",254,"inet4",null],["i6",254,"inet6",null]"#,
        r#"["bound-json",[{"j":{"bound":[1,"two"]}}]]"#,
        r#"["o",253,null,"json"]"#,
        r#"["mariadb-capabilities",{"bulk":true,"extended_metadata":true}]"#,
        r#"["batch-1",{"affectedRows":100}]"#,
        r#"["batch-b-2",{"affectedRows":50}]"#,
        r#"["batch-duplicate",{"errno":1062,"sqlState":"23000"}]"#,
        r#"["landed",[{"n":"310","#,
        r#"["mariadb-meta",[["j","BLOB",null,true],["u","STRING","uuid",false]]]"#,
        r#"["done",true]"#,
    ] {
        assert!(through.contains(line), "{line} not in\n{through}");
    }
    // Each batch() was one COM_STMT_BULK_EXECUTE (a batch sent row by row
    // would count 310 executes and more), directly and through the funnel.
    for (way, n) in [
        ("directly", direct_execs),
        ("through the funnel", funnel_execs),
    ] {
        assert!(
            (9..60).contains(&n),
            "{n} statement executions {way}: the batches were not bulk executes"
        );
    }
}

#[test]
fn clients_that_do_not_ask_get_plain_column_definitions() {
    let f = start_funnel();
    let db = common::mariadb();
    let table = common::unique_name("ext_plain");
    let py = script("no_ext_metadata.py");
    let py = py.to_str().expect("path");
    let (direct, _) = run("python3", &[py], &[], db.port, &table);
    let (through, _) = run("python3", &[py], &[], f.port, &table);
    assert_eq!(
        through, direct,
        "PyMySQL / mysql-connector see other column definitions through the funnel"
    );
    for line in [
        "pymysql-client-flag-mysql True",
        // The JSON column's definition without extended metadata: org_name
        // "j" then the fixed fields (0x0c), as mysqld sends it.
        "016a016a0c2d00fffffffffc9000000000",
        "connector prepared [('{\"a\": 1}', '123e4567-e89b-12d3-a456-426655440000', '10.0.0.1')]",
        // COM_STMT_BULK_EXECUTE without the capability: mysqld's ERR 1295.
        "bulk without the capability (1295, 'This command is not supported in the prepared statement protocol yet')",
        "after bulk ((1,),)",
        "done",
    ] {
        assert!(through.contains(line), "{line} not in\n{through}");
    }
}

//! Small helpers over the `mysql` crate's answers: one value, the error of
//! a failed call.

use mysql::prelude::{FromRow, Queryable};
use mysql::Conn;

/// The first row of `sql`'s answer; panics on an error or no row.
pub fn one<T: FromRow>(c: &mut Conn, sql: &str) -> T {
    c.query_first(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A `SHOW GLOBAL STATUS` value (`Prepared_stmt_count`, ...) as `c` reads it.
pub fn global_status<T: mysql::prelude::FromValue>(c: &mut Conn, name: &str) -> T {
    let row: Option<(String, T)> = c
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .unwrap_or_else(|e| panic!("SHOW GLOBAL STATUS LIKE '{name}': {e}"));
    row.unwrap_or_else(|| panic!("no global status {name}")).1
}

/// The server error of a failed call: (code, SQLSTATE, message); panics
/// on success or on a client-side error.
pub fn server_error<T: std::fmt::Debug>(r: Result<T, mysql::Error>) -> (u16, String, String) {
    match r {
        Err(mysql::Error::MySqlError(e)) => (e.code, e.state, e.message),
        Err(e) => panic!("expected a server error, got {e:?}"),
        Ok(v) => panic!("expected a server error, got success: {v:?}"),
    }
}

/// The server error code of a failed call (None for success or a
/// client-side error).
pub fn error_code<T>(r: &Result<T, mysql::Error>) -> Option<u16> {
    r.as_ref().err().and_then(code_of)
}

/// The server error code of an error (None for a client-side one).
pub fn code_of(e: &mysql::Error) -> Option<u16> {
    match e {
        mysql::Error::MySqlError(e) => Some(e.code),
        _ => None,
    }
}

/// An error as `ERR code (state): message`, or `client error: ...`.
pub fn err_str(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(m) => format!("ERR {} ({}): {}", m.code, m.state, m.message),
        other => format!("client error: {other}"),
    }
}

/// Statements mysqld runs now whose text contains `marker`, as `root`
/// (an account that sees every process) reads its process list (the
/// probe's own statement does not count).
pub fn running_like(root: &mut Conn, marker: &str) -> u64 {
    root.exec_first(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE CONCAT('%', ?, '%') AND ID <> CONNECTION_ID()",
        (marker,),
    )
    .expect("process list")
    .unwrap_or(0)
}

/// Watches the process list on `root` until `done`; the thread returns
/// the most statements containing `marker` mysqld ran at once.
pub fn watch_peak(
    mut root: Conn,
    marker: &str,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let marker = marker.to_string();
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(running_like(&mut root, &marker));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        peak
    })
}

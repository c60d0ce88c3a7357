//! The funnel's admin console (MySQL protocol) as the tests use it: logging
//! in, and reading its `SHOW` answers.

use std::collections::HashMap;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Value};

/// Login options for an admin console on 127.0.0.1:`port` (add timeouts,
/// a source address, ... as needed).
pub fn admin_opts(port: u16, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .prefer_socket(false)
        .user(Some(user))
        .pass(Some(password))
}

/// A connection to a funnel's admin console on 127.0.0.1:`port`.
pub fn admin_console(port: u16, user: &str, password: &str) -> Conn {
    Conn::new(admin_opts(port, user, password))
        .unwrap_or_else(|e| panic!("admin console on port {port}: {e}"))
}

/// A console value as text (None for NULL).
pub fn cell(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// The value of `column` in `row` as text (None for NULL); panics if the
/// row has no such column.
pub fn column_text(row: &mysql::Row, column: &str) -> Option<String> {
    let i = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str() == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    row.as_ref(i).and_then(cell)
}

/// A console row: column name to text (None for NULL).
pub type Row = HashMap<String, Option<String>>;

/// Every row of `sql`'s answer.
pub fn query(c: &mut Conn, sql: &str) -> Vec<Row> {
    let rows: Vec<mysql::Row> = c.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            r.columns_ref()
                .iter()
                .enumerate()
                .map(|(i, col)| (col.name_str().into_owned(), r.as_ref(i).and_then(cell)))
                .collect()
        })
        .collect()
}

/// The number in `column` of the row of `show` (`SHOW STATS`, `SHOW
/// POOLS`, ...) whose `pool` is `pool`; panics if there is none.
pub fn pool_counter(admin: &mut Conn, show: &str, pool: &str, column: &str) -> u64 {
    let rows: Vec<mysql::Row> = admin.query(show).unwrap_or_else(|e| panic!("{show}: {e}"));
    let row = rows
        .iter()
        .find(|r| r.get::<Value, _>("pool") == Some(Value::from(pool)))
        .unwrap_or_else(|| panic!("{show} has no row for pool {pool}: {rows:?}"));
    match row.get_opt::<u64, _>(column) {
        Some(Ok(v)) => v,
        Some(Err(e)) => panic!("{show}: {column} of pool {pool} is no number: {e:?}"),
        None => panic!("{show} has no column {column}"),
    }
}

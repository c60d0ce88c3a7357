//! `--prepare` / `--cleanup`: the sysbench-like table the workload reads.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::{Credentials, Target};
use crate::proto::SyncConn;
use crate::schedule::Rng;

/// sysbench's `c` and `pad` values: groups of 11 random digits joined by
/// '-' (10 groups = 119 chars for c, 5 groups = 59 chars for pad).
pub fn digits_groups(rng: &mut Rng, groups: usize, out: &mut String) {
    for g in 0..groups {
        if g > 0 {
            out.push('-');
        }
        for _ in 0..11 {
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
    }
}

/// The CREATE TABLE statement.
pub fn create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (\
         id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         k INT NOT NULL DEFAULT 0, \
         c CHAR(120) NOT NULL DEFAULT '', \
         pad CHAR(60) NOT NULL DEFAULT '', \
         KEY k_1 (k)) ENGINE=InnoDB"
    )
}

/// One multi-row INSERT for ids `first..first + n`.
pub fn insert_sql(table: &str, first: u64, n: u64, size: u64, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(64 + n as usize * 200);
    let _ = write!(s, "INSERT INTO {table} (id, k, c, pad) VALUES ");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "({},{},'", first + i, 1 + rng.below(size.max(1)));
        digits_groups(rng, 10, &mut s);
        s.push_str("','");
        digits_groups(rng, 5, &mut s);
        s.push_str("')");
    }
    s
}

/// Drops and recreates `table` with `size` rows, `batch` rows per INSERT.
pub fn prepare(
    target: &Target,
    creds: &Credentials,
    table: &str,
    size: u64,
    batch: u64,
    seed: u64,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut c = SyncConn::connect(target, creds, Duration::from_secs(10))?;
    c.set_timeout(Duration::from_secs(600));
    eprintln!(
        "prepare: {target} ({}), table {table}, {size} rows",
        c.server_version
    );
    c.query(&format!("DROP TABLE IF EXISTS {table}"))?;
    c.query(&create_sql(table))?;
    let mut rng = Rng::new(seed);
    let batch = batch.max(1);
    let mut next = 1;
    while next <= size {
        let n = batch.min(size - next + 1);
        c.query(&insert_sql(table, next, n, size, &mut rng))?;
        next += n;
    }
    let rows = c.query(&format!("SELECT COUNT(*) FROM {table}"))?;
    c.quit();
    let count = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    eprintln!(
        "prepare: done, {count} rows in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn cleanup(target: &Target, creds: &Credentials, table: &str) -> Result<(), String> {
    let mut c = SyncConn::connect(target, creds, Duration::from_secs(10))?;
    c.query(&format!("DROP TABLE IF EXISTS {table}"))?;
    c.quit();
    eprintln!("cleanup: dropped {table} on {target}");
    Ok(())
}

/// What the preflight check learnt about a target.
pub struct Preflight {
    pub server_version: String,
    /// MAX(id) of the table, None if the table is missing or empty.
    pub max_id: Option<u64>,
    /// Why the table could not be read.
    pub table_error: Option<String>,
}

/// Logs in once (blocking) and looks at the table.
pub fn preflight(
    target: &Target,
    creds: &Credentials,
    table: &str,
    timeout: Duration,
) -> Result<Preflight, String> {
    let mut c = SyncConn::connect(target, creds, timeout)?;
    let mut p = Preflight {
        server_version: c.server_version.clone(),
        max_id: None,
        table_error: None,
    };
    match c.query(&format!("SELECT MAX(id) FROM {table}")) {
        Ok(rows) => {
            p.max_id = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|v| String::from_utf8_lossy(&v).parse().ok());
        }
        Err(e) => p.table_error = Some(e),
    }
    c.quit();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_look_like_sysbench() {
        let mut rng = Rng::new(3);
        let mut c = String::new();
        digits_groups(&mut rng, 10, &mut c);
        assert_eq!(c.len(), 119);
        assert_eq!(c.matches('-').count(), 9);
        let mut pad = String::new();
        digits_groups(&mut rng, 5, &mut pad);
        assert_eq!(pad.len(), 59);
        let sql = insert_sql("sbtest1", 11, 2, 100, &mut rng);
        assert!(sql.starts_with("INSERT INTO sbtest1 (id, k, c, pad) VALUES (11,"));
        assert!(sql.contains("),(12,"));
        assert_eq!(sql.matches("),(").count(), 1);
        assert!(create_sql("t").contains("CHAR(120)"));
    }
}

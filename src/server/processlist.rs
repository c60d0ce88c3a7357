//! `SHOW [FULL] PROCESSLIST`, answered by the funnel: mysqld would list its
//! backend connections, whose ids no client knows; clients must see the
//! funnel's clients, with the ids they KILL.
//!
//! A client sees its own user's connections (mysqld's rule for a user
//! without the PROCESS privilege). Columns are typed as MariaDB 10.11 types
//! them for the client's `character_set_results`.

use super::client::ClientState;
use super::Engine;
use crate::protocol::command::command_name;
use crate::protocol::consts::*;
use crate::protocol::deprecate_eof::encode_end_of_rows;
use crate::protocol::packet::write_packet;
use crate::protocol::response::{encode_column_def, encode_eof, encode_text_row};

/// `SHOW PROCESSLIST` (`Some(false)`) or `SHOW FULL PROCESSLIST`
/// (`Some(true)`) as a query of its own: what the statement scan says
/// (`StatementFacts::show_processlist`).
#[cfg(test)]
pub fn processlist_query(sql: &[u8]) -> Option<bool> {
    super::statement::statement_facts(sql).show_processlist
}

/// What a user's global privileges allow with connections, as mysqld
/// decides it: PROCESS shows every user's connections in the process list;
/// SUPER or CONNECTION ADMIN lets a `KILL` stop another user's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    pub process: bool,
    pub kill_any: bool,
}

/// How the funnel learns a pool's [`Privileges`]: asked on one of its
/// backend connections, logged in as the pool's backend user. `SHOW
/// GRANTS` rather than `information_schema.USER_PRIVILEGES`, which lists
/// the user's own grants but not those of its default role (MariaDB
/// 10.11), which mysqld applies too.
pub const PRIVILEGES_SQL: &[u8] = b"SHOW GRANTS";

impl Privileges {
    /// Read from the rows of [`PRIVILEGES_SQL`]: only the global grants
    /// (`GRANT <privileges> ON *.* TO ...`, of the user or of its enabled
    /// role) count; anything else (schema grants, role grants, `PROXY`,
    /// `SET DEFAULT ROLE`) says nothing about connections.
    pub fn from_grants<'a>(rows: impl IntoIterator<Item = &'a str>) -> Privileges {
        let mut p = Privileges::default();
        for row in rows {
            let Some(rest) = row.strip_prefix("GRANT ") else {
                continue;
            };
            let Some(end) = rest.find(" ON *.* TO ") else {
                continue;
            };
            for privilege in rest[..end].split(',') {
                match privilege.trim().to_ascii_uppercase().as_str() {
                    "ALL" | "ALL PRIVILEGES" => {
                        p.process = true;
                        p.kill_any = true;
                    }
                    "PROCESS" => p.process = true,
                    "SUPER" | "CONNECTION ADMIN" => p.kill_any = true,
                    _ => {}
                }
            }
        }
        p
    }
}

/// What `Info` shows without FULL: the statement's first 100 characters.
const PROCESS_LIST_WIDTH: usize = 100;

/// A character set's number as mysqld reports it for result columns (its
/// default collation) and its bytes per character at most.
fn result_charset(name: &str, fallback: u8) -> (u16, u32) {
    match name.to_ascii_lowercase().as_str() {
        "utf8mb4" => (45, 4),
        "utf8mb3" | "utf8" => (33, 3),
        "latin1" => (8, 1),
        "binary" => (63, 1),
        "ascii" => (11, 1),
        "ucs2" => (35, 2),
        "utf16" => (54, 4),
        "utf16le" => (56, 4),
        "utf32" => (60, 4),
        "cp1251" => (51, 1),
        "cp1250" => (26, 1),
        "latin2" => (9, 1),
        _ => (u16::from(fallback), 4),
    }
}

/// mysqld's name for what a connection is doing.
fn command_label(cmd: u8) -> &'static str {
    match cmd {
        COM_QUERY => "Query",
        COM_INIT_DB => "Init DB",
        COM_FIELD_LIST => "Field List",
        COM_STMT_PREPARE => "Prepare",
        COM_STMT_EXECUTE => "Execute",
        COM_STMT_FETCH => "Fetch",
        COM_STMT_RESET => "Reset stmt",
        COM_STMT_SEND_LONG_DATA => "Long Data",
        COM_STMT_CLOSE => "Close stmt",
        COM_PING => "Ping",
        COM_STATISTICS => "Statistics",
        _ => command_name(cmd).strip_prefix("COM_").unwrap_or("Query"),
    }
}

/// One client as the process list shows it.
/// A process-list row of another loop's client (`loops.rs`): as `Row`,
/// without the statement text (only the asking client's is shown).
#[derive(Clone, Debug)]
pub struct PeerRow {
    pub id: u32,
    pub user: String,
    pub host: String,
    pub db: Option<String>,
    pub command: &'static str,
    pub since: std::time::Duration,
}

pub(super) struct Row<'a> {
    pub id: u32,
    pub user: &'a str,
    pub host: String,
    pub db: Option<&'a str>,
    pub command: &'static str,
    /// Time in the current command (or asleep since the last one ended).
    pub since: std::time::Duration,
    pub state: &'static str,
    /// The statement's text: known for the asking client only.
    pub info: Option<&'a [u8]>,
}

/// `s` cut to at most `n` characters, its invalid UTF-8 replaced, as a
/// hex literal of MariaDB's `utf8mb3` (characters outside the BMP become
/// `?`), so that nothing in it needs quoting whatever the connection's
/// character set.
fn utf8mb3_literal(out: &mut String, s: &[u8], n: usize) {
    use std::fmt::Write;
    out.push_str("_utf8mb3 X'");
    for ch in String::from_utf8_lossy(s).chars().take(n) {
        let ch = if ch.len_utf8() > 3 { '?' } else { ch };
        let mut buf = [0u8; 4];
        for b in ch.encode_utf8(&mut buf).as_bytes() {
            let _ = write!(out, "{b:02X}");
        }
    }
    out.push('\'');
}

impl Engine {
    /// The privileges of client `key`'s user, as learnt from mysqld (none
    /// until then).
    pub(super) fn privileges_of(&self, key: usize) -> Privileges {
        self.known_privileges(key).unwrap_or_default()
    }

    fn known_privileges(&self, key: usize) -> Option<Privileges> {
        let c = self.clients.get(key)?;
        if self.relayed_backend(key).is_some() {
            return c.relay_privileges;
        }
        self.pools.get(c.pool)?.privileges
    }

    /// Whether client `key`'s user's privileges have been learnt.
    pub(super) fn privileges_known(&self, key: usize) -> bool {
        self.known_privileges(key).is_some()
    }

    /// What backend `key` learnt of its user's privileges: a relayed
    /// login's are its owner's alone, any other's its pool's.
    pub(super) fn store_privileges(&mut self, key: usize, privileges: Privileges) {
        let b = &self.backends[key];
        if let Some(r) = &b.relay {
            let owner = r.owner;
            if let Some(c) = self
                .clients
                .get_mut(owner.key)
                .filter(|c| c.serial == owner.serial)
            {
                c.relay_privileges = Some(privileges);
            }
            return;
        }
        let p = &mut self.pools[b.pool];
        p.privileges = Some(privileges);
        p.privileges_stale = false;
    }

    /// Whether client `key` may see client `other` in the process list
    /// (mysqld: its own user's connections, all with PROCESS).
    pub(super) fn may_see(&self, key: usize, other: usize) -> bool {
        match (self.clients.get(key), self.clients.get(other)) {
            (Some(me), Some(them)) => me.user == them.user || self.privileges_of(key).process,
            _ => false,
        }
    }

    /// The process list client `key` sees, by id: its user's clients (all
    /// with PROCESS) past their login, with those of the other loops
    /// (`peers`); `own_state` is the asking client's state and `sql` its
    /// statement.
    pub(super) fn processlist_rows<'a>(
        &'a self,
        key: usize,
        own_state: &'static str,
        sql: &'a [u8],
        peers: &'a [PeerRow],
    ) -> Vec<Row<'a>> {
        let mut rows: Vec<Row<'a>> = self
            .clients
            .iter()
            .filter(|&(k, c)| {
                !matches!(c.state, ClientState::Handshake | ClientState::AuthSwitch(_))
                    && self.may_see(key, k)
            })
            .map(|(k, c)| {
                let (command, since) = self.process_command(c);
                let (command, since, state, info) = if k == key {
                    ("Query", std::time::Duration::ZERO, own_state, Some(sql))
                } else {
                    (command, since, "", None)
                };
                Row {
                    id: c.id,
                    user: &c.user,
                    host: c.peer.processlist_host(),
                    db: c.session.schema.as_deref(),
                    command,
                    since,
                    state,
                    info,
                }
            })
            .collect();
        rows.extend(peers.iter().map(|p| Row {
            id: p.id,
            user: &p.user,
            host: p.host.clone(),
            db: p.db.as_deref(),
            command: p.command,
            since: p.since,
            state: "",
            info: None,
        }));
        rows.sort_unstable_by_key(|r| r.id);
        rows
    }

    /// What a client other than the asking one is doing, and since when.
    fn process_command(&self, c: &super::client::Client) -> (&'static str, std::time::Duration) {
        let since = self.now.saturating_duration_since(c.command_read_at);
        if c.is_busy() {
            let cmd = c
                .current()
                .and_then(|_| c.rbuf.as_slice().get(4).copied())
                .unwrap_or(COM_QUERY);
            (command_label(cmd), since)
        } else {
            ("Sleep", since)
        }
    }

    /// This loop's process-list rows a client of `user` on another loop
    /// sees (`process`: every user's).
    pub(super) fn processlist_for_loop(&self, user: &str, process: bool) -> Vec<PeerRow> {
        self.clients
            .iter()
            .filter(|(_, c)| {
                !matches!(c.state, ClientState::Handshake | ClientState::AuthSwitch(_))
                    && (process || c.user == user)
            })
            .map(|(_, c)| {
                let (command, since) = self.process_command(c);
                PeerRow {
                    id: c.id,
                    user: c.user.clone(),
                    host: c.peer.processlist_host(),
                    db: c.session.schema.clone(),
                    command,
                    since,
                }
            })
            .collect()
    }

    /// `information_schema.PROCESSLIST` as client `key` (running `sql`)
    /// would see it on mysqld, as a derived table for mysqld to evaluate:
    /// the funnel's clients, with MariaDB 10.11's column names and types.
    /// Per-thread figures the funnel does not have (stages, memory,
    /// examined rows, query and OS thread ids) are 0.
    pub(super) fn processlist_derived_table(
        &self,
        key: usize,
        sql: &[u8],
        peers: &[PeerRow],
    ) -> String {
        use std::fmt::Write;
        let rows = self.processlist_rows(key, "Filling schema table", sql, peers);
        let mut out = String::with_capacity(64 + rows.len() * 640);
        out.push('(');
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                out.push_str(" UNION ALL ");
            }
            let _ = write!(out, "SELECT CAST({} AS SIGNED) AS ID, CAST(", r.id);
            utf8mb3_literal(&mut out, r.user.as_bytes(), 128);
            out.push_str(" AS CHAR(128) CHARACTER SET utf8mb3) AS USER, CAST(");
            utf8mb3_literal(&mut out, r.host.as_bytes(), 64);
            out.push_str(" AS CHAR(64) CHARACTER SET utf8mb3) AS HOST, CAST(");
            match r.db {
                Some(db) => utf8mb3_literal(&mut out, db.as_bytes(), 64),
                None => out.push_str("NULL"),
            }
            out.push_str(" AS CHAR(64) CHARACTER SET utf8mb3) AS DB, CAST(");
            utf8mb3_literal(&mut out, r.command.as_bytes(), 16);
            let _ = write!(
                out,
                " AS CHAR(16) CHARACTER SET utf8mb3) AS COMMAND, CAST({} AS INT) AS TIME, CAST(",
                r.since.as_secs()
            );
            utf8mb3_literal(&mut out, r.state.as_bytes(), 64);
            out.push_str(" AS CHAR(64) CHARACTER SET utf8mb3) AS STATE, CAST(");
            match r.info {
                Some(info) => utf8mb3_literal(&mut out, info, usize::MAX),
                None => out.push_str("NULL"),
            }
            let micros = r.since.as_micros();
            let _ = write!(
                out,
                " AS CHAR CHARACTER SET utf8mb3) AS INFO, CAST({}.{:03} AS DECIMAL(22,3)) AS TIME_MS, \
                 CAST(0 AS INT) AS STAGE, CAST(0 AS INT) AS MAX_STAGE, CAST(0 AS DECIMAL(7,3)) AS PROGRESS, \
                 CAST(0 AS SIGNED) AS MEMORY_USED, CAST(0 AS SIGNED) AS MAX_MEMORY_USED, \
                 CAST(0 AS INT) AS EXAMINED_ROWS, CAST(0 AS SIGNED) AS QUERY_ID, CAST(",
                micros / 1000,
                micros % 1000
            );
            match r.info {
                Some(info) => {
                    out.push_str("X'");
                    for b in info {
                        let _ = write!(out, "{b:02X}");
                    }
                    out.push('\'');
                }
                None => out.push_str("NULL"),
            }
            out.push_str(" AS BINARY) AS INFO_BINARY, CAST(0 AS SIGNED) AS TID");
        }
        out.push(')');
        out
    }

    /// `sql` with its references to `information_schema.PROCESSLIST`
    /// replaced by the funnel's process list as client `key` sees it.
    pub(super) fn rewrite_processlist(
        &self,
        key: usize,
        sql: &[u8],
        refs: &[super::statement::ProcesslistRef],
        peers: &[PeerRow],
    ) -> Vec<u8> {
        let table = self.processlist_derived_table(key, sql, peers);
        let mut out = Vec::with_capacity(sql.len() + table.len() * refs.len() + 16);
        let mut at = 0;
        for r in refs {
            out.extend_from_slice(&sql[at..r.span.0]);
            if r.connection_id {
                let id = self.clients.get(key).map_or(0, |c| c.id);
                out.extend_from_slice(id.to_string().as_bytes());
            } else if r.qualifier {
                out.extend_from_slice(b"PROCESSLIST");
            } else {
                out.extend_from_slice(table.as_bytes());
                if !r.alias {
                    out.extend_from_slice(b" AS PROCESSLIST");
                }
            }
            at = r.span.1;
        }
        out.extend_from_slice(&sql[at..]);
        out
    }

    /// Answer `SHOW [FULL] PROCESSLIST` (the query `sql`) for client `key`.
    pub(super) fn answer_processlist(
        &mut self,
        key: usize,
        seq: u8,
        full: bool,
        sql: &[u8],
        peers: &[PeerRow],
    ) {
        let Some(me) = self.clients.get(key) else {
            return;
        };
        let (cs_id, mbmax) = match me.session.vars.get("character_set_results") {
            Some(name) => result_charset(name, me.charset),
            None => (u16::from(me.charset), 4),
        };
        let caps = me.capabilities;
        let more = me.multi_rest.as_ref().is_some_and(|m| !m.ready);
        let mut status = me.answer_status();
        if more {
            // A part of a query with a KILL after it.
            status |= SERVER_MORE_RESULTS_EXISTS;
        }
        // (name, type, length in characters or bytes, flags, decimals, text?)
        let info_len = if full {
            u32::try_from(self.config.max_allowed_packet.saturating_mul(3)).unwrap_or(u32::MAX)
        } else {
            PROCESS_LIST_WIDTH as u32
        };
        const NOT_NULL_BINARY: u16 = 0x0001 | 0x0080;
        let columns: [(&str, u8, u32, u16, u8, bool); 9] = [
            ("Id", 0x08, 11, NOT_NULL_BINARY, 0, false),
            ("User", 0xfd, 128, 0x0001, 39, true),
            ("Host", 0xfd, 64, 0x0001, 39, true),
            ("db", 0xfd, 64, 0, 39, true),
            ("Command", 0xfd, 16, 0x0001, 39, true),
            ("Time", 0x03, 7, NOT_NULL_BINARY, 0, false),
            ("State", 0xfd, 30, 0, 39, true),
            (
                "Info",
                if full { 0xfb } else { 0xfd },
                info_len,
                0,
                39,
                true,
            ),
            ("Progress", 0x05, 7, NOT_NULL_BINARY, 3, false),
        ];
        let mut out = Vec::with_capacity(1024);
        let mut payload = Vec::with_capacity(256);
        let mut seq = write_packet(&mut out, seq, &[columns.len() as u8]);
        for (name, ty, len, flags, decimals, text) in columns {
            payload.clear();
            let (charset, len) = if text {
                (cs_id, len.saturating_mul(mbmax))
            } else {
                (63, len)
            };
            encode_column_def(&mut payload, name, ty, charset, len, flags, decimals);
            seq = write_packet(&mut out, seq, &payload);
        }
        if caps & CLIENT_DEPRECATE_EOF == 0 {
            payload.clear();
            encode_eof(&mut payload, 0, status);
            seq = write_packet(&mut out, seq, &payload);
        }
        for row in self.processlist_rows(key, "starting", sql, peers) {
            let id = row.id.to_string();
            let time = row.since.as_secs();
            let info = row.info.map(|s| {
                if full {
                    s
                } else {
                    // At most PROCESS_LIST_WIDTH characters (UTF-8: a
                    // character starts at each byte that is not 10xxxxxx).
                    let end = s
                        .iter()
                        .enumerate()
                        .filter(|(_, &b)| b & 0xc0 != 0x80)
                        .nth(PROCESS_LIST_WIDTH)
                        .map_or(s.len(), |(i, _)| i);
                    &s[..end]
                }
            });
            let time = time.to_string();
            payload.clear();
            encode_text_row(
                &mut payload,
                &[
                    Some(id.as_bytes()),
                    Some(row.user.as_bytes()),
                    Some(row.host.as_bytes()),
                    row.db.map(str::as_bytes),
                    Some(row.command.as_bytes()),
                    Some(time.as_bytes()),
                    Some(row.state.as_bytes()),
                    info,
                    Some(b"0.000"),
                ],
            );
            seq = write_packet(&mut out, seq, &payload);
        }
        payload.clear();
        encode_end_of_rows(&mut payload, caps, 0, status);
        let next = write_packet(&mut out, seq, &payload);
        let c = &mut self.clients[key];
        if let Some(m) = c.multi_rest.as_mut().filter(|_| more) {
            m.ready = true;
            m.seq = next;
        }
        // As after any result set; a `SHOW` empties the diagnostics area.
        c.row_count = -1;
        c.diagnostics_replaced();
        self.bufs.ensure(&mut c.wbuf);
        c.wbuf.extend_from_slice(&out);
        self.flush_client(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_show_processlist_as_a_query_of_its_own() {
        assert_eq!(processlist_query(b"SHOW PROCESSLIST"), Some(false));
        assert_eq!(processlist_query(b" show  full processlist ;"), Some(true));
        assert_eq!(
            processlist_query(b"SHOW /* x */ FULL PROCESSLIST"),
            Some(true)
        );
        assert_eq!(processlist_query(b"SHOW PROCESSLIST; SELECT 1"), None);
        assert_eq!(processlist_query(b"SHOW FULL"), None);
        assert_eq!(processlist_query(b"SHOW TABLES"), None);
        assert_eq!(processlist_query(b"SELECT 'SHOW PROCESSLIST'"), None);
    }

    #[test]
    fn privileges_are_read_from_the_global_grants_of_user_and_role() {
        // What SHOW GRANTS says on MariaDB 10.11.
        let p = |rows: &[&str]| Privileges::from_grants(rows.iter().copied());
        assert_eq!(
            p(&["GRANT ALL PRIVILEGES ON *.* TO `a`@`%` IDENTIFIED BY PASSWORD '*7B9E'"]),
            Privileges {
                process: true,
                kill_any: true
            }
        );
        assert_eq!(
            p(&[
                "GRANT USAGE ON *.* TO `b`@`%` IDENTIFIED BY PASSWORD '*7B9E'",
                "GRANT ALL PRIVILEGES ON `funnel_test`.* TO `b`@`%`",
            ]),
            Privileges::default()
        );
        assert_eq!(
            p(&["GRANT PROCESS ON *.* TO `c`@`%`"]),
            Privileges {
                process: true,
                kill_any: false
            }
        );
        assert!(p(&["GRANT SELECT, SUPER ON *.* TO `d`@`localhost`"]).kill_any);
        // Through the default role.
        assert_eq!(
            p(&[
                "GRANT `r_proc` TO `u_role`@`%`",
                "GRANT USAGE ON *.* TO `u_role`@`%` IDENTIFIED BY PASSWORD '*7B9E'",
                "GRANT PROCESS, CONNECTION ADMIN ON *.* TO `r_proc`",
                "SET DEFAULT ROLE `r_proc` FOR `u_role`@`%`",
            ]),
            Privileges {
                process: true,
                kill_any: true
            }
        );
        // A role granted but not enabled says nothing; nor do names.
        assert_eq!(
            p(&[
                "GRANT `PROCESS ON *.* TO x` TO `e`@`%`",
                "GRANT SELECT ON `db`.`PROCESS` TO `e`@`%`",
                "GRANT PROXY ON ''@'%' TO 'e'@'%' WITH GRANT OPTION",
            ]),
            Privileges::default()
        );
    }

    #[test]
    fn utf8mb3_literals_are_hex_and_bounded() {
        let mut s = String::new();
        utf8mb3_literal(&mut s, "a'é\u{1F600}".as_bytes(), 10);
        assert_eq!(s, "_utf8mb3 X'6127C3A93F'");
        s.clear();
        utf8mb3_literal(&mut s, b"abcdef\xff", 3);
        assert_eq!(s, "_utf8mb3 X'616263'");
    }
}

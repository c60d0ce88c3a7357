//! `SHOW [FULL] PROCESSLIST`, answered by the funnel: mysqld would list its
//! backend connections, whose ids no client knows; clients must see the
//! funnel's clients, with the ids they KILL.
//!
//! A client sees its own user's connections (mysqld's rule for a user
//! without the PROCESS privilege). Columns are typed as MariaDB 10.11 types
//! them for the client's `character_set_results`.

use super::client::ClientState;
use super::io::Stream;
use super::Server;
use crate::protocol::command::command_name;
use crate::protocol::consts::*;
use crate::protocol::deprecate_eof::encode_end_of_rows;
use crate::protocol::packet::write_packet;
use crate::protocol::response::{encode_column_def, encode_eof, encode_text_row};

/// `SHOW PROCESSLIST` (`Some(false)`) or `SHOW FULL PROCESSLIST`
/// (`Some(true)`) as a query of its own.
pub fn processlist_query(sql: &[u8]) -> Option<bool> {
    if !super::statement::only_words(sql) {
        return None;
    }
    let mut w = super::statement::words(sql);
    if !w.next()?.eq_ignore_ascii_case(b"SHOW") {
        return None;
    }
    let mut next = w.next()?;
    let full = next.eq_ignore_ascii_case(b"FULL");
    if full {
        next = w.next()?;
    }
    (next.eq_ignore_ascii_case(b"PROCESSLIST") && w.next().is_none()).then_some(full)
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

fn host_of(stream: &Stream) -> String {
    match stream {
        Stream::Tcp(_) => stream.peer_description(),
        Stream::Unix(_) => "localhost".into(),
    }
}

impl Server {
    /// Answer `SHOW [FULL] PROCESSLIST` (the query `sql`) for client `key`.
    pub(super) fn answer_processlist(&mut self, key: usize, seq: u8, full: bool, sql: &[u8]) {
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
        let user = me.user.clone();
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
        let mut rows: Vec<(u32, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.user == user
                    && !matches!(c.state, ClientState::Handshake | ClientState::AuthSwitch(_))
            })
            .map(|(k, c)| (c.id, k))
            .collect();
        rows.sort_unstable();
        for (_, k) in rows {
            let c = &self.clients[k];
            let id = c.id.to_string();
            let host = host_of(&c.stream);
            let db = c.session.schema.clone();
            let busy = k == key || c.is_busy();
            let (command, time, state, info): (&str, u64, &str, Option<&[u8]>) = if k == key {
                ("Query", 0, "starting", Some(sql))
            } else if busy {
                let since = self.now.saturating_duration_since(c.command_read_at);
                let cmd = c
                    .current
                    .and_then(|_| c.rbuf.as_slice().get(4).copied())
                    .unwrap_or(COM_QUERY);
                (command_label(cmd), since.as_secs(), "", None)
            } else {
                let since = self.now.saturating_duration_since(c.command_read_at);
                ("Sleep", since.as_secs(), "", None)
            };
            let info = info.map(|s| {
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
                    Some(c.user.as_bytes()),
                    Some(host.as_bytes()),
                    db.as_deref().map(str::as_bytes),
                    Some(command.as_bytes()),
                    Some(time.as_bytes()),
                    Some(state.as_bytes()),
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
        // As after any result set.
        c.row_count = -1;
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
}

//! Generic server responses (OK, ERR, EOF), the COM_STMT_PREPARE answer, and
//! the few result-set pieces the funnel writes itself (column definitions,
//! text rows) when it answers a query without a backend.
//!
//! References:
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_response_packets.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_err_packet.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_eof_packet.html>
//! - <https://mariadb.com/kb/en/ok_packet/>, <https://mariadb.com/kb/en/err_packet/>,
//!   <https://mariadb.com/kb/en/eof_packet/>
//!
//! Decoders borrow from the payload and assume CLIENT_PROTOCOL_41.

use super::consts::*;
use super::lenenc::{write_lenenc_int, write_lenenc_str, Field, Reader};
use super::packet::MAX_PAYLOAD_LEN;
use super::{ProtocolError, Result};

/// An EOF packet is shorter than this; a 0xfe packet this long or longer is
/// something else (a row, an OK packet under CLIENT_DEPRECATE_EOF).
pub const EOF_MAX_LEN: usize = 9;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OkPacket<'a> {
    /// 0x00, or 0xfe when the OK replaces an EOF under CLIENT_DEPRECATE_EOF.
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
    /// Raw session-state-change block (the content of the lenenc string,
    /// see [`super::session_track`]), only with CLIENT_SESSION_TRACK and
    /// SERVER_SESSION_STATE_CHANGED.
    pub session_state: Option<&'a [u8]>,
}

/// Decodes an OK packet (header 0x00 or 0xfe). With CLIENT_SESSION_TRACK
/// the info is a lenenc string that may be absent at end of packet;
/// without it, the info is the rest of the packet.
pub fn decode_ok(payload: &[u8], capabilities: u32) -> Result<OkPacket<'_>> {
    let mut r = Reader::new(payload);
    let header = r.u8().field("OK header")?;
    if header != OK_HEADER && header != EOF_HEADER {
        return Err(ProtocolError::Invalid("OK header"));
    }
    let affected_rows = r.lenenc_int().field("OK affected rows")?;
    let last_insert_id = r.lenenc_int().field("OK last insert id")?;
    let status = r.u16().field("OK status flags")?;
    let warnings = r.u16().field("OK warnings")?;
    let mut info: &[u8] = &[];
    let mut session_state = None;
    if capabilities & CLIENT_SESSION_TRACK != 0 {
        if !r.is_empty() {
            info = r.lenenc_str().field("OK info")?;
            if status & SERVER_SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                session_state = Some(r.lenenc_str().field("OK session state")?);
            }
        }
    } else {
        // mysqld writes the info as a lenenc string here too (net_send_ok
        // uses net_store_data), although the protocol pages describe
        // string<EOF>; accept both.
        let rest = r.rest();
        info = match Reader::new(rest).lenenc_str() {
            Ok(s)
                if s.len() + crate::protocol::lenenc::lenenc_int_len(s.len() as u64)
                    == rest.len() =>
            {
                s
            }
            _ => rest,
        };
    }
    Ok(OkPacket {
        header,
        affected_rows,
        last_insert_id,
        status,
        warnings,
        info,
        session_state,
    })
}

/// The status flags of an OK packet, reading no further than they are.
/// The response tracker uses this: it must not refuse an OK because of its
/// free-form tail.
pub fn ok_status(payload: &[u8]) -> Result<u16> {
    let mut r = Reader::new(payload);
    r.skip(1).field("OK header")?;
    r.lenenc_int().field("OK affected rows")?;
    r.lenenc_int().field("OK last insert id")?;
    r.u16().field("OK status flags")
}

/// Sets `flags` in the status of an OK packet (header 0x00 or 0xfe) or an
/// EOF packet, in place. `false` (nothing changed) for anything else.
pub fn add_status_flags(payload: &mut [u8], flags: u16) -> bool {
    let at = match payload.first() {
        Some(&EOF_HEADER) if payload.len() < EOF_MAX_LEN => 3,
        Some(&OK_HEADER | &EOF_HEADER) => {
            let mut r = Reader::new(payload);
            let skipped = r.skip(1).is_ok() && r.lenenc_int().is_ok() && r.lenenc_int().is_ok();
            if !skipped {
                return false;
            }
            payload.len() - r.rest().len()
        }
        _ => return false,
    };
    let Some(status) = payload.get_mut(at..at + 2) else {
        return false;
    };
    let v = u16::from_le_bytes([status[0], status[1]]) | flags;
    status.copy_from_slice(&v.to_le_bytes());
    true
}

/// Appends an OK payload. The session state block is written only with
/// CLIENT_SESSION_TRACK in `capabilities` and SERVER_SESSION_STATE_CHANGED
/// in `ok.status`; as mysqld does, the lenenc info is then written only if
/// non-empty or followed by a state block. Without CLIENT_SESSION_TRACK a
/// non-empty info is written length-encoded too (mysqld's net_send_ok).
pub fn encode_ok(out: &mut Vec<u8>, ok: &OkPacket<'_>, capabilities: u32) {
    out.push(ok.header);
    write_lenenc_int(out, ok.affected_rows);
    write_lenenc_int(out, ok.last_insert_id);
    out.extend_from_slice(&ok.status.to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    if capabilities & CLIENT_SESSION_TRACK != 0 {
        let state = ok
            .session_state
            .filter(|_| ok.status & SERVER_SESSION_STATE_CHANGED != 0);
        if state.is_some() || !ok.info.is_empty() {
            write_lenenc_str(out, ok.info);
        }
        if let Some(s) = state {
            write_lenenc_str(out, s);
        }
    } else if !ok.info.is_empty() {
        // As mysqld does, and as libmysqlclient reads it: length-encoded.
        write_lenenc_str(out, ok.info);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    /// Absent in errors sent before the capabilities are agreed.
    pub sql_state: Option<[u8; 5]>,
    pub message: &'a [u8],
}

/// Decodes an ERR packet: 0xff, code, optional '#' + 5-byte SQLSTATE,
/// message (`string<EOF>`).
pub fn decode_err(payload: &[u8]) -> Result<ErrPacket<'_>> {
    let mut r = Reader::new(payload);
    if r.u8().field("ERR header")? != ERR_HEADER {
        return Err(ProtocolError::Invalid("ERR header"));
    }
    let code = r.u16().field("ERR code")?;
    let mut sql_state = None;
    if r.peek_u8() == Some(b'#') {
        r.skip(1).field("SQL state marker")?;
        let s = r.bytes(5).field("SQL state")?;
        let mut a = [0u8; 5];
        a.copy_from_slice(s);
        sql_state = Some(a);
    }
    Ok(ErrPacket {
        code,
        sql_state,
        message: r.rest(),
    })
}

/// Appends an ERR payload, always with '#' + SQLSTATE. The SQLSTATE is
/// forced to 5 ASCII alphanumerics: other bytes are dropped, the rest is
/// truncated to 5 and padded with '0'; an empty one becomes "HY000".
pub fn encode_err(out: &mut Vec<u8>, code: u16, sql_state: &str, message: &str) {
    out.push(ERR_HEADER);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    let mut state = [b'0'; 5];
    let mut n = 0;
    for b in sql_state.bytes().filter(u8::is_ascii_alphanumeric).take(5) {
        state[n] = b;
        n += 1;
    }
    if n == 0 {
        state = *b"HY000";
    }
    out.extend_from_slice(&state);
    out.extend_from_slice(message.as_bytes());
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

/// Decodes an EOF packet: 0xfe, shorter than 9 bytes. The pre-4.1 form
/// without warnings and status (fewer than 5 bytes) is `Truncated`.
pub fn decode_eof(payload: &[u8]) -> Result<EofPacket> {
    if payload.len() >= EOF_MAX_LEN {
        return Err(ProtocolError::Invalid("EOF packet length"));
    }
    let mut r = Reader::new(payload);
    if r.u8().field("EOF header")? != EOF_HEADER {
        return Err(ProtocolError::Invalid("EOF header"));
    }
    let warnings = r.u16().field("EOF warnings")?;
    let status = r.u16().field("EOF status flags")?;
    Ok(EofPacket { warnings, status })
}

pub fn encode_eof(out: &mut Vec<u8>, warnings: u16, status: u16) {
    out.push(EOF_HEADER);
    out.extend_from_slice(&warnings.to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
}

pub fn is_ok(p: &[u8]) -> bool {
    p.first() == Some(&OK_HEADER)
}

pub fn is_err(p: &[u8]) -> bool {
    p.first() == Some(&ERR_HEADER)
}

/// An EOF packet (not a row or column that happens to start with 0xfe).
pub fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&EOF_HEADER) && p.len() < EOF_MAX_LEN
}

/// The OK packet that ends a result set under CLIENT_DEPRECATE_EOF: 0xfe
/// header and shorter than a full packet (a text row can start with 0xfe
/// only if its first value is 16 MiB or more, so the packet is full).
pub fn is_eof_ok(p: &[u8]) -> bool {
    p.first() == Some(&EOF_HEADER) && p.len() < MAX_PAYLOAD_LEN
}

/// COM_STMT_PREPARE_OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StmtPrepareOk {
    pub statement_id: u32,
    pub num_columns: u16,
    pub num_params: u16,
    pub warnings: u16,
}

/// Decodes COM_STMT_PREPARE_OK: 0x00, statement id, columns, params, then
/// filler and warnings (both optional per the reference: "if packet_length
/// > 12"; missing warnings read as 0).
pub fn decode_stmt_prepare_ok(payload: &[u8]) -> Result<StmtPrepareOk> {
    let mut r = Reader::new(payload);
    if r.u8().field("prepare OK header")? != OK_HEADER {
        return Err(ProtocolError::Invalid("prepare OK header"));
    }
    let statement_id = r.u32().field("prepare OK statement id")?;
    let num_columns = r.u16().field("prepare OK column count")?;
    let num_params = r.u16().field("prepare OK param count")?;
    let mut warnings = 0;
    if r.skip(1).is_ok() {
        warnings = r.u16().unwrap_or(0);
    }
    Ok(StmtPrepareOk {
        statement_id,
        num_columns,
        num_params,
        warnings,
    })
}

impl StmtPrepareOk {
    /// Appends the 12-byte payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(OK_HEADER);
        out.extend_from_slice(&self.statement_id.to_le_bytes());
        out.extend_from_slice(&self.num_columns.to_le_bytes());
        out.extend_from_slice(&self.num_params.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&self.warnings.to_le_bytes());
    }
}

/// Appends a ColumnDefinition41 payload as mysqld describes an expression
/// (`SELECT LAST_INSERT_ID()`): catalog "def", empty schema, table,
/// org_table and org_name.
/// <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_column_definition.html>
pub fn encode_column_def(
    out: &mut Vec<u8>,
    name: &str,
    column_type: u8,
    charset: u16,
    column_length: u32,
    flags: u16,
    decimals: u8,
) {
    write_lenenc_str(out, b"def");
    write_lenenc_str(out, b"");
    write_lenenc_str(out, b"");
    write_lenenc_str(out, b"");
    write_lenenc_str(out, name.as_bytes());
    write_lenenc_str(out, b"");
    write_lenenc_int(out, 0x0c);
    out.extend_from_slice(&charset.to_le_bytes());
    out.extend_from_slice(&column_length.to_le_bytes());
    out.push(column_type);
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(decimals);
    out.extend_from_slice(&[0, 0]);
}

/// The character set (collation id) field of a ColumnDefinition41
/// payload: after catalog, schema, table, org_table, name, org_name and
/// the length of the fixed fields. For a string column mysqld puts
/// `character_set_results`' collation there (when it is not NULL).
/// `extended`: the connection negotiated MariaDB's extended metadata (a
/// further lenenc string after the names).
pub fn column_def_charset(payload: &[u8], extended: bool) -> Result<u16> {
    let mut r = Reader::new(payload);
    for _ in 0..6 {
        r.lenenc_str().field("column definition name")?;
    }
    if extended {
        r.lenenc_str().field("column extended metadata")?;
    }
    let fixed = r.lenenc_int().field("column definition fixed length")?;
    if fixed < 2 {
        return Err(ProtocolError::Invalid("column definition fixed length"));
    }
    r.u16().field("column character set")
}

/// Appends a text-protocol row: each value a lenenc string, NULL as 0xfb.
/// <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_row.html>
pub fn encode_text_row(out: &mut Vec<u8>, values: &[Option<&[u8]>]) {
    for v in values {
        match v {
            Some(v) => write_lenenc_str(out, v),
            None => out.push(LOCAL_INFILE_HEADER),
        }
    }
}

/// Decodes the first packet of a result set: the column count (lenenc,
/// > 0). Trailing bytes are ignored.
pub fn decode_column_count(payload: &[u8]) -> Result<u64> {
    let n = Reader::new(payload).lenenc_int().field("column count")?;
    if n == 0 {
        return Err(ProtocolError::Invalid("column count 0"));
    }
    Ok(n)
}

/// Column types used by the funnel's own result sets.
/// <https://dev.mysql.com/doc/dev/mysql-server/latest/field__types_8h.html>
pub mod column_type {
    pub const MYSQL_TYPE_LONGLONG: u8 = 0x08;
    pub const MYSQL_TYPE_VAR_STRING: u8 = 0xfd;
    pub const MYSQL_TYPE_STRING: u8 = 0xfe;
}

/// Column flags used by the funnel's own result sets.
pub mod column_flag {
    pub const NOT_NULL: u16 = 1;
    pub const UNSIGNED: u16 = 32;
    pub const BINARY: u16 = 128;
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_flags_are_added_in_place() {
        let mut ok = Vec::new();
        let p = OkPacket {
            header: OK_HEADER,
            affected_rows: 300,
            last_insert_id: 7,
            status: SERVER_STATUS_AUTOCOMMIT,
            warnings: 1,
            info: b"",
            session_state: None,
        };
        encode_ok(&mut ok, &p, 0);
        assert!(add_status_flags(&mut ok, SERVER_MORE_RESULTS_EXISTS));
        let got = decode_ok(&ok, 0).unwrap();
        assert_eq!(
            got.status,
            SERVER_STATUS_AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS
        );
        assert_eq!((got.affected_rows, got.warnings), (300, 1));
        let mut eof = Vec::new();
        encode_eof(&mut eof, 2, 0);
        assert!(add_status_flags(&mut eof, SERVER_MORE_RESULTS_EXISTS));
        assert_eq!(decode_eof(&eof).unwrap().status, SERVER_MORE_RESULTS_EXISTS);
        assert!(!add_status_flags(&mut [0xff, 1, 2][..], 8));
        assert!(!add_status_flags(&mut [0x00, 0xfc][..], 8));
        assert!(!add_status_flags(&mut [][..], 8));
    }

    #[test]
    fn info_without_session_track_is_length_encoded_as_mysqld_sends_it() {
        // mysqld's net_send_ok stores the info with net_store_data (lenenc),
        // and libmysqlclient reads it that way: "Rows matched: 1 ..." after
        // an UPDATE broke the mariadb CLI when written raw.
        let info = b"Rows matched: 1  Changed: 1  Warnings: 0";
        let ok = OkPacket {
            header: 0,
            affected_rows: 1,
            last_insert_id: 0,
            status: 2,
            warnings: 0,
            info,
            session_state: None,
        };
        let mut out = Vec::new();
        encode_ok(&mut out, &ok, CLIENT_PROTOCOL_41);
        assert_eq!(out[7] as usize, info.len());
        assert_eq!(&out[8..], info);
        let back = decode_ok(&out, CLIENT_PROTOCOL_41).unwrap();
        assert_eq!(back.info, info);
        // A raw string<EOF> info (what the protocol pages describe) still decodes.
        let mut raw = out[..7].to_vec();
        raw.extend_from_slice(b"hello");
        assert_eq!(decode_ok(&raw, CLIENT_PROTOCOL_41).unwrap().info, b"hello");
    }

    use super::*;

    #[test]
    fn column_charset_of_a_definition() {
        let mut def = Vec::new();
        encode_column_def(
            &mut def,
            "x",
            column_type::MYSQL_TYPE_VAR_STRING,
            224,
            4,
            0,
            39,
        );
        assert_eq!(column_def_charset(&def, false), Ok(224));
        assert!(column_def_charset(&def[..def.len() - 12], false).is_err());
        // With extended metadata: its block after the names is skipped.
        let mut ext = Vec::new();
        crate::protocol::lenenc::write_lenenc_str(&mut ext, b"def");
        ext.extend_from_slice(&[0; 5]);
        crate::protocol::lenenc::write_lenenc_str(&mut ext, b"\x01\x04json");
        ext.extend_from_slice(b"\x0c\xe0\x00\x1c\x00\x00\x00\xfd\x00\x00'\x00\x00");
        assert_eq!(column_def_charset(&ext, true), Ok(224));
        assert_ne!(column_def_charset(&ext, false), Ok(224));
        assert!(column_def_charset(&[], false).is_err());
        // mysqld's column for @@character_set_client with results 224.
        let from_server = b"\x03def\x00\x00\x00\x16@@character_set_client\x00\x0c\xe0\x00\x1c\x00\x00\x00\xfd\x00\x00'\x00\x00";
        assert_eq!(column_def_charset(from_server, false), Ok(224));
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html
    // "OK with CLIENT_PROTOCOL_41. 0 affected rows, last-insert-id was 0,
    // AUTOCOMMIT, 0 warnings. No further info": 07 00 00 02 | 00 00 00 02 00 00 00
    const OK_SIMPLE: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

    // Same page: "OK with CLIENT_SESSION_TRACK", SESSION_STATE_CHANGED |
    // AUTOCOMMIT, empty info, state block with SESSION_TRACK_SCHEMA "test".
    const OK_SCHEMA_TRACK: &[u8] = &[
        0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00, 0x07, 0x01, 0x05, 0x04, 0x74, 0x65, 0x73,
        0x74,
    ];

    #[test]
    fn ok_simple() {
        for caps in [
            CLIENT_PROTOCOL_41,
            CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK,
        ] {
            let ok = decode_ok(OK_SIMPLE, caps).unwrap();
            assert_eq!(
                ok,
                OkPacket {
                    header: 0,
                    affected_rows: 0,
                    last_insert_id: 0,
                    status: SERVER_STATUS_AUTOCOMMIT,
                    warnings: 0,
                    info: b"",
                    session_state: None
                }
            );
            let mut out = Vec::new();
            encode_ok(&mut out, &ok, caps);
            assert_eq!(out, OK_SIMPLE);
        }
        assert!(is_ok(OK_SIMPLE));
        assert_eq!(ok_status(OK_SIMPLE), Ok(SERVER_STATUS_AUTOCOMMIT));
    }

    #[test]
    fn ok_session_track() {
        let caps = CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK;
        let ok = decode_ok(OK_SCHEMA_TRACK, caps).unwrap();
        assert_eq!(
            ok.status,
            SERVER_STATUS_AUTOCOMMIT | SERVER_SESSION_STATE_CHANGED
        );
        assert_eq!(ok.info, b"");
        assert_eq!(
            ok.session_state,
            Some(&[0x01, 0x05, 0x04, b't', b'e', b's', b't'][..])
        );
        let mut out = Vec::new();
        encode_ok(&mut out, &ok, caps);
        assert_eq!(out, OK_SCHEMA_TRACK);
        // Without CLIENT_SESSION_TRACK the tail is just info text.
        let ok = decode_ok(OK_SCHEMA_TRACK, CLIENT_PROTOCOL_41).unwrap();
        assert_eq!(ok.info, &OK_SCHEMA_TRACK[7..]);
        assert_eq!(ok.session_state, None);
        // Cut inside the state block.
        assert!(matches!(
            decode_ok(&OK_SCHEMA_TRACK[..12], caps),
            Err(ProtocolError::Truncated(_))
        ));
    }

    // OK with info, e.g. after UPDATE: "Rows matched: 1  Changed: 1  Warnings: 0".
    #[test]
    fn ok_with_info_and_big_ints() {
        let info = b"Rows matched: 1  Changed: 1  Warnings: 0";
        let ok = OkPacket {
            header: 0,
            affected_rows: 70000,
            last_insert_id: 1 << 40,
            status: SERVER_STATUS_IN_TRANS,
            warnings: 3,
            info,
            session_state: None,
        };
        for caps in [
            CLIENT_PROTOCOL_41,
            CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK,
        ] {
            let mut out = Vec::new();
            encode_ok(&mut out, &ok, caps);
            assert_eq!(decode_ok(&out, caps).unwrap(), ok);
        }
        // Without CLIENT_SESSION_TRACK the state block is not written, and the
        // status is kept as given.
        let tracked = OkPacket {
            status: SERVER_SESSION_STATE_CHANGED,
            session_state: Some(b"\x01\x02\x01x"),
            ..ok.clone()
        };
        let mut out = Vec::new();
        encode_ok(&mut out, &tracked, CLIENT_PROTOCOL_41);
        let d = decode_ok(&out, CLIENT_PROTOCOL_41).unwrap();
        assert_eq!(d.status, SERVER_SESSION_STATE_CHANGED);
        assert_eq!(d.info, info);
        // The 0xfe header of an OK replacing EOF.
        let mut eof_ok = Vec::new();
        encode_ok(
            &mut eof_ok,
            &OkPacket { header: 0xfe, ..ok },
            CLIENT_PROTOCOL_41,
        );
        assert!(is_eof_ok(&eof_ok));
        assert!(!is_eof(&eof_ok));
        assert_eq!(decode_ok(&eof_ok, CLIENT_PROTOCOL_41).unwrap().header, 0xfe);
    }

    #[test]
    fn ok_errors() {
        assert!(matches!(
            decode_ok(&[], 0),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_ok(&[0x01, 0, 0, 0, 0, 0, 0], 0),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(matches!(
            decode_ok(&[0x00, 0xfb, 0, 0, 0, 0, 0], 0),
            Err(ProtocolError::Invalid(_))
        ));
        for n in 0..OK_SIMPLE.len() {
            assert!(matches!(
                decode_ok(&OK_SIMPLE[..n], 0),
                Err(ProtocolError::Truncated(_))
            ));
        }
        assert!(ok_status(&OK_SIMPLE[..4]).is_err());
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_err_packet.html
    // 17 00 00 01 | ff 48 04 23 48 59 30 30 30 "No tables used"
    const ERR_EXAMPLE: &[u8] = b"\xff\x48\x04#HY000No tables used";

    #[test]
    fn err_packets() {
        let e = decode_err(ERR_EXAMPLE).unwrap();
        assert_eq!(
            e,
            ErrPacket {
                code: 1096,
                sql_state: Some(*b"HY000"),
                message: b"No tables used"
            }
        );
        let mut out = Vec::new();
        encode_err(&mut out, 1096, "HY000", "No tables used");
        assert_eq!(out, ERR_EXAMPLE);
        assert!(is_err(&out));

        // Handshake-time ERR without SQL state.
        let e = decode_err(b"\xff\x10\x04Too many connections").unwrap();
        assert_eq!(e.code, 1040);
        assert_eq!(e.sql_state, None);
        assert_eq!(e.message, b"Too many connections");

        assert!(matches!(
            decode_err(b"\xff\x10"),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_err(b"\xff\x10\x04#HY"),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_err(b"\x00\x10\x04"),
            Err(ProtocolError::Invalid(_))
        ));

        out.clear();
        encode_err(&mut out, 1, "4200", "");
        assert_eq!(&out[3..], b"#42000");
        out.clear();
        encode_err(&mut out, 1, "", "m");
        assert_eq!(&out[3..], b"#HY000m");
        out.clear();
        encode_err(&mut out, 1, "08S01-extra", "");
        assert_eq!(&out[3..], b"#08S01");
        out.clear();
        encode_err(&mut out, 1, "é42S02", "");
        assert_eq!(&out[3..], b"#42S02");
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_eof_packet.html
    // 05 00 00 05 | fe 00 00 02 00
    #[test]
    fn eof_packets() {
        let p = [0xfe, 0x00, 0x00, 0x02, 0x00];
        assert_eq!(
            decode_eof(&p).unwrap(),
            EofPacket {
                warnings: 0,
                status: 2
            }
        );
        assert!(is_eof(&p));
        let mut out = Vec::new();
        encode_eof(&mut out, 0, 2);
        assert_eq!(out, p);
        assert!(matches!(
            decode_eof(&[0xfe]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_eof(&[0xfe, 0, 0, 0]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_eof(&[0xfe; 9]),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(matches!(
            decode_eof(&[0x00, 0, 0, 0, 0]),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(!is_eof(&[0xfe; 9]));
        assert!(!is_eof(&[]));
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_prepare.html
    // (COM_STMT_PREPARE_OK: 0c 00 00 01 | 00 01 00 00 00 01 00 02 00 00 00 00)
    #[test]
    fn stmt_prepare_ok() {
        let p = [
            0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        ];
        let d = decode_stmt_prepare_ok(&p).unwrap();
        assert_eq!(
            d,
            StmtPrepareOk {
                statement_id: 1,
                num_columns: 1,
                num_params: 2,
                warnings: 0
            }
        );
        let mut out = Vec::new();
        d.encode(&mut out);
        assert_eq!(out, p);
        // Warnings are optional.
        assert_eq!(decode_stmt_prepare_ok(&p[..9]).unwrap(), d);
        assert!(matches!(
            decode_stmt_prepare_ok(&p[..8]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_stmt_prepare_ok(&[0xff, 0, 0]),
            Err(ProtocolError::Invalid(_))
        ));
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_column_definition.html
    #[test]
    fn column_def_layout() {
        let mut out = Vec::new();
        encode_column_def(
            &mut out,
            "id",
            column_type::MYSQL_TYPE_LONGLONG,
            63,
            21,
            0x00a1,
            0,
        );
        let mut r = Reader::new(&out);
        assert_eq!(r.lenenc_str().unwrap(), b"def");
        assert_eq!(r.lenenc_str().unwrap(), b"");
        assert_eq!(r.lenenc_str().unwrap(), b"");
        assert_eq!(r.lenenc_str().unwrap(), b"");
        assert_eq!(r.lenenc_str().unwrap(), b"id");
        assert_eq!(r.lenenc_str().unwrap(), b"");
        assert_eq!(r.lenenc_int().unwrap(), 0x0c);
        assert_eq!(r.u16().unwrap(), 63);
        assert_eq!(r.u32().unwrap(), 21);
        assert_eq!(r.u8().unwrap(), 0x08);
        assert_eq!(r.u16().unwrap(), 0x00a1);
        assert_eq!(r.u8().unwrap(), 0);
        assert_eq!(r.u16().unwrap(), 0);
        assert!(r.is_empty());
        assert_eq!(out.len(), 4 + 1 + 1 + 1 + 3 + 1 + 1 + 12);
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_row.html
    #[test]
    fn text_row_and_column_count() {
        let mut out = Vec::new();
        encode_text_row(&mut out, &[Some(b"42"), None, Some(b"")]);
        assert_eq!(out, [0x02, b'4', b'2', 0xfb, 0x00]);
        assert_eq!(decode_column_count(&[0x03]), Ok(3));
        assert_eq!(decode_column_count(&[0xfc, 0x00, 0x01]), Ok(256));
        assert!(matches!(
            decode_column_count(&[0x00]),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(matches!(
            decode_column_count(&[0xfb]),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(matches!(
            decode_column_count(&[]),
            Err(ProtocolError::Truncated(_))
        ));
    }
}

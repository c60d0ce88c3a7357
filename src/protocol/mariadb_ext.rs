//! MariaDB's extended capabilities: where they travel in the handshake, and
//! the extended type information (`MARIADB_CLIENT_EXTENDED_METADATA`) they
//! add to column definitions.
//!
//! MariaDB (10.2+) leaves `CLIENT_MYSQL` (bit 0, `CLIENT_LONG_PASSWORD`)
//! out of its greeting and puts 32 more capability bits (the upper half of
//! the 64-bit view) in the last 4 of the greeting's 10 reserved bytes; a
//! client that also leaves `CLIENT_MYSQL` out answers with its own in the
//! last 4 of the handshake response's 23 filler bytes (mysqld reads them
//! only then). Recorded from MariaDB 10.11: greeting capabilities
//! `0x81fff7fe`, extended `0x1d` (progress, bulk operations, extended
//! metadata, cache metadata).
//!
//! With `MARIADB_CLIENT_EXTENDED_METADATA` negotiated, every column
//! definition (result sets, COM_STMT_PREPARE parameters and columns,
//! COM_FIELD_LIST) carries one more field after `org_name`: a lenenc string
//! holding `{int<1> kind, string<lenenc> value}` pairs, kind 0 the type name
//! (`uuid`, `inet4`, `inet6`, `point`, ...) and kind 1 the format (`json`);
//! empty (a single 0x00) for most columns. Without it, mysqld sends the
//! definition without the field.
//!
//! The funnel's backends negotiate it whenever mysqld offers it; the
//! definitions reach a client that did not ask with the field cut out
//! ([`ColumnDefEdit::Strip`]), byte for byte what mysqld would have sent it.
//!
//! References: <https://mariadb.com/kb/en/connection/#capabilities>,
//! <https://mariadb.com/kb/en/result-set-packets/#column-definition-packet>,
//! MariaDB's `sql/protocol.cc` (`Protocol::store_field_metadata`).

use super::consts::CLIENT_LONG_PASSWORD;
use super::lenenc::{Field, Reader};
use super::{ProtocolError, Result};

/// The extended capabilities, as the 32 bits carried in the handshake (the
/// 64-bit view's bit 32 is bit 0 here).
pub const MARIADB_CLIENT_PROGRESS: u32 = 1;
pub const MARIADB_CLIENT_COM_MULTI: u32 = 1 << 1;
pub const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u32 = 1 << 2;
pub const MARIADB_CLIENT_EXTENDED_METADATA: u32 = 1 << 3;
pub const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;
pub const MARIADB_CLIENT_BULK_UNIT_RESULTS: u32 = 1 << 5;

/// `CLIENT_MYSQL`: MariaDB's name for bit 0, set by MySQL servers and by
/// clients that do not speak MariaDB's extensions.
pub const CLIENT_MYSQL: u32 = CLIENT_LONG_PASSWORD;

/// COM_STMT_BULK_EXECUTE flags (int<2> after the statement id).
pub const STMT_BULK_FLAG_SEND_UNIT_RESULTS: u16 = 64;
pub const STMT_BULK_FLAG_SEND_TYPES_TO_SERVER: u16 = 128;

/// Extended-metadata kinds.
pub const EXT_TYPE_NAME: u8 = 0;
pub const EXT_FORMAT: u8 = 1;

/// Offset of the 10 reserved bytes of a HandshakeV10 payload, if it has
/// them (the version string is NUL-ended and everything up to them there).
fn greeting_reserved_at(payload: &[u8]) -> Option<usize> {
    let nul = payload.get(1..)?.iter().position(|&b| b == 0)?;
    // protocol(1) version NUL, connection id(4), part1(8), filler(1),
    // caps low(2), charset(1), status(2), caps high(2), auth data length(1)
    let at = 1 + nul + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1;
    (payload.len() >= at + 10).then_some(at)
}

/// Offset of the capability flags' lower half in a HandshakeV10 payload.
fn greeting_caps_at(payload: &[u8]) -> Option<usize> {
    let nul = payload.get(1..)?.iter().position(|&b| b == 0)?;
    let at = 1 + nul + 1 + 4 + 8 + 1;
    (payload.len() >= at + 2).then_some(at)
}

/// The extended capabilities a server's greeting announces: 0 when it sets
/// `CLIENT_MYSQL`, or is too short to carry them.
pub fn greeting_mariadb_caps(payload: &[u8]) -> u32 {
    let (Some(caps), Some(at)) = (greeting_caps_at(payload), greeting_reserved_at(payload)) else {
        return 0;
    };
    if payload[caps] & CLIENT_MYSQL as u8 != 0 {
        return 0;
    }
    u32::from_le_bytes([
        payload[at + 6],
        payload[at + 7],
        payload[at + 8],
        payload[at + 9],
    ])
}

/// Makes an encoded HandshakeV10 payload announce `ext` (non-zero): clears
/// `CLIENT_MYSQL` and writes them into the reserved bytes. False (payload
/// unchanged) if it has no reserved bytes.
pub fn set_greeting_mariadb_caps(payload: &mut [u8], ext: u32) -> bool {
    let (Some(caps), Some(at)) = (greeting_caps_at(payload), greeting_reserved_at(payload)) else {
        return false;
    };
    payload[caps] &= !(CLIENT_MYSQL as u8);
    payload[at + 6..at + 10].copy_from_slice(&ext.to_le_bytes());
    true
}

/// Offset of the extended capabilities in a HandshakeResponse41: the last
/// 4 of the 23 filler bytes after capabilities(4), max packet(4), charset(1).
const RESPONSE_EXT_AT: usize = 4 + 4 + 1 + 19;

/// The extended capabilities a client's HandshakeResponse41 asks for: 0
/// when it sets `CLIENT_MYSQL` (mysqld ignores the bytes then) or is short.
pub fn response_mariadb_caps(payload: &[u8]) -> u32 {
    match (
        payload.first(),
        payload.get(RESPONSE_EXT_AT..RESPONSE_EXT_AT + 4),
    ) {
        (Some(&caps0), Some(b)) if u32::from(caps0) & CLIENT_MYSQL == 0 => {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
        _ => 0,
    }
}

/// Makes an encoded HandshakeResponse41 ask for `ext`: clears
/// `CLIENT_MYSQL` and writes them into the filler. False (unchanged) if the
/// payload is too short to be one.
pub fn set_response_mariadb_caps(payload: &mut [u8], ext: u32) -> bool {
    if payload.len() < RESPONSE_EXT_AT + 4 {
        return false;
    }
    payload[0] &= !(CLIENT_MYSQL as u8);
    payload[RESPONSE_EXT_AT..RESPONSE_EXT_AT + 4].copy_from_slice(&ext.to_le_bytes());
    true
}

/// Offset just after `org_name` in a ColumnDefinition41 payload: where the
/// extended metadata is, when negotiated (else the 0x0c length of the
/// fixed fields).
pub fn column_def_names_end(payload: &[u8]) -> Result<usize> {
    let mut r = Reader::new(payload);
    for what in [
        "column catalog",
        "column schema",
        "column table",
        "column org_table",
        "column name",
        "column org_name",
    ] {
        r.lenenc_str().field(what)?;
    }
    Ok(r.pos())
}

/// How a column definition must change on its way from a backend to a
/// client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnDefEdit {
    /// Forward it as it is.
    Pass,
    /// Leave out `len` bytes at `at` (the extended-metadata field).
    Strip { at: usize, len: usize },
    /// Insert an empty extended-metadata field (one 0x00 byte) at `at`.
    InsertEmpty { at: usize },
}

/// What to do with a column definition sent by a backend that negotiated
/// extended metadata (`backend_ext`) for a client that did (`client_ext`).
/// A backend without it for a client with it (mysqld replaced by one that
/// does not offer it) gets an empty field, so the client still parses.
/// Refuses a definition that does not decode (with `backend_ext`, one whose
/// extended field overruns it).
pub fn column_def_edit(
    payload: &[u8],
    backend_ext: bool,
    client_ext: bool,
) -> Result<ColumnDefEdit> {
    if backend_ext == client_ext {
        return Ok(ColumnDefEdit::Pass);
    }
    let at = column_def_names_end(payload)?;
    if !backend_ext {
        return Ok(ColumnDefEdit::InsertEmpty { at });
    }
    let mut r = Reader::new(&payload[at..]);
    r.lenenc_str().field("column extended metadata")?;
    Ok(ColumnDefEdit::Strip { at, len: r.pos() })
}

/// The extended metadata of a column definition from a connection that
/// negotiated it: (type name, format), each empty when absent. Unknown
/// kinds are skipped.
pub fn column_def_ext_metadata(payload: &[u8]) -> Result<(&[u8], &[u8])> {
    let at = column_def_names_end(payload)?;
    let mut r = Reader::new(&payload[at..]);
    let block = r.lenenc_str().field("column extended metadata")?;
    let mut b = Reader::new(block);
    let (mut name, mut format): (&[u8], &[u8]) = (b"", b"");
    while !b.is_empty() {
        let kind = b.u8().field("extended metadata kind")?;
        let value = b.lenenc_str().field("extended metadata value")?;
        match kind {
            EXT_TYPE_NAME => name = value,
            EXT_FORMAT => format = value,
            _ => {}
        }
    }
    Ok((name, format))
}

/// Where the parts of a COM_STMT_BULK_EXECUTE payload are: command(1),
/// statement id(4), flags(2), then with SEND_TYPES_TO_SERVER 2 bytes of
/// type per parameter, then the rows of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkLayout {
    pub flags: u16,
    /// Offset of the types (or of the values, without them).
    pub types_at: usize,
    pub has_types: bool,
}

/// Fixed part of COM_STMT_BULK_EXECUTE.
pub const BULK_FIXED_LEN: usize = 7;

/// Decodes the fixed part of a COM_STMT_BULK_EXECUTE for a statement with
/// `num_params` parameters; refuses one too short for its types.
pub fn bulk_layout(payload: &[u8], num_params: u16) -> Result<BulkLayout> {
    let flags = match payload.get(5..BULK_FIXED_LEN) {
        Some(f) => u16::from_le_bytes([f[0], f[1]]),
        None => return Err(ProtocolError::Truncated("COM_STMT_BULK_EXECUTE flags")),
    };
    let has_types = flags & STMT_BULK_FLAG_SEND_TYPES_TO_SERVER != 0;
    if has_types && payload.len() < BULK_FIXED_LEN + 2 * usize::from(num_params) {
        return Err(ProtocolError::Truncated("COM_STMT_BULK_EXECUTE types"));
    }
    Ok(BulkLayout {
        flags,
        types_at: BULK_FIXED_LEN,
        has_types,
    })
}

/// The parameter types a bulk execute carries, if it carries them.
pub fn bulk_types(payload: &[u8], layout: BulkLayout, num_params: u16) -> Option<&[u8]> {
    if !layout.has_types {
        return None;
    }
    payload.get(layout.types_at..layout.types_at + 2 * usize::from(num_params))
}

/// Appends `payload` with the statement id replaced by `backend_id` and,
/// when `insert_types` is given (the client sent none, the backend's
/// statement has not seen the client's), SEND_TYPES_TO_SERVER set and the
/// types inserted. `layout` must come from [`bulk_layout`] of this payload.
pub fn rewrite_bulk(
    out: &mut Vec<u8>,
    payload: &[u8],
    backend_id: u32,
    layout: BulkLayout,
    insert_types: Option<&[u8]>,
) {
    let Some(head) = payload.get(..BULK_FIXED_LEN) else {
        out.extend_from_slice(payload);
        return;
    };
    out.push(head[0]);
    out.extend_from_slice(&backend_id.to_le_bytes());
    match insert_types {
        Some(types) if !layout.has_types => {
            let flags = layout.flags | STMT_BULK_FLAG_SEND_TYPES_TO_SERVER;
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(types);
        }
        _ => out.extend_from_slice(&head[5..]),
    }
    out.extend_from_slice(&payload[BULK_FIXED_LEN..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::consts::*;
    use crate::protocol::handshake::{HandshakeResponse, HandshakeV10};
    use crate::protocol::lenenc::write_lenenc_str;
    use crate::protocol::response::encode_column_def;

    // MariaDB 10.11.14's greeting as recorded (scramble replaced): no
    // CLIENT_MYSQL, extended capabilities 0x1d in the last reserved bytes.
    fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.14-MariaDB-0+deb12u2\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0xf7feu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81ffu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0]);
        p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_caps_read_and_written() {
        let g = mariadb_greeting();
        assert_eq!(greeting_mariadb_caps(&g), 0x1d);
        let hs = HandshakeV10::decode(&g).unwrap();
        assert_eq!(hs.capabilities, 0x81ff_f7fe);
        // The funnel's own greeting: CLIENT_MYSQL set, nothing announced,
        // until it is told what to announce.
        let mut ours = Vec::new();
        HandshakeV10 {
            capabilities: hs.capabilities | CLIENT_MYSQL,
            ..hs.clone()
        }
        .encode(&mut ours);
        assert_eq!(greeting_mariadb_caps(&ours), 0);
        assert!(set_greeting_mariadb_caps(
            &mut ours,
            MARIADB_CLIENT_EXTENDED_METADATA
        ));
        assert_eq!(
            greeting_mariadb_caps(&ours),
            MARIADB_CLIENT_EXTENDED_METADATA
        );
        let back = HandshakeV10::decode(&ours).unwrap();
        assert_eq!(back.capabilities, hs.capabilities & !CLIENT_MYSQL);
        assert_eq!(back.scramble, hs.scramble);
        assert_eq!(back.auth_plugin, "mysql_native_password");
        // A MySQL greeting (CLIENT_MYSQL set) announces none, whatever the bytes.
        let mut mysql = g.clone();
        mysql[1 + 33 + 4 + 8 + 1] |= 1;
        assert_eq!(greeting_mariadb_caps(&mysql), 0);
    }

    #[test]
    fn short_or_odd_greetings_announce_nothing() {
        let g = mariadb_greeting();
        for n in 0..g.len() {
            let mut p = g[..n].to_vec();
            let _ = greeting_mariadb_caps(&p);
            let _ = set_greeting_mariadb_caps(&mut p, 8);
        }
        // An old server that stops after the lower capabilities.
        let short = &g[..1 + 33 + 4 + 8 + 1 + 2];
        assert_eq!(greeting_mariadb_caps(short), 0);
        let mut no_nul = vec![10u8; 64];
        assert_eq!(greeting_mariadb_caps(&no_nul), 0);
        assert!(!set_greeting_mariadb_caps(&mut no_nul, 8));
    }

    #[test]
    fn response_caps_read_and_written() {
        let r = HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH,
            max_packet: 1 << 24,
            charset: 45,
            username: "app".into(),
            auth_response: vec![1; 20],
            database: None,
            auth_plugin: Some("mysql_native_password".into()),
            attrs: Vec::new(),
        };
        let mut p = Vec::new();
        r.encode(&mut p);
        assert_eq!(response_mariadb_caps(&p), 0, "filler is zero");
        let ext = MARIADB_CLIENT_EXTENDED_METADATA | MARIADB_CLIENT_STMT_BULK_OPERATIONS;
        assert!(set_response_mariadb_caps(&mut p, ext));
        assert_eq!(response_mariadb_caps(&p), ext);
        assert_eq!(HandshakeResponse::decode(&p).unwrap(), r);
        // With CLIENT_MYSQL the bytes mean nothing (mysqld ignores them).
        p[0] |= 1;
        assert_eq!(response_mariadb_caps(&p), 0);
        assert_eq!(response_mariadb_caps(&p[..20]), 0);
        assert!(!set_response_mariadb_caps(&mut p[..31], ext));
    }

    /// A column definition as MariaDB 10.11 sends it with extended
    /// metadata: `ext` is the field's content.
    fn def_with(name: &str, ext: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        encode_column_def(&mut plain, name, 0xfc, 45, 4294967295, 0x90, 0);
        let at = column_def_names_end(&plain).unwrap();
        let mut out = plain[..at].to_vec();
        write_lenenc_str(&mut out, ext);
        out.extend_from_slice(&plain[at..]);
        out
    }

    #[test]
    fn column_defs_stripped_or_padded() {
        let mut plain = Vec::new();
        encode_column_def(&mut plain, "j", 0xfc, 45, 4294967295, 0x90, 0);
        // JSON: format "json"; UUID: type name "uuid"; INT: nothing.
        let json = def_with("j", b"\x01\x04json");
        let uuid = def_with("j", b"\x00\x04uuid");
        let none = def_with("j", b"");
        assert_eq!(
            column_def_ext_metadata(&json).unwrap(),
            (&b""[..], &b"json"[..])
        );
        assert_eq!(
            column_def_ext_metadata(&uuid).unwrap(),
            (&b"uuid"[..], &b""[..])
        );
        assert_eq!(
            column_def_ext_metadata(&none).unwrap(),
            (&b""[..], &b""[..])
        );
        for def in [&json, &uuid, &none] {
            assert_eq!(
                column_def_edit(def, true, true).unwrap(),
                ColumnDefEdit::Pass
            );
            let ColumnDefEdit::Strip { at, len } = column_def_edit(def, true, false).unwrap()
            else {
                panic!("not stripped");
            };
            let mut out = def[..at].to_vec();
            out.extend_from_slice(&def[at + len..]);
            assert_eq!(out, plain, "what mysqld sends a client without it");
        }
        assert_eq!(
            column_def_edit(&plain, false, false).unwrap(),
            ColumnDefEdit::Pass
        );
        let ColumnDefEdit::InsertEmpty { at } = column_def_edit(&plain, false, true).unwrap()
        else {
            panic!("not padded");
        };
        let mut padded = plain[..at].to_vec();
        padded.push(0);
        padded.extend_from_slice(&plain[at..]);
        assert_eq!(padded, none);
    }

    #[test]
    fn bad_column_defs_are_refused_never_panic() {
        let json = def_with("a_longer_name", b"\x01\x04json\x00\x04uuid");
        for n in 0..json.len() {
            let p = &json[..n];
            let _ = column_def_edit(p, true, false);
            let _ = column_def_edit(p, false, true);
            let _ = column_def_ext_metadata(p);
        }
        // The field claims more than there is.
        let names_end = column_def_names_end(&json).unwrap();
        assert!(column_def_edit(&json[..names_end + 3], true, false).is_err());
        // A field whose pairs do not decode.
        let bad = def_with("j", b"\x01\x09js");
        assert!(column_def_ext_metadata(&bad).is_err());
        assert!(column_def_edit(&[0xfc, 0xff], true, false).is_err());
        assert!(column_def_edit(&[], false, true).is_err());
    }

    #[test]
    fn bulk_execute_rewritten() {
        // stmt 7, flags SEND_TYPES, 2 params (LONG, VAR_STRING), then rows.
        let mut with = vec![COM_STMT_BULK_EXECUTE, 7, 0, 0, 0, 128, 0, 3, 0, 253, 0];
        with.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, b'x']);
        let l = bulk_layout(&with, 2).unwrap();
        assert!(l.has_types);
        assert_eq!(bulk_types(&with, l, 2), Some(&[3, 0, 253, 0][..]));
        let mut out = Vec::new();
        rewrite_bulk(&mut out, &with, 0x0102_0304, l, Some(&[9, 9, 9, 9]));
        assert_eq!(&out[1..5], &[4, 3, 2, 1]);
        assert_eq!(&out[5..], &with[5..], "types the client sent are kept");
        // Without types: inserted, flag set, unit-results flag kept.
        let mut without = vec![COM_STMT_BULK_EXECUTE, 7, 0, 0, 0, 64, 0];
        without.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, b'x']);
        let l = bulk_layout(&without, 2).unwrap();
        assert!(!l.has_types);
        assert_eq!(bulk_types(&without, l, 2), None);
        out.clear();
        rewrite_bulk(&mut out, &without, 5, l, Some(&[3, 0, 253, 0]));
        assert_eq!(out[..7], [COM_STMT_BULK_EXECUTE, 5, 0, 0, 0, 192, 0]);
        assert_eq!(out[7..11], [3, 0, 253, 0]);
        assert_eq!(out[11..], without[7..]);
        out.clear();
        rewrite_bulk(&mut out, &without, 5, l, None);
        assert_eq!(out[5..], without[5..]);
        // Too short: refused.
        assert!(bulk_layout(&without[..6], 2).is_err());
        assert!(bulk_layout(&with[..9], 2).is_err());
        for n in 0..with.len() {
            if let Ok(l) = bulk_layout(&with[..n], 2) {
                let _ = bulk_types(&with[..n], l, 2);
                out.clear();
                rewrite_bulk(&mut out, &with[..n], 1, l, Some(&[1, 2, 3, 4]));
            }
        }
    }
}

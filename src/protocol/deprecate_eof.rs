//! Translating a response framed with EOF packets (how the funnel's backend
//! connections run) into what mysqld sends a client that negotiated
//! CLIENT_DEPRECATE_EOF: the EOF after column or parameter definitions is
//! left out, every other EOF becomes an OK packet with a 0xfe header, and
//! the sequence ids of the packets after a left-out one are lowered so they
//! stay consecutive. Decides per packet, from the [`ResponseTracker`]'s
//! classification; no copies, no allocation.
//!
//! The rules, as MariaDB's server applies them (sql/protocol.cc:
//! `Protocol::send_result_set_metadata` writes the metadata EOF only without
//! CLIENT_DEPRECATE_EOF; `Protocol::send_eof` sends `net_send_ok(..., is_eof
//! = true)` instead of `net_send_eof` with it) and as recorded from MariaDB
//! 10.11 for every response kind:
//! - text and binary result sets (also empty ones, and each result of a
//!   multi-result response: the OK keeps SERVER_MORE_RESULTS_EXISTS):
//!   column count, column definitions, rows, OK(0xfe);
//! - COM_STMT_PREPARE: prepare-OK, parameter definitions, column
//!   definitions, nothing after either block;
//! - COM_STMT_EXECUTE that opens a cursor: column count, column
//!   definitions, OK(0xfe) with SERVER_STATUS_CURSOR_EXISTS; COM_STMT_FETCH:
//!   rows, OK(0xfe) (SERVER_STATUS_LAST_ROW_SENT on the last);
//! - COM_FIELD_LIST: column definitions, OK(0xfe); COM_SET_OPTION: OK(0xfe).
//!
//! The OK replacing an EOF has no affected rows nor insert id, and the EOF's
//! status flags and warnings (`net_send_ok(thd, server_status,
//! statement_warn_count, 0, 0, NULL, true)`), less SERVER_SESSION_STATE_CHANGED:
//! without CLIENT_SESSION_TRACK mysqld never flags a state change it cannot
//! describe, and the funnel has no description to give (the backend's EOF
//! carries none).
//!
//! References: <https://mariadb.com/kb/en/result-set-packets/>,
//! <https://mariadb.com/kb/en/com_stmt_prepare/>,
//! <https://mariadb.com/kb/en/com_stmt_fetch/>,
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html>
//! ("OK packets are also used to indicate EOF, and EOF packets are
//! deprecated as of MySQL 5.7.5").
//!
//! [`ResponseTracker`]: super::tracker::ResponseTracker

use super::consts::*;
use super::response::{decode_eof, encode_eof};
use super::tracker::PacketKind;
use super::Result;

/// Length of the OK payload that replaces an EOF.
pub const OK_FOR_EOF_LEN: usize = 7;

/// What to do with one packet of a response for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EofAction {
    /// Forward it (with the sequence id [`EofTranslator::client_seq`] gives).
    Pass,
    /// Leave it out.
    Drop,
    /// Send this OK payload (header 0xfe) in its place.
    ReplaceWithOk([u8; OK_FOR_EOF_LEN]),
}

/// Follows one response for one client. Small and `Copy`; no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EofTranslator {
    /// The client negotiated CLIENT_DEPRECATE_EOF: there is work to do.
    active: bool,
    /// Packets left out so far in this response.
    dropped: u8,
}

impl EofTranslator {
    /// For a client with these negotiated capabilities; without
    /// CLIENT_DEPRECATE_EOF every packet passes unchanged.
    pub fn new(client_capabilities: u32) -> Self {
        EofTranslator {
            active: client_capabilities & CLIENT_DEPRECATE_EOF != 0,
            dropped: 0,
        }
    }

    /// Decides for the packet the tracker has just classified as `kind`;
    /// `payload` is that packet's. Refuses an EOF that does not decode.
    pub fn translate(&mut self, kind: PacketKind, payload: &[u8]) -> Result<EofAction> {
        if !self.active {
            return Ok(EofAction::Pass);
        }
        match kind {
            PacketKind::MetadataEof => {
                self.dropped = self.dropped.wrapping_add(1);
                Ok(EofAction::Drop)
            }
            PacketKind::Eof => {
                let eof = decode_eof(payload)?;
                // The OK never carries session-state information here (the
                // backend's EOF had none to give): it must not announce
                // any, also to a client with CLIENT_SESSION_TRACK, whose
                // OKs say exactly what its own tracking would report.
                let status = eof.status & !SERVER_SESSION_STATE_CHANGED;
                Ok(EofAction::ReplaceWithOk(ok_for_eof(eof.warnings, status)))
            }
            _ => Ok(EofAction::Pass),
        }
    }

    /// The sequence id the client must see for a forwarded packet that the
    /// backend sent with `backend_seq`.
    pub fn client_seq(&self, backend_seq: u8) -> u8 {
        backend_seq.wrapping_sub(self.dropped)
    }

    /// The sequence id the backend expects for a packet the client sent
    /// with `client_seq` within this response (LOCAL INFILE data, which
    /// continues the client's numbering).
    pub fn backend_seq(&self, client_seq: u8) -> u8 {
        client_seq.wrapping_add(self.dropped)
    }
}

/// The OK payload (header 0xfe) that replaces an EOF packet with these
/// warnings and status flags.
pub fn ok_for_eof(warnings: u16, status: u16) -> [u8; OK_FOR_EOF_LEN] {
    let s = status.to_le_bytes();
    let w = warnings.to_le_bytes();
    [EOF_HEADER, 0, 0, s[0], s[1], w[0], w[1]]
}

/// Appends what ends rows (or answers COM_SET_OPTION) for a client with
/// these capabilities: an EOF packet, or the OK that replaces it under
/// CLIENT_DEPRECATE_EOF.
pub fn encode_end_of_rows(out: &mut Vec<u8>, client_capabilities: u32, warnings: u16, status: u16) {
    if client_capabilities & CLIENT_DEPRECATE_EOF != 0 {
        out.extend_from_slice(&ok_for_eof(warnings, status));
    } else {
        encode_eof(out, warnings, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::{decode_ok, encode_column_def, encode_ok, OkPacket};
    use crate::protocol::tracker::{expect_for, Expect, Progress, ResponseTracker};

    const BACKEND: u32 = CLIENT_PROTOCOL_41 | CLIENT_MULTI_RESULTS | CLIENT_SESSION_TRACK;
    const CLIENT: u32 = CLIENT_PROTOCOL_41 | CLIENT_MULTI_RESULTS;
    const CLIENT_DEP: u32 = CLIENT | CLIENT_DEPRECATE_EOF;

    fn eof(warnings: u16, status: u16) -> Vec<u8> {
        let mut out = Vec::new();
        encode_eof(&mut out, warnings, status);
        out
    }

    fn ok(status: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let ok = OkPacket {
            header: 0,
            affected_rows: 3,
            last_insert_id: 0,
            status,
            warnings: 0,
            info: b"",
            session_state: None,
        };
        encode_ok(&mut out, &ok, CLIENT);
        out
    }

    fn coldef(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_column_def(&mut out, name, 0xfd, 45, 80, 0, 0);
        out
    }

    /// Runs a backend response (packets numbered from 1 on) through a
    /// tracker and a translator for a client with `client` capabilities;
    /// returns what the client gets: (seq, payload).
    fn translate(expect: Expect, client: u32, packets: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
        let mut t = ResponseTracker::new(BACKEND);
        t.start(expect);
        let mut x = EofTranslator::new(client);
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let progress = t.feed(p).unwrap();
            let seq = (i + 1) as u8;
            match x.translate(t.last_kind(), p).unwrap() {
                EofAction::Pass => out.push((x.client_seq(seq), p.clone())),
                EofAction::Drop => {}
                EofAction::ReplaceWithOk(ok) => out.push((x.client_seq(seq), ok.to_vec())),
            }
            let last = i + 1 == packets.len();
            assert_eq!(
                matches!(progress, Progress::Complete { .. }),
                last,
                "packet {i}"
            );
        }
        out
    }

    fn numbered(packets: Vec<Vec<u8>>) -> Vec<(u8, Vec<u8>)> {
        packets
            .into_iter()
            .enumerate()
            .map(|(i, p)| ((i + 1) as u8, p))
            .collect()
    }

    const AUTOCOMMIT: u16 = SERVER_STATUS_AUTOCOMMIT;

    // Recorded from MariaDB 10.11 for libmysqlclient (CLIENT_DEPRECATE_EOF):
    // `SELECT CAST('1x' AS INT), CAST('2y' AS INT)` ends with
    // fe 00 00 02 00 02 00 (status AUTOCOMMIT, 2 warnings).
    #[test]
    fn ok_for_eof_layout() {
        assert_eq!(ok_for_eof(2, AUTOCOMMIT), [0xfe, 0, 0, 2, 0, 2, 0]);
        let payload = ok_for_eof(7, 0x4022);
        let ok = decode_ok(&payload, CLIENT).unwrap();
        assert_eq!(
            (
                ok.header,
                ok.affected_rows,
                ok.last_insert_id,
                ok.status,
                ok.warnings
            ),
            (0xfe, 0, 0, 0x4022, 7)
        );
        let mut out = Vec::new();
        encode_end_of_rows(&mut out, CLIENT_DEP, 1, AUTOCOMMIT);
        assert_eq!(out, ok_for_eof(1, AUTOCOMMIT));
        out.clear();
        encode_end_of_rows(&mut out, CLIENT, 1, AUTOCOMMIT);
        assert_eq!(out, eof(1, AUTOCOMMIT));
    }

    #[test]
    fn text_result_set() {
        let rows = vec![
            vec![2],
            coldef("a"),
            coldef("b"),
            eof(0, AUTOCOMMIT),
            b"\x011\x01x".to_vec(),
            b"\x012\xfb".to_vec(),
            eof(1, AUTOCOMMIT | SERVER_QUERY_NO_INDEX_USED),
        ];
        // A client without DEPRECATE_EOF gets the backend's bytes.
        assert_eq!(
            translate(Expect::Query, CLIENT, &rows),
            numbered(rows.clone())
        );
        assert_eq!(
            translate(Expect::Query, CLIENT_DEP, &rows),
            vec![
                (1, vec![2]),
                (2, coldef("a")),
                (3, coldef("b")),
                (4, b"\x011\x01x".to_vec()),
                (5, b"\x012\xfb".to_vec()),
                (
                    6,
                    ok_for_eof(1, AUTOCOMMIT | SERVER_QUERY_NO_INDEX_USED).to_vec()
                ),
            ]
        );
        // Empty: column count, definition, OK.
        let empty = vec![vec![1], coldef("a"), eof(0, AUTOCOMMIT), eof(0, AUTOCOMMIT)];
        assert_eq!(
            translate(Expect::Query, CLIENT_DEP, &empty),
            vec![
                (1, vec![1]),
                (2, coldef("a")),
                (3, ok_for_eof(0, AUTOCOMMIT).to_vec())
            ]
        );
    }

    // Each result's metadata EOF is left out, so the shift grows with
    // every result; OK packets between results move down too.
    #[test]
    fn multi_results() {
        let more = AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS;
        let packets = vec![
            vec![1],
            coldef("1"),
            eof(0, more),
            b"\x011".to_vec(),
            eof(0, more),
            ok(more),
            vec![1],
            coldef("2"),
            eof(0, more),
            eof(0, more),
            ok(AUTOCOMMIT),
        ];
        assert_eq!(
            translate(Expect::Query, CLIENT_DEP, &packets),
            vec![
                (1, vec![1]),
                (2, coldef("1")),
                (3, b"\x011".to_vec()),
                (4, ok_for_eof(0, more).to_vec()),
                (5, ok(more)),
                (6, vec![1]),
                (7, coldef("2")),
                (8, ok_for_eof(0, more).to_vec()),
                (9, ok(AUTOCOMMIT)),
            ]
        );
    }

    #[test]
    fn prepare() {
        let mut prepare_ok = Vec::new();
        crate::protocol::response::StmtPrepareOk {
            statement_id: 6,
            num_columns: 2,
            num_params: 1,
            warnings: 0,
        }
        .encode(&mut prepare_ok);
        let packets = vec![
            prepare_ok.clone(),
            coldef("?"),
            eof(0, AUTOCOMMIT),
            coldef("id"),
            coldef("name"),
            eof(0, AUTOCOMMIT),
        ];
        assert_eq!(
            translate(expect_for(COM_STMT_PREPARE), CLIENT_DEP, &packets),
            numbered(vec![prepare_ok, coldef("?"), coldef("id"), coldef("name")])
        );
    }

    // Recorded from MariaDB 10.11 (libmysqlclient, CLIENT_DEPRECATE_EOF):
    // the execute that opens a cursor ends with fe 00 00 42 00 00 00 right
    // after the column definitions; each fetch with fe 00 00 42 00 00 00,
    // the one that exhausts the cursor with fe 00 00 82 00 00 00.
    #[test]
    fn cursor_execute_and_fetch() {
        let open = AUTOCOMMIT | SERVER_STATUS_CURSOR_EXISTS;
        let execute = vec![vec![2], coldef("id"), coldef("name"), eof(0, open)];
        assert_eq!(
            translate(expect_for(COM_STMT_EXECUTE), CLIENT_DEP, &execute),
            vec![
                (1, vec![2]),
                (2, coldef("id")),
                (3, coldef("name")),
                (4, vec![0xfe, 0, 0, 0x42, 0, 0, 0]),
            ]
        );
        let row = vec![0, 0, 1, 0, 0, 0, 5, b'r', b'o', b'w', b'-', b'1'];
        let fetch = vec![row.clone(), eof(0, open)];
        assert_eq!(
            translate(expect_for(COM_STMT_FETCH), CLIENT_DEP, &fetch),
            vec![(1, row.clone()), (2, vec![0xfe, 0, 0, 0x42, 0, 0, 0])]
        );
        let last = vec![
            row.clone(),
            eof(0, AUTOCOMMIT | SERVER_STATUS_LAST_ROW_SENT),
        ];
        assert_eq!(
            translate(Expect::Fetch, CLIENT_DEP, &last),
            vec![(1, row), (2, vec![0xfe, 0, 0, 0x82, 0, 0, 0])]
        );
    }

    // Recorded from MariaDB 10.11: COM_FIELD_LIST ends with
    // fe 00 00 02 00 00 00, COM_SET_OPTION is answered with it.
    #[test]
    fn field_list_and_set_option() {
        let packets = vec![coldef("id"), coldef("name"), eof(0, AUTOCOMMIT)];
        assert_eq!(
            translate(expect_for(COM_FIELD_LIST), CLIENT_DEP, &packets),
            vec![
                (1, coldef("id")),
                (2, coldef("name")),
                (3, vec![0xfe, 0, 0, 2, 0, 0, 0]),
            ]
        );
        assert_eq!(
            translate(
                expect_for(COM_SET_OPTION),
                CLIENT_DEP,
                &[eof(0, AUTOCOMMIT)]
            ),
            vec![(1, vec![0xfe, 0, 0, 2, 0, 0, 0])]
        );
    }

    #[test]
    fn session_state_flag_never_without_its_information() {
        let changed = AUTOCOMMIT | SERVER_SESSION_STATE_CHANGED;
        for caps in [CLIENT_DEP, CLIENT_DEP | CLIENT_SESSION_TRACK] {
            let mut x = EofTranslator::new(caps);
            assert_eq!(
                x.translate(PacketKind::Eof, &eof(0, changed)),
                Ok(EofAction::ReplaceWithOk(ok_for_eof(0, AUTOCOMMIT)))
            );
        }
    }

    // LOCAL INFILE after a result set in a multi-statement: the client
    // numbers its file packets after the request it saw; the backend
    // expects them after the one it sent.
    #[test]
    fn local_infile_after_a_dropped_packet() {
        let more = AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS;
        let mut t = ResponseTracker::new(BACKEND);
        t.start(Expect::Query);
        let mut x = EofTranslator::new(CLIENT_DEP);
        let packets = [
            vec![1],
            coldef("1"),
            eof(0, more),
            b"\x011".to_vec(),
            eof(0, more),
        ];
        for p in &packets {
            t.feed(p).unwrap();
            x.translate(t.last_kind(), p).unwrap();
        }
        assert_eq!(t.feed(b"\xfbdata.csv"), Ok(Progress::LocalInfile));
        assert_eq!(
            x.translate(t.last_kind(), b"\xfbdata.csv"),
            Ok(EofAction::Pass)
        );
        // The request was backend packet 6, the client's 5; its first file
        // packet is then 6 for the client and 7 for the backend.
        assert_eq!(x.client_seq(6), 5);
        assert_eq!(x.backend_seq(6), 7);
        t.infile_sent();
        // The server's OK after the upload (client's last packet 7, backend's 8).
        assert_eq!(x.client_seq(9), 8);
    }

    #[test]
    fn malformed_eof_and_wrapping_sequence_ids() {
        let mut x = EofTranslator::new(CLIENT_DEP);
        assert!(x.translate(PacketKind::Eof, &[0xfe, 0]).is_err());
        assert!(x.translate(PacketKind::Eof, &[]).is_err());
        // Without DEPRECATE_EOF nothing is read at all.
        let mut plain = EofTranslator::new(CLIENT);
        assert_eq!(plain.translate(PacketKind::Eof, &[]), Ok(EofAction::Pass));
        assert_eq!(
            plain.translate(PacketKind::MetadataEof, &[]),
            Ok(EofAction::Pass)
        );
        assert_eq!(plain.client_seq(9), 9);
        // Sequence ids wrap at 256 on both sides.
        for _ in 0..3 {
            assert_eq!(
                x.translate(PacketKind::MetadataEof, &[]),
                Ok(EofAction::Drop)
            );
        }
        assert_eq!(x.client_seq(1), 254);
        assert_eq!(x.backend_seq(254), 1);
        for kind in [
            PacketKind::Row,
            PacketKind::Ok,
            PacketKind::Err,
            PacketKind::Continuation,
            PacketKind::ColumnDef,
            PacketKind::LocalInfile,
        ] {
            assert_eq!(x.translate(kind, &[0xfe, 0, 0, 0, 0]), Ok(EofAction::Pass));
        }
    }

    #[test]
    fn translator_is_small_and_copy() {
        fn is_copy<T: Copy>() {}
        is_copy::<EofTranslator>();
        assert!(std::mem::size_of::<EofTranslator>() <= 4);
    }
}

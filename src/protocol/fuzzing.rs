//! Fuzz entry points: each takes arbitrary bytes, runs the decoders that
//! read network input on them, and checks the invariants that must hold
//! whatever the input (no panic, consistent spans, decode/encode round
//! trips, tracker idle state). Shared by the cargo-fuzz targets in `fuzz/`
//! and by the deterministic smoke test that runs in `cargo test`.
//!
//! Not part of the funnel's API.

use std::cell::RefCell;

use super::command::decode_command;
use super::consts::*;
use super::deprecate_eof::{EofAction, EofTranslator, OK_FOR_EOF_LEN};
use super::handshake::{is_ssl_request, AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use super::lenenc::{lenenc_int_len, write_lenenc_int, write_lenenc_str, Reader};
use super::packet::{
    join_payload, next_frame, peek_header, scan_message, UploadFramer, HEADER_LEN, MAX_PAYLOAD_LEN,
};
use super::response::*;
use super::session_track::{encode_state_change, filter_session_state, session_state_changes};
use super::tracker::{EndKind, Expect, PacketKind, Progress, ResponseTracker};
use super::ProtocolError;

/// Packet framing: `scan_message` with a few limits, `next_frame`.
pub fn packet(data: &[u8]) {
    if let Some((h, payload)) = next_frame(data) {
        assert_eq!(payload.len(), h.payload_len);
        assert_eq!(peek_header(data), Some(h));
    }
    for max in [0usize, 16, 1 << 20, usize::MAX] {
        match scan_message(data, max) {
            Ok(Some(span)) => {
                assert!(span.wire_len <= data.len());
                assert!(span.payload_len <= max);
                assert!(span.packets >= 1);
                assert_eq!(span.wire_len, span.payload_len + 4 * span.packets);
                let mut out = Vec::new();
                join_payload(data, &span, &mut out);
                assert_eq!(out.len(), span.payload_len);
            }
            Ok(None) => {}
            Err(ProtocolError::TooLarge { len, max: m }) => assert!(len > m && m == max),
            Err(ProtocolError::BadSequence { expected, got }) => assert_ne!(expected, got),
            Err(e) => panic!("unexpected scan_message error {e:?}"),
        }
    }
    // Relaying an upload in two pieces covers the same bytes as in one,
    // and renumbering changes nothing but sequence ids.
    let mut whole = UploadFramer::default();
    let mut copy = data.to_vec();
    let (n, done) = whole.advance(&mut copy, 0);
    assert!(n <= data.len());
    assert_eq!(copy, data);
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut parts = UploadFramer::default();
    let (a, done_a) = parts.advance(&mut copy[..split], 3);
    let (b, done_b) = if done_a {
        (0, true)
    } else {
        parts.advance(&mut copy[a..], 3)
    };
    let changed = copy.iter().zip(data).filter(|(x, y)| x != y).count();
    assert!(changed <= n / HEADER_LEN + 1);
    assert_eq!((a + b, done_a || done_b), (n, done));
}

/// Connection-phase packets from either side.
pub fn handshake(data: &[u8]) {
    if let Ok(hs) = HandshakeV10::decode(data) {
        let _ = hs.version();
        let mut out = Vec::new();
        hs.encode(&mut out);
        // What was decoded encodes to something that decodes again.
        let again = HandshakeV10::decode(&out).expect("re-decode handshake");
        assert_eq!(again.server_version, hs.server_version);
        assert_eq!(again.connection_id, hs.connection_id);
        assert_eq!(again.capabilities, hs.capabilities);
    }
    let _ = is_ssl_request(data);
    // caching_sha2_password: AuthMoreData, and a server's public key.
    if let Ok(more) = super::caching_sha2::decode_auth_more_data(data) {
        let _ = super::caching_sha2::encrypt_password(b"pw", b"01234567890123456789", more);
    }
    let _ = super::caching_sha2::verify(Some(&[7; 32]), data, data);
    if let Ok(r) = HandshakeResponse::decode(data) {
        let mut out = Vec::new();
        r.encode(&mut out);
        let again = HandshakeResponse::decode(&out).expect("re-decode handshake response");
        assert_eq!(again.username, r.username);
        assert_eq!(again.attrs, r.attrs);
        // The 1-byte length form truncates longer responses to 255 bytes.
        if r.auth_response.len() <= 255 {
            assert_eq!(again.auth_response, r.auth_response);
        }
    }
    if let Ok(a) = AuthSwitchRequest::decode(data) {
        let mut out = Vec::new();
        a.encode(&mut out);
        let _ = AuthSwitchRequest::decode(&out).expect("re-decode auth switch");
    }
    // An ed25519 key as text (config, mysqld's mysql.global_priv): what
    // decodes encodes back to the same key.
    if let Some(key) = std::str::from_utf8(data)
        .ok()
        .and_then(crate::protocol::auth::ed25519_key_from_text)
    {
        let text = crate::protocol::auth::ed25519_key_text(&key);
        assert_eq!(
            crate::protocol::auth::ed25519_key_from_text(&text),
            Some(key)
        );
    }
}

/// Client commands.
pub fn command(data: &[u8]) {
    match decode_command(data) {
        Ok(c) => assert_eq!(Some(&c.byte()), data.first()),
        Err(ProtocolError::Truncated(_)) => {}
        Err(e) => panic!("unexpected decode_command error {e:?}"),
    }
}

/// Server responses and the session-state block.
pub fn response(data: &[u8]) {
    for caps in [
        CLIENT_PROTOCOL_41,
        CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK,
    ] {
        if let Ok(ok) = decode_ok(data, caps) {
            assert_eq!(ok_status(data), Ok(ok.status));
            let mut out = Vec::new();
            encode_ok(&mut out, &ok, caps);
            assert_eq!(decode_ok(&out, caps).as_ref(), Ok(&ok));
            if let Some(block) = ok.session_state {
                session_state(block);
            }
        }
    }
    session_state(data);
    if let Ok(e) = decode_err(data) {
        assert!(e.message.len() < data.len());
    }
    if let Ok(eof) = decode_eof(data) {
        let mut out = Vec::new();
        encode_eof(&mut out, eof.warnings, eof.status);
        assert_eq!(decode_eof(&out), Ok(eof));
        assert!(is_eof(data));
    }
    if let Ok(p) = decode_stmt_prepare_ok(data) {
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(decode_stmt_prepare_ok(&out), Ok(p));
    }
    let _ = decode_column_count(data);
    let _ = column_def_charset(data, false);
    let _ = column_def_charset(data, true);
    let _ = (is_ok(data), is_err(data), is_eof_ok(data));
}

fn session_state(block: &[u8]) {
    let mut changes = Vec::new();
    let mut failed = false;
    let mut it = session_state_changes(block);
    for c in it.by_ref() {
        match c {
            Ok(c) => changes.push(c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        it.next().is_none(),
        "iterator must stop after an error or the end"
    );
    // Filtering keeps what the predicate keeps, in mysqld's form.
    let mut kept = Vec::new();
    let mut n = 0usize;
    let filtered = filter_session_state(block, &mut kept, |_| {
        n += 1;
        n % 2 == 1
    });
    assert_eq!(filtered.is_ok(), !failed);
    if !failed {
        let mut out = Vec::new();
        for c in &changes {
            encode_state_change(&mut out, c);
        }
        let odd: Vec<_> = changes.iter().step_by(2).cloned().collect();
        let again: Vec<_> = session_state_changes(&kept)
            .collect::<Result<_, _>>()
            .expect("re-decode filtered session state");
        assert_eq!(again, odd);
        let again: Vec<_> = session_state_changes(&out)
            .collect::<Result<_, _>>()
            .expect("re-decode session state");
        assert_eq!(again, changes);
    }
}

/// Length-encoded primitives, driven by the input.
pub fn lenenc(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut ops = data.iter().rev().copied();
    while !r.is_empty() {
        let before = r.pos();
        let res = match ops.next().unwrap_or(0) % 8 {
            // Non-minimal encodings are accepted, so at least the minimal length.
            0 => r
                .lenenc_int()
                .map(|v| assert!(r.pos() - before >= lenenc_int_len(v))),
            1 => r.lenenc_int_or_null().map(drop),
            2 => r.lenenc_str().map(|s| {
                let mut out = Vec::new();
                write_lenenc_str(&mut out, s);
                assert_eq!(Reader::new(&out).lenenc_str(), Ok(s));
            }),
            3 => r.null_str().map(drop),
            4 => r.u16().map(drop),
            5 => r.u24().map(drop),
            6 => r.u64().map(|v| {
                let mut out = Vec::new();
                write_lenenc_int(&mut out, v);
                assert_eq!(Reader::new(&out).lenenc_int(), Ok(v));
            }),
            _ => r.u8().map(drop),
        };
        if res.is_err() {
            assert_eq!(r.pos(), before, "a failed read must not move the cursor");
            r.skip(1).expect("not empty");
        }
    }
}

thread_local! {
    /// A reusable full-size payload, so that continued (16 MiB) packets can
    /// be fed to the tracker without allocating for each input.
    static BIG: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn expect_from(b: u8) -> Expect {
    match b % 7 {
        0 => Expect::Query,
        1 => Expect::Prepare,
        2 => Expect::FieldList,
        3 => Expect::Statistics,
        4 => Expect::Fetch,
        5 => Expect::Simple,
        _ => Expect::None,
    }
}

/// Control bytes of the tracker input format (see [`tracker`]).
pub const TRACKER_BIG: u8 = 0xff;
pub const TRACKER_INFILE_SENT: u8 = 0xfe;
pub const TRACKER_START: u8 = 0xfd;

/// One step of a tracker input (format in [`tracker`]).
enum TrackerOp<'a> {
    Feed(&'a [u8]),
    InfileSent,
    Start(Expect),
}

/// Splits a tracker input into its steps: byte 1 is the first `start`.
fn tracker_ops(data: &[u8], mut step: impl FnMut(TrackerOp<'_>)) {
    step(TrackerOp::Start(expect_from(
        data.get(1).copied().unwrap_or(0),
    )));
    let mut r = Reader::new(data.get(2..).unwrap_or(&[]));
    while let Ok(c) = r.u8() {
        match c {
            TRACKER_BIG => {
                let first = r.u8().unwrap_or(0);
                BIG.with(|big| {
                    let mut big = big.borrow_mut();
                    big.resize(MAX_PAYLOAD_LEN, 0x41);
                    big[0] = first;
                    step(TrackerOp::Feed(&big));
                });
            }
            TRACKER_INFILE_SENT => step(TrackerOp::InfileSent),
            TRACKER_START => step(TrackerOp::Start(expect_from(r.u8().unwrap_or(0)))),
            len => {
                let p = r.bytes(usize::from(len)).unwrap_or_else(|_| r.rest());
                step(TrackerOp::Feed(p));
            }
        }
    }
}

/// The response tracker. Input format: byte 0 bit 0 = CLIENT_DEPRECATE_EOF,
/// byte 1 = initial `Expect` (mod 7); then a sequence of
/// - `len` (< 0xfd), then `len` payload bytes: one packet;
/// - `0xff`, `b`: a full 16 MiB - 1 packet whose first byte is `b`;
/// - `0xfe`: `infile_sent()`;
/// - `0xfd`, `e`: `start(e)`.
pub fn tracker(data: &[u8]) {
    let caps = match data.first() {
        Some(b) if b & 1 != 0 => CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF,
        _ => CLIENT_PROTOCOL_41,
    };
    let mut t = ResponseTracker::new(caps);
    tracker_ops(data, |op| {
        let res = match op {
            TrackerOp::Feed(p) => t.feed(p),
            TrackerOp::InfileSent => return t.infile_sent(),
            TrackerOp::Start(e) => return t.start(e),
        };
        match res {
            Ok(Progress::Complete { status, .. }) => {
                assert!(t.is_idle());
                assert_eq!(status, t.status());
            }
            Ok(Progress::NeedMore) | Ok(Progress::LocalInfile) => assert!(!t.is_idle()),
            Err(_) => assert!(t.is_idle()),
        }
        let _ = (t.last_kind(), t.cursor_opened(), t.prepared());
    });
}

/// The CLIENT_DEPRECATE_EOF translation of an EOF-framed backend response
/// (input as for [`tracker`]; byte 0 bit 0 = the client also has
/// CLIENT_SESSION_TRACK). What the client gets must be numbered
/// consecutively, and must frame as the same response for a tracker with
/// CLIENT_DEPRECATE_EOF: complete at the same point with the same status.
/// (Not checked once a row, column count or definition that starts with
/// 0xfe is passed on: mysqld never sends one shorter than 16 MiB, and the
/// two framings read it differently.)
pub fn deprecate_eof(data: &[u8]) {
    let mut client_caps = CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF;
    if data.first().is_some_and(|b| b & 1 != 0) {
        client_caps |= CLIENT_SESSION_TRACK;
    }
    let mut backend = ResponseTracker::new(CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK);
    let mut client = ResponseTracker::new(client_caps);
    let mut x = EofTranslator::new(client_caps);
    // Sequence ids of the last packet each side sent within the response.
    let mut backend_seq = 0u8;
    let mut client_seq = 0u8;
    let mut comparable = true;
    let mut out = [0u8; OK_FOR_EOF_LEN];
    tracker_ops(data, |op| {
        let p = match op {
            TrackerOp::Start(e) => {
                backend.start(e);
                client.start(e);
                x = EofTranslator::new(client_caps);
                (backend_seq, client_seq) = (0, 0);
                comparable = true;
                return;
            }
            TrackerOp::InfileSent => {
                // The client sends one (empty) packet after the request it
                // saw; the backend must get it numbered after its own.
                if backend.last_kind() == PacketKind::LocalInfile {
                    client_seq = client_seq.wrapping_add(1);
                    backend_seq = backend_seq.wrapping_add(1);
                    assert_eq!(x.backend_seq(client_seq), backend_seq);
                }
                backend.infile_sent();
                client.infile_sent();
                return;
            }
            TrackerOp::Feed(p) => p,
        };
        let Ok(progress) = backend.feed(p) else {
            comparable = false;
            return;
        };
        backend_seq = backend_seq.wrapping_add(1);
        let kind = backend.last_kind();
        let action = x
            .translate(kind, p)
            .expect("the tracker classified it: it decodes");
        let forwarded: &[u8] = match action {
            EofAction::Drop => {
                if let Progress::Complete { .. } = progress {
                    // Only a prepare ends on a metadata EOF; the client's
                    // framing ended at the definition before it.
                    assert!(!comparable || client.is_idle());
                }
                return;
            }
            EofAction::Pass => p,
            EofAction::ReplaceWithOk(ok) => {
                out = ok;
                &out
            }
        };
        client_seq = client_seq.wrapping_add(1);
        assert_eq!(x.client_seq(backend_seq), client_seq, "{kind:?}");
        if matches!(
            kind,
            PacketKind::Row | PacketKind::ColumnDef | PacketKind::ColumnCount
        ) && p.first() == Some(&EOF_HEADER)
            && p.len() < MAX_PAYLOAD_LEN
        {
            comparable = false;
        }
        // A cursor comes from one SELECT: never with more results. The
        // EOF framing ends the response at the cursor, the other at neither.
        let cursor_and_more = SERVER_STATUS_CURSOR_EXISTS | SERVER_MORE_RESULTS_EXISTS;
        if kind == PacketKind::Eof && backend.status() & cursor_and_more == cursor_and_more {
            comparable = false;
        }
        if client.is_idle() {
            // The client's framing ended a prepare at its last definition;
            // mysqld sends only the left-out EOF after it.
            comparable = false;
        }
        if !comparable {
            return;
        }
        let seen = client.feed(forwarded);
        let mask = |s: u16| s & !SERVER_SESSION_STATE_CHANGED;
        match (progress, seen) {
            (Progress::NeedMore, Ok(Progress::NeedMore))
            | (Progress::LocalInfile, Ok(Progress::LocalInfile)) => {}
            // A prepare's last definition ends the client's framing.
            (Progress::NeedMore, Ok(Progress::Complete { .. })) if backend.prepared().is_some() => {
            }
            (Progress::Complete { status, end }, Ok(Progress::Complete { status: s, end: e })) => {
                let end = if end == EndKind::Eof {
                    EndKind::Ok
                } else {
                    end
                };
                assert_eq!(end, e);
                // Otherwise both report the last status seen, and the
                // client saw none of the left-out EOFs.
                match kind {
                    PacketKind::Eof => assert_eq!(mask(status), s),
                    PacketKind::Ok => assert_eq!(status, s),
                    _ => {}
                }
            }
            (a, b) => panic!("backend framing {a:?}, client framing {b:?} on {kind:?} {p:02x?}"),
        }
    });
}

/// MariaDB's extended capabilities and column metadata, and the bulk
/// execute layout: no panic; what is written reads back; a stripped column
/// definition is a plain one that would get the field back where it was.
pub fn mariadb_ext(data: &[u8]) {
    use super::mariadb_ext::*;
    let _ = greeting_mariadb_caps(data);
    let _ = response_mariadb_caps(data);
    let mut copy = data.to_vec();
    if set_greeting_mariadb_caps(&mut copy, 0x1d) {
        assert_eq!(greeting_mariadb_caps(&copy), 0x1d);
    }
    copy.copy_from_slice(data);
    if set_response_mariadb_caps(&mut copy, 0x0c) {
        assert_eq!(response_mariadb_caps(&copy), 0x0c);
    }
    let _ = column_def_ext_metadata(data);
    if let Ok(ColumnDefEdit::Strip { at, len }) = column_def_edit(data, true, false) {
        assert!(at + len <= data.len());
        let mut plain = data[..at].to_vec();
        plain.extend_from_slice(&data[at + len..]);
        assert_eq!(
            column_def_edit(&plain, false, true),
            Ok(ColumnDefEdit::InsertEmpty { at })
        );
    }
    if let Ok(ColumnDefEdit::InsertEmpty { at }) = column_def_edit(data, false, true) {
        assert!(at <= data.len());
    }
    for params in [0u16, 1, 3] {
        if let Ok(l) = bulk_layout(data, params) {
            let types = bulk_types(data, l, params);
            assert_eq!(types.is_some(), l.has_types);
            let mut out = Vec::new();
            rewrite_bulk(
                &mut out,
                data,
                7,
                l,
                Some(&[1, 2, 3, 4, 5, 6][..2 * usize::from(params)]),
            );
            let back = bulk_layout(&out, params).expect("a rewritten bulk execute decodes");
            assert!(back.has_types || params == 0 || !l.has_types);
            assert_eq!(out.get(1..5), Some(&7u32.to_le_bytes()[..]));
        }
    }
}

/// Every entry point.
pub fn all(data: &[u8]) {
    mariadb_ext(data);
    packet(data);
    handshake(data);
    command(data);
    response(data);
    lenenc(data);
    tracker(data);
    deprecate_eof(data);
}

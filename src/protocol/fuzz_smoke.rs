//! Deterministic fuzz smoke test, run by `cargo test`: ~200k pseudo-random
//! and mutated-fixture inputs through every network-facing decoder and the
//! response tracker (via [`super::fuzzing`]), which must neither panic nor
//! break their invariants. The real fuzzing (coverage-guided, much longer)
//! is in `fuzz/`; this catches regressions in CI without extra tools.

use super::consts::*;
use super::fuzzing::{self, TRACKER_BIG, TRACKER_INFILE_SENT, TRACKER_START};
use super::handshake::{AuthSwitchRequest, HandshakeResponse, HandshakeV10};
use super::packet::write_packet;
use super::response::*;
use super::session_track::{encode_state_change, StateChange};

/// xorshift64* (Vigna): tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Bytes that mean something in the protocol: lenenc prefixes, packet
/// headers, NUL, '#'.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x03, 0x0c, 0x23, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
];

fn ok_packet(header: u8, status: u16, info: &[u8], state: Option<&[u8]>, caps: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_ok(
        &mut out,
        &OkPacket {
            header,
            affected_rows: 300,
            last_insert_id: 70_000,
            status,
            warnings: 1,
            info,
            session_state: state,
        },
        caps,
    );
    out
}

fn eof(status: u16) -> Vec<u8> {
    let mut out = Vec::new();
    encode_eof(&mut out, 0, status);
    out
}

fn coldef(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_column_def(&mut out, name, 0xfd, 45, 80, 0, 0);
    out
}

/// Tracker input (format of [`fuzzing::tracker`]) for a packet sequence.
fn tracker_input(deprecate: bool, expect: u8, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![u8::from(deprecate), expect];
    for p in packets {
        if p.len() < usize::from(TRACKER_START) {
            v.push(p.len() as u8);
            v.extend_from_slice(p);
        }
    }
    v
}

fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = Vec::new();
    let caps41 = CLIENT_PROTOCOL_41;
    let caps_st = CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK;

    // Handshakes (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html).
    for (version, caps) in [
        (
            "8.0.36",
            CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH,
        ),
        (
            "5.5.5-10.6.12-MariaDB",
            CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
        ),
        ("4.1", CLIENT_PROTOCOL_41),
    ] {
        let mut out = Vec::new();
        HandshakeV10 {
            server_version: version.into(),
            connection_id: 77,
            scramble: (1..=20).collect(),
            capabilities: caps,
            charset: 45,
            status: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin: MYSQL_NATIVE_PASSWORD.into(),
        }
        .encode(&mut out);
        c.push(out);
    }
    // Handshake responses and an SSL request.
    for caps in [
        CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_WITH_DB,
        CLIENT_PROTOCOL_41
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_PLUGIN_AUTH
            | CLIENT_CONNECT_ATTRS,
        CLIENT_PROTOCOL_41,
    ] {
        let mut out = Vec::new();
        HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: 33,
            username: "app".into(),
            auth_response: vec![0xab; 20],
            database: Some("db".into()),
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.into()),
            attrs: vec![("_os".into(), "linux".into())],
        }
        .encode(&mut out);
        c.push(out.clone());
        out.truncate(32);
        out[1] |= (CLIENT_SSL >> 8) as u8;
        c.push(out);
    }
    let mut out = Vec::new();
    AuthSwitchRequest {
        plugin: MYSQL_NATIVE_PASSWORD.into(),
        data: (1..=21).collect(),
    }
    .encode(&mut out);
    c.push(out);

    // Commands.
    for cmd in [
        &b"\x03SELECT 1"[..],
        b"\x04t1\0%",
        b"\x17\x01\0\0\0\x01\x01\0\0\0\0\x01\x08\0\x07\0\0\0\0\0\0\0",
        b"\x18\x01\0\0\0\x00\0data",
        b"\x1c\x01\0\0\0\x10\0\0\0",
        b"\x1b\x01\0",
        b"\xfa\x01\0\0\0\x80\0",
        b"\x11u\0\x14aaaaaaaaaaaaaaaaaaaa",
    ] {
        c.push(cmd.to_vec());
    }

    // Responses and session-state blocks
    // (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html).
    let mut block = Vec::new();
    for ch in [
        StateChange::SystemVariable {
            name: b"autocommit",
            value: b"OFF",
        },
        StateChange::Schema(b"test"),
        StateChange::StateChanged(true),
        StateChange::Gtids(b"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"),
        StateChange::TransactionCharacteristics(b"START TRANSACTION;"),
        StateChange::TransactionState(b"T_______"),
    ] {
        encode_state_change(&mut block, &ch);
    }
    c.push(block.clone());
    let changed = SERVER_STATUS_AUTOCOMMIT | SERVER_SESSION_STATE_CHANGED;
    c.push(ok_packet(0, changed, b"", Some(&block), caps_st));
    c.push(ok_packet(
        0,
        SERVER_STATUS_AUTOCOMMIT,
        b"Rows matched: 1",
        None,
        caps_st,
    ));
    c.push(ok_packet(
        0,
        SERVER_STATUS_AUTOCOMMIT,
        b"Rows matched: 1",
        None,
        caps41,
    ));
    c.push(ok_packet(
        0xfe,
        SERVER_MORE_RESULTS_EXISTS,
        b"",
        None,
        caps41,
    ));
    let mut out = Vec::new();
    encode_err(
        &mut out,
        1064,
        "42000",
        "You have an error in your SQL syntax",
    );
    c.push(out);
    c.push(eof(SERVER_STATUS_AUTOCOMMIT));
    let mut out = Vec::new();
    StmtPrepareOk {
        statement_id: 1,
        num_columns: 2,
        num_params: 1,
        warnings: 0,
    }
    .encode(&mut out);
    let prepare_ok = out.clone();
    c.push(out);
    c.push(coldef("id"));

    // Framed packets, including a sequence of two.
    let mut out = Vec::new();
    let seq = write_packet(&mut out, 0, b"\x03SELECT 1");
    write_packet(&mut out, seq, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]);
    c.push(out);

    // Tracker streams.
    for dep in [false, true] {
        let term = |s| {
            if dep {
                ok_packet(0xfe, s, b"", None, caps41)
            } else {
                eof(s)
            }
        };
        let mut rs = vec![vec![2u8], coldef("a"), coldef("b")];
        if !dep {
            rs.push(eof(SERVER_STATUS_AUTOCOMMIT));
        }
        rs.push(b"\x011\x01x".to_vec());
        rs.push(vec![0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        rs.push(term(SERVER_STATUS_AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS));
        rs.push(ok_packet(0, changed, b"", Some(&block), caps41));
        c.push(tracker_input(dep, 0, &rs));
        c.push(tracker_input(
            dep,
            1,
            &[
                prepare_ok.clone(),
                coldef("?"),
                eof(0),
                coldef("a"),
                coldef("b"),
                eof(0),
            ],
        ));
        c.push(tracker_input(dep, 2, &[coldef("a"), term(0)]));
        c.push(tracker_input(
            dep,
            4,
            &[vec![0, 0, 1], term(SERVER_STATUS_CURSOR_EXISTS)],
        ));
        let mut infile = tracker_input(dep, 0, &[b"\xfbfile.csv".to_vec()]);
        infile.push(TRACKER_INFILE_SENT);
        infile.push(7);
        infile.extend_from_slice(&ok_packet(0, 0, b"", None, caps41));
        c.push(infile);
        let mut big = tracker_input(dep, 0, &[vec![1u8], coldef("a")]);
        big.extend_from_slice(&[TRACKER_BIG, 0xfe, 5]);
        big.extend_from_slice(&eof(0));
        big.extend_from_slice(&[TRACKER_START, 5, 5]);
        big.extend_from_slice(&eof(0));
        c.push(big);
    }
    // EOF-framed responses as the CLIENT_DEPRECATE_EOF translation sees
    // them: a cursor opened by an execute, and LOCAL INFILE after a result
    // set whose metadata EOF the client does not get.
    let more = SERVER_STATUS_AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS;
    c.push(tracker_input(
        false,
        0,
        &[vec![1u8], coldef("a"), eof(SERVER_STATUS_CURSOR_EXISTS)],
    ));
    let mut infile = tracker_input(
        true,
        0,
        &[
            vec![1u8],
            coldef("a"),
            eof(more),
            b"\x011".to_vec(),
            eof(more),
            b"\xfbf".to_vec(),
        ],
    );
    infile.push(TRACKER_INFILE_SENT);
    let ok = ok_packet(0, 0, b"", None, caps41);
    infile.push(ok.len() as u8);
    infile.extend_from_slice(&ok);
    c.push(infile);
    c
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                data.insert(i, rng.byte());
            }
            3 if len > 0 => {
                data.remove(rng.below(len));
            }
            4 => data.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let a = rng.below(len);
                let b = a + rng.below(len - a).min(16);
                let chunk = data[a..b].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            6 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                for _ in 0..rng.below(8) {
                    data.push(rng.byte());
                }
            }
        }
    }
}

#[test]
fn fixtures_pass_the_invariants() {
    for f in corpus() {
        fuzzing::all(&f);
    }
}

#[test]
fn two_hundred_thousand_inputs_do_not_panic() {
    let corpus = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut data = Vec::with_capacity(1024);
    let mut decoded = [0u32; 6];
    for i in 0..200_000u32 {
        data.clear();
        if i % 4 == 0 {
            let n = if rng.below(8) == 0 {
                rng.below(512)
            } else {
                rng.below(40)
            };
            for _ in 0..n {
                data.push(if rng.below(4) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.byte()
                });
            }
        } else {
            data.extend_from_slice(&corpus[rng.below(corpus.len())]);
            mutate(&mut rng, &mut data, &corpus);
        }
        fuzzing::all(&data);
        // Count inputs that decode, to check the mutations stay close enough
        // to valid packets to reach past the first checks.
        let hits = [
            HandshakeV10::decode(&data).is_ok(),
            HandshakeResponse::decode(&data).is_ok(),
            super::command::decode_command(&data).is_ok(),
            decode_ok(&data, CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK).is_ok(),
            decode_err(&data).is_ok(),
            super::packet::scan_message(&data, usize::MAX).is_ok_and(|s| s.is_some()),
        ];
        for (n, hit) in decoded.iter_mut().zip(hits) {
            *n += u32::from(hit);
        }
    }
    for n in decoded {
        assert!(n > 1000, "too few inputs decode: {decoded:?}");
    }
}

/// Writes the fixtures as seed corpora for the cargo-fuzz targets:
/// `cargo test --lib write_fuzz_seeds -- --ignored` (see fuzz/README.md).
#[test]
#[ignore = "writes files; run by hand to seed fuzz/corpus"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in [
        "packet",
        "handshake",
        "command",
        "response",
        "tracker",
        "deprecate_eof",
        "lenenc",
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, f) in corpus().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), f).unwrap();
        }
    }
}

use super::*;

/// Login flags for `op_login`: app, right password, default capabilities.
const LOGIN_APP: u8 = 0;

fn op(client: u8, op: u8) -> u8 {
    (client << 5) | op
}

fn login(client: u8, flags: u8) -> [u8; 2] {
    [op(client, 2), flags]
}

fn canned(client: u8, idx: u8) -> [u8; 2] {
    [op(client, 4), idx]
}

fn turns(n: u8) -> [u8; 2] {
    [op(0, 5), n]
}

fn case(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn plain_session() -> Vec<u8> {
    case(&[
        &login(0, LOGIN_APP),
        &turns(8),
        &canned(0, 0),
        &turns(8),
        &canned(0, 1),
        &turns(8),
        &canned(0, 2),
        &turns(8),
    ])
}

#[test]
fn a_plain_session_runs_clean() {
    let mut sim = Sim::new().unwrap();
    sim.run(&plain_session()).unwrap();
    // It really got that far: three answers, the last one a result set.
    let c = sim.clients[0].as_ref().unwrap();
    let frames = &c.frames;
    assert_eq!(frames.len(), 5 + 1 + 5, "{frames:?}");
    assert_eq!(frames[5][0], OK_HEADER);
    // Every answer was checked and complete.
    assert!(c.clean && c.awaiting.is_empty() && c.answer.is_none());
    sim.finish().unwrap();
}

const PREPARE: u8 = 24 + 8;
const EXECUTE_CURSOR: u8 = 24 + 12;
const FETCH: u8 = 24 + 14;

fn statements_and_pins() -> Vec<u8> {
    case(&[
        &login(0, 8), // DEPRECATE_EOF
        &login(1, LOGIN_APP),
        &turns(8),
        &canned(0, PREPARE),
        &turns(8),
        &canned(0, EXECUTE_CURSOR),
        &canned(1, 0),
        &turns(8),
        &canned(0, FETCH),
        &turns(8),
        &canned(0, FETCH),
        &canned(1, 3), // BEGIN pins client 1
        &turns(8),
        &canned(1, 0),
        &canned(0, 9), // GET_LOCK
        &turns(15),
    ])
}

#[test]
fn prepared_statements_cursors_and_pins_run_clean() {
    let mut sim = Sim::new().unwrap();
    sim.run(&statements_and_pins()).unwrap();
    // Client 1 holds a pinned backend (its transaction); the cursor's
    // rows all arrived (2 + 1), the last with SERVER_STATUS_LAST_ROW_SENT.
    assert_eq!(
        sim.server.pools[0].pinned,
        1,
        "{}",
        sim.server.describe_state()
    );
    let frames = &sim.clients[0].as_ref().unwrap().frames;
    let rows = frames
        .iter()
        .filter(|f| f.as_slice() == b"\0\0\x03row")
        .count();
    assert_eq!(rows, 3, "{frames:?}");
    sim.finish().unwrap();
}

fn dying_backend_and_garbage() -> Vec<u8> {
    case(&[
        &login(0, LOGIN_APP),
        &[op(1, 0), 5, 1, 2, 3, 4, 5], // garbage instead of a handshake
        &turns(4),
        &[op(0, 11), 7], // mysqld closes on the next command
        &canned(0, 0),
        &turns(8),
        &canned(0, 0),
        &[op(0, 11), 5], // garbage answer
        &canned(0, 0),
        &turns(8),
        &[op(0, 6), 200], // two seconds pass
        &turns(8),
    ])
}

#[test]
fn a_dying_backend_and_garbage_clients_run_clean() {
    let mut sim = Sim::new().unwrap();
    sim.run(&dying_backend_and_garbage()).unwrap();
    assert!(
        sim.server.counters.backend_lost >= 2,
        "{:?}",
        sim.server.counters
    );
    // The garbage client was closed with an ERR; client 0 got 2013s.
    let frames = &sim.clients[0].as_ref().unwrap().frames;
    let lost = frames
        .iter()
        .filter(|f| decode_err(f).is_ok_and(|e| e.code == 2013))
        .count();
    assert!(lost >= 1, "{frames:?}");
    sim.finish().unwrap();
}

#[test]
fn the_checker_sees_a_lost_idle_backend() {
    let mut sim = Sim::new().unwrap();
    sim.server.check_invariants().unwrap();
    let Some(b) = sim.server.pools[0].idle.pop() else {
        panic!(
            "no idle backend after start: {}",
            sim.server.describe_state()
        );
    };
    let e = sim.server.check_invariants().unwrap_err();
    assert!(e.contains(&format!("backend {b}")), "{e}");
}

#[test]
fn the_checker_sees_a_queued_client_missing_from_the_backlog() {
    let mut sim = Sim::new().unwrap();
    sim.login(0, LOGIN_APP).unwrap();
    sim.steps(10).unwrap();
    let key = sim.server.clients.iter().map(|(k, _)| k).next().unwrap();
    sim.server.clients[key].state = super::super::client::ClientState::Queued;
    let e = sim.server.check_invariants().unwrap_err();
    assert!(e.contains("would wait forever"), "{e}");
}

/// A deterministic sample of random inputs through the whole funnel (the
/// cargo-fuzz target `funnel` explores far more; see fuzz/README.md).
#[test]
fn random_inputs_keep_the_invariants() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for n in 0..150 {
        let len = (next() % 160) as usize;
        let mut input = Vec::with_capacity(len);
        for _ in 0..len {
            // Bias towards the structured ops and small arguments.
            let r = next();
            input.push(if r % 3 == 0 {
                (r >> 8) as u8 % 40
            } else {
                (r >> 16) as u8
            });
        }
        if let Err(e) = run_case(&input) {
            panic!("case {n} failed: {e}\ninput: {input:?}");
        }
    }
}

/// Seeds for the cargo-fuzz target `funnel`:
/// `cargo test --lib write_sim_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_sim_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/funnel");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds = vec![
        plain_session(),
        statements_and_pins(),
        dying_backend_and_garbage(),
    ];
    // Every canned command once, after a login.
    for idx in 0..48 {
        seeds.push(case(&[
            &login(0, idx % 128),
            &turns(4),
            &canned(0, idx),
            &turns(8),
        ]));
    }
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
    }
}

/// Found by the fuzzer: a client that left in the middle of a LOAD DATA
/// LOCAL upload left its backend waiting for the file forever.
#[test]
fn a_client_leaving_during_an_infile_upload_frees_its_backend() {
    run_case(&[2, 14, 5, 4, 4, 14, 5, 8]).unwrap();
}

/// Found by the fuzzer: an upload packet bigger than the client's input
/// bound could never be relayed whole, so the upload stopped for good and
/// the client (its reading paused) was never seen leaving.
#[test]
fn an_upload_packet_bigger_than_the_input_bound_is_relayed() {
    let input = [
        2u8, 2, 4, 14, 109, 109, 109, 109, 73, 109, 109, 109, 109, 109, 109, 109, 109, 109, 109,
        109, 109, 14, 255, 109, 109, 109, 73, 109, 109, 109, 109, 109,
    ];
    run_case(&input).unwrap();
}

/// Found by the fuzzer: a backend whose client left while mysqld had not
/// finished the response (here: never will) stayed draining forever.
#[test]
fn a_response_that_never_ends_does_not_hold_its_backend_forever() {
    let input = [
        75u8, 221, 75, 221, 75, 221, 75, 221, 75, 221, 75, 221, 75, 221, 75, 221, 75, 221, 75, 221,
        75, 221, 2, 42, 100, 2, 108, 29, 3, 4, 1, 199,
    ];
    run_case(&input).unwrap();
}

/// Found by the fuzzer: mysqld sent more than the answer (here a scripted
/// multi-result to a command answered with one packet); the extra packets
/// were left in the buffer and taken for the next command's answer.
#[test]
fn bytes_after_a_complete_answer_close_the_backend() {
    let input = [
        2u8, 8, 34, 0, 5, 8, 4, 32, 5, 255, 109, 109, 109, 109, 109, 109, 2, 108, 11, 4, 40, 109,
        11, 5, 8, 4, 38, 8, 38, 36, 2, 108, 3, 29, 0,
    ];
    run_case(&input).unwrap();
}

/// Found by the fuzzer: a backend lost while the funnel prepared a
/// client's statement or replayed its session (before the command itself
/// was sent) left the client idle with its command in hand, unanswered for
/// good. The command now goes back to the backlog (it never ran), or fails
/// with 2013 when the client's session state was lost with the backend.
#[test]
fn a_backend_lost_before_the_command_was_sent_does_not_strand_it() {
    let input = [
        2u8, 8, 34, 0, 36, 8, 4, 32, 109, 109, 109, 109, 109, 109, 109, 69, 244, 105, 73, 98, 226,
        98, 226, 98, 29, 11, 29, 40, 11, 29, 11, 43, 11, 36, 109, 5, 8, 38, 5, 8, 4, 38, 36, 2, 46,
        174, 46, 174, 46, 174, 40, 5, 4, 40, 5, 8, 15,
    ];
    run_case(&input).unwrap();
}

#[test]
fn the_answer_checker_sees_wrong_sequence_ids_and_stray_packets() {
    let (stream, _peer) = UnixStream::pair().unwrap();
    let client = || SimClient {
        tag: 1,
        conn_id: Some(1),
        raw_tail: Vec::new(),
        stream: stream.try_clone().unwrap(),
        received: Vec::new(),
        checked: 0,
        reading: true,
        scramble: Vec::new(),
        got_greeting: true,
        login: Login::Done,
        unsent: Vec::new(),
        peer_closed: false,
        frames: Vec::new(),
        caps: CLIENT_PROTOCOL_41,
        clean: true,
        awaiting: [Awaited::plain(COM_PING)].into(),
        answer: None,
        answer_seq: 0,
        answer_sleeps: false,
    };
    let ok = [7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
    let mut c = client();
    c.received.extend_from_slice(&ok);
    assert!(c.check_frames().is_ok());
    c.received.extend_from_slice(&ok);
    let e = c.check_frames().unwrap_err();
    assert!(e.contains("no command asked for"), "{e}");
    let mut c = client();
    c.received
        .extend_from_slice(&[7, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
    let e = c.check_frames().unwrap_err();
    assert!(e.contains("sequence id 2, expected 1"), "{e}");
    let mut c = client();
    c.received.extend_from_slice(&[1, 0, 0, 1, 0xfe]);
    let e = c.check_frames().unwrap_err();
    assert!(e.contains("malformed answer"), "{e}");
}

/// A command sent right behind the login (before its answer) is owed an
/// answer too (found by the fuzzer: the checker itself missed it).
#[test]
fn a_command_right_behind_the_login_is_answered() {
    run_case(&[2, 44, 4, 32, 8]).unwrap();
}

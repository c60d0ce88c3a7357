//! The engine's behaviours, one at a time, without a socket: the engine is
//! driven by the in-memory I/O layer (`mem_io`) against the fake mysqld,
//! and its clients are the simulation's, so every answer is also checked
//! for framing (and the invariants after every turn) as in the random
//! cases. Each test ends with the funnel settling and serving a newcomer
//! (`Sim::finish`), except the shutdown's.

use super::*;
use crate::protocol::consts::err;
use crate::server::backend::BackendState;

/// Turns a test waits for something before it gives up.
const PATIENCE: usize = 400;

/// Config variant 0 (see `config_text`): one backend connection, a
/// backlog of 2, no pinned backend to spare.
const ONE_BACKEND: u8 = 0;

/// A funnel in config `variant`, settled.
fn funnel(variant: u8) -> Sim {
    let mut sim = Sim::new().unwrap();
    sim.reload(variant).unwrap();
    sim.settle().unwrap();
    sim
}

/// Turns until `done` holds.
fn until(sim: &mut Sim, what: &str, done: impl Fn(&Sim) -> bool) {
    for _ in 0..PATIENCE {
        if done(sim) {
            return;
        }
        sim.step().unwrap();
    }
    panic!(
        "never: {what}\nstate: {}",
        sim.funnel.engine.describe_state()
    );
}

fn client(sim: &Sim, who: usize) -> &SimClient {
    sim.clients[who].as_ref().expect("client connected")
}

/// A client logged in as `app` with the right password.
fn logged_in(sim: &mut Sim, who: usize) {
    sim.login(who, 0).unwrap();
    until(sim, "logged in", |s| client(s, who).login == Login::Done);
}

fn query(sim: &mut Sim, who: usize, sql: &str) {
    let mut payload = vec![COM_QUERY];
    payload.extend_from_slice(sql.as_bytes());
    sim.command(who, &payload).unwrap();
}

/// Every answer the client is owed has arrived (whole and well-formed:
/// the client checks each packet as it comes).
fn answered(sim: &Sim, who: usize) -> bool {
    let c = client(sim, who);
    c.awaiting.is_empty() && c.answer.is_none()
}

fn wait_answered(sim: &mut Sim, who: usize) {
    until(sim, &format!("client {who} answered"), |s| answered(s, who));
}

/// The (code, SQLSTATE, message) of an ERR packet.
fn error(frame: &[u8]) -> Option<(u16, String, String)> {
    if frame.first() != Some(&ERR_HEADER) {
        return None;
    }
    let e = decode_err(frame).ok()?;
    Some((
        e.code,
        String::from_utf8_lossy(&e.sql_state?).into_owned(),
        String::from_utf8_lossy(e.message).into_owned(),
    ))
}

fn errors(sim: &Sim, who: usize) -> Vec<(u16, String, String)> {
    client(sim, who)
        .frames
        .iter()
        .filter_map(|f| error(f))
        .collect()
}

/// The text rows of the client's frames that are one short string.
fn rows(sim: &Sim, who: usize) -> Vec<Vec<u8>> {
    client(sim, who)
        .frames
        .iter()
        .filter(|f| f.len() >= 2 && usize::from(f[0]) == f.len() - 1)
        .map(|f| f[1..].to_vec())
        .collect()
}

/// The backend serving the client with this funnel connection id.
fn backend_of(sim: &Sim, who: usize) -> Option<usize> {
    let id = client(sim, who).conn_id?;
    let engine = &sim.funnel.engine;
    let (key, _) = engine.clients.iter().find(|(_, c)| c.id == id)?;
    engine
        .backends
        .iter()
        .find(|(_, b)| b.client.is_some_and(|cr| cr.key == key))
        .map(|(k, _)| k)
}

fn running(sim: &Sim, who: usize) -> bool {
    backend_of(sim, who)
        .is_some_and(|b| sim.funnel.engine.backends[b].state == BackendState::Running)
}

#[test]
fn a_login_with_the_right_password_is_accepted_and_a_wrong_one_refused() {
    let mut sim = funnel(1);
    logged_in(&mut sim, 0);
    let c0 = client(&sim, 0);
    assert!(c0.conn_id.is_some() && c0.login_error.is_none());
    assert_eq!(sim.funnel.engine.clients.len(), 1);

    sim.login(1, 1).unwrap(); // the wrong password
    until(&mut sim, "refused", |s| {
        client(s, 1).login == Login::Refused
    });
    let e = client(&sim, 1).login_error.clone().unwrap();
    let (code, state, message) = error(&e).expect("a well-formed ERR");
    assert_eq!((code, state.as_str()), (1045, "28000"));
    assert_eq!(
        message,
        "Access denied for user 'app'@'localhost' (using password: YES)"
    );
    // The funnel closed that connection, and only that one.
    until(&mut sim, "the refused client closed", |s| {
        client(s, 1).peer_closed
    });
    assert_eq!(sim.funnel.engine.clients.len(), 1);
    assert_eq!(sim.funnel.engine.counters.auth_failures, 1);
    // The logged-in client is served.
    query(&mut sim, 0, "SELECT 1");
    wait_answered(&mut sim, 0);
    assert_eq!(rows(&sim, 0), [b"1".to_vec()]);
    sim.finish().unwrap();
}

#[test]
fn a_query_is_forwarded_to_mysqld_and_its_answer_relayed() {
    let mut sim = funnel(1);
    logged_in(&mut sim, 0);
    let thread_ids: Vec<u32> = sim
        .funnel
        .engine
        .backends
        .iter()
        .map(|(_, b)| b.thread_id)
        .collect();
    query(&mut sim, 0, "SELECT 1 FROM dual /* forwarded */");
    wait_answered(&mut sim, 0);
    // mysqld ran it, on one of the pool's connections.
    let ran: Vec<&(u32, String)> = sim
        .mysqld
        .queries
        .iter()
        .filter(|(_, q)| q.contains("FORWARDED"))
        .collect();
    assert_eq!(ran.len(), 1, "{:?}", sim.mysqld.queries);
    assert!(thread_ids.contains(&ran[0].0));
    // Its answer, packet by packet: column count, definition, EOF, row,
    // EOF.
    let frames = &client(&sim, 0).frames;
    assert_eq!(frames.len(), 5, "{frames:?}");
    assert_eq!(frames[0], [1]);
    assert_eq!(frames[3], [1, b'1']);
    assert_eq!(frames[4][0], EOF_HEADER);
    sim.finish().unwrap();
}

#[test]
fn a_full_backlog_refuses_the_command_with_err_1040() {
    let mut sim = funnel(ONE_BACKEND);
    for who in 0..4 {
        logged_in(&mut sim, who);
    }
    // Client 0 holds the only backend; clients 1 and 2 fill the backlog.
    query(&mut sim, 0, "SELECT SLEEP(30)");
    until(&mut sim, "client 0 running", |s| running(s, 0));
    query(&mut sim, 1, "SELECT 1");
    query(&mut sim, 2, "SELECT 1");
    sim.steps(2).unwrap();
    assert_eq!(sim.funnel.engine.pools[0].backlog_len(), 2);
    query(&mut sim, 3, "SELECT 1");
    wait_answered(&mut sim, 3);
    let (code, state, message) = errors(&sim, 3).pop().expect("an ERR");
    assert_eq!((code, state.as_str()), err::ER_CON_COUNT_ERROR);
    assert_eq!(
        message,
        "funnel: backlog full in pool 'app' (backlog_size = 2); the command was not run"
    );
    assert_eq!(sim.funnel.engine.counters.backlog_full, 1);
    // The others are served in turn.
    for who in 0..3 {
        wait_answered(&mut sim, who);
        assert!(errors(&sim, who).is_empty(), "client {who}");
    }
    assert_eq!(rows(&sim, 0), [b"0".to_vec()]); // SLEEP ran to its end
    assert_eq!(rows(&sim, 1), [b"1".to_vec()]);
    sim.finish().unwrap();
}

#[test]
fn a_command_queued_past_queue_timeout_ms_gets_err_1969_and_never_runs() {
    let mut sim = funnel(ONE_BACKEND);
    logged_in(&mut sim, 0);
    logged_in(&mut sim, 1);
    query(&mut sim, 0, "SELECT SLEEP(60)");
    until(&mut sim, "client 0 running", |s| running(s, 0));
    query(&mut sim, 1, "SELECT 'queued'");
    sim.steps(2).unwrap();
    assert!(!answered(&sim, 1));
    // Just short of queue_timeout_ms (1500): still waiting.
    sim.advance(Duration::from_millis(1400));
    sim.steps(2).unwrap();
    assert!(!answered(&sim, 1));
    sim.advance(Duration::from_millis(200));
    sim.steps(2).unwrap();
    assert!(answered(&sim, 1));
    let (code, state, message) = errors(&sim, 1).pop().expect("an ERR");
    assert_eq!((code, state.as_str()), err::ER_STATEMENT_TIMEOUT);
    assert!(
        message.starts_with("funnel: the command waited ")
            && message.contains("in the backlog of pool 'app' (queue_timeout_ms = 1500)"),
        "{message}"
    );
    assert_eq!(sim.funnel.engine.counters.queue_timeouts, 1);
    wait_answered(&mut sim, 0);
    sim.steps(8).unwrap();
    assert!(
        !sim.mysqld.queries.iter().any(|(_, q)| q.contains("QUEUED")),
        "the timed-out command ran: {:?}",
        sim.mysqld.queries
    );
    sim.finish().unwrap();
}

/// Rows of the fake's big result: 10 of 60,000 bytes (`Answer::Big`).
fn big_rows(sim: &Sim, who: usize) -> usize {
    client(sim, who)
        .frames
        .iter()
        .filter(|f| f.len() == 3 + 60_000 && f[0] == 0xfc && f[3..].iter().all(|&b| b == b'x'))
        .count()
}

#[test]
fn a_client_that_stops_reading_pauses_its_backend_until_it_reads_again() {
    // Variant 1: max_buffered_result = 0, so backpressure reaches mysqld.
    let mut sim = funnel(1);
    logged_in(&mut sim, 0);
    sim.set_reading(0, false);
    sim.mysqld.script(Answer::Big);
    query(&mut sim, 0, "SELECT big");
    let paused = |s: &Sim| backend_of(s, 0).is_some_and(|b| s.funnel.engine.backends[b].paused);
    until(&mut sim, "the backend paused", paused);
    let b = backend_of(&sim, 0).unwrap();
    // It stays paused (the funnel holds a bounded amount for the client)
    // for as long as the client reads nothing.
    for _ in 0..50 {
        sim.step().unwrap();
        assert!(paused(&sim));
    }
    let held = sim
        .funnel
        .engine
        .clients
        .iter()
        .next()
        .unwrap()
        .1
        .wbuf
        .len();
    assert!(held <= 131_072 + 256 * 1024, "{held} bytes held");
    assert!(!answered(&sim, 0));
    sim.set_reading(0, true);
    wait_answered(&mut sim, 0);
    // The whole result, in order (the client's tracker checked the
    // framing and sequence ids): count, definition, EOF, 10 rows, EOF.
    assert_eq!(big_rows(&sim, 0), 10);
    let frames = &client(&sim, 0).frames;
    assert_eq!(frames.len(), 14);
    assert_eq!(frames[13][0], EOF_HEADER);
    assert!(!sim.funnel.engine.backends[b].paused);
    sim.steps(4).unwrap();
    assert!(sim.funnel.engine.pools[0].idle().contains(&b));
    sim.finish().unwrap();
}

#[test]
fn kill_query_stops_another_clients_running_statement() {
    let mut sim = funnel(1);
    logged_in(&mut sim, 0);
    logged_in(&mut sim, 1);
    query(&mut sim, 0, "SELECT SLEEP(40)");
    until(&mut sim, "client 0 running", |s| running(s, 0));
    let thread = sim.funnel.engine.backends[backend_of(&sim, 0).unwrap()].thread_id;
    let id = client(&sim, 0).conn_id.unwrap();
    query(&mut sim, 1, &format!("KILL QUERY {id}"));
    wait_answered(&mut sim, 1);
    assert_eq!(client(&sim, 1).frames.last().map(|f| f[0]), Some(OK_HEADER));
    wait_answered(&mut sim, 0);
    // SLEEP says 1 when interrupted, as MariaDB's does; it was the
    // backend's thread that mysqld was told to stop, over a connection of
    // the funnel's own.
    assert_eq!(rows(&sim, 0), [b"1".to_vec()]);
    assert_eq!(sim.mysqld.kills_landed, 1);
    let kills: Vec<&(u32, String)> = sim
        .mysqld
        .queries
        .iter()
        .filter(|(_, q)| q.starts_with("KILL"))
        .collect();
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0].1, format!("KILL QUERY {thread}"));
    assert_ne!(kills[0].0, thread);
    sim.finish().unwrap();
}

#[test]
fn a_client_leaving_mid_result_has_its_backend_drained_back_to_the_pool() {
    let mut sim = funnel(ONE_BACKEND);
    logged_in(&mut sim, 0);
    sim.set_reading(0, false);
    sim.mysqld.script(Answer::Big);
    query(&mut sim, 0, "SELECT big");
    // Part of the result has reached it; the rest waits, its backend
    // paused, as the client reads nothing.
    until(&mut sim, "the backend paused mid-result", |s| {
        backend_of(s, 0).is_some_and(|b| {
            let b = &s.funnel.engine.backends[b];
            b.paused && b.response.bytes > 0
        })
    });
    let b = backend_of(&sim, 0).unwrap();
    let thread = sim.funnel.engine.backends[b].thread_id;
    sim.drop_client(0);
    // The rest of the result is read and dropped (drained).
    until(&mut sim, "the backend idle again", |s| {
        s.funnel.engine.pools[0].idle().contains(&b)
    });
    // Back in the pool, not closed: the same connection to mysqld.
    assert!(sim.funnel.engine.pools[0].idle().contains(&b));
    let bk = &sim.funnel.engine.backends[b];
    assert_eq!(bk.thread_id, thread);
    assert_eq!(bk.state, BackendState::Idle);
    assert_eq!(sim.funnel.engine.counters.backend_lost, 0);
    // The next client gets its own answer on it, none of the old rows.
    logged_in(&mut sim, 1);
    query(&mut sim, 1, "SELECT 1");
    wait_answered(&mut sim, 1);
    assert_eq!(rows(&sim, 1), [b"1".to_vec()]);
    assert_eq!(big_rows(&sim, 1), 0);
    assert_eq!(sim.funnel.engine.backends[b].thread_id, thread);
    sim.finish().unwrap();
}

#[test]
fn a_shutdown_closes_idle_clients_between_commands_and_lets_busy_ones_finish() {
    let mut sim = funnel(1);
    logged_in(&mut sim, 0);
    logged_in(&mut sim, 1);
    query(&mut sim, 1, "SELECT SLEEP(20)");
    until(&mut sim, "client 1 running", |s| running(s, 1));
    sim.funnel.engine.begin_shutdown();
    sim.steps(2).unwrap();
    // The idle client: closed between its commands, with no unsolicited
    // ERR (a driver would take it for the answer to its next command).
    until(&mut sim, "client 0 closed", |s| client(s, 0).peer_closed);
    assert_eq!(errors(&sim, 0), []);
    // The busy one is still served, and nobody new is let in.
    assert!(!client(&sim, 1).peer_closed);
    assert!(sim.funnel.connect_client().is_none());
    wait_answered(&mut sim, 1);
    assert_eq!(rows(&sim, 1), [b"0".to_vec()]);
    until(&mut sim, "the shutdown done", |s| s.funnel.finished);
    // Its answer, then the close: no error either.
    assert_eq!(errors(&sim, 1), []);
    assert!(client(&sim, 1).peer_closed);
    assert!(sim.funnel.engine.clients.is_empty());
    assert!(sim
        .funnel
        .notifications
        .iter()
        .any(|n| n.starts_with("STOPPING=1")));
}

/// Backend connections being opened.
fn connecting(sim: &Sim) -> usize {
    sim.funnel.engine.pools.iter().map(|p| p.connecting).sum()
}

/// Kills every connection of the pools' (mysqld restarted, say).
fn kill_backends(sim: &mut Sim) {
    for _ in 0..8 {
        sim.mysqld.kill(0);
    }
}

#[test]
fn refused_connects_are_retried_until_mysqld_accepts() {
    let mut sim = funnel(1);
    let failures = sim.funnel.engine.counters.backend_connect_failures;
    for _ in 0..3 {
        sim.mysqld.script_connect(ConnectFate::Refuse);
    }
    kill_backends(&mut sim);
    let before = sim.funnel.clock_offset;
    sim.settle().unwrap();
    // Each refusal is seen at once and retried after a short backoff
    // (reconnect_backoff_min_ms = 10, doubling), long before a connect
    // would time out (connect_timeout_ms = 1000).
    let took = sim.funnel.clock_offset - before;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(sim.mysqld.connects_refused, 3);
    assert_eq!(
        sim.funnel.engine.counters.backend_connect_failures - failures,
        3
    );
    logged_in(&mut sim, 0);
    query(&mut sim, 0, "SELECT 1");
    wait_answered(&mut sim, 0);
    assert_eq!(rows(&sim, 0), [b"1".to_vec()]);
    sim.finish().unwrap();
}

#[test]
fn a_pending_connect_completes_when_mysqld_accepts_or_times_out() {
    // Completes: the backend logs in once mysqld takes the connection.
    let mut sim = funnel(ONE_BACKEND);
    sim.mysqld.script_connect(ConnectFate::Hang);
    kill_backends(&mut sim);
    sim.steps(20).unwrap();
    assert_eq!(sim.mysqld.connects_pending(), 1);
    assert_eq!(connecting(&sim), 1);
    sim.mysqld.behave();
    until(&mut sim, "the pool full again", |s| {
        s.funnel.engine.is_settled()
    });
    sim.finish().unwrap();

    // Times out: after connect_timeout_ms (1000) the funnel gives up on
    // it and connects again.
    let mut sim = funnel(ONE_BACKEND);
    let failures = sim.funnel.engine.counters.backend_connect_failures;
    sim.mysqld.script_connect(ConnectFate::Hang);
    kill_backends(&mut sim);
    sim.steps(20).unwrap();
    assert_eq!(sim.mysqld.connects_pending(), 1);
    // One backend per pool (users app and other), one of them connecting.
    assert_eq!(sim.funnel.open_connections(), 2);
    sim.advance(Duration::from_millis(900));
    sim.steps(2).unwrap();
    assert_eq!(connecting(&sim), 1);
    assert_eq!(sim.mysqld.connects_pending(), 1);
    sim.advance(Duration::from_millis(200));
    sim.steps(2).unwrap();
    // Given up on (and closed: mysqld would find nobody there).
    assert_eq!(
        sim.funnel.engine.counters.backend_connect_failures - failures,
        1
    );
    assert_eq!(sim.mysqld.connects_pending(), 0);
    sim.settle().unwrap();
    assert_eq!(sim.funnel.open_connections(), 2);
    sim.finish().unwrap();

    // Fails: mysqld's host answers at last, and nothing listens.
    let mut sim = funnel(ONE_BACKEND);
    let failures = sim.funnel.engine.counters.backend_connect_failures;
    sim.mysqld.script_connect(ConnectFate::Hang);
    kill_backends(&mut sim);
    sim.steps(20).unwrap();
    assert_eq!(connecting(&sim), 1);
    sim.mysqld.toggle_down();
    sim.steps(1).unwrap();
    assert_eq!(
        sim.funnel.engine.counters.backend_connect_failures - failures,
        1
    );
    sim.mysqld.toggle_down();
    sim.settle().unwrap();
    sim.finish().unwrap();
}

//! The session-state-change block of an OK packet (CLIENT_SESSION_TRACK):
//! what changed in the session (system variables, current schema, ...),
//! which the funnel needs to know before it may hand the backend connection
//! to another client.
//!
//! References: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html>
//! and <https://mariadb.com/kb/en/ok_packet/>.
//!
//! The block is a sequence of entries `int<1> type, string<lenenc> data`.
//! mysqld and MariaDB both write one SESSION_TRACK_SYSTEM_VARIABLES entry per
//! changed variable (MariaDB's `Session_sysvars_tracker::vars_list::store`
//! loops over the changed variables and writes type byte + total length +
//! name + value for each), but the entry data is self-delimiting, so the
//! iterator also accepts several name/value pairs inside one entry and
//! yields one [`StateChange::SystemVariable`] per pair.

use super::lenenc::{lenenc_int_len, write_lenenc_int, write_lenenc_str, Field, Reader};
use super::{ProtocolError, Result};

pub const SESSION_TRACK_SYSTEM_VARIABLES: u8 = 0;
pub const SESSION_TRACK_SCHEMA: u8 = 1;
pub const SESSION_TRACK_STATE_CHANGE: u8 = 2;
pub const SESSION_TRACK_GTIDS: u8 = 3;
pub const SESSION_TRACK_TRANSACTION_CHARACTERISTICS: u8 = 4;
pub const SESSION_TRACK_TRANSACTION_STATE: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange<'a> {
    /// A session system variable and its new value.
    SystemVariable { name: &'a [u8], value: &'a [u8] },
    /// The new current schema (USE db).
    Schema(&'a [u8]),
    /// session_track_state_change: "1" = the session state changed.
    StateChanged(bool),
    /// The GTID string (after the encoding-specification byte, which is 0:
    /// the only defined encoding).
    Gtids(&'a [u8]),
    /// SQL statements that would restore the transaction characteristics,
    /// e.g. "SET TRANSACTION ISOLATION LEVEL READ COMMITTED;"; empty if none.
    TransactionCharacteristics(&'a [u8]),
    /// 8 characters describing the transaction state, e.g. "T_______".
    TransactionState(&'a [u8]),
    /// An entry type this code does not know; `data` is the entry's data.
    Unknown { kind: u8, data: &'a [u8] },
}

/// Iterator over the entries of a session-state block. After an error it
/// yields `None`.
#[derive(Clone, Debug)]
pub struct SessionStateIter<'a> {
    block: Reader<'a>,
    /// Unread pairs of the current SESSION_TRACK_SYSTEM_VARIABLES entry.
    vars: Reader<'a>,
    failed: bool,
}

/// Iterates over the entries of `block`, the content of an OK packet's
/// session-state lenenc string ([`super::response::OkPacket::session_state`]).
pub fn session_state_changes(block: &[u8]) -> SessionStateIter<'_> {
    SessionStateIter {
        block: Reader::new(block),
        vars: Reader::new(&[]),
        failed: false,
    }
}

fn system_variable<'a>(r: &mut Reader<'a>) -> Result<StateChange<'a>> {
    let name = r.lenenc_str().field("session variable name")?;
    let value = r.lenenc_str().field("session variable value")?;
    Ok(StateChange::SystemVariable { name, value })
}

impl<'a> SessionStateIter<'a> {
    fn next_change(&mut self) -> Result<Option<StateChange<'a>>> {
        if !self.vars.is_empty() {
            return system_variable(&mut self.vars).map(Some);
        }
        if self.block.is_empty() {
            return Ok(None);
        }
        let kind = self.block.u8().field("session state type")?;
        let data = self.block.lenenc_str().field("session state data")?;
        let mut d = Reader::new(data);
        let change = match kind {
            SESSION_TRACK_SYSTEM_VARIABLES => {
                let first = system_variable(&mut d)?;
                self.vars = d;
                first
            }
            SESSION_TRACK_SCHEMA => StateChange::Schema(d.lenenc_str().field("session schema")?),
            // mysqld and MariaDB write the flag as the entry's whole data
            // (`02 01 31`: Session_state_change_tracker::store); accept a
            // length-encoded flag too.
            SESSION_TRACK_STATE_CHANGE => match data {
                b"1" => StateChange::StateChanged(true),
                b"0" => StateChange::StateChanged(false),
                _ => match d.lenenc_str().field("session state flag")? {
                    b"1" => StateChange::StateChanged(true),
                    b"0" => StateChange::StateChanged(false),
                    _ => return Err(ProtocolError::Invalid("session state change flag")),
                },
            },
            SESSION_TRACK_GTIDS => {
                d.u8().field("session GTIDs encoding")?;
                StateChange::Gtids(d.lenenc_str().field("session GTIDs")?)
            }
            SESSION_TRACK_TRANSACTION_CHARACTERISTICS => StateChange::TransactionCharacteristics(
                d.lenenc_str().field("transaction characteristics")?,
            ),
            SESSION_TRACK_TRANSACTION_STATE => {
                StateChange::TransactionState(d.lenenc_str().field("transaction state")?)
            }
            kind => StateChange::Unknown { kind, data },
        };
        Ok(Some(change))
    }
}

impl<'a> Iterator for SessionStateIter<'a> {
    type Item = Result<StateChange<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_change() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Appends one entry (type byte + lenenc data) in the form mysqld writes.
pub fn encode_state_change(out: &mut Vec<u8>, change: &StateChange<'_>) {
    fn lenenc_str_len(s: &[u8]) -> u64 {
        (lenenc_int_len(s.len() as u64) + s.len()) as u64
    }
    match change {
        StateChange::SystemVariable { name, value } => {
            out.push(SESSION_TRACK_SYSTEM_VARIABLES);
            write_lenenc_int(out, lenenc_str_len(name) + lenenc_str_len(value));
            write_lenenc_str(out, name);
            write_lenenc_str(out, value);
        }
        StateChange::Schema(s) => {
            out.push(SESSION_TRACK_SCHEMA);
            write_lenenc_int(out, lenenc_str_len(s));
            write_lenenc_str(out, s);
        }
        StateChange::StateChanged(b) => {
            out.push(SESSION_TRACK_STATE_CHANGE);
            write_lenenc_int(out, 1);
            out.push(if *b { b'1' } else { b'0' });
        }
        StateChange::Gtids(g) => {
            out.push(SESSION_TRACK_GTIDS);
            write_lenenc_int(out, 1 + lenenc_str_len(g));
            out.push(0);
            write_lenenc_str(out, g);
        }
        StateChange::TransactionCharacteristics(s) => {
            out.push(SESSION_TRACK_TRANSACTION_CHARACTERISTICS);
            write_lenenc_int(out, lenenc_str_len(s));
            write_lenenc_str(out, s);
        }
        StateChange::TransactionState(s) => {
            out.push(SESSION_TRACK_TRANSACTION_STATE);
            write_lenenc_int(out, lenenc_str_len(s));
            write_lenenc_str(out, s);
        }
        StateChange::Unknown { kind, data } => {
            out.push(*kind);
            write_lenenc_str(out, data);
        }
    }
}

/// Appends to `out` the entries of `block` that `keep` keeps, each in the
/// form mysqld writes (one entry per system variable), and returns how many
/// it kept. A block that does not decode is an error; `out` then holds what
/// was kept before the bad entry.
pub fn filter_session_state<'a>(
    block: &'a [u8],
    out: &mut Vec<u8>,
    mut keep: impl FnMut(&StateChange<'a>) -> bool,
) -> Result<usize> {
    let mut kept = 0;
    for change in session_state_changes(block) {
        let change = change?;
        if keep(&change) {
            encode_state_change(out, &change);
            kept += 1;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    #[test]
    fn state_change_as_mysqld_writes_it() {
        // The OK after `USE mysql` on MariaDB 10.11: schema entry, then
        // the state-change entry `02 01 31`.
        let block = [1u8, 6, 5, b'm', b'y', b's', b'q', b'l', 2, 1, b'1'];
        let v: Vec<_> = session_state_changes(&block).collect();
        assert_eq!(
            v,
            vec![
                Ok(StateChange::Schema(b"mysql")),
                Ok(StateChange::StateChanged(true))
            ]
        );
        // The length-encoded form is accepted too.
        let alt = [2u8, 2, 1, b'0'];
        assert_eq!(
            session_state_changes(&alt).collect::<Vec<_>>(),
            vec![Ok(StateChange::StateChanged(false))]
        );
    }

    use super::*;

    fn collect(block: &[u8]) -> Vec<Result<StateChange<'_>>> {
        session_state_changes(block).collect()
    }

    // From https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html
    // (OK with CLIENT_SESSION_TRACK): state block 01 05 04 "test".
    #[test]
    fn schema_fixture() {
        let block = [0x01, 0x05, 0x04, b't', b'e', b's', b't'];
        assert_eq!(collect(&block), vec![Ok(StateChange::Schema(b"test"))]);
        let mut out = Vec::new();
        encode_state_change(&mut out, &StateChange::Schema(b"test"));
        assert_eq!(out, block);
    }

    // SET autocommit=0 with session_track_system_variables=autocommit and
    // session_track_state_change=ON, as mysqld writes it (one entry per
    // variable): 00 0f 0a "autocommit" 03 "OFF", 02 01 "1"
    // (Session_state_change_tracker::store writes the flag as the data).
    #[test]
    fn system_variables_and_state_change() {
        let mut block = vec![0x00, 0x0f, 0x0a];
        block.extend_from_slice(b"autocommit");
        block.push(0x03);
        block.extend_from_slice(b"OFF");
        block.extend_from_slice(&[0x02, 0x01, b'1']);
        assert_eq!(
            collect(&block),
            vec![
                Ok(StateChange::SystemVariable {
                    name: b"autocommit",
                    value: b"OFF"
                }),
                Ok(StateChange::StateChanged(true)),
            ]
        );
        let mut out = Vec::new();
        for c in collect(&block) {
            encode_state_change(&mut out, &c.unwrap());
        }
        assert_eq!(out, block);
    }

    // Several name/value pairs inside one type-0 entry are accepted too.
    #[test]
    fn several_variables_in_one_entry() {
        let mut data = Vec::new();
        write_lenenc_str(&mut data, b"time_zone");
        write_lenenc_str(&mut data, b"+00:00");
        write_lenenc_str(&mut data, b"sql_mode");
        write_lenenc_str(&mut data, b"");
        let mut block = vec![0x00];
        write_lenenc_str(&mut block, &data);
        block.extend_from_slice(&[0x01, 0x03, 0x02, b'd', b'b']);
        assert_eq!(
            collect(&block),
            vec![
                Ok(StateChange::SystemVariable {
                    name: b"time_zone",
                    value: b"+00:00"
                }),
                Ok(StateChange::SystemVariable {
                    name: b"sql_mode",
                    value: b""
                }),
                Ok(StateChange::Schema(b"db")),
            ]
        );
    }

    // Transaction state / characteristics / GTIDs per
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html
    // (session_track_transaction_info, session_track_gtids).
    #[test]
    fn transaction_and_gtids() {
        let changes = [
            StateChange::TransactionState(b"T_______"),
            StateChange::TransactionCharacteristics(b"START TRANSACTION READ ONLY;"),
            StateChange::TransactionCharacteristics(b""),
            StateChange::Gtids(b"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"),
            StateChange::StateChanged(false),
            StateChange::Unknown {
                kind: 0x42,
                data: b"\x01\x02",
            },
        ];
        let mut block = Vec::new();
        for c in &changes {
            encode_state_change(&mut block, c);
        }
        assert_eq!(block[0], SESSION_TRACK_TRANSACTION_STATE);
        assert_eq!(&block[1..3], &[0x09, 0x08]);
        let got: Vec<_> = collect(&block).into_iter().map(|c| c.unwrap()).collect();
        assert_eq!(got, changes);
    }

    // What the funnel keeps of a backend's report for a client with
    // MariaDB's default tracking (schema; five variables; no state flag).
    #[test]
    fn filter_keeps_what_the_predicate_keeps() {
        let mut block = Vec::new();
        for c in [
            StateChange::SystemVariable {
                name: b"sql_mode",
                value: b"",
            },
            StateChange::SystemVariable {
                name: b"time_zone",
                value: b"+01:00",
            },
            StateChange::Schema(b"app"),
            StateChange::StateChanged(true),
        ] {
            encode_state_change(&mut block, &c);
        }
        let mut out = Vec::new();
        let n = filter_session_state(&block, &mut out, |c| match c {
            StateChange::SystemVariable { name, .. } => *name == b"time_zone",
            StateChange::Schema(_) => true,
            _ => false,
        })
        .unwrap();
        assert_eq!(n, 2);
        let mut want = vec![0x00, 0x11, 0x09];
        want.extend_from_slice(b"time_zone");
        want.push(6);
        want.extend_from_slice(b"+01:00");
        want.extend_from_slice(&[0x01, 0x04, 0x03, b'a', b'p', b'p']);
        assert_eq!(out, want);
        out.clear();
        assert_eq!(filter_session_state(&block, &mut out, |_| false), Ok(0));
        assert!(out.is_empty());
        // Several variables in one entry come out as one entry each.
        let mut data = Vec::new();
        write_lenenc_str(&mut data, b"a");
        write_lenenc_str(&mut data, b"1");
        write_lenenc_str(&mut data, b"b");
        write_lenenc_str(&mut data, b"2");
        let mut two = vec![0x00];
        write_lenenc_str(&mut two, &data);
        out.clear();
        assert_eq!(filter_session_state(&two, &mut out, |_| true), Ok(2));
        assert_eq!(out, [0, 4, 1, b'a', 1, b'1', 0, 4, 1, b'b', 1, b'2']);
        // A broken block is an error.
        assert!(filter_session_state(&[0x01, 0x09, 0x04], &mut out, |_| true).is_err());
    }

    #[test]
    fn errors_stop_iteration() {
        // Entry length beyond the block.
        let block = [0x01, 0x09, 0x04, b't'];
        let v = collect(&block);
        assert_eq!(v.len(), 1);
        assert!(matches!(v[0], Err(ProtocolError::Truncated(_))));
        // Schema data whose inner lenenc is longer than the entry.
        let v = collect(&[0x01, 0x02, 0x05, b'x', 0x01, 0x01, 0x00]);
        assert_eq!(v.len(), 1);
        assert!(v[0].is_err());
        // Bad state-change flag.
        let v = collect(&[0x02, 0x02, 0x01, b'x']);
        assert_eq!(
            v,
            vec![Err(ProtocolError::Invalid("session state change flag"))]
        );
        // A valid entry, then a broken variable pair in an entry.
        let v = collect(&[0x02, 0x02, 0x01, b'0', 0x00, 0x02, 0x01, b'a']);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], Ok(StateChange::StateChanged(false)));
        assert!(v[1].is_err());
        // Type byte without data.
        assert!(collect(&[0x01])[0].is_err());
        assert!(collect(&[]).is_empty());
    }
}

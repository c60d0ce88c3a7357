//! The response tracker: told which command was sent, it is fed the
//! backend's packets one by one and says when the response is complete, so
//! the funnel can forward packets as they arrive and know when the backend
//! connection is free again. It reads only the few bytes that delimit the
//! response (first byte, lengths, status flags); it never copies nor
//! allocates.
//!
//! References:
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_local_infile_request.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_prepare.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_fetch.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_multi_resultset.html>
//! - <https://mariadb.com/kb/en/result-set-packets/>, <https://mariadb.com/kb/en/com_stmt_prepare/>
//!
//! Framing rules used:
//! - A result set is: column count, that many column definitions, EOF
//!   (absent under CLIENT_DEPRECATE_EOF), rows, then EOF — or, under
//!   CLIENT_DEPRECATE_EOF, an OK packet with a 0xfe header — or ERR.
//! - Without CLIENT_DEPRECATE_EOF a 0xfe packet of 9 bytes or more is a
//!   row, not an EOF. With it, any 0xfe packet shorter than a full physical
//!   packet ends the rows (a text row starts with 0xfe only when its first
//!   value is 16 MiB or longer).
//! - A physical packet of exactly `MAX_PAYLOAD_LEN` bytes is continued by
//!   the next one; continuation packets are never interpreted.
//! - A terminating OK/EOF with SERVER_MORE_RESULTS_EXISTS is followed by
//!   another result (Query mode).
//! - COM_STMT_EXECUTE that opens a cursor answers column count, column
//!   definitions and an EOF (or 0xfe OK) with SERVER_STATUS_CURSOR_EXISTS,
//!   without rows: the response ends there.
//! - ERR ends any response, except MariaDB's progress report (an ERR with
//!   code 0xFFFF, sent only to clients that asked for progress reports),
//!   which is passed over.
//!
//! Not supported (the funnel must not negotiate them with backends):
//! CLIENT_OPTIONAL_RESULTSET_METADATA (MySQL 8) and MariaDB's
//! MARIADB_CLIENT_CACHE_METADATA, which drop the column definitions.

use super::consts::*;
use super::lenenc::Reader;
use super::packet::MAX_PAYLOAD_LEN;
use super::response::{decode_column_count, decode_eof, decode_stmt_prepare_ok, ok_status};
use super::response::{StmtPrepareOk, EOF_MAX_LEN};
use super::{ProtocolError, Result};

/// What kind of response a command gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO (and MariaDB's
    /// COM_STMT_BULK_EXECUTE): OK | ERR | LOCAL INFILE request | one or more
    /// result sets (multi-results via SERVER_MORE_RESULTS_EXISTS on OK or
    /// final EOF)
    Query,
    /// COM_STMT_PREPARE: prepare-OK then num_params column defs (+EOF unless
    /// DEPRECATE_EOF, only if num_params > 0) then num_columns column defs
    /// (+EOF likewise), or ERR
    Prepare,
    /// COM_FIELD_LIST: column defs until EOF (or OK-with-0xfe under
    /// DEPRECATE_EOF) or ERR
    FieldList,
    /// COM_STATISTICS: one packet of text
    Statistics,
    /// COM_STMT_FETCH: binary rows until EOF/ERR
    Fetch,
    /// OK or ERR or EOF (COM_SET_OPTION answers EOF in MySQL): COM_PING,
    /// COM_INIT_DB, COM_RESET_CONNECTION, COM_STMT_RESET, COM_REFRESH,
    /// COM_DEBUG, COM_SHUTDOWN, COM_CREATE_DB, COM_DROP_DB, COM_PROCESS_KILL;
    /// also the obsolete commands mysqld answers with an ERR. Note that
    /// COM_CHANGE_USER starts an authentication exchange that this tracker
    /// does not follow.
    Simple,
    /// no response: COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT
    None,
}

/// The response a command byte gets.
pub fn expect_for(cmd_byte: u8) -> Expect {
    match cmd_byte {
        COM_QUERY | COM_STMT_EXECUTE | COM_PROCESS_INFO | COM_STMT_BULK_EXECUTE => Expect::Query,
        COM_STMT_PREPARE => Expect::Prepare,
        COM_FIELD_LIST => Expect::FieldList,
        COM_STATISTICS => Expect::Statistics,
        COM_STMT_FETCH => Expect::Fetch,
        COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA | COM_QUIT => Expect::None,
        _ => Expect::Simple,
    }
}

/// The response a decoded command gets.
pub fn expect_for_command(cmd: &super::command::Command<'_>) -> Expect {
    expect_for(cmd.byte())
}

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// An OK packet (also the 0xfe-headed OK that ends rows under
    /// CLIENT_DEPRECATE_EOF), or a successful COM_STMT_PREPARE answer
    /// whatever its last packet (EOF or column definition).
    Ok,
    Err,
    /// An EOF packet (rows' end without CLIENT_DEPRECATE_EOF, a cursor
    /// opened by COM_STMT_EXECUTE, COM_FIELD_LIST, COM_SET_OPTION).
    Eof,
    /// Neither: the COM_STATISTICS text.
    Other,
}

/// What the last packet given to [`ResponseTracker::feed`] was, so the
/// caller can look into the ones it cares about (decode an OK's session
/// state, collect rows of its own queries) without classifying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// Nothing fed since `start()`, or the last feed failed.
    None,
    /// An OK packet, header 0x00 or (under CLIENT_DEPRECATE_EOF, ending
    /// rows or answering COM_SET_OPTION/COM_FIELD_LIST) 0xfe: decode it with
    /// `response::decode_ok`.
    Ok,
    Err,
    /// An EOF packet that ends rows, a response (COM_FIELD_LIST,
    /// COM_SET_OPTION) or, with SERVER_STATUS_CURSOR_EXISTS, the column
    /// definitions of a COM_STMT_EXECUTE that opened a cursor: what a client
    /// with CLIENT_DEPRECATE_EOF gets as an OK packet with a 0xfe header
    /// (`response::decode_eof`).
    Eof,
    /// An EOF packet that only closes a block of column or parameter
    /// definitions, and that CLIENT_DEPRECATE_EOF leaves out
    /// (`response::decode_eof`).
    MetadataEof,
    /// LOCAL INFILE request (0xfb + file name).
    LocalInfile,
    /// First packet of a result set.
    ColumnCount,
    /// Column (or prepared-statement parameter) definition.
    ColumnDef,
    /// A text or binary row (its first physical packet, if continued).
    Row,
    /// COM_STMT_PREPARE_OK.
    PrepareOk,
    /// The text answer of COM_STATISTICS.
    Text,
    /// MariaDB progress report (ERR with code 0xFFFF), not an error.
    ProgressReport,
    /// Second or later physical packet of a logical packet of 16 MiB or more.
    Continuation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// more packets belong to this response
    NeedMore,
    /// the response is complete; status is the final server status flags
    /// (for ERR: the last status seen before it, or 0 if none)
    Complete { status: u16, end: EndKind },
    /// the backend sent a LOCAL INFILE request (0xfb): the client must now
    /// send the file; after the client's empty packet, the tracker expects
    /// the OK/ERR (call `infile_sent()` then keep feeding)
    LocalInfile,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Query: first packet of a result.
    ResultStart,
    /// Query: column definitions still to come.
    Columns {
        left: u64,
    },
    /// Query: the EOF after the column definitions.
    ColumnsEof,
    /// Query or Fetch: rows until the terminator.
    Rows,
    /// Waiting for `infile_sent()`.
    InfileUpload,
    PrepareStart,
    PrepareParams {
        left: u16,
        columns: u16,
    },
    PrepareParamsEof {
        columns: u16,
    },
    PrepareColumns {
        left: u16,
    },
    PrepareColumnsEof,
    FieldList,
    Statistics,
    Simple,
}

/// Follows one backend connection's responses. Small and `Copy`; no heap.
#[derive(Clone, Copy, Debug)]
pub struct ResponseTracker {
    capabilities: u32,
    expect: Expect,
    state: State,
    /// Last status flags seen on this connection.
    status: u16,
    cursor: bool,
    /// The previous physical packet was full: the next one continues it.
    continued: bool,
    /// Outcome of a full packet, reported once its continuation is in.
    pending: Option<Progress>,
    prepared: Option<StmtPrepareOk>,
    last: PacketKind,
}

impl ResponseTracker {
    /// `capabilities`: those negotiated on the backend connection
    /// (CLIENT_DEPRECATE_EOF changes the framing).
    pub fn new(capabilities: u32) -> Self {
        ResponseTracker {
            capabilities,
            expect: Expect::None,
            state: State::Idle,
            status: 0,
            cursor: false,
            continued: false,
            pending: None,
            prepared: None,
            last: PacketKind::None,
        }
    }

    /// Starts following the response to a command just sent. Any response
    /// in progress is forgotten. `Expect::None` leaves the tracker idle.
    pub fn start(&mut self, expect: Expect) {
        self.expect = expect;
        self.continued = false;
        self.pending = None;
        self.prepared = None;
        self.cursor = false;
        self.last = PacketKind::None;
        self.state = match expect {
            Expect::Query => State::ResultStart,
            Expect::Prepare => State::PrepareStart,
            Expect::FieldList => State::FieldList,
            Expect::Statistics => State::Statistics,
            Expect::Fetch => State::Rows,
            Expect::Simple => State::Simple,
            Expect::None => State::Idle,
        };
    }

    /// Feeds one physical packet's payload (header stripped). After an
    /// `Err` the tracker is idle; the connection should be dropped.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Progress> {
        if self.continued {
            self.last = PacketKind::Continuation;
            self.continued = payload.len() >= MAX_PAYLOAD_LEN;
            if !self.continued {
                if let Some(p) = self.pending.take() {
                    return Ok(p);
                }
            }
            return Ok(Progress::NeedMore);
        }
        let full = payload.len() >= MAX_PAYLOAD_LEN;
        let progress = match self.step(payload, full) {
            Ok(p) => p,
            Err(e) => {
                self.state = State::Idle;
                self.last = PacketKind::None;
                return Err(e);
            }
        };
        if full {
            self.continued = true;
            if progress != Progress::NeedMore {
                self.pending = Some(progress);
                return Ok(Progress::NeedMore);
            }
        }
        Ok(progress)
    }

    /// The client has sent the LOCAL INFILE data (ending with its empty
    /// packet): the server's OK/ERR comes next.
    pub fn infile_sent(&mut self) {
        if self.state == State::InfileUpload {
            self.state = State::ResultStart;
        }
    }

    /// No response in progress.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle && !self.continued
    }

    /// Last status flags seen (OK/EOF) on this connection.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The current (or just completed) response left a cursor open on the
    /// backend: its last status had SERVER_STATUS_CURSOR_EXISTS and not
    /// SERVER_STATUS_LAST_ROW_SENT (which mysqld adds on the COM_STMT_FETCH
    /// that exhausts and closes the cursor). Reset by `start()`.
    pub fn cursor_opened(&self) -> bool {
        self.cursor
    }

    /// What the last fed packet was.
    pub fn last_kind(&self) -> PacketKind {
        self.last
    }

    /// The COM_STMT_PREPARE_OK of the current (or just completed) prepare
    /// response, if any.
    pub fn prepared(&self) -> Option<StmtPrepareOk> {
        self.prepared
    }

    fn deprecate_eof(&self) -> bool {
        self.capabilities & CLIENT_DEPRECATE_EOF != 0
    }

    fn saw_status(&mut self, status: u16) {
        self.status = status;
        self.cursor =
            status & SERVER_STATUS_CURSOR_EXISTS != 0 && status & SERVER_STATUS_LAST_ROW_SENT == 0;
    }

    fn complete(&mut self, end: EndKind) -> Progress {
        self.state = State::Idle;
        Progress::Complete {
            status: self.status,
            end,
        }
    }

    /// End of one result (OK, or the rows' terminator): another follows if
    /// SERVER_MORE_RESULTS_EXISTS is set (Query mode).
    fn end_result(&mut self, status: u16, end: EndKind) -> Progress {
        self.saw_status(status);
        if status & SERVER_MORE_RESULTS_EXISTS != 0 && self.expect == Expect::Query {
            self.state = State::ResultStart;
            Progress::NeedMore
        } else {
            self.complete(end)
        }
    }

    /// Status and kind of a 0xfe terminator: an OK packet under
    /// CLIENT_DEPRECATE_EOF, an EOF packet otherwise.
    fn terminator(&mut self, p: &[u8]) -> Result<(u16, EndKind)> {
        if self.deprecate_eof() {
            let status = ok_status(p)?;
            self.last = PacketKind::Ok;
            Ok((status, EndKind::Ok))
        } else {
            let status = decode_eof(p)?.status;
            self.last = PacketKind::Eof;
            Ok((status, EndKind::Eof))
        }
    }

    /// True if `p` (not a full packet) ends a row or column-definition
    /// sequence.
    fn is_terminator(&self, p: &[u8]) -> bool {
        p.first() == Some(&EOF_HEADER) && (self.deprecate_eof() || p.len() < EOF_MAX_LEN)
    }

    /// The EOF that follows column definitions (never under DEPRECATE_EOF).
    fn metadata_eof(&mut self, p: &[u8]) -> Result<u16> {
        if p.first() != Some(&EOF_HEADER) || p.len() >= EOF_MAX_LEN {
            return Err(ProtocolError::Invalid(
                "expected EOF after column definitions",
            ));
        }
        let status = decode_eof(p)?.status;
        self.last = PacketKind::MetadataEof;
        self.saw_status(status);
        Ok(status)
    }

    fn step(&mut self, p: &[u8], full: bool) -> Result<Progress> {
        let Some(&first) = p.first() else {
            return match self.state {
                State::Idle => Err(ProtocolError::Invalid(
                    "packet while no response is expected",
                )),
                _ => Err(ProtocolError::Invalid("empty packet in a response")),
            };
        };
        let is_err = first == ERR_HEADER && !full;
        match self.state {
            State::Idle => {
                return Err(ProtocolError::Invalid(
                    "packet while no response is expected",
                ))
            }
            State::InfileUpload => {
                return Err(ProtocolError::Invalid(
                    "server packet during LOCAL INFILE upload",
                ))
            }
            _ if is_err => {
                if is_progress_report(p) {
                    self.last = PacketKind::ProgressReport;
                    return Ok(Progress::NeedMore);
                }
                self.last = PacketKind::Err;
                return Ok(self.complete(EndKind::Err));
            }
            _ => {}
        }
        match self.state {
            State::Idle | State::InfileUpload => Err(ProtocolError::Invalid(
                "packet while no response is expected",
            )),

            State::ResultStart => match first {
                OK_HEADER => {
                    self.last = PacketKind::Ok;
                    Ok(self.end_result(ok_status(p)?, EndKind::Ok))
                }
                LOCAL_INFILE_HEADER => {
                    self.last = PacketKind::LocalInfile;
                    self.state = State::InfileUpload;
                    Ok(Progress::LocalInfile)
                }
                EOF_HEADER if !full && self.is_terminator(p) => {
                    // Not sent by mysqld here, but unambiguous.
                    let (status, end) = self.terminator(p)?;
                    Ok(self.end_result(status, end))
                }
                _ => {
                    let n = decode_column_count(p)?;
                    self.last = PacketKind::ColumnCount;
                    self.state = State::Columns { left: n };
                    Ok(Progress::NeedMore)
                }
            },
            State::Columns { left } => {
                if !full && p.len() < EOF_MAX_LEN && first == EOF_HEADER {
                    return Err(ProtocolError::Invalid("EOF among column definitions"));
                }
                self.last = PacketKind::ColumnDef;
                let left = left.saturating_sub(1);
                self.state = if left > 0 {
                    State::Columns { left }
                } else if self.deprecate_eof() {
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                Ok(Progress::NeedMore)
            }
            State::ColumnsEof => {
                let status = self.metadata_eof(p)?;
                if status & SERVER_STATUS_CURSOR_EXISTS != 0 {
                    // No rows follow: this EOF ends the response.
                    self.last = PacketKind::Eof;
                    Ok(self.complete(EndKind::Eof))
                } else {
                    self.state = State::Rows;
                    Ok(Progress::NeedMore)
                }
            }
            State::Rows => {
                if !full && self.is_terminator(p) {
                    let (status, end) = self.terminator(p)?;
                    Ok(self.end_result(status, end))
                } else {
                    self.last = PacketKind::Row;
                    Ok(Progress::NeedMore)
                }
            }

            State::PrepareStart => {
                let ok = match first {
                    OK_HEADER => decode_stmt_prepare_ok(p)?,
                    _ => return Err(ProtocolError::Invalid("expected COM_STMT_PREPARE_OK")),
                };
                self.last = PacketKind::PrepareOk;
                self.prepared = Some(ok);
                if ok.num_params > 0 {
                    self.state = State::PrepareParams {
                        left: ok.num_params,
                        columns: ok.num_columns,
                    };
                    Ok(Progress::NeedMore)
                } else {
                    Ok(self.prepare_columns(ok.num_columns))
                }
            }
            State::PrepareParams { left, columns } => {
                self.last = PacketKind::ColumnDef;
                let left = left.saturating_sub(1);
                if left > 0 {
                    self.state = State::PrepareParams { left, columns };
                    Ok(Progress::NeedMore)
                } else if self.deprecate_eof() {
                    Ok(self.prepare_columns(columns))
                } else {
                    self.state = State::PrepareParamsEof { columns };
                    Ok(Progress::NeedMore)
                }
            }
            State::PrepareParamsEof { columns } => {
                self.metadata_eof(p)?;
                Ok(self.prepare_columns(columns))
            }
            State::PrepareColumns { left } => {
                self.last = PacketKind::ColumnDef;
                let left = left.saturating_sub(1);
                if left > 0 {
                    self.state = State::PrepareColumns { left };
                    Ok(Progress::NeedMore)
                } else if self.deprecate_eof() {
                    Ok(self.complete(EndKind::Ok))
                } else {
                    self.state = State::PrepareColumnsEof;
                    Ok(Progress::NeedMore)
                }
            }
            State::PrepareColumnsEof => {
                self.metadata_eof(p)?;
                Ok(self.complete(EndKind::Ok))
            }

            State::FieldList => {
                if !full && self.is_terminator(p) {
                    let (status, end) = self.terminator(p)?;
                    self.saw_status(status);
                    Ok(self.complete(end))
                } else {
                    self.last = PacketKind::ColumnDef;
                    Ok(Progress::NeedMore)
                }
            }
            State::Statistics => {
                self.last = PacketKind::Text;
                Ok(self.complete(EndKind::Other))
            }
            State::Simple => match first {
                OK_HEADER => {
                    self.last = PacketKind::Ok;
                    self.saw_status(ok_status(p)?);
                    Ok(self.complete(EndKind::Ok))
                }
                EOF_HEADER if !full => {
                    let (status, end) = self.terminator(p)?;
                    self.saw_status(status);
                    Ok(self.complete(end))
                }
                _ => Err(ProtocolError::Invalid("expected OK, ERR or EOF")),
            },
        }
    }

    /// After the parameter definitions (or their EOF): the column
    /// definitions if any, else the (successful) prepare response is
    /// complete.
    fn prepare_columns(&mut self, columns: u16) -> Progress {
        if columns > 0 {
            self.state = State::PrepareColumns { left: columns };
            Progress::NeedMore
        } else {
            self.complete(EndKind::Ok)
        }
    }
}

/// MariaDB's progress report: an ERR packet with error code 0xFFFF.
/// <https://mariadb.com/kb/en/progress-reporting/>
fn is_progress_report(p: &[u8]) -> bool {
    let mut r = Reader::new(p);
    r.skip(1).is_ok() && r.u16() == Ok(0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::{
        encode_column_def, encode_eof, encode_err, encode_ok, OkPacket,
    };

    const CAPS: u32 = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_RESULTS;
    const CAPS_DEP: u32 = CAPS | CLIENT_DEPRECATE_EOF;
    const AUTOCOMMIT: u16 = SERVER_STATUS_AUTOCOMMIT;

    fn ok(header: u8, status: u16) -> Vec<u8> {
        let mut out = Vec::new();
        encode_ok(
            &mut out,
            &OkPacket {
                header,
                affected_rows: 1,
                last_insert_id: 0,
                status,
                warnings: 0,
                info: b"",
                session_state: None,
            },
            CAPS,
        );
        out
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut out = Vec::new();
        encode_eof(&mut out, 0, status);
        out
    }

    fn err() -> Vec<u8> {
        let mut out = Vec::new();
        encode_err(&mut out, 1146, "42S02", "Table 'test.nope' doesn't exist");
        out
    }

    fn coldef(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_column_def(&mut out, name, 0xfd, 45, 80, 0, 0);
        out
    }

    /// Feeds all packets; every one but the last must give NeedMore.
    fn run(t: &mut ResponseTracker, packets: &[Vec<u8>]) -> Progress {
        let (last, init) = packets.split_last().unwrap();
        for (i, p) in init.iter().enumerate() {
            assert_eq!(t.feed(p), Ok(Progress::NeedMore), "packet {i}: {p:02x?}");
            assert!(!t.is_idle());
        }
        t.feed(last).unwrap()
    }

    fn complete(status: u16, end: EndKind) -> Progress {
        Progress::Complete { status, end }
    }

    /// Column count, column defs, EOF unless DEPRECATE_EOF.
    fn result_head(n: usize, deprecate: bool, eof_status: u16) -> Vec<Vec<u8>> {
        let mut v = vec![vec![n as u8]];
        for i in 0..n {
            v.push(coldef(&format!("c{i}")));
        }
        if !deprecate {
            v.push(eof(eof_status));
        }
        v
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response.html
    #[test]
    fn query_ok_and_err() {
        let mut t = ResponseTracker::new(CAPS);
        assert!(t.is_idle());
        t.start(expect_for(COM_QUERY));
        assert!(!t.is_idle());
        assert_eq!(
            t.feed(&ok(0, AUTOCOMMIT)),
            Ok(complete(AUTOCOMMIT, EndKind::Ok))
        );
        assert!(t.is_idle());
        assert_eq!(t.status(), AUTOCOMMIT);

        t.start(Expect::Query);
        // ERR keeps the last status seen.
        assert_eq!(t.feed(&err()), Ok(complete(AUTOCOMMIT, EndKind::Err)));
        assert!(t.is_idle());

        let mut fresh = ResponseTracker::new(CAPS);
        fresh.start(Expect::Query);
        assert_eq!(fresh.feed(&err()), Ok(complete(0, EndKind::Err)));
    }

    // Text resultset, https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset.html
    #[test]
    fn result_set_with_eof() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Query);
        let mut pk = result_head(2, false, AUTOCOMMIT);
        pk.push(b"\x011\x01a".to_vec());
        pk.push(b"\x012\xfb".to_vec());
        pk.push(eof(AUTOCOMMIT | SERVER_STATUS_IN_TRANS));
        assert_eq!(
            run(&mut t, &pk),
            complete(AUTOCOMMIT | SERVER_STATUS_IN_TRANS, EndKind::Eof)
        );
        assert!(t.is_idle());
        assert!(!t.cursor_opened());
    }

    // CLIENT_DEPRECATE_EOF: no EOF after the column definitions, rows end
    // with an OK packet with a 0xfe header.
    #[test]
    fn result_set_deprecate_eof() {
        let mut t = ResponseTracker::new(CAPS_DEP);
        t.start(Expect::Query);
        let mut pk = result_head(1, true, 0);
        pk.push(b"\x03abc".to_vec());
        pk.push(ok(0xfe, AUTOCOMMIT));
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
        // The 0xfe OK may carry info/session state and be 9+ bytes long.
        t.start(Expect::Query);
        let mut long_ok = Vec::new();
        encode_ok(
            &mut long_ok,
            &OkPacket {
                header: 0xfe,
                affected_rows: 0,
                last_insert_id: 0,
                status: AUTOCOMMIT,
                warnings: 0,
                info: b"some info text",
                session_state: None,
            },
            CAPS,
        );
        let mut pk = result_head(1, true, 0);
        pk.push(long_ok);
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
    }

    #[test]
    fn empty_result_set() {
        for caps in [CAPS, CAPS_DEP] {
            let dep = caps == CAPS_DEP;
            let mut t = ResponseTracker::new(caps);
            t.start(Expect::Query);
            let mut pk = result_head(3, dep, AUTOCOMMIT);
            pk.push(if dep {
                ok(0xfe, AUTOCOMMIT)
            } else {
                eof(AUTOCOMMIT)
            });
            let end = if dep { EndKind::Ok } else { EndKind::Eof };
            assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, end));
        }
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_multi_resultset.html
    #[test]
    fn multi_results() {
        for caps in [CAPS, CAPS_DEP] {
            let dep = caps == CAPS_DEP;
            let more = AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS;
            let term = |s| if dep { ok(0xfe, s) } else { eof(s) };
            let mut t = ResponseTracker::new(caps);
            t.start(Expect::Query);
            let mut pk = result_head(1, dep, AUTOCOMMIT);
            pk.push(b"\x011".to_vec());
            pk.push(term(more));
            pk.extend(result_head(2, dep, more));
            pk.push(b"\x012\x013".to_vec());
            pk.push(term(more));
            pk.push(ok(0, AUTOCOMMIT));
            assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
            // OK, OK: two statements without result sets.
            t.start(Expect::Query);
            assert_eq!(
                run(&mut t, &[ok(0, more), ok(0, AUTOCOMMIT)]),
                complete(AUTOCOMMIT, EndKind::Ok)
            );
            // An ERR in the second statement ends it.
            t.start(Expect::Query);
            assert_eq!(
                run(&mut t, &[ok(0, more), err()]),
                complete(more, EndKind::Err)
            );
        }
    }

    #[test]
    fn row_starting_with_fe() {
        // Without DEPRECATE_EOF a 0xfe packet of 9+ bytes is a row.
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Query);
        let mut pk = result_head(1, false, AUTOCOMMIT);
        pk.push(vec![0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        pk.push(vec![0xfe; 9]);
        pk.push(eof(AUTOCOMMIT));
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Eof));
    }

    // A row of 16 MiB or more arrives as a full packet plus continuation
    // (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html).
    // Its first value's lenenc length starts with 0xfe, and the tail happens
    // to look like an EOF: neither may be taken for a terminator.
    #[test]
    fn huge_row_split_in_two_packets() {
        for caps in [CAPS, CAPS_DEP] {
            let dep = caps == CAPS_DEP;
            let mut t = ResponseTracker::new(caps);
            t.start(Expect::Query);
            for p in result_head(1, dep, AUTOCOMMIT) {
                assert_eq!(t.feed(&p), Ok(Progress::NeedMore));
            }
            let mut big = vec![0x41u8; MAX_PAYLOAD_LEN];
            big[..9].copy_from_slice(&[0xfe, 0x04, 0, 0, 0x01, 0, 0, 0, 0]);
            assert_eq!(t.feed(&big), Ok(Progress::NeedMore));
            assert_eq!(t.feed(&eof(AUTOCOMMIT)), Ok(Progress::NeedMore));
            // A second huge row whose continuation is exactly full, then empty.
            assert_eq!(t.feed(&big), Ok(Progress::NeedMore));
            assert_eq!(t.feed(&big), Ok(Progress::NeedMore));
            assert_eq!(t.feed(&[]), Ok(Progress::NeedMore));
            let term = if dep {
                ok(0xfe, AUTOCOMMIT)
            } else {
                eof(AUTOCOMMIT)
            };
            let end = if dep { EndKind::Ok } else { EndKind::Eof };
            assert_eq!(t.feed(&term), Ok(complete(AUTOCOMMIT, end)));
        }
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_local_infile_request.html
    #[test]
    fn local_infile() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Query);
        assert_eq!(t.feed(b"\xfb/tmp/data.csv"), Ok(Progress::LocalInfile));
        assert!(!t.is_idle());
        // The server does not speak until the client has sent the file.
        assert!(t.feed(&ok(0, AUTOCOMMIT)).is_err());
        t.start(Expect::Query);
        assert_eq!(t.feed(b"\xfb/tmp/data.csv"), Ok(Progress::LocalInfile));
        t.infile_sent();
        assert_eq!(
            t.feed(&ok(0, AUTOCOMMIT)),
            Ok(complete(AUTOCOMMIT, EndKind::Ok))
        );
        // ERR after the upload.
        t.start(Expect::Query);
        assert_eq!(t.feed(b"\xfbf"), Ok(Progress::LocalInfile));
        t.infile_sent();
        assert_eq!(t.feed(&err()), Ok(complete(AUTOCOMMIT, EndKind::Err)));
        // infile_sent() at any other time does nothing.
        t.infile_sent();
        assert!(t.is_idle());
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_prepare.html
    fn prepare_ok(columns: u16, params: u16) -> Vec<u8> {
        let mut out = Vec::new();
        StmtPrepareOk {
            statement_id: 7,
            num_columns: columns,
            num_params: params,
            warnings: 0,
        }
        .encode(&mut out);
        out
    }

    #[test]
    fn prepare_with_params_and_columns() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(expect_for(COM_STMT_PREPARE));
        let pk = vec![
            prepare_ok(1, 2),
            coldef("?"),
            coldef("?"),
            eof(AUTOCOMMIT),
            coldef("a"),
            eof(AUTOCOMMIT),
        ];
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
        assert_eq!(t.prepared().unwrap().statement_id, 7);

        let mut t = ResponseTracker::new(CAPS_DEP);
        t.start(Expect::Prepare);
        let pk = vec![prepare_ok(1, 2), coldef("?"), coldef("?"), coldef("a")];
        assert_eq!(run(&mut t, &pk), complete(0, EndKind::Ok));
        t.start(Expect::Prepare);
        let pk = vec![prepare_ok(0, 1), coldef("?")];
        assert_eq!(run(&mut t, &pk), complete(0, EndKind::Ok));
    }

    #[test]
    fn prepare_without_params() {
        // 0 params, 2 columns.
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Prepare);
        let pk = vec![prepare_ok(2, 0), coldef("a"), coldef("b"), eof(AUTOCOMMIT)];
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
        // 0 params, 0 columns (e.g. an INSERT without placeholders).
        t.start(Expect::Prepare);
        assert_eq!(
            t.feed(&prepare_ok(0, 0)),
            Ok(complete(AUTOCOMMIT, EndKind::Ok))
        );
        // 1 param, 0 columns.
        t.start(Expect::Prepare);
        let pk = vec![prepare_ok(0, 1), coldef("?"), eof(AUTOCOMMIT)];
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
        // ERR.
        t.start(Expect::Prepare);
        assert_eq!(t.feed(&err()), Ok(complete(AUTOCOMMIT, EndKind::Err)));
        assert_eq!(t.prepared(), None);
    }

    // COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY
    // (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html,
    // https://mariadb.com/kb/en/com_stmt_execute/#cursors): column count, column
    // definitions, EOF with SERVER_STATUS_CURSOR_EXISTS, no rows. Then
    // COM_STMT_FETCH (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_fetch.html)
    // returns binary rows and an EOF.
    #[test]
    fn cursor_execute_then_fetch() {
        let cursor = AUTOCOMMIT | SERVER_STATUS_CURSOR_EXISTS;
        for caps in [CAPS, CAPS_DEP] {
            let dep = caps == CAPS_DEP;
            let term = |s| if dep { ok(0xfe, s) } else { eof(s) };
            let end = if dep { EndKind::Ok } else { EndKind::Eof };
            let mut t = ResponseTracker::new(caps);
            t.start(expect_for(COM_STMT_EXECUTE));
            let mut pk = result_head(1, true, 0);
            pk.push(term(cursor));
            assert_eq!(run(&mut t, &pk), complete(cursor, end));
            assert!(t.cursor_opened());

            t.start(expect_for(COM_STMT_FETCH));
            let rows = vec![
                vec![0x00, 0x00, 1, 0, 0, 0],
                vec![0x00, 0x00, 2, 0, 0, 0],
                term(cursor),
            ];
            assert_eq!(run(&mut t, &rows), complete(cursor, end));
            assert!(t.cursor_opened());

            t.start(Expect::Fetch);
            let last = cursor | SERVER_STATUS_LAST_ROW_SENT;
            let rows = vec![vec![0x00, 0x00, 3, 0, 0, 0], term(last)];
            assert_eq!(run(&mut t, &rows), complete(last, end));
            assert!(!t.cursor_opened());

            // A fetch terminator never chains another result.
            t.start(Expect::Fetch);
            let weird = AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS;
            assert_eq!(t.feed(&term(weird)), Ok(complete(weird, end)));

            t.start(Expect::Fetch);
            assert_eq!(t.feed(&err()), Ok(complete(weird, EndKind::Err)));
        }
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_field_list.html
    #[test]
    fn field_list() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(expect_for(COM_FIELD_LIST));
        let pk = vec![coldef("a"), coldef("b"), eof(AUTOCOMMIT)];
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Eof));
        t.start(Expect::FieldList);
        assert_eq!(t.feed(&err()), Ok(complete(AUTOCOMMIT, EndKind::Err)));

        let mut t = ResponseTracker::new(CAPS_DEP);
        t.start(Expect::FieldList);
        let pk = vec![coldef("a"), ok(0xfe, AUTOCOMMIT)];
        assert_eq!(run(&mut t, &pk), complete(AUTOCOMMIT, EndKind::Ok));
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_statistics.html
    #[test]
    fn statistics() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(expect_for(COM_STATISTICS));
        assert_eq!(
            t.feed(b"Uptime: 5  Threads: 1  Questions: 2  Slow queries: 0  Opens: 16"),
            Ok(complete(0, EndKind::Other))
        );
        assert!(t.is_idle());
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_set_option.html
    // mysqld answers EOF (an OK with a 0xfe header under DEPRECATE_EOF).
    #[test]
    fn set_option_and_simple() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(expect_for(COM_SET_OPTION));
        assert_eq!(
            t.feed(&eof(AUTOCOMMIT)),
            Ok(complete(AUTOCOMMIT, EndKind::Eof))
        );
        let mut t = ResponseTracker::new(CAPS_DEP);
        t.start(expect_for(COM_SET_OPTION));
        assert_eq!(
            t.feed(&ok(0xfe, AUTOCOMMIT)),
            Ok(complete(AUTOCOMMIT, EndKind::Ok))
        );

        for cmd in [
            COM_PING,
            COM_INIT_DB,
            COM_RESET_CONNECTION,
            COM_STMT_RESET,
            COM_PROCESS_KILL,
        ] {
            t.start(expect_for(cmd));
            assert_eq!(expect_for(cmd), Expect::Simple);
            assert_eq!(t.feed(&ok(0, 0)), Ok(complete(0, EndKind::Ok)));
        }
        t.start(Expect::Simple);
        assert!(matches!(
            t.feed(&[0x05, 1, 2]),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(t.is_idle());
    }

    #[test]
    fn no_response_and_idle() {
        let mut t = ResponseTracker::new(CAPS);
        for cmd in [COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT] {
            assert_eq!(expect_for(cmd), Expect::None);
            t.start(expect_for(cmd));
            assert!(t.is_idle());
        }
        assert!(matches!(t.feed(&ok(0, 0)), Err(ProtocolError::Invalid(_))));
        assert!(matches!(t.feed(&[]), Err(ProtocolError::Invalid(_))));
        assert_eq!(expect_for(COM_PROCESS_INFO), Expect::Query);
        assert_eq!(expect_for(COM_STMT_BULK_EXECUTE), Expect::Query);
        let cmd = crate::protocol::command::decode_command(b"\x03SELECT 1").unwrap();
        assert_eq!(expect_for_command(&cmd), Expect::Query);
    }

    #[test]
    fn malformed() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Query);
        assert!(matches!(t.feed(&[]), Err(ProtocolError::Invalid(_))));
        assert!(t.is_idle());
        // Column count 0 / NULL.
        t.start(Expect::Query);
        assert!(t.feed(&[0xfb, 0]).is_ok()); // 0xfb is LOCAL INFILE
        t.start(Expect::Query);
        assert!(matches!(
            t.feed(&[0xfc, 0]),
            Err(ProtocolError::Truncated(_))
        ));
        // EOF where a column definition should be.
        t.start(Expect::Query);
        assert_eq!(t.feed(&[2]), Ok(Progress::NeedMore));
        assert!(matches!(t.feed(&eof(0)), Err(ProtocolError::Invalid(_))));
        // A row where the metadata EOF should be.
        t.start(Expect::Query);
        assert_eq!(t.feed(&[1]), Ok(Progress::NeedMore));
        assert_eq!(t.feed(&coldef("a")), Ok(Progress::NeedMore));
        assert!(matches!(t.feed(b"\x01x"), Err(ProtocolError::Invalid(_))));
        // Truncated OK.
        t.start(Expect::Query);
        assert!(matches!(
            t.feed(&[0x00, 0x00]),
            Err(ProtocolError::Truncated(_))
        ));
        // Prepare answered by something else.
        t.start(Expect::Prepare);
        assert!(matches!(t.feed(&[0x01]), Err(ProtocolError::Invalid(_))));
    }

    // https://mariadb.com/kb/en/progress-reporting/
    #[test]
    fn mariadb_progress_report_is_skipped() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Query);
        let progress = [0xff, 0xff, 0xff, 0x01, 0x01, 0x02, 0x10, 0x27, 0x00, 0x00];
        assert_eq!(t.feed(&progress), Ok(Progress::NeedMore));
        assert_eq!(
            t.feed(&ok(0, AUTOCOMMIT)),
            Ok(complete(AUTOCOMMIT, EndKind::Ok))
        );
    }

    #[test]
    fn restart_forgets_previous_response() {
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Query);
        assert_eq!(t.feed(&[3]), Ok(Progress::NeedMore));
        t.start(Expect::Simple);
        assert_eq!(t.feed(&ok(0, 0)), Ok(complete(0, EndKind::Ok)));
    }

    #[test]
    fn last_kind_classifies_packets() {
        for caps in [CAPS, CAPS_DEP] {
            let dep = caps == CAPS_DEP;
            let mut t = ResponseTracker::new(caps);
            t.start(Expect::Query);
            assert_eq!(t.last_kind(), PacketKind::None);
            let mut kinds = vec![];
            let mut pk = result_head(1, dep, AUTOCOMMIT);
            pk.push(b"\x011".to_vec());
            pk.push(if dep {
                ok(0xfe, AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS)
            } else {
                eof(AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS)
            });
            pk.push(ok(0, AUTOCOMMIT));
            for p in &pk {
                t.feed(p).unwrap();
                kinds.push(t.last_kind());
            }
            let mut want = vec![PacketKind::ColumnCount, PacketKind::ColumnDef];
            if !dep {
                want.push(PacketKind::MetadataEof);
            }
            want.push(PacketKind::Row);
            want.push(if dep { PacketKind::Ok } else { PacketKind::Eof });
            want.push(PacketKind::Ok);
            assert_eq!(kinds, want);
        }
        let mut t = ResponseTracker::new(CAPS);
        t.start(Expect::Prepare);
        t.feed(&prepare_ok(0, 1)).unwrap();
        assert_eq!(t.last_kind(), PacketKind::PrepareOk);
        t.feed(&coldef("?")).unwrap();
        assert_eq!(t.last_kind(), PacketKind::ColumnDef);
        t.feed(&eof(0)).unwrap();
        assert_eq!(t.last_kind(), PacketKind::MetadataEof);
        // The EOF after the column definitions of an execute that opened a
        // cursor ends the response: a terminator, not metadata.
        t.start(Expect::Query);
        t.feed(&[1]).unwrap();
        t.feed(&coldef("a")).unwrap();
        t.feed(&eof(SERVER_STATUS_CURSOR_EXISTS)).unwrap();
        assert_eq!(t.last_kind(), PacketKind::Eof);
        t.start(Expect::FieldList);
        t.feed(&coldef("a")).unwrap();
        t.feed(&eof(0)).unwrap();
        assert_eq!(t.last_kind(), PacketKind::Eof);
        t.start(Expect::Query);
        t.feed(&err()).unwrap();
        assert_eq!(t.last_kind(), PacketKind::Err);
        t.start(Expect::Query);
        t.feed(b"\xfbx").unwrap();
        assert_eq!(t.last_kind(), PacketKind::LocalInfile);
        t.start(Expect::Statistics);
        t.feed(b"Uptime: 1").unwrap();
        assert_eq!(t.last_kind(), PacketKind::Text);
        t.start(Expect::Simple);
        assert!(t.feed(&[0x07]).is_err());
        assert_eq!(t.last_kind(), PacketKind::None);
        // Continuation of a huge row.
        t.start(Expect::Fetch);
        t.feed(&vec![0u8; MAX_PAYLOAD_LEN]).unwrap();
        assert_eq!(t.last_kind(), PacketKind::Row);
        t.feed(&[0xfe, 0, 0, 0, 0]).unwrap();
        assert_eq!(t.last_kind(), PacketKind::Continuation);
    }

    #[test]
    fn tracker_is_small_and_copy() {
        fn is_copy<T: Copy>() {}
        is_copy::<ResponseTracker>();
        assert!(std::mem::size_of::<ResponseTracker>() <= 64);
    }
}

//! Client commands (the command phase): the first payload byte names the
//! command, the rest is its arguments.
//!
//! References: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_command_phase.html>
//! and <https://mariadb.com/kb/en/2-text-protocol/>, <https://mariadb.com/kb/en/3-binary-protocol-prepared-statements/>.
//!
//! Decoding borrows from the payload and never allocates. Fixed fields that
//! are too short give `Err(Truncated)`; trailing bytes after fixed-size
//! commands are ignored, as mysqld does.

use super::consts::*;
use super::lenenc::{Field, Reader};
use super::Result;

/// MySQL 8's COM_CLONE (clone plugin), recognised but not decoded.
pub const COM_CLONE: u8 = 0x20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Sleep,
    Quit,
    InitDb(&'a [u8]),
    Query(&'a [u8]),
    FieldList {
        table: &'a [u8],
        wildcard: &'a [u8],
    },
    CreateDb(&'a [u8]),
    DropDb(&'a [u8]),
    Refresh(u8),
    Shutdown,
    Statistics,
    ProcessInfo,
    ProcessKill(u32),
    Debug,
    Ping,
    Time,
    /// The payload after the command byte (user, auth data, database, ...:
    /// its layout depends on the capabilities, decoded by the auth code).
    ChangeUser(&'a [u8]),
    StmtPrepare(&'a [u8]),
    StmtExecute {
        stmt_id: u32,
        flags: u8,
        iteration_count: u32,
        /// NULL bitmap, new-params-bound flag, types and values: decoding
        /// them needs the statement's parameter count.
        params: &'a [u8],
    },
    StmtSendLongData {
        stmt_id: u32,
        param_id: u16,
        data: &'a [u8],
    },
    StmtClose(u32),
    StmtReset(u32),
    SetOption(u16),
    StmtFetch {
        stmt_id: u32,
        rows: u32,
    },
    ResetConnection,
    /// MariaDB's COM_STMT_BULK_EXECUTE.
    StmtBulkExecute {
        stmt_id: u32,
        flags: u16,
        rest: &'a [u8],
    },
    /// recognised command byte that the funnel does not decode further
    /// (binlog dump, register slave, daemon, ...)
    Other(u8),
    Unknown(u8),
}

impl Command<'_> {
    /// The command byte this value was decoded from.
    pub fn byte(&self) -> u8 {
        match self {
            Command::Sleep => COM_SLEEP,
            Command::Quit => COM_QUIT,
            Command::InitDb(_) => COM_INIT_DB,
            Command::Query(_) => COM_QUERY,
            Command::FieldList { .. } => COM_FIELD_LIST,
            Command::CreateDb(_) => COM_CREATE_DB,
            Command::DropDb(_) => COM_DROP_DB,
            Command::Refresh(_) => COM_REFRESH,
            Command::Shutdown => COM_SHUTDOWN,
            Command::Statistics => COM_STATISTICS,
            Command::ProcessInfo => COM_PROCESS_INFO,
            Command::ProcessKill(_) => COM_PROCESS_KILL,
            Command::Debug => COM_DEBUG,
            Command::Ping => COM_PING,
            Command::Time => COM_TIME,
            Command::ChangeUser(_) => COM_CHANGE_USER,
            Command::StmtPrepare(_) => COM_STMT_PREPARE,
            Command::StmtExecute { .. } => COM_STMT_EXECUTE,
            Command::StmtSendLongData { .. } => COM_STMT_SEND_LONG_DATA,
            Command::StmtClose(_) => COM_STMT_CLOSE,
            Command::StmtReset(_) => COM_STMT_RESET,
            Command::SetOption(_) => COM_SET_OPTION,
            Command::StmtFetch { .. } => COM_STMT_FETCH,
            Command::ResetConnection => COM_RESET_CONNECTION,
            Command::StmtBulkExecute { .. } => COM_STMT_BULK_EXECUTE,
            Command::Other(b) | Command::Unknown(b) => *b,
        }
    }
}

/// Decodes a command payload (header already stripped, continuation
/// packets already joined). Empty payload: `Err(Truncated("command byte"))`.
pub fn decode_command(payload: &[u8]) -> Result<Command<'_>> {
    let mut r = Reader::new(payload);
    let byte = r.u8().field("command byte")?;
    let cmd = match byte {
        COM_SLEEP => Command::Sleep,
        COM_QUIT => Command::Quit,
        COM_INIT_DB => Command::InitDb(r.rest()),
        COM_QUERY => Command::Query(r.rest()),
        COM_FIELD_LIST => {
            // table: string<NUL>; wildcard: string<EOF>.
            let table = r.null_str().field("COM_FIELD_LIST table")?;
            Command::FieldList {
                table,
                wildcard: r.rest(),
            }
        }
        COM_CREATE_DB => Command::CreateDb(r.rest()),
        COM_DROP_DB => Command::DropDb(r.rest()),
        COM_REFRESH => Command::Refresh(r.u8().field("COM_REFRESH sub command")?),
        // An optional shutdown level byte may follow; it is not kept.
        COM_SHUTDOWN => Command::Shutdown,
        COM_STATISTICS => Command::Statistics,
        COM_PROCESS_INFO => Command::ProcessInfo,
        COM_PROCESS_KILL => Command::ProcessKill(r.u32().field("COM_PROCESS_KILL id")?),
        COM_DEBUG => Command::Debug,
        COM_PING => Command::Ping,
        COM_TIME => Command::Time,
        COM_CHANGE_USER => Command::ChangeUser(r.rest()),
        COM_STMT_PREPARE => Command::StmtPrepare(r.rest()),
        COM_STMT_EXECUTE => {
            let stmt_id = r.u32().field("COM_STMT_EXECUTE statement id")?;
            let flags = r.u8().field("COM_STMT_EXECUTE flags")?;
            let iteration_count = r.u32().field("COM_STMT_EXECUTE iteration count")?;
            Command::StmtExecute {
                stmt_id,
                flags,
                iteration_count,
                params: r.rest(),
            }
        }
        COM_STMT_SEND_LONG_DATA => {
            let stmt_id = r.u32().field("COM_STMT_SEND_LONG_DATA statement id")?;
            let param_id = r.u16().field("COM_STMT_SEND_LONG_DATA param id")?;
            Command::StmtSendLongData {
                stmt_id,
                param_id,
                data: r.rest(),
            }
        }
        COM_STMT_CLOSE => Command::StmtClose(r.u32().field("COM_STMT_CLOSE statement id")?),
        COM_STMT_RESET => Command::StmtReset(r.u32().field("COM_STMT_RESET statement id")?),
        COM_SET_OPTION => Command::SetOption(r.u16().field("COM_SET_OPTION option")?),
        COM_STMT_FETCH => {
            let stmt_id = r.u32().field("COM_STMT_FETCH statement id")?;
            let rows = r.u32().field("COM_STMT_FETCH rows")?;
            Command::StmtFetch { stmt_id, rows }
        }
        COM_RESET_CONNECTION => Command::ResetConnection,
        COM_STMT_BULK_EXECUTE => {
            let stmt_id = r.u32().field("COM_STMT_BULK_EXECUTE statement id")?;
            let flags = r.u16().field("COM_STMT_BULK_EXECUTE flags")?;
            Command::StmtBulkExecute {
                stmt_id,
                flags,
                rest: r.rest(),
            }
        }
        COM_CONNECT | COM_DELAYED_INSERT | COM_BINLOG_DUMP | COM_TABLE_DUMP | COM_CONNECT_OUT
        | COM_REGISTER_SLAVE | COM_DAEMON | COM_BINLOG_DUMP_GTID | COM_CLONE => {
            Command::Other(byte)
        }
        _ => Command::Unknown(byte),
    };
    Ok(cmd)
}

/// The conventional name of a command byte, for logs and metrics.
pub fn command_name(byte: u8) -> &'static str {
    match byte {
        COM_SLEEP => "COM_SLEEP",
        COM_QUIT => "COM_QUIT",
        COM_INIT_DB => "COM_INIT_DB",
        COM_QUERY => "COM_QUERY",
        COM_FIELD_LIST => "COM_FIELD_LIST",
        COM_CREATE_DB => "COM_CREATE_DB",
        COM_DROP_DB => "COM_DROP_DB",
        COM_REFRESH => "COM_REFRESH",
        COM_SHUTDOWN => "COM_SHUTDOWN",
        COM_STATISTICS => "COM_STATISTICS",
        COM_PROCESS_INFO => "COM_PROCESS_INFO",
        COM_CONNECT => "COM_CONNECT",
        COM_PROCESS_KILL => "COM_PROCESS_KILL",
        COM_DEBUG => "COM_DEBUG",
        COM_PING => "COM_PING",
        COM_TIME => "COM_TIME",
        COM_DELAYED_INSERT => "COM_DELAYED_INSERT",
        COM_CHANGE_USER => "COM_CHANGE_USER",
        COM_BINLOG_DUMP => "COM_BINLOG_DUMP",
        COM_TABLE_DUMP => "COM_TABLE_DUMP",
        COM_CONNECT_OUT => "COM_CONNECT_OUT",
        COM_REGISTER_SLAVE => "COM_REGISTER_SLAVE",
        COM_STMT_PREPARE => "COM_STMT_PREPARE",
        COM_STMT_EXECUTE => "COM_STMT_EXECUTE",
        COM_STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
        COM_STMT_CLOSE => "COM_STMT_CLOSE",
        COM_STMT_RESET => "COM_STMT_RESET",
        COM_SET_OPTION => "COM_SET_OPTION",
        COM_STMT_FETCH => "COM_STMT_FETCH",
        COM_DAEMON => "COM_DAEMON",
        COM_BINLOG_DUMP_GTID => "COM_BINLOG_DUMP_GTID",
        COM_RESET_CONNECTION => "COM_RESET_CONNECTION",
        COM_CLONE => "COM_CLONE",
        COM_STMT_BULK_EXECUTE => "COM_STMT_BULK_EXECUTE",
        _ => "COM_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolError;

    // COM_QUERY "select @@version_comment limit 1" from
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query.html
    #[test]
    fn query() {
        let p = b"\x03select @@version_comment limit 1";
        assert_eq!(
            decode_command(p).unwrap(),
            Command::Query(b"select @@version_comment limit 1")
        );
        assert_eq!(decode_command(&[0x03]).unwrap(), Command::Query(b""));
        assert_eq!(command_name(COM_QUERY), "COM_QUERY");
    }

    #[test]
    fn empty_payload() {
        assert_eq!(
            decode_command(&[]),
            Err(ProtocolError::Truncated("command byte"))
        );
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_field_list.html
    #[test]
    fn field_list() {
        assert_eq!(
            decode_command(b"\x04t1\0%").unwrap(),
            Command::FieldList {
                table: b"t1",
                wildcard: b"%"
            }
        );
        assert_eq!(
            decode_command(b"\x04t1"),
            Err(ProtocolError::Truncated("COM_FIELD_LIST table"))
        );
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html
    // 17 01 00 00 00 00 01 00 00 00 : execute statement 1, no cursor, 1 iteration.
    #[test]
    fn stmt_execute() {
        let p = [0x17, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(
            decode_command(&p).unwrap(),
            Command::StmtExecute {
                stmt_id: 1,
                flags: 0,
                iteration_count: 1,
                params: &[]
            }
        );
        for n in 1..p.len() {
            assert!(matches!(
                decode_command(&p[..n]),
                Err(ProtocolError::Truncated(_))
            ));
        }
        // With a cursor (CURSOR_TYPE_READ_ONLY) and parameters.
        let p = [
            0x17, 0x02, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0x00, 0x01, 0x03, 0x00, 7, 0, 0, 0,
        ];
        match decode_command(&p).unwrap() {
            Command::StmtExecute {
                stmt_id: 2,
                flags: 1,
                iteration_count: 1,
                params,
            } => assert_eq!(params, &p[10..]),
            other => panic!("{other:?}"),
        }
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_send_long_data.html
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_close.html
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_reset.html
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_fetch.html
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_set_option.html
    #[test]
    fn fixed_field_commands() {
        assert_eq!(
            decode_command(&[0x18, 5, 0, 0, 0, 2, 0, b'x', b'y']).unwrap(),
            Command::StmtSendLongData {
                stmt_id: 5,
                param_id: 2,
                data: b"xy"
            }
        );
        assert_eq!(
            decode_command(&[0x19, 0x2a, 0, 0, 0]).unwrap(),
            Command::StmtClose(42)
        );
        assert_eq!(
            decode_command(&[0x1a, 0x2a, 0, 0, 0]).unwrap(),
            Command::StmtReset(42)
        );
        assert_eq!(
            decode_command(&[0x1c, 1, 0, 0, 0, 0x10, 0, 0, 0]).unwrap(),
            Command::StmtFetch {
                stmt_id: 1,
                rows: 16
            }
        );
        assert_eq!(
            decode_command(&[0x1b, 1, 0]).unwrap(),
            Command::SetOption(1)
        );
        assert_eq!(
            decode_command(&[0x0c, 7, 0, 0, 0]).unwrap(),
            Command::ProcessKill(7)
        );
        assert_eq!(decode_command(&[0x07, 0x01]).unwrap(), Command::Refresh(1));
        assert!(matches!(
            decode_command(&[0x07]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_command(&[0x19, 1, 2]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_command(&[0x1b, 1]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            decode_command(&[0x1c, 1, 0, 0, 0, 1]),
            Err(ProtocolError::Truncated(_))
        ));
    }

    // https://mariadb.com/kb/en/com_stmt_bulk_execute/
    #[test]
    fn bulk_execute() {
        assert_eq!(
            decode_command(&[0xfa, 3, 0, 0, 0, 0x80, 0, 9]).unwrap(),
            Command::StmtBulkExecute {
                stmt_id: 3,
                flags: 0x80,
                rest: &[9]
            }
        );
    }

    #[test]
    fn simple_and_other() {
        let cases: &[(u8, Command<'_>)] = &[
            (0x00, Command::Sleep),
            (0x01, Command::Quit),
            (0x08, Command::Shutdown),
            (0x09, Command::Statistics),
            (0x0a, Command::ProcessInfo),
            (0x0d, Command::Debug),
            (0x0e, Command::Ping),
            (0x0f, Command::Time),
            (0x1f, Command::ResetConnection),
            (0x12, Command::Other(0x12)),
            (0x15, Command::Other(0x15)),
            (0x1d, Command::Other(0x1d)),
            (0x1e, Command::Other(0x1e)),
            (0x20, Command::Other(0x20)),
            (0x99, Command::Unknown(0x99)),
        ];
        for (b, c) in cases {
            let buf = [*b];
            let d = decode_command(&buf).unwrap();
            assert_eq!(&d, c);
            assert_eq!(d.byte(), *b);
        }
        assert_eq!(
            decode_command(b"\x02shop").unwrap(),
            Command::InitDb(b"shop")
        );
        assert_eq!(decode_command(b"\x05db").unwrap(), Command::CreateDb(b"db"));
        assert_eq!(decode_command(b"\x06db").unwrap(), Command::DropDb(b"db"));
        assert_eq!(
            decode_command(b"\x16SELECT ?").unwrap(),
            Command::StmtPrepare(b"SELECT ?")
        );
        assert_eq!(
            decode_command(b"\x11u\0").unwrap(),
            Command::ChangeUser(b"u\0")
        );
        assert_eq!(command_name(0x99), "COM_UNKNOWN");
        assert_eq!(command_name(COM_STMT_BULK_EXECUTE), "COM_STMT_BULK_EXECUTE");
        for b in 0..=255u8 {
            assert!(!command_name(b).is_empty());
            if let Ok(c) = decode_command(&[b, 0, 0, 0, 0, 0, 0, 0, 0, 0]) {
                assert_eq!(c.byte(), b);
            }
        }
    }
}

//! Protocol constants: capability flags, status flags, command bytes, error codes.
//! Values from <https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html>
//! and <https://mariadb.com/kb/en/connection/#capabilities>.

// Capability flags.
pub const CLIENT_LONG_PASSWORD: u32 = 1;
pub const CLIENT_FOUND_ROWS: u32 = 1 << 1;
pub const CLIENT_LONG_FLAG: u32 = 1 << 2;
pub const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
pub const CLIENT_NO_SCHEMA: u32 = 1 << 4;
pub const CLIENT_COMPRESS: u32 = 1 << 5;
pub const CLIENT_ODBC: u32 = 1 << 6;
pub const CLIENT_LOCAL_FILES: u32 = 1 << 7;
pub const CLIENT_IGNORE_SPACE: u32 = 1 << 8;
pub const CLIENT_PROTOCOL_41: u32 = 1 << 9;
pub const CLIENT_INTERACTIVE: u32 = 1 << 10;
pub const CLIENT_SSL: u32 = 1 << 11;
pub const CLIENT_IGNORE_SIGPIPE: u32 = 1 << 12;
pub const CLIENT_TRANSACTIONS: u32 = 1 << 13;
pub const CLIENT_RESERVED: u32 = 1 << 14;
pub const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
pub const CLIENT_MULTI_STATEMENTS: u32 = 1 << 16;
pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
pub const CLIENT_PS_MULTI_RESULTS: u32 = 1 << 18;
pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
pub const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
pub const CLIENT_SESSION_TRACK: u32 = 1 << 23;
pub const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;

// Server status flags.
pub const SERVER_STATUS_IN_TRANS: u16 = 1;
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 1 << 1;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 1 << 3;
pub const SERVER_QUERY_NO_GOOD_INDEX_USED: u16 = 1 << 4;
pub const SERVER_QUERY_NO_INDEX_USED: u16 = 1 << 5;
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 1 << 6;
pub const SERVER_STATUS_LAST_ROW_SENT: u16 = 1 << 7;
pub const SERVER_STATUS_DB_DROPPED: u16 = 1 << 8;
pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 1 << 9;
pub const SERVER_STATUS_METADATA_CHANGED: u16 = 1 << 10;
pub const SERVER_QUERY_WAS_SLOW: u16 = 1 << 11;
pub const SERVER_PS_OUT_PARAMS: u16 = 1 << 12;
pub const SERVER_STATUS_IN_TRANS_READONLY: u16 = 1 << 13;
pub const SERVER_SESSION_STATE_CHANGED: u16 = 1 << 14;

// Command bytes (first byte of a client command packet).
pub const COM_SLEEP: u8 = 0x00;
pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_CREATE_DB: u8 = 0x05;
pub const COM_DROP_DB: u8 = 0x06;
pub const COM_REFRESH: u8 = 0x07;
pub const COM_SHUTDOWN: u8 = 0x08;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_INFO: u8 = 0x0a;
pub const COM_CONNECT: u8 = 0x0b;
pub const COM_PROCESS_KILL: u8 = 0x0c;
pub const COM_DEBUG: u8 = 0x0d;
pub const COM_PING: u8 = 0x0e;
pub const COM_TIME: u8 = 0x0f;
pub const COM_DELAYED_INSERT: u8 = 0x10;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_BINLOG_DUMP: u8 = 0x12;
pub const COM_TABLE_DUMP: u8 = 0x13;
pub const COM_CONNECT_OUT: u8 = 0x14;
pub const COM_REGISTER_SLAVE: u8 = 0x15;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_DAEMON: u8 = 0x1d;
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
pub const COM_RESET_CONNECTION: u8 = 0x1f;
/// MariaDB: COM_STMT_BULK_EXECUTE.
pub const COM_STMT_BULK_EXECUTE: u8 = 0xfa;

// Packet header bytes.
pub const OK_HEADER: u8 = 0x00;
pub const EOF_HEADER: u8 = 0xfe;
pub const ERR_HEADER: u8 = 0xff;
pub const LOCAL_INFILE_HEADER: u8 = 0xfb;
pub const AUTH_SWITCH_HEADER: u8 = 0xfe;
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;

/// Error codes the funnel itself produces, with their SQLSTATEs (from mysqld's
/// errmsg list: <https://mariadb.com/kb/en/mariadb-error-code-reference/>).
pub mod err {
    pub const ER_CON_COUNT_ERROR: (u16, &str) = (1040, "08004");
    pub const ER_ACCESS_DENIED_ERROR: (u16, &str) = (1045, "28000");
    pub const ER_HOST_IS_BLOCKED: (u16, &str) = (1129, "HY000");
    pub const ER_HOST_NOT_PRIVILEGED: (u16, &str) = (1130, "HY000");
    pub const ER_TOO_MANY_USER_CONNECTIONS: (u16, &str) = (1203, "42000");
    pub const ER_UNKNOWN_COM_ERROR: (u16, &str) = (1047, "08S01");
    pub const ER_BAD_DB_ERROR: (u16, &str) = (1049, "42000");
    pub const ER_PARSE_ERROR: (u16, &str) = (1064, "42000");
    pub const ER_LOAD_INFILE_CAPABILITY_DISABLED: (u16, &str) = (4166, "HY000");
    pub const ER_HANDSHAKE_ERROR: (u16, &str) = (1043, "08S01");
    pub const ER_UNKNOWN_ERROR: (u16, &str) = (1105, "HY000");
    pub const ER_NET_PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    pub const ER_NET_READ_ERROR: (u16, &str) = (1158, "08S01");
    pub const ER_NET_PACKETS_OUT_OF_ORDER: (u16, &str) = (1156, "08S01");
    pub const ER_QUERY_INTERRUPTED: (u16, &str) = (1317, "70100");
    pub const ER_NOT_SUPPORTED_AUTH_MODE: (u16, &str) = (1251, "08004");
    pub const ER_UNKNOWN_STMT_HANDLER: (u16, &str) = (1243, "HY000");
    pub const ER_NO_SUCH_THREAD: (u16, &str) = (1094, "HY000");
    pub const ER_MAX_PREPARED_STMT_COUNT_REACHED: (u16, &str) = (1461, "42000");
    /// "This command is not supported in the prepared statement protocol
    /// yet": mysqld's answer to COM_STMT_BULK_EXECUTE from a client that did
    /// not negotiate MARIADB_CLIENT_STMT_BULK_OPERATIONS.
    pub const ER_UNSUPPORTED_PS: (u16, &str) = (1295, "HY000");
    /// mysqld's refusal of a statement its settings forbid (`read_only`):
    /// the answer to a statement a `[rule] block` refuses.
    pub const ER_OPTION_PREVENTS_STATEMENT: (u16, &str) = (1290, "HY000");
    /// Client-side "Lost connection to MySQL server during query"; sent by the
    /// funnel as an ERR when the backend running a client's command is lost.
    pub const CR_SERVER_LOST: (u16, &str) = (2013, "HY000");
    /// "Server shutdown in progress".
    pub const ER_SERVER_SHUTDOWN: (u16, &str) = (1053, "08S01");
    /// "Lock wait timeout exceeded" is not ours; queue timeouts use this one:
    /// "Query execution was interrupted, maximum statement execution time exceeded".
    pub const ER_STATEMENT_TIMEOUT: (u16, &str) = (1969, "70100");
}

/// Name of the only authentication plugin the funnel's front end speaks.
pub const MYSQL_NATIVE_PASSWORD: &str = "mysql_native_password";

//! Connection phase packets: the server's initial handshake, the client's
//! handshake response (and the SSL request that may precede it), and the
//! auth switch request.
//!
//! References:
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_response.html>
//! - <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_auth_switch_request.html>
//! - <https://mariadb.com/kb/en/connection/>

use super::consts::*;
use super::lenenc::{lenenc_int_len, write_lenenc_int, write_lenenc_str, Field, Reader};
use super::{ProtocolError, Result};

/// The prefix MariaDB puts before its real version ("5.5.5-10.6.12-MariaDB")
/// so that old MySQL replicas accept it as a master.
pub const MARIADB_RPL_HACK_PREFIX: &str = "5.5.5-";

fn utf8(b: &[u8], what: &'static str) -> Result<String> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| ProtocolError::Invalid(what))
}

/// Protocol::HandshakeV10, the first packet the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeV10 {
    /// As sent, including MariaDB's "5.5.5-" prefix if any (see
    /// [`HandshakeV10::version`]).
    pub server_version: String,
    pub connection_id: u32,
    /// auth-plugin-data, part 1 and part 2 joined, without the trailing NUL
    /// (20 bytes for mysql_native_password).
    pub scramble: Vec<u8>,
    /// Lower and upper 16 bits joined. MariaDB's extended capabilities (in
    /// the reserved bytes) are not kept.
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    /// Empty if the server did not announce CLIENT_PLUGIN_AUTH.
    pub auth_plugin: String,
}

impl HandshakeV10 {
    /// The server version without MariaDB's replication-compatibility prefix.
    pub fn version(&self) -> &str {
        match self.server_version.strip_prefix(MARIADB_RPL_HACK_PREFIX) {
            Some(v) if !v.is_empty() => v,
            _ => &self.server_version,
        }
    }

    /// True if the server says it is MariaDB.
    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }

    /// Appends the payload. The auth-plugin-data is split 8 + rest (the
    /// rest padded to 12 bytes) and followed by a NUL, as mysqld does; its
    /// announced length is the scramble length + 1 (21 for a 20-byte
    /// scramble). The 10 reserved bytes are zero (MariaDB would put its
    /// extended capabilities in the last 4; the funnel announces none).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(10);
        out.extend_from_slice(self.server_version.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        let mut part1 = [0u8; 8];
        let split = self.scramble.len().min(8);
        let (p1, p2) = self.scramble.split_at(split);
        part1[..split].copy_from_slice(p1);
        // Part 2 is at least 12 bytes; the length byte caps the total at 255
        // including the NUL.
        let p2 = p2.get(..246).unwrap_or(p2);
        out.extend_from_slice(&part1);
        out.push(0); // filler
        let caps = self.capabilities.to_le_bytes();
        out.extend_from_slice(&caps[..2]);
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&caps[2..]);
        let part2_len = p2.len().max(12);
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            out.push((8 + part2_len + 1) as u8);
        } else {
            out.push(0);
        }
        out.extend_from_slice(&[0u8; 10]);
        if self.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            out.extend_from_slice(p2);
            out.resize(out.len() + (part2_len - p2.len()), 0);
            out.push(0);
        }
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            out.extend_from_slice(self.auth_plugin.as_bytes());
            out.push(0);
        }
    }

    /// Parses the payload as a client would. Tolerates an old server that
    /// stops after the lower capability flags and a plugin name without its
    /// final NUL (some 5.5 servers).
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let proto = r.u8().field("protocol version")?;
        if proto != 10 {
            return Err(ProtocolError::Invalid("handshake protocol version"));
        }
        let server_version = utf8(r.null_str().field("server version")?, "server version")?;
        let connection_id = r.u32().field("connection id")?;
        let part1 = r.bytes(8).field("auth-plugin-data-part-1")?;
        r.skip(1).field("handshake filler")?;
        let caps_low = r.u16().field("capability flags")?;
        let mut hs = HandshakeV10 {
            server_version,
            connection_id,
            scramble: part1.to_vec(),
            capabilities: u32::from(caps_low),
            charset: 0,
            status: 0,
            auth_plugin: String::new(),
        };
        if r.is_empty() {
            return Ok(hs);
        }
        hs.charset = r.u8().field("character set")?;
        hs.status = r.u16().field("status flags")?;
        let caps_high = r.u16().field("capability flags")?;
        hs.capabilities |= u32::from(caps_high) << 16;
        let auth_len = r.u8().field("auth-plugin-data length")?;
        r.skip(10).field("reserved")?;
        if hs.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            // $len = MAX(13, length of auth-plugin-data - 8)
            let n = usize::from(auth_len).saturating_sub(8).max(13);
            let part2 = r.bytes(n).field("auth-plugin-data-part-2")?;
            let part2 = match part2.split_last() {
                Some((0, head)) => head,
                _ => part2,
            };
            hs.scramble.extend_from_slice(part2);
        }
        if hs.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            hs.auth_plugin = utf8(r.null_str_or_rest(), "auth plugin name")?;
        }
        Ok(hs)
    }
}

/// Protocol::HandshakeResponse41, the client's answer to the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub username: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub attrs: Vec<(String, String)>,
}

/// Length of the fixed part: capabilities, max packet, charset, filler. An
/// SSLRequest is exactly this.
pub const SSL_REQUEST_LEN: usize = 32;

/// True if `payload` is an SSLRequest: the fixed 32-byte prefix of a
/// HandshakeResponse41 with CLIENT_SSL set, after which TLS starts.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    match payload {
        [a, b, c, d, ..] if payload.len() == SSL_REQUEST_LEN => {
            u32::from_le_bytes([*a, *b, *c, *d]) & CLIENT_SSL != 0
        }
        _ => false,
    }
}

impl HandshakeResponse {
    /// Parses a HandshakeResponse41. The pre-4.1 HandshakeResponse320 is
    /// refused (`Invalid`): the funnel only speaks protocol 4.1. Optional
    /// trailing fields (database, plugin name, attributes) are accepted when
    /// absent even if their flag is set, as mysqld does for real clients.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32().field("client capabilities")?;
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(ProtocolError::Invalid(
                "handshake response without CLIENT_PROTOCOL_41",
            ));
        }
        let max_packet = r.u32().field("max packet size")?;
        let charset = r.u8().field("character set")?;
        r.skip(23).field("handshake response filler")?;
        let username = utf8(r.null_str().field("username")?, "username")?;

        let auth_response = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_str().field("auth response")?
        } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = r.u8().field("auth response length")?;
            r.bytes(usize::from(n)).field("auth response")?
        } else {
            r.null_str().field("auth response")?
        }
        .to_vec();

        let mut database = None;
        if capabilities & CLIENT_CONNECT_WITH_DB != 0 && !r.is_empty() {
            database = Some(utf8(r.null_str_or_rest(), "database name")?);
        }
        let mut auth_plugin = None;
        if capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
            auth_plugin = Some(utf8(r.null_str_or_rest(), "auth plugin name")?);
        }
        let mut attrs = Vec::new();
        if capabilities & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
            let block = r.lenenc_str().field("connection attributes")?;
            let mut a = Reader::new(block);
            while !a.is_empty() {
                let k = utf8(a.lenenc_str().field("attribute name")?, "attribute name")?;
                let v = utf8(a.lenenc_str().field("attribute value")?, "attribute value")?;
                attrs.push((k, v));
            }
        }
        // Anything after (MySQL 8's zstd compression level) is ignored.
        Ok(HandshakeResponse {
            capabilities,
            max_packet,
            charset,
            username,
            auth_response,
            database,
            auth_plugin,
            attrs,
        })
    }

    /// Appends the payload, as a client: the auth response is lenenc when
    /// CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA is set, else 1-byte length with
    /// CLIENT_SECURE_CONNECTION (truncated to 255 bytes), else NUL-ended.
    /// Database, plugin and attributes are written when their flag is set.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let caps = self.capabilities;
        out.extend_from_slice(&caps.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0u8; 23]);
        out.extend_from_slice(self.username.as_bytes());
        out.push(0);
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            write_lenenc_str(out, &self.auth_response);
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let a = self.auth_response.get(..255).unwrap_or(&self.auth_response);
            out.push(a.len() as u8);
            out.extend_from_slice(a);
        } else {
            out.extend_from_slice(&self.auth_response);
            out.push(0);
        }
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            out.extend_from_slice(self.database.as_deref().unwrap_or("").as_bytes());
            out.push(0);
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            out.extend_from_slice(self.auth_plugin.as_deref().unwrap_or("").as_bytes());
            out.push(0);
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 {
            let len: usize = self
                .attrs
                .iter()
                .map(|(k, v)| {
                    lenenc_int_len(k.len() as u64)
                        + k.len()
                        + lenenc_int_len(v.len() as u64)
                        + v.len()
                })
                .sum();
            write_lenenc_int(out, len as u64);
            for (k, v) in &self.attrs {
                write_lenenc_str(out, k.as_bytes());
                write_lenenc_str(out, v.as_bytes());
            }
        }
    }
}

/// Protocol::AuthSwitchRequest: the server asks the client to authenticate
/// with another plugin, giving that plugin's data (a new scramble).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    pub plugin: String,
    pub data: Vec<u8>,
}

impl AuthSwitchRequest {
    /// Appends the payload: 0xfe, plugin name NUL, data as given (mysqld
    /// sends the 20-byte scramble plus a NUL for mysql_native_password, so
    /// pass the NUL in `data` to mimic it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(AUTH_SWITCH_HEADER);
        out.extend_from_slice(self.plugin.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.data);
    }

    /// Parses the payload; one trailing NUL of the data is removed. The
    /// lone 0xfe of the pre-4.1 "old auth method switch" decodes as plugin
    /// `mysql_old_password` with no data.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        if r.u8().field("auth switch header")? != AUTH_SWITCH_HEADER {
            return Err(ProtocolError::Invalid("auth switch header"));
        }
        if r.is_empty() {
            return Ok(AuthSwitchRequest {
                plugin: "mysql_old_password".to_owned(),
                data: Vec::new(),
            });
        }
        let plugin = utf8(r.null_str().field("auth plugin name")?, "auth plugin name")?;
        let data = r.rest();
        let data = match data.split_last() {
            Some((0, head)) => head,
            _ => data,
        };
        Ok(AuthSwitchRequest {
            plugin,
            data: data.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Example from
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html
    // (MySQL 5.5.2-m2, no CLIENT_PLUGIN_AUTH, payload after the 4-byte header).
    const MYSQL_552_HANDSHAKE: &[u8] = &[
        0x0a, 0x35, 0x2e, 0x35, 0x2e, 0x32, 0x2d, 0x6d, 0x32, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x64,
        0x76, 0x48, 0x40, 0x49, 0x2d, 0x43, 0x4a, 0x00, 0xff, 0xf7, 0x08, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x34, 0x64, 0x7c,
        0x63, 0x5a, 0x77, 0x6b, 0x34, 0x5e, 0x5d, 0x3a, 0x00,
    ];

    #[test]
    fn decode_mysql_552_example() {
        assert_eq!(MYSQL_552_HANDSHAKE.len(), 0x36);
        let hs = HandshakeV10::decode(MYSQL_552_HANDSHAKE).unwrap();
        assert_eq!(hs.server_version, "5.5.2-m2");
        assert_eq!(hs.connection_id, 11);
        assert_eq!(hs.scramble, b"dvH@I-CJ*4d|cZwk4^]:");
        assert_eq!(hs.capabilities, 0xf7ff);
        assert_eq!(hs.charset, 8);
        assert_eq!(hs.status, SERVER_STATUS_AUTOCOMMIT);
        assert_eq!(hs.auth_plugin, "");
        // Re-encoding gives the same bytes.
        let mut out = Vec::new();
        hs.encode(&mut out);
        assert_eq!(out, MYSQL_552_HANDSHAKE);
    }

    // MariaDB layout from https://mariadb.com/kb/en/connection/#initial-handshake-packet:
    // version "5.5.5-10.6.12-MariaDB", auth data length 21, 6 filler bytes +
    // 4 bytes of extended capabilities, part 2 of 12 bytes + NUL, plugin name.
    fn mariadb_handshake() -> Vec<u8> {
        let mut p = vec![10u8];
        p.extend_from_slice(b"5.5.5-10.6.12-MariaDB\0");
        p.extend_from_slice(&[0x2a, 0x00, 0x00, 0x00]); // connection id 42
        p.extend_from_slice(b"abcdefgh"); // scramble part 1
        p.push(0);
        p.extend_from_slice(&[0xfe, 0xf7]); // caps low (no CLIENT_LONG_PASSWORD: MariaDB)
        p.push(0x2d); // utf8mb4_general_ci
        p.extend_from_slice(&[0x02, 0x00]);
        p.extend_from_slice(&[0xff, 0x81]); // caps high
        p.push(21);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x1d, 0x00, 0x00, 0x00]); // MariaDB extended caps
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn decode_mariadb() {
        let hs = HandshakeV10::decode(&mariadb_handshake()).unwrap();
        assert_eq!(hs.server_version, "5.5.5-10.6.12-MariaDB");
        assert_eq!(hs.version(), "10.6.12-MariaDB");
        assert!(hs.is_mariadb());
        assert_eq!(hs.connection_id, 42);
        assert_eq!(hs.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(hs.capabilities, 0x81ff_f7fe);
        assert_eq!(hs.charset, 0x2d);
        assert_eq!(hs.auth_plugin, MYSQL_NATIVE_PASSWORD);
    }

    #[test]
    fn handshake_roundtrip_and_errors() {
        let hs = HandshakeV10 {
            server_version: "8.0.36-funnel".into(),
            connection_id: 0xdead_beef,
            scramble: (1..=20).collect(),
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_DEPRECATE_EOF,
            charset: 255,
            status: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin: MYSQL_NATIVE_PASSWORD.into(),
        };
        let mut out = Vec::new();
        hs.encode(&mut out);
        // auth-plugin-data length byte is 21, after 10 reserved zero bytes
        // comes part 2 (12 bytes) + NUL.
        let at = 1 + 14 + 4 + 8 + 1 + 2 + 1 + 2 + 2;
        assert_eq!(out[at], 21);
        assert_eq!(&out[at + 1..at + 11], &[0u8; 10]);
        assert_eq!(
            &out[at + 11..at + 24],
            &[9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0]
        );
        assert_eq!(HandshakeV10::decode(&out).unwrap(), hs);
        // Plugin name without NUL is tolerated.
        out.pop();
        assert_eq!(HandshakeV10::decode(&out).unwrap(), hs);

        let mut bad = out.clone();
        bad[0] = 9;
        assert_eq!(
            HandshakeV10::decode(&bad),
            Err(ProtocolError::Invalid("handshake protocol version"))
        );
        for n in 0..at + 11 {
            assert!(
                matches!(
                    HandshakeV10::decode(&out[..n]),
                    Err(ProtocolError::Truncated(_))
                ) || n == 1 + 14 + 4 + 8 + 1 + 2,
                "prefix {n}"
            );
        }
        assert!(HandshakeV10::decode(&[]).is_err());
    }

    // Example from
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_response.html
    // (user "pam", database "test", mysql_native_password).
    const RESPONSE41_EXAMPLE: &[u8] = &[
        0x8d, 0xa6, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x70, 0x61, 0x6d, 0x00, 0x14, 0xab, 0x09, 0xee, 0xf6, 0xbc, 0xb1, 0x32, 0x3e,
        0x61, 0x14, 0x38, 0x65, 0xc0, 0x99, 0x1d, 0x95, 0x7d, 0x75, 0xd4, 0x47, 0x74, 0x65, 0x73,
        0x74, 0x00, 0x6d, 0x79, 0x73, 0x71, 0x6c, 0x5f, 0x6e, 0x61, 0x74, 0x69, 0x76, 0x65, 0x5f,
        0x70, 0x61, 0x73, 0x73, 0x77, 0x6f, 0x72, 0x64, 0x00,
    ];

    #[test]
    fn decode_response41_example() {
        assert_eq!(RESPONSE41_EXAMPLE.len(), 0x54);
        let r = HandshakeResponse::decode(RESPONSE41_EXAMPLE).unwrap();
        assert_eq!(r.capabilities, 0x000f_a68d);
        assert_eq!(r.max_packet, 0x0100_0000);
        assert_eq!(r.charset, 8);
        assert_eq!(r.username, "pam");
        assert_eq!(r.auth_response.len(), 20);
        assert_eq!(r.auth_response[0], 0xab);
        assert_eq!(r.database.as_deref(), Some("test"));
        assert_eq!(r.auth_plugin.as_deref(), Some(MYSQL_NATIVE_PASSWORD));
        assert!(r.attrs.is_empty());
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, RESPONSE41_EXAMPLE);
    }

    fn modern_response() -> HandshakeResponse {
        HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                | CLIENT_CONNECT_WITH_DB
                | CLIENT_CONNECT_ATTRS
                | CLIENT_DEPRECATE_EOF,
            max_packet: 16 << 20,
            charset: 45,
            username: "app".into(),
            auth_response: vec![7u8; 20],
            database: Some("shop".into()),
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.into()),
            attrs: vec![
                ("_client_name".into(), "libmysql".into()),
                ("_pid".into(), "1234".into()),
            ],
        }
    }

    // Connection attributes as in
    // https://mariadb.com/kb/en/connection/#handshake-response-packet
    // (lenenc total length, then lenenc key/value pairs).
    #[test]
    fn response_roundtrip_lenenc_and_attrs() {
        let r = modern_response();
        let mut out = Vec::new();
        r.encode(&mut out);
        // 32 fixed + "app\0" + lenenc(20) + 20 bytes
        assert_eq!(out[36], 20);
        assert_eq!(HandshakeResponse::decode(&out).unwrap(), r);
        // Truncated attributes block: Truncated.
        out.pop();
        assert!(matches!(
            HandshakeResponse::decode(&out),
            Err(ProtocolError::Truncated(_))
        ));
    }

    #[test]
    fn response_tolerates_missing_trailing_fields() {
        let mut r = modern_response();
        r.attrs.clear();
        let mut out = Vec::new();
        r.encode(&mut out);
        // Drop the empty attrs block, then the plugin name's NUL, then the plugin.
        out.pop();
        let d = HandshakeResponse::decode(&out).unwrap();
        assert_eq!(d.auth_plugin.as_deref(), Some(MYSQL_NATIVE_PASSWORD));
        out.pop();
        let d = HandshakeResponse::decode(&out).unwrap();
        assert_eq!(d.auth_plugin.as_deref(), Some(MYSQL_NATIVE_PASSWORD));
        out.truncate(out.len() - MYSQL_NATIVE_PASSWORD.len());
        let d = HandshakeResponse::decode(&out).unwrap();
        assert_eq!(d.auth_plugin, None);
        assert_eq!(d.database.as_deref(), Some("shop"));
    }

    #[test]
    fn response_errors() {
        let mut r = modern_response();
        r.capabilities &= !CLIENT_PROTOCOL_41;
        let mut out = Vec::new();
        r.encode(&mut out);
        assert!(matches!(
            HandshakeResponse::decode(&out),
            Err(ProtocolError::Invalid(_))
        ));

        let mut r = modern_response();
        r.username = "x".into();
        let mut out = Vec::new();
        r.encode(&mut out);
        out[32] = 0xff; // username byte: not UTF-8
        assert!(matches!(
            HandshakeResponse::decode(&out),
            Err(ProtocolError::Invalid("username"))
        ));
        assert_eq!(
            HandshakeResponse::decode(&out[..3]),
            Err(ProtocolError::Truncated("client capabilities"))
        );
        assert_eq!(
            HandshakeResponse::decode(&out[..32]),
            Err(ProtocolError::Truncated("username"))
        );
    }

    #[test]
    fn response_without_secure_connection() {
        let r = HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41,
            max_packet: 0,
            charset: 33,
            username: "old".into(),
            auth_response: b"abc".to_vec(),
            database: None,
            auth_plugin: None,
            attrs: vec![],
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(&out[32..], b"old\0abc\0");
        assert_eq!(HandshakeResponse::decode(&out).unwrap(), r);
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_ssl_request.html
    #[test]
    fn ssl_request() {
        let mut p = (CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION)
            .to_le_bytes()
            .to_vec();
        p.extend_from_slice(&(16u32 << 20).to_le_bytes());
        p.push(33);
        p.extend_from_slice(&[0u8; 23]);
        assert!(is_ssl_request(&p));
        assert!(!is_ssl_request(&p[..31]));
        p[1] &= !((CLIENT_SSL >> 8) as u8);
        assert!(!is_ssl_request(&p));
        assert!(!is_ssl_request(RESPONSE41_EXAMPLE));
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_auth_switch_request.html
    // 0xfe, "mysql_native_password\0", 20-byte scramble, NUL.
    #[test]
    fn auth_switch() {
        let mut data: Vec<u8> = (b'A'..b'A' + 20).collect();
        data.push(0);
        let req = AuthSwitchRequest {
            plugin: MYSQL_NATIVE_PASSWORD.into(),
            data: data.clone(),
        };
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out.len(), 44);
        assert_eq!(out[0], 0xfe);
        assert_eq!(&out[1..23], b"mysql_native_password\0");
        let d = AuthSwitchRequest::decode(&out).unwrap();
        assert_eq!(d.plugin, MYSQL_NATIVE_PASSWORD);
        assert_eq!(d.data, &data[..20]);

        assert_eq!(
            AuthSwitchRequest::decode(&[0xfe]).unwrap().plugin,
            "mysql_old_password"
        );
        assert!(matches!(
            AuthSwitchRequest::decode(&[0x00, b'a', 0]),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(matches!(
            AuthSwitchRequest::decode(b"\xfemysql"),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            AuthSwitchRequest::decode(&[]),
            Err(ProtocolError::Truncated(_))
        ));
    }
}

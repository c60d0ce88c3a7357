//! COM_CHANGE_USER, as the server reads it.
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_change_user.html>
//! and <https://mariadb.com/kb/en/com_change_user/>.

use super::consts::*;
use super::lenenc::{lenenc_int_len, write_lenenc_int, write_lenenc_str, Reader};
use super::{ProtocolError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeUser {
    pub username: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    /// Collation id; absent in old clients' packets.
    pub charset: Option<u16>,
    pub auth_plugin: Option<String>,
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::Invalid(what))
}

/// Decode a COM_CHANGE_USER payload (command byte included), given the
/// capabilities negotiated at connect.
pub fn decode_change_user(payload: &[u8], capabilities: u32) -> Result<ChangeUser> {
    let mut r = Reader::new(payload);
    if r.u8()? != COM_CHANGE_USER {
        return Err(ProtocolError::Invalid("COM_CHANGE_USER command byte"));
    }
    let username = utf8(r.null_str()?, "user name")?;
    let auth_response = if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.bytes(n)?.to_vec()
    } else {
        r.null_str()?.to_vec()
    };
    let db = r.null_str()?;
    let database = if db.is_empty() {
        None
    } else {
        Some(utf8(db, "schema name")?)
    };
    let charset = if r.remaining() >= 2 {
        Some(r.u16()?)
    } else {
        None
    };
    let auth_plugin = if capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
        Some(utf8(r.null_str_or_rest(), "auth plugin name")?)
    } else {
        None
    };
    Ok(ChangeUser {
        username,
        auth_response,
        database,
        charset,
        auth_plugin,
    })
}

impl ChangeUser {
    /// Append the payload (command byte included), as a client with these
    /// capabilities sends it: the auth response length-prefixed with one
    /// byte (`CLIENT_SECURE_CONNECTION`; at most 255 bytes), the schema
    /// (empty: none), the collation id, the plugin name
    /// (`CLIENT_PLUGIN_AUTH`) and the connection attributes
    /// (`CLIENT_CONNECT_ATTRS`).
    pub fn encode(&self, out: &mut Vec<u8>, capabilities: u32, attrs: &[(String, String)]) {
        out.push(COM_CHANGE_USER);
        out.extend_from_slice(self.username.as_bytes());
        out.push(0);
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let a = self.auth_response.get(..255).unwrap_or(&self.auth_response);
            out.push(a.len() as u8);
            out.extend_from_slice(a);
        } else {
            out.extend_from_slice(&self.auth_response);
            out.push(0);
        }
        out.extend_from_slice(self.database.as_deref().unwrap_or("").as_bytes());
        out.push(0);
        out.extend_from_slice(&self.charset.unwrap_or(0).to_le_bytes());
        if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            out.extend_from_slice(self.auth_plugin.as_deref().unwrap_or("").as_bytes());
            out.push(0);
        }
        if capabilities & CLIENT_CONNECT_ATTRS != 0 {
            let len: usize = attrs
                .iter()
                .map(|(k, v)| {
                    lenenc_int_len(k.len() as u64)
                        + k.len()
                        + lenenc_int_len(v.len() as u64)
                        + v.len()
                })
                .sum();
            write_lenenc_int(out, len as u64);
            for (k, v) in attrs {
                write_lenenc_str(out, k.as_bytes());
                write_lenenc_str(out, v.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_full_packet() {
        // user "bob", 20-byte auth response, schema "db", charset 45,
        // plugin mysql_native_password, then attributes (ignored).
        let mut p = vec![COM_CHANGE_USER];
        p.extend_from_slice(b"bob\0");
        p.push(20);
        p.extend_from_slice(&[7u8; 20]);
        p.extend_from_slice(b"db\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        p.extend_from_slice(&[0]);
        let caps = CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_PROTOCOL_41;
        let cu = decode_change_user(&p, caps).unwrap();
        assert_eq!(cu.username, "bob");
        assert_eq!(cu.auth_response, vec![7u8; 20]);
        assert_eq!(cu.database.as_deref(), Some("db"));
        assert_eq!(cu.charset, Some(45));
        assert_eq!(cu.auth_plugin.as_deref(), Some("mysql_native_password"));
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let caps = CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
        let full = [COM_CHANGE_USER, b'a', 0, 3, 1, 2, 3, b'x', 0];
        for n in 0..full.len() - 1 {
            assert!(decode_change_user(&full[..n], caps).is_err(), "{n}");
        }
        assert!(decode_change_user(&full, caps).is_ok());
        assert!(decode_change_user(&[COM_QUERY], caps).is_err());
    }

    #[test]
    fn encode_then_decode_gives_it_back() {
        let caps = CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS;
        let cu = ChangeUser {
            username: "app".into(),
            auth_response: vec![9u8; 20],
            database: None,
            charset: Some(45),
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.into()),
        };
        let mut p = Vec::new();
        cu.encode(&mut p, caps, &[("_client_name".into(), "funnel".into())]);
        assert_eq!(decode_change_user(&p, caps).unwrap(), cu);
        // The schema is an empty NUL-terminated string: none.
        let at = 1 + 4 + 1 + 20;
        assert_eq!(&p[at..at + 3], &[0, 45, 0]);
        let with_db = ChangeUser {
            database: Some("db".into()),
            ..cu.clone()
        };
        p.clear();
        with_db.encode(&mut p, caps, &[]);
        assert_eq!(decode_change_user(&p, caps).unwrap(), with_db);
    }
}

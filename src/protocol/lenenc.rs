//! Basic data types of the protocol: fixed-length little-endian integers,
//! length-encoded integers and strings, NUL-terminated strings.
//!
//! Reference: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_data_types.html>
//! and <https://mariadb.com/kb/en/protocol-data-types/>.
//!
//! [`Reader`] is a cursor over one payload that never panics: every read
//! checks the remaining length first and returns `Err(Truncated)` when the
//! payload is too short. A failed read does not move the cursor, so callers
//! may try an alternative parse.

use super::{ProtocolError, Result};

/// Cursor over a packet payload. Borrowed slices it returns live as long as
/// the payload, so decoders can hand out `&'a [u8]` without copying.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unconsumed bytes, without consuming them.
    pub fn peek_rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// The next byte, without consuming it.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Consumes exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n, "bytes")
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ProtocolError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ProtocolError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n, "skipped bytes").map(|_| ())
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>("int<1>")?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array("int<2>")?))
    }

    pub fn u24(&mut self) -> Result<u32> {
        let [a, b, c] = self.array("int<3>")?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array("int<4>")?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array("int<8>")?))
    }

    /// A length-encoded integer. `0xfb` is the NULL marker of text rows and
    /// `0xff` is undefined (it starts an ERR packet), so both are refused.
    pub fn lenenc_int(&mut self) -> Result<u64> {
        let mut r = *self;
        match r.lenenc_int_or_null()? {
            Some(v) => {
                *self = r;
                Ok(v)
            }
            None => Err(ProtocolError::Invalid("lenenc int NULL")),
        }
    }

    /// A length-encoded integer where `0xfb` (NULL) is allowed.
    pub fn lenenc_int_or_null(&mut self) -> Result<Option<u64>> {
        let mut r = *self;
        let first = r.take(1, "lenenc int")?[0];
        let v = match first {
            0x00..=0xfa => Some(u64::from(first)),
            0xfb => None,
            0xfc => Some(u64::from(u16::from_le_bytes(r.array("lenenc int")?))),
            0xfd => {
                let [a, b, c] = r.array("lenenc int")?;
                Some(u64::from(u32::from_le_bytes([a, b, c, 0])))
            }
            0xfe => Some(u64::from_le_bytes(r.array("lenenc int")?)),
            0xff => return Err(ProtocolError::Invalid("lenenc int prefix 0xff")),
        };
        *self = r;
        Ok(v)
    }

    /// A length-encoded string: lenenc length, then that many bytes.
    pub fn lenenc_str(&mut self) -> Result<&'a [u8]> {
        let mut r = *self;
        let len = r.lenenc_int()?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::Truncated("lenenc string"))?;
        let s = r.take(len, "lenenc string")?;
        *self = r;
        Ok(s)
    }

    /// A NUL-terminated string; the NUL is consumed but not returned.
    pub fn null_str(&mut self) -> Result<&'a [u8]> {
        let rest = self.peek_rest();
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Truncated("NUL-terminated string"))?;
        let s = rest
            .get(..n)
            .ok_or(ProtocolError::Truncated("NUL-terminated string"))?;
        self.pos = self.pos.saturating_add(n).saturating_add(1);
        Ok(s)
    }

    /// A NUL-terminated string, or the rest of the payload if it has no NUL.
    /// Some clients and old servers omit the final NUL of the last field.
    pub fn null_str_or_rest(&mut self) -> &'a [u8] {
        match self.null_str() {
            Ok(s) => s,
            Err(_) => self.rest(),
        }
    }

    /// Everything left (`string<EOF>`); consumes it all.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.peek_rest();
        self.pos = self.buf.len();
        s
    }
}

/// Number of bytes `write_lenenc_int(v)` writes.
pub fn lenenc_int_len(v: u64) -> usize {
    if v < 0xfb {
        1
    } else if v <= 0xffff {
        3
    } else if v <= 0xff_ffff {
        4
    } else {
        9
    }
}

/// Appends `v` as a length-encoded integer (shortest form, as mysqld does).
pub fn write_lenenc_int(out: &mut Vec<u8>, v: u64) {
    let b = v.to_le_bytes();
    match lenenc_int_len(v) {
        1 => out.push(b[0]),
        3 => {
            out.push(0xfc);
            out.extend_from_slice(&b[..2]);
        }
        4 => {
            out.push(0xfd);
            out.extend_from_slice(&b[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&b);
        }
    }
}

/// Appends a length-encoded string.
pub fn write_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    write_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Renames the field in a `Truncated` error, so that decoders report which
/// protocol field was cut short rather than which primitive read failed.
pub(crate) trait Field<T> {
    fn field(self, name: &'static str) -> Result<T>;
}

impl<T> Field<T> for Result<T> {
    fn field(self, name: &'static str) -> Result<T> {
        self.map_err(|e| match e {
            ProtocolError::Truncated(_) => ProtocolError::Truncated(name),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixtures from https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html
    // (int<lenenc>: < 0xfb one byte; 0xfc + 2 bytes; 0xfd + 3 bytes; 0xfe + 8 bytes).
    #[test]
    fn lenenc_int_fixtures() {
        let cases: &[(&[u8], u64)] = &[
            (&[0x00], 0),
            (&[0xfa], 250),
            (&[0xfc, 0xfb, 0x00], 251),
            (&[0xfc, 0xff, 0xff], 0xffff),
            (&[0xfd, 0x00, 0x00, 0x01], 0x1_0000),
            (&[0xfd, 0xff, 0xff, 0xff], 0xff_ffff),
            (&[0xfe, 0, 0, 0, 0x01, 0, 0, 0, 0], 0x100_0000),
            (
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                u64::MAX,
            ),
        ];
        for (bytes, v) in cases {
            let mut r = Reader::new(bytes);
            assert_eq!(r.lenenc_int().unwrap(), *v, "{bytes:02x?}");
            assert!(r.is_empty());
            let mut out = Vec::new();
            write_lenenc_int(&mut out, *v);
            assert_eq!(&out[..], *bytes);
            assert_eq!(lenenc_int_len(*v), bytes.len());
        }
    }

    #[test]
    fn lenenc_int_null_and_ff() {
        assert_eq!(
            Reader::new(&[0xfb]).lenenc_int(),
            Err(ProtocolError::Invalid("lenenc int NULL"))
        );
        let mut r = Reader::new(&[0xfb]);
        assert!(r.lenenc_int().is_err());
        assert_eq!(r.pos(), 0, "a refused NULL is not consumed");
        assert_eq!(r.lenenc_int_or_null(), Ok(None));
        assert!(r.is_empty());
        assert!(matches!(
            Reader::new(&[0xff]).lenenc_int(),
            Err(ProtocolError::Invalid(_))
        ));
        assert!(matches!(
            Reader::new(&[0xff]).lenenc_int_or_null(),
            Err(ProtocolError::Invalid(_))
        ));
    }

    #[test]
    fn truncated_reads_do_not_move_the_cursor() {
        for bytes in [
            &[][..],
            &[0xfc, 0x01],
            &[0xfd, 1, 2],
            &[0xfe, 1, 2, 3, 4, 5, 6, 7],
        ] {
            let mut r = Reader::new(bytes);
            assert!(matches!(r.lenenc_int(), Err(ProtocolError::Truncated(_))));
            assert_eq!(r.pos(), 0);
        }
        let mut r = Reader::new(&[0x05, b'a', b'b']);
        assert!(matches!(r.lenenc_str(), Err(ProtocolError::Truncated(_))));
        assert_eq!(r.pos(), 0);
        // A length that does not fit in memory is a truncation, not an overflow.
        let mut r = Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.lenenc_str(), Err(ProtocolError::Truncated(_))));
    }

    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_strings.html
    #[test]
    fn strings() {
        let mut r = Reader::new(b"\x03defroot\0tail");
        assert_eq!(r.lenenc_str().unwrap(), b"def");
        assert_eq!(r.null_str().unwrap(), b"root");
        assert_eq!(r.pos(), 9);
        assert_eq!(r.remaining(), 4);
        assert!(matches!(r.null_str(), Err(ProtocolError::Truncated(_))));
        assert_eq!(r.null_str_or_rest(), b"tail");
        assert!(r.is_empty());
        assert_eq!(r.rest(), b"");

        let mut out = Vec::new();
        write_lenenc_str(&mut out, b"def");
        assert_eq!(out, b"\x03def");
        let long = vec![b'x'; 300];
        out.clear();
        write_lenenc_str(&mut out, &long);
        assert_eq!(&out[..3], &[0xfc, 0x2c, 0x01]);
        assert_eq!(Reader::new(&out).lenenc_str().unwrap(), &long[..]);
    }

    #[test]
    fn fixed_ints() {
        let mut r = Reader::new(&[
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
        ]);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x0302);
        assert_eq!(r.u24().unwrap(), 0x06_0504);
        assert_eq!(r.u32().unwrap(), 0x0a09_0807);
        assert_eq!(r.u64().unwrap(), 0x1211_100f_0e0d_0c0b);
        assert!(r.is_empty());
        assert!(matches!(r.u8(), Err(ProtocolError::Truncated(_))));
        assert!(matches!(r.skip(1), Err(ProtocolError::Truncated(_))));
        assert!(matches!(
            r.bytes(usize::MAX),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(r.skip(0).is_ok());
    }

    #[test]
    fn field_renames_truncated_only() {
        let e: Result<u8> = Err(ProtocolError::Truncated("int<1>"));
        assert_eq!(e.field("charset"), Err(ProtocolError::Truncated("charset")));
        let e: Result<u8> = Err(ProtocolError::Invalid("x"));
        assert_eq!(e.field("charset"), Err(ProtocolError::Invalid("x")));
    }
}

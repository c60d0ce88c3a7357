//! The MySQL client/server wire protocol as a pure codec: bytes in, frames and
//! events out. No sockets, no clocks, no logging. Every decoder returns
//! `Err(ProtocolError)` on malformed input and never panics.
//!
//! References: <https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html>
//! and <https://mariadb.com/kb/en/clientserver-protocol/>.

pub mod auth;
pub mod caching_sha2;
pub mod change_user;
pub mod command;
pub mod consts;
pub mod deprecate_eof;
#[cfg(test)]
mod fuzz_smoke;
/// Entry points of the fuzz targets (`fuzz/`): only with the `fuzzing`
/// feature, so they are no part of the library's API.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod handshake;
pub mod lenenc;
pub mod mariadb_ext;
pub mod packet;
pub mod response;
pub mod session_track;
pub mod tracker;

use std::fmt;

/// Why a decoder refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The input ended before the field named here was complete.
    Truncated(&'static str),
    /// The input is complete but not a valid encoding of the thing named here.
    Invalid(&'static str),
    /// A packet or message is larger than the allowed maximum.
    TooLarge { len: usize, max: usize },
    /// A packet arrived with an unexpected sequence id.
    BadSequence { expected: u8, got: u8 },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Truncated(what) => write!(f, "truncated {what}"),
            ProtocolError::Invalid(what) => write!(f, "invalid {what}"),
            ProtocolError::TooLarge { len, max } => {
                write!(f, "packet of {len} bytes exceeds the limit of {max} bytes")
            }
            ProtocolError::BadSequence { expected, got } => {
                write!(f, "packet sequence id {got}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

pub type Result<T> = std::result::Result<T, ProtocolError>;

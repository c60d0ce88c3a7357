//! funnel: a connection-multiplexing daemon for MySQL and MariaDB.
//!
//! Thousands of client connections are authenticated by the funnel itself and
//! their commands are queued in a bounded backlog and run over a small, fixed
//! set of backend connections to mysqld.

// First: its `log_limited!` macro is used by the modules below.
#[macro_use]
pub mod log_limit;

pub mod admin;
pub mod config;
pub mod control;
pub mod health;
pub mod man;
pub mod process;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod tls_record;

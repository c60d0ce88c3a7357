//! funnel: a connection-multiplexing daemon for MySQL and MariaDB.
//!
//! Thousands of client connections are authenticated by the funnel itself and
//! their commands are queued in a bounded backlog and run over a small, fixed
//! set of backend connections to mysqld.

pub mod admin;
pub mod config;
pub mod man;
pub mod protocol;
pub mod server;

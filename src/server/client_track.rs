//! `CLIENT_SESSION_TRACK` for clients: what each client's OK packets say
//! about the session-state changes its own statements caused, as mysqld
//! would say it under that client's own `session_track_*` settings.
//!
//! Backends run with everything tracked (`session_track_schema`,
//! `session_track_state_change` on, `session_track_system_variables='*'`):
//! the funnel needs it. A client has its own settings, MariaDB's globals
//! at login (read with the baseline of every backend connection), changed
//! only by its own `SET session_track_...` (reported to the funnel like any
//! variable; such a client is pinned, and its backend then tracks what the
//! client set on top of the funnel's settings). Of the block the backend
//! sends, the client gets the entries its settings track, re-encoded as
//! mysqld writes them; the OKs of the funnel's own steps (replay,
//! read-backs) never reach a client.

use crate::protocol::session_track::{filter_session_state, session_state_changes, StateChange};
use crate::protocol::Result;
use std::sync::Arc;

/// `session_track_transaction_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionInfo {
    Off,
    State,
    Characteristics,
}

/// `session_track_system_variables`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackedVars {
    /// `*`
    All,
    /// Lowercase names. Shared: every client starts with its server's
    /// list and few ever change it (a change makes a new list).
    List(Arc<[String]>),
}

/// One client's `session_track_*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackSettings {
    pub schema: bool,
    pub state_change: bool,
    pub vars: TrackedVars,
    pub transaction_info: TransactionInfo,
}

/// MariaDB 10.11's defaults (`mariadbd --verbose --help`), until the
/// server's own globals have been read.
pub const DEFAULT_TRACKED_VARS: &str =
    "autocommit,character_set_client,character_set_connection,character_set_results,time_zone";

impl Default for TrackSettings {
    fn default() -> Self {
        TrackSettings {
            schema: true,
            state_change: false,
            vars: parse_vars(DEFAULT_TRACKED_VARS),
            transaction_info: TransactionInfo::Off,
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_uppercase().as_str() {
        "ON" | "1" | "TRUE" => Some(true),
        "OFF" | "0" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_vars(v: &str) -> TrackedVars {
    let mut names = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "*" {
            return TrackedVars::All;
        }
        names.push(name.to_ascii_lowercase());
    }
    TrackedVars::List(names.into())
}

fn parse_transaction_info(v: &str) -> Option<TransactionInfo> {
    match v.trim().to_ascii_uppercase().as_str() {
        "OFF" | "0" => Some(TransactionInfo::Off),
        "STATE" | "1" => Some(TransactionInfo::State),
        "CHARACTERISTICS" | "2" => Some(TransactionInfo::Characteristics),
        _ => None,
    }
}

impl TrackSettings {
    /// Sets one `session_track_*` variable to the value mysqld reported
    /// (or read); other names and values that do not parse change nothing.
    pub fn set(&mut self, name: &str, value: &str) {
        match name.to_ascii_lowercase().as_str() {
            "session_track_schema" => {
                if let Some(b) = parse_bool(value) {
                    self.schema = b;
                }
            }
            "session_track_state_change" => {
                if let Some(b) = parse_bool(value) {
                    self.state_change = b;
                }
            }
            "session_track_system_variables" => self.vars = parse_vars(value),
            "session_track_transaction_info" => {
                if let Some(t) = parse_transaction_info(value) {
                    self.transaction_info = t;
                }
            }
            _ => {}
        }
    }

    /// Takes the `session_track_*` changes of a state block (a client's own
    /// `SET session_track_...`); true if there were any. mysqld reports the
    /// statement that changes them under the new settings.
    pub fn update(&mut self, block: &[u8]) -> bool {
        let mut changed = false;
        for change in session_state_changes(block) {
            match change {
                Ok(StateChange::SystemVariable { name, value })
                    if name.len() > 14 && name[..14].eq_ignore_ascii_case(b"session_track_") =>
                {
                    self.set(
                        &String::from_utf8_lossy(name),
                        &String::from_utf8_lossy(value),
                    );
                    changed = true;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        changed
    }

    /// Would mysqld report this change to a client with these settings?
    pub fn keeps(&self, change: &StateChange<'_>) -> bool {
        match change {
            StateChange::SystemVariable { name, .. } => match &self.vars {
                TrackedVars::All => true,
                TrackedVars::List(names) => names
                    .iter()
                    .any(|n| n.as_bytes().eq_ignore_ascii_case(name)),
            },
            StateChange::Schema(_) => self.schema,
            StateChange::StateChanged(_) => self.state_change,
            StateChange::TransactionState(_) => self.transaction_info != TransactionInfo::Off,
            StateChange::TransactionCharacteristics(_) => {
                self.transaction_info == TransactionInfo::Characteristics
            }
            // MariaDB has no session_track_gtids; nothing else is known.
            StateChange::Gtids(_) | StateChange::Unknown { .. } => false,
        }
    }

    /// Appends to `out` what of a backend's state block this client gets;
    /// returns how many entries. mysqld writes the entries by tracker
    /// (variables, schema, state flag, transaction), and the variables in
    /// the order of its tracker's hash of the tracked variables (fixed for
    /// one server process, not for another: `order`, learned by the
    /// funnel); a backend that tracks `*` writes them in the order it first
    /// saw them change. With the list `order` has, the variables are put
    /// in that order.
    pub fn filter(&self, block: &[u8], out: &mut Vec<u8>, order: &[String]) -> Result<usize> {
        let ordered = matches!(&self.vars, TrackedVars::List(names)
            if !order.is_empty() && names.len() == order.len()
                && names.iter().all(|n| order.contains(n)));
        if !ordered {
            return filter_session_state(block, out, |c| self.keeps(c));
        }
        let mut kept = 0;
        for name in order {
            kept += filter_session_state(
                block,
                out,
                |c| matches!(c, StateChange::SystemVariable { name: n, .. } if n.eq_ignore_ascii_case(name.as_bytes())),
            )?;
        }
        kept += filter_session_state(block, out, |c| {
            !matches!(c, StateChange::SystemVariable { .. }) && self.keeps(c)
        })?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::session_track::encode_state_change;

    fn block(changes: &[StateChange<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in changes {
            encode_state_change(&mut out, c);
        }
        out
    }

    fn var<'a>(name: &'a str, value: &'a str) -> StateChange<'a> {
        StateChange::SystemVariable {
            name: name.as_bytes(),
            value: value.as_bytes(),
        }
    }

    #[test]
    fn defaults_keep_schema_and_five_variables() {
        let t = TrackSettings::default();
        // What a backend reports for `SET NAMES koi8r` (tracking '*' and
        // the state flag), and what mysqld tells a default client.
        let backend = block(&[
            var("character_set_client", "koi8r"),
            var("character_set_connection", "koi8r"),
            var("character_set_results", "koi8r"),
            var("collation_connection", "koi8r_general_ci"),
            StateChange::StateChanged(true),
        ]);
        // In the order this server writes the default list's variables.
        let order: Vec<String> = [
            "autocommit",
            "character_set_connection",
            "character_set_client",
            "time_zone",
            "character_set_results",
        ]
        .map(String::from)
        .to_vec();
        let mut out = Vec::new();
        assert_eq!(t.filter(&backend, &mut out, &order), Ok(3));
        assert_eq!(
            out,
            block(&[
                var("character_set_connection", "koi8r"),
                var("character_set_client", "koi8r"),
                var("character_set_results", "koi8r"),
            ])
        );
        // Without a learned order (or for another list): the backend's.
        out.clear();
        assert_eq!(t.filter(&backend, &mut out, &[]), Ok(3));
        assert_eq!(
            out,
            block(&[
                var("character_set_client", "koi8r"),
                var("character_set_connection", "koi8r"),
                var("character_set_results", "koi8r"),
            ])
        );
        out.clear();
        assert_eq!(t.filter(&backend, &mut out, &order[1..]), Ok(3));
        assert!(out.starts_with(&block(&[var("character_set_client", "koi8r")])));
        out.clear();
        let backend = block(&[var("sql_mode", ""), StateChange::StateChanged(true)]);
        assert_eq!(t.filter(&backend, &mut out, &[]), Ok(0));
        let backend = block(&[
            StateChange::Schema(b"mysql"),
            StateChange::StateChanged(true),
        ]);
        assert_eq!(t.filter(&backend, &mut out, &[]), Ok(1));
        assert_eq!(out, block(&[StateChange::Schema(b"mysql")]));
    }

    #[test]
    fn a_clients_own_settings_apply_to_the_statement_that_sets_them() {
        let mut t = TrackSettings::default();
        let backend = block(&[
            var("session_track_system_variables", "*"),
            StateChange::StateChanged(true),
        ]);
        assert!(t.update(&backend));
        assert_eq!(t.vars, TrackedVars::All);
        let mut out = Vec::new();
        assert_eq!(t.filter(&backend, &mut out, &[]), Ok(1));
        assert!(t.update(&block(&[var("SESSION_TRACK_STATE_CHANGE", "ON")])));
        assert!(t.state_change);
        assert!(t.update(&block(&[var("session_track_schema", "OFF")])));
        assert!(!t.schema);
        assert!(t.update(&block(&[var("session_track_transaction_info", "STATE")])));
        assert!(t.keeps(&StateChange::TransactionState(b"T_______")));
        assert!(!t.keeps(&StateChange::TransactionCharacteristics(b"")));
        assert!(t.update(&block(&[var(
            "session_track_system_variables",
            " Time_Zone ,"
        )])));
        assert_eq!(t.vars, TrackedVars::List(vec!["time_zone".into()].into()));
        assert!(t.keeps(&var("TIME_ZONE", "+00:00")));
        assert!(!t.update(&block(&[var("time_zone", "+00:00")])));
        // A value that does not parse changes nothing.
        t.set("session_track_schema", "maybe");
        assert!(!t.schema);
    }
}

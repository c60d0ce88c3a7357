//! The admin console's `SET key = value`: the running configuration with one
//! setting changed, checked as the file's would be (same messages), built
//! anew from the settings as given so that `[pool]` values still reach the
//! users that do not override them.

use std::fmt;

use super::lexer::{header_text, suggest, unknown_key_message, Entry, RawSection};
use super::options::{find_spec, OptionSpec, Section, OPTIONS};
use super::validate::build;
use super::value::parse_value;
use super::Config;

/// Why a `SET` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// No such key, or no such section or user in this configuration.
    Unknown(String),
    /// A key only a restart can change.
    ReadOnly(String),
    /// The value, or the configuration with it, is invalid: the message the
    /// file would get, after the qualified key.
    Invalid(String),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Unknown(m) | SetError::ReadOnly(m) | SetError::Invalid(m) => {
                write!(f, "{m}")
            }
        }
    }
}

/// A reloadable key as `SET` names it: `key` (a key of `[funnel]`,
/// `[backend]`, `[pool]`, `[admin]` or `[stats]` that only one of them
/// has), `section.key`, or `user.NAME.key` (NAME in backquotes if it holds
/// a dot). Section and key are case-insensitive, NAME is not.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    section: Section,
    /// The NAME of `[user NAME]`.
    user: Option<String>,
    spec: &'static OptionSpec,
}

impl fmt::Display for Setting {
    /// As in the file's error messages: `[pool] queue_timeout_ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = header_text(self.section, self.user.as_deref());
        write!(f, "{header} {}", self.spec.name)
    }
}

impl Setting {
    pub fn parse(name: &str) -> Result<Setting, SetError> {
        let unquote = |s: &str| s.trim().trim_matches('`').to_string();
        let (qualifier, key) = match name.trim().rsplit_once('.') {
            Some((q, k)) => (Some(q), unquote(k).to_ascii_lowercase()),
            None => (None, unquote(name).to_ascii_lowercase()),
        };
        let Some(qualifier) = qualifier else {
            return Setting::bare(&key);
        };
        let (word, user) = match qualifier.split_once('.') {
            Some((word, user)) => (word, Some(unquote(user))),
            None => (qualifier, None),
        };
        let word = unquote(word).to_ascii_lowercase();
        let section = Section::from_name(&word).ok_or_else(|| {
            SetError::Unknown(format!(
                "unknown section [{word}]; SET takes key, section.key or user.NAME.key"
            ))
        })?;
        match (section, &user) {
            (named, None) if named.takes_name() => {
                return Err(SetError::Unknown(format!(
                    "[{0} NAME] keys are set per {0}: {0}.NAME.{key}",
                    named.name()
                )))
            }
            (named, Some(name)) if named.takes_name() && name.is_empty() => {
                return Err(SetError::Unknown(format!(
                    "the {} name must not be empty",
                    named.name()
                )))
            }
            (named, Some(_)) if named.takes_name() => {}
            (other, Some(_)) => {
                return Err(SetError::Unknown(format!(
                    "[{}] takes no name: {}.{key}",
                    other.name(),
                    other.name()
                )))
            }
            (_, None) => {}
        }
        let spec = find_spec(section, &key)
            .ok_or_else(|| SetError::Unknown(unknown_key_message(section, &key)))?;
        Setting {
            section,
            user,
            spec,
        }
        .reloadable()
    }

    /// A key without its section: the one non-user section that has it.
    fn bare(key: &str) -> Result<Setting, SetError> {
        let sections = || OPTIONS.iter().filter(|s| !s.section.takes_name());
        let found: Vec<&'static OptionSpec> = sections().filter(|s| s.name == key).collect();
        match found[..] {
            [spec] => Setting {
                section: spec.section,
                user: None,
                spec,
            }
            .reloadable(),
            [] if find_spec(Section::User, key).is_some() => Err(SetError::Unknown(format!(
                "{key:?} is a [user NAME] key: user.NAME.{key}"
            ))),
            [] => Err(SetError::Unknown(
                match suggest(key, sections().map(|s| s.name)) {
                    Some(close) => format!("unknown key {key:?} (did you mean {close:?}?)"),
                    None => format!("unknown key {key:?}"),
                },
            )),
            _ => {
                let names: Vec<String> = found.iter().map(|s| s.section.to_string()).collect();
                Err(SetError::Unknown(format!(
                    "{key:?} is a key of {}: name the section, as in {}.{key}",
                    names.join(", "),
                    found[0].section.name()
                )))
            }
        }
    }

    fn reloadable(self) -> Result<Setting, SetError> {
        if self.spec.reloadable {
            Ok(self)
        } else {
            Err(SetError::ReadOnly(format!(
                "{self} is read only: a reload cannot change it, a restart with it changed in the file can"
            )))
        }
    }
}

impl Config {
    /// The configuration as if the file (as it was read, with the SETs
    /// since) gave `setting` as `value`, or, for `None` (`DEFAULT`), did not
    /// give it. `value` is the text as it would stand in the file, unquoted.
    /// Everything is built and checked anew, as on a reload: secrets given
    /// by `_file` or `_env` are read again.
    pub fn set(&self, setting: &Setting, value: Option<&str>) -> Result<Config, SetError> {
        let mut sections = self.given.0.clone();
        let at = sections
            .iter()
            .position(|s| s.section == setting.section && s.name == setting.user);
        let at = match (at, setting.section) {
            (Some(at), _) => at,
            // Absent: all defaults, as if the file had an empty one.
            (None, Section::Funnel | Section::Backend | Section::Pool) => {
                sections.push(RawSection {
                    section: setting.section,
                    name: None,
                    line: 0,
                    entries: Vec::new(),
                });
                sections.len() - 1
            }
            (None, named) if named.takes_name() => {
                return Err(SetError::Unknown(format!(
                    "no {} in the configuration",
                    header_text(named, setting.user.as_deref())
                )))
            }
            (None, section) => {
                return Err(SetError::Unknown(format!(
                    "no {section} section in the configuration; adding one needs a restart"
                )))
            }
        };
        let entries = &mut sections[at].entries;
        entries.retain(|e| e.spec.name != setting.spec.name);
        if let Some(value) = value {
            let value = parse_value(setting.spec.kind, value)
                .map_err(|m| SetError::Invalid(format!("{setting}: {m}")))?;
            // Line 0: given by SET, not by a line of the file.
            entries.push(Entry {
                spec: setting.spec,
                value,
                line: 0,
            });
        }
        build(&sections, &self.source).map_err(|e| {
            SetError::Invalid(match e.key {
                Some(key) => format!("{key}: {}", e.message),
                None => e.message,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{fail, parse, with_funnel, BASE};
    use std::time::Duration;

    fn setting(name: &str) -> Setting {
        Setting::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn refused(name: &str) -> SetError {
        match Setting::parse(name) {
            Ok(s) => panic!("{name}: accepted as {s}"),
            Err(e) => e,
        }
    }

    #[test]
    fn names() {
        for (name, shown) in [
            ("queue_timeout_ms", "[pool] queue_timeout_ms"),
            ("Max_Client_Connections", "[funnel] max_client_connections"),
            (
                "funnel.max_client_connections",
                "[funnel] max_client_connections",
            ),
            ("`user`.app.queue_timeout_ms", "[user app] queue_timeout_ms"),
            (
                "user.`we.ird`.max_client_connections",
                "[user we.ird] max_client_connections",
            ),
            (
                "user.`report writer`.connections",
                "[user \"report writer\"] connections",
            ),
            ("stats.health_backlog_ratio", "[stats] health_backlog_ratio"),
        ] {
            assert_eq!(setting(name).to_string(), shown, "{name}");
        }

        let unknown = |name: &str, part: &str| match refused(name) {
            SetError::Unknown(m) => assert!(m.contains(part), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        };
        unknown("queue_timeout", "did you mean \"queue_timeout_ms\"");
        unknown("frobnicate", "unknown key \"frobnicate\"");
        unknown("allowed_networks", "user.NAME.allowed_networks");
        unknown("listen", "[funnel], [admin], [stats]");
        unknown(
            "pool.max_client_connections",
            "belongs in [funnel] or [user NAME]",
        );
        unknown("user.queue_timeout_ms", "user.NAME.queue_timeout_ms");
        unknown("pool.app.connections", "[pool] takes no name");
        unknown("mysqld.x", "unknown section [mysqld]");

        for name in [
            "funnel.listen",
            "backend.address",
            "unix_socket",
            "stats.stats_token",
        ] {
            match refused(name) {
                SetError::ReadOnly(m) => assert!(m.contains("read only"), "{name}: {m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn pool_values_reach_the_users_that_do_not_override_them() {
        let config = parse(&format!(
            "{BASE}[user other]\npassword = p\nqueue_timeout_ms = 70\n"
        ));
        let new = config
            .set(&setting("queue_timeout_ms"), Some("50"))
            .unwrap();
        assert_eq!(new.users[0].queue_timeout, Duration::from_millis(50));
        assert_eq!(new.users[1].queue_timeout, Duration::from_millis(70));
        // changes() lists exactly the one key, as a reload would.
        assert_eq!(
            config.changes(&new),
            vec!["[user app] queue_timeout_ms: 10000 -> 50"]
        );
        // A second SET starts from the first one's result.
        let newer = new
            .set(&setting("user.other.queue_timeout_ms"), Some("30"))
            .unwrap();
        assert_eq!(newer.users[0].queue_timeout, Duration::from_millis(50));
        assert_eq!(newer.users[1].queue_timeout, Duration::from_millis(30));
        // DEFAULT: as if the file did not give it; the user inherits again.
        let back = newer
            .set(&setting("user.other.queue_timeout_ms"), None)
            .unwrap();
        assert_eq!(back.users[1].queue_timeout, Duration::from_millis(50));
        let back = back.set(&setting("pool.queue_timeout_ms"), None).unwrap();
        assert_eq!(back.users[0].queue_timeout, config.users[0].queue_timeout);
        assert!(back.describe().contains("queue_timeout_ms = 10000\n"));
    }

    #[test]
    fn values_are_checked_as_in_the_file() {
        let config = parse(&with_funnel("max_client_connections = 100"));
        let new = config
            .set(&setting("max_client_connections"), Some("5"))
            .unwrap();
        assert_eq!(new.max_client_connections, 5);
        assert!(new.describe().contains("max_client_connections = 5\n"));
        assert_eq!(new.source, config.source);
        // The same message as the file gets, after the qualified key.
        for (name, value, file_line) in [
            ("max_client_connections", "0", "max_client_connections = 0"),
            ("log_level", "loud", "log_level = loud"),
            (
                "output_high_watermark",
                "128K",
                "output_high_watermark = 128K",
            ),
            ("server_version", "MySQL", "server_version = MySQL"),
        ] {
            let e = config.set(&setting(name), Some(value)).unwrap_err();
            let file = fail(&with_funnel(file_line));
            let expected = format!("{}: {}", file.key.unwrap(), file.message);
            assert_eq!(e, SetError::Invalid(expected), "{name} = {value}");
        }
        let e = config
            .set(&setting("pool.queue_timeout_ms"), Some("5s"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("[pool] queue_timeout_ms: expected a whole number of milliseconds"),
            "{e}"
        );
        // Refused: the configuration is unchanged (SET returns a new one).
        assert_eq!(config.max_client_connections, 100);
    }

    #[test]
    fn absent_sections_and_users() {
        let config = parse(BASE);
        // [funnel] and [pool] may be absent from the file: all defaults.
        let new = config.set(&setting("pool.connections"), Some("3")).unwrap();
        assert_eq!(new.users[0].connections, 3);
        let e = config
            .set(&setting("user.nobody.connections"), Some("3"))
            .unwrap_err();
        assert_eq!(
            e,
            SetError::Unknown("no [user nobody] in the configuration".into())
        );
        let e = config
            .set(&setting("stats.health_backlog_ratio"), Some("0.5"))
            .unwrap_err();
        assert!(
            matches!(e, SetError::Unknown(ref m) if m.contains("needs a restart")),
            "{e}"
        );
    }

    #[test]
    fn secrets_stay_masked() {
        let config = parse(BASE);
        let new = config
            .set(&setting("user.app.backend_password"), Some("n3w-pw"))
            .unwrap();
        assert_eq!(new.users[0].backend_password, "n3w-pw");
        assert_eq!(
            config.changes(&new),
            vec!["[user app] backend_password changed"]
        );
        for shown in [new.describe(), format!("{new:?}")] {
            assert!(!shown.contains("n3w-pw"), "{shown}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}

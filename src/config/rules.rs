//! `[rule NAME]` sections: query rules, tried in the order of the file;
//! the first whose conditions all hold decides what happens to a statement.
//!
//! ```ini
//! [rule hot_products]
//! user = app                      # conditions, all optional (unset: any)
//! schema = shop
//! digest = "SELECT * FROM products WHERE id = ?"
//! pattern = "(?i)^select .* from products"
//! cache_ttl_ms = 2000             # the action: one of cache_ttl_ms, block
//! max_concurrency = 4             # and/or limits (not with block)
//! rate_limit = 100                # per second, bursts of rate_burst
//! timeout_ms = 5000               # KILL QUERY past it
//! route = primary                 # or replica (read_write_split users)
//! ```
//!
//! The engine's side (matching, counters, the cache) is
//! `server/rules.rs` and `server/result_cache.rs`.

use std::fmt;
use std::time::Duration;

use super::lexer::{header_text, RawSection};
use super::options::Section;
use super::{ConfigError, ServerRole};

/// The rules, in file order, and the result cache's bounds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryRules {
    pub rules: Vec<RuleConfig>,
    /// `[funnel] cache_size`: bytes of cached results; 0 = no cache.
    pub cache_size: usize,
    /// `[funnel] cache_max_result_size`: a larger result is not cached.
    pub cache_max_result_size: usize,
    /// `[funnel] cache_invalidation`: writes through the funnel make
    /// cached reads of their tables stale.
    pub invalidate_on_write: bool,
    /// The users' own limits (`[pool]`/`[user]` `max_concurrency`,
    /// `rate_limit`), as rules named after the user that match all its
    /// statements, besides any `[rule]` that matches them too.
    pub user_limits: Vec<RuleConfig>,
}

/// One `[rule NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub name: String,
    pub user: Option<String>,
    pub schema: Option<String>,
    /// A statement shape as `SHOW QUERIES` shows it (or a statement, which
    /// the engine normalizes the same way).
    pub digest: Option<String>,
    pub pattern: Option<Pattern>,
    pub action: RuleAction,
    /// Matching statements running on mysqld at once, at most; more wait.
    pub max_concurrency: Option<usize>,
    /// Matching statements started per second at most, and how many may
    /// start at once after a quiet time: (rate_limit, rate_burst).
    pub rate: Option<(usize, usize)>,
    /// A matching statement still running this long after it was sent is
    /// killed on mysqld (`KILL QUERY`).
    pub timeout: Option<Duration>,
    /// `route`: the role of the servers a matching statement goes to in a
    /// `read_write_split` pool (a replica: plain reads only).
    pub route: Option<ServerRole>,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Reads that may be cached are answered from the cache this long.
    Cache { ttl: Duration },
    /// The statement is refused with this message.
    Block { message: String },
    /// It runs as usual (the rule only limits or routes).
    Run,
}

/// A compiled regular expression on the statement's bytes (a statement
/// need not be UTF-8); equal when written the same.
#[derive(Clone)]
pub struct Pattern(pub regex::bytes::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

/// Compiled patterns are bounded: a rule's regex runs on every statement.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The NAME of a `[rule NAME]` header.
pub(super) fn check_name(name: Option<String>) -> Result<String, String> {
    match name {
        None => Err("[rule] needs a name: [rule NAME]".to_string()),
        Some(name) if name.is_empty() => Err("the rule name must not be empty".to_string()),
        Some(name) if name.chars().any(char::is_control) => {
            Err("control characters are not allowed in a rule name".to_string())
        }
        Some(name) => Ok(name),
    }
}

/// The `[rule]` sections of the file, checked.
pub(super) fn build(
    sections: &[RawSection],
    source: &str,
    cache_size: usize,
    cache_max_result_size: usize,
) -> Result<QueryRules, ConfigError> {
    let mut rules = Vec::new();
    for raw in sections.iter().filter(|s| s.section == Section::Rule) {
        let name = raw.name.clone().unwrap_or_default();
        let header = header_text(Section::Rule, Some(&name));
        let err = |key: Option<&str>, message: String| ConfigError {
            source: source.to_string(),
            line: Some(
                key.and_then(|k| raw.entries.iter().find(|e| e.spec.name == k))
                    .map_or(raw.line, |e| e.line),
            ),
            key: key.map(|k| format!("{header} {k}")),
            message,
        };
        let text = |key: &str| {
            raw.entries
                .iter()
                .find(|e| e.spec.name == key)
                .and_then(|e| e.value.clone().text())
        };
        let non_empty = |key: &str| -> Result<Option<String>, ConfigError> {
            match text(key) {
                Some(t) if t.trim().is_empty() => Err(err(
                    Some(key),
                    "must not be empty (leave it out for any)".into(),
                )),
                other => Ok(other),
            }
        };
        let user = non_empty("user")?;
        let schema = non_empty("schema")?;
        let digest = non_empty("digest")?;
        let pattern = match non_empty("pattern")? {
            None => None,
            Some(p) => Some(Pattern(
                regex::bytes::RegexBuilder::new(&p)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| err(Some("pattern"), format!("not a regular expression: {e}")))?,
            )),
        };
        let ttl = raw
            .entries
            .iter()
            .find(|e| e.spec.name == "cache_ttl_ms")
            .and_then(|e| e.value.clone().millis());
        let block = text("block");
        let max_concurrency = raw
            .entries
            .iter()
            .find(|e| e.spec.name == "max_concurrency")
            .and_then(|e| e.value.clone().count());
        let count = |key: &str| {
            raw.entries
                .iter()
                .find(|e| e.spec.name == key)
                .and_then(|e| e.value.clone().count())
        };
        let rate = match (count("rate_limit"), count("rate_burst")) {
            (Some(limit), burst) => Some((limit, burst.unwrap_or(limit))),
            (None, Some(_)) => {
                return Err(err(
                    Some("rate_burst"),
                    "needs rate_limit (the rate it bursts above)".into(),
                ))
            }
            (None, None) => None,
        };
        let timeout = raw
            .entries
            .iter()
            .find(|e| e.spec.name == "timeout_ms")
            .and_then(|e| e.value.clone().millis());
        let route = match non_empty("route")? {
            None => None,
            Some(r) => match r.trim() {
                "primary" => Some(ServerRole::Primary),
                "replica" => Some(ServerRole::Replica),
                other => {
                    return Err(err(
                        Some("route"),
                        format!("must be primary or replica, got {other:?}"),
                    ))
                }
            },
        };
        let limits = max_concurrency.is_some() || rate.is_some() || timeout.is_some();
        let action = match (ttl, block) {
            (Some(ttl), None) => RuleAction::Cache { ttl },
            (None, Some(_)) if route.is_some() => {
                return Err(err(
                    Some("route"),
                    "a rule that blocks has nowhere to route: route goes without block".into(),
                ))
            }
            (None, Some(_)) if limits => {
                return Err(err(
                    Some(if timeout.is_some() {
                        "timeout_ms"
                    } else if rate.is_some() {
                        "rate_limit"
                    } else {
                        "max_concurrency"
                    }),
                    "a rule that blocks has nothing to limit: max_concurrency, rate_limit and timeout_ms go without block"
                        .into(),
                ))
            }
            (None, Some(message)) => RuleAction::Block { message },
            (Some(_), Some(_)) => {
                return Err(err(
                    Some("block"),
                    "a rule has one action: cache_ttl_ms or block, not both".into(),
                ))
            }
            (None, None) if limits || route.is_some() => RuleAction::Run,
            (None, None) => {
                return Err(err(
                    None,
                    format!(
                        "{header} has no action: give cache_ttl_ms, block, max_concurrency, rate_limit, timeout_ms or route"
                    ),
                ))
            }
        };
        rules.push(RuleConfig {
            name,
            user,
            schema,
            digest,
            pattern,
            action,
            max_concurrency,
            rate,
            timeout,
            route,
        });
    }
    Ok(QueryRules {
        rules,
        cache_size,
        cache_max_result_size,
        invalidate_on_write: true,
        user_limits: Vec::new(),
    })
}

/// A user's own limits as a rule matching its statements, if it has any.
pub(super) fn user_limit(user: &super::UserConfig) -> Option<RuleConfig> {
    (user.max_concurrency.is_some() || user.rate.is_some()).then(|| RuleConfig {
        name: user.name.clone(),
        user: Some(user.name.clone()),
        schema: None,
        digest: None,
        pattern: None,
        action: RuleAction::Run,
        max_concurrency: user.max_concurrency,
        rate: user.rate,
        timeout: None,
        route: None,
    })
}

impl RuleConfig {
    /// The section's settings as the file would give them (`SHOW CONFIG`).
    pub(super) fn effective(&self) -> (String, Vec<(&'static str, String)>) {
        use super::lexer::quote;
        let mut entries = Vec::new();
        let conditions = [
            ("user", self.user.as_deref()),
            ("schema", self.schema.as_deref()),
            ("digest", self.digest.as_deref()),
            ("pattern", self.pattern.as_ref().map(|p| p.0.as_str())),
        ];
        for (key, value) in conditions {
            if let Some(value) = value {
                entries.push((key, quote(value)));
            }
        }
        match &self.action {
            RuleAction::Cache { ttl } => {
                entries.push(("cache_ttl_ms", ttl.as_millis().to_string()))
            }
            RuleAction::Block { message } => entries.push(("block", quote(message))),
            RuleAction::Run => {}
        }
        if let Some(n) = self.max_concurrency {
            entries.push(("max_concurrency", n.to_string()));
        }
        if let Some((limit, burst)) = self.rate {
            entries.push(("rate_limit", limit.to_string()));
            entries.push(("rate_burst", burst.to_string()));
        }
        if let Some(t) = self.timeout {
            entries.push(("timeout_ms", t.as_millis().to_string()));
        }
        if let Some(role) = self.route {
            entries.push(("route", role.name().to_string()));
        }
        (header_text(Section::Rule, Some(&self.name)), entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{with_funnel, BASE};
    use crate::config::Config;

    fn rules(extra: &str) -> Result<QueryRules, ConfigError> {
        Config::parse(&format!("{BASE}{extra}"), "t.conf").map(|c| c.rules)
    }

    #[test]
    fn rules_in_file_order_with_their_actions() {
        let r = rules(
            "[rule a]\nuser = app\npattern = \"(?i)^select\"\ncache_ttl_ms = 1500\n\
             [rule \"no deletes\"]\ndigest = \"DELETE FROM t\"\nblock = \"deletes are off\"\n",
        )
        .unwrap();
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.rules[0].name, "a");
        assert_eq!(r.rules[0].user.as_deref(), Some("app"));
        assert!(r.rules[0].pattern.as_ref().unwrap().0.is_match(b"SeLeCt 1"));
        assert_eq!(
            r.rules[0].action,
            RuleAction::Cache {
                ttl: Duration::from_millis(1500)
            }
        );
        assert_eq!(r.rules[1].name, "no deletes");
        assert_eq!(
            r.rules[1].action,
            RuleAction::Block {
                message: "deletes are off".into()
            }
        );
        assert_eq!(r.cache_size, crate::config::DEFAULT_CACHE_SIZE);
        let c = Config::parse(
            &with_funnel("cache_size = 0\ncache_max_result_size = 4K"),
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.rules.cache_size, c.rules.cache_max_result_size),
            (0, 4096)
        );
    }

    #[test]
    fn bad_rules_are_located() {
        let cases = [
            ("[rule]\nblock = x\n", "needs a name"),
            ("[rule a]\nuser = app\n", "has no action"),
            ("[rule a]\ncache_ttl_ms = 5\nblock = x\n", "not both"),
            (
                "[rule a]\nmax_concurrency = 2\nblock = x\n",
                "go without block",
            ),
            ("[rule a]\nmax_concurrency = 0\n", "whole number >= 1"),
            ("[rule a]\nrate_burst = 5\n", "needs rate_limit"),
            ("[rule a]\nrate_limit = 5\nblock = x\n", "go without block"),
            ("[rule a]\ntimeout_ms = 5\nblock = x\n", "go without block"),
            (
                "[rule a]\npattern = \"(unclosed\"\nblock = x\n",
                "not a regular expression",
            ),
            ("[rule a]\nuser = \"\"\nblock = x\n", "must not be empty"),
            ("[rule a]\ncache_ttl_ms = 0\n", "milliseconds"),
            (
                "[rule a]\nblock = x\n[rule a]\nblock = y\n",
                "rule \"a\" is defined twice",
            ),
            ("[rule a]\nttl = 5\n", "unknown key"),
            ("[rule a]\nroute = any\n", "must be primary or replica"),
            (
                "[rule a]\nroute = primary\nblock = x\n",
                "route goes without block",
            ),
        ];
        for (text, want) in cases {
            let e = rules(text).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(e.line.is_some(), "{text:?}: {e}");
        }
        let e = rules("[rule a]\nuser = app\npattern = \"a(\"\nblock = x\n").unwrap_err();
        let base_lines = BASE.lines().count();
        assert_eq!(e.line, Some(base_lines + 3));
        assert_eq!(e.key.as_deref(), Some("[rule a] pattern"));
    }

    #[test]
    fn rules_show_in_the_effective_config() {
        let c = Config::parse(
            &format!(
                "{BASE}[rule r1]\nschema = shop\ncache_ttl_ms = 250\n\
                 [rule r2]\nuser = u\nmax_concurrency = 3\n\
                 [rule r3]\nrate_limit = 10\n\
                 [rule r4]\npattern = report\nroute = primary\n"
            ),
            "t",
        )
        .unwrap();
        let text = c.describe();
        assert!(
            text.contains("[rule r1]\nschema = \"shop\"\ncache_ttl_ms = 250\n"),
            "{text}"
        );
        assert!(
            text.contains("[rule r2]\nuser = \"u\"\nmax_concurrency = 3\n"),
            "{text}"
        );
        assert_eq!(c.rules.rules[1].action, RuleAction::Run);
        // rate_burst defaults to one second's worth.
        assert_eq!(c.rules.rules[2].rate, Some((10, 10)));
        assert!(
            text.contains("[rule r3]\nrate_limit = 10\nrate_burst = 10\n"),
            "{text}"
        );
        assert_eq!(c.rules.rules[3].route, Some(ServerRole::Primary));
        assert_eq!(c.rules.rules[3].action, RuleAction::Run);
        assert!(
            text.contains("[rule r4]\npattern = \"report\"\nroute = primary\n"),
            "{text}"
        );
        // And read back the same.
        let again = Config::parse(&text.replace("********", "x"), "t").unwrap();
        assert_eq!(again.rules.rules, c.rules.rules);
    }
}

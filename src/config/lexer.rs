//! Syntax: lines -> sections of checked values.

use super::options::{find_spec, OptionSpec, Section, OPTIONS, SECTIONS};
use super::value::{parse_value, Value};
use super::ConfigError;

#[derive(Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) spec: &'static OptionSpec,
    pub(super) value: Value,
    pub(super) line: usize,
}

#[derive(Clone, PartialEq)]
pub(super) struct RawSection {
    pub(super) section: Section,
    /// The NAME of `[user NAME]`.
    pub(super) name: Option<String>,
    pub(super) line: usize,
    pub(super) entries: Vec<Entry>,
}

pub(super) fn header_text(section: Section, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("[{} {}]", section.name(), header_name(name)),
        None => format!("[{}]", section.name()),
    }
}

/// A user name as written in a header: bare when that reads back the same.
fn header_name(name: &str) -> String {
    let bare = !name.is_empty()
        && !name.starts_with('"')
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ']' | '#' | ';' | '\\'));
    if bare {
        name.to_string()
    } else {
        quote(name)
    }
}

/// A double-quoted value that reads back as `s`.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reads a quoted string whose opening quote is already consumed; returns
/// the content and what follows the closing quote.
fn read_quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((_, e)) => {
                    return Err(format!(
                        "unknown escape \\{e} in quoted value (only \\\" and \\\\ are escapes)"
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("missing closing double quote".to_string())
}

/// Text after `#` that starts the value or follows whitespace is a comment;
/// a `#` inside a word (`pa#ss`) is not.
fn strip_trailing_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &s[..i];
        }
    }
    s
}

fn is_comment_or_empty(s: &str) -> bool {
    let s = s.trim_start();
    s.is_empty() || s.starts_with('#')
}

/// The value part of `key = value`, unquoted and without trailing comment.
pub(super) fn unquote_value(rest: &str) -> Result<String, String> {
    let v = rest.trim_start();
    if let Some(inner) = v.strip_prefix('"') {
        let (content, tail) = read_quoted(inner)?;
        if !is_comment_or_empty(tail) {
            return Err(format!(
                "unexpected text after the closing quote: {:?}",
                tail.trim()
            ));
        }
        Ok(content)
    } else {
        Ok(strip_trailing_comment(v).trim_end().to_string())
    }
}

/// `[word]`, `[user NAME]` or `[user "NAME"]`, with an optional comment.
pub(super) fn parse_header(line: &str) -> Result<(Section, Option<String>), String> {
    let inner = line.get(1..).unwrap_or("").trim_start();
    let word_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(inner.len());
    let word = &inner[..word_end];
    let after = inner[word_end..].trim_start();
    let (name, tail) = if let Some(quoted) = after.strip_prefix('"') {
        let (name, rest) = read_quoted(quoted)?;
        match rest.trim_start().strip_prefix(']') {
            Some(tail) => (Some(name), tail),
            None => return Err("expected ']' after the quoted name".to_string()),
        }
    } else {
        match after.find(']') {
            Some(close) => {
                let name = after[..close].trim();
                let name = (!name.is_empty()).then(|| name.to_string());
                (name, &after[close + 1..])
            }
            None => return Err(format!("missing ']' in section header {line:?}")),
        }
    };
    if !is_comment_or_empty(tail) {
        return Err(format!("unexpected text after ']': {:?}", tail.trim()));
    }
    let section = Section::from_name(word).ok_or_else(|| {
        let names: Vec<&str> = SECTIONS.iter().map(|s| s.name()).collect();
        let mut msg = format!("unknown section [{word}]");
        if let Some(close) = suggest(word, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean [{close}]?)"));
        } else {
            msg.push_str(
                "; sections are [funnel], [backend], [server NAME], [pool], [user NAME], [admin], [stats] and [rule NAME]",
            );
        }
        msg
    })?;
    match (section, name) {
        (Section::Rule, name) => super::rules::check_name(name).map(|n| (Section::Rule, Some(n))),
        (named, None) if named.takes_name() => Err(format!(
            "[{0}] needs a name: [{0} NAME]{1}",
            named.name(),
            if named == Section::User {
                " (the MySQL user name clients log in with)"
            } else {
                ""
            }
        )),
        (named, Some(name)) if named.takes_name() && name.is_empty() => {
            Err(format!("the {} name must not be empty", named.name()))
        }
        (named, Some(name)) if named.takes_name() && name.chars().any(char::is_control) => {
            Err(format!(
                "control characters are not allowed in a {} name",
                named.name()
            ))
        }
        (named, Some(name)) if named.takes_name() => Ok((named, Some(name))),
        (other, Some(name)) => Err(format!(
            "[{}] takes no name (got {name:?}); only [user NAME], [server NAME] and [rule NAME] do",
            other.name()
        )),
        (other, None) => Ok((other, None)),
    }
}

/// Why `key` is not allowed in `section`, with a hint where possible.
pub(super) fn unknown_key_message(section: Section, key: &str) -> String {
    let here = OPTIONS
        .iter()
        .filter(|s| s.section == section)
        .map(|s| s.name);
    if let Some(close) = suggest(key, here) {
        return format!("unknown key {key:?} (did you mean {close:?}?)");
    }
    let elsewhere: Vec<String> = SECTIONS
        .iter()
        .filter(|s| **s != section && find_spec(**s, key).is_some())
        .map(|s| s.to_string())
        .collect();
    if elsewhere.is_empty() {
        format!("unknown key {key:?} in {section}")
    } else {
        format!(
            "{key:?} is not a {section} key; it belongs in {}",
            elsewhere.join(" or ")
        )
    }
}

/// The candidate closest to `word` if it is plausibly a typo of it.
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    // my.cnf habits: `max-allowed-packet`, `Listen`.
    let norm = word.to_ascii_lowercase().replace('-', "_");
    let limit = (norm.chars().count() / 4).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&norm, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn lex(text: &str, source: &str) -> Result<Vec<RawSection>, ConfigError> {
    let err = |line: usize, key: Option<String>, message: String| ConfigError {
        source: source.to_string(),
        line: Some(line),
        key,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<RawSection> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let lineno = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let (section, name) = parse_header(line).map_err(|m| err(lineno, None, m))?;
            if let Some(prev) = sections
                .iter()
                .find(|s| s.section == section && s.name == name)
            {
                let message = match &name {
                    Some(name) => format!(
                        "{} {name:?} is defined twice (first at line {})",
                        section.name(),
                        prev.line
                    ),
                    None => format!(
                        "section [{}] appears twice (first at line {}); merge them",
                        section.name(),
                        prev.line
                    ),
                };
                return Err(err(lineno, None, message));
            }
            sections.push(RawSection {
                section,
                name,
                line: lineno,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(current) = sections.last_mut() else {
            return Err(err(
                lineno,
                None,
                "setting before the first [section] header (settings of the funnel itself go under [funnel])"
                    .to_string(),
            ));
        };
        let Some((key, rest)) = line.split_once('=') else {
            return Err(err(
                lineno,
                None,
                format!("expected `key = value`, a [section] header or a comment, got {line:?}"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(err(lineno, None, "missing key before '='".to_string()));
        }
        let header = header_text(current.section, current.name.as_deref());
        let qualified = Some(format!("{header} {key}"));
        let Some(spec) = find_spec(current.section, key) else {
            return Err(err(
                lineno,
                qualified,
                unknown_key_message(current.section, key),
            ));
        };
        if let Some(prev) = current.entries.iter().find(|e| e.spec.name == key) {
            return Err(err(
                lineno,
                qualified,
                format!("given twice in {header} (first at line {})", prev.line),
            ));
        }
        let value = unquote_value(rest)
            .and_then(|raw| parse_value(spec.kind, &raw))
            .map_err(|m| err(lineno, qualified, m))?;
        current.entries.push(Entry {
            spec,
            value,
            line: lineno,
        });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{fail, parse, with_funnel, BASE};
    use crate::config::Credential;
    use log::LevelFilter;

    #[test]
    fn comments_quotes_and_suffixes() {
        let text = "\u{feff}; leading ; comment\r\n\
            [funnel]   # trailing comment on a header\r\n\
            max_allowed_packet = 16m  # trailing comment\n\
              max_client_pending_input=512K\n\
            output_high_watermark = 1G\n\
            output_low_watermark = 1024\n\
            server_version = \"8.0.36-funnel #1\"   # quoted keeps the hash\n\
            allow_local_infile = ON\n\
            log_level = DEBUG\n\
            [backend]\naddress = 127.0.0.1:3306\n\
            [user app]\n\
            password = pa#ss word  # the comment\n\
            backend_password = \"q\\\"uo\\\\te\"\n\
            backend_user = # only a comment: empty value\n";
        let e = fail(text);
        assert_eq!(e.key.as_deref(), Some("[user app] backend_user"));
        assert_eq!(e.line, Some(15));

        let config = parse(&text.replace("backend_user = # only", "#backend_user = # only"));
        assert_eq!(config.max_allowed_packet, 16 << 20);
        assert_eq!(config.max_client_pending_input, 512 << 10);
        assert_eq!(config.output_high_watermark, 1 << 30);
        assert_eq!(config.output_low_watermark, 1024);
        assert_eq!(config.server_version, "8.0.36-funnel #1");
        assert!(config.allow_local_infile);
        assert_eq!(config.log_level, LevelFilter::Debug);
        let user = &config.users[0];
        assert_eq!(user.credential, Credential::Plain("pa#ss word".into()));
        assert_eq!(user.backend_password, "q\"uo\\te");
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("listen = 1.2.3.4:5\n", 1, "before the first [section]"),
            ("[funnel\n", 1, "missing ']'"),
            ("[funnel] x\n", 1, "unexpected text"),
            ("[funnel]\njust words\n", 2, "expected `key = value`"),
            ("[funnel]\n = 3\n", 2, "missing key"),
            (
                "[funnel]\nserver_version = \"8.0\n",
                2,
                "missing closing double quote",
            ),
            (
                "[funnel]\nserver_version = \"8.0\" x\n",
                2,
                "after the closing quote",
            ),
            (
                "[funnel]\nserver_version = \"8.0\\n\"\n",
                2,
                "unknown escape",
            ),
            ("[user]\n", 1, "[user NAME]"),
            ("[user \"\"]\n", 1, "must not be empty"),
            ("[pool x]\n", 1, "takes no name"),
            ("[mysqld]\n", 1, "unknown section [mysqld]"),
            ("[backends]\n", 1, "did you mean [backend]"),
        ];
        for (text, line, part) in cases {
            let e = fail(text);
            assert_eq!(e.line, Some(*line), "{text:?}: {e}");
            assert!(e.to_string().contains(part), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_keys() {
        let e = fail(&with_funnel("max_allowed_packets = 1M"));
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("[funnel] max_allowed_packets"));
        assert!(
            e.message.contains("did you mean \"max_allowed_packet\""),
            "{e}"
        );

        let e = fail(&with_funnel("max-allowed-packet = 1M"));
        assert!(
            e.message.contains("did you mean \"max_allowed_packet\""),
            "{e}"
        );

        let e = fail(&with_funnel("connections = 4"));
        assert!(
            e.message.contains("belongs in [pool] or [user NAME]"),
            "{e}"
        );

        let e = fail(&with_funnel("frobnicate = 1"));
        assert_eq!(e.message, "unknown key \"frobnicate\" in [funnel]");
    }

    #[test]
    fn duplicates() {
        let e = fail(&with_funnel("log_level = info\nlog_level = debug"));
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("[funnel] log_level"));
        assert!(
            e.message.contains("twice") && e.message.contains("line 2"),
            "{e}"
        );

        let e = fail(&format!("{BASE}[backend]\n"));
        assert_eq!(e.line, Some(6));
        assert!(
            e.message
                .contains("[backend] appears twice (first at line 1)"),
            "{e}"
        );

        let e = fail(&format!("{BASE}[user \"app\"]\npassword = y\n"));
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("user \"app\" is defined twice"), "{e}");
    }
}

//! The statement scan as it was before the one-pass `query_facts` (and the
//! per-question functions it replaced), kept frozen for the tests that check
//! the one pass gives the same answers. Test-only: nothing here runs in the
//! funnel.

use super::{unreported, StatementFacts, BUILTINS, NAME_CONTEXTS};

/// The old `StatementFacts::merge` (the fields the old scan knew).
fn merge(f: &mut StatementFacts, o: &StatementFacts) {
    f.first_is_kill |= o.first_is_kill;
    f.later_kill |= o.later_kill;
    f.takes |= o.takes;
    f.releases &= o.releases;
    f.reads_insert_id |= o.reads_insert_id;
    f.sets_insert_id |= o.sets_insert_id;
    f.reads_row_count |= o.reads_row_count;
    f.reads_found_rows |= o.reads_found_rows;
    f.selects |= o.selects;
    f.reads_diagnostics |= o.reads_diagnostics;
    f.mentions_user_var |= o.mentions_user_var;
    f.assigns_user_var |= o.assigns_user_var;
    f.opaque_state |= o.opaque_state;
    f.may_fire_triggers |= o.may_fire_triggers;
    f.set_statement |= o.set_statement;
    f.load_local |= o.load_local;
    f.begins_transaction |= o.begins_transaction;
    f.mentions_timeouts |= o.mentions_timeouts;
    f.clears_diagnostics &= o.clears_diagnostics;
    f.safe_to_repeat &= o.safe_to_repeat;
    f.unproven = f.unproven.or(o.unproven);
}

/// The old `statement_facts`: only the fields it knew are set.
pub fn statement_facts(sql: &[u8]) -> StatementFacts {
    let facts = scan(sql, true);
    if !sql.contains(&b'\\') {
        return facts;
    }
    let mut both = facts;
    merge(&mut both, &scan(sql, false));
    both
}

/// The old `processlist::processlist_query`.
pub fn processlist_query(sql: &[u8]) -> Option<bool> {
    if !only_words(sql) {
        return None;
    }
    let mut w = words(sql);
    if !w.next()?.eq_ignore_ascii_case(b"SHOW") {
        return None;
    }
    let mut next = w.next()?;
    let full = next.eq_ignore_ascii_case(b"FULL");
    if full {
        next = w.next()?;
    }
    (next.eq_ignore_ascii_case(b"PROCESSLIST") && w.next().is_none()).then_some(full)
}

/// The old `statement::mentions_processlist`.
pub fn mentions_processlist(sql: &[u8]) -> bool {
    sql.windows(11)
        .any(|w| w.eq_ignore_ascii_case(b"processlist"))
}

/// The old `processlist::needs_privileges`.
pub fn needs_privileges(sql: &[u8]) -> bool {
    mentions_processlist(sql) || sql.windows(4).any(|w| w.eq_ignore_ascii_case(b"KILL"))
}

fn only_words(sql: &[u8]) -> bool {
    Lexer {
        sql,
        i: 0,
        backslash_escapes: true,
    }
    .all(|t| matches!(t.0, Tok::Word | Tok::Punct(b';')))
}

fn words(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lexer {
        sql,
        i: 0,
        backslash_escapes: true,
    }
    .filter(|t| t.0 == Tok::Word)
    .map(move |(_, s, e)| &sql[s..e])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    /// A bare word: keyword, identifier, number.
    Word,
    /// A backquoted identifier (or a double-quoted string, which is one
    /// under ANSI_QUOTES).
    QuotedName,
    Str,
    /// `@name`, `@'name'`, `` @`name` ``.
    UserVar,
    /// `@@name`, `@@session.name` (the token covers the name).
    SysVar,
    Punct(u8),
}

struct Lexer<'a> {
    sql: &'a [u8],
    i: usize,
    backslash_escapes: bool,
}

impl<'a> Lexer<'a> {
    /// Skip a quoted run starting at `self.i` (the opening quote).
    fn skip_quoted(&mut self) {
        let sql = self.sql;
        let q = sql[self.i];
        let n = sql.len();
        let mut i = self.i + 1;
        while i < n {
            let c = sql[i];
            if c == b'\\' && q != b'`' && self.backslash_escapes {
                i += 2;
                continue;
            }
            if c == q {
                if i + 1 < n && sql[i + 1] == q {
                    i += 2;
                    continue;
                }
                break;
            }
            i += 1;
        }
        self.i = (i + 1).min(n);
    }

    fn word_end(&self, mut i: usize) -> usize {
        let sql = self.sql;
        while i < sql.len() && is_word_byte(sql[i]) {
            i += 1;
        }
        i
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl Iterator for Lexer<'_> {
    type Item = (Tok, usize, usize);

    fn next(&mut self) -> Option<(Tok, usize, usize)> {
        let sql = self.sql;
        let n = sql.len();
        while self.i < n {
            let start = self.i;
            let c = sql[start];
            match c {
                b'\'' | b'"' => {
                    self.skip_quoted();
                    return Some((Tok::Str, start, self.i));
                }
                b'`' => {
                    self.skip_quoted();
                    return Some((Tok::QuotedName, start, self.i));
                }
                b'#' => {
                    while self.i < n && sql[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                b'-' if start + 2 < n
                    && sql[start + 1] == b'-'
                    && sql[start + 2].is_ascii_whitespace() =>
                {
                    while self.i < n && sql[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                b'/' if start + 1 < n && sql[start + 1] == b'*' => {
                    // `/*! ... */` and `/*M! ... */` run: scan inside them.
                    let exec = sql.get(start + 2) == Some(&b'!')
                        || (sql.get(start + 2) == Some(&b'M') && sql.get(start + 3) == Some(&b'!'));
                    if exec {
                        let mut i = start + if sql[start + 2] == b'M' { 4 } else { 3 };
                        while i < n && sql[i].is_ascii_digit() {
                            i += 1;
                        }
                        self.i = i;
                        continue;
                    }
                    let mut i = start + 2;
                    while i + 1 < n && !(sql[i] == b'*' && sql[i + 1] == b'/') {
                        i += 1;
                    }
                    self.i = (i + 2).min(n);
                }
                b'@' => {
                    if sql.get(start + 1) == Some(&b'@') {
                        // @@[session.|global.|local.]name
                        let mut i = start + 2;
                        let mut end = self.word_end(i);
                        if sql.get(end) == Some(&b'.') {
                            i = end + 1;
                            end = self.word_end(i);
                        }
                        self.i = end;
                        return Some((Tok::SysVar, i, end));
                    }
                    self.i = start + 1;
                    match sql.get(start + 1) {
                        Some(b'\'' | b'"' | b'`') => self.skip_quoted(),
                        _ => self.i = self.word_end(start + 1),
                    }
                    return Some((Tok::UserVar, start, self.i));
                }
                _ if is_word_byte(c) => {
                    self.i = self.word_end(start);
                    return Some((Tok::Word, start, self.i));
                }
                _ if c.is_ascii_whitespace() => self.i += 1,
                _ => {
                    self.i += 1;
                    return Some((Tok::Punct(c), start, start + 1));
                }
            }
        }
        None
    }
}

/// Statements whose whole effect on the session the funnel can tell (with
/// the checks in `first_word_rule`); any other first word is unproven.
const PROVEN_FIRST_WORDS: &[&str] = &[
    "ALTER",
    "ANALYZE",
    "BEGIN",
    "CHECK",
    "CHECKSUM",
    "COMMIT",
    "CREATE",
    "DELETE",
    "DESC",
    "DESCRIBE",
    "DO",
    "DROP",
    "EXPLAIN",
    "GET",
    "GRANT",
    "HELP",
    "INSERT",
    "KILL",
    "LOAD",
    "LOCK",
    "OPTIMIZE",
    "RELEASE",
    "RENAME",
    "REPAIR",
    "REPLACE",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLOCK",
    "UPDATE",
    "USE",
    "VALUES",
    "WITH",
];

/// First words of the statements that only read (with the checks of
/// [`StatementFacts::safe_to_repeat`]).
const READ_FIRST_WORDS: &[&str] = &[
    "DESC", "DESCRIBE", "EXPLAIN", "HELP", "SELECT", "SHOW", "TABLE", "VALUES", "WITH",
];

/// Words that, anywhere in a read, may make running it twice differ from
/// running it once: locking reads (`FOR UPDATE`, `LOCK IN SHARE MODE`),
/// `INTO` (`OUTFILE`, `DUMPFILE`, user variables), DML (`EXPLAIN UPDATE`
/// runs nothing, but is no loss), functions that lock, wait or sleep.
fn repeat_unsafe_word(word: &[u8]) -> bool {
    let mut buf = [0u8; 32];
    let Some(w) = upper(word, &mut buf) else {
        return false;
    };
    matches!(
        w,
        "UPDATE"
            | "DELETE"
            | "LOCK"
            | "SHARE"
            | "INTO"
            | "ANALYZE"
            | "SLEEP"
            | "BENCHMARK"
            | "GET_LOCK"
            | "RELEASE_LOCK"
            | "RELEASE_ALL_LOCKS"
            | "MASTER_POS_WAIT"
            | "MASTER_GTID_WAIT"
            | "WSREP_SYNC_WAIT_UPTO_GTID"
            | "NEXTVAL"
            | "SETVAL"
    )
}

fn upper<'b>(word: &[u8], buf: &'b mut [u8; 32]) -> Option<&'b str> {
    if word.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..word.len()];
    out.copy_from_slice(word);
    out.make_ascii_uppercase();
    std::str::from_utf8(out).ok()
}

fn is_builtin(word: &[u8]) -> bool {
    let mut buf = [0u8; 32];
    let Some(w) = upper(word, &mut buf) else {
        return false;
    };
    BUILTINS.binary_search(&w).is_ok() || w.starts_with("ST_") || w.starts_with("MBR")
}

fn word_in(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
}

/// What one statement's first words say.
fn first_word_rule(first: &[u8], second: &[u8], f: &mut StatementFacts) {
    let is = |w: &[u8], k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    if !word_in(first, PROVEN_FIRST_WORDS) {
        f.unproven = f.unproven.or(Some(unproven_statement(first)));
        return;
    }
    if is(first, "KILL") {
        f.first_is_kill = true;
    } else if is(first, "LOCK") {
        if is(second, "TABLES") || is(second, "TABLE") {
            f.takes |= unreported::TABLE_LOCKS;
        } else {
            f.unproven = f.unproven.or(Some("LOCK statement"));
        }
    } else if is(first, "UNLOCK") && (is(second, "TABLES") || is(second, "TABLE")) {
        f.releases |= unreported::TABLE_LOCKS;
    } else if is(first, "SET") {
        if is(second, "TRANSACTION") {
            // Applies to the next transaction only, and mysqld does not say so.
            f.unproven = f.unproven.or(Some("SET TRANSACTION"));
        } else if is(second, "ROLE") {
            f.unproven = f.unproven.or(Some("SET ROLE"));
        } else if is(second, "STATEMENT") {
            f.set_statement = true;
        }
    } else if is(first, "BEGIN") && is(second, "NOT") {
        f.unproven = f.unproven.or(Some("compound statement"));
    } else if is(first, "BEGIN") {
        f.begins_transaction = true;
    } else if is(first, "START") && !is(second, "TRANSACTION") {
        f.unproven = f.unproven.or(Some("START statement"));
    } else if is(first, "START") {
        f.begins_transaction = true;
    } else if is(first, "GET") {
        if is(second, "DIAGNOSTICS") || is(second, "CURRENT") || is(second, "STACKED") {
            f.reads_diagnostics = true;
        } else {
            f.unproven = f.unproven.or(Some("GET statement"));
        }
    } else if is(first, "SHOW") {
        if is(second, "COUNT") {
            f.reads_diagnostics = true;
            f.selects = true;
        } else if is(second, "WARNINGS") || is(second, "ERRORS") {
            f.reads_diagnostics = true;
        } else {
            f.clears_diagnostics = true;
        }
    } else if word_in(first, &["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"]) {
        f.may_fire_triggers = true;
        f.clears_diagnostics = true;
    } else if word_in(first, &["SELECT", "WITH", "VALUES", "TABLE"]) {
        f.selects = true;
    }
}

fn unproven_statement(first: &[u8]) -> &'static str {
    const NAMED: &[&str] = &[
        "BACKUP",
        "CALL",
        "DEALLOCATE",
        "EXECUTE",
        "FLUSH",
        "HANDLER",
        "PREPARE",
        "XA",
    ];
    NAMED
        .iter()
        .find(|k| first.eq_ignore_ascii_case(k.as_bytes()))
        .copied()
        .unwrap_or("statement the funnel does not know")
}

fn scan(sql: &[u8], backslash_escapes: bool) -> StatementFacts {
    let mut f = StatementFacts::default();
    let lexer = Lexer {
        sql,
        i: 0,
        backslash_escapes,
    };
    // Per statement: its first two words, and whether anything came yet.
    let mut first: Option<(usize, usize)> = None;
    let mut second: Option<(usize, usize)> = None;
    let mut started = false;
    let mut rule_done = false;
    let mut statement_index = 0;
    // The last three tokens, newest first, to read `ctx name (` and
    // `ctx schema . name (`.
    let mut prev: [Option<(Tok, usize, usize)>; 4] = [None; 4];
    let mut into_seen = false;
    // In a LOAD statement, before its INFILE: LOCAL may come.
    let mut in_load = false;
    let mut set_seen = false;
    let mut colon = false;
    // After `LAST_INSERT_ID (`: the next token says read or set.
    let mut insert_id_call = 0u8;
    // Every statement so far is a read with no word that makes running it
    // twice unsafe (see `safe_to_repeat`), and there was one.
    let mut reads_only = true;
    let mut any_statement = false;
    let word = |r: (usize, usize)| &sql[r.0..r.1];
    let finish = |first: Option<(usize, usize)>,
                  second: Option<(usize, usize)>,
                  f: &mut StatementFacts,
                  statement_index: usize| {
        if let Some(fr) = first {
            let sw = second.map(word).unwrap_or(b"");
            let before_kill = f.first_is_kill;
            first_word_rule(word(fr), sw, f);
            if statement_index > 0 && f.first_is_kill && !before_kill {
                // Only a query's first statement is the funnel's KILL.
                f.first_is_kill = false;
                f.later_kill = true;
            }
        }
    };
    for tok in lexer {
        let (kind, s, e) = tok;
        if kind == Tok::Punct(b';') {
            if !rule_done {
                finish(first, second, &mut f, statement_index);
            }
            if started {
                statement_index += 1;
            }
            first = None;
            second = None;
            started = false;
            in_load = false;
            rule_done = false;
            prev = [None; 4];
            colon = false;
            continue;
        }
        if !started {
            started = true;
            any_statement = true;
            match kind {
                Tok::Word => {
                    reads_only &= word_in(&sql[s..e], READ_FIRST_WORDS);
                    first = Some((s, e));
                    set_seen |= sql[s..e].eq_ignore_ascii_case(b"SET");
                    in_load = sql[s..e].eq_ignore_ascii_case(b"LOAD");
                }
                // `(SELECT ...)`: a parenthesised query.
                Tok::Punct(b'(') => {
                    rule_done = true;
                }
                _ => {
                    f.unproven = f.unproven.or(Some("statement the funnel does not know"));
                    rule_done = true;
                }
            }
        } else if first.is_some() && second.is_none() && !rule_done {
            second = Some((s, e));
            finish(first, second, &mut f, statement_index);
            rule_done = true;
        }
        if matches!(prev[0], Some((Tok::Word, ps, pe)) if sql[ps..pe].eq_ignore_ascii_case(b"FROM"))
        {
            // `FROM t`, `FROM (SELECT ...)`, `` FROM `t` ``; not `FROM DUAL`.
            f.clears_diagnostics |= match kind {
                Tok::Word => !sql[s..e].eq_ignore_ascii_case(b"DUAL"),
                Tok::QuotedName | Tok::Punct(b'(') => true,
                _ => false,
            };
        }
        if !f.mentions_timeouts
            && matches!(kind, Tok::Word | Tok::QuotedName | Tok::SysVar)
            && names_timeouts(&sql[s..e])
        {
            f.mentions_timeouts = true;
        }
        if in_load && kind == Tok::Word {
            let w = &sql[s..e];
            if w.eq_ignore_ascii_case(b"LOCAL") {
                f.load_local = true;
            } else if w.eq_ignore_ascii_case(b"INFILE") {
                in_load = false;
            }
        }
        if insert_id_call > 0 {
            if kind != Tok::Punct(b')') {
                f.sets_insert_id = true;
            }
            insert_id_call = 0;
        }
        match kind {
            Tok::Word => {
                let w = &sql[s..e];
                let len = w.len();
                if reads_only && (4..=25).contains(&len) && repeat_unsafe_word(w) {
                    reads_only = false;
                }
                if (4..=19).contains(&len) {
                    if w.eq_ignore_ascii_case(b"GET_LOCK") {
                        f.takes |= unreported::USER_LOCKS;
                    } else if w.eq_ignore_ascii_case(b"RELEASE_ALL_LOCKS") {
                        f.releases |= unreported::USER_LOCKS;
                    } else if w.eq_ignore_ascii_case(b"SQL_CALC_FOUND_ROWS") {
                        f.takes |= unreported::FOUND_ROWS;
                    } else if w.eq_ignore_ascii_case(b"FOUND_ROWS") {
                        f.reads_found_rows = true;
                    } else if w.eq_ignore_ascii_case(b"LAST_INSERT_ID") {
                        f.reads_insert_id = true;
                    } else if w.eq_ignore_ascii_case(b"ROW_COUNT") {
                        f.reads_row_count = true;
                    } else if w.eq_ignore_ascii_case(b"TEMPORARY") {
                        f.opaque_state = true;
                    } else if w.eq_ignore_ascii_case(b"NEXTVAL")
                        || w.eq_ignore_ascii_case(b"SETVAL")
                        || (w.eq_ignore_ascii_case(b"VALUE")
                            && matches!(prev[0], Some((Tok::Word, ps, pe)) if sql[ps..pe].eq_ignore_ascii_case(b"NEXT")))
                    {
                        // The session's last value of the sequence, which
                        // LASTVAL() reads and mysqld does not report.
                        f.unproven = f.unproven.or(Some("sequence"));
                    } else if w.eq_ignore_ascii_case(b"INTO") {
                        into_seen = true;
                    }
                }
            }
            Tok::SysVar => {
                let w = &sql[s..e];
                if w.eq_ignore_ascii_case(b"warning_count")
                    || w.eq_ignore_ascii_case(b"error_count")
                {
                    f.reads_diagnostics = true;
                } else if w.eq_ignore_ascii_case(b"last_insert_id")
                    || w.eq_ignore_ascii_case(b"identity")
                {
                    f.reads_insert_id = true;
                }
            }
            Tok::UserVar => f.mentions_user_var = true,
            Tok::Punct(b'(') => {
                if let Some(reason) = call_check(sql, &prev) {
                    f.unproven = f.unproven.or(Some(reason));
                }
                if matches!(prev[0], Some((Tok::Word, ps, pe)) if sql[ps..pe].eq_ignore_ascii_case(b"LAST_INSERT_ID"))
                {
                    insert_id_call = 1;
                }
            }
            Tok::Punct(b'=') if colon && f.mentions_user_var => f.assigns_user_var = true,
            _ => {}
        }
        colon = kind == Tok::Punct(b':');
        prev = [Some(tok), prev[0], prev[1], prev[2]];
    }
    if !rule_done {
        finish(first, second, &mut f, statement_index);
    }
    if f.mentions_user_var {
        // `SELECT ... INTO @x`, `SET @x = ...`, `GET DIAGNOSTICS @x = ...`:
        // mysqld's tracker reports none of these reliably.
        f.assigns_user_var |= into_seen || set_seen || f.reads_diagnostics;
    }
    f.safe_to_repeat = reads_only
        && any_statement
        && f.unproven.is_none()
        && f.takes == 0
        && f.releases == 0
        && !f.sets_insert_id
        && !f.assigns_user_var
        && !f.opaque_state
        && !f.may_fire_triggers
        && !f.begins_transaction
        && !f.load_local
        && !f.first_is_kill
        && !f.later_kill
        && !f.reads_diagnostics
        && !f.reads_row_count
        && !f.reads_found_rows
        && !f.set_statement;
    f
}

/// A name that may stand for `wait_timeout` / `interactive_timeout` or a
/// list of variables that holds them: one that contains `timeout` or
/// `variables` (any case).
fn names_timeouts(w: &[u8]) -> bool {
    w.len() >= 7 && w.windows(7).any(|x| x.eq_ignore_ascii_case(b"timeout"))
        || w.len() >= 9 && w.windows(9).any(|x| x.eq_ignore_ascii_case(b"variables"))
}

/// At a `(`: is the name before it a call of something not built in?
fn call_check(sql: &[u8], prev: &[Option<(Tok, usize, usize)>; 4]) -> Option<&'static str> {
    let (kind, s, e) = prev[0]?;
    match kind {
        Tok::Word if is_builtin(&sql[s..e]) || sql[s].is_ascii_digit() => return None,
        Tok::Word | Tok::QuotedName => {}
        _ => return None,
    }
    // `schema.name (`: the context is before the qualifier.
    let qualified = matches!(prev[1], Some((Tok::Punct(b'.'), _, _)));
    let ctx = if qualified { prev[3] } else { prev[1] };
    if let Some((Tok::Word, cs, ce)) = ctx {
        if word_in(&sql[cs..ce], NAME_CONTEXTS) {
            return None;
        }
    }
    Some("call of a stored function")
}

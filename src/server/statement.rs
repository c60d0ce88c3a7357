//! One look at a `COM_QUERY`'s text: what the funnel must know about the
//! statements in it to keep clients' sessions apart.
//!
//! The rule is "proven or dirty": a statement is multiplex-safe only when
//! this scan can tell everything it may do to the session, which mysqld's
//! session tracker then reports or the funnel reads back. Anything else
//! (stored routines, dynamic SQL, `FLUSH`, `BACKUP`, `XA`, `SET TRANSACTION`,
//! an unknown statement, a call of a function that is not built in) is
//! *unproven*: its client keeps the backend for as long as it stays, and the
//! backend is reset before anyone else uses it.
//!
//! The scan skips comments, strings and quoted identifiers, reads inside
//! executable comments, and splits multi-statement queries at `;`. Whether
//! `\` escapes inside strings depends on `NO_BACKSLASH_ESCAPES`; a query
//! whose strings hold a backslash is scanned both ways and the facts merged,
//! so no `sql_mode` can hide a statement from the funnel.
//!
//! It is the only pass over a query's text on the way to a backend: the
//! same pass also tells what the funnel answers itself (`SHOW PROCESSLIST`,
//! `SELECT LAST_INSERT_ID()`, ...), whether the answer depends on the
//! user's privileges (`KILL`, the process list), and the query's shape for
//! the stats ([`query_facts`]). A prepared statement is scanned once, when
//! it is prepared; its executes use the facts it keeps.

use super::session::{funnel_answered_span, FunnelAnswered};
use super::stats::{ShapeToken, ShapeWriter};

/// Session state mysqld does not report, found by the statement scan.
/// `RELEASE_LOCK(name)` releases one lock of maybe several, so only
/// `RELEASE_ALL_LOCKS()` ends the user-lock pin; `SQL_CALC_FOUND_ROWS`
/// state lasts until the client leaves.
pub mod unreported {
    /// `LOCK TABLES`, until `UNLOCK TABLES`.
    pub const TABLE_LOCKS: u8 = 1;
    /// `GET_LOCK()`, until `RELEASE_ALL_LOCKS()`.
    pub const USER_LOCKS: u8 = 2;
    /// `SQL_CALC_FOUND_ROWS`: the count it leaves for `FOUND_ROWS()` is
    /// not the rows sent.
    pub const FOUND_ROWS: u8 = 4;
}

/// What the funnel needs to know about a `COM_QUERY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatementFacts {
    /// The first statement is a `KILL`.
    pub first_is_kill: bool,
    /// A later statement of the query is a `KILL`: mysqld would take its id
    /// for one of its own threads, not the funnel's client.
    pub later_kill: bool,
    /// Unreported state it may take (bits of [`unreported`]): pins while held.
    pub takes: u8,
    /// ... and release (`UNLOCK TABLES`, `RELEASE_ALL_LOCKS()`).
    pub releases: u8,
    /// It reads `LAST_INSERT_ID()`.
    pub reads_insert_id: bool,
    /// It sets it: `LAST_INSERT_ID(expr)`.
    pub sets_insert_id: bool,
    /// It reads what the previous statement left: `ROW_COUNT()`.
    pub reads_row_count: bool,
    /// ... or `FOUND_ROWS()`: the rows the client's last `SELECT` found.
    pub reads_found_rows: bool,
    /// A statement of it is a `SELECT` (`WITH`, `VALUES`, `TABLE`, `SHOW
    /// COUNT(*) WARNINGS`): it sets what `FOUND_ROWS()` says next, to the
    /// rows of its result (0 for `SELECT ... INTO`).
    pub selects: bool,
    /// It names `sql_select_limit` (`SET STATEMENT sql_select_limit = n
    /// FOR SELECT ...`): rows the limit holds back still count for
    /// `FOUND_ROWS()`, and the funnel does not see them.
    pub mentions_select_limit: bool,
    /// It reads the diagnostics area of the previous statement (`SHOW
    /// WARNINGS`, `SHOW ERRORS`, `GET DIAGNOSTICS`, `@@warning_count`, ...).
    pub reads_diagnostics: bool,
    /// It surely empties the diagnostics area when it runs: mysqld does so
    /// for a statement that uses a table (`FROM t`, a derived table, DML,
    /// a non-diagnostics `SHOW`), not for `SELECT 1`, `SET`, `DO`, `USE`,
    /// `BEGIN`, `FROM DUAL` or `INTO @x` (checked on MariaDB 10.11).
    pub clears_diagnostics: bool,
    /// It mentions a user variable (`@x`, not `@@x`).
    pub mentions_user_var: bool,
    /// ... and may assign one in a way mysqld's tracker does not report
    /// (`:=`, `INTO @x`, `GET DIAGNOSTICS @x`, `SET @x`).
    pub assigns_user_var: bool,
    /// It may create state mysqld reports only as "state changed" and the
    /// funnel cannot read back (temporary tables, sequences): pins when
    /// mysqld says the state changed.
    pub opaque_state: bool,
    /// It may fire triggers (`INSERT`, `UPDATE`, `DELETE`, `REPLACE`,
    /// `LOAD`), whose effects on the session the scan cannot see.
    pub may_fire_triggers: bool,
    /// `BEGIN` / `START TRANSACTION`: the transaction pins its client.
    pub begins_transaction: bool,
    /// A `LOAD DATA LOCAL` / `LOAD XML LOCAL`: mysqld asks the client for a
    /// file, which only a client with `CLIENT_LOCAL_FILES` may be asked.
    pub load_local: bool,
    /// `SET STATEMENT ... FOR`: mysqld flags the restored variables as a
    /// state change in the result's EOF.
    pub set_statement: bool,
    /// The query is one `SET` statement and nothing else (but a `;`):
    /// [`plain_set`] may tell what it assigns.
    pub set_only: bool,
    /// Why the funnel cannot prove what it does to the session, if it cannot.
    pub unproven: Option<&'static str>,
    /// It may read or set the session's `wait_timeout` or
    /// `interactive_timeout`: a word, quoted name or `@@` variable that
    /// names a timeout (`@@wait_timeout`, `SET interactive_timeout`) or
    /// ends in `VARIABLES` (`SHOW VARIABLES`, `SESSION_VARIABLES`). The
    /// client's own values are put on the backend for it.
    pub mentions_timeouts: bool,
    /// Running it again has no effect a client could tell from running it
    /// once: every statement is a plain read (`SELECT`, `WITH`, `VALUES`,
    /// `TABLE`, `SHOW`, `EXPLAIN`/`DESCRIBE`, `HELP`, a parenthesised
    /// query) that calls only built-in functions and has no locking read
    /// (`FOR UPDATE`, `LOCK IN SHARE MODE`), no `INTO` (a file or user
    /// variables), no lock function, no `SLEEP`/`BENCHMARK`/wait, no
    /// `LAST_INSERT_ID(expr)`, no sequence, no user-variable assignment, no
    /// `FOUND_ROWS` state and reads no state the previous statement left
    /// (warnings, `ROW_COUNT()`). Such a statement may be run again on
    /// another backend when its backend died before any of its answer
    /// reached the client.
    pub safe_to_repeat: bool,
    /// The query is `SHOW PROCESSLIST` (`Some(false)`) or `SHOW FULL
    /// PROCESSLIST` (`Some(true)`) and nothing else: the funnel lists its
    /// clients.
    pub show_processlist: Option<bool>,
    /// It names a `PROCESSLIST` (a word or backquoted name, in either
    /// reading of `\`): it may read `information_schema.PROCESSLIST`,
    /// which the funnel replaces with its clients (see [`processlist_refs`]).
    pub names_processlist: bool,
    /// The query is exactly `SELECT LAST_INSERT_ID()`, `SELECT
    /// CONNECTION_ID()` or `SELECT ROW_COUNT()` (see
    /// [`funnel_answered_span`]): which, and the span of the column name
    /// mysqld would give.
    pub answered: Option<(FunnelAnswered, (usize, usize))>,
    /// Its answer may differ between two runs with the same data and
    /// session: it calls a function of the clock, chance or the connection
    /// (`NOW()`, `CURRENT_TIMESTAMP`, `RAND()`, `UUID()`, `CONNECTION_ID()`,
    /// `USER()`, ...) or reads a system variable (`@@x`). Such a read is
    /// never answered from the result cache.
    pub nondeterministic: bool,
    /// The hash of the query's shape for the stats (see
    /// [`ShapeWriter`]); `None` when not computed ([`statement_facts`]).
    pub shape: Option<u64>,
}

impl StatementFacts {
    /// Running it surely leaves its client pinned.
    pub fn will_pin(&self) -> bool {
        self.unproven.is_some() || self.opaque_state || self.takes != 0 || self.begins_transaction
    }

    /// Its answer may be served from the result cache: a plain read
    /// ([`safe_to_repeat`](Self::safe_to_repeat)) of no user variable,
    /// system variable or non-deterministic function, and nothing the
    /// funnel answers or rewrites itself (the process list, `SELECT
    /// CONNECTION_ID()`, ...). The caller checks the client's side (no
    /// transaction, no pin).
    pub fn cacheable(&self) -> bool {
        self.safe_to_repeat
            && !self.nondeterministic
            && !self.mentions_user_var
            && !self.mentions_timeouts
            && !self.reads_insert_id
            && !self.names_processlist
            && self.show_processlist.is_none()
            && self.answered.is_none()
    }

    /// What the funnel answers depends on the user's privileges: a `KILL`
    /// (of whose connection?) or a look at the process list (whose
    /// connections?). Until they are known, such a query waits for a
    /// backend to ask.
    pub fn needs_privileges(&self) -> bool {
        self.first_is_kill || self.later_kill || self.names_processlist
    }

    fn merge(&mut self, o: &StatementFacts) {
        self.first_is_kill |= o.first_is_kill;
        self.later_kill |= o.later_kill;
        self.takes |= o.takes;
        self.releases &= o.releases;
        self.reads_insert_id |= o.reads_insert_id;
        self.sets_insert_id |= o.sets_insert_id;
        self.reads_row_count |= o.reads_row_count;
        self.reads_found_rows |= o.reads_found_rows;
        self.selects |= o.selects;
        self.mentions_select_limit |= o.mentions_select_limit;
        self.reads_diagnostics |= o.reads_diagnostics;
        self.mentions_user_var |= o.mentions_user_var;
        self.assigns_user_var |= o.assigns_user_var;
        self.opaque_state |= o.opaque_state;
        self.may_fire_triggers |= o.may_fire_triggers;
        self.set_statement |= o.set_statement;
        self.set_only &= o.set_only;
        self.load_local |= o.load_local;
        self.begins_transaction |= o.begins_transaction;
        self.mentions_timeouts |= o.mentions_timeouts;
        self.names_processlist |= o.names_processlist;
        self.nondeterministic |= o.nondeterministic;
        // Only what both readings agree on.
        self.clears_diagnostics &= o.clears_diagnostics;
        self.safe_to_repeat &= o.safe_to_repeat;
        self.unproven = self.unproven.or(o.unproven);
    }
}

/// Scan a prepared statement's text (or a query whose shape is not wanted:
/// `shape` is `None`).
pub fn statement_facts(sql: &[u8]) -> StatementFacts {
    facts(sql, None)
}

/// Scan a `COM_QUERY`: its facts and its shape's hash (`shape_buf`: where
/// the shape's text is written on the way, [`Stats::shape_buf`]).
///
/// [`Stats::shape_buf`]: super::stats::Stats::shape_buf
pub fn query_facts(sql: &[u8], shape_buf: &mut Vec<u8>) -> StatementFacts {
    facts(sql, ShapeWriter::new(shape_buf, sql.len()))
}

fn facts(sql: &[u8], shape: Option<ShapeWriter>) -> StatementFacts {
    let (mut facts, answer_candidate, escapes_seen) = scan(sql, true, shape);
    if answer_candidate {
        facts.answered = funnel_answered_span(sql);
    }
    if !escapes_seen {
        // No `\` in a string: both readings are the same.
        return facts;
    }
    // `\` is an escape unless NO_BACKSLASH_ESCAPES: take the union of what
    // either reading may do (and only what both release).
    let mut both = facts;
    both.merge(&scan(sql, false, None).0);
    both
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
    /// `@@name`, `@@session.name` (the token covers the name; the lexer's
    /// `var_at` says where the `@@` is).
    SysVar,
    Punct(u8),
}

struct Lexer<'a> {
    sql: &'a [u8],
    i: usize,
    backslash_escapes: bool,
    /// Executable comments (`/*!`, `/*M!`) entered so far.
    exec_opens: u32,
    /// Where the last [`Tok::SysVar`] starts (its `@@`).
    var_at: usize,
    /// A `\` escaped something in a string (only when `backslash_escapes`):
    /// until then, the other reading of `\` gives the same tokens.
    escapes_seen: bool,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a [u8], backslash_escapes: bool) -> Self {
        Lexer {
            sql,
            i: 0,
            backslash_escapes,
            exec_opens: 0,
            var_at: 0,
            escapes_seen: false,
        }
    }

    /// Skip a quoted run starting at `self.i` (the opening quote).
    fn skip_quoted(&mut self) {
        let sql = self.sql;
        let q = sql[self.i];
        let n = sql.len();
        let mut i = self.i + 1;
        while i < n {
            let c = sql[i];
            if c == b'\\' && q != b'`' && self.backslash_escapes {
                self.escapes_seen = true;
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

/// Bytes of a bare word: letters, digits, `_`, `$`, anything not ASCII.
static WORD_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        b += 1;
    }
    t
};

fn is_word_byte(b: u8) -> bool {
    WORD_BYTES[b as usize]
}

impl Iterator for Lexer<'_> {
    type Item = (Tok, usize, usize);

    #[inline(always)]
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
                        self.exec_opens += 1;
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
                        self.var_at = start;
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

/// Where a multi-statement query's first `KILL` statement is, for running
/// the query in parts: what comes before it on a backend, the `KILL` by the
/// funnel (whose ids are the clients'), the rest after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillSplit {
    /// End of the statements before the `KILL` (the `;` before it
    /// excluded); `None` when the `KILL` is the query's first statement.
    pub before: Option<usize>,
    /// The `KILL` statement's text, without its `;`.
    pub kill: (usize, usize),
    /// Start of what follows the `KILL`'s `;` (`sql.len()` if nothing does).
    pub rest: usize,
}

impl KillSplit {
    /// Something follows the `KILL` that mysqld would answer (a statement,
    /// or a comment, which it answers with an OK): more than spaces and `;`.
    pub fn more_after(&self, sql: &[u8]) -> bool {
        sql.get(self.rest..)
            .is_some_and(|r| r.iter().any(|&b| !b.is_ascii_whitespace() && b != b';'))
    }
}

/// The first statement of `sql` that is a `KILL`, if any. `Err(())` when the
/// query cannot be split safely: the two readings of `\` disagree, or a
/// compound statement (`BEGIN NOT ATOMIC`, a stored program's body), whose
/// `;` do not end statements, comes before the `KILL`.
#[allow(clippy::result_unit_err)]
pub fn kill_split(sql: &[u8]) -> Result<Option<KillSplit>, ()> {
    let one = kill_split_with(sql, true)?;
    if sql.contains(&b'\\') && kill_split_with(sql, false)? != one {
        return Err(());
    }
    Ok(one)
}

fn kill_split_with(sql: &[u8], backslash_escapes: bool) -> Result<Option<KillSplit>, ()> {
    const COMPOUND: &[&str] = &[
        "ATOMIC",
        "PROCEDURE",
        "FUNCTION",
        "TRIGGER",
        "EVENT",
        "PACKAGE",
    ];
    let lexer = Lexer::new(sql, backslash_escapes);
    let mut started = false;
    let mut any_before = false;
    let mut last_semicolon = 0;
    let mut kill_start: Option<usize> = None;
    for (kind, s, e) in lexer {
        if kind == Tok::Punct(b';') {
            if let Some(k) = kill_start {
                return Ok(Some(KillSplit {
                    before: any_before.then_some(last_semicolon),
                    kill: (k, s),
                    rest: e,
                }));
            }
            started = false;
            last_semicolon = s;
            continue;
        }
        if kill_start.is_some() {
            continue;
        }
        if kind == Tok::Word && word_in(&sql[s..e], COMPOUND) {
            return Err(());
        }
        if !started {
            started = true;
            if kind == Tok::Word && sql[s..e].eq_ignore_ascii_case(b"KILL") {
                kill_start = Some(s);
                continue;
            }
            any_before = true;
        }
    }
    Ok(kill_start.map(|k| KillSplit {
        before: any_before.then_some(last_semicolon),
        kill: (k, sql.len()),
        rest: sql.len(),
    }))
}

/// A reference to `information_schema.PROCESSLIST` in a query, which the
/// funnel replaces with a derived table of its own clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcesslistRef {
    /// The bytes to replace: the (qualified) table name.
    pub span: (usize, usize),
    /// What replaces them: `false` a derived table (`alias`: whether the
    /// query names it itself), `true` just `PROCESSLIST` (the name
    /// qualifies a column: `information_schema.PROCESSLIST.ID`).
    pub qualifier: bool,
    pub alias: bool,
    /// Not the table but `CONNECTION_ID()` in the same query: mysqld would
    /// say the backend's thread id, and the rows have the funnel's ids.
    pub connection_id: bool,
}

/// The references to `information_schema.PROCESSLIST` in `sql`, in order;
/// `bare`: the default schema is `information_schema`, so `FROM PROCESSLIST`
/// is one too. `Err(())` when the two readings of `\` disagree (the
/// query is then left as it is). Statements that name the table without
/// reading its rows (`SHOW`, `DESCRIBE`, `DESC`) keep it.
#[allow(clippy::result_unit_err)]
pub fn processlist_refs(sql: &[u8], bare: bool) -> Result<Vec<ProcesslistRef>, ()> {
    let one = processlist_refs_with(sql, bare, true);
    if sql.contains(&b'\\') && processlist_refs_with(sql, bare, false) != one {
        return Err(());
    }
    Ok(one)
}

fn processlist_refs_with(sql: &[u8], bare: bool, backslash_escapes: bool) -> Vec<ProcesslistRef> {
    /// Words that may follow a table reference without being its alias.
    const AFTER_TABLE: &[&str] = &[
        "CROSS",
        "EXCEPT",
        "FETCH",
        "FOR",
        "FORCE",
        "FULL",
        "GROUP",
        "HAVING",
        "IGNORE",
        "INNER",
        "INTERSECT",
        "INTO",
        "JOIN",
        "LEFT",
        "LIMIT",
        "LOCK",
        "MINUS",
        "NATURAL",
        "OFFSET",
        "ON",
        "ORDER",
        "PARTITION",
        "PROCEDURE",
        "RETURNING",
        "RIGHT",
        "SET",
        "STRAIGHT_JOIN",
        "UNION",
        "USE",
        "USING",
        "WHERE",
        "WINDOW",
        "WITH",
    ];
    let toks: Vec<(Tok, usize, usize)> = Lexer::new(sql, backslash_escapes).collect();
    let name = |t: &(Tok, usize, usize), want: &[u8]| -> bool {
        let (kind, s, e) = *t;
        match kind {
            Tok::Word => sql[s..e].eq_ignore_ascii_case(want),
            Tok::QuotedName if sql[s] == b'`' && e >= s + 2 => {
                sql[s + 1..e - 1].eq_ignore_ascii_case(want)
            }
            _ => false,
        }
    };
    let punct = |i: usize, c: u8| toks.get(i).is_some_and(|t| t.0 == Tok::Punct(c));
    let mut refs = Vec::new();
    let mut first_word: Option<usize> = None;
    for i in 0..toks.len() {
        if toks[i].0 == Tok::Punct(b';') {
            first_word = None;
            continue;
        }
        if first_word.is_none() {
            first_word = Some(i);
        }
        let reads_rows = first_word.is_some_and(|f| {
            let (kind, s, e) = toks[f];
            !(kind == Tok::Word && word_in(&sql[s..e], &["SHOW", "DESC", "DESCRIBE"]))
        });
        if name(&toks[i], b"CONNECTION_ID") && punct(i + 1, b'(') && punct(i + 2, b')') {
            refs.push(ProcesslistRef {
                span: (toks[i].1, toks[i + 2].2),
                qualifier: false,
                alias: false,
                connection_id: true,
            });
            continue;
        }
        if !reads_rows || !name(&toks[i], b"PROCESSLIST") {
            continue;
        }
        // `information_schema . PROCESSLIST`, not `x.information_schema.PROCESSLIST`.
        let qualified = i >= 2
            && punct(i - 1, b'.')
            && name(&toks[i - 2], b"information_schema")
            && !(i >= 3 && punct(i - 3, b'.'));
        if !qualified {
            // Another schema's table, or a column; a bare `PROCESSLIST` is
            // the table only right after FROM or JOIN, with
            // information_schema the default schema.
            let after_from = i > 0
                && toks[i - 1].0 == Tok::Word
                && word_in(
                    &sql[toks[i - 1].1..toks[i - 1].2],
                    &["FROM", "JOIN", "STRAIGHT_JOIN"],
                );
            if !bare || !after_from {
                continue;
            }
        }
        let start = if qualified { toks[i - 2].1 } else { toks[i].1 };
        if punct(i + 1, b'.') {
            if qualified {
                refs.push(ProcesslistRef {
                    span: (start, toks[i].2),
                    qualifier: true,
                    alias: false,
                    connection_id: false,
                });
            }
            continue;
        }
        let alias = match toks.get(i + 1) {
            Some(&(Tok::Word, s, e)) => !word_in(&sql[s..e], AFTER_TABLE),
            Some(&(Tok::QuotedName, _, _)) => true,
            _ => false,
        };
        refs.push(ProcesslistRef {
            span: (start, toks[i].2),
            qualifier: false,
            alias,
            connection_id: false,
        });
    }
    refs
}

/// `sql` holds nothing but words (and `;`) outside comments.
pub fn only_words(sql: &[u8]) -> bool {
    Lexer::new(sql, true).all(|t| matches!(t.0, Tok::Word | Tok::Punct(b';')))
}

/// The bare words of `sql` outside comments, strings and quoted names.
pub fn words(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lexer::new(sql, true)
        .filter(|t| t.0 == Tok::Word)
        .map(move |(_, s, e)| &sql[s..e])
}

/// What `SET NAMES` in a [`PlainSet`] says of the collation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetNames {
    /// `SET NAMES cs`: the character set's default collation, as the
    /// server resolves it (MariaDB 11.2+ lets `character_set_collations`
    /// choose it). The name as written, in lower case.
    Charset(String),
    /// `SET NAMES cs COLLATE coll`: that collation (names as written, in
    /// lower case).
    Collate(String, String),
    /// `SET NAMES DEFAULT`, `... COLLATE DEFAULT`: what the server's
    /// defaults say.
    Default,
}

/// What a plain `SET` statement assigns ([`plain_set`]): session system
/// variables, each given a constant, and `NAMES`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlainSet {
    /// `NAMES` is among the assignments: `character_set_client`,
    /// `character_set_connection`, `character_set_results`,
    /// `collation_connection` and the results collation are set.
    pub names: Option<SetNames>,
    /// The variables assigned by name (lower case), in order, each with
    /// its value as written (a quoted string with its quotes).
    pub vars: Vec<(String, String)>,
    /// A comment follows a `;` after the statement: mysqld with
    /// multi-statements on answers it as a statement of its own (an OK).
    pub comment_after: bool,
}

/// Words that, where a `SET` assigns a variable by name, start another
/// statement (`SET PASSWORD`, `SET GLOBAL x`, `SET DEFAULT ROLE`, ...).
const SET_NOT_A_VARIABLE: &[&str] = &[
    "CHARACTER",
    "CHARSET",
    "DEFAULT",
    "GLOBAL",
    "NAMES",
    "PASSWORD",
    "ROLE",
    "STATEMENT",
    "TRANSACTION",
];

/// The assignments of `sql` when it is exactly one `SET` statement (a `;`
/// after it aside) that gives session system variables constants: each
/// assignment is `[SESSION | LOCAL] name = value`, `@@[session. | local.]name
/// = value` or `NAMES cs [COLLATE coll]`, where a value is one word (`ON`,
/// `DEFAULT`, a number), a quoted string or name, or a signed or decimal
/// number. Such a statement reads nothing of the session it runs in
/// (except what the server parses it with: `sql_mode`, `old_mode` and
/// `character_set_client`) and sets what it names whatever values they
/// had. None for anything else: user variables, `GLOBAL`, expressions,
/// functions, subqueries, `SET STATEMENT`, `SET TRANSACTION`, a `\` or a
/// byte that is not ASCII anywhere in the text.
pub fn plain_set(sql: &[u8]) -> Option<PlainSet> {
    if !sql.is_ascii() || sql.contains(&b'\\') {
        return None;
    }
    let mut lexer = Lexer::new(sql, true);
    // Each token, and for `@@name` where its `@@` is.
    let mut toks: Vec<(Tok, usize, usize, usize)> = Vec::with_capacity(16);
    while let Some((kind, s, e)) = lexer.next() {
        toks.push((kind, s, e, lexer.var_at));
    }
    if lexer.exec_opens > 0 {
        return None;
    }
    let mut comment_after = false;
    while let Some(&(Tok::Punct(b';'), _, e, _)) = toks.last() {
        let rest = &sql[e..];
        comment_after |= !rest.iter().all(|b| b.is_ascii_whitespace() || *b == b';');
        toks.pop();
    }
    let text = |i: usize| -> &[u8] { toks.get(i).map_or(&[][..], |t| &sql[t.1..t.2]) };
    let is_word = |i: usize, w: &str| {
        toks.get(i).is_some_and(|t| t.0 == Tok::Word) && text(i).eq_ignore_ascii_case(w.as_bytes())
    };
    let punct = |i: usize, c: u8| toks.get(i).is_some_and(|t| t.0 == Tok::Punct(c));
    // A name as written: a bare word or a quoted name or string.
    let name = |i: usize| -> Option<String> {
        let (kind, s, e, _) = *toks.get(i)?;
        let raw = match kind {
            Tok::Word => &sql[s..e],
            Tok::QuotedName | Tok::Str if e >= s + 2 && sql[e - 1] == sql[s] => {
                let inner = &sql[s + 1..e - 1];
                if inner.contains(&sql[s]) {
                    return None;
                }
                inner
            }
            _ => return None,
        };
        (!raw.is_empty()).then(|| String::from_utf8_lossy(raw).to_ascii_lowercase())
    };
    if !is_word(0, "SET") {
        return None;
    }
    let mut out = PlainSet {
        comment_after,
        ..PlainSet::default()
    };
    let mut i = 1;
    loop {
        if is_word(i, "NAMES") {
            if out.names.is_some() {
                return None;
            }
            let cs = name(i + 1)?;
            i += 2;
            let default = cs == "default" && toks[i - 1].0 == Tok::Word;
            let mut names = if default {
                SetNames::Default
            } else {
                SetNames::Charset(cs.clone())
            };
            if is_word(i, "COLLATE") {
                let coll = name(i + 1)?;
                names = if coll == "default" && toks[i + 1].0 == Tok::Word {
                    SetNames::Default
                } else if default {
                    return None;
                } else {
                    SetNames::Collate(cs, coll)
                };
                i += 2;
            }
            out.names = Some(names);
        } else {
            // The variable.
            let (kind, s, e, var_at) = *toks.get(i)?;
            let var = match kind {
                Tok::SysVar => {
                    let scope = &sql[var_at + 2..s];
                    if !(scope.is_empty()
                        || scope.eq_ignore_ascii_case(b"session.")
                        || scope.eq_ignore_ascii_case(b"local."))
                    {
                        return None;
                    }
                    i += 1;
                    String::from_utf8_lossy(&sql[s..e]).to_ascii_lowercase()
                }
                Tok::Word | Tok::QuotedName => {
                    if kind == Tok::Word && (is_word(i, "SESSION") || is_word(i, "LOCAL")) {
                        i += 1;
                    }
                    let (kind, ..) = *toks.get(i)?;
                    if kind == Tok::Word && word_in(text(i), SET_NOT_A_VARIABLE) {
                        return None;
                    }
                    if !matches!(kind, Tok::Word | Tok::QuotedName) || text(i)[0].is_ascii_digit() {
                        return None;
                    }
                    let var = name(i)?;
                    i += 1;
                    var
                }
                _ => return None,
            };
            // `=` or `:=`.
            if punct(i, b':') {
                i += 1;
            }
            if !punct(i, b'=') {
                return None;
            }
            i += 1;
            let value_at = toks.get(i)?.1;
            // The value: one token, or a signed or decimal number.
            if punct(i, b'-') || punct(i, b'+') {
                i += 1;
                if !toks.get(i).is_some_and(|t| t.0 == Tok::Word) || !text(i)[0].is_ascii_digit() {
                    return None;
                }
            }
            match toks.get(i)?.0 {
                Tok::Word | Tok::Str | Tok::QuotedName => i += 1,
                _ => return None,
            }
            if punct(i, b'.') {
                // `1.5`: digits on both sides.
                let digits = |j: usize| {
                    toks.get(j).is_some_and(|t| t.0 == Tok::Word)
                        && text(j).iter().all(u8::is_ascii_digit)
                };
                if !digits(i - 1) || !digits(i + 1) {
                    return None;
                }
                i += 2;
            }
            let value = String::from_utf8_lossy(&sql[value_at..toks[i - 1].2]).into_owned();
            out.vars.push((var, value));
        }
        if i == toks.len() {
            return Some(out);
        }
        if !punct(i, b',') {
            return None;
        }
        i += 1;
    }
}

/// Declares [`Kw`], one value per word the statement scan looks for, and
/// [`KEYWORDS`], their spellings.
macro_rules! keywords {
    ($($kw:ident)*) => {
        /// A word the statement scan looks for (any case), or `Other`.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Kw {
            Other,
            $($kw,)*
        }

        const KEYWORDS: &[(&str, Kw)] = &[$((stringify!($kw), Kw::$kw),)*];
    };
}

keywords! {
    // Statements (first words).
    ALTER ANALYZE BACKUP BEGIN CALL CHECK CHECKSUM COMMIT CREATE DEALLOCATE
    DELETE DESC DESCRIBE DO DROP EXECUTE EXPLAIN FLUSH GET GRANT HANDLER HELP
    INSERT KILL LOAD LOCK OPTIMIZE PREPARE RELEASE RENAME REPAIR REPLACE
    REVOKE ROLLBACK SAVEPOINT SELECT SET SHOW START TABLE TRUNCATE UNLOCK
    UPDATE USE VALUES WITH XA
    // Second words.
    COUNT CURRENT DIAGNOSTICS ERRORS FULL NOT ROLE STACKED STATEMENT TABLES
    TRANSACTION WARNINGS
    // Anywhere.
    BENCHMARK CONNECTION_ID DUAL FOUND_ROWS FROM GET_LOCK INFILE INTO
    LAST_INSERT_ID LOCAL MASTER_GTID_WAIT MASTER_POS_WAIT NEXT NEXTVAL
    PROCESSLIST RELEASE_ALL_LOCKS RELEASE_LOCK ROW_COUNT SETVAL SHARE SLEEP
    SQL_CALC_FOUND_ROWS TEMPORARY VALUE WSREP_SYNC_WAIT_UPTO_GTID
    // System variables (`@@name`).
    ERROR_COUNT IDENTITY WARNING_COUNT
    // Functions whose answer differs from run to run (`nondeterministic`).
    CURDATE CURRENT_DATE CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP
    CURRENT_USER CURTIME IS_FREE_LOCK IS_USED_LOCK LASTVAL LOCALTIME
    LOCALTIMESTAMP NOW RAND RANDOM_BYTES SESSION_USER SYSDATE SYSTEM_USER
    SYS_GUID UNIX_TIMESTAMP USER UTC_DATE UTC_TIME UTC_TIMESTAMP UUID
    UUID_SHORT
}

impl Kw {
    /// Statements whose whole effect on the session the funnel can tell
    /// (with the checks in `first_word_rule`); any other first word is
    /// unproven.
    fn proven_statement(self) -> bool {
        use Kw::*;
        matches!(
            self,
            ALTER
                | ANALYZE
                | BEGIN
                | CHECK
                | CHECKSUM
                | COMMIT
                | CREATE
                | DELETE
                | DESC
                | DESCRIBE
                | DO
                | DROP
                | EXPLAIN
                | GET
                | GRANT
                | HELP
                | INSERT
                | KILL
                | LOAD
                | LOCK
                | OPTIMIZE
                | RELEASE
                | RENAME
                | REPAIR
                | REPLACE
                | REVOKE
                | ROLLBACK
                | SAVEPOINT
                | SELECT
                | SET
                | SHOW
                | START
                | TABLE
                | TRUNCATE
                | UNLOCK
                | UPDATE
                | USE
                | VALUES
                | WITH
        )
    }

    /// First words of the statements that only read (with the checks of
    /// [`StatementFacts::safe_to_repeat`]).
    fn read_statement(self) -> bool {
        use Kw::*;
        matches!(
            self,
            DESC | DESCRIBE | EXPLAIN | HELP | SELECT | SHOW | TABLE | VALUES | WITH
        )
    }

    /// Functions whose answer differs from run to run or between
    /// connections, when called (`f(`); the first group also without
    /// parentheses (`CURRENT_TIMESTAMP`, as SQL allows).
    fn nondeterministic(self, called: bool) -> bool {
        use Kw::*;
        matches!(
            self,
            CURRENT_DATE
                | CURRENT_ROLE
                | CURRENT_TIME
                | CURRENT_TIMESTAMP
                | CURRENT_USER
                | LOCALTIME
                | LOCALTIMESTAMP
                | UTC_DATE
                | UTC_TIME
                | UTC_TIMESTAMP
        ) || (called
            && matches!(
                self,
                CONNECTION_ID
                    | CURDATE
                    | CURTIME
                    | FOUND_ROWS
                    | IS_FREE_LOCK
                    | IS_USED_LOCK
                    | LASTVAL
                    | LAST_INSERT_ID
                    | NOW
                    | RAND
                    | RANDOM_BYTES
                    | ROW_COUNT
                    | SESSION_USER
                    | SYSDATE
                    | SYSTEM_USER
                    | SYS_GUID
                    | UNIX_TIMESTAMP
                    | USER
                    | UUID
                    | UUID_SHORT
            ))
    }

    /// Words that, anywhere in a read, may make running it twice differ
    /// from running it once: locking reads (`FOR UPDATE`, `LOCK IN SHARE
    /// MODE`), `INTO` (`OUTFILE`, `DUMPFILE`, user variables), DML (`EXPLAIN
    /// UPDATE` runs nothing, but is no loss), functions that lock, wait or
    /// sleep.
    fn repeat_unsafe(self) -> bool {
        use Kw::*;
        matches!(
            self,
            UPDATE
                | DELETE
                | LOCK
                | SHARE
                | INTO
                | ANALYZE
                | SLEEP
                | BENCHMARK
                | GET_LOCK
                | RELEASE_LOCK
                | RELEASE_ALL_LOCKS
                | MASTER_POS_WAIT
                | MASTER_GTID_WAIT
                | WSREP_SYNC_WAIT_UPTO_GTID
                | NEXTVAL
                | SETVAL
        )
    }
}

/// [`KEYWORDS`] by hash: index + 1 into it, 0 for none; linear probing.
const KW_BITS: u32 = 9;
const KW_MASK: usize = (1 << KW_BITS) - 1;
static KW_TABLE: [u8; 1 << KW_BITS] = {
    assert!(KEYWORDS.len() < 255 && KEYWORDS.len() < (1 << KW_BITS) / 2);
    let mut t = [0u8; 1 << KW_BITS];
    let mut k = 0;
    while k < KEYWORDS.len() {
        let mut i = kw_hash(KEYWORDS[k].0.as_bytes());
        while t[i] != 0 {
            i = (i + 1) & KW_MASK;
        }
        t[i] = (k + 1) as u8;
        k += 1;
    }
    t
};

/// The longest of [`KEYWORDS`].
const KW_MAX_LEN: usize = {
    let mut max = 0;
    let mut k = 0;
    while k < KEYWORDS.len() {
        if KEYWORDS[k].0.len() > max {
            max = KEYWORDS[k].0.len();
        }
        k += 1;
    }
    max
};

/// A hash of a word of 2 bytes or more, from its length and its first two
/// and last two bytes, ASCII case ignored (`& 0xDF` folds a letter to upper
/// case; other bytes it merges do not matter: a match is checked).
const fn kw_hash(w: &[u8]) -> usize {
    const fn fold(b: u8) -> u32 {
        (b & 0xDF) as u32
    }
    let n = w.len();
    let h = (n as u32 | fold(w[0]) << 8 | fold(w[1]) << 16 | fold(w[n - 1]) << 24)
        ^ fold(w[n - 2]).wrapping_mul(0x2c1b_3c6d);
    (h.wrapping_mul(0x9e37_79b1) >> (32 - KW_BITS)) as usize
}

/// [`KEYWORDS`] are upper-case letters and `_`, which [`keyword`]'s
/// comparison relies on.
const _: () = {
    let mut k = 0;
    while k < KEYWORDS.len() {
        let name = KEYWORDS[k].0.as_bytes();
        let mut i = 0;
        while i < name.len() {
            assert!(name[i].is_ascii_uppercase() || name[i] == b'_');
            i += 1;
        }
        k += 1;
    }
};

/// Which of [`KEYWORDS`] `w` is (ASCII case ignored), if any.
fn keyword(w: &[u8]) -> Kw {
    if w.len() < 2 || w.len() > KW_MAX_LEN || w[0].is_ascii_digit() {
        return Kw::Other;
    }
    let mut i = kw_hash(w);
    loop {
        let k = KW_TABLE[i];
        if k == 0 {
            return Kw::Other;
        }
        let (name, kw) = KEYWORDS[usize::from(k) - 1];
        let name = name.as_bytes();
        if name.len() == w.len() {
            // `eq_ignore_ascii_case`, for a name of upper-case letters and `_`.
            let mut j = 0;
            while j < name.len() && (w[j] == name[j] || (name[j] != b'_' && w[j] & 0xDF == name[j]))
            {
                j += 1;
            }
            if j == name.len() {
                return kw;
            }
        }
        i = (i + 1) & KW_MASK;
    }
}

/// Words after which `name (` is a table, index, routine or CTE being
/// named, not a function being called.
const NAME_CONTEXTS: &[&str] = &[
    "CONSTRAINT",
    "EVENT",
    "FUNCTION",
    "IGNORE",
    "INDEX",
    "INSERT",
    "INTO",
    "KEY",
    "ON",
    "PARTITION",
    "PROCEDURE",
    "REFERENCES",
    "REPLACE",
    "TABLE",
    "TRIGGER",
    "UPDATE",
    "VIEW",
    "WITH",
];

/// Built-in functions of MariaDB (`information_schema.SQL_FUNCTIONS` of
/// 10.11) and the grammar words that may stand before `(`. A name not here
/// followed by `(` may be a stored function, which can do anything to the
/// session: unproven. Sorted (byte order) for binary search.
const BUILTINS: &[&str] = &[
    "ABS",
    "ACOS",
    "ADDDATE",
    "ADDTIME",
    "ADD_MONTHS",
    "AES_DECRYPT",
    "AES_ENCRYPT",
    "AGAINST",
    "ALL",
    "AND",
    "ANY",
    "AS",
    "ASC",
    "ASCII",
    "ASIN",
    "ATAN",
    "ATAN2",
    "AVG",
    "BENCHMARK",
    "BETWEEN",
    "BIGINT",
    "BIN",
    "BINARY",
    "BINLOG_GTID_POS",
    "BIT",
    "BIT_AND",
    "BIT_COUNT",
    "BIT_LENGTH",
    "BIT_OR",
    "BIT_XOR",
    "BLOB",
    "BOTH",
    "BY",
    "CASE",
    "CAST",
    "CEIL",
    "CEILING",
    "CHAR",
    "CHARACTER",
    "CHARACTER_LENGTH",
    "CHARSET",
    "CHAR_LENGTH",
    "CHECK",
    "CHR",
    "COALESCE",
    "COERCIBILITY",
    "COLLATE",
    "COLLATION",
    "COLUMNS",
    "COLUMN_CHECK",
    "COLUMN_EXISTS",
    "COLUMN_JSON",
    "COLUMN_LIST",
    "COMPRESS",
    "CONCAT",
    "CONCAT_OPERATOR_ORACLE",
    "CONCAT_WS",
    "CONNECTION_ID",
    "CONSTRAINT",
    "CONTAINS",
    "CONV",
    "CONVERT",
    "CONVERT_TZ",
    "COS",
    "COT",
    "COUNT",
    "CRC32",
    "CRC32C",
    "CROSS",
    "CUME_DIST",
    "CURDATE",
    "CURRENT",
    "CURRENT_DATE",
    "CURRENT_ROLE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "CURTIME",
    "DATABASE",
    "DATE",
    "DATEDIFF",
    "DATETIME",
    "DATE_ADD",
    "DATE_FORMAT",
    "DATE_SUB",
    "DAY",
    "DAYNAME",
    "DAYOFMONTH",
    "DAYOFWEEK",
    "DAYOFYEAR",
    "DEC",
    "DECIMAL",
    "DECODE",
    "DECODE_HISTOGRAM",
    "DECODE_ORACLE",
    "DEFAULT",
    "DEGREES",
    "DENSE_RANK",
    "DESC",
    "DES_DECRYPT",
    "DES_ENCRYPT",
    "DISTINCT",
    "DIV",
    "DO",
    "DOUBLE",
    "DUAL",
    "ELSE",
    "ELSEIF",
    "ELT",
    "ENCODE",
    "ENCRYPT",
    "ENUM",
    "ESCAPE",
    "EXCEPT",
    "EXISTS",
    "EXP",
    "EXPORT_SET",
    "EXTRACT",
    "EXTRACTVALUE",
    "FALSE",
    "FIELD",
    "FIND_IN_SET",
    "FIRST_VALUE",
    "FLOAT",
    "FLOOR",
    "FOLLOWING",
    "FOR",
    "FOREIGN",
    "FORMAT",
    "FOUND_ROWS",
    "FROM",
    "FROM_BASE64",
    "FROM_DAYS",
    "FROM_UNIXTIME",
    "FULL",
    "GEOMETRYCOLLECTION",
    "GET_FORMAT",
    "GET_LOCK",
    "GREATEST",
    "GROUP",
    "GROUP_CONCAT",
    "HAVING",
    "HEX",
    "HIGH_PRIORITY",
    "HOUR",
    "IF",
    "IFNULL",
    "IN",
    "INDEX",
    "INET6_ATON",
    "INET6_NTOA",
    "INET_ATON",
    "INET_NTOA",
    "INNER",
    "INSERT",
    "INSTR",
    "INT",
    "INTEGER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "ISNULL",
    "IS_FREE_LOCK",
    "IS_IPV4",
    "IS_IPV4_COMPAT",
    "IS_IPV4_MAPPED",
    "IS_IPV6",
    "IS_USED_LOCK",
    "JOIN",
    "JSON_ARRAY",
    "JSON_ARRAYAGG",
    "JSON_ARRAY_APPEND",
    "JSON_ARRAY_INSERT",
    "JSON_COMPACT",
    "JSON_CONTAINS",
    "JSON_CONTAINS_PATH",
    "JSON_DEPTH",
    "JSON_DETAILED",
    "JSON_EQUALS",
    "JSON_EXISTS",
    "JSON_EXTRACT",
    "JSON_INSERT",
    "JSON_KEYS",
    "JSON_LENGTH",
    "JSON_LOOSE",
    "JSON_MERGE",
    "JSON_MERGE_PATCH",
    "JSON_MERGE_PRESERVE",
    "JSON_NORMALIZE",
    "JSON_OBJECT",
    "JSON_OBJECTAGG",
    "JSON_OVERLAPS",
    "JSON_PRETTY",
    "JSON_QUERY",
    "JSON_QUOTE",
    "JSON_REMOVE",
    "JSON_REPLACE",
    "JSON_SEARCH",
    "JSON_SET",
    "JSON_TABLE",
    "JSON_TYPE",
    "JSON_UNQUOTE",
    "JSON_VALID",
    "JSON_VALUE",
    "KEY",
    "LAG",
    "LASTVAL",
    "LAST_DAY",
    "LAST_INSERT_ID",
    "LAST_VALUE",
    "LATERAL",
    "LCASE",
    "LEAD",
    "LEADING",
    "LEAST",
    "LEFT",
    "LENGTH",
    "LENGTHB",
    "LIKE",
    "LIMIT",
    "LINESTRING",
    "LN",
    "LOAD_FILE",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "LOCATE",
    "LOCK",
    "LOCKED",
    "LOG",
    "LOG10",
    "LOG2",
    "LOWER",
    "LPAD",
    "LPAD_ORACLE",
    "LTRIM",
    "LTRIM_ORACLE",
    "MAKEDATE",
    "MAKETIME",
    "MAKE_SET",
    "MASTER_GTID_WAIT",
    "MASTER_POS_WAIT",
    "MATCH",
    "MAX",
    "MD5",
    "MEDIAN",
    "MEDIUMINT",
    "MICROSECOND",
    "MID",
    "MIN",
    "MINUS",
    "MINUTE",
    "MOD",
    "MODE",
    "MONTH",
    "MONTHNAME",
    "MULTILINESTRING",
    "MULTIPOINT",
    "MULTIPOLYGON",
    "NAME_CONST",
    "NATURAL",
    "NATURAL_SORT_KEY",
    "NCHAR",
    "NEXTVAL",
    "NOT",
    "NOW",
    "NOWAIT",
    "NTH_VALUE",
    "NTILE",
    "NULL",
    "NULLIF",
    "NUMERIC",
    "NVL",
    "NVL2",
    "OCT",
    "OCTET_LENGTH",
    "OFFSET",
    "OLD_PASSWORD",
    "ON",
    "OR",
    "ORD",
    "ORDER",
    "OUTER",
    "OVER",
    "PARTITION",
    "PASSWORD",
    "PERCENTILE_CONT",
    "PERCENTILE_DISC",
    "PERCENT_RANK",
    "PERIOD_ADD",
    "PERIOD_DIFF",
    "PI",
    "POINT",
    "POLYGON",
    "POSITION",
    "POW",
    "POWER",
    "PRECEDING",
    "PREVIOUS",
    "PRIMARY",
    "QUARTER",
    "QUOTE",
    "RADIANS",
    "RAND",
    "RANDOM_BYTES",
    "RANGE",
    "RANK",
    "REAL",
    "RECURSIVE",
    "REFERENCES",
    "REGEXP",
    "REGEXP_INSTR",
    "REGEXP_REPLACE",
    "REGEXP_SUBSTR",
    "RELEASE_ALL_LOCKS",
    "RELEASE_LOCK",
    "REPEAT",
    "REPLACE",
    "REPLACE_ORACLE",
    "RETURN",
    "RETURNING",
    "RETURNS",
    "REVERSE",
    "RIGHT",
    "RLIKE",
    "ROLLUP",
    "ROUND",
    "ROW",
    "ROWS",
    "ROW_COUNT",
    "ROW_NUMBER",
    "RPAD",
    "RPAD_ORACLE",
    "RTRIM",
    "RTRIM_ORACLE",
    "SCHEMA",
    "SCHEMAS",
    "SECOND",
    "SEC_TO_TIME",
    "SELECT",
    "SEPARATOR",
    "SESSION_USER",
    "SETVAL",
    "SFORMAT",
    "SHA",
    "SHA1",
    "SHA2",
    "SHARE",
    "SIGN",
    "SIGNED",
    "SIN",
    "SKIP",
    "SLEEP",
    "SMALLINT",
    "SOME",
    "SOUNDEX",
    "SOUNDS",
    "SPACE",
    "SQL_CACHE",
    "SQL_CALC_FOUND_ROWS",
    "SQL_NO_CACHE",
    "SQRT",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "STRAIGHT_JOIN",
    "STRCMP",
    "STR_TO_DATE",
    "SUBDATE",
    "SUBSTR",
    "SUBSTRING",
    "SUBSTRING_INDEX",
    "SUBSTR_ORACLE",
    "SUBTIME",
    "SUM",
    "SYSDATE",
    "SYSTEM_USER",
    "SYS_GUID",
    "TABLE",
    "TAN",
    "TEXT",
    "THEN",
    "TIME",
    "TIMEDIFF",
    "TIMESTAMP",
    "TIMESTAMPADD",
    "TIMESTAMPDIFF",
    "TIME_FORMAT",
    "TIME_TO_SEC",
    "TINYINT",
    "TO_BASE64",
    "TO_CHAR",
    "TO_DAYS",
    "TO_SECONDS",
    "TRAILING",
    "TRIM",
    "TRIM_ORACLE",
    "TRUE",
    "TRUNCATE",
    "UCASE",
    "UNBOUNDED",
    "UNCOMPRESS",
    "UNCOMPRESSED_LENGTH",
    "UNHEX",
    "UNION",
    "UNIQUE",
    "UNIX_TIMESTAMP",
    "UNKNOWN",
    "UNSIGNED",
    "UNTIL",
    "UPDATEXML",
    "UPPER",
    "USER",
    "USING",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "UUID",
    "UUID_SHORT",
    "VALUE",
    "VALUES",
    "VARBINARY",
    "VARCHAR",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "VERSION",
    "WAIT",
    "WEEK",
    "WEEKDAY",
    "WEEKOFYEAR",
    "WEIGHT_STRING",
    "WHEN",
    "WHERE",
    "WHILE",
    "WINDOW",
    "WITH",
    "WSREP_LAST_SEEN_GTID",
    "WSREP_LAST_WRITTEN_GTID",
    "WSREP_SYNC_WAIT_UPTO_GTID",
    "XOR",
    "YEAR",
    "YEARWEEK",
];

/// `word` (32 bytes at most, valid UTF-8) is one of [`BUILTINS`] or starts
/// with `ST_` or `MBR`, in any case.
fn is_builtin(word: &[u8]) -> bool {
    let mut buf = [0u8; 32];
    let Some(w) = buf.get_mut(..word.len()) else {
        return false;
    };
    w.copy_from_slice(word);
    w.make_ascii_uppercase();
    let w = &*w;
    // The names are ASCII: a word that is not UTF-8 is none of them.
    BUILTINS.binary_search_by(|b| b.as_bytes().cmp(w)).is_ok()
        || ((w.starts_with(b"ST_") || w.starts_with(b"MBR")) && std::str::from_utf8(w).is_ok())
}

/// Which of [`KEYWORDS`] are built-in functions ([`is_builtin`]).
static KW_BUILTIN: [bool; KEYWORDS.len() + 1] = {
    const fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    let mut t = [false; KEYWORDS.len() + 1];
    let mut k = 0;
    while k < KEYWORDS.len() {
        let name = KEYWORDS[k].0.as_bytes();
        let mut b = 0;
        while b < BUILTINS.len() {
            t[KEYWORDS[k].1 as usize] |= same(name, BUILTINS[b].as_bytes());
            b += 1;
        }
        k += 1;
    }
    t
};

fn word_in(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
}

/// What one statement's first words say.
fn first_word_rule(first: Kw, second: Kw, f: &mut StatementFacts) {
    use Kw::*;
    if !first.proven_statement() {
        f.unproven = f.unproven.or(Some(unproven_statement(first)));
        return;
    }
    match first {
        KILL => f.first_is_kill = true,
        LOCK if matches!(second, TABLES | TABLE) => f.takes |= unreported::TABLE_LOCKS,
        LOCK => f.unproven = f.unproven.or(Some("LOCK statement")),
        UNLOCK if matches!(second, TABLES | TABLE) => f.releases |= unreported::TABLE_LOCKS,
        SET => match second {
            // Applies to the next transaction only, and mysqld does not say so.
            TRANSACTION => f.unproven = f.unproven.or(Some("SET TRANSACTION")),
            ROLE => f.unproven = f.unproven.or(Some("SET ROLE")),
            STATEMENT => f.set_statement = true,
            _ => {}
        },
        BEGIN if second == NOT => f.unproven = f.unproven.or(Some("compound statement")),
        BEGIN => f.begins_transaction = true,
        START if second != TRANSACTION => f.unproven = f.unproven.or(Some("START statement")),
        START => f.begins_transaction = true,
        GET if matches!(second, DIAGNOSTICS | CURRENT | STACKED) => f.reads_diagnostics = true,
        GET => f.unproven = f.unproven.or(Some("GET statement")),
        // `SHOW COUNT(*) WARNINGS` is a SELECT of the count (FOUND_ROWS() 1).
        SHOW if second == COUNT => {
            f.reads_diagnostics = true;
            f.selects = true;
        }
        SHOW if matches!(second, WARNINGS | ERRORS) => f.reads_diagnostics = true,
        SHOW => f.clears_diagnostics = true,
        INSERT | UPDATE | DELETE | REPLACE | LOAD => {
            f.may_fire_triggers = true;
            f.clears_diagnostics = true;
        }
        SELECT | WITH | VALUES | TABLE => f.selects = true,
        _ => {}
    }
}

fn unproven_statement(first: Kw) -> &'static str {
    use Kw::*;
    match first {
        BACKUP => "BACKUP",
        CALL => "CALL",
        DEALLOCATE => "DEALLOCATE",
        EXECUTE => "EXECUTE",
        FLUSH => "FLUSH",
        HANDLER => "HANDLER",
        PREPARE => "PREPARE",
        XA => "XA",
        _ => "statement the funnel does not know",
    }
}

/// One reading of `sql` (`\` an escape or not): its facts, whether it may
/// be a query the funnel answers itself (its first words are `SELECT
/// LAST_INSERT_ID`, `SELECT CONNECTION_ID` or `SELECT ROW_COUNT`), and
/// whether a `\` escaped anything. The tokens also go to `shape`, if any.
fn scan(
    sql: &[u8],
    backslash_escapes: bool,
    mut shape: Option<ShapeWriter>,
) -> (StatementFacts, bool, bool) {
    let mut f = StatementFacts::default();
    let mut lexer = Lexer::new(sql, backslash_escapes);
    // Per statement: its first two words, and whether anything came yet.
    let mut first: Option<Kw> = None;
    let mut second: Option<Kw> = None;
    let mut started = false;
    let mut rule_done = false;
    let mut statement_index = 0;
    // The statement's last four tokens (token `n` at `n % 4`; `count` of
    // them), to read `ctx name (` and `ctx schema . name (`; which keyword
    // the newest is, if a word.
    let mut ring = [(Tok::Punct(0), 0, 0); 4];
    let mut count = 0usize;
    let mut prev_word = Kw::Other;
    let mut into_seen = false;
    // In a LOAD statement, before its INFILE: LOCAL may come.
    let mut in_load = false;
    let mut set_seen = false;
    // The first statement is a SET.
    let mut first_is_set = false;
    let mut colon = false;
    // After `LAST_INSERT_ID (`: the next token says read or set.
    let mut insert_id_call = false;
    // Every statement so far is a read with no word that makes running it
    // twice unsafe (see `safe_to_repeat`), and there was one.
    let mut reads_only = true;
    let mut any_statement = false;
    // The whole query is words (and `;`): how many, and the first three.
    let mut only_words = true;
    let mut words = 0;
    let mut first_words = [Kw::Other; 3];
    let mut tokens = 0;
    let mut answer_candidate = false;
    // Executable comments entered before the previous token.
    let mut exec_opens = 0;
    let finish =
        |first: Option<Kw>, second: Option<Kw>, f: &mut StatementFacts, statement_index: usize| {
            if let Some(fw) = first {
                let before_kill = f.first_is_kill;
                first_word_rule(fw, second.unwrap_or(Kw::Other), f);
                if statement_index > 0 && f.first_is_kill && !before_kill {
                    // Only a query's first statement is the funnel's KILL.
                    f.first_is_kill = false;
                    f.later_kill = true;
                }
            }
        };
    while let Some(tok) = lexer.next() {
        let (kind, s, e) = tok;
        let kw = match kind {
            Tok::Word | Tok::SysVar => keyword(&sql[s..e]),
            _ => Kw::Other,
        };
        if let Some(shape) = shape.as_mut() {
            let (token, start) = match kind {
                Tok::Word => (ShapeToken::Word, s),
                Tok::Str => (ShapeToken::Str, s),
                Tok::QuotedName => (ShapeToken::QuotedName, s),
                Tok::Punct(c) => (ShapeToken::Punct(c), s),
                Tok::UserVar => (ShapeToken::Other, s),
                Tok::SysVar => (ShapeToken::Other, lexer.var_at),
            };
            shape.token(sql, token, start, e, lexer.exec_opens - exec_opens);
            exec_opens = lexer.exec_opens;
        }
        match kind {
            Tok::Word => {
                if words < first_words.len() {
                    first_words[words] = kw;
                }
                words += 1;
                f.names_processlist |= kw == Kw::PROCESSLIST;
            }
            Tok::Punct(b';') => {}
            Tok::QuotedName => {
                only_words = false;
                f.names_processlist |=
                    e >= s + 2 && sql[s + 1..e - 1].eq_ignore_ascii_case(b"PROCESSLIST");
            }
            _ => only_words = false,
        }
        if tokens < 2 {
            let word = kind == Tok::Word;
            answer_candidate = if tokens == 0 {
                word && kw == Kw::SELECT
            } else {
                answer_candidate
                    && word
                    && matches!(
                        kw,
                        Kw::LAST_INSERT_ID | Kw::CONNECTION_ID | Kw::ROW_COUNT | Kw::FOUND_ROWS
                    )
            };
            tokens += 1;
            if answer_candidate && tokens == 2 {
                // Most likely answered by the funnel, never sent: no shape
                // (if it is sent after all, the stats build it).
                shape = None;
            }
        }
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
            count = 0;
            prev_word = Kw::Other;
            colon = false;
            continue;
        }
        if !started {
            started = true;
            any_statement = true;
            match kind {
                Tok::Word => {
                    reads_only &= kw.read_statement();
                    first = Some(kw);
                    set_seen |= kw == Kw::SET;
                    first_is_set |= statement_index == 0 && kw == Kw::SET;
                    in_load = kw == Kw::LOAD;
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
            // Whatever the token: only a word (or `@@name`) is a keyword.
            second = Some(kw);
            finish(first, second, &mut f, statement_index);
            rule_done = true;
        }
        if prev_word == Kw::FROM {
            // `FROM t`, `FROM (SELECT ...)`, `` FROM `t` ``; not `FROM DUAL`.
            f.clears_diagnostics |= match kind {
                Tok::Word => kw != Kw::DUAL,
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
        if !f.mentions_select_limit
            && matches!(kind, Tok::Word | Tok::QuotedName | Tok::SysVar)
            && e - s >= 16
            && contains_ignore_case(&sql[s..e], b"sql_select_limit")
        {
            f.mentions_select_limit = true;
        }
        if in_load && kind == Tok::Word {
            if kw == Kw::LOCAL {
                f.load_local = true;
            } else if kw == Kw::INFILE {
                in_load = false;
            }
        }
        if insert_id_call {
            if kind != Tok::Punct(b')') {
                f.sets_insert_id = true;
            }
            insert_id_call = false;
        }
        match kind {
            Tok::Word => {
                if reads_only && kw.repeat_unsafe() {
                    reads_only = false;
                }
                f.nondeterministic |= kw.nondeterministic(false);
                match kw {
                    Kw::GET_LOCK => f.takes |= unreported::USER_LOCKS,
                    Kw::RELEASE_ALL_LOCKS => f.releases |= unreported::USER_LOCKS,
                    Kw::SQL_CALC_FOUND_ROWS => f.takes |= unreported::FOUND_ROWS,
                    Kw::FOUND_ROWS => f.reads_found_rows = true,
                    Kw::LAST_INSERT_ID => f.reads_insert_id = true,
                    Kw::ROW_COUNT => f.reads_row_count = true,
                    Kw::TEMPORARY => f.opaque_state = true,
                    // The session's last value of the sequence, which
                    // LASTVAL() reads and mysqld does not report.
                    Kw::NEXTVAL | Kw::SETVAL => f.unproven = f.unproven.or(Some("sequence")),
                    Kw::VALUE if prev_word == Kw::NEXT => {
                        f.unproven = f.unproven.or(Some("sequence"));
                    }
                    Kw::INTO => into_seen = true,
                    _ => {}
                }
            }
            Tok::SysVar => {
                // Session and global settings: not part of a cache key.
                f.nondeterministic = true;
                match kw {
                    Kw::WARNING_COUNT | Kw::ERROR_COUNT => f.reads_diagnostics = true,
                    Kw::LAST_INSERT_ID | Kw::IDENTITY => f.reads_insert_id = true,
                    _ => {}
                }
            }
            Tok::UserVar => f.mentions_user_var = true,
            Tok::Punct(b'(') => {
                f.nondeterministic |= prev_word.nondeterministic(true);
                // A built-in function's name needs no more look.
                if !KW_BUILTIN[prev_word as usize] {
                    // Newest first.
                    let prev: [Option<(Tok, usize, usize)>; 4] =
                        std::array::from_fn(|k| (k < count).then(|| ring[(count - 1 - k) % 4]));
                    if let Some(reason) = call_check(sql, &prev) {
                        f.unproven = f.unproven.or(Some(reason));
                    }
                }
                insert_id_call = prev_word == Kw::LAST_INSERT_ID;
            }
            Tok::Punct(b'=') if colon && f.mentions_user_var => f.assigns_user_var = true,
            _ => {}
        }
        colon = kind == Tok::Punct(b':');
        ring[count % 4] = tok;
        count += 1;
        prev_word = if kind == Tok::Word { kw } else { Kw::Other };
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
    f.set_only = first_is_set && statement_index + usize::from(started) == 1;
    f.show_processlist = match (only_words, words, first_words) {
        (true, 2, [Kw::SHOW, Kw::PROCESSLIST, _]) => Some(false),
        (true, 3, [Kw::SHOW, Kw::FULL, Kw::PROCESSLIST]) => Some(true),
        _ => None,
    };
    if let Some(shape) = shape {
        f.shape = Some(shape.finish(sql, lexer.exec_opens - exec_opens));
    }
    (f, answer_candidate && tokens == 2, lexer.escapes_seen)
}

/// A name that may stand for `wait_timeout` / `interactive_timeout` or a
/// list of variables that holds them: one that contains `timeout` or
/// `variables` (any case).
fn names_timeouts(w: &[u8]) -> bool {
    w.len() >= 7
        && (contains_ignore_case(w, b"timeout")
            || w.len() >= 9 && contains_ignore_case(w, b"variables"))
}

/// `needle` (lower-case ASCII) occurs in `w`, ASCII case ignored.
fn contains_ignore_case(w: &[u8], needle: &[u8]) -> bool {
    let n = needle.len();
    w.len() >= n
        && (0..=w.len() - n)
            .any(|i| w[i] | 0x20 == needle[0] && w[i..i + n].eq_ignore_ascii_case(needle))
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

#[cfg(test)]
mod tests {
    use super::unreported::*;
    use super::*;

    fn pins(sql: &[u8]) -> bool {
        statement_facts(sql).takes != 0
    }

    fn unproven(sql: &str) -> bool {
        statement_facts(sql.as_bytes()).unproven.is_some()
    }

    #[test]
    fn builtin_table_is_sorted_and_upper_case() {
        assert!(BUILTINS.windows(2).all(|w| w[0] < w[1]));
        assert!(BUILTINS
            .iter()
            .all(|w| w.bytes().all(|b| !b.is_ascii_lowercase())));
    }

    #[test]
    fn lock_scan_skips_comments_and_strings() {
        assert!(pins(b"SELECT GET_LOCK('a', 1)"));
        assert!(pins(b"lock tables t read"));
        assert!(pins(b"SELECT SQL_CALC_FOUND_ROWS * FROM t"));
        assert!(pins(b"/*!40101 SELECT get_lock('x',0) */"));
        assert!(pins(b"/*M!100100 SELECT get_lock('x',0) */"));
        assert!(!pins(b"SELECT 'GET_LOCK(1)'"));
        assert!(!pins(b"SELECT `lock` FROM t"));
        assert!(!pins(b"SELECT 1 -- GET_LOCK\n"));
        assert!(!pins(b"SELECT 1 /* LOCK */"));
        assert!(!pins(b"SELECT 1 # lock"));
        assert!(!pins(b"SELECT blocked, locks FROM t"));
        assert!(!pins(b"SELECT * FROM t LOCK IN SHARE MODE"));
        assert!(!pins(b"SELECT 'it''s LOCK' , \"a\\\"LOCK\""));
        assert!(statement_facts(b"/* x */ kill 5").first_is_kill);
        assert_eq!(statement_facts(b"  "), StatementFacts::default());
        // Unterminated input must not panic.
        assert!(!pins(b"SELECT 'abc"));
        assert!(!pins(b"/* abc"));
        assert!(!pins(b"@"));
        assert!(!pins(b"@@"));
        assert!(!pins(b"/*!"));
    }

    #[test]
    fn lock_scan_tells_what_is_taken_and_released() {
        let t = |sql: &[u8]| {
            let t = statement_facts(sql);
            (t.takes, t.releases)
        };
        assert_eq!(t(b"LOCK TABLES t READ"), (TABLE_LOCKS, 0));
        assert_eq!(t(b"unlock tables"), (0, TABLE_LOCKS));
        assert_eq!(t(b"SELECT GET_LOCK('a', 0)"), (USER_LOCKS, 0));
        assert_eq!(t(b"DO RELEASE_ALL_LOCKS()"), (0, USER_LOCKS));
        // One of maybe several: still held.
        assert_eq!(t(b"DO RELEASE_LOCK('a')"), (0, 0));
        assert_eq!(t(b"SELECT SQL_CALC_FOUND_ROWS a FROM t"), (FOUND_ROWS, 0));
        // Read, not held: the funnel knows the count (`Client::found_rows`).
        assert_eq!(t(b"SELECT FOUND_ROWS()"), (0, 0));
        assert!(statement_facts(b"SELECT FOUND_ROWS() + 1").reads_found_rows);
        for (sql, selects) in [
            ("SELECT 1", true),
            ("with c as (select 1) select * from c", true),
            ("VALUES (1)", true),
            ("TABLE t", true),
            ("SHOW TABLES", false),
            ("SET @a = (SELECT 1)", false),
            ("DO 1; SELECT 2", true),
        ] {
            assert_eq!(statement_facts(sql.as_bytes()).selects, selects, "{sql}");
        }
        assert_eq!(
            t(b"SELECT RELEASE_ALL_LOCKS(), GET_LOCK('b', 0)"),
            (USER_LOCKS, USER_LOCKS)
        );
        assert_eq!(t(b"SELECT 'UNLOCK TABLES', `RELEASE_ALL_LOCKS`"), (0, 0));
        // Not the first statement of a multi-statement query: still seen.
        assert_eq!(t(b"SELECT 1; LOCK TABLES t WRITE"), (TABLE_LOCKS, 0));
    }

    #[test]
    fn no_sql_mode_hides_a_lock() {
        // With NO_BACKSLASH_ESCAPES the string ends at `\'`, and GET_LOCK runs.
        assert!(pins(b"SELECT 'a\\', GET_LOCK('m', 0), '\\'"));
        // With escapes, the string goes on past `\'`, and GET_LOCK runs.
        assert!(pins(b"SELECT 'a\\' ', GET_LOCK('m', 0) -- '"));
    }

    #[test]
    fn proven_statements() {
        for sql in [
            "SELECT 1",
            "select now(), concat('a', 'b'), count(*), avg(x), if(a, b, c) from t where id in (1, 2)",
            "SELECT CAST(x AS CHAR(10)), CONVERT(y, DECIMAL(10,2)) FROM t",
            "(SELECT 1) UNION (SELECT 2)",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "INSERT INTO t (a, b) VALUES (1, 2)",
            "INSERT INTO db.t(a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)",
            "REPLACE t (a) VALUES (1)",
            "UPDATE t SET a = a + 1 WHERE b = 2",
            "DELETE FROM t WHERE a = 1",
            "SET sql_mode = 'ANSI', @@session.time_zone = '+00:00'",
            "SET NAMES utf8mb4",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
            "USE db",
            "BEGIN",
            "START TRANSACTION READ ONLY",
            "COMMIT",
            "ROLLBACK TO SAVEPOINT s",
            "SHOW TABLES",
            "SHOW WARNINGS",
            "EXPLAIN SELECT * FROM t",
            "CREATE TABLE t (a INT PRIMARY KEY, b VARCHAR(10))",
            "CREATE INDEX i ON t (a)",
            "DROP TABLE t",
            "SELECT ST_X(POINT(1, 2))",
            "select 1; select 2",
            "DO 1",
            "DO (SELECT 1 FROM information_schema.ENGINES LIMIT 0)",
            "SELECT * FROM t WHERE (a = 1) AND (b = 2) OR NOT (c IN (3))",
            "SELECT * FROM t USE INDEX (i) ORDER BY (a) DESC",
            // What common clients and benchmarks send.
            "SELECT c FROM sbtest1 WHERE id BETWEEN 5 AND 104 ORDER BY c",
            "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 5 AND 104",
            "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 5 AND 104 ORDER BY c",
            "UPDATE sbtest1 SET k=k+1 WHERE id=5",
            "INSERT INTO sbtest1 (id, k, c, pad) VALUES (5, 6, 'x', 'y')",
            "SELECT `users`.* FROM `users` WHERE `users`.`id` = 1 LIMIT 1",
            "SHOW FULL FIELDS FROM `users`",
            "SELECT COUNT(*) FROM (SELECT 1 AS one FROM `t` LIMIT 1) subquery_for_count",
            "/* mysql-connector-j */SELECT @@session.auto_increment_increment AS auto_increment_increment, @@character_set_client",
            "SET character_set_results = NULL",
            "SET AUTOCOMMIT = 0",
            "SELECT CAST('test plain returns' AS CHAR(60)) COLLATE utf8mb4_bin AS anon_1",
            "show collation where `Charset` = 'utf8mb4' and `Collation` = 'utf8mb4_bin'",
            "SELECT * FROM t WHERE a IN (SELECT b FROM u) FOR UPDATE",
            "SELECT a, ROW_NUMBER() OVER (PARTITION BY b ORDER BY c) FROM t",
            "SELECT JSON_EXTRACT(doc, '$.a'), DATE_FORMAT(NOW(), '%Y') FROM t",
            "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + VALUES(a)",
        ] {
            assert!(!unproven(sql), "{sql}: {:?}", statement_facts(sql.as_bytes()));
        }
    }

    #[test]
    fn unproven_statements() {
        for sql in [
            "SELECT my_func()",
            "SELECT `my func`(1)",
            "SELECT db.f(1)",
            "SELECT a FROM t WHERE my_func (a) > 1",
            "INSERT INTO t VALUES (f())",
            "CALL p()",
            "EXECUTE IMMEDIATE 'SET @x = 1'",
            "PREPARE s FROM 'SELECT 1'",
            "EXECUTE s",
            "DEALLOCATE PREPARE s",
            "HANDLER t OPEN",
            "FLUSH TABLES WITH READ LOCK",
            "FLUSH TABLES t WITH READ LOCK",
            "BACKUP LOCK t",
            "BACKUP STAGE START",
            "XA START 'x'",
            "SET TRANSACTION READ ONLY",
            "SET ROLE r",
            "BEGIN NOT ATOMIC SELECT 1; END",
            "SELECT 1; CALL p()",
            "SIGNAL SQLSTATE '45000'",
            "-- only a comment\n'x'",
            "START SLAVE",
        ] {
            assert!(unproven(sql), "{sql}");
        }
    }

    #[test]
    fn processlist_references_are_found_where_they_name_the_table() {
        let refs = |s: &str, bare: bool| -> Vec<(String, bool, bool)> {
            processlist_refs(s.as_bytes(), bare)
                .unwrap()
                .into_iter()
                .filter(|r| !r.connection_id)
                .map(|r| (s[r.span.0..r.span.1].to_string(), r.qualifier, r.alias))
                .collect()
        };
        let table = |t: &str, alias: bool| (t.to_string(), false, alias);
        assert_eq!(
            refs(
                "SELECT * FROM information_schema.PROCESSLIST WHERE ID = 1",
                false
            ),
            [table("information_schema.PROCESSLIST", false)]
        );
        assert_eq!(
            refs(
                "select id from `INFORMATION_SCHEMA` . `processlist` p",
                false
            ),
            [table("`INFORMATION_SCHEMA` . `processlist`", true)]
        );
        assert_eq!(
            refs(
                "SELECT information_schema.PROCESSLIST.ID FROM information_schema.PROCESSLIST AS x, t JOIN information_schema.processlist;",
                false
            ),
            [
                ("information_schema.PROCESSLIST".to_string(), true, false),
                table("information_schema.PROCESSLIST", true),
                table("information_schema.processlist", false),
            ]
        );
        assert_eq!(
            refs(
                "SELECT COUNT(*) FROM (SELECT 1 FROM information_schema.PROCESSLIST) t",
                false
            ),
            [table("information_schema.PROCESSLIST", false)]
        );
        // Not the table, or not its rows.
        assert!(refs("SELECT 'information_schema.PROCESSLIST'", false).is_empty());
        assert!(refs("SELECT 1 -- information_schema.PROCESSLIST", false).is_empty());
        assert!(refs("SELECT * FROM db.information_schema.PROCESSLIST", false).is_empty());
        assert!(refs("SELECT * FROM mydb.PROCESSLIST", true).is_empty());
        assert!(refs("SHOW COLUMNS FROM information_schema.PROCESSLIST", false).is_empty());
        assert!(refs("DESC information_schema.PROCESSLIST", false).is_empty());
        assert!(refs("SHOW PROCESSLIST", true).is_empty());
        assert_eq!(
            refs(
                "DESC t; SELECT * FROM information_schema.PROCESSLIST",
                false
            )
            .len(),
            1
        );
        // Bare, with information_schema the default schema.
        assert!(refs("SELECT * FROM PROCESSLIST", false).is_empty());
        assert_eq!(
            refs("SELECT * FROM PROCESSLIST WHERE 1", true),
            [table("PROCESSLIST", false)]
        );
        assert!(refs("SELECT PROCESSLIST FROM t", true).is_empty());
        let with_id = processlist_refs(
            b"SELECT CONNECTION_ID() AS me FROM information_schema.PROCESSLIST WHERE ID = connection_id ( )",
            false,
        )
        .unwrap();
        assert_eq!(
            with_id
                .iter()
                .map(|r| (r.span, r.connection_id))
                .collect::<Vec<_>>(),
            [((7, 22), true), ((34, 64), false), ((76, 93), true)]
        );
        // The two readings of a backslash disagree.
        assert_eq!(
            processlist_refs(
                b"SELECT 'a\\'; SELECT * FROM information_schema.PROCESSLIST; '",
                false
            ),
            Err(())
        );
    }

    #[test]
    fn a_query_splits_at_its_first_kill() {
        let split = |s: &str| kill_split(s.as_bytes());
        let k = split("SELECT 1; KILL 5; SELECT 2").unwrap().unwrap();
        let sql = b"SELECT 1; KILL 5; SELECT 2";
        assert_eq!(&sql[..k.before.unwrap()], b"SELECT 1");
        assert_eq!(&sql[k.kill.0..k.kill.1], b"KILL 5");
        assert_eq!(&sql[k.rest..], b" SELECT 2");
        assert!(k.more_after(sql));
        let k = split("kill query 7 ;  ").unwrap().unwrap();
        assert_eq!((k.before, k.kill, k.rest), (None, (0, 13), 14));
        assert!(!k.more_after(b"kill query 7 ;  "));
        let sql = b"SELECT ';KILL 1'; /* ; */ KILL 2 -- c\n";
        let k = kill_split(sql).unwrap().unwrap();
        assert_eq!(&sql[..k.before.unwrap()], b"SELECT ';KILL 1'");
        assert_eq!(&sql[k.kill.0..k.kill.1], b"KILL 2 -- c\n");
        assert!(!k.more_after(sql));
        let sql = b"KILL 1; -- c";
        let k = kill_split(sql).unwrap().unwrap();
        assert!(k.more_after(sql), "mysqld answers a comment with an OK");
        assert_eq!(split("SELECT 1; SELECT 'KILL 2'"), Ok(None));
        assert_eq!(split("BEGIN NOT ATOMIC SELECT 1; KILL 5; END"), Err(()));
        // The two readings of a backslash put the `KILL` in different places.
        assert_eq!(split("SELECT 'a\\'; KILL 5; '"), Err(()));
    }

    #[test]
    fn a_kill_after_the_first_statement_is_seen() {
        let f = statement_facts(b"SELECT 1; KILL 5");
        assert!(f.later_kill && !f.first_is_kill);
        let f = statement_facts(b"KILL 5; SELECT 1");
        assert!(f.first_is_kill && !f.later_kill);
        assert!(!statement_facts(b"SELECT 'KILL 5'; SELECT 1").later_kill);
    }

    #[test]
    fn finds_load_data_local() {
        for sql in [
            "LOAD DATA LOCAL INFILE '/x' INTO TABLE t",
            "load data low_priority local infile '/x' into table t",
            "LOAD XML LOCAL INFILE '/x' INTO TABLE t",
            "SELECT 1; LOAD DATA CONCURRENT LOCAL INFILE '/x' INTO TABLE t",
        ] {
            assert!(statement_facts(sql.as_bytes()).load_local, "{sql}");
        }
        for sql in [
            "LOAD DATA INFILE '/x' INTO TABLE t",
            "LOAD DATA INFILE '/x' INTO TABLE local",
            "SELECT 'LOAD DATA LOCAL'",
            "SELECT local FROM t",
        ] {
            assert!(!statement_facts(sql.as_bytes()).load_local, "{sql}");
        }
    }

    #[test]
    fn timeouts_mentioned() {
        for sql in [
            "SELECT @@wait_timeout",
            "select @@session.interactive_timeout",
            "SET wait_timeout = 1",
            "SET SESSION `wait_timeout` = DEFAULT",
            "SHOW VARIABLES LIKE 'w%'",
            "show session variables",
            "SELECT * FROM information_schema.SESSION_VARIABLES",
            "SELECT * FROM `information_schema`.`SYSTEM_VARIABLES`",
            "SELECT 1; SELECT @@Wait_Timeout",
            "SELECT 'it\\'s', @@net_read_timeout",
        ] {
            assert!(statement_facts(sql.as_bytes()).mentions_timeouts, "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SELECT 'wait_timeout'",
            "SELECT @@sql_mode /* wait_timeout */",
            "SET @wait = 1",
            "SHOW STATUS",
        ] {
            assert!(!statement_facts(sql.as_bytes()).mentions_timeouts, "{sql}");
        }
    }

    #[test]
    fn session_reads_and_writes() {
        let f = statement_facts(b"SELECT LAST_INSERT_ID(42)");
        assert!(f.reads_insert_id && f.sets_insert_id);
        let f = statement_facts(b"SELECT LAST_INSERT_ID()");
        assert!(f.reads_insert_id && !f.sets_insert_id);
        assert!(statement_facts(b"UPDATE t SET id = LAST_INSERT_ID(id + 1)").sets_insert_id);
        assert!(statement_facts(b"SELECT ROW_COUNT()").reads_row_count);
        for sql in [
            "SHOW WARNINGS",
            "show errors limit 1",
            "SHOW COUNT(*) WARNINGS",
            "SELECT @@warning_count",
            "select @@session.error_count",
            "GET DIAGNOSTICS @n = NUMBER",
        ] {
            assert!(statement_facts(sql.as_bytes()).reads_diagnostics, "{sql}");
        }
        assert!(!statement_facts(b"SELECT 'SHOW WARNINGS'").reads_diagnostics);
        for sql in [
            "SET @a = 1",
            "SELECT @x := 5",
            "SELECT 1 INTO @y",
            "GET DIAGNOSTICS @n = NUMBER",
        ] {
            let f = statement_facts(sql.as_bytes());
            assert!(f.mentions_user_var && f.assigns_user_var, "{sql}");
        }
        let f = statement_facts(b"SELECT @v");
        assert!(f.mentions_user_var && !f.assigns_user_var);
        assert!(!statement_facts(b"SELECT @@version").mentions_user_var);
        assert!(!statement_facts(b"SELECT '@x'").mentions_user_var);
        assert!(statement_facts(b"create temporary table t (a int)").opaque_state);
        assert!(unproven("SELECT NEXTVAL(s)"));
        assert!(unproven("SELECT NEXT VALUE FOR s"));
        assert!(unproven("SELECT SETVAL(s, 10)"));
        assert!(!unproven("SELECT LASTVAL(s), PREVIOUS VALUE FOR s"));
        assert!(statement_facts(b"SELECT @@last_insert_id").reads_insert_id);
        assert!(statement_facts(b"SELECT @@session.identity").reads_insert_id);
        assert!(statement_facts(b"INSERT INTO t VALUES (1)").may_fire_triggers);
        assert!(!statement_facts(b"SELECT * FROM t").may_fire_triggers);
    }

    #[test]
    fn tells_what_empties_the_diagnostics_area() {
        for sql in [
            "SELECT * FROM t",
            "select 1 from `t`",
            "SELECT * FROM (SELECT 1) x",
            "SELECT (SELECT 1 FROM t LIMIT 1)",
            "SET @z = (SELECT 1 FROM t LIMIT 1)",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "SHOW TABLES",
            "SHOW VARIABLES LIKE 'x'",
        ] {
            assert!(statement_facts(sql.as_bytes()).clears_diagnostics, "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SELECT 1 FROM DUAL",
            "SELECT 1 INTO @x",
            "SET @a = 1",
            "DO 0",
            "USE db",
            "BEGIN",
            "COMMIT",
            "SHOW WARNINGS",
            "SHOW COUNT(*) ERRORS",
            "SELECT @@warning_count",
            "SELECT 'FROM t'",
        ] {
            assert!(!statement_facts(sql.as_bytes()).clears_diagnostics, "{sql}");
        }
    }

    #[test]
    fn words_skip_strings_and_comments() {
        let w: Vec<&[u8]> = words(b"KILL /* x */ QUERY 'a' `b` 5").collect();
        assert_eq!(w, vec![&b"KILL"[..], b"QUERY", b"5"]);
    }

    #[test]
    fn only_deterministic_plain_reads_are_cacheable() {
        let cacheable = |sql: &str| statement_facts(sql.as_bytes()).cacheable();
        for sql in [
            "SELECT * FROM t WHERE id = 1",
            "select name, price from products where id in (1, 2)",
            "SELECT user, host FROM mysql.user",
            "SELECT now FROM t",
            "SELECT COUNT(*) FROM t; SELECT 1",
            "SHOW TABLES",
            "SELECT 'NOW()' FROM t",
            "SELECT * FROM t /* RAND() */",
        ] {
            assert!(cacheable(sql), "{sql}");
        }
        for sql in [
            "SELECT NOW()",
            "SELECT now ( )",
            "SELECT CURRENT_TIMESTAMP",
            "SELECT current_date FROM t",
            "SELECT LOCALTIME",
            "SELECT SYSDATE()",
            "SELECT UNIX_TIMESTAMP()",
            "SELECT RAND()",
            "SELECT * FROM t ORDER BY RAND() LIMIT 1",
            "SELECT UUID()",
            "SELECT UUID_SHORT()",
            "SELECT CONNECTION_ID()",
            "SELECT id, CONNECTION_ID() FROM t",
            "SELECT LAST_INSERT_ID()",
            "SELECT ROW_COUNT(), 1",
            "SELECT FOUND_ROWS()",
            "SELECT USER()",
            "SELECT CURRENT_USER",
            "SELECT @x",
            "SELECT @@sql_mode",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT * FROM t INTO @a",
            "SELECT f(1) FROM t",
            "SHOW PROCESSLIST",
            "SELECT * FROM information_schema.PROCESSLIST",
            "INSERT INTO t VALUES (1)",
            "SELECT 1; DELETE FROM t",
            "SELECT /*!50000 NOW() */ 1",
            "SELECT SLEEP(1)",
        ] {
            assert!(!cacheable(sql), "{sql}");
        }
    }

    #[test]
    fn only_plain_reads_are_safe_to_repeat() {
        let safe = |sql: &str| statement_facts(sql.as_bytes()).safe_to_repeat;
        for sql in [
            "SELECT 1",
            "select v from t where id = 5",
            "SELECT * FROM t WHERE id = ? AND name = 'FOR UPDATE'",
            "SELECT @x, @@sql_mode",
            "SELECT 1; SELECT 2",
            "(SELECT 1) UNION (SELECT 2)",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "VALUES (1), (2)",
            "TABLE t",
            "SHOW TABLES",
            "SHOW CREATE TABLE t",
            "EXPLAIN SELECT 1",
            "DESCRIBE t",
            "HELP 'select'",
            "SELECT LAST_INSERT_ID()",
            "SELECT NOW(), RAND(), UUID() /* SLEEP(1) */",
            "SELECT `lock`, `update` FROM `into`",
            "SELECT IS_FREE_LOCK('l')",
        ] {
            assert!(safe(sql), "{sql}");
        }
        for sql in [
            "",
            ";",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "REPLACE INTO t VALUES (1)",
            "SET @a = 1",
            "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
            "DO 1",
            "BEGIN",
            "START TRANSACTION",
            "COMMIT",
            "USE db",
            "CALL p()",
            "SELECT f(1)",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE",
            "SELECT * FROM t FOR UPDATE SKIP LOCKED",
            "SELECT 1 INTO @x",
            "SELECT 1 INTO OUTFILE '/tmp/x'",
            "SELECT 1 INTO DUMPFILE '/tmp/x'",
            "SELECT @x := 1",
            "SELECT GET_LOCK('l', 1)",
            "SELECT RELEASE_LOCK('l')",
            "SELECT RELEASE_ALL_LOCKS()",
            "SELECT SLEEP(1)",
            "SELECT BENCHMARK(1000, MD5('a'))",
            "SELECT MASTER_POS_WAIT('f', 4)",
            "SELECT LAST_INSERT_ID(5)",
            "SELECT NEXTVAL(s)",
            "SELECT NEXT VALUE FOR s",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t",
            "SELECT FOUND_ROWS()",
            "SELECT ROW_COUNT()",
            "SHOW WARNINGS",
            "SELECT @@warning_count",
            "GET DIAGNOSTICS @n = NUMBER",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "SELECT 1; KILL 5",
            "KILL QUERY 5",
            "CREATE TEMPORARY TABLE t (a INT)",
            "ANALYZE SELECT 1",
            "EXPLAIN UPDATE t SET a = 1",
            "LOAD DATA LOCAL INFILE 'x' INTO TABLE t",
            "EXECUTE IMMEDIATE 'SELECT 1'",
            "FLUSH TABLES",
            "LOCK TABLES t READ",
            "/*!40101 SELECT 1 FOR UPDATE */",
        ] {
            assert!(!safe(sql), "{sql}");
        }
        // Both readings of a backslash must agree: with escapes this is one
        // string; under NO_BACKSLASH_ESCAPES the string ends early and the
        // statement has FOR UPDATE.
        assert!(!safe(r"SELECT 'a\' FOR UPDATE -- '"));
        assert!(safe(r"SELECT 'a\' -- '"));
    }
}

#[cfg(test)]
#[path = "statement_oracle.rs"]
mod oracle;

/// The one pass against the code it replaced ([`oracle`]): the same answers
/// on every string of the project's sources and tests, on tricky queries,
/// and on many queries stitched together from tricky pieces.
#[cfg(test)]
mod one_pass_tests {
    use super::super::session::funnel_answered_span;
    use super::super::stats::{normalize_query, shape_hash, MAX_SHAPE_LEN};
    use super::*;
    use std::path::Path;

    /// The fields the old scan knew.
    fn old_fields(f: &StatementFacts) -> StatementFacts {
        StatementFacts {
            mentions_select_limit: false,
            show_processlist: None,
            names_processlist: false,
            set_only: false,
            answered: None,
            shape: None,
            nondeterministic: false,
            ..*f
        }
    }

    /// Checks one query; panics with the query on a disagreement.
    fn agree(sql: &[u8], buf: &mut Vec<u8>) {
        let shown = String::from_utf8_lossy(sql);
        let f = statement_facts(sql);
        assert_eq!(
            old_fields(&f),
            oracle::statement_facts(sql),
            "facts of {shown:?}"
        );
        assert_eq!(
            f.show_processlist,
            oracle::processlist_query(sql),
            "processlist of {shown:?}"
        );
        assert_eq!(f.answered, funnel_answered_span(sql), "answered {shown:?}");
        // Privileges: asked for no more often than before, and whenever
        // the answer needs them.
        assert!(
            !f.needs_privileges() || oracle::needs_privileges(sql),
            "privileges of {shown:?}"
        );
        assert!(!f.names_processlist || oracle::mentions_processlist(sql));
        let refs = [false, true].iter().any(|&bare| {
            processlist_refs(sql, bare).is_ok_and(|r| r.iter().any(|r| !r.connection_id))
        });
        if refs || f.show_processlist.is_some() {
            assert!(f.names_processlist, "process list in {shown:?}");
        }
        // The query's facts are the same, with its shape.
        let q = query_facts(sql, buf);
        assert_eq!(StatementFacts { shape: None, ..q }, f, "{shown:?}");
        let mut want = Vec::with_capacity(MAX_SHAPE_LEN + 8);
        normalize_query(sql, &mut want);
        if let Some(shape) = q.shape {
            assert_eq!(
                String::from_utf8_lossy(buf),
                String::from_utf8_lossy(&want),
                "shape of {shown:?}"
            );
            assert_eq!(shape, shape_hash(&want), "{shown:?}");
        } else {
            // Too long for the normalizer, or a SELECT the funnel answers
            // itself (the stats build its shape if it is sent after all).
            let mut words = words(sql);
            let answerable = words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(b"SELECT"))
                && words.next().is_some_and(|w| {
                    [
                        &b"LAST_INSERT_ID"[..],
                        b"CONNECTION_ID",
                        b"ROW_COUNT",
                        b"FOUND_ROWS",
                    ]
                    .iter()
                    .any(|n| w.eq_ignore_ascii_case(n))
                });
            assert!(
                sql.len() > 64 * 1024 || answerable,
                "no shape for {shown:?}"
            );
        }
    }

    /// String literals of a Rust source (escapes read; char literals and
    /// comments skipped).
    fn rust_strings(src: &[u8], out: &mut Vec<Vec<u8>>) {
        let n = src.len();
        let mut i = 0;
        while i < n {
            match src[i] {
                b'/' if src.get(i + 1) == Some(&b'/') => {
                    while i < n && src[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if src.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i + 1 < n && !(src[i] == b'*' && src[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 2;
                }
                b'\'' => {
                    // A char literal ('x', '\n', '\''), or a lifetime.
                    if src.get(i + 1) == Some(&b'\\') {
                        i += 3;
                        while i < n && src[i] != b'\'' {
                            i += 1;
                        }
                        i += 1;
                    } else {
                        let len = src[i + 1..].iter().take(5).position(|&b| b == b'\'');
                        let c = std::str::from_utf8(&src[i + 1..(i + 5).min(n)]);
                        match (len, c.ok().and_then(|c| c.chars().next())) {
                            (Some(l), Some(ch)) if l == ch.len_utf8() => i += l + 2,
                            _ => i += 1,
                        }
                    }
                }
                b'r' if matches!(src.get(i + 1), Some(b'"' | b'#'))
                    && (i == 0 || !src[i - 1].is_ascii_alphanumeric() || src[i - 1] == b'b') =>
                {
                    let mut j = i + 1;
                    while src.get(j) == Some(&b'#') {
                        j += 1;
                    }
                    if src.get(j) != Some(&b'"') {
                        i += 1;
                        continue;
                    }
                    let hashes = j - i - 1;
                    let start = j + 1;
                    let mut k = start;
                    while k < n
                        && !(src[k] == b'"'
                            && src[k + 1..]
                                .iter()
                                .take(hashes)
                                .filter(|&&b| b == b'#')
                                .count()
                                == hashes)
                    {
                        k += 1;
                    }
                    out.push(src[start..k.min(n)].to_vec());
                    i = k + 1 + hashes;
                }
                b'"' => {
                    let mut s = Vec::new();
                    let mut j = i + 1;
                    while j < n && src[j] != b'"' {
                        if src[j] != b'\\' || j + 1 >= n {
                            s.push(src[j]);
                            j += 1;
                            continue;
                        }
                        j += 1;
                        match src[j] {
                            b'n' => s.push(b'\n'),
                            b't' => s.push(b'\t'),
                            b'r' => s.push(b'\r'),
                            b'0' => s.push(0),
                            b'x' => {
                                let hex =
                                    std::str::from_utf8(&src[j + 1..(j + 3).min(n)]).unwrap_or("");
                                s.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                                j += 2;
                            }
                            b'u' => {
                                let end = src[j..]
                                    .iter()
                                    .position(|&b| b == b'}')
                                    .map_or(n, |p| j + p);
                                let hex =
                                    std::str::from_utf8(&src[(j + 2).min(end)..end]).unwrap_or("");
                                let ch = u32::from_str_radix(hex, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .unwrap_or('?');
                                s.extend_from_slice(ch.to_string().as_bytes());
                                j = end;
                            }
                            b'\n' => {
                                while j + 1 < n && src[j + 1].is_ascii_whitespace() {
                                    j += 1;
                                }
                            }
                            c => s.push(c),
                        }
                        j += 1;
                    }
                    out.push(s);
                    i = j + 1;
                }
                _ => i += 1,
            }
        }
    }

    /// Quoted runs of a script (PHP, Python, JavaScript), as written.
    fn script_strings(src: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut i = 0;
        while i < src.len() {
            let q = src[i];
            if q == b'\'' || q == b'"' {
                let mut j = i + 1;
                while j < src.len() && src[j] != q && src[j] != b'\n' {
                    j += if src[j] == b'\\' { 2 } else { 1 };
                }
                out.push(src[i + 1..j.min(src.len())].to_vec());
                i = j + 1;
            } else {
                i += 1;
            }
        }
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else {
                out.push(p);
            }
        }
    }

    /// Every string literal in `src/` and `tests/`.
    fn project_strings() -> Vec<Vec<u8>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths = Vec::new();
        files(&root.join("src"), &mut paths);
        files(&root.join("tests"), &mut paths);
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let Ok(src) = std::fs::read(&p) else {
                continue;
            };
            match p.extension().and_then(|e| e.to_str()) {
                Some("rs") => rust_strings(&src, &mut out),
                Some("py" | "php" | "js") => script_strings(&src, &mut out),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Queries where the two passes could part: comments, quotes,
    /// backslashes, executable comments, numbers, variables.
    const TRICKY: &[&str] = &[
        "",
        " ",
        ";",
        ";;",
        "SELECT 1;",
        "SELECT 1 --",
        "SELECT 1 --x",
        "SELECT 1 -- x",
        "SELECT 1 --\x0b x",
        "SELECT 1e--5",
        "SELECT 1e-- x\nFROM t",
        "SELECT 1.5e-3, .5, 0x1F, 0b101, 1., 1.2.3, t.1e5, a.5",
        "SELECT x'0A', X'0a', b'01', N'x', _utf8mb4'x' COLLATE utf8mb4_bin, _x, x",
        "SELECT @a, @'a', @\"a\", @`a`, @1, @@x, @@session.wait_timeout, @@global.5",
        "SELECT @a := 1, @b:=2, @c : = 3",
        "SELECT\x0b1\x0bFROM\x0bt",
        "/*!40101 SET NAMES utf8mb4 */",
        "/*M!100100 SELECT GET_LOCK('a', 0) */",
        "/*!1 SELECT /*!2 x */ 1 */",
        "/*!1 /*!2 SELECT 1 */ */",
        "/*!1 SELECT 1 /* c */ */ SELECT 2",
        "/*! ' */ x' */",
        "/*!1 SELECT ' */ KILL 5 -- ' */",
        "SELECT 1 */",
        "/*",
        "/*/",
        "/**/SELECT/**/1",
        "#",
        "# c\nSELECT 1",
        "--",
        "-- c\nKILL 1",
        "SELECT 'a\\'; KILL 5; '",
        "SELECT 'a\\' FOR UPDATE -- '",
        "SELECT 'a\\', GET_LOCK('m', 0), '\\'",
        "SELECT \"a\\\"b\", 'c''d', `e``f`, `g\\`",
        "SELECT 'unterminated",
        "SELECT `unterminated",
        "SELECT \\N, \\\\",
        "SELECT * FROM `information_schema`.`PROCESSLIST` WHERE `ID` = 1",
        "SELECT * FROM information_schema.processlist /* kill */",
        "SELECT 'processlist', 'KILL'",
        "SELECT skill, processlists FROM t",
        "show /* x */ full processlist ; ;",
        "SHOW PROCESSLIST `x`",
        "SHOW FULL PROCESSLIST 'x'",
        "SHOW FULL PROCESSLIST @x",
        "SHOW FULL PROCESSLIST ()",
        "SHOW `PROCESSLIST`",
        "select last_insert_id( ) ;",
        "SELECT LAST_INSERT_ID() AS `id`",
        "SELECT /* c */ LAST_INSERT_ID()",
        "SELECT LAST_INSERT_ID(5)",
        "SELECT CONNECTION_ID() 'a\\b'",
        "SELECT ROW_COUNT() AS",
        "SELECT ROW_COUNT()x",
        "SELECT ROW_COUNT();SELECT 1",
        "SELECT `LAST_INSERT_ID`()",
        "SELECT\tROW_COUNT\n(\n)\n",
        "KILL 5; SELECT 1",
        "SELECT 1; KILL QUERY 5",
        "kill/**/5",
        "SET @@ROLE = 1",
        "SET `TRANSACTION` READ ONLY",
        "LOAD DATA /*! LOCAL */ INFILE 'x' INTO TABLE t",
        "SELECT NEXT /* c */ VALUE FOR s",
        "SELECT * FROM t WHERE a IN (1, 2, 3) AND b IN ('x','y')",
        "INSERT INTO t VALUES (1,'a'),(2,'b'), (3, 'c')",
        "SELECT a-1, a - 1, -1, (-1), 1--1",
        "SELECT 1 FROM DUAL; SELECT * FROM `t`",
        "SELECT \u{e9}t\u{e9}, \u{ff} FROM t\u{e9}",
        "SELECT $a, a$, _ FROM t",
    ];

    #[test]
    fn agrees_with_the_old_scans_on_the_projects_strings() {
        let mut buf = Vec::with_capacity(MAX_SHAPE_LEN + 8);
        let strings = project_strings();
        assert!(strings.len() > 2000, "{} strings", strings.len());
        for s in &strings {
            agree(s, &mut buf);
        }
        for s in TRICKY {
            agree(s.as_bytes(), &mut buf);
        }
        // Raw bytes that are not UTF-8.
        agree(&[0xff, b'\'', 0x00, b'`'], &mut buf);
        agree(b"SELECT \xff\xfe(1), ST_\xff(2), \xc3(", &mut buf);
    }

    #[test]
    fn agrees_with_the_old_scans_on_queries_made_of_tricky_pieces() {
        const PIECES: &[&str] = &[
            "SELECT",
            "select",
            "KILL",
            "QUERY",
            "PROCESSLIST",
            "information_schema",
            ".",
            "FROM",
            "DUAL",
            "GET_LOCK",
            "(",
            ")",
            "LAST_INSERT_ID",
            "CONNECTION_ID",
            "ROW_COUNT",
            "FOUND_ROWS",
            "INTO",
            "SET",
            "LOAD",
            "DATA",
            "LOCAL",
            "INFILE",
            "LOCK",
            "TABLES",
            "UNLOCK",
            "BEGIN",
            "NOT",
            "START",
            "TRANSACTION",
            "SHOW",
            "FULL",
            "WARNINGS",
            "COUNT",
            "@@warning_count",
            "wait_timeout",
            "VARIABLES",
            "NEXT",
            "VALUE",
            "FOR",
            "UPDATE",
            "TEMPORARY",
            "CALL",
            "my_func",
            "t",
            "AS",
            "x",
            "1",
            "1.5",
            "1e-3",
            "1e",
            ".5",
            "0x1F",
            "x'0A'",
            "_utf8mb4'a'",
            "N",
            "'",
            "\"",
            "`",
            "\\",
            "\\'",
            "''",
            "/*",
            "*/",
            "/*!",
            "/*!40101",
            "/*M!",
            "/*M!100100",
            "--",
            "-- ",
            "#",
            "\n",
            ";",
            "@",
            "@@",
            "@@session.",
            "@x",
            "@'x'",
            ":",
            "=",
            ":=",
            ",",
            "-",
            "*",
            "+",
            "\x0b",
            "\t",
            "\u{e9}",
            "$",
            "NOW",
            "ST_X",
            "MBRContains",
            "IN",
            "VALUES",
            "`f`",
            "db",
        ];
        // A fixed sequence (xorshift), so that a failure can be replayed.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut buf = Vec::with_capacity(MAX_SHAPE_LEN + 8);
        let mut sql = Vec::new();
        for _ in 0..30_000 {
            sql.clear();
            for _ in 0..1 + next(14) {
                sql.extend_from_slice(PIECES[next(PIECES.len())].as_bytes());
                if next(3) > 0 {
                    sql.push(b' ');
                }
            }
            agree(&sql, &mut buf);
        }
    }

    #[test]
    fn long_queries_are_shaped_as_before() {
        let mut buf = Vec::with_capacity(MAX_SHAPE_LEN + 8);
        let mut sql = String::from("SELECT ");
        for i in 0..3000 {
            sql.push_str(&format!("c{i}, '{i}', "));
        }
        sql.push_str("1 FROM t");
        agree(sql.as_bytes(), &mut buf);
        assert!(buf.ends_with(b" ..."));
        // Past what the normalizer reads: no shape from the scan.
        let huge = "SELECT '".to_string() + &"x".repeat(70_000) + "' /* ";
        agree(huge.as_bytes(), &mut buf);
    }

    #[test]
    fn a_lone_set_statement_is_told_apart() {
        for sql in [
            "SET NAMES utf8mb4",
            "set autocommit = 0;",
            " /* c */ SET a = 1 ;; ",
            "SET @x = 1",
            "SET a = 'x;y'",
        ] {
            assert!(statement_facts(sql.as_bytes()).set_only, "{sql}");
        }
        for sql in [
            "SET a = 1; SELECT 1",
            "SELECT 1; SET a = 1",
            "SET a = 1; SET b = 2",
            "UPDATE t SET a = 1",
            "SELECT 1",
            "",
            "(SET a = 1)",
            "SET a = 'x\\'; SELECT 1; '",
        ] {
            assert!(!statement_facts(sql.as_bytes()).set_only, "{sql}");
        }
    }

    #[test]
    fn plain_sets_tell_what_they_assign() {
        let vars = |sql: &str| plain_set(sql.as_bytes()).map(|p| (p.names, p.vars));
        let own = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let charset = |cs: &str| Some(SetNames::Charset(cs.into()));
        assert_eq!(
            vars("SET NAMES utf8mb4"),
            Some((charset("utf8mb4"), own(&[])))
        );
        assert_eq!(
            vars("set names 'UTF8mb4' collate \"UTF8MB4_Bin\";"),
            Some((
                Some(SetNames::Collate("utf8mb4".into(), "utf8mb4_bin".into())),
                own(&[])
            ))
        );
        assert_eq!(
            vars("SET NAMES `latin1` COLLATE `latin1_bin`"),
            Some((
                Some(SetNames::Collate("latin1".into(), "latin1_bin".into())),
                own(&[])
            ))
        );
        assert_eq!(
            vars("SET NAMES DEFAULT"),
            Some((Some(SetNames::Default), own(&[])))
        );
        assert_eq!(
            vars("SET NAMES utf8mb4 COLLATE DEFAULT"),
            Some((Some(SetNames::Default), own(&[])))
        );
        assert_eq!(
            vars("SET NAMES 'default'"),
            Some((charset("default"), own(&[])))
        );
        assert_eq!(
            vars(
                "SET AUTOCOMMIT = 0, SESSION sql_mode = 'ANSI', LOCAL `Time_Zone` := '+01:00', \
                 @@session.max_join_size = -1, @@LOCAL.long_query_time = 1.5, @@x = ON, \
                 y = DEFAULT, NAMES utf8mb4, z = NULL, w = +3"
            ),
            Some((
                charset("utf8mb4"),
                own(&[
                    ("autocommit", "0"),
                    ("sql_mode", "'ANSI'"),
                    ("time_zone", "'+01:00'"),
                    ("max_join_size", "-1"),
                    ("long_query_time", "1.5"),
                    ("x", "ON"),
                    ("y", "DEFAULT"),
                    ("z", "NULL"),
                    ("w", "+3")
                ])
            ))
        );
        assert_eq!(
            vars("SET a = 1 /* c */ ;"),
            Some((None, own(&[("a", "1")])))
        );
        // What mysqld with multi-statements answers as a statement of its own.
        let comment_after = |sql: &str| plain_set(sql.as_bytes()).map(|p| p.comment_after);
        assert_eq!(comment_after("SET a = 1 /* c */ ;; ; "), Some(false));
        assert_eq!(comment_after("SET a = 1 -- c"), Some(false));
        assert_eq!(comment_after("SET a = 1; /* c */"), Some(true));
        assert_eq!(comment_after("SET a = 1; -- c"), Some(true));
        assert_eq!(comment_after("SET a = 1;# c\n;"), Some(true));
        assert_eq!(
            vars("SET a = 'it''s'"),
            Some((None, own(&[("a", "'it''s'")])))
        );
        assert_eq!(
            vars("SET a = - 1 . 5"),
            Some((None, own(&[("a", "- 1 . 5")])))
        );
        for sql in [
            "SET GLOBAL a = 1",
            "SET @@global.a = 1",
            "SET a = 1, GLOBAL b = 2",
            "SET @a = 1",
            "SET a = @b",
            "SET a = @@b",
            "SET a = 1 + 1",
            "SET a = b.c",
            "SET a = 1.x",
            "SET a = f(1)",
            "SET a = (SELECT 1)",
            "SET a = 'x' 'y'",
            "SET a = _latin1'x'",
            "SET a = -x",
            "SET a = 1e-5",
            "SET a",
            "SET a =",
            "SET a = 1,",
            "SET a 1",
            "SET = 1",
            "SET NAMES",
            "SET NAMES utf8mb4 COLLATE",
            "SET NAMES DEFAULT COLLATE latin1_bin",
            "SET NAMES utf8mb4, NAMES latin1",
            "SET NAMES utf8mb4 x",
            "SET CHARACTER SET utf8mb4",
            "SET CHARSET utf8mb4",
            "SET PASSWORD = 'x'",
            "SET DEFAULT ROLE r",
            "SET ROLE r",
            "SET TRANSACTION READ ONLY",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET STATEMENT a = 1 FOR SELECT 1",
            "SET a = 1; SELECT 1",
            "SET NAMES 'utf8''mb4'",
            "SET a = 'x\\'",
            "SET a = '\u{e9}'",
            "/*!40101 SET NAMES utf8mb4 */",
            "SET a.b = 1",
            "SET 1 = 1",
            "UPDATE t SET a = 1",
            "SELECT 1",
            "",
        ] {
            assert_eq!(vars(sql), None, "{sql}");
        }
    }

    #[test]
    fn privileges_are_asked_for_a_kill_or_the_process_list_only() {
        for sql in [
            "KILL 5",
            "SELECT 1; kill query 7",
            "SHOW PROCESSLIST",
            "SELECT * FROM information_schema.PROCESSLIST",
            "SELECT * FROM `processlist`",
            "SELECT 'a\\'; SELECT processlist; '",
        ] {
            assert!(statement_facts(sql.as_bytes()).needs_privileges(), "{sql}");
        }
        // The old look at the bytes asked for these too.
        for sql in [
            "SELECT 'KILL 5'",
            "SELECT skill FROM t",
            "SELECT 1 /* processlist */",
            "SELECT processlists FROM t",
        ] {
            assert!(!statement_facts(sql.as_bytes()).needs_privileges(), "{sql}");
        }
    }

    #[test]
    fn keywords_are_found_in_any_case_and_nothing_else() {
        for &(name, kw) in KEYWORDS {
            assert_eq!(keyword(name.as_bytes()), kw);
            assert_eq!(keyword(name.to_ascii_lowercase().as_bytes()), kw);
            let mut longer = name.to_string();
            longer.push('X');
            assert_eq!(keyword(longer.as_bytes()), Kw::Other, "{longer}");
            assert_eq!(keyword(&name.as_bytes()[1..]), Kw::Other, "{name}");
        }
        for w in BUILTINS.iter().chain(NAME_CONTEXTS) {
            let kw = keyword(w.as_bytes());
            let listed = KEYWORDS.iter().any(|(k, _)| k == w);
            assert_eq!(kw != Kw::Other, listed, "{w}");
        }
        assert_eq!(keyword(b""), Kw::Other);
        assert_eq!(keyword(b"\xff\xff"), Kw::Other);
        for &(name, kw) in KEYWORDS {
            assert_eq!(
                KW_BUILTIN[kw as usize],
                is_builtin(name.as_bytes()),
                "{name}"
            );
        }
        assert!(!KW_BUILTIN[Kw::Other as usize]);
    }
}

// Tables a statement writes or mentions, for the result cache's
// invalidation (`result_cache.rs`). Conservative both ways: a write names
// at least every table it may change (or `Writes::Unknown`); a read names
// every identifier it has, so that it surely includes its tables.

/// A table as a statement names it: lower-case ASCII, unquoted; `schema`
/// when qualified (`db.t`), else the client's default schema applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Option<Vec<u8>>,
    pub name: Vec<u8>,
}

/// What a client's query may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Nothing: reads, session and transaction statements.
    Nothing,
    /// At most these tables (`INSERT`, `REPLACE`, `UPDATE`, `DELETE`,
    /// `LOAD DATA`, `TRUNCATE`; for a multi-table `UPDATE`/`DELETE`, every
    /// name in its table references).
    Tables(Vec<TableName>),
    /// Anything: `CALL`, `EXECUTE`, a stored function, DDL, `GRANT`, a
    /// statement the scan does not know.
    Unknown,
}

/// What `sql` (a `COM_QUERY`'s text or a prepared statement's, any number
/// of statements) may write, in either reading of `\`.
pub fn statement_writes(sql: &[u8]) -> Writes {
    let mut lexer = Lexer::new(sql, true);
    let tokens: Vec<(Tok, usize, usize)> = lexer.by_ref().collect();
    let mut writes = writes_of(sql, &tokens);
    if lexer.escapes_seen && writes != Writes::Unknown {
        let other: Vec<(Tok, usize, usize)> = Lexer::new(sql, false).collect();
        writes = union_writes(writes, writes_of(sql, &other));
    }
    writes
}

/// Every name `sql` mentions, in either reading of `\`: bare, and the
/// pairs `a.b` also qualified (a read's tables are among them).
pub fn mentioned_tables(sql: &[u8]) -> Vec<TableName> {
    let mut lexer = Lexer::new(sql, true);
    let tokens: Vec<(Tok, usize, usize)> = lexer.by_ref().collect();
    let mut names = Vec::new();
    collect_names(sql, &tokens, &mut names);
    if lexer.escapes_seen {
        let other: Vec<(Tok, usize, usize)> = Lexer::new(sql, false).collect();
        collect_names(sql, &other, &mut names);
    }
    names.sort_unstable_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    names.dedup();
    names
}

fn union_writes(a: Writes, b: Writes) -> Writes {
    match (a, b) {
        (Writes::Unknown, _) | (_, Writes::Unknown) => Writes::Unknown,
        (Writes::Nothing, w) | (w, Writes::Nothing) => w,
        (Writes::Tables(mut x), Writes::Tables(y)) => {
            x.extend(y);
            Writes::Tables(x)
        }
    }
}

/// All statements of a query (split at `;`).
fn writes_of(sql: &[u8], tokens: &[(Tok, usize, usize)]) -> Writes {
    let mut writes = Writes::Nothing;
    for statement in tokens.split(|t| t.0 == Tok::Punct(b';')) {
        writes = union_writes(writes, statement_writes_one(sql, statement));
        if writes == Writes::Unknown {
            break;
        }
    }
    writes
}

/// The token is a name (a bare word that is not a number, a backquoted
/// name, or a double-quoted string, a name under ANSI_QUOTES): its text,
/// unquoted and lower-case.
fn name_of(sql: &[u8], (kind, s, e): (Tok, usize, usize)) -> Option<Vec<u8>> {
    let text = &sql[s..e];
    let mut name = match kind {
        Tok::Word if text.iter().all(u8::is_ascii_digit) => return None,
        Tok::Word => text.to_vec(),
        Tok::QuotedName | Tok::Str if text.len() >= 2 && matches!(text[0], b'`' | b'"') => {
            let q = text[0];
            let inner = &text[1..text.len() - 1];
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                out.push(inner[i]);
                // A doubled quote is one.
                i += if inner[i] == q && inner.get(i + 1) == Some(&q) {
                    2
                } else {
                    1
                };
            }
            out
        }
        _ => return None,
    };
    name.make_ascii_lowercase();
    Some(name)
}

/// The table name at `tokens[at..]` (`t` or `db.t`) and the index after it.
fn table_at(sql: &[u8], tokens: &[(Tok, usize, usize)], at: usize) -> Option<(TableName, usize)> {
    let first = name_of(sql, *tokens.get(at)?)?;
    if tokens.get(at + 1).map(|t| t.0) == Some(Tok::Punct(b'.')) {
        let name = name_of(sql, *tokens.get(at + 2)?)?;
        return Some((
            TableName {
                schema: Some(first),
                name,
            },
            at + 3,
        ));
    }
    Some((
        TableName {
            schema: None,
            name: first,
        },
        at + 1,
    ))
}

/// Every name of `tokens`: bare (resolved later against the default
/// schema) and, for `a.b`, also as qualified.
fn collect_names(sql: &[u8], tokens: &[(Tok, usize, usize)], out: &mut Vec<TableName>) {
    for (i, &t) in tokens.iter().enumerate() {
        let Some(name) = name_of(sql, t) else {
            continue;
        };
        if tokens.get(i + 1).map(|t| t.0) == Some(Tok::Punct(b'.')) {
            if let Some(next) = tokens.get(i + 2).and_then(|&t| name_of(sql, t)) {
                out.push(TableName {
                    schema: Some(name.clone()),
                    name: next,
                });
            }
        }
        out.push(TableName { schema: None, name });
    }
}

fn is_word(sql: &[u8], t: Option<&(Tok, usize, usize)>, words: &[&str]) -> bool {
    t.is_some_and(|&(kind, s, e)| kind == Tok::Word && word_in(&sql[s..e], words))
}

/// One statement's writes.
fn statement_writes_one(sql: &[u8], t: &[(Tok, usize, usize)]) -> Writes {
    let mut at = 0;
    while t.get(at).map(|t| t.0) == Some(Tok::Punct(b'(')) {
        at += 1;
    }
    let Some(&(first_kind, s, e)) = t.get(at) else {
        return Writes::Nothing;
    };
    if first_kind != Tok::Word {
        return Writes::Unknown;
    }
    // A stored function may write anything, in any statement.
    let calls_stored = (0..t.len()).any(|i| {
        t[i].0 == Tok::Punct(b'(') && {
            let prev: [Option<(Tok, usize, usize)>; 4] =
                std::array::from_fn(|k| i.checked_sub(k + 1).map(|j| t[j]));
            call_check(sql, &prev).is_some()
        }
    });
    if calls_stored {
        return Writes::Unknown;
    }
    let first = sql[s..e].to_ascii_uppercase();
    let second = t.get(at + 1);
    let names_until = |from: usize, stops: &[&str]| {
        let mut depth = 0i32;
        let end = (from..t.len())
            .find(|&i| {
                match t[i].0 {
                    Tok::Punct(b'(') => depth += 1,
                    Tok::Punct(b')') => depth -= 1,
                    _ => {}
                }
                depth == 0 && is_word(sql, t.get(i), stops)
            })
            .unwrap_or(t.len());
        let mut names = Vec::new();
        collect_names(sql, &t[from..end], &mut names);
        Writes::Tables(names)
    };
    let one_after = |mut i: usize, skip: &[&str]| {
        while is_word(sql, t.get(i), skip) {
            i += 1;
        }
        table_at(sql, t, i).map_or(Writes::Unknown, |(name, _)| Writes::Tables(vec![name]))
    };
    match &first[..] {
        b"SELECT" | b"VALUES" | b"TABLE" | b"DO" | b"SHOW" | b"DESC" | b"DESCRIBE" | b"EXPLAIN"
        | b"HELP" | b"USE" | b"COMMIT" | b"ROLLBACK" | b"SAVEPOINT" | b"RELEASE" | b"KILL"
        | b"LOCK" | b"UNLOCK" | b"CHECK" | b"CHECKSUM" | b"GET" | b"PREPARE" | b"DEALLOCATE" => {
            Writes::Nothing
        }
        // `SET STATEMENT ... FOR stmt`: whatever stmt writes.
        b"SET" if is_word(sql, second, &["STATEMENT"]) => Writes::Unknown,
        b"SET" => Writes::Nothing,
        // `BEGIN NOT ATOMIC ...`: a compound statement runs anything.
        b"BEGIN" if is_word(sql, second, &["NOT"]) => Writes::Unknown,
        b"BEGIN" => Writes::Nothing,
        b"START" if is_word(sql, second, &["TRANSACTION"]) => Writes::Nothing,
        b"ANALYZE" if is_word(sql, second, &["TABLE"]) => Writes::Nothing,
        // A CTE before a write (`WITH c AS (...) UPDATE ...`).
        b"WITH"
            if t.iter()
                .any(|x| is_word(sql, Some(x), &["INSERT", "UPDATE", "DELETE", "REPLACE"])) =>
        {
            Writes::Unknown
        }
        b"WITH" => Writes::Nothing,
        b"INSERT" | b"REPLACE" => one_after(
            at + 1,
            &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"],
        ),
        b"TRUNCATE" => one_after(at + 1, &["TABLE"]),
        // Every name of its table references (joins, aliases, columns).
        b"UPDATE" => names_until(at + 1, &["SET"]),
        b"DELETE" => names_until(at + 1, &["WHERE", "ORDER", "LIMIT", "RETURNING"]),
        b"LOAD" if is_word(sql, second, &["INDEX"]) => Writes::Nothing,
        b"LOAD" => match (at..t.len())
            .find(|&i| is_word(sql, t.get(i), &["INTO"]) && is_word(sql, t.get(i + 1), &["TABLE"]))
        {
            Some(i) => one_after(i + 2, &[]),
            None => Writes::Unknown,
        },
        _ => Writes::Unknown,
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    fn t(schema: Option<&str>, name: &str) -> TableName {
        TableName {
            schema: schema.map(|s| s.as_bytes().to_vec()),
            name: name.as_bytes().to_vec(),
        }
    }

    /// Its writes; and a statement that writes is never a plain read (the
    /// engine looks no further for those).
    fn tables(sql: &str) -> Writes {
        let writes = statement_writes(sql.as_bytes());
        if writes != Writes::Nothing {
            assert!(!statement_facts(sql.as_bytes()).safe_to_repeat, "{sql}");
        }
        writes
    }

    #[test]
    fn writes_name_their_tables() {
        use Writes::*;
        for (sql, want) in [
            ("INSERT INTO t (a) VALUES (1)", vec![t(None, "t")]),
            (
                "insert ignore into Shop.`T``x` values (1)",
                vec![t(Some("shop"), "t`x")],
            ),
            ("INSERT t SELECT * FROM u", vec![t(None, "t")]),
            (
                "REPLACE LOW_PRIORITY INTO \"q\" VALUES (1)",
                vec![t(None, "q")],
            ),
            ("TRUNCATE TABLE db.t", vec![t(Some("db"), "t")]),
            ("TRUNCATE t", vec![t(None, "t")]),
            (
                "LOAD DATA LOCAL INFILE '/x' INTO TABLE t FIELDS TERMINATED BY ','",
                vec![t(None, "t")],
            ),
            ("UPDATE t SET v = 1 WHERE id = 2", vec![t(None, "t")]),
            (
                "DELETE FROM d.t WHERE id IN (SELECT id FROM u)",
                vec![
                    t(None, "from"),
                    t(Some("d"), "t"),
                    t(None, "d"),
                    t(None, "t"),
                ],
            ),
        ] {
            let Tables(mut got) = tables(sql) else {
                panic!("{sql}: {:?}", tables(sql));
            };
            for w in &want {
                assert!(got.contains(w), "{sql}: {w:?} not in {got:?}");
            }
            got.retain(|g| !want.contains(g));
            // Only keywords besides.
            assert!(got.iter().all(|g| g.schema.is_none()), "{sql}: {got:?}");
        }
        // Multi-table: every table of the references.
        let Tables(got) = tables("UPDATE a JOIN b.c ON a.id = c.id SET a.v = c.v") else {
            panic!()
        };
        for w in [t(None, "a"), t(Some("b"), "c")] {
            assert!(got.contains(&w), "{w:?} {got:?}");
        }
        let Tables(got) = tables("DELETE x, y FROM x JOIN y USING (id) WHERE x.v = 1") else {
            panic!()
        };
        assert!(got.contains(&t(None, "x")) && got.contains(&t(None, "y")));
        // Every statement of a multi-statement query.
        let Tables(got) = tables("SELECT 1; UPDATE t SET v = 2; INSERT INTO u VALUES (1)") else {
            panic!()
        };
        assert!(got.contains(&t(None, "t")) && got.contains(&t(None, "u")));
        for sql in [
            "SELECT * FROM t",
            "SELECT v FROM t WHERE id IN (1, 2) FOR UPDATE",
            "SET NAMES utf8mb4",
            "BEGIN",
            "START TRANSACTION",
            "COMMIT",
            "SHOW TABLES",
            "EXPLAIN UPDATE t SET v = 1",
            "(SELECT 1) UNION (SELECT 2)",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "PREPARE s FROM 'UPDATE t SET v = 1'",
            "",
            "  ;  ",
        ] {
            assert_eq!(tables(sql), Nothing, "{sql}");
        }
        for sql in [
            "CALL p()",
            "EXECUTE s",
            "SELECT my_func(1)",
            "SELECT * FROM t WHERE v = db.f(2)",
            "INSERT INTO t VALUES (audit())",
            "ALTER TABLE t ADD c INT",
            "DROP TABLE t",
            "RENAME TABLE a TO b",
            "CREATE TABLE t (a INT)",
            "GRANT SELECT ON *.* TO u",
            "SET STATEMENT max_statement_time = 1 FOR UPDATE t SET v = 1",
            "BEGIN NOT ATOMIC UPDATE t SET v = 1; END",
            "WITH c AS (SELECT 1) UPDATE t JOIN c SET v = 1",
            "XA COMMIT 'x'",
            "HANDLER t READ FIRST",
            "ANALYZE UPDATE t SET v = 1",
            "SELECT 1; CALL p()",
            "INSERT INTO",
            "frobnicate t",
        ] {
            assert_eq!(tables(sql), Unknown, "{sql}");
        }
        // The other reading of `\`: `'\'' ; CALL p() -- '` hides a CALL
        // from one reading only.
        assert_eq!(tables(r"SELECT '\'; CALL p() -- '"), Unknown);
    }

    #[test]
    fn reads_mention_every_name() {
        let got =
            mentioned_tables(b"SELECT x.v FROM Shop.t AS x JOIN `u` ON u.id = x.id WHERE w = 'n'");
        for w in [
            t(Some("shop"), "t"),
            t(None, "t"),
            t(None, "u"),
            t(None, "shop"),
            t(None, "w"),
        ] {
            assert!(got.contains(&w), "{w:?} {got:?}");
        }
        assert!(!got.contains(&t(None, "n")), "strings are no names");
        assert!(!got.iter().any(|g| g.name.iter().all(u8::is_ascii_digit)));
    }
}

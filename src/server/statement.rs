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

/// Session state mysqld does not report, found by the statement scan.
/// `RELEASE_LOCK(name)` releases one lock of maybe several, so only
/// `RELEASE_ALL_LOCKS()` ends the user-lock pin; `SQL_CALC_FOUND_ROWS`
/// state lasts until the client leaves.
pub mod unreported {
    /// `LOCK TABLES`, until `UNLOCK TABLES`.
    pub const TABLE_LOCKS: u8 = 1;
    /// `GET_LOCK()`, until `RELEASE_ALL_LOCKS()`.
    pub const USER_LOCKS: u8 = 2;
    /// `SQL_CALC_FOUND_ROWS` / `FOUND_ROWS()`.
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
}

impl StatementFacts {
    /// Running it surely leaves its client pinned.
    pub fn will_pin(&self) -> bool {
        self.unproven.is_some() || self.opaque_state || self.takes != 0 || self.begins_transaction
    }

    fn merge(&mut self, o: &StatementFacts) {
        self.first_is_kill |= o.first_is_kill;
        self.later_kill |= o.later_kill;
        self.takes |= o.takes;
        self.releases &= o.releases;
        self.reads_insert_id |= o.reads_insert_id;
        self.sets_insert_id |= o.sets_insert_id;
        self.reads_row_count |= o.reads_row_count;
        self.reads_diagnostics |= o.reads_diagnostics;
        self.mentions_user_var |= o.mentions_user_var;
        self.assigns_user_var |= o.assigns_user_var;
        self.opaque_state |= o.opaque_state;
        self.may_fire_triggers |= o.may_fire_triggers;
        self.set_statement |= o.set_statement;
        self.load_local |= o.load_local;
        self.begins_transaction |= o.begins_transaction;
        self.mentions_timeouts |= o.mentions_timeouts;
        // Only what both readings agree on.
        self.clears_diagnostics &= o.clears_diagnostics;
        self.safe_to_repeat &= o.safe_to_repeat;
        self.unproven = self.unproven.or(o.unproven);
    }
}

/// Scan a `COM_QUERY` (or a prepared statement's text).
pub fn statement_facts(sql: &[u8]) -> StatementFacts {
    let facts = scan(sql, true);
    if !sql.contains(&b'\\') {
        return facts;
    }
    // `\` is an escape unless NO_BACKSLASH_ESCAPES: take the union of what
    // either reading may do (and only what both release).
    let mut both = facts;
    both.merge(&scan(sql, false));
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
    let lexer = Lexer {
        sql,
        i: 0,
        backslash_escapes,
    };
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

/// Quick test before [`processlist_refs`]: the word occurs at all.
pub fn mentions_processlist(sql: &[u8]) -> bool {
    sql.windows(11)
        .any(|w| w.eq_ignore_ascii_case(b"processlist"))
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
    let toks: Vec<(Tok, usize, usize)> = Lexer {
        sql,
        i: 0,
        backslash_escapes,
    }
    .collect();
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
    Lexer {
        sql,
        i: 0,
        backslash_escapes: true,
    }
    .all(|t| matches!(t.0, Tok::Word | Tok::Punct(b';')))
}

/// The bare words of `sql` outside comments, strings and quoted names.
pub fn words(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lexer {
        sql,
        i: 0,
        backslash_escapes: true,
    }
    .filter(|t| t.0 == Tok::Word)
    .map(move |(_, s, e)| &sql[s..e])
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
        if is(second, "WARNINGS") || is(second, "ERRORS") || is(second, "COUNT") {
            f.reads_diagnostics = true;
        } else {
            f.clears_diagnostics = true;
        }
    } else if word_in(first, &["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"]) {
        f.may_fire_triggers = true;
        f.clears_diagnostics = true;
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
                    } else if w.eq_ignore_ascii_case(b"SQL_CALC_FOUND_ROWS")
                        || w.eq_ignore_ascii_case(b"FOUND_ROWS")
                    {
                        f.takes |= unreported::FOUND_ROWS;
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
        assert_eq!(t(b"SELECT FOUND_ROWS()"), (FOUND_ROWS, 0));
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

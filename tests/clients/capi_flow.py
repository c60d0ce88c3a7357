#!/usr/bin/env python3
"""Every kind of response, read through a MySQL C client library's own C API
(driven by tests/e2e_clients.rs, which runs it once against mysqld and once
through the funnel and compares the transcripts).

usage: capi_flow.py LIBRARY HOST PORT USER PASSWORD DATABASE TABLE DATAFILE
       capi_flow.py --cursor-pins LIBRARY HOST PORT USER PASSWORD DATABASE

LIBRARY is one of:
  libmysqlclient  MySQL's client library, as shipped inside
                  mysql-connector-python's C extension; it negotiates
                  CLIENT_DEPRECATE_EOF (no EOF packets)
  libmariadb      MariaDB Connector/C (what mysqlclient and the mariadb CLI
                  use); it does not (EOF packets)

The C API (not a driver on top of it) is used because it reaches what the
Python drivers do not: server-side cursors (COM_STMT_FETCH), COM_FIELD_LIST,
COM_SET_OPTION, prepared CALL with OUT parameters.

Prints one transcript line per answer, then "OK <n> checks"; exits 1 on a
failed check, 77 (with "SKIP: <reason>") when the library is missing.
DATAFILE is a scratch file path for LOAD DATA LOCAL INFILE.

With --cursor-pins it runs only cursors, opened and ended every way, and
after each step prints "PAUSE <step> <connection id>" and waits for a line
on stdin (the test checks the funnel's pins meanwhile).
"""

import ctypes
import importlib.util
import os
import sys
import traceback

SKIP = 77

CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
MYSQL_OPT_LOCAL_INFILE = 8
MYSQL_PLUGIN_DIR = 16
MYSQL_OPTION_MULTI_STATEMENTS_ON = 0
MYSQL_OPTION_MULTI_STATEMENTS_OFF = 1
STMT_ATTR_CURSOR_TYPE = 1
STMT_ATTR_PREFETCH_ROWS = 2
CURSOR_TYPE_READ_ONLY = 1
MYSQL_NO_DATA = 100
MYSQL_DATA_TRUNCATED = 101
MYSQL_TYPE_LONGLONG = 8
MYSQL_TYPE_STRING = 254


class Bind(ctypes.Structure):
    """MYSQL_BIND: the same layout in libmysqlclient 8/9 and Connector/C 3."""

    _fields_ = [
        ("length", ctypes.POINTER(ctypes.c_ulong)),
        ("is_null", ctypes.POINTER(ctypes.c_char)),
        ("buffer", ctypes.c_void_p),
        ("error", ctypes.POINTER(ctypes.c_char)),
        ("row_ptr", ctypes.c_void_p),
        ("store_param_func", ctypes.c_void_p),
        ("fetch_result", ctypes.c_void_p),
        ("skip_result", ctypes.c_void_p),
        ("buffer_length", ctypes.c_ulong),
        ("offset", ctypes.c_ulong),
        ("length_value", ctypes.c_ulong),
        ("param_number", ctypes.c_uint),
        ("pack_length", ctypes.c_uint),
        ("buffer_type", ctypes.c_int),
        ("error_value", ctypes.c_char),
        ("is_unsigned", ctypes.c_char),
        ("long_data_used", ctypes.c_char),
        ("is_null_value", ctypes.c_char),
        ("extension", ctypes.c_void_p),
    ]


def load(library):
    if library == "libmysqlclient":
        spec = importlib.util.find_spec("_mysql_connector")
        if spec is None or not spec.origin:
            print("SKIP: mysql-connector-python's C extension (libmysqlclient) is not installed")
            sys.exit(SKIP)
        path = spec.origin
        # Its client-side auth plugins ship beside it, as the connector
        # itself points them out.
        plugin_dir = os.path.join(os.path.dirname(path), "mysql", "vendor", "plugin")
    elif library == "libmariadb":
        path = "libmariadb.so.3"
        plugin_dir = None
    else:
        print("unknown library " + library)
        sys.exit(2)
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        print("SKIP: cannot load %s: %s" % (library, e))
        sys.exit(SKIP)
    p, i, u, ul, ull, s = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_ulong,
        ctypes.c_ulonglong,
        ctypes.c_char_p,
    )
    sigs = {
        "mysql_init": (p, [p]),
        "mysql_options": (i, [p, i, p]),
        "mysql_real_connect": (p, [p, s, s, s, s, u, s, ul]),
        "mysql_close": (None, [p]),
        "mysql_errno": (u, [p]),
        "mysql_error": (s, [p]),
        "mysql_query": (i, [p, s]),
        "mysql_store_result": (p, [p]),
        "mysql_free_result": (None, [p]),
        "mysql_num_fields": (u, [p]),
        "mysql_fetch_row": (ctypes.POINTER(ctypes.c_char_p), [p]),
        "mysql_fetch_lengths": (ctypes.POINTER(ul), [p]),
        "mysql_fetch_field_direct": (ctypes.POINTER(ctypes.c_char_p), [p, u]),
        "mysql_field_count": (u, [p]),
        "mysql_affected_rows": (ull, [p]),
        "mysql_insert_id": (ull, [p]),
        "mysql_warning_count": (u, [p]),
        "mysql_more_results": (ctypes.c_char, [p]),
        "mysql_next_result": (i, [p]),
        "mysql_thread_id": (ul, [p]),
        "mysql_list_fields": (p, [p, s, s]),
        "mysql_set_server_option": (i, [p, i]),
        "mysql_ping": (i, [p]),
        "mysql_get_client_info": (s, []),
        "mysql_stmt_init": (p, [p]),
        "mysql_stmt_prepare": (i, [p, s, ul]),
        "mysql_stmt_attr_set": (ctypes.c_char, [p, i, p]),
        "mysql_stmt_bind_param": (ctypes.c_char, [p, p]),
        "mysql_stmt_bind_result": (ctypes.c_char, [p, p]),
        "mysql_stmt_execute": (i, [p]),
        "mysql_stmt_store_result": (i, [p]),
        "mysql_stmt_fetch": (i, [p]),
        "mysql_stmt_free_result": (ctypes.c_char, [p]),
        "mysql_stmt_reset": (ctypes.c_char, [p]),
        "mysql_stmt_close": (ctypes.c_char, [p]),
        "mysql_stmt_errno": (u, [p]),
        "mysql_stmt_error": (s, [p]),
        "mysql_stmt_field_count": (u, [p]),
        "mysql_stmt_param_count": (ul, [p]),
        "mysql_stmt_affected_rows": (ull, [p]),
        "mysql_stmt_next_result": (i, [p]),
        "mysql_stmt_result_metadata": (p, [p]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib, plugin_dir


class Failure(Exception):
    pass


class Flow:
    def __init__(self, lib):
        self.lib = lib
        self.checks = 0
        # Buffers bound to statements: the library writes into them until
        # the statement is rebound or closed.
        self.bound = []

    def out(self, *parts):
        print(" ".join(str(p) for p in parts), flush=True)

    def check(self, cond, what):
        if not cond:
            raise Failure(what)
        self.checks += 1

    def err(self, m):
        return "%d %s" % (self.lib.mysql_errno(m), (self.lib.mysql_error(m) or b"").decode())

    def stmt_err(self, st):
        return "%d %s" % (self.lib.mysql_stmt_errno(st), (self.lib.mysql_stmt_error(st) or b"").decode())

    # --- text protocol -------------------------------------------------------

    def fields(self, res):
        n = self.lib.mysql_num_fields(res)
        # MYSQL_FIELD starts with `char *name` in both libraries.
        return [self.lib.mysql_fetch_field_direct(res, k)[0].decode() for k in range(n)]

    def rows(self, res):
        n = self.lib.mysql_num_fields(res)
        out = []
        while True:
            row = self.lib.mysql_fetch_row(res)
            if not row:
                return out
            lengths = self.lib.mysql_fetch_lengths(res)
            out.append(
                [None if row[k] is None else ctypes.string_at(row[k], lengths[k]).decode() for k in range(n)]
            )

    def results(self, m, tag):
        """Reads every result of the statement just sent; one line each."""
        k = 0
        while True:
            res = self.lib.mysql_store_result(m)
            if res:
                cols = self.fields(res)
                rows = self.rows(res)
                self.lib.mysql_free_result(res)
                self.out("%s[%d] columns=%s rows=%d %s warnings=%d" % (
                    tag, k, cols, len(rows), summary(rows), self.lib.mysql_warning_count(m)))
            elif self.lib.mysql_field_count(m) == 0:
                self.out("%s[%d] ok affected=%d warnings=%d" % (
                    tag, k, self.lib.mysql_affected_rows(m), self.lib.mysql_warning_count(m)))
            else:
                raise Failure("%s[%d]: store_result: %s" % (tag, k, self.err(m)))
            k += 1
            more = self.lib.mysql_next_result(m)
            if more == -1:
                return
            if more > 0:
                self.out("%s[%d] error %s" % (tag, k, self.err(m)))
                return

    def query(self, m, sql, tag):
        if self.lib.mysql_query(m, sql.encode()) != 0:
            self.out("%s error %s" % (tag, self.err(m)))
            return
        self.results(m, tag)

    # --- prepared statements -------------------------------------------------

    def prepare(self, m, sql, tag):
        st = self.lib.mysql_stmt_init(m)
        q = sql.encode()
        if self.lib.mysql_stmt_prepare(st, q, len(q)) != 0:
            self.out("%s prepare error %s" % (tag, self.stmt_err(st)))
            self.lib.mysql_stmt_close(st)
            return None
        self.out("%s prepared params=%d columns=%d" % (
            tag, self.lib.mysql_stmt_param_count(st), self.lib.mysql_stmt_field_count(st)))
        return st

    def bind_ints(self, st, values):
        """Binds integer parameters; returns what must stay alive meanwhile."""
        binds = (Bind * max(1, len(values)))()
        bufs = [ctypes.c_longlong(v) for v in values]
        for k, b in enumerate(bufs):
            binds[k].buffer_type = MYSQL_TYPE_LONGLONG
            binds[k].buffer = ctypes.cast(ctypes.byref(b), ctypes.c_void_p)
        self.check(self.lib.mysql_stmt_bind_param(st, binds) == b"\x00", "bind_param")
        self.bound.append((binds, bufs))

    def bind_strings(self, st, n):
        """Binds n result columns as strings (the library converts)."""
        binds = (Bind * n)()
        bufs = [ctypes.create_string_buffer(256) for _ in range(n)]
        lengths = [ctypes.c_ulong(0) for _ in range(n)]
        nulls = [ctypes.c_char(b"\x00") for _ in range(n)]
        for k in range(n):
            binds[k].buffer_type = MYSQL_TYPE_STRING
            binds[k].buffer = ctypes.cast(bufs[k], ctypes.c_void_p)
            binds[k].buffer_length = 256
            binds[k].length = ctypes.pointer(lengths[k])
            binds[k].is_null = ctypes.pointer(nulls[k])
        self.check(self.lib.mysql_stmt_bind_result(st, binds) == b"\x00", "bind_result")
        self.bound.append((binds, bufs, lengths, nulls))

        def row():
            return [None if nulls[k].value == b"\x01" else bufs[k].raw[: lengths[k].value].decode() for k in range(n)]

        return row

    def fetch(self, st, row, limit=None):
        """mysql_stmt_fetch until no data (or `limit` rows)."""
        rows = []
        while limit is None or len(rows) < limit:
            rc = self.lib.mysql_stmt_fetch(st)
            if rc == MYSQL_NO_DATA:
                break
            if rc not in (0, MYSQL_DATA_TRUNCATED):
                raise Failure("fetch: %s" % self.stmt_err(st))
            rows.append(row())
        return rows

    def stmt_results(self, st, tag, store=True):
        """Every result of an executed statement (CALL gives several)."""
        k = 0
        while True:
            n = self.lib.mysql_stmt_field_count(st)
            if n:
                row = self.bind_strings(st, n)
                if store:
                    self.check(self.lib.mysql_stmt_store_result(st) == 0, "store_result")
                rows = self.fetch(st, row)
                self.out("%s[%d] rows=%d %s" % (tag, k, len(rows), summary(rows)))
            else:
                self.out("%s[%d] ok affected=%d" % (tag, k, self.lib.mysql_stmt_affected_rows(st)))
            k += 1
            rc = self.lib.mysql_stmt_next_result(st)
            if rc == -1:
                return
            if rc > 0:
                self.out("%s[%d] error %s" % (tag, k, self.stmt_err(st)))
                return

    def execute(self, st, params, tag, store=True):
        if params:
            self.bind_ints(st, params)
        if self.lib.mysql_stmt_execute(st) != 0:
            self.out("%s execute error %s" % (tag, self.stmt_err(st)))
            return
        self.stmt_results(st, tag, store)

    def cursor(self, m, sql, prefetch, tag):
        st = self.prepare(m, sql, tag)
        t = ctypes.c_ulong(CURSOR_TYPE_READ_ONLY)
        self.check(self.lib.mysql_stmt_attr_set(st, STMT_ATTR_CURSOR_TYPE, ctypes.byref(t)) == b"\x00", "cursor attr")
        n = ctypes.c_ulong(prefetch)
        self.check(self.lib.mysql_stmt_attr_set(st, STMT_ATTR_PREFETCH_ROWS, ctypes.byref(n)) == b"\x00", "prefetch")
        return st


def summary(rows):
    """Rows in full when few, else count, ends and a checksum."""
    if len(rows) <= 6:
        return repr(rows)
    return "first=%r last=%r sum=%d" % (rows[0], rows[-1], sum(hash_row(r) for r in rows) % 1000000007)


def hash_row(r):
    h = 0
    for v in r:
        for ch in (v if v is not None else "\x00NULL"):
            h = (h * 131 + ord(ch)) % 1000000007
        h = (h * 131 + 7) % 1000000007
    return h


def run(lib, plugin_dir, host, port, user, password, database, table, datafile):
    f = Flow(lib)
    L = lib
    m = L.mysql_init(None)
    if plugin_dir:
        L.mysql_options(m, MYSQL_PLUGIN_DIR, plugin_dir.encode())
    one = ctypes.c_uint(1)
    L.mysql_options(m, MYSQL_OPT_LOCAL_INFILE, ctypes.byref(one))
    if not L.mysql_real_connect(m, host.encode(), user.encode(), password.encode(), database.encode(),
                                int(port), None, CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS):
        raise Failure("connect: " + f.err(m))
    t = table
    f.query(m, "DROP TABLE IF EXISTS %s; DROP PROCEDURE IF EXISTS %s_p" % (t, t), "cleanup")
    f.query(m, "CREATE TABLE %s (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(32), n INT)" % t, "create")
    f.query(m, "INSERT INTO %s (id, name, n) SELECT seq, CONCAT('row-', seq), seq %% 7 FROM seq_1_to_50" % t,
            "insert")

    # Text result sets: rows, none, with warnings; several per query.
    f.query(m, "SELECT id, name, n FROM %s ORDER BY id" % t, "text")
    f.query(m, "SELECT id FROM %s WHERE id < 0" % t, "text-empty")
    f.query(m, "SELECT CAST('1x' AS INT), CAST('2y' AS INT)", "text-warnings")
    f.query(m, "SELECT 1; SELECT 2, 'two'; UPDATE %s SET n = n + 1 WHERE id <= 3; "
               "SELECT id FROM %s WHERE id < 0; SELECT CAST('3z' AS INT); DO 1" % (t, t), "multi")
    f.query(m, "SELECT 1; SELECT * FROM no_such_table_capi; SELECT 2", "multi-error")
    f.query(m, "BEGIN; SELECT COUNT(*) FROM %s; COMMIT" % t, "multi-trans")

    # Prepared statements: parameter and column definitions, binary rows.
    st = f.prepare(m, "SELECT id, name, ? + 0 FROM %s WHERE id BETWEEN ? AND ? ORDER BY id" % t, "prep-select")
    f.execute(st, [7, 10, 25], "exec-select")
    f.execute(st, [8, 30, 20], "exec-select-empty")
    L.mysql_stmt_close(st)
    st = f.prepare(m, "SELECT COUNT(*), MAX(name) FROM %s" % t, "prep-noparams")
    f.execute(st, [], "exec-noparams")
    L.mysql_stmt_close(st)
    st = f.prepare(m, "UPDATE %s SET n = ? WHERE id <= ?" % t, "prep-update")
    f.execute(st, [5, 4], "exec-update")
    L.mysql_stmt_close(st)
    st = f.prepare(m, "DO 1", "prep-nothing")
    f.execute(st, [], "exec-nothing")
    L.mysql_stmt_close(st)
    f.prepare(m, "SELECT * FROM no_such_table_capi WHERE id = ?", "prep-error")

    # Server-side cursors: COM_STMT_EXECUTE opens, COM_STMT_FETCH reads.
    st = f.cursor(m, "SELECT id, name FROM %s WHERE id <= ? ORDER BY id" % t, 7, "cursor")
    f.execute(st, [50], "cursor-all", store=False)
    f.execute(st, [0], "cursor-empty", store=False)
    # A cursor abandoned half-way with COM_STMT_RESET, then reused.
    f.bind_ints(st, [40])
    f.check(L.mysql_stmt_execute(st) == 0, "cursor execute: " + f.stmt_err(st))
    row = f.bind_strings(st, 2)
    part = f.fetch(st, row, limit=10)
    f.out("cursor-part rows=%d %s" % (len(part), summary(part)))
    f.check(L.mysql_stmt_reset(st) == b"\x00", "stmt_reset: " + f.stmt_err(st))
    f.execute(st, [3], "cursor-after-reset", store=False)
    # ... and one closed half-way with COM_STMT_CLOSE.
    f.bind_ints(st, [40])
    f.check(L.mysql_stmt_execute(st) == 0, "cursor execute: " + f.stmt_err(st))
    row = f.bind_strings(st, 2)
    part = f.fetch(st, row, limit=2)
    f.out("cursor-close rows=%d %s" % (len(part), summary(part)))
    L.mysql_stmt_close(st)
    st = f.cursor(m, "UPDATE %s SET n = n + 1 WHERE id = ?" % t, 1, "cursor-noresult")
    f.execute(st, [9], "cursor-noresult", store=False)
    L.mysql_stmt_close(st)

    # COM_FIELD_LIST.
    for wild, tag in ((None, "fields"), (b"na%", "fields-wild")):
        res = L.mysql_list_fields(m, t.encode(), wild)
        if res:
            f.out("%s %s" % (tag, f.fields(res)))
            L.mysql_free_result(res)
        else:
            f.out("%s error %s" % (tag, f.err(m)))
    res = L.mysql_list_fields(m, b"no_such_table_capi", None)
    f.check(not res, "list_fields of a missing table")
    f.out("fields-missing error %s" % f.err(m))

    # MariaDB's own types (JSON, UUID, INET4): a client that negotiated
    # MARIADB_CLIENT_EXTENDED_METADATA gets their type name and format in
    # every column definition (text and binary result sets, prepare's
    # parameters and columns, COM_FIELD_LIST); one that did not, none.
    x = t + "_x"
    f.query(m, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (id INT PRIMARY KEY, j JSON, u UUID, i4 INET4)"
            % (x, x), "ext-create")
    f.query(m, "INSERT INTO %s VALUES (1, '{\"a\": [1, 2]}', '123e4567-e89b-12d3-a456-426655440000', "
               "'10.0.0.1')" % x, "ext-insert")
    f.query(m, "SELECT * FROM %s" % x, "ext-text")
    st = f.prepare(m, "SELECT j, u, i4, JSON_OBJECT('k', ?) FROM %s WHERE id = ?" % x, "ext-prep")
    f.execute(st, [5, 1], "ext-exec")
    L.mysql_stmt_close(st)
    res = L.mysql_list_fields(m, x.encode(), None)
    f.check(res, "list_fields of %s: %s" % (x, f.err(m)))
    f.out("ext-fields %s" % f.fields(res))
    L.mysql_free_result(res)
    f.query(m, "DROP TABLE %s" % x, "ext-drop")

    # Stored procedures: several results, then the CALL's own OK.
    f.query(m, "CREATE PROCEDURE %s_p(IN k INT, OUT total INT) BEGIN "
               "SELECT id, name FROM %s WHERE id <= k ORDER BY id; "
               "SELECT COUNT(*) FROM %s; SET total = k * 2; END" % (t, t, t), "proc-create")
    f.query(m, "CALL %s_p(3, @total); SELECT @total" % t, "call-text")
    st = f.prepare(m, "CALL %s_p(?, ?)" % t, "prep-call")
    f.execute(st, [4, 0], "exec-call")
    L.mysql_stmt_close(st)

    # LOAD DATA LOCAL INFILE (one line gives a warning).
    with open(datafile, "w") as out:
        for k in range(1000, 1200):
            out.write("%d,loaded-%d,%d\n" % (k, k, k % 3))
        out.write("1200,bad,notanumber\n")
    f.query(m, "LOAD DATA LOCAL INFILE '%s' INTO TABLE %s FIELDS TERMINATED BY ','" % (datafile, t), "load")
    f.query(m, "SELECT COUNT(*), SUM(n) FROM %s" % t, "after-load")
    # ... after a result set in one multi-statement query: the file's packets
    # continue the numbering the client saw.
    f.query(m, "SELECT 'before'; LOAD DATA LOCAL INFILE '%s' INTO TABLE %s FIELDS TERMINATED BY ','; "
               "SELECT COUNT(*) FROM %s" % (datafile, t, t), "multi-load")

    # COM_SET_OPTION: multi-statements off, then on again.
    f.out("set-option off rc=%d" % L.mysql_set_server_option(m, MYSQL_OPTION_MULTI_STATEMENTS_OFF))
    f.query(m, "SELECT 1; SELECT 2", "multi-off")
    f.out("set-option on rc=%d" % L.mysql_set_server_option(m, MYSQL_OPTION_MULTI_STATEMENTS_ON))
    f.query(m, "SELECT 1; SELECT 2", "multi-on")

    # What the funnel answers itself.
    f.query(m, "INSERT INTO %s (name) VALUES ('auto')" % t, "insert-auto")
    f.out("insert-id %d" % L.mysql_insert_id(m))
    f.query(m, "SELECT LAST_INSERT_ID()", "last-insert-id")
    if L.mysql_query(m, b"SELECT CONNECTION_ID()") != 0:
        raise Failure("CONNECTION_ID(): " + f.err(m))
    res = L.mysql_store_result(m)
    got = f.rows(res)
    L.mysql_free_result(res)
    f.check(got == [[str(L.mysql_thread_id(m))]], "CONNECTION_ID() %r is the handshake's" % got)
    f.out("connection-id is the handshake's")
    f.out("ping rc=%d" % L.mysql_ping(m))

    f.query(m, "DROP PROCEDURE %s_p; DROP TABLE %s" % (t, t), "drop")
    L.mysql_close(m)
    return f.checks


def cursor_pins(lib, plugin_dir, host, port, user, password, database):
    """Cursors opened and ended every way, with a pause after each step."""
    f = Flow(lib)
    L = lib
    m = L.mysql_init(None)
    if plugin_dir:
        L.mysql_options(m, MYSQL_PLUGIN_DIR, plugin_dir.encode())
    if not L.mysql_real_connect(m, host.encode(), user.encode(), password.encode(), database.encode(),
                                int(port), None, 0):
        raise Failure("connect: " + f.err(m))

    def pause(step):
        print("PAUSE %s %d" % (step, L.mysql_thread_id(m)), flush=True)
        if not sys.stdin.readline():
            raise Failure("no go-ahead after " + step)

    def fetches():
        if L.mysql_query(m, b"SHOW SESSION STATUS LIKE 'Com_stmt_fetch'") != 0:
            raise Failure("SHOW SESSION STATUS: " + f.err(m))
        res = L.mysql_store_result(m)
        n = int(f.rows(res)[0][1])
        L.mysql_free_result(res)
        return n

    def want(a, b):
        return [[str(k), "row-%d" % k] for k in range(a, b + 1)]

    sql = "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_200 WHERE seq <= ? ORDER BY seq"

    def opened(limit, tag):
        st = f.cursor(m, sql, 5, tag)
        f.bind_ints(st, [limit])
        f.check(L.mysql_stmt_execute(st) == 0, "execute: " + f.stmt_err(st))
        return st, f.bind_strings(st, 2)

    # Read to the end, 5 rows per COM_STMT_FETCH.
    st, row = opened(50, "cursor")
    pause("opened")
    before = fetches()
    f.check(f.fetch(st, row, 20) == want(1, 20), "first 20 rows")
    n = fetches() - before
    f.check(n == 4, "4 COM_STMT_FETCH for 20 rows, 5 at a time (%d)" % n)
    pause("midway")
    f.check(f.fetch(st, row) == want(21, 50), "the other 30 rows")
    pause("exhausted")
    # COM_STMT_RESET and COM_STMT_CLOSE with rows left.
    f.check(L.mysql_stmt_execute(st) == 0, "execute: " + f.stmt_err(st))
    row = f.bind_strings(st, 2)
    f.check(f.fetch(st, row, 3) == want(1, 3), "3 rows before reset")
    pause("reopened")
    f.check(L.mysql_stmt_reset(st) == b"\x00", "reset: " + f.stmt_err(st))
    pause("reset")
    f.check(L.mysql_stmt_execute(st) == 0, "execute: " + f.stmt_err(st))
    row = f.bind_strings(st, 2)
    f.check(f.fetch(st, row, 3) == want(1, 3), "3 rows before close")
    L.mysql_stmt_close(st)
    pause("closed")
    f.query(m, "SELECT 'still usable'", "after-close")
    # Two cursors: the pin lasts until both are over.
    a, row_a = opened(12, "cursor-a")
    b, row_b = opened(8, "cursor-b")
    f.check(f.fetch(a, row_a) == want(1, 12), "cursor a")
    pause("one-left")
    f.check(f.fetch(b, row_b, 2) == want(1, 2), "cursor b")
    f.check(L.mysql_stmt_reset(b) == b"\x00", "reset b: " + f.stmt_err(b))
    pause("none-left")
    # Executed again without a cursor: mysqld closes the open one.
    f.check(L.mysql_stmt_execute(a) == 0, "execute a: " + f.stmt_err(a))
    row_a = f.bind_strings(a, 2)
    f.check(f.fetch(a, row_a, 1) == want(1, 1), "cursor a again")
    pause("reopened-a")
    t = ctypes.c_ulong(0)
    f.check(L.mysql_stmt_attr_set(a, STMT_ATTR_CURSOR_TYPE, ctypes.byref(t)) == b"\x00", "no cursor")
    f.check(L.mysql_stmt_execute(a) == 0, "execute a: " + f.stmt_err(a))
    row_a = f.bind_strings(a, 2)
    f.check(L.mysql_stmt_store_result(a) == 0, "store a")
    f.check(f.fetch(a, row_a) == want(1, 12), "a without cursor")
    pause("no-cursor")
    L.mysql_stmt_close(a)
    L.mysql_stmt_close(b)
    # One left open when the connection goes.
    st, row = opened(50, "cursor-left")
    f.check(f.fetch(st, row, 1) == want(1, 1), "a cursor left open")
    pause("leaving")
    L.mysql_close(m)
    return f.checks


def main():
    if len(sys.argv) == 8 and sys.argv[1] == "--cursor-pins":
        library, host, port, user, password, database = sys.argv[2:]
        job = cursor_pins
        args = (host, port, user, password, database)
    elif len(sys.argv) == 9:
        library, host, port, user, password, database, table, datafile = sys.argv[1:]
        job = run
        args = (host, port, user, password, database, table, datafile)
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
    lib, plugin_dir = load(library)
    try:
        checks = job(lib, plugin_dir, *args)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print("FAILED (%s %s)" % (library, lib.mysql_get_client_info().decode()))
        sys.exit(1)
    print("library %s %s" % (library, lib.mysql_get_client_info().decode()))
    print("OK %d checks" % checks)


if __name__ == "__main__":
    main()

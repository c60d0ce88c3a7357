#!/usr/bin/env python3
"""A client library's basic flow through the funnel (driven by tests/e2e_clients.rs).

usage: python_flow.py DRIVER HOST PORT USER PASSWORD DATABASE TABLE

DRIVER is one of:
  pymysql         PyMySQL (pure Python)
  connector-pure  mysql-connector-python, pure Python implementation
  connector-cext  mysql-connector-python, C extension
  mysqlclient     mysqlclient (MySQLdb, on libmariadb/libmysqlclient)

TABLE is a table name (in DATABASE) the script may create and drop.

Prints "OK <n> checks" and exits 0 when every check passed; prints the
failure and exits 1 otherwise; prints "SKIP: <reason>" and exits 77 when the
driver is not installed.
"""

import datetime
import decimal
import sys
import traceback

SKIP = 77


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(SKIP)


class Driver:
    """What differs between the drivers, behind one small interface."""

    def __init__(self, name):
        self.name = name
        try:
            if name == "pymysql":
                import pymysql as m
            elif name in ("connector-pure", "connector-cext"):
                if name == "connector-cext":
                    # Load the extension before anything imports `ssl`: it
                    # needs the newer OpenSSL vendored beside it, and
                    # Python's `ssl` would otherwise load the system's older
                    # libssl.so.3 first (the extension then fails with
                    # "version OPENSSL_3.2.0 not found" and HAVE_CEXT is
                    # false).
                    try:
                        import _mysql_connector  # noqa: F401
                    except ImportError:
                        pass  # reported below
                import mysql.connector as m

                if name == "connector-cext":
                    if not getattr(m, "HAVE_CEXT", False):
                        try:
                            import _mysql_connector  # noqa: F401  (for the reason)

                            reason = "HAVE_CEXT is false"
                        except ImportError as e:
                            reason = str(e)
                        skip("mysql-connector-python C extension unavailable: " + reason)
            elif name == "mysqlclient":
                import MySQLdb as m
            else:
                print("unknown driver " + name)
                sys.exit(2)
        except ImportError as e:
            skip("%s is not installed: %s" % (name, e))
        self.m = m
        self.version = getattr(m, "__version__", None) or str(getattr(m, "version_info", "?"))

    def connect(self, host, port, user, password, database, **extra):
        kw = dict(host=host, port=port, user=user, password=password, database=database)
        kw.update(extra)
        if self.name == "pymysql":
            kw.setdefault("charset", "utf8mb4")
            kw.setdefault("autocommit", True)
            return self.m.connect(**kw)
        if self.name.startswith("connector"):
            kw.setdefault("charset", "utf8mb4")
            kw.setdefault("autocommit", True)
            kw["use_pure"] = self.name == "connector-pure"
            kw["ssl_disabled"] = True
            conn = self.m.connect(**kw)
            want_pure = self.name == "connector-pure"
            is_pure = type(conn).__name__ == "MySQLConnection"
            if want_pure != is_pure:
                raise AssertionError("asked for %s, got %s" % (self.name, type(conn).__name__))
            return conn
        # mysqlclient
        kw.setdefault("charset", "utf8mb4")
        autocommit = kw.pop("autocommit", True)
        conn = self.m.connect(**kw)
        conn.autocommit(autocommit)
        return conn

    def errno(self, e):
        n = getattr(e, "errno", None)
        if n is None and e.args:
            n = e.args[0]
        return n

    def select_db(self, conn, name):
        if self.name.startswith("connector"):
            conn.database = name  # COM_INIT_DB
        else:
            conn.select_db(name)

    def set_autocommit(self, conn, on):
        if self.name.startswith("connector"):
            conn.autocommit = on  # a property
        else:
            conn.autocommit(on)  # a method

    def ping(self, conn):
        if self.name == "mysqlclient":
            conn.ping()
        else:
            conn.ping(reconnect=False)

    def has_server_prepare(self):
        return self.name.startswith("connector")


class Checks:
    def __init__(self):
        self.n = 0

    def eq(self, got, want, what):
        if got != want:
            raise AssertionError("%s: got %r, want %r" % (what, got, want))
        self.n += 1

    def true(self, cond, what):
        if not cond:
            raise AssertionError(what)
        self.n += 1


def one(conn, sql, params=None):
    cur = conn.cursor()
    cur.execute(sql, params) if params is not None else cur.execute(sql)
    row = cur.fetchone()
    rest = cur.fetchall()
    cur.close()
    if rest:
        raise AssertionError("%s: more than one row" % sql)
    return row


def expect_error(d, conn, sql, errno, ck, what):
    cur = conn.cursor()
    try:
        cur.execute(sql)
        cur.fetchall()
    except d.m.Error as e:
        ck.eq(d.errno(e), errno, what + ": " + str(e))
    else:
        raise AssertionError(what + ": no error")
    finally:
        try:
            cur.close()
        except d.m.Error:
            pass


def text(v):
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v


def flow(d, host, port, user, password, database, table):
    ck = Checks()
    conn = d.connect(host, port, user, password, database)

    # Plain queries, server identity, the login's schema.
    ck.eq(one(conn, "SELECT 1 + 1")[0], 2, "1 + 1")
    ck.eq(text(one(conn, "SELECT DATABASE()")[0]), database, "DATABASE()")
    ck.true(text(one(conn, "SELECT CURRENT_USER()")[0]).startswith(user + "@"), "CURRENT_USER()")
    ck.true("MariaDB" in text(one(conn, "SELECT VERSION()")[0]), "VERSION()")
    ck.eq(text(one(conn, "SELECT @@character_set_client")[0]), "utf8mb4", "charset")

    # Parameters (client-side interpolation for most of these drivers).
    s = "h\u00e9llo \u2603 \U0001F600 'quoted' \\ back"
    row = one(conn, "SELECT %s, %s, %s, %s", (s, None, 42, 2.5))
    ck.eq((text(row[0]), row[1], row[2], row[3]), (s, None, 42, 2.5), "parameters echo")

    # Types come back as the driver's types.
    row = one(
        conn,
        "SELECT CAST('2024-02-29' AS DATE), CAST('12.50' AS DECIMAL(10,2)), "
        "CAST('2024-02-29 13:14:15' AS DATETIME), NULL",
    )
    ck.eq(row[0], datetime.date(2024, 2, 29), "DATE")
    ck.eq(row[1], decimal.Decimal("12.50"), "DECIMAL")
    ck.eq(row[2], datetime.datetime(2024, 2, 29, 13, 14, 15), "DATETIME")
    ck.eq(row[3], None, "NULL")

    # A table of our own.
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS " + table)
    cur.execute(
        "CREATE TABLE %s (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, "
        "data LONGBLOB, amount DECIMAL(10,2)) ENGINE=InnoDB" % table
    )
    rows = [(i, "name-%d-\u00e9\U0001F600" % i, None, decimal.Decimal(i) / 4) for i in range(1, 101)]
    cur.executemany("INSERT INTO " + table + " (id, name, data, amount) VALUES (%s, %s, %s, %s)", rows)
    cur.close()
    ck.eq(one(conn, "SELECT COUNT(*), SUM(id) FROM " + table), (100, decimal.Decimal(5050)), "insert many")
    for i in (1, 50, 100):
        r = one(conn, "SELECT name, amount FROM " + table + " WHERE id = %s", (i,))
        ck.eq((text(r[0]), r[1]), ("name-%d-\u00e9\U0001F600" % i, decimal.Decimal(i) / 4), "row %d" % i)

    # A 1 MiB blob both ways.
    blob = bytes((i * 7) % 256 for i in range(1 << 20))
    cur = conn.cursor()
    cur.execute("UPDATE " + table + " SET data = %s WHERE id = 7", (blob,))
    cur.close()
    got = one(conn, "SELECT data FROM " + table + " WHERE id = 7")[0]
    ck.eq(bytes(got), blob, "1 MiB blob")

    # Many rows.
    cur = conn.cursor()
    cur.execute("SELECT seq FROM seq_1_to_20000")
    seqs = [r[0] for r in cur.fetchall()]
    cur.close()
    ck.eq(seqs, list(range(1, 20001)), "20000 rows in order")

    # Errors are delivered and the connection stays usable.
    expect_error(d, conn, "SELEC 1", 1064, ck, "syntax error")
    ck.eq(one(conn, "SELECT 3")[0], 3, "usable after 1064")
    expect_error(d, conn, "INSERT INTO " + table + " (id) VALUES (1)", 1062, ck, "duplicate key")
    ck.eq(one(conn, "SELECT COUNT(*) FROM " + table)[0], 100, "usable after 1062")
    expect_error(d, conn, "SELECT * FROM no_such_table_e2e", 1146, ck, "no such table")

    # Transactions, seen from a second connection.
    other = d.connect(host, port, user, password, database)
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO " + table + " (id, name) VALUES (1000, 'tx')")
    ck.eq(one(conn, "SELECT COUNT(*) FROM " + table)[0], 101, "own uncommitted row")
    ck.eq(one(other, "SELECT COUNT(*) FROM " + table)[0], 100, "other's uncommitted row invisible")
    conn.rollback()
    ck.eq(one(conn, "SELECT COUNT(*) FROM " + table)[0], 100, "rolled back")
    cur.execute("START TRANSACTION")
    cur.execute("INSERT INTO " + table + " (id, name) VALUES (1001, 'tx')")
    ck.eq(one(other, "SELECT COUNT(*) FROM " + table)[0], 100, "invisible before commit")
    conn.commit()
    ck.eq(one(other, "SELECT COUNT(*) FROM " + table)[0], 101, "visible after commit")
    cur.close()

    # The driver's autocommit switch.
    d.set_autocommit(conn, False)
    cur = conn.cursor()
    cur.execute("DELETE FROM " + table + " WHERE id = 1001")
    ck.eq(one(other, "SELECT COUNT(*) FROM " + table)[0], 101, "autocommit off: delete invisible")
    conn.rollback()
    cur.close()
    d.set_autocommit(conn, True)
    ck.eq(one(conn, "SELECT @@autocommit")[0], 1, "autocommit back on")
    ck.eq(one(other, "SELECT COUNT(*) FROM " + table)[0], 101, "delete rolled back")

    # Session state per connection.
    cur = conn.cursor()
    cur.execute("SET @v = 'mine'")
    cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
    cur.close()
    cur = other.cursor()
    cur.execute("SET @v = 'theirs'")
    cur.close()
    ck.eq(text(one(conn, "SELECT @v")[0]), "mine", "user variable")
    ck.eq(text(one(other, "SELECT @v")[0]), "theirs", "other's user variable")
    ck.eq(text(one(conn, "SELECT @@sql_mode")[0]), "ANSI_QUOTES", "sql_mode")
    ck.true(text(one(other, "SELECT @@sql_mode")[0]) != "ANSI_QUOTES", "other's sql_mode")
    other.close()

    # Changing the default schema: COM_INIT_DB and USE.
    d.select_db(conn, "information_schema")
    ck.eq(text(one(conn, "SELECT DATABASE()")[0]), "information_schema", "select_db")
    cur = conn.cursor()
    cur.execute("USE " + database)
    cur.close()
    ck.eq(text(one(conn, "SELECT DATABASE()")[0]), database, "USE")

    # Server-side prepared statements where the driver has them.
    if d.has_server_prepare():
        pc = conn.cursor(prepared=True)
        pc.execute("SELECT ?, ?, ?", (5, "x\u00e9", None))
        r = pc.fetchone()
        ck.eq((r[0], text(r[1]), r[2]), (5, "x\u00e9", None), "prepared select")
        pc.execute("SELECT name FROM " + table + " WHERE id = ?", (42,))
        ck.eq(text(pc.fetchone()[0]), "name-42-\u00e9\U0001F600", "prepared select from table")
        pc.executemany("INSERT INTO " + table + " (id, name) VALUES (?, ?)", [(2000 + i, "p%d" % i) for i in range(5)])
        pc.execute("SELECT COUNT(*) FROM " + table + " WHERE id >= ?", (2000,))
        ck.eq(pc.fetchone()[0], 5, "prepared executemany")
        pc.close()

    d.ping(conn)
    ck.n += 1
    cur = conn.cursor()
    cur.execute("DROP TABLE " + table)
    cur.close()
    conn.close()
    return ck.n


def main():
    if len(sys.argv) != 8:
        print(__doc__)
        sys.exit(2)
    driver, host, port, user, password, database, table = sys.argv[1:]
    d = Driver(driver)
    try:
        n = flow(d, host, int(port), user, password, database, table)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print("FAILED (%s %s)" % (driver, d.version))
        sys.exit(1)
    print("driver %s %s" % (driver, d.version))
    print("OK %d checks" % n)


if __name__ == "__main__":
    main()

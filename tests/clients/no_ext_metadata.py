"""Column definitions as clients that do not ask for MariaDB's extended type
information receive them: PyMySQL (text protocol; the raw definitions
printed) and mysql-connector-python's pure-Python prepared cursor (binary
protocol; its description). Run directly and through the funnel by
tests/mariadb_ext.rs, which compares the output.

    python3 no_ext_metadata.py PORT USER PASSWORD DATABASE TABLE
"""
import sys

import mysql.connector
import pymysql

port, user, password, database, t = sys.argv[1:6]
port = int(port)
c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database=database,
                    autocommit=True)
cur = c.cursor()
# Not CLIENT_MYSQL-less: PyMySQL speaks no MariaDB extension.
print("pymysql-client-flag-mysql", bool(c.client_flag & 1))
cur.execute("DROP TABLE IF EXISTS %s" % t)
cur.execute("CREATE TABLE %s (id INT PRIMARY KEY, j JSON, u UUID, i4 INET4)" % t)
cur.execute("INSERT INTO %s VALUES (1, '{\"a\": 1}', '123e4567-e89b-12d3-a456-426655440000', '10.0.0.1')" % t)
for sql in ("SELECT * FROM %s" % t, "SELECT JSON_OBJECT('k', u) FROM %s" % t, "SELECT LAST_INSERT_ID()"):
    cur.execute(sql)
    print("pymysql", sql, cur.fetchall())
    for f in cur._result.fields:
        print("  definition", f._data.hex())
m = mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=password, database=database,
                            use_pure=True)
mc = m.cursor(prepared=True)
mc.execute("SELECT j, u, i4 FROM %s WHERE id = %%s" % t, (1,))
print("connector prepared", mc.fetchall(), mc.description)
mc.close()
m.close()
# COM_STMT_BULK_EXECUTE from a client that did not negotiate bulk
# operations: mysqld's error, and the connection stays usable.
c._execute_command(0xFA, b"\x01\x00\x00\x00\x80\x00")
try:
    c._read_query_result()
    print("bulk without the capability: no error")
except pymysql.err.MySQLError as e:
    print("bulk without the capability", e.args)
cur.execute("SELECT COUNT(*) FROM %s" % t)
print("after bulk", cur.fetchall())
cur.execute("DROP TABLE %s" % t)
c.close()
print("done")

// MariaDB's extended type information and bulk operations, as Node's
// clients use them: run against mysqld directly and through the funnel by
// tests/mariadb_ext.rs, which compares the transcripts (one JSON line per
// step on stdout).
//
//   node mariadb_ext.js PORT USER PASSWORD DATABASE TABLE
//
// mysql2 asks for MARIADB_CLIENT_EXTENDED_METADATA and parses JSON columns
// by the format it carries ("json"); the `mariadb` connector asks for it
// too and for MARIADB_CLIENT_STMT_BULK_OPERATIONS, with which batch() sends
// COM_STMT_BULK_EXECUTE.
'use strict';
const mysql2 = require('mysql2/promise');
const mariadb = require('mariadb');

const [port, user, password, database, table] = process.argv.slice(2);
const opts = { host: '127.0.0.1', port: +port, user, password, database };
const out = (step, what) => console.log(JSON.stringify([step, what]));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fieldsOf = (fields) =>
  fields.map((f) => [f.name, f.columnType, f.extendedTypeName || null, f.extendedFormat || null]);

async function viaMysql2() {
  const c = await mysql2.createConnection(opts);
  out('mysql2-extended-metadata', c.connection ? c.connection._mariadbExtendedMetadata : c._mariadbExtendedMetadata);
  const t = table;
  await c.query(`DROP TABLE IF EXISTS ${t}`);
  await c.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, j JSON, u UUID, i4 INET4, i6 INET6, s VARCHAR(10))`);
  await c.query(
    `INSERT INTO ${t} VALUES (1, '{"a": [1, 2], "b": null}', '123e4567-e89b-12d3-a456-426655440000', '10.0.0.1', '::1', 'x'),` +
      ` (2, '[true, "s"]', NULL, NULL, NULL, NULL)`
  );
  let [rows, fields] = await c.query(`SELECT * FROM ${t} ORDER BY id`);
  out('text-rows', rows);
  out('text-fields', fieldsOf(fields));
  [rows, fields] = await c.execute(`SELECT j, u, i4, i6, s, ? AS p FROM ${t} WHERE id >= ? ORDER BY id`, ['p', 1]);
  out('binary-rows', rows);
  out('binary-fields', fieldsOf(fields));
  // A JSON value bound as a parameter, read back as JSON.
  await c.execute(`INSERT INTO ${t} (id, j) VALUES (?, ?)`, [3, JSON.stringify({ bound: [1, 'two'] })]);
  [rows] = await c.execute(`SELECT j FROM ${t} WHERE id = ?`, [3]);
  out('bound-json', rows);
  [rows, fields] = await c.query(`SELECT JSON_OBJECT('k', 1) AS o, CAST('x' AS CHAR) AS plain, LAST_INSERT_ID() AS l`);
  out('expressions', [rows, fieldsOf(fields)]);
  [rows, fields] = await c.query('SELECT LAST_INSERT_ID()');
  out('funnel-answered', [rows, fieldsOf(fields)]);
  await c.end();
}

async function viaMariadb() {
  const BULK = 1n << 34n;
  const EXT = 1n << 35n;
  const a = await mariadb.createConnection({ ...opts, bulk: true });
  const b = await mariadb.createConnection({ ...opts, bulk: true });
  const caps = BigInt(a.info.clientCapabilities);
  out('mariadb-capabilities', { bulk: (caps & BULK) !== 0n, extended_metadata: (caps & EXT) !== 0n });
  const t = table + '_b';
  await a.query(`DROP TABLE IF EXISTS ${t}`);
  await a.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, name VARCHAR(20), j JSON, u UUID)`);
  const sql = `INSERT INTO ${t} (id, name, j, u) VALUES (?, ?, ?, ?)`;
  const rowsFrom = (from, n) =>
    Array.from({ length: n }, (_, k) => [
      from + k,
      k % 3 === 0 ? null : `n${from + k}`,
      k % 2 ? JSON.stringify({ k }) : null,
      k % 4 ? null : '123e4567-e89b-12d3-a456-4266554400' + String((from + k) % 100).padStart(2, '0'),
    ]);
  let r = await a.batch(sql, rowsFrom(1, 100));
  out('batch-1', { affectedRows: r.affectedRows });
  // The same statement from another connection while the first holds a
  // backend, and again: the statement is prepared on whichever backend runs
  // it, and bulk-executed there.
  for (let round = 0; round < 3; round++) {
    const [, r2] = await Promise.all([
      a.query('SELECT SLEEP(0.2)'),
      sleep(50).then(() => b.batch(sql, rowsFrom(1000 + 100 * round, 50))),
    ]);
    out(`batch-b-${round}`, { affectedRows: r2.affectedRows });
    r = await a.batch(sql, rowsFrom(2000 + 100 * round, 20));
    out(`batch-a-${round}`, { affectedRows: r.affectedRows });
  }
  // A batch that fails half-way: mysqld's error, nothing else changed.
  try {
    await b.batch(sql, [[5000, 'ok', null, null], [1, 'duplicate', null, null]]);
    out('batch-duplicate', 'no error');
  } catch (e) {
    out('batch-duplicate', { errno: e.errno, sqlState: e.sqlState });
  }
  // Inside a transaction: the batch is rolled back with it.
  await a.beginTransaction();
  r = await a.batch(sql, rowsFrom(9000, 10));
  out('batch-in-transaction', { affectedRows: r.affectedRows });
  await a.rollback();
  const landed = await b.query(
    `SELECT COUNT(*) AS n, SUM(id) AS ids, COUNT(name) AS names, COUNT(j) AS js, COUNT(u) AS us,` +
      ` SUM(JSON_VALUE(j, '$.k')) AS ks FROM ${t}`
  );
  out('landed', landed.map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, String(v)]))));
  const meta = await a.query(`SELECT j, u FROM ${t} ORDER BY id LIMIT 1`);
  out('mariadb-meta', meta.meta.map((m) => [m.name(), m.type, m.dataTypeName || null, m.isDataTypeFormatJson()]));
  await a.query(`DROP TABLE ${t}`);
  await a.end();
  await b.end();
}

(async () => {
  await viaMysql2();
  await viaMariadb();
  await (async () => {
    const c = await mysql2.createConnection(opts);
    await c.query(`DROP TABLE ${table}`);
    await c.end();
  })();
  out('done', true);
})().catch((e) => {
  console.error('FAILED', e && (e.stack || e));
  process.exit(1);
});

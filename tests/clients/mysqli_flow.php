<?php
// PHP mysqli's basic flow through the funnel (driven by tests/e2e_clients.rs),
// with server-side prepared statements.
//
// usage: php mysqli_flow.php HOST PORT USER PASSWORD DATABASE TABLE
//
// Prints "OK <n> checks" and exits 0 when every check passed; prints the
// failure and exits 1 otherwise; prints "SKIP: <reason>" and exits 77 when
// the mysqli extension is missing.

if (!extension_loaded('mysqli')) {
    echo "SKIP: the PHP mysqli extension is not loaded\n";
    exit(77);
}
if ($argc != 7) {
    fwrite(STDERR, "usage: php mysqli_flow.php HOST PORT USER PASSWORD DATABASE TABLE\n");
    exit(2);
}
[, $host, $port, $user, $password, $database, $table] = $argv;
$port = (int)$port;

require __DIR__ . '/checks.php';

function one(mysqli $m, string $sql): array
{
    $r = $m->query($sql);
    $row = $r->fetch_row();
    if ($r->fetch_row() !== null) {
        throw new RuntimeException("$sql: more than one row");
    }
    $r->free();
    return $row;
}

function expect_error(mysqli $m, string $sql, int $code, string $what): void
{
    global $checks;
    try {
        $m->query($sql);
    } catch (mysqli_sql_exception $e) {
        eq($e->getCode(), $code, "$what: " . $e->getMessage());
        return;
    }
    throw new RuntimeException("$what: no error");
}

function connect(string $host, int $port, string $user, string $password, string $database): mysqli
{
    $m = new mysqli($host, $user, $password, $database, $port);
    $m->set_charset('utf8mb4');
    return $m;
}

mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

try {
    $m = connect($host, $port, $user, $password, $database);

    eq(one($m, "SELECT 1 + 1")[0], "2", "1 + 1");
    eq(one($m, "SELECT DATABASE()")[0], $database, "DATABASE()");
    eq(str_starts_with(one($m, "SELECT CURRENT_USER()")[0], "$user@"), true, "CURRENT_USER()");
    eq(str_contains($m->server_info, "MariaDB"), true, "server_info");
    eq(one($m, "SELECT @@character_set_client")[0], "utf8mb4", "charset");

    // Escaping in the client.
    $s = "h\u{e9}llo \u{2603} \u{1F600} 'quoted' \\ back";
    eq(one($m, "SELECT '" . $m->real_escape_string($s) . "'")[0], $s, "escaped string");

    $m->query("DROP TABLE IF EXISTS $table");
    $m->query("CREATE TABLE $table (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, "
        . "data LONGBLOB, amount DECIMAL(10,2)) ENGINE=InnoDB");

    // One prepared INSERT, executed 100 times.
    $ins = $m->prepare("INSERT INTO $table (id, name, amount) VALUES (?, ?, ?)");
    $id = 0;
    $name = '';
    $amount = 0.0;
    $ins->bind_param('isd', $id, $name, $amount);
    for ($id = 1; $id <= 100; $id++) {
        $name = "name-$id-\u{e9}\u{1F600}";
        $amount = $id / 4;
        $ins->execute();
        eq($ins->affected_rows, 1, "prepared insert $id");
    }
    $ins->close();
    eq(one($m, "SELECT COUNT(*), SUM(id) FROM $table"), ["100", "5050"], "insert many");

    // Prepared SELECT with a result (binary protocol), executed repeatedly.
    $sel = $m->prepare("SELECT id, name, amount, NULL FROM $table WHERE id = ?");
    foreach ([1, 50, 100] as $want) {
        $sel->bind_param('i', $want);
        $sel->execute();
        $res = $sel->get_result();
        $row = $res->fetch_row();
        eq($row, [$want, "name-$want-\u{e9}\u{1F600}", sprintf("%.2f", $want / 4), null], "prepared select $want");
        $res->free();
    }
    $sel->close();

    // A 1 MiB blob with send_long_data.
    $blob = '';
    for ($i = 0; $i < (1 << 20); $i++) {
        $blob .= chr(($i * 7) % 256);
    }
    $up = $m->prepare("UPDATE $table SET data = ? WHERE id = 7");
    $null = null;
    $up->bind_param('b', $null);
    foreach (str_split($blob, 256 * 1024) as $chunk) {
        $up->send_long_data(0, $chunk);
    }
    $up->execute();
    $up->close();
    eq(one($m, "SELECT data FROM $table WHERE id = 7")[0] === $blob, true, "1 MiB blob (text protocol)");
    $st = $m->prepare("SELECT data FROM $table WHERE id = ?");
    $seven = 7;
    $st->bind_param('i', $seven);
    $st->execute();
    $st->bind_result($got);
    $st->fetch();
    eq($got === $blob, true, "1 MiB blob (binary protocol)");
    $st->close();

    // Many rows.
    $r = $m->query("SELECT seq FROM seq_1_to_20000");
    $n = 0;
    $ok = true;
    while ($row = $r->fetch_row()) {
        $n++;
        $ok = $ok && ($row[0] == $n);
    }
    eq([$n, $ok], [20000, true], "20000 rows in order");

    // Errors.
    expect_error($m, "SELEC 1", 1064, "syntax error");
    eq(one($m, "SELECT 3")[0], "3", "usable after 1064");
    expect_error($m, "INSERT INTO $table (id) VALUES (1)", 1062, "duplicate key");
    eq(one($m, "SELECT COUNT(*) FROM $table")[0], "100", "usable after 1062");
    try {
        $m->prepare("SELECT * FROM no_such_table_e2e WHERE id = ?");
        throw new RuntimeException("prepare of a missing table: no error");
    } catch (mysqli_sql_exception $e) {
        eq($e->getCode(), 1146, "prepare error");
    }
    eq(one($m, "SELECT 4")[0], "4", "usable after a failed prepare");

    // Transactions, seen from a second connection.
    $other = connect($host, $port, $user, $password, $database);
    $m->begin_transaction();
    $m->query("INSERT INTO $table (id, name) VALUES (1000, 'tx')");
    eq(one($m, "SELECT COUNT(*) FROM $table")[0], "101", "own uncommitted row");
    eq(one($other, "SELECT COUNT(*) FROM $table")[0], "100", "other's uncommitted row invisible");
    $m->rollback();
    eq(one($m, "SELECT COUNT(*) FROM $table")[0], "100", "rolled back");
    $m->begin_transaction();
    $p = $m->prepare("INSERT INTO $table (id, name) VALUES (?, 'tx')");
    $k = 1001;
    $p->bind_param('i', $k);
    $p->execute();
    $p->close();
    eq(one($other, "SELECT COUNT(*) FROM $table")[0], "100", "invisible before commit");
    $m->commit();
    eq(one($other, "SELECT COUNT(*) FROM $table")[0], "101", "visible after commit");
    $m->autocommit(false);
    $m->query("DELETE FROM $table WHERE id = 1001");
    eq(one($other, "SELECT COUNT(*) FROM $table")[0], "101", "autocommit off: delete invisible");
    $m->rollback();
    $m->autocommit(true);
    eq(one($other, "SELECT COUNT(*) FROM $table")[0], "101", "delete rolled back");

    // Session state per connection.
    $m->query("SET @v = 'mine'");
    $other->query("SET @v = 'theirs'");
    $m->query("SET SESSION sql_mode = 'ANSI_QUOTES'");
    eq(one($m, "SELECT @v")[0], "mine", "user variable");
    eq(one($other, "SELECT @v")[0], "theirs", "other's user variable");
    eq(one($m, "SELECT @@sql_mode")[0], "ANSI_QUOTES", "sql_mode");
    eq(one($other, "SELECT @@sql_mode")[0] !== "ANSI_QUOTES", true, "other's sql_mode");
    $other->close();

    // Default schema: COM_INIT_DB and USE.
    $m->select_db("information_schema");
    eq(one($m, "SELECT DATABASE()")[0], "information_schema", "select_db");
    $m->query("USE $database");
    eq(one($m, "SELECT DATABASE()")[0], $database, "USE");

    // Multi-statement query.
    $m->multi_query("SELECT 1; SELECT 2, 3; SELECT 'x'");
    $sets = [];
    do {
        if ($r = $m->store_result()) {
            $sets[] = $r->fetch_all();
            $r->free();
        }
    } while ($m->more_results() && $m->next_result());
    eq($sets, [[["1"]], [["2", "3"]], [["x"]]], "multi_query");

    eq($m->ping(), true, "ping");
    $m->query("DROP TABLE $table");
    $m->close();
} catch (Throwable $e) {
    echo get_class($e) . ": " . $e->getMessage() . "\n" . $e->getTraceAsString() . "\n";
    echo "FAILED (mysqli, PHP " . PHP_VERSION . ")\n";
    exit(1);
}
echo "driver mysqli (PHP " . PHP_VERSION . ")\n";
echo "OK $checks checks\n";

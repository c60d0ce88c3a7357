<?php
// PHP PDO (pdo_mysql)'s basic flow through the funnel (driven by
// tests/e2e_clients.rs), with emulated or native (server-side) prepares.
//
// usage: php pdo_flow.php MODE HOST PORT USER PASSWORD DATABASE TABLE
//   MODE: emulated | native
//
// Prints "OK <n> checks" and exits 0 when every check passed; prints the
// failure and exits 1 otherwise; prints "SKIP: <reason>" and exits 77 when
// pdo_mysql is missing.

if (!extension_loaded('pdo_mysql')) {
    echo "SKIP: the PHP pdo_mysql extension is not loaded\n";
    exit(77);
}
if ($argc != 8 || !in_array($argv[1], ['emulated', 'native'], true)) {
    fwrite(STDERR, "usage: php pdo_flow.php emulated|native HOST PORT USER PASSWORD DATABASE TABLE\n");
    exit(2);
}
[, $mode, $host, $port, $user, $password, $database, $table] = $argv;
$emulated = $mode === 'emulated';

require __DIR__ . '/checks.php';

function connect(string $host, string $port, string $user, string $password, string $database, bool $emulated): PDO
{
    return new PDO(
        "mysql:host=$host;port=$port;dbname=$database;charset=utf8mb4",
        $user,
        $password,
        [
            PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
            PDO::ATTR_EMULATE_PREPARES => $emulated,
            // Strings everywhere, whichever protocol the mode uses.
            PDO::ATTR_STRINGIFY_FETCHES => true,
        ]
    );
}

function one(PDO $db, string $sql, array $params = []): array
{
    $st = $db->prepare($sql);
    $st->execute($params);
    $rows = $st->fetchAll(PDO::FETCH_NUM);
    if (count($rows) != 1) {
        throw new RuntimeException("$sql: " . count($rows) . " rows");
    }
    return $rows[0];
}

function expect_error(PDO $db, string $sql, int $code, string $what): void
{
    try {
        $db->exec($sql);
    } catch (PDOException $e) {
        eq($e->errorInfo[1] ?? null, $code, "$what: " . $e->getMessage());
        return;
    }
    throw new RuntimeException("$what: no error");
}

try {
    $db = connect($host, $port, $user, $password, $database, $emulated);
    eq((bool)$db->getAttribute(PDO::ATTR_EMULATE_PREPARES), $emulated, "prepare mode");

    eq(one($db, "SELECT 1 + 1"), ["2"], "1 + 1");
    eq(one($db, "SELECT DATABASE()"), [$database], "DATABASE()");
    eq(str_starts_with(one($db, "SELECT CURRENT_USER()")[0], "$user@"), true, "CURRENT_USER()");
    eq(str_contains($db->getAttribute(PDO::ATTR_SERVER_VERSION), "MariaDB"), true, "server version");
    eq(one($db, "SELECT @@character_set_client"), ["utf8mb4"], "charset");

    $s = "h\u{e9}llo \u{2603} \u{1F600} 'quoted' \\ back";
    eq(one($db, "SELECT ?, ?, ?", [$s, null, 42]), [$s, null, "42"], "parameters echo");
    eq(one($db, "SELECT :a, :b", [':a' => 'named', ':b' => 7]), ["named", "7"], "named parameters");
    eq($db->quote("it's"), "'it\\'s'", "quote");

    $db->exec("DROP TABLE IF EXISTS $table");
    $db->exec("CREATE TABLE $table (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, "
        . "data LONGBLOB, amount DECIMAL(10,2)) ENGINE=InnoDB");

    $ins = $db->prepare("INSERT INTO $table (id, name, amount) VALUES (?, ?, ?)");
    for ($id = 1; $id <= 100; $id++) {
        $ins->execute([$id, "name-$id-\u{e9}\u{1F600}", sprintf("%.2f", $id / 4)]);
        eq($ins->rowCount(), 1, "insert $id");
    }
    eq(one($db, "SELECT COUNT(*), SUM(id) FROM $table"), ["100", "5050"], "insert many");
    $sel = $db->prepare("SELECT id, name, amount, NULL FROM $table WHERE id = ?");
    foreach ([1, 50, 100] as $want) {
        $sel->execute([$want]);
        eq($sel->fetchAll(PDO::FETCH_NUM), [["$want", "name-$want-\u{e9}\u{1F600}", sprintf("%.2f", $want / 4), null]], "select $want");
    }

    // A 1 MiB blob as a LOB parameter.
    $blob = '';
    for ($i = 0; $i < (1 << 20); $i++) {
        $blob .= chr(($i * 7) % 256);
    }
    $up = $db->prepare("UPDATE $table SET data = :d WHERE id = 7");
    $up->bindValue(':d', $blob, PDO::PARAM_LOB);
    $up->execute();
    eq(one($db, "SELECT data FROM $table WHERE id = ?", [7])[0] === $blob, true, "1 MiB blob");

    $st = $db->query("SELECT seq FROM seq_1_to_20000");
    $n = 0;
    $ok = true;
    while ($row = $st->fetch(PDO::FETCH_NUM)) {
        $n++;
        $ok = $ok && ($row[0] === (string)$n);
    }
    eq([$n, $ok], [20000, true], "20000 rows in order");

    // Errors.
    expect_error($db, "SELEC 1", 1064, "syntax error");
    eq(one($db, "SELECT 3"), ["3"], "usable after 1064");
    expect_error($db, "INSERT INTO $table (id) VALUES (1)", 1062, "duplicate key");
    try {
        $ins->execute([1, 'dup', '0']);
        throw new RuntimeException("prepared duplicate insert: no error");
    } catch (PDOException $e) {
        eq($e->errorInfo[1], 1062, "prepared duplicate key");
    }
    eq(one($db, "SELECT COUNT(*) FROM $table"), ["100"], "usable after 1062");

    // Transactions, seen from a second connection.
    $other = connect($host, $port, $user, $password, $database, $emulated);
    $db->beginTransaction();
    $ins->execute([1000, 'tx', '0']);
    eq(one($db, "SELECT COUNT(*) FROM $table"), ["101"], "own uncommitted row");
    eq(one($other, "SELECT COUNT(*) FROM $table"), ["100"], "other's uncommitted row invisible");
    $db->rollBack();
    eq(one($db, "SELECT COUNT(*) FROM $table"), ["100"], "rolled back");
    $db->beginTransaction();
    $ins->execute([1001, 'tx', '0']);
    eq(one($other, "SELECT COUNT(*) FROM $table"), ["100"], "invisible before commit");
    $db->commit();
    eq(one($other, "SELECT COUNT(*) FROM $table"), ["101"], "visible after commit");

    // Session state per connection.
    $db->exec("SET @v = 'mine'");
    $other->exec("SET @v = 'theirs'");
    $db->exec("SET SESSION sql_mode = 'ANSI_QUOTES'");
    eq(one($db, "SELECT @v"), ["mine"], "user variable");
    eq(one($other, "SELECT @v"), ["theirs"], "other's user variable");
    eq(one($db, "SELECT @@sql_mode"), ["ANSI_QUOTES"], "sql_mode");
    eq(one($other, "SELECT @@sql_mode")[0] !== "ANSI_QUOTES", true, "other's sql_mode");
    $other = null;

    $db->exec("USE information_schema");
    eq(one($db, "SELECT DATABASE()"), ["information_schema"], "USE");
    $db->exec("USE $database");
    eq(one($db, "SELECT DATABASE()"), [$database], "USE back");

    if (!$emulated) {
        // Native mode really prepared on the server (this session is pinned
        // to its backend connection, whose counters these are).
        $r = one($db, "SHOW SESSION STATUS LIKE 'Com_stmt_prepare'");
        eq((int)$r[1] > 0, true, "server-side prepares happened");
    }

    $db->exec("DROP TABLE $table");
    $db = null;
} catch (Throwable $e) {
    echo get_class($e) . ": " . $e->getMessage() . "\n" . $e->getTraceAsString() . "\n";
    echo "FAILED (pdo_mysql $mode, PHP " . PHP_VERSION . ")\n";
    exit(1);
}
echo "driver pdo_mysql $mode (PHP " . PHP_VERSION . ")\n";
echo "OK $checks checks\n";

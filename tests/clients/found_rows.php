<?php
// CLIENT_FOUND_ROWS through the funnel (driven by tests/e2e_clients.rs):
// clients that ask for it (PDO::MYSQL_ATTR_FOUND_ROWS, MYSQLI_CLIENT_FOUND_ROWS)
// and clients that do not, interleaved on one funnel, each statement's
// affected-row count compared with a direct connection to mysqld with the
// same flag; with mysqli also after COM_CHANGE_USER.
//
// usage: php found_rows.php pdo|mysqli HOST FUNNEL_PORT DIRECT_PORT USER PASSWORD USER2 PASSWORD2 DATABASE TABLE
//
// Prints "OK <n> checks" and exits 0 when every check passed; prints the
// failure and exits 1 otherwise; prints "SKIP: <reason>" and exits 77 when
// the extension is missing.

if ($argc != 11 || !in_array($argv[1], ['pdo', 'mysqli'], true)) {
    fwrite(STDERR, "usage: php found_rows.php pdo|mysqli HOST FUNNEL_PORT DIRECT_PORT USER PASSWORD USER2 PASSWORD2 DATABASE TABLE\n");
    exit(2);
}
[, $api, $host, $funnelPort, $directPort, $user, $password, $user2, $password2, $database, $table] = $argv;
$extension = $api === 'pdo' ? 'pdo_mysql' : 'mysqli';
if (!extension_loaded($extension)) {
    echo "SKIP: the PHP $extension extension is not loaded\n";
    exit(77);
}
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

require __DIR__ . '/checks.php';

/** One connection of either API, with or without CLIENT_FOUND_ROWS. */
final class Client
{
    public function __construct(public readonly string $name, public readonly bool $foundRows, private PDO|mysqli $conn)
    {
    }

    public static function open(string $api, string $name, bool $foundRows, string $host, string $port, string $user, string $password, string $database): Client
    {
        if ($api === 'pdo') {
            $conn = new PDO("mysql:host=$host;port=$port;dbname=$database;charset=utf8mb4", $user, $password, [
                PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
                // Server-side prepares: their OK packets are mysqld's too.
                PDO::ATTR_EMULATE_PREPARES => false,
                PDO::MYSQL_ATTR_FOUND_ROWS => $foundRows,
            ]);
        } else {
            $conn = mysqli_init();
            $conn->real_connect($host, $user, $password, $database, (int)$port, null, $foundRows ? MYSQLI_CLIENT_FOUND_ROWS : 0);
            $conn->set_charset('utf8mb4');
        }
        return new Client($name, $foundRows, $conn);
    }

    /** Affected rows of a text-protocol statement. */
    public function exec(string $sql): int
    {
        if ($this->conn instanceof PDO) {
            return $this->conn->exec($sql);
        }
        $this->conn->query($sql);
        return $this->conn->affected_rows;
    }

    /** Affected rows of a prepared statement (COM_STMT_EXECUTE). */
    public function execPrepared(string $sql, array $params): int
    {
        if ($this->conn instanceof PDO) {
            $st = $this->conn->prepare($sql);
            $st->execute($params);
            return $st->rowCount();
        }
        $st = $this->conn->prepare($sql);
        $st->execute($params);
        $n = $st->affected_rows;
        $st->close();
        return $n;
    }

    public function changeUser(string $user, string $password, string $database): void
    {
        $this->conn->change_user($user, $password, $database);
    }
}

try {
    $reset = Client::open($api, 'reset', false, $host, $directPort, $user, $password, $database);
    $reset->exec("CREATE TABLE $table (id INT PRIMARY KEY, v INT) ENGINE=InnoDB");
    $reset->exec("INSERT INTO $table VALUES (1, 10), (2, 20), (3, 30)");
    $fresh = fn () => $reset->exec("UPDATE $table SET v = id * 10");

    // Through the funnel: the two kinds alternate; each compares with the
    // direct connection of its kind.
    $clients = [];
    foreach ([true, false, true, false] as $i => $on) {
        $clients[] = Client::open($api, "funnel #$i", $on, $host, $funnelPort, $user, $password, $database);
    }
    $direct = [
        0 => Client::open($api, 'direct', false, $host, $directPort, $user, $password, $database),
        1 => Client::open($api, 'direct found_rows', true, $host, $directPort, $user, $password, $database),
    ];
    $statements = [
        "UPDATE $table SET v = v WHERE id = 1",
        "UPDATE $table SET v = 20 WHERE id IN (1, 2, 3)",
        "UPDATE $table SET v = v + 1 WHERE id = 3",
        "UPDATE $table SET v = v WHERE id = 99",
        "INSERT INTO $table VALUES (2, 20) ON DUPLICATE KEY UPDATE v = VALUES(v)",
    ];
    $round = function (string $when) use ($clients, $direct, $statements, $fresh, $table): void {
        foreach ($statements as $sql) {
            foreach ($clients as $c) {
                $fresh();
                $got = $c->exec($sql);
                $fresh();
                eq($got, $direct[(int)$c->foundRows]->exec($sql), "$when, {$c->name}: $sql");
            }
        }
        foreach ($clients as $c) {
            $sql = "UPDATE $table SET v = ? WHERE id = ?";
            $fresh();
            $got = $c->execPrepared($sql, [20, 2]);
            eq($got, $c->foundRows ? 1 : 0, "$when, {$c->name}: prepared $sql (20, 2)");
            $fresh();
            eq($got, $direct[(int)$c->foundRows]->execPrepared($sql, [20, 2]), "$when, {$c->name}: prepared, as direct");
            // The statement the flag is about, spelled out.
            eq($c->exec("UPDATE $table SET v = v WHERE id = 1"), $c->foundRows ? 1 : 0, "$when, {$c->name}: same value");
        }
    };
    $round('after login');
    if ($api === 'mysqli') {
        // COM_CHANGE_USER keeps the connection's flag, as on mysqld.
        foreach ([...$clients, ...$direct] as $c) {
            $c->changeUser($user2, $password2, $database);
        }
        $round('after change_user');
    }
    $reset->exec("DROP TABLE $table");
} catch (Throwable $e) {
    echo "FAILED after $checks checks: " . get_class($e) . ": " . $e->getMessage() . "\n";
    exit(1);
}
echo "OK $checks checks\n";

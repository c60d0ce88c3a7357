<?php
// PHP mysqli with a server-side read-only cursor (COM_STMT_EXECUTE opens it,
// COM_STMT_FETCH reads it one row at a time), driven by
// tests/e2e_clients.rs, which checks the funnel's pins between the steps.
//
// usage: php mysqli_cursor.php HOST PORT USER PASSWORD DATABASE
//
// At each step it prints "PAUSE <step> <connection id>" and waits for a line
// on stdin before going on. Prints "OK <n> checks" and exits 0 when every
// check passed; prints the failure and exits 1 otherwise; prints
// "SKIP: <reason>" and exits 77 when the mysqli extension is missing.

if (!extension_loaded('mysqli')) {
    echo "SKIP: the PHP mysqli extension is not loaded\n";
    exit(77);
}
if ($argc != 6) {
    fwrite(STDERR, "usage: php mysqli_cursor.php HOST PORT USER PASSWORD DATABASE\n");
    exit(2);
}
[, $host, $port, $user, $password, $database] = $argv;

require __DIR__ . '/checks.php';

function pause(string $step, mysqli $m): void
{
    echo "PAUSE $step {$m->thread_id}\n";
    fflush(STDOUT);
    if (fgets(STDIN) === false) {
        throw new RuntimeException("no go-ahead after $step");
    }
}

/// COM_STMT_FETCH commands the connection's (backend) session has run.
function fetches(mysqli $m): int
{
    $r = $m->query("SHOW SESSION STATUS LIKE 'Com_stmt_fetch'");
    $n = (int)$r->fetch_row()[1];
    $r->free();
    return $n;
}

/// Fetches up to $n rows of the bound statement: [[seq, name], ...].
function fetch_rows(mysqli_stmt $st, int $n, &$seq, &$name): array
{
    $rows = [];
    while (count($rows) < $n && $st->fetch()) {
        $rows[] = [$seq, $name];
    }
    return $rows;
}

function want_rows(int $from, int $to): array
{
    $rows = [];
    for ($k = $from; $k <= $to; $k++) {
        $rows[] = [$k, "row-$k"];
    }
    return $rows;
}

function cursor_stmt(mysqli $m): mysqli_stmt
{
    $st = $m->prepare("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_200 WHERE seq <= ? ORDER BY seq");
    $st->attr_set(MYSQLI_STMT_ATTR_CURSOR_TYPE, MYSQLI_CURSOR_TYPE_READ_ONLY);
    // mysqlnd refuses MYSQLI_STMT_ATTR_PREFETCH_ROWS ("Not implemented"):
    // it fetches one row per COM_STMT_FETCH.
    return $st;
}

mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

try {
    $m = new mysqli($host, $user, $password, $database, (int)$port);

    // Read 50 rows through a cursor.
    $st = cursor_stmt($m);
    $limit = 50;
    $st->bind_param('i', $limit);
    $st->execute();
    $st->bind_result($seq, $name);
    pause("opened", $m);
    $before = fetches($m);
    eq(fetch_rows($st, 20, $seq, $name), want_rows(1, 20), "first 20 rows");
    $fetched = fetches($m) - $before;
    eq($fetched >= 20, true, "COM_STMT_FETCH commands for 20 rows ($fetched)");
    echo "fetches $fetched\n";
    pause("midway", $m);
    eq(fetch_rows($st, 100, $seq, $name), want_rows(21, 50), "the other 30 rows, then no more");
    pause("exhausted", $m);

    // Executed again and abandoned with COM_STMT_RESET.
    $st->execute();
    eq(fetch_rows($st, 3, $seq, $name), want_rows(1, 3), "3 rows before reset");
    pause("reopened", $m);
    $st->reset();
    pause("reset", $m);
    $limit = 4;
    $st->execute();
    eq(fetch_rows($st, 100, $seq, $name), want_rows(1, 4), "after reset");
    pause("short", $m);

    // Executed again and closed half-way.
    $limit = 50;
    $st->execute();
    eq(fetch_rows($st, 2, $seq, $name), want_rows(1, 2), "2 rows before close");
    $st->close();
    pause("closed", $m);
    $r = $m->query("SELECT 'still usable'");
    eq($r->fetch_row(), ['still usable'], "a query after closing an open cursor");
    $r->free();

    // An empty cursor, and one left open when the connection goes.
    $st = cursor_stmt($m);
    $zero = 0;
    $st->bind_param('i', $zero);
    $st->execute();
    $st->bind_result($seq, $name);
    eq($st->fetch(), null, "empty cursor");
    $st->close();
    $st = cursor_stmt($m);
    $st->bind_param('i', $limit);
    $st->execute();
    $st->bind_result($seq, $name);
    eq(fetch_rows($st, 1, $seq, $name), want_rows(1, 1), "a cursor left open");
    pause("leaving", $m);
    $m->close();
} catch (Throwable $e) {
    echo get_class($e) . ": " . $e->getMessage() . "\n" . $e->getTraceAsString() . "\n";
    echo "FAILED (mysqli cursor, PHP " . PHP_VERSION . ")\n";
    exit(1);
}
echo "OK $checks checks\n";

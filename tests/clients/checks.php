<?php
// The check helper the PHP client scripts share: each check that holds is
// counted in $checks; one that fails throws with what was expected.

$checks = 0;

function eq($got, $want, string $what): void
{
    global $checks;
    if ($got !== $want) {
        throw new RuntimeException("$what: got " . var_export($got, true) . ", want " . var_export($want, true));
    }
    $checks++;
}

#!/usr/bin/env python3
"""Per-test results of the client libraries' suites, for scripts/suites/run.sh.

  report.py junit  RESULTS.xml SUITE_DIR       -> "name<TAB>pass|fail|skip" lines
  report.py poku   OUTPUT.log                  -> "name<TAB>pass|fail" lines
  report.py message junit RESULTS.xml NAME     -> first lines of NAME's failure
  report.py message poku  OUTPUT.log  NAME     -> first lines of NAME's failure
  report.py candidates DIRECT.tsv FUNNEL.tsv   -> names that pass directly and
                                                  fail through the funnel
  report.py summary RESULTS_DIR                -> the summary table (reads
                                                  RESULTS_DIR/<suite>.{direct,funnel}.tsv,
                                                  <suite>.regressions, <suite>.flaky)

Names: pytest node ids for PyMySQL (path::Class::test), test file paths for
mysql2 (poku runs and reports each test file as one unit, in its own process).
Only the standard library is used.
"""

import os
import re
import sys
import xml.etree.ElementTree as ET

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MESSAGE_LINES = 12


def strip_ansi(s):
    return ANSI.sub("", s)


def junit_cases(path, suite_dir):
    """(node id, status, message) for each <testcase> of a pytest junit file."""
    tree = ET.parse(path)
    for case in tree.iter("testcase"):
        classname = case.get("classname", "")
        name = case.get("name", "")
        parts = classname.split(".")
        # The longest dotted prefix that is a .py file is the module, the rest
        # the class: pymysql.tests.test_basic.TestConversion
        # -> pymysql/tests/test_basic.py::TestConversion
        nodeid = None
        for i in range(len(parts), 0, -1):
            rel = "/".join(parts[:i]) + ".py"
            if os.path.exists(os.path.join(suite_dir, rel)):
                nodeid = "::".join([rel] + parts[i:] + [name])
                break
        if nodeid is None:
            nodeid = classname + "::" + name
        status, message = "pass", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status = "fail"
                text = (child.get("message") or "") + "\n" + (child.text or "")
                message += text
            elif child.tag == "skipped" and status == "pass":
                status = "skip"
        yield nodeid, status, message


def poku_cases(path):
    """(file, status) from the output of poku's compact reporter."""
    seen = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^\s*(PASS|FAIL)\s+(\S+\.(?:m?[jt]s|c[jt]s|mts|ts))\s*$", strip_ansi(line))
            if m:
                seen[m.group(2)] = "pass" if m.group(1) == "PASS" else "fail"
    return seen.items()


def poku_message(path, name):
    """The failure output poku printed for one test file (its error list)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [strip_ansi(line.rstrip("\n")) for line in f]
    # The error list: "N) file" then the file's output, until the next "N) ".
    out, inside = [], False
    for line in lines:
        if re.match(r"^\s*\d+\)\s+", line):
            inside = line.strip().endswith(name)
            continue
        if re.match(r"^\s*\d+ test file\(s\) (passed|failed)", line):
            inside = False
        if inside:
            out.append(line)
    interesting = [
        l.rstrip() for l in out
        if l.strip() and not re.match(r"^[─-]+$", l.strip())
        and not l.strip().startswith("●")  # per-test timing lines
        and not re.match(r"^at |^\}$", l.strip())  # stack frames
    ]
    # From the first line that says what failed (with the test title before
    # it): the assertion, its operator, actual and expected values.
    first = next(
        (i for i, l in enumerate(interesting)
         if re.search(r"✘|Error\b|Error:|Timeout|timed out", l)),
        None,
    )
    if first is None:
        return [l.strip() for l in interesting[:MESSAGE_LINES]]
    title = next(
        (interesting[i].strip() for i in range(first - 1, -1, -1)
         if interesting[i].strip().startswith("◌")),
        None,
    )
    picked = [l.strip() for l in interesting[first:first + MESSAGE_LINES]]
    return ([title] if title else []) + picked


def read_tsv(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, _, status = line.rstrip("\n").partition("\t")
                if name:
                    out[name] = status
    return out


def read_list(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def cmd_summary(results_dir):
    suites = sorted(
        {f.split(".")[0] for f in os.listdir(results_dir) if f.endswith(".direct.tsv")}
    )
    rows = [("suite", "tests", "passed direct", "passed funnel", "regressions")]
    regressions_total = 0
    details = []
    for suite in suites:
        direct = read_tsv(os.path.join(results_dir, suite + ".direct.tsv"))
        funnel = read_tsv(os.path.join(results_dir, suite + ".funnel.tsv"))
        regs = read_list(os.path.join(results_dir, suite + ".regressions"))
        flaky = read_list(os.path.join(results_dir, suite + ".flaky"))
        names = set(direct) | set(funnel)
        rows.append(
            (
                suite,
                str(len(names)),
                str(sum(1 for s in direct.values() if s == "pass")),
                str(sum(1 for s in funnel.values() if s == "pass")),
                str(len(regs)),
            )
        )
        regressions_total += len(regs)
        details.append((suite, regs, flaky))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for suite, regs, flaky in details:
        if regs:
            print(f"\n{suite}: {len(regs)} regression(s) (pass directly, fail through the funnel, also when re-run alone):")
            for r in regs:
                print(f"  {r}")
        if flaky:
            print(f"\n{suite}: {len(flaky)} failed through the funnel in the full run but passed re-run alone (not counted):")
            for r in flaky:
                print(f"  {r}")
    return regressions_total


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "junit":
        for name, status, _ in junit_cases(argv[2], argv[3]):
            print(f"{name}\t{status}")
    elif cmd == "poku":
        for name, status in poku_cases(argv[2]):
            print(f"{name}\t{status}")
    elif cmd == "message":
        kind, path, name = argv[2], argv[3], argv[4]
        if kind == "junit":
            suite_dir = argv[5] if len(argv) > 5 else "."
            for n, status, message in junit_cases(path, suite_dir):
                if n == name and status == "fail":
                    lines = [l for l in message.splitlines() if l.strip()]
                    # pytest's "E   ..." lines are the exception: show those,
                    # else the message and the start of the traceback.
                    e_lines = [l[1:].strip() for l in lines if l.startswith("E ")]
                    for l in (e_lines or lines)[:MESSAGE_LINES]:
                        print(l)
        else:
            for l in poku_message(path, name):
                print(l)
    elif cmd == "candidates":
        direct, funnel = read_tsv(argv[2]), read_tsv(argv[3])
        for name in sorted(direct):
            # A test missing from the funnel run (crashed runner) counts as failed.
            if direct[name] == "pass" and funnel.get(name, "fail") == "fail":
                print(name)
    elif cmd == "summary":
        n = cmd_summary(argv[2])
        return 0 if n == 0 else 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

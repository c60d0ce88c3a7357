#!/usr/bin/env python3
"""Self cost (Ir) of a callgrind dump (--dump-instr=no) grouped by source
file and by (file, function), following inlined code (fi=/fe=), because the
funnel's event loop is inlined into a few big functions and
callgrind_annotate then shows nearly everything under one name.
usage: callgrind-by-file.py callgrind.out.N [requests]"""
import re, sys, collections
path = sys.argv[1]
reqs = int(sys.argv[2]) if len(sys.argv) > 2 else 0
names = {}
def name(kind, s):
    m = re.match(r'\((\d+)\)(?: (.*))?', s)
    if not m:
        return s
    k = (kind, m.group(1))
    if m.group(2) is not None:
        names[k] = m.group(2)
    return names.get(k, '?')
by_file = collections.Counter(); by_fn = collections.Counter(); by_line = collections.Counter()
fl = fi = fn = '?'; skip_next = False; last = 0; total = 0
for line in open(path, errors='replace'):
    line = line.rstrip('\n')
    if not line or line[0] in '#':
        continue
    if line.startswith(('fl=')):
        fl = fi = name('fl', line[3:]); continue
    if line.startswith(('fi=', 'fe=')):
        fi = name('fl', line[3:]); continue
    if line.startswith('fn='):
        fn = name('fn', line[3:]); fi = fl; continue
    if line.startswith(('cfn=', 'cfl=', 'cfi=', 'cob=', 'ob=')):
        if line.startswith(('cfn=', 'cfl=', 'cfi=')):
            # register names for the ids
            kind = 'fn' if line.startswith('cfn=') else 'fl'
            name(kind, line[4:])
        continue
    if line.startswith('calls='):
        skip_next = True; continue
    if line[0] in '0123456789+-*':
        parts = line.split()
        p = parts[0]
        if p == '*': ln = last
        elif p[0] == '+': ln = last + int(p[1:])
        elif p[0] == '-': ln = last - int(p[1:])
        else: ln = int(p)
        last = ln
        if skip_next:
            skip_next = False; continue
        ir = int(parts[1]) if len(parts) > 1 else 0
        total += ir
        by_file[fi] += ir; by_fn[(fi, fn)] += ir; by_line[(fi, ln)] += ir
        continue
def short(f):
    f = re.sub(r'^/rustc/[0-9a-f]+/', 'rust:', f)
    f = re.sub(r'^.*/\.cargo/registry/src/[^/]+/', 'crate:', f)
    f = re.sub(r'^/tmp/perf-wt/', '', f)
    return f
per = (lambda x: f"{x/reqs:8.0f}/req") if reqs else (lambda x: '')
print(f"total self Ir {total:,}" + (f" = {total/reqs:.0f} per request ({reqs} requests)" if reqs else ''))
print("\n== by source file (inlined code counted where it is written)")
for f, ir in by_file.most_common(25):
    print(f"{100*ir/total:6.2f}% {per(ir)}  {short(f)}")
print("\n== by source line, top 30")
for (f, ln), ir in by_line.most_common(30):
    print(f"{100*ir/total:6.2f}% {per(ir)}  {short(f)}:{ln}")

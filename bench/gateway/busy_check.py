#!/usr/bin/env python3
"""Runs a load generator and reports the CPU that everything else took meanwhile.

usage: busy_check.py LABEL OUT.jsonl SERVER_PIDS CMD [ARGS...]

SERVER_PIDS (comma separated) are the servers under test: their CPU, like the load generator's,
is ours. The rest of /proc/stat's busy time is a neighbour's, which skews the numbers on a shared
2-core machine; the benchmark table says so. Exits with the command's status.
"""
import json
import os
import resource
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def process_cpu_s(pid):
    # Fields after the command name: state is the first, utime the 12th, stime the 13th.
    rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


label, out, pids, cmd = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
servers0 = sum(process_cpu_s(p) for p in pids)
busy0, wall0 = machine_busy_s(), time.time()
status = subprocess.call(cmd)
busy1, wall1 = machine_busy_s(), time.time()
servers = sum(process_cpu_s(p) for p in pids) - servers0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
ours = usage.ru_utime + usage.ru_stime + servers
other = max(0.0, busy1 - busy0 - ours)
share = other / ((wall1 - wall0) * os.cpu_count())
print(f"{label}: {wall1 - wall0:.1f} s wall, load generator + servers {ours:.1f} CPU s, other "
      f"processes {other:.1f} CPU s ({100 * share:.1f}% of the machine)", file=sys.stderr)
with open(out, "a") as f:
    f.write(json.dumps({"label": label, "wall_s": wall1 - wall0, "ours_cpu_s": ours,
                        "other_cpu_s": other, "other_share": share}) + "\n")
sys.exit(status)

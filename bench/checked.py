#!/usr/bin/env python3
"""Runs a command and records how much CPU other processes took meanwhile.

usage: checked.py LABEL OUT.jsonl CMD [ARGS...]

From /proc/stat minus our children's rusage: on a shared 2-core machine a busy neighbour skews the
ratios, so the benchmark tables say so. Exits with the command's status.
"""
import json
import os
import resource
import subprocess
import sys
import time


def busy():
    f = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


label, out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
b0, t0 = busy(), time.time()
rc = subprocess.call(cmd)
b1, t1 = busy(), time.time()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
ours = ru.ru_utime + ru.ru_stime
other = max(0.0, b1 - b0 - ours)
share = other / ((t1 - t0) * os.cpu_count())
print(f"{label}: {t1 - t0:.0f} s wall, our CPU {ours:.0f} s, other processes {other:.1f} CPU s "
      f"({100 * share:.1f}% of the machine)", file=sys.stderr)
with open(out, "a") as f:
    f.write(json.dumps(dict(label=label, wall_s=t1 - t0, other_cpu_s=other, other_share=share)) + "\n")
sys.exit(rc)

"""What the benchmarks here share: the wall time of one command run as a whole process, and the plain run of a
notebook (nbclient, no grader) that the notebook benchmarks compare the grader with."""
from __future__ import annotations

import subprocess
import time


def timed(cmd, env=None, cwd=None) -> float:
    """Seconds ``cmd`` took, its output discarded; a failure stops the benchmark with the end of its stderr."""
    t = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:4]))} failed:\n{proc.stderr[-3000:]}")
    return elapsed


#: ``python -c PLAIN <notebook> <folder>``: the notebook executed by nbclient in ``folder``, nothing else
PLAIN = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
"""

"""What the benchmarks here share: the wall time of one command run as a whole process, and the plain run of a
notebook (nbclient, no grader) that the notebook benchmarks compare the grader with."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path


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


def notebook_folders(notebook: Path, tools: Path) -> tuple[Path, Path]:
    """A fresh work folder holding the notebook twice: as a class of one student (``work/subs/ref/``, for
    ``grader grade work/subs``) and as a plain run's folder (``work/plain/``, beside the course's tools.py, as
    the kernel finds it).  Returns (work, plain)."""
    work = Path(tempfile.mkdtemp(prefix="grader-bench-"))
    subs = work / "subs" / "ref"
    subs.mkdir(parents=True)
    shutil.copy(notebook, subs / "solution.ipynb")
    plain = work / "plain"
    plain.mkdir()
    shutil.copy(tools, plain / "tools.py")
    shutil.copy(notebook, plain / "solution.ipynb")
    return work, plain

"""Grading a notebook vs executing it plainly, side by side.

    python bench/bench_notebook.py [--repeat 3] [--skip-tensorflow]

Each round, interleaved so machine noise hits all alike:
  grade      `grader grade` on a folder holding the reference notebook
             (sandbox, JAX backend, capture, evaluation, reports)
  plain-jax  the same notebook executed by nbclient on the JAX backend, no
             sandbox, capture, evaluation or report: the work any grader must do
  nbconvert  `jupyter nbconvert --execute` on the TensorFlow backend: what a
             TA would otherwise run
Prints the medians, the speedup nbconvert / grade (target >= 5x) and the
grader's own overhead (grade - plain-jax) / grade (target <= 10%).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "reference" / "tutorial6" / "solution.ipynb"
TOOLS = ROOT / "reference" / "tutorial6" / "datasets.py"
BIN = Path(sys.executable).parent


def timed(cmd, env=None, cwd=None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def env_with(**kw):
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    env.update(kw)
    return env


PLAIN = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-tensorflow", action="store_true", help="leave out the slow nbconvert baseline")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grader-bench-"))
    subs = work / "subs" / "ref"
    subs.mkdir(parents=True)
    shutil.copy(NOTEBOOK, subs / "solution.ipynb")
    plain_dir = work / "plain"
    plain_dir.mkdir()
    shutil.copy(TOOLS, plain_dir / "tools.py")
    shutil.copy(NOTEBOOK, plain_dir / "solution.ipynb")  # the kernel runs beside the notebook, with tools.py
    times = {"grade": [], "plain-jax": [], "nbconvert": []}
    for i in range(args.repeat):
        out = work / f"out{i}"
        times["grade"].append(timed([str(BIN / "grader"), "grade", str(work / "subs"), "-a",
                                     str(ROOT / "reference" / "tutorial6"), "-o", str(out)], env_with()))
        times["plain-jax"].append(timed([sys.executable, "-c", PLAIN, str(NOTEBOOK), str(plain_dir)],
                                        env_with(KERAS_BACKEND="jax")))
        if not args.skip_tensorflow:
            times["nbconvert"].append(timed([str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                                             "--ExecutePreprocessor.timeout=3600", "--output-dir", str(plain_dir),
                                             "--output", f"executed{i}.ipynb", str(plain_dir / "solution.ipynb")],
                                            env_with(KERAS_BACKEND="tensorflow"), cwd=plain_dir))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v), flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"\nmedians over {args.repeat} round(s), reference notebook:")
    for k, v in med.items():
        print(f"  {k:10s} {v:7.1f} s")
    print(f"grader overhead (grade - plain-jax) / grade: {100 * (med['grade'] - med['plain-jax']) / med['grade']:.1f}%"
          " (target <= 10%)")
    if "nbconvert" in med:
        print(f"speedup nbconvert (tensorflow) / grade: {med['nbconvert'] / med['grade']:.1f}x (target >= 5x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

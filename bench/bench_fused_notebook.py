"""Grading a notebook vs executing it plainly, side by side; fused training vs Keras' own fit.

    python bench/bench_fused_notebook.py [--repeat 3] [--skip-tensorflow] [--skip-plain]

Each round, interleaved so machine noise hits all alike:
  grade          `grader grade` on a folder holding the reference notebook
                 (sandbox, JAX backend, fused fit with the grader's compile cache, capture, evaluation,
                 reports)
  grade-nocache  the same with GRADER_FUSED=nocache: fused fit, every kernel compiling its own programs
  grade-keras    the same with GRADER_FUSED=0: Keras' own fit (the grader before fused training)
  plain-jax      the same notebook executed by nbclient on the JAX backend, no sandbox, capture,
                 evaluation or report, Keras' own fit: the work a plain run does
  nbconvert      `jupyter nbconvert --execute` on the TensorFlow backend: what a TA would otherwise run
The compile cache is built before the first round (its one-off time is printed).  Prints the medians,
the speedup of fused training (grade-keras / grade), the speedup over nbconvert (target >= 5x) and the
grader's own overhead (grade - plain-jax) / grade.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from _timing import PLAIN, notebook_folders, timed  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "reference" / "tutorial6" / "solution.ipynb"
TOOLS = ROOT / "reference" / "tutorial6" / "datasets.py"
BIN = Path(sys.executable).parent


def env_with(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("GRADER_SECRET", "GRADER_FUSED")}
    env.update(kw)
    return env


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-tensorflow", action="store_true", help="leave out the slow nbconvert baseline")
    parser.add_argument("--skip-plain", action="store_true", help="leave out the plain-jax baseline")
    args = parser.parse_args()
    from grader.execute import compile_cache
    from grader.spec import load_assignment

    t0 = time.perf_counter()
    cache = compile_cache.build(load_assignment(ROOT / "reference" / "tutorial6"))
    print(f"compile cache {cache} ready in {time.perf_counter() - t0:.1f} s (built once per machine and version)",
          flush=True)
    work, plain_dir = notebook_folders(NOTEBOOK, TOOLS)
    arms = {"grade": {}, "grade-nocache": {"GRADER_FUSED": "nocache"}, "grade-keras": {"GRADER_FUSED": "0"}}
    times = {name: [] for name in (*arms, "plain-jax", "nbconvert")}
    for i in range(args.repeat):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        for name in order:
            out = work / f"out-{name}-{i}"
            times[name].append(timed([str(BIN / "grader"), "grade", str(work / "subs"), "-a",
                                      str(ROOT / "reference" / "tutorial6"), "-o", str(out)], env_with(**arms[name])))
        if not args.skip_plain:
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
        print(f"  {k:14s} {v:7.1f} s")
    print(f"fused training: grade-keras / grade = {med['grade-keras'] / med['grade']:.2f}x "
          f"(without the compile cache: grade-keras / grade-nocache = {med['grade-keras'] / med['grade-nocache']:.2f}x)")
    if "plain-jax" in med:
        print(f"grader overhead (grade - plain-jax) / grade: "
              f"{100 * (med['grade'] - med['plain-jax']) / med['grade']:.1f}% (target <= 10%)")
    if "nbconvert" in med:
        print(f"speedup nbconvert (tensorflow) / grade: {med['nbconvert'] / med['grade']:.1f}x (target >= 5x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What an endless loop costs a worker under the calibrated time limits.

    python bench/bench_loop.py [--repeat 3]

Each round grades, with `grader grade` and the shipped tutorial6 spec (its calibrated [timings], the speed
probe at batch start), two one-student classes side by side:
  loop    a notebook of the sheet's import cell, `while True: pass`, and a cell after it
  no loop the same notebook with `pass` for the loop
Prints the limit the batch derived (and why), when the loop was stopped, the medians of both grades and
their difference: what one `while True: pass` cell costs.  The spec's fixed cap (cell_timeout_s, the
limit before limits came from the reference) is printed beside it for comparison, not run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "reference" / "tutorial6"
IMPORTS = ("import numpy as np\nimport matplotlib.pyplot as plt\nfrom tensorflow.keras.models import Sequential\n"
           "from tensorflow.keras.layers import Dense\nfrom tools import *")


def write(folder: Path, loop: bool) -> None:
    (folder / "s").mkdir(parents=True)
    cells = [IMPORTS, "while True:\n    pass" if loop else "pass", "print('after')"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]),
                   folder / "s" / "tutorial6.ipynb")


def grade(subs: Path, out: Path) -> tuple[float, dict]:
    env = dict(os.environ, GRADER_SECRET="bench-secret")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "-a", str(SPEC), "-o", str(out),
                           "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"grader failed:\n{proc.stderr[-3000:]}")
    return elapsed, json.loads((out / "results.json").read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from grader.spec import load_assignment

    cap = load_assignment(SPEC).notebooks.cell_timeout_s
    times = {"loop": [], "no loop": []}
    stopped, limits = [], []
    work = Path(tempfile.mkdtemp(prefix="grader-bench-loop-"))
    try:
        write(work / "loop", True)
        write(work / "plain", False)
        for r in range(args.repeat):
            for name in (["loop", "no loop"] if r % 2 == 0 else ["no loop", "loop"]):
                folder = work / ("loop" if name == "loop" else "plain")
                elapsed, data = grade(folder, work / f"out-{name.replace(' ', '')}-{r}")
                times[name].append(elapsed)
                if name == "loop":
                    nb = data["students"][0]["notebooks"][0]
                    failure = next(f for f in nb["failures"] if f["status"] == "timeout")
                    stopped.append(float(re.match(r"Stopped after ([\d.]+) s", failure["explanation"]).group(1)))
                    limits.append((nb["limits"]["cell_s"], failure["explanation"]))
            print(f"round {r + 1}: loop {times['loop'][-1]:.1f} s (cell limit {limits[-1][0]:g} s, stopped after "
                  f"{stopped[-1]:g} s), no loop {times['no loop'][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians of {args.repeat} round(s):")
    for k, v in med.items():
        print(f"  {k:8s} {v:7.1f} s")
    print(f"student's message (last round): {limits[-1][1]}")
    print(f"one `while True: pass` cell costs {med['loop'] - med['no loop']:.1f} s of a worker under the calibrated "
          f"limit (cell limit {statistics.median(l for l, _ in limits):g} s, stopped after a median "
          f"{statistics.median(stopped):g} s); under the spec's fixed cap (cell_timeout_s) it would be stopped "
          f"after {cap:g} s")


if __name__ == "__main__":
    main()

"""A batch of notebooks graded with 1 and 2 workers, then graded again unchanged.

    python bench/bench_batch.py [--students 4] [--repeat 3]

The class is N copies of the reference notebook (the real workload: every
task of the sheet trained in a sandboxed kernel) plus N students of saved
`.h5` files from the demo.  Each round, with the order of the two alternated
so machine noise hits both alike:
  workers=1   `grader grade --workers 1` into a fresh output folder
  workers=2   `grader grade --workers 2` into a fresh output folder
  unchanged   `grader grade` again on the workers=2 folder: nothing changed
  plain x2    the ceiling this machine allows: the reference notebook executed
              plainly by nbclient twice one after the other, and twice at once
Prints the medians, the speedup workers=1 / workers=2 (target >= 1.8x) next
to the machine's own ceiling (two plain notebooks at once vs one after the
other: two vCPUs are not always two cores' worth), and the unchanged re-run's
time per submission (target < 1 s).
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

from _timing import PLAIN, timed  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "reference" / "tutorial6" / "solution.ipynb"
SPEC = ROOT / "reference" / "tutorial6"
DEMO = ROOT / "submissions" / "tutorial6"


def grade(subs: Path, out: Path, *extra) -> float:
    env = dict(os.environ, GRADER_SECRET="bench-secret")
    cmd = [sys.executable, "-m", "grader.cli", "grade", str(subs), "-a", str(SPEC), "-o", str(out), *extra]
    return timed(cmd, env)


def plain_pair(folder: Path, parallel: bool) -> float:
    """Two plain nbclient runs of the reference notebook on the JAX backend, sequential or at once."""
    env = dict(os.environ, KERAS_BACKEND="jax")
    cmd = [sys.executable, "-c", PLAIN, str(folder / "solution.ipynb"), str(folder)]
    t = time.perf_counter()
    if parallel:
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
                 for _ in range(2)]
    if any(codes):
        raise SystemExit("the plain notebook run failed")
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=4, help="notebook students (as many .h5 students again)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grader-bench-batch-"))
    subs = work / "class"
    demo = ["alice", "bob", "carol", "dave"]
    for i in range(args.students):
        (subs / f"nb{i:02d}").mkdir(parents=True)
        shutil.copy(NOTEBOOK, subs / f"nb{i:02d}" / "tutorial6.ipynb")
        shutil.copytree(DEMO / demo[i % len(demo)], subs / f"h5{i:02d}")
    n = 2 * args.students
    plain = work / "plain"
    plain.mkdir()
    shutil.copy(NOTEBOOK, plain / "solution.ipynb")
    shutil.copy(SPEC / "datasets.py", plain / "tools.py")
    times = {"workers=1": [], "workers=2": [], "unchanged": [], "plain one by one": [], "plain two at once": []}
    try:
        for r in range(args.repeat):
            order = ["1", "2"] if r % 2 == 0 else ["2", "1"]
            for w in order:
                times[f"workers={w}"].append(grade(subs, work / f"out{r}-{w}", "--workers", w))
            times["unchanged"].append(grade(subs, work / f"out{r}-2"))
            for parallel in ([False, True] if r % 2 == 0 else [True, False]):
                key = "plain two at once" if parallel else "plain one by one"
                times[key].append(plain_pair(plain, parallel))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{n} submissions ({args.students} notebooks, {args.students} of .h5 files), medians of "
          f"{args.repeat} round(s):")
    for k, v in med.items():
        print(f"  {k:18s} {v:7.1f} s")
    print(f"speedup workers=1 / workers=2: {med['workers=1'] / med['workers=2']:.2f}x  (target >= 1.8x)")
    print(f"this machine's ceiling, plain notebooks one by one / two at once: "
          f"{med['plain one by one'] / med['plain two at once']:.2f}x")
    print(f"unchanged re-run: {med['unchanged'] / n:.3f} s per submission  (target < 1 s)")


if __name__ == "__main__":
    main()

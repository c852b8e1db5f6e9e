"""`grader check` on a student's folder of saved models: the time a student waits.

    python bench/bench_check.py [--repeat 5]

Times `grader check` (the whole command: start-up, the Keras worker, every
model evaluated on public data, the HTML page) on the demo's strongest
student, twelve .h5/.keras files answering every task, and on a single .h5.
Prints the medians against the target (a folder of .h5 files in under 30 s).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "reference" / "tutorial6"
CASES = {"folder of 12 models": ROOT / "submissions" / "tutorial6" / "alice",
         "one .h5": ROOT / "submissions" / "tutorial6" / "erin_1b.h5"}


def timed(path: Path, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "check", str(path), "-a", str(SPEC), "-o", str(out)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"grader check failed:\n{proc.stderr[-3000:]}")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times = {k: [] for k in CASES}
    with tempfile.TemporaryDirectory(prefix="grader-bench-check-") as tmp:
        for r in range(args.repeat):
            for name, path in CASES.items():
                times[name].append(timed(path, Path(tmp) / f"{r}"))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    print(f"\nmedians of {args.repeat} round(s):")
    for name, values in times.items():
        print(f"  {name:20s} {statistics.median(values):6.1f} s")
    print(f"folder of .h5 files: {statistics.median(times['folder of 12 models']):.1f} s (target < 30 s)")


if __name__ == "__main__":
    main()

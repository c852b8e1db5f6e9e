"""`grader calibrate` for every task of tutorial6, into a temporary copy of the assignment.

    python bench/bench_calibrate.py [--runs 10] [--repeat 3] [--timing-runs 3] [--skip-timings]

Never touches reference/tutorial6/calibration.toml: each round copies the assignment folder and calibrates
the copy.  Each round times the command's two parts one after the other, as `grader calibrate --runs N`
runs them:
  thresholds  `grader calibrate COPY --runs N --no-timings`: every task's reference trained N times,
              evaluated, thresholds and error rates derived
  timings     `grader calibrate COPY --timings-only`: the reference notebook run --timing-runs times by
              the grader's sandboxed executor, with the speed probe (the notebooks' time limits)
and prints the medians, their sum (the whole `grader calibrate --runs N`) and the target (under 60 s).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import timed  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "reference" / "tutorial6"


def calibrate(*args) -> float:
    return timed([sys.executable, "-m", "grader.cli", "calibrate", *args], dict(os.environ))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10, help="reference runs per task (3 at least: fewer cannot bound a miss rate)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timing-runs", type=int, default=3, help="runs of the reference notebook")
    parser.add_argument("--skip-timings", action="store_true", help="time the thresholds' part alone")
    args = parser.parse_args()
    before = (SPEC / "calibration.toml").read_bytes()
    times = {"thresholds": [], "timings": []}
    with tempfile.TemporaryDirectory(prefix="grader-bench-calibrate-") as tmp:
        for r in range(args.repeat):
            copy = Path(tmp) / f"tutorial6-{r}"
            shutil.copytree(SPEC, copy, ignore=shutil.ignore_patterns("__pycache__"))
            times["thresholds"].append(calibrate(copy, "--runs", args.runs, "--no-timings"))
            if not args.skip_timings:
                times["timings"].append(calibrate(copy, "--timings-only", "--timing-runs", args.timing_runs))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v), flush=True)
    assert (SPEC / "calibration.toml").read_bytes() == before, "the real calibration.toml was changed"
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"\nmedians of {args.repeat} round(s), all tasks of tutorial6, --runs {args.runs}:")
    for k, v in med.items():
        print(f"  {k:10s} {v:7.1f} s")
    total = sum(med.values())
    what = "grader calibrate --runs %d" % args.runs + (" --no-timings" if args.skip_timings else "")
    print(f"{what}: {total:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()

"""Grading the reference notebook: this grader vs the previous grader vs executing it plainly, side by side.

    python bench/bench_notebook.py [--repeat 3] [--baseline 24d56bc] [--skip-baseline] [--skip-tensorflow]

Each round, interleaved so machine noise hits all alike, in an order that changes from round to round so that
over the rounds every run follows every other equally often (``balanced_order``; run as many rounds as there
are runs, 4 with everything, for the full balance): otherwise one always follows, say, the run that evicted
its libraries from the page cache:
  grade      `grader grade` (this checkout) on a folder holding the reference notebook
             (sandbox, JAX backend, capture, evaluation, reports)
  baseline   the same with the grader of commit --baseline (default 24d56bc, the grader before this
             work), checked out with `git worktree add` into a temporary folder and run with the same
             Python (PYTHONPATH=<that checkout>), each grading with its own checkout's reference/tutorial6
  plain-jax  the same notebook executed by nbclient on the JAX backend, no sandbox, capture, evaluation
             or report: the work any grader must do
  nbconvert  `jupyter nbconvert --execute` on the TensorFlow backend: what a TA would otherwise run
Every grader process checks, in itself, that `grader` was imported from the checkout it stands for, so a
baseline that silently ran this checkout's code cannot pass for one.  Prints the medians and the ratios
measured in this run: baseline / grade (target >= 5x), nbconvert / grade (target >= 30x), as the ratio of
the medians and round by round, and the grader's own overhead (grade - plain-jax) / grade (or, when the fused
fit makes grading quicker than the plain run, grade / plain-jax).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import PLAIN, notebook_folders, timed  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "reference" / "tutorial6" / "solution.ipynb"
TOOLS = ROOT / "reference" / "tutorial6" / "datasets.py"
BIN = Path(sys.executable).parent
DEFAULT_BASELINE = "24d56bc"

#: runs `grader` from the checkout given first, after checking that this very process imported it from there
CHECKED_GRADER = """
import sys, pathlib
import grader
where = pathlib.Path(grader.__file__).resolve()
if not where.is_relative_to(pathlib.Path(sys.argv[1]).resolve()):
    raise SystemExit(f"grader was imported from {where}, not from {sys.argv[1]}")
sys.argv = ["grader"] + sys.argv[2:]
from grader.cli import main
main()
"""


def env_with(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("GRADER_SECRET", "PYTHONPATH")}
    env.update(kw)
    return env


def grader_cmd(checkout: Path, *args) -> list[str]:
    return [sys.executable, "-c", CHECKED_GRADER, str(checkout), *map(str, args)]


class Baseline:
    """A `git worktree` of ``rev`` in a temporary folder, removed on exit."""

    def __init__(self, rev: str):
        self.rev = rev
        self.parent = Path(tempfile.mkdtemp(prefix="grader-baseline-"))
        self.path = self.parent / "checkout"

    def __enter__(self):
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(self.path), self.rev], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.commit = subprocess.run(["git", "-C", str(self.path), "rev-parse", "--short", "HEAD"], check=True,
                                     capture_output=True, text=True).stdout.strip()
        return self

    def __exit__(self, *exc):
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.parent, ignore_errors=True)


def has_nbconvert() -> bool:
    return (BIN / "jupyter-nbconvert").exists()


def tensorflow_cmd(folder: Path, i: int) -> list[str]:
    """`jupyter nbconvert --execute` (the bench extra); without it `jupyter execute`, the same nbclient
    executor that nbconvert's --execute runs, said so in the output."""
    if has_nbconvert():
        return [str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                "--ExecutePreprocessor.timeout=3600", "--output-dir", str(folder), "--output", f"executed{i}.ipynb",
                str(folder / "solution.ipynb")]
    return [str(BIN / "jupyter"), "execute", "--timeout=3600", str(folder / "solution.ipynb")]


def balanced_order(n: int, round_index: int) -> list[int]:
    """The order of ``n`` runs in a round: a Williams design (a balanced Latin square), whose rounds together
    put every run right after every other the same number of times (``n`` rounds for an even ``n``, ``2n`` for
    an odd one); later rounds repeat them."""
    base, low, high = [0], 1, n - 1
    while len(base) < n:
        base.append(low)
        low += 1
        if len(base) < n:
            base.append(high)
            high -= 1
    rounds = [[(b + r) % n for b in base] for r in range(n)]
    if n % 2:
        rounds += [list(reversed(row)) for row in rounds]
    return rounds[round_index % len(rounds)]


def paired(slow: list[float], fast: list[float]) -> str:
    """Each round's own ratio (its two runs minutes apart, so a machine that slows down for a while slows both)
    and their median, beside the ratio of the medians above."""
    ratios = [s / f for s, f in zip(slow, fast)]
    return (f"round by round: {', '.join(f'{r:.2f}x' for r in ratios)}; median of the rounds' ratios "
            f"{statistics.median(ratios):.2f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="the previous grader's commit")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out the previous grader")
    parser.add_argument("--skip-tensorflow", action="store_true", help="leave out the slow nbconvert baseline")
    parser.add_argument("--skip-plain", action="store_true", help="leave out the plain nbclient run")
    args = parser.parse_args()
    if not args.skip_tensorflow and not has_nbconvert():
        print("nbconvert is not installed (pip install -e '.[bench]'; `make bench` does): the TensorFlow baseline "
              "runs with `jupyter execute`, the executor nbconvert --execute uses", flush=True)
    work, plain_dir = notebook_folders(NOTEBOOK, TOOLS)
    tf = "nbconvert" if has_nbconvert() else "jupyter-execute"  # on tensorflow
    times = {"grade": [], "baseline": [], "plain-jax": [], tf: []}
    baseline = None if args.skip_baseline else Baseline(args.baseline)
    try:
        if baseline:
            baseline.__enter__()
            print(f"baseline: commit {baseline.commit} in {baseline.path}", flush=True)
        for i in range(args.repeat):
            runs = [("grade", lambda i=i: timed(grader_cmd(ROOT, "grade", work / "subs", "-a",
                                                           ROOT / "reference" / "tutorial6", "-o", work / f"out{i}"),
                                                env_with(PYTHONPATH=str(ROOT))))]
            if baseline:
                runs.append(("baseline", lambda i=i: timed(grader_cmd(baseline.path, "grade", work / "subs", "-a",
                                                                      baseline.path / "reference" / "tutorial6", "-o",
                                                                      work / f"base{i}"),
                                                           env_with(PYTHONPATH=str(baseline.path)),
                                                           cwd=baseline.path)))
            if not args.skip_plain:
                runs.append(("plain-jax", lambda: timed([sys.executable, "-c", PLAIN, str(NOTEBOOK), str(plain_dir)],
                                                        env_with(KERAS_BACKEND="jax"))))
            if not args.skip_tensorflow:
                runs.append((tf, lambda i=i: timed(tensorflow_cmd(plain_dir, i), env_with(KERAS_BACKEND="tensorflow"),
                                                   cwd=plain_dir)))
            # the rounds' orders follow each run by every other equally often: what runs after one that evicted its
            # libraries from the page cache (TensorFlow's 1.3 GB; this machine keeps about 2 GB) is not always the same
            order = [runs[k] for k in balanced_order(len(runs), i)]
            for name, run in order:
                times[name].append(run())
            print(f"round {i + 1} ({', '.join(name for name, _ in order)}): " +
                  ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v), flush=True)
    finally:
        if baseline:
            baseline.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"\nmedians over {args.repeat} round(s), reference notebook:")
    for k, v in med.items():
        print(f"  {k:15s} {v:7.1f} s")
    if "baseline" in med:
        print(f"speedup previous grader ({args.baseline}) / grade: {med['baseline'] / med['grade']:.2f}x "
              "(target >= 5x)")
        print("  " + paired(times["baseline"], times["grade"]))
    if tf in med:
        print(f"speedup {tf} (tensorflow) / grade: {med[tf] / med['grade']:.1f}x (target >= 30x)")
        print("  " + paired(times[tf], times["grade"]))
    if "plain-jax" in med:
        if med["grade"] >= med["plain-jax"]:
            print(f"grader overhead (grade - plain-jax) / grade: "
                  f"{100 * (med['grade'] - med['plain-jax']) / med['grade']:.1f}%")
        else:  # the fused fit trains faster than Keras' own fit, which the plain run uses
            print(f"grade / plain-jax: {med['grade'] / med['plain-jax']:.2f} (the whole grading takes less than the "
                  "plain run's Keras fit alone)")


if __name__ == "__main__":
    main()

"""Grading a Keras 2 notebook vs the same notebook in Keras 3, side by side (the Keras 2 path's cost).

    python bench/bench_keras2.py [--rounds 3] [--sheet]
    python bench/bench_keras2.py --fairness 5      # the calibrated thresholds on the Keras 2 path

The notebook: the demo's heidi (the sheet's 1a with Keras 2's ``Adam(lr=0.01)``, and 2a), or with ``--sheet``
the whole reference notebook (every task, 2000-epoch fits included) with Keras 2's imports
(``tensorflow.python.keras``, ``np_utils``) and ``Adam(lr=...)``.  Its Keras 3 twin differs only in those lines
(``tensorflow.keras``, ``learning_rate=``).  Each round grades both with `grader grade` (sandbox, capture,
evaluation, reports), in alternating order; the Keras 2 one runs on tf_keras (TensorFlow; the Keras 2 kernel's
fit, every epoch of a fit in one TensorFlow call, ``keras2_kernel._fused_fit``), the Keras 3 one on JAX with the
fused fit.  Prints the machine's load before and after, the medians, every round's ratio, and the median of the
rounds' ratios Keras 2 / Keras 3 (target <= 2x): on a shared machine, quote the ratios, side by side.

``--fairness N``: every model task's reference (solution.py) trained N times on Keras 2, as a kernel on the Keras 2
path trains it (seeds from the calibrated reference seed on), each graded as a submitted file under the
calibration's secret: how many miss the thresholds calibrated on Keras 3, beside the calibration's own misses.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path

import nbformat

from _timing import timed  # bench/ is on sys.path: this runs as a script

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL6 = ROOT / "reference" / "tutorial6"
sys.path.insert(0, str(TUTORIAL6))


def _cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def keras3_notebooks(sheet: bool) -> list[str]:
    """The Keras 3 twin's code cells."""
    if sheet:
        return _cells(nbformat.read(TUTORIAL6 / "solution.ipynb", as_version=4))
    import make_demo

    return [make_demo.IMPORTS, make_demo.CURVE, make_demo.KERAS2_1A.replace("lr=", "learning_rate="),
            make_demo.TASK_2A]


def as_keras2(cells: list[str]) -> list[str]:
    """The same cells as a Keras 2 student wrote them: the private tensorflow.python.keras, np_utils, lr=."""
    out = []
    for source in cells:
        source = source.replace("from tensorflow.keras.utils import to_categorical",
                                "from tensorflow.python.keras.utils.np_utils import to_categorical")
        source = source.replace("from tensorflow.keras", "from tensorflow.python.keras")
        source = source.replace("learning_rate=", "lr=").replace("optimizer='adam'", "optimizer=Adam(lr=0.001)")
        if "import Dense" in source and "Adam" not in source:
            source += "\nfrom tensorflow.python.keras.optimizers import Adam"
        out.append(source)
    return out


def env():
    e = {k: v for k, v in os.environ.items() if k not in ("GRADER_SECRET",)}
    e["GRADER_SECRET"] = "bench-keras2"
    return e


def fairness(n: int):
    from grader.evaluate import Evaluator, dataset_seeds
    from grader.execute import keras2
    from grader.intake import collect
    from grader.session import grade_student
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    tasks = [t for t in assignment.model_tasks() if t.reference]
    runs = [(t.id, t.reference_seed + k) for t in tasks for k in range(n)]
    work = Path(tempfile.mkdtemp(prefix="grader-bench-fairness-"))
    try:
        files = keras2.reference_runs(assignment, runs, work / "runs")
        for (tid, seed), path in files.items():
            (work / "subs" / f"{tid}-{seed}").mkdir(parents=True)
            shutil.copy(path, work / "subs" / f"{tid}-{seed}" / f"{tid}.h5")
        secret = tomllib.loads((TUTORIAL6 / "calibration.toml").read_text())["meta"]["heldout_secret"]
        missed: dict[str, list[str]] = {t.id: [] for t in tasks}
        with Evaluator(assignment, dataset_seeds(assignment, secret)) as ev:
            for sub in collect(work / "subs", assignment):
                tid = sub.student_id.split("-")[0]
                t = next(x for x in grade_student(assignment, sub, ev).tasks if x.id == tid)
                if t.status != "passed":
                    missed[tid].append(f"seed {sub.student_id.split('-')[1]}: {t.status} {t.metrics}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Keras 2 reference runs against the calibrated thresholds ({n} a task):")
    for t in tasks:
        cal = ", ".join(f"{m}: {r.misses.missed_pass}/{r.misses.runs}" for m, r in t.thresholds.items() if r.misses)
        print(f"  {t.id:3s} missed {len(missed[t.id])}/{n} on Keras 2; calibration (Keras 3) missed {cal or '-'}"
              + "".join(f"\n      {m}" for m in missed[t.id]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sheet", action="store_true", help="the whole reference notebook instead of heidi's")
    parser.add_argument("--fairness", type=int, metavar="N", help="N Keras 2 reference runs a task, graded")
    args = parser.parse_args()
    if args.fairness:
        return fairness(args.fairness)
    keras3 = keras3_notebooks(args.sheet)
    keras2 = as_keras2(keras3)
    assert keras2 != keras3
    work = Path(tempfile.mkdtemp(prefix="grader-bench-keras2-"))
    times = {"keras2": [], "keras3": []}
    load = os.getloadavg()
    try:
        for name, cells in (("keras2", keras2), ("keras3", keras3)):
            folder = work / name / "subs" / "s"
            folder.mkdir(parents=True)
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
            nbformat.write(nb, folder / "tutorial6.ipynb")
        grader = Path(sys.executable).parent / "grader"
        for i in range(args.rounds):
            order = ["keras2", "keras3"] if i % 2 == 0 else ["keras3", "keras2"]
            for name in order:
                out = work / name / f"out{i}"
                times[name].append(timed([grader, "grade", work / name / "subs", "-a", TUTORIAL6, "-o", out], env()))
            ran = [s["notebooks"][0]["keras"] for s in json.loads(
                (work / "keras2" / f"out{i}" / "results.json").read_text())["students"]]
            assert ran == ["2"], f"the Keras 2 notebook ran on Keras {ran}"
            print(f"round {i + 1} ({', '.join(order)}): " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f} (1 min)")
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["keras2"], times["keras3"])]
    what = "the reference notebook" if args.sheet else "heidi's notebook (1a, 2a)"
    print(f"\nmedians over {args.rounds} round(s), {what}: keras2 {med['keras2']:.1f} s, keras3 {med['keras3']:.1f} s")
    print(f"keras2 / keras3: {med['keras2'] / med['keras3']:.2f}x (ratio of the medians); round by round: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)}; median of the rounds' ratios {statistics.median(ratios):.2f}x "
          "(target <= 2x)")


if __name__ == "__main__":
    main()

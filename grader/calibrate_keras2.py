"""Calibration on the Keras 2 path: whether the thresholds calibrated on Keras 3 hold for code run on Keras 2.

``calibrate_keras2(folder)`` trains each calibrated task's reference with the seeds its Keras 3 calibration
recorded, on tf_keras as a kernel on the Keras 2 path trains it (``execute.keras2.reference_runs``), evaluates
every run as a submission under the calibration's held-out secret, and writes ``[keras2]`` into the calibration
file: per task and metric, the runs, their quantiles, the misses of the Keras 3 thresholds and the chance that a
correct Keras 2 submission fails (``false_fail``: its own run missing, times the K re-trainings on Keras 3 the
grader gives a recipe all missing).  A metric ``holds`` when that is within the spec's ``false_fail_bound`` and
one Keras 2 run misses no more often than one Keras 3 run (the bounds of ``calibrate.miss_upper_bound``), which
is what a model without a recipe (a saved file) is graded on.  One that does not hold gets thresholds of its own
on this path (the task's rule on the Keras 2 runs, never stricter than Keras 3's), which the spec gives as
``Task.keras2_thresholds`` and scoring uses for a Keras 2 run's models that cannot be re-trained
(``assess.judged_on``).
"""
from __future__ import annotations

import datetime as _dt
import statistics
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: the first line of the Keras 2 section of the calibration file (it ends where the timings begin, or the file)
KERAS2_MARK = "# -- Keras 2 path"


def _quantiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else [values[0]] * 9
    return {"min": min(values), "q10": q[0], "median": float(statistics.median(values)), "q90": q[-1],
            "max": max(values)}


def metric_entry(task, metric: str, values: list[float], keras3: dict, retraining) -> dict:
    """A metric's Keras 2 entry: its runs against the Keras 3 entry ``keras3`` (of the calibration file)."""
    from .calibrate import miss_upper_bound, summarise
    from .assess import passes

    k3_pass, k3_partial = float(keras3["pass"]), float(keras3["partial"])
    missed_pass = sum(not passes(metric, v, k3_pass) for v in values)
    missed_partial = sum(not passes(metric, v, k3_partial) for v in values)
    p_pass = miss_upper_bound(missed_pass, len(values))
    k = int(keras3.get("retrainings", 0))
    k3_p_pass = float(keras3["p_miss_pass"])
    false_fail = p_pass * k3_p_pass ** k  # its own run on Keras 2, then K re-trainings on Keras 3
    holds = false_fail <= retraining.false_fail_bound and p_pass <= k3_p_pass if k else p_pass <= k3_p_pass
    entry = {"runs": values, **_quantiles(values), "run_count": len(values),
             "keras3_pass": k3_pass, "keras3_partial": k3_partial, "missed_pass": missed_pass,
             "missed_partial": missed_partial, "p_miss_pass": p_pass,
             "p_miss_partial": miss_upper_bound(missed_partial, len(values)), "keras3_p_miss_pass": k3_p_pass,
             "retrainings": k, "false_fail": false_fail, "holds": holds, "pass": k3_pass, "partial": k3_partial}
    if not holds:  # thresholds of its own: the task's rule on these runs, never stricter than Keras 3's
        own = summarise(task, metric, values, retraining)
        entry["pass"] = own["pass"] if passes(metric, k3_pass, own["pass"]) else k3_pass
        entry["partial"] = own["partial"] if passes(metric, k3_partial, own["partial"]) else k3_partial
        entry["missed_pass_own"] = sum(not passes(metric, v, entry["pass"]) for v in values)
        entry["p_miss_pass_own"] = miss_upper_bound(entry["missed_pass_own"], len(values))
    return entry


def _train(assignment, runs, out: Path, workers: int):
    from .execute import keras2

    groups = [runs[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:  # each group trains in a process of its own
        for done in pool.map(lambda g: keras2.reference_runs(assignment, g, out), [g for g in groups if g]):
            yield from done.items()


def calibrate_keras2(folder, runs: int | None = None, events=None, workers: int = 2,
                     trained: Path | None = None) -> Path:
    """Train, evaluate and record (see the module's docstring); returns the calibration file.  ``runs``: runs
    per task (default: as many as its Keras 3 calibration, with the same seeds).  ``trained``: a folder of the
    same runs trained before (``<task>-<seed>.h5`` and ``.npz``, as ``reference_runs`` writes them), evaluated
    instead of training again (the same seed trains the same network)."""
    import numpy as np

    from . import __version__
    from .errors import FatalError, SpecError
    from .evaluate.heldout import dataset_seeds
    from .spec import load_assignment
    from .evaluate.worker import Evaluator
    from .execute import keras2

    if not keras2.available():
        raise FatalError("tf_keras is not installed: there is no Keras 2 path to calibrate")
    assignment = load_assignment(folder)
    path = assignment.calibration_path
    if path is None:
        raise SpecError(assignment.spec_path, None, "calibrate on Keras 3 first (`grader calibrate`)")
    recorded = tomllib.loads(path.read_text())
    secret, retraining = recorded["meta"]["heldout_secret"], assignment.limits.retraining
    tasks = [t for t in assignment.model_tasks() if t.reference and t.calibration
             and isinstance(recorded.get("tasks", {}).get(t.id, {}).get("seeds"), list)]
    seeds = {t.id: recorded["tasks"][t.id]["seeds"][:runs] if runs else recorded["tasks"][t.id]["seeds"]
             for t in tasks}
    plan = [(t.id, int(s)) for t in tasks for s in seeds[t.id]]
    section: dict = {"tasks": {}}
    with tempfile.TemporaryDirectory(prefix="grader-calibrate-keras2-") as tmp, \
            Evaluator(assignment, dataset_seeds(assignment, secret)) as evaluator:
        values: dict = {t.id: {m: {} for m in t.calibration} for t in tasks}
        done = (((tid, seed), Path(trained) / f"{tid}-{seed}.h5") for tid, seed in plan) if trained else \
            _train(assignment, plan, Path(tmp), max(1, workers))
        for (tid, seed), model in done:
            task = assignment.task(tid)
            data = np.load(model.with_suffix(".npz"))
            training = {"dataset": task.dataset, "datasets": [task.dataset], "x": data["x"], "y": data["y"]}
            metrics = evaluator.evaluate(model, training).datasets[task.dataset].metrics
            for m in task.calibration:
                values[tid][m][seed] = float(metrics[m])
            if events is not None:  # session.Events
                events.reference_run(tid, seed, {m: values[tid][m][seed] for m in task.calibration})
    for t in tasks:
        entry: dict = {"seeds": seeds[t.id]}
        for m in t.calibration:
            entry[m] = metric_entry(t, m, [values[t.id][m][s] for s in seeds[t.id]], recorded["tasks"][t.id][m],
                                    retraining)
        section["tasks"][t.id] = entry
    section = {"recorded": _dt.date.today().isoformat(), "grader_version": __version__,
               "versions": keras2.versions(), "heldout_secret": secret,
               "false_fail_bound": retraining.false_fail_bound,
               "holds": all(e[m]["holds"] for e in section["tasks"].values() for m in e if m != "seeds"),
               **section}
    write_section(path, section)
    return path


def _section_span(text: str) -> tuple[int, int]:
    """Where the Keras 2 section is in ``text`` ((-1, -1): none): from its mark to the timings' mark or the end."""
    from .calibrate import TIMINGS_MARK

    at = ("\n" + text).find("\n" + KERAS2_MARK)
    if at < 0:
        return -1, -1
    end = ("\n" + text).find("\n" + TIMINGS_MARK, at + 1)
    return at, len(text) if end < 0 else end


def write_section(path: Path, section: dict | None) -> None:
    """Put ``section`` (``[keras2]``) in place of the calibration file's Keras 2 section, before its timings,
    keeping everything else; None removes it."""
    import tomli_w

    text = path.read_text()
    start, end = _section_span(text)
    if start >= 0:
        text = text[:start].rstrip("\n") + "\n\n" + text[end:].lstrip("\n")
    block = ""
    if section is not None:
        lines = [KERAS2_MARK + " (written by `grader calibrate --keras 2`; re-run it after the Keras 3 calibration).",
                 "# Each task's reference was trained on tf_keras, as a kernel on the Keras 2 path trains it, with the",
                 "# seeds of its Keras 3 calibration above, and evaluated like a submission under the same secret.",
                 "# Per metric: runs and quantiles; missed_pass / missed_partial: runs that miss the Keras 3",
                 "# thresholds (keras3_pass, keras3_partial); p_miss_*: 95% upper bounds on one run's miss;",
                 "# false_fail = p_miss_pass * keras3_p_miss_pass ** retrainings (a recipe's re-trainings are on",
                 "# Keras 3).  holds: false_fail within false_fail_bound and p_miss_pass no more than Keras 3's.",
                 "# pass / partial: the thresholds on this path (Keras 3's where it holds; else the task's rule on",
                 "# these runs, never stricter), used for the models a Keras 2 run made.",
                 _one_line_arrays(tomli_w.dumps({"keras2": section})).rstrip("\n")]
        block = "\n".join(lines) + "\n"
    from .calibrate import TIMINGS_MARK

    at = ("\n" + text).find("\n" + TIMINGS_MARK)
    if at < 0:
        text = text.rstrip("\n") + ("\n\n" + block if block else "\n")
    else:
        head = text[:at].rstrip("\n")
        text = head + "\n\n" + (block + "\n" if block else "") + text[at:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _one_line_arrays(text: str) -> str:
    """tomli_w's arrays of numbers, one per line, each on one line (as the Keras 3 entries above are)."""
    import re

    return re.sub(r"\[\n((?:    [^\n\[\]]+,\n)+)\]",
                  lambda m: "[" + ", ".join(v.strip().rstrip(",") for v in m.group(1).splitlines()) + "]", text)


def recorded_keras2(path: Path | None) -> dict:
    """The calibration file's ``[keras2]`` section ({} when it has none)."""
    if path is None or not Path(path).is_file():
        return {}
    return tomllib.loads(Path(path).read_text()).get("keras2", {})

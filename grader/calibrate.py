"""Calibration: thresholds from repeated runs of the reference implementation.

``calibrate(folder, runs)`` trains every task's reference ``runs`` times with
recorded seeds (on the JAX backend unless ``KERAS_BACKEND`` says otherwise),
evaluates each trained model exactly as a student's is evaluated (saved to
``.h5``, loaded by the evaluation worker, measured on held-out data from a
recorded calibration seed), and derives each threshold from the spec's rule:
``statistic(runs) * factor + offset``.  The result, with every run's metric,
the seeds and the reference seed the tests and demo use, goes to
``calibration.toml`` next to the spec.
"""
from __future__ import annotations

import datetime as _dt
import os
import statistics
import tempfile
from pathlib import Path

from . import __version__
from .evaluate.heldout import dataset_seeds
from .evaluate.worker import Evaluator
from .spec import import_reference, load_assignment
from .spec.model import METRICS, ThresholdRule

CALIBRATION_SECRET_PREFIX = "calibration"


def _statistic(values, name):
    return {"min": min, "max": max, "median": statistics.median}[name](values)


def derive(rule: ThresholdRule, values) -> float:
    return float(_statistic(values, rule.statistic) * rule.factor + rule.offset)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def _write(path: Path, header: list[str], meta: dict, tasks: dict) -> None:
    lines = [f"# {h}" for h in header] + ["", "[meta]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in meta.items()]
    for tid, entry in tasks.items():
        lines += ["", f'[tasks."{tid}"]']
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if not isinstance(v, dict)]
        for m, sub in entry.items():
            if isinstance(sub, dict):
                lines += ["", f'[tasks."{tid}".{m}]']
                lines += [f"{k} = {_toml_value(v)}" for k, v in sub.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def calibrate(folder, runs: int = 10, base_seed: int = 1000, tasks: list[str] | None = None,
              progress=None) -> Path:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    assignment = load_assignment(folder, require_thresholds=False)
    secret = f"{CALIBRATION_SECRET_PREFIX}-{base_seed}"
    seeds = [base_seed + i for i in range(runs)]
    # tasks marked by a curve have no thresholds to calibrate
    chosen = [t for t in assignment.model_tasks() if t.reference and t.calibration and (not tasks or t.id in tasks)]
    if not chosen:
        from .errors import SpecError

        raise SpecError(assignment.spec_path, None, "no task to calibrate: none has [calibration] rules"
                        + (f" among {', '.join(tasks)}" if tasks else "") + " (tasks marked by a curve need none)")
    previous = {}
    if assignment.calibration_path:
        import tomllib

        previous = tomllib.loads(assignment.calibration_path.read_text()).get("tasks", {})
    results = {tid: entry for tid, entry in previous.items() if tasks and tid not in tasks}
    with Evaluator(assignment, dataset_seeds(assignment, secret)) as evaluator, \
            tempfile.TemporaryDirectory(prefix="grader-calibrate-") as tmp:
        for task in chosen:
            build = import_reference(assignment, task.reference)
            values: dict[str, list[float]] = {m: [] for m in task.calibration}
            for seed in seeds:
                model, (x, y) = build(seed)
                path = Path(tmp) / f"{task.id}-{seed}.h5"
                model.save(path)
                training = {"dataset": task.dataset, "x": x, "y": y}
                metrics = evaluator.evaluate(path, training)["datasets"][task.dataset]["metrics"]
                for m in values:
                    values[m].append(float(metrics[m]))
                if progress:
                    progress(task.id, seed, {m: v[-1] for m, v in values.items()})
            entry: dict = {"seeds": seeds}
            for m, (pass_rule, partial_rule) in task.calibration.items():
                entry[m] = {"pass": derive(pass_rule, values[m]), "partial": derive(partial_rule, values[m]),
                            "runs": values[m], "min": min(values[m]),
                            "median": float(statistics.median(values[m])), "max": max(values[m])}
            primary = values[task.metric]
            median = statistics.median(primary)
            passing = [i for i, v in enumerate(primary)
                       if (v >= entry[task.metric]["pass"] if METRICS[task.metric] else v <= entry[task.metric]["pass"])]
            best = min(passing or range(len(primary)), key=lambda i: (abs(primary[i] - median), i))
            entry["reference_seed"] = seeds[best]
            results[task.id] = entry
    import keras

    header = [
        f"Written by `grader calibrate` ({__version__}) on {_dt.date.today().isoformat()}: do not edit by hand,",
        "re-run the calibration instead.  Each task's reference (solution.py) was trained once per seed below,",
        "saved to .h5 and evaluated like a submission on held-out data drawn with the calibration secret",
        f"'{secret}'.  Thresholds = statistic(runs) * factor + offset, by the rules in assignment.toml.",
        "reference_seed: the run closest to the median, used by the tests and the demo submissions.",
    ]
    meta = {"runs": runs, "base_seed": base_seed, "heldout_secret": secret,
            "training_backend": os.environ["KERAS_BACKEND"], "keras_version": keras.__version__,
            "grader_version": __version__}
    ordered = {t.id: results[t.id] for t in assignment.model_tasks() if t.id in results}
    out = assignment.root / (assignment.calibration_path.name if assignment.calibration_path else "calibration.toml")
    _write(out, header, meta, ordered)
    return out

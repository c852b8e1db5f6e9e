"""Calibration: thresholds from repeated runs of the reference implementation, and their error rates.

``calibrate(folder, runs)`` trains every task's reference ``runs`` times with recorded seeds, evaluates each
model as a student's is evaluated, derives each threshold from the spec's rule (``statistic * factor +
offset``), bounds each threshold's error rate, states K (the re-trainings a recipe gets) and writes
``calibration.toml``.  ``calibrate_timings`` records the reference notebook's timings.
Why and how: docs/design/calibrate.md.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import tomli_w

from . import __version__, versions
from .engines import default_workers
from .errors import FatalError, SpecError
from .evaluate.heldout import dataset_seeds
from .execute import compile_cache, fused_fit
from .assess import passes
from .spec import import_reference, load_assignment
from .session import Events
from .spec.model import ThresholdRule

log = logging.getLogger("grader")
CALIBRATION_SECRET_PREFIX = "calibration"
#: runs per task by default: enough for a miss rate of a few percent to show
DEFAULT_RUNS = 30
#: the confidence of the upper bounds on miss rates
MISS_CONFIDENCE = 0.95


def _statistic(values, name):
    return {"min": min, "max": max, "median": statistics.median}[name](values)


def derive(rule: ThresholdRule, values) -> float:
    return float(_statistic(values, rule.statistic) * rule.factor + rule.offset)


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return math.fsum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def miss_upper_bound(missed: int, runs: int, confidence: float = MISS_CONFIDENCE) -> float:
    """An upper bound on the chance of a miss, ``missed`` of ``runs`` having missed: the one-sided
    Clopper-Pearson bound, the p at which seeing ``missed`` or fewer misses has probability
    ``1 - confidence`` (bisection on the exact binomial distribution).  No run: 1."""
    if runs <= 0 or missed >= runs:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = missed / runs, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _binomial_cdf(missed, runs, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def retrainings_needed(p_miss: float, bound: float) -> int | None:
    """K, the fewest re-trainings that a correct recipe all misses with probability ``p_miss ** K <= bound``;
    None when no number will do (``p_miss`` of 1)."""
    if p_miss >= 1.0:
        return None
    if p_miss <= 0.0:
        return 1
    return max(1, math.ceil(math.log(bound) / math.log(p_miss) - 1e-12))


def summarise(task, metric: str, values: list[float], retraining) -> dict:
    """A metric's calibration entry from its runs: thresholds, the runs' statistics, how many runs missed
    each threshold, upper bounds on the miss rates and, for a re-trained metric, K and the chance that a
    correct recipe fails all K re-trainings (``false_fail``; for a metric graded on one run, that run's)."""
    pass_rule, partial_rule = task.calibration[metric]
    passing, partial = derive(pass_rule, values), derive(partial_rule, values)
    missed_pass = sum(not passes(metric, v, passing) for v in values)
    missed_partial = sum(not passes(metric, v, partial) for v in values)
    p_pass = miss_upper_bound(missed_pass, len(values))
    k = 0
    if task.retrained and metric == task.metric:
        k = retrainings_needed(p_pass, retraining.false_fail_bound)
        k = retraining.max_per_student + 1 if k is None else k  # out of reach: refused by check_bound
    return {"pass": passing, "partial": partial, "run_count": len(values),
            "missed_pass": missed_pass, "missed_partial": missed_partial,
            "p_miss_pass": p_pass, "p_miss_partial": miss_upper_bound(missed_partial, len(values)),
            "retrainings": k, "false_fail": p_pass ** max(k, 1),
            "runs": values, "min": min(values), "median": float(statistics.median(values)), "max": max(values)}


def task_entry(task, seeds: list[int], values: dict[str, list[float]], retraining) -> dict:
    """A task's calibration entry: its seeds, every metric's ``summarise``, and the reference seed (the run
    closest to the median among those that pass)."""
    entry: dict = {"seeds": list(seeds)}
    for m in task.calibration:
        entry[m] = summarise(task, m, values[m], retraining)
    primary = values[task.metric]
    median = statistics.median(primary)
    passing = [i for i, v in enumerate(primary) if passes(task.metric, v, entry[task.metric]["pass"])]
    best = min(passing or range(len(primary)), key=lambda i: (abs(primary[i] - median), i))
    entry["reference_seed"] = seeds[best]
    return entry


def check_bound(assignment, task, entry: dict) -> None:
    """Refuse (a ``SpecError`` naming the task) a rule under which a correct recipe would fail all its
    re-trainings more often than the spec's ``false_fail_bound`` allows."""
    if not task.retrained:
        return
    r = assignment.limits.retraining
    e = entry[task.metric]
    index = next(i for i, t in enumerate(assignment.tasks) if t.id == task.id)
    if e["retrainings"] > r.max_per_student or e["false_fail"] > r.false_fail_bound:
        k = min(e["retrainings"], r.max_per_student)
        raise SpecError(
            assignment.spec_path, f"tasks[{index}] ({task.id}).calibration.{task.metric}.pass",
            f"the reference itself misses this pass threshold in {e['missed_pass']} of {e['run_count']} runs "
            f"(a miss rate of up to {e['p_miss_pass']:.3f}, {MISS_CONFIDENCE:.0%} upper bound); a correct recipe "
            f"would fail all {k} re-trainings a student can get (max_per_student) with probability "
            f"{e['p_miss_pass'] ** max(k, 1):.2g}, more than the bound of {r.false_fail_bound:g}: loosen the rule, "
            "or calibrate with more runs")


def _write(path: Path, header: list[str], meta: dict, tasks: dict) -> None:
    text = "\n".join(f"# {h}" for h in header) + "\n\n" + tomli_w.dumps({"meta": meta, "tasks": tasks})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n" + timing_section(path))  # the reference timings stay as recorded
    tmp.replace(path)


def _quiet_training_env() -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _train_like_the_kernels() -> None:
    """Before this process's first JAX computation: XLA set up as in the notebooks' kernels (one thread), whose
    programs the compile cache holds under these very flags, so that the reference's programs load from it
    instead of compiling, and TensorFlow imported only if used (``compile_cache.defer_tensorflow``: saving
    each run's model would import it).  A process that has imported JAX already keeps its set-up: it trains
    the same networks, and only compiles its programs itself."""
    if "jax" not in sys.modules:
        os.environ.update(compile_cache.KERNEL_XLA_ENV)
    if "keras" not in sys.modules:
        compile_cache.defer_tensorflow()


def _train_runs(root: str, task_id: str, seeds: list[int], out: str,
                cache: str | None = None) -> list[tuple[int, str, object, object, str | None]]:
    """A task's reference trained once per seed, each saved to ``out``: ``[(seed, .h5 path, x, y, where its
    training program came from: "memory", "stored", "disk", "compiled", or None when not fused)]``.  Runs in a
    training process of ``calibrate`` (or in its own process, with one): the same seed trains the same network
    bit for bit in any process, so where it runs changes no threshold.  ``cache``: the assignment's compile
    cache (``execute.compile_cache``), read only."""
    _quiet_training_env()
    _train_like_the_kernels()
    # the reference runs train as the notebooks and re-trainings do: fused (Keras' semantics)
    fused_fit.install(cache_dir=cache)
    assignment = load_assignment(root, require_thresholds=False)
    task = assignment.task(task_id)
    build = import_reference(assignment, task.reference)
    done = []
    for seed in seeds:
        fused_fit.last_report.clear()
        model, (x, y) = build(seed)
        path = Path(out) / f"{task.id}-{seed}.h5"
        model.save(path)
        done.append((seed, str(path), x, y, fused_fit.last_report.get("fused_program")))
    return done


def calibrate(folder, runs: int = DEFAULT_RUNS, base_seed: int = 1000, tasks: list[str] | None = None,
              events: Events | None = None, workers: int | None = None) -> Path:
    """Run ``runs`` seeded reference runs of each chosen task (all, or ``tasks``), keep the other tasks' runs,
    derive every threshold and estimate, refuse a rule whose error rate is out of bounds (nothing is written
    then), and write ``calibration.toml``.  Returns its path.

    The tasks train in ``workers`` processes at once (default: one per core; each task's runs in one of them,
    so its program is compiled once) while this process evaluates what they saved, task by task in the
    spec's order; ``events`` (``session.Events``) hear each run as it is evaluated (``reference_run``).

    The versions of what grades depend on (``versions.current``) go to ``[meta.versions]``.  ``tasks`` keeps
    the other tasks' runs, so it is refused when the file records other versions (one calibration, one set of
    versions); a whole calibration with other versions than the file's is told to ``events.warning``."""
    events = events or Events()
    _quiet_training_env()
    assignment = load_assignment(folder, require_thresholds=False)
    _check_versions(assignment, tasks, events.warning)
    retraining = assignment.limits.retraining
    secret = f"{CALIBRATION_SECRET_PREFIX}-{base_seed}"
    seeds = [base_seed + i for i in range(runs)]
    calibrated = [t for t in assignment.model_tasks() if t.reference and t.calibration]
    # tasks marked by a curve have no thresholds to calibrate
    chosen = [t for t in calibrated if not tasks or t.id in tasks]
    if not chosen:
        raise SpecError(assignment.spec_path, None, "no task to calibrate: none has [calibration] rules"
                        + (f" among {', '.join(tasks)}" if tasks else "") + " (tasks marked by a curve need none)")
    results = _recorded(assignment, calibrated, {t.id for t in chosen}, retraining)
    n_workers = max(1, min(workers or default_workers(), len(chosen)))
    results.update(_reference_runs(assignment, chosen, seeds, secret, n_workers, events))
    for task in calibrated:
        if task.id in results:
            check_bound(assignment, task, results[task.id])
    import keras

    ordered = {t.id: results[t.id] for t in assignment.model_tasks() if t.id in results}
    meta = {"base_seed": base_seed, "heldout_secret": secret, "miss_confidence": MISS_CONFIDENCE,
            "false_fail_bound": retraining.false_fail_bound,
            "training_backend": os.environ["KERAS_BACKEND"], "keras_version": keras.__version__,
            "grader_version": __version__, "versions": versions.current()}
    out = assignment.root / (assignment.calibration_path.name if assignment.calibration_path else "calibration.toml")
    _write(out, _header(secret, retraining, ordered), meta, ordered)
    return out


def _check_versions(assignment, tasks, warn) -> None:
    """Refuse ``--task`` when the file records other versions; warn of a whole calibration's other versions."""
    changed = versions.differences(versions.recorded(assignment.calibration_path))
    if changed and tasks:
        said = "; ".join(f"{n} {now or 'not installed'} here, {rec} recorded" for n, rec, now in changed)
        raise FatalError(f"--task keeps the other tasks' runs, and {assignment.calibration_path.name} was recorded "
                         f"with other versions: {said}",
                         hint=f"calibrate every task with these versions (`grader calibrate {assignment.folder}` "
                              "without --task), or use the recorded ones")
    if changed and warn:
        warn("The previous calibration was recorded with other versions: " + "; ".join(
            f"{n} {rec} then, {now or 'not installed'} now" for n, rec, now in changed)
             + ". Grade with the versions recorded now (the Gradescope bundle pins them).")


def _recorded(assignment, calibrated, chosen_ids: set, retraining) -> dict:
    """The tasks not run this time, derived again from their recorded runs."""
    previous = {}
    if assignment.calibration_path:
        import tomllib

        previous = tomllib.loads(assignment.calibration_path.read_text()).get("tasks", {})
    results = {}
    for task in calibrated:
        old = previous.get(task.id)
        if task.id in chosen_ids or not old:
            continue
        recorded = {m: old.get(m, {}).get("runs") for m in task.calibration}
        if all(isinstance(v, list) and v for v in recorded.values()) and isinstance(old.get("seeds"), list):
            results[task.id] = task_entry(task, old["seeds"], {m: [float(x) for x in v] for m, v in recorded.items()},
                                          retraining)
        else:
            results[task.id] = old
    return results


def _reference_runs(assignment, chosen, seeds: list[int], secret: str, n_workers: int, events: Events) -> dict:
    """Each chosen task's reference trained once per seed (in ``n_workers`` processes) and evaluated here as a
    student's model is, in a grading session: {task id: its entry}."""
    from .session import GradingSession

    # the reference's compiled programs, as the batches' notebooks load them (built now where they are not)
    cache = compile_cache.ready(assignment) or compile_cache.build(assignment)
    cache = str(cache) if cache else None
    results = {}
    with GradingSession(assignment, dataset_seeds(assignment, secret)) as session, \
            tempfile.TemporaryDirectory(prefix="grader-calibrate-") as tmp, \
            _training_pool(n_workers) as pool:
        root = str(assignment.root)
        programs = Counter()
        if pool is None:
            trained = ((task, _train_runs(root, task.id, seeds, tmp, cache)) for task in chosen)
        else:
            futures = [(task, pool.submit(_train_runs, root, task.id, seeds, tmp, cache)) for task in chosen]
            trained = ((task, future.result()) for task, future in futures)
        for task, runs_of_task in trained:
            values: dict[str, list[float]] = {m: [] for m in task.calibration}
            programs.update(how for *_, how in runs_of_task if how)
            for seed, path, x, y, _ in runs_of_task:
                training = {"datasets": [task.dataset], "x": x, "y": y}
                metrics = session.evaluate(Path(path), training).datasets[task.dataset].metrics
                for m in values:
                    values[m].append(float(metrics[m]))
                events.reference_run(task.id, seed, {m: v[-1] for m, v in values.items()})
            results[task.id] = task_entry(task, seeds, values, assignment.limits.retraining)
    log.info("calibration: where the reference runs' training programs came from: %s (stored, disk: the compile "
             "cache)",
             dict(programs) or "none fused")
    return results


def _header(secret: str, retraining, ordered: dict) -> list[str]:
    """The comment at the top of calibration.toml: what it holds and how it was made."""
    return [
        f"Written by `grader calibrate` ({__version__}) on {_dt.date.today().isoformat()}: do not edit by hand,",
        "re-run the calibration instead.  Each task's reference (solution.py) was trained once per seed below,",
        "saved to .h5 and evaluated like a submission on held-out data drawn with the calibration secret",
        f"'{secret}'.  Thresholds = statistic(runs) * factor + offset, by the rules in assignment.toml.",
        "reference_seed: the run closest to the median, used by the tests and the demo submissions.",
        "Error rates, per metric: missed_pass / missed_partial of run_count reference runs missed each threshold;",
        f"p_miss_pass / p_miss_partial bound a correct run's chance of a miss ({MISS_CONFIDENCE:.0%} one-sided "
        "Clopper-Pearson upper",
        "bounds: fewer runs give larger bounds).  retrainings (K): how often the grader re-trains a student's",
        "recipe whose own run missed the pass threshold; false_fail = p_miss_pass ** K, the chance that a correct",
        f"recipe fails all K (at most {retraining.false_fail_bound:g}).  retrainings = 0: graded on one run (weights "
        "set by hand, or",
        "a fallback metric, used for models without a recipe), and false_fail is that run's chance of a miss.",
        "Runs per task: " + ", ".join(f"{tid} {len(e.get('seeds', []))}" for tid, e in ordered.items()) + ".",
        "[meta.versions]: Python and the packages grades depend on, as they were here; `grader grade` warns when it",
        "grades with others, and `grader gradescope build` pins these.",
    ]


@contextlib.contextmanager
def _training_pool(workers: int):
    """``workers`` fresh training processes (spawned: nothing of this process's Keras state), or None for one:
    then this process trains."""
    if workers <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- the reference notebook's timings: the notebooks' time limits rest on them (``execute.limits``) -------------

#: the notebook ``calibrate_timings`` times, beside the spec; an assignment without one records no timings
REFERENCE_NOTEBOOK = "solution.ipynb"
#: runs of the reference notebook per backend (medians)
DEFAULT_TIMING_RUNS = 3
#: the first line of the timings' section of the calibration file; everything from it to the end is theirs
TIMINGS_MARK = "# -- reference notebook timings"


def timing_section(path: Path) -> str:
    """The timings' section of the calibration file at ``path`` (from ``TIMINGS_MARK`` to its end, after a blank
    line), or "" when it has none: what the thresholds' calibration keeps as it was."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    at = _timings_start(text)
    return "" if at < 0 else "\n" + text[at:]


def _timings_start(text: str) -> int:
    """Where the timings' section begins in ``text`` (-1: it has none), the file's first line included (a
    file that ``--timings-only`` wrote before any thresholds starts with it)."""
    return ("\n" + text).find("\n" + TIMINGS_MARK)


def _without_timings(text: str) -> str:
    at = _timings_start(text)
    return text if at < 0 else text[:at].rstrip("\n") + "\n"


def _time_reference(assignment, notebook: Path, backend: str, limits, unsandboxed: bool = False):
    """One run of the reference notebook by the grader's own executor (``execute.execute_notebook``: the
    sandboxed kernel, the capture, the harvest a student's notebook gets) on ``backend``: its ``RunResult``.
    A reference that fails a cell (or is re-run on another backend) is refused, naming the cell."""
    import dataclasses

    from .execute import execute_notebook
    from .harvest import Harvester
    from .intake import collect_one

    spec = dataclasses.replace(assignment, notebooks=dataclasses.replace(assignment.notebooks, backend=backend))
    sub = collect_one(notebook, spec, "reference")
    if not sub.files:
        raise SpecError(assignment.spec_path, None, f"{notebook.name} could not be read as a notebook")
    with execute_notebook(spec, sub.files[0], None, harvester=Harvester(spec), seed=0, limits=limits,
                          unsandboxed=unsandboxed) as ex:
        run, failed = ex.run, list(ex.failures)
    if failed or run.backend != backend:
        f = failed[0] if failed else {"cell": "?", "explanation": f"it was re-run on {run.backend}"}
        raise SpecError(assignment.spec_path, None, f"the reference notebook {notebook.name} fails on the {backend} "
                        f"backend in cell {f['cell']}: {f['explanation'][:300]}; its timings cannot be recorded")
    return run


def backend_timings(runs) -> dict:
    """A backend's ``[timings.<backend>]`` entry from its runs (``RunResult``s): medians per code cell and of the
    whole notebook, and the slowest cell."""
    per_cell: dict[int, list[float]] = {}
    for run in runs:
        for cell in run.cells:
            per_cell.setdefault(cell.index, []).append(cell.seconds)
    order = sorted(per_cell)
    medians = [float(statistics.median(per_cell[i])) for i in order]
    slowest = max(range(len(order)), key=lambda k: medians[k])
    notebook = [float(r.seconds) for r in runs]
    return {"runs": len(runs), "notebook_s": round(float(statistics.median(notebook)), 3),
            "slowest_cell_s": round(medians[slowest], 3), "slowest_cell": order[slowest] + 1,
            "cells": [i + 1 for i in order], "cells_s": [round(v, 3) for v in medians],
            "notebook_runs_s": [round(v, 3) for v in notebook]}


def write_timings(path: Path, table: dict | None) -> None:
    """Put ``table`` (``[timings]`` and its per-backend tables) in place of the calibration file's timings
    section, keeping everything else; None removes the section."""
    try:
        text = _without_timings(path.read_text())
    except FileNotFoundError:
        text = ""
    if table is not None:
        lines = [TIMINGS_MARK + " (written by `grader calibrate`; `grader calibrate <assignment> --timings-only`",
                 "# records them again).  The reference notebook was run `runs` times per backend by the grader's own",
                 "# executor (the sandboxed kernel students get, under the spec's fixed limits); medians, in seconds.",
                 "# notebook_s: the whole notebook, kernel start included; slowest_cell_s: its slowest code cell (at",
                 "# position slowest_cell); cells / cells_s: every code cell.  probe_s: the speed probe's reading",
                 "# (grader.speed_probe) here, the median of one before the runs and one after each; when grading,",
                 "# the limits scale by the probe's reading then over probe_s.",
                 tomli_w.dumps({"timings": table}).rstrip("\n")]
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + "\n".join(lines) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def calibrate_timings(folder, runs: int = DEFAULT_TIMING_RUNS, events: Events | None = None, probe=None,
                      backends: list[str] | None = None, allow_unsandboxed: bool = False) -> tuple[Path, dict | None]:
    """Time the assignment's reference notebook (``REFERENCE_NOTEBOOK``) ``runs`` times on each of ``backends``
    (default: the spec's notebook backend) through the grader's own executor, run the speed probe before
    the runs and after each, and write the medians to the calibration file's ``[timings]`` (nothing else
    in it changes).  A backend without timings (by default tensorflow, on which a notebook is re-run when
    JAX explains its failure: ten times slower to time, and rare) runs under the spec's fixed limits.  No
    reference notebook: no timings (an old section is removed), and the spec's fixed limits apply.
    The sandbox must start here first (``sandbox.prove_isolation``: the timings are those of the sandboxed
    kernel students get), unless ``allow_unsandboxed``.  Returns (the calibration file, the table or None)."""
    from . import speed_probe
    from .execute.limits import BACKENDS, BatchLimits, fixed_limits

    probe = probe or speed_probe.probe
    os.environ.setdefault("KERAS_BACKEND", "jax")
    assignment = load_assignment(folder, require_thresholds=False)
    out = assignment.root / (assignment.calibration_path.name if assignment.calibration_path else "calibration.toml")
    notebook = assignment.root / REFERENCE_NOTEBOOK
    if not notebook.is_file():
        if assignment.calibration_path is not None:
            write_timings(out, None)
        return out, None
    from .execute.sandbox import prove_isolation

    no_sandbox = prove_isolation()
    if no_sandbox and not allow_unsandboxed:
        raise FatalError(f"cannot time {notebook.name}: its timings are those of the sandboxed kernel students get, "
                         f"and the sandbox does not start here. {no_sandbox}",
                         hint="Calibrate on the machine that grades, or pass --allow-unsandboxed to time it "
                              "without isolation (the reference solution is the course's own code).")
    settings = assignment.notebooks
    fixed = BatchLimits(tuple((b, fixed_limits(settings, b)) for b in BACKENDS))
    backends = list(dict.fromkeys(backends or [settings.backend]))
    readings = [probe()]
    table: dict = {}
    for backend in backends:
        done = []
        for i in range(runs):
            done.append(_time_reference(assignment, notebook, backend, fixed, unsandboxed=bool(no_sandbox)))
            readings.append(probe())
            if events is not None:
                events.timing_run(backend, i + 1, runs, done[-1])
        table[backend] = backend_timings(done)
    import hashlib

    head = {"notebook": notebook.name, "notebook_sha256": hashlib.sha256(notebook.read_bytes()).hexdigest(),
            "recorded": _dt.date.today().isoformat(), "grader_version": __version__,
            "probe_version": speed_probe.PROBE_VERSION, "probe_s": round(float(statistics.median(readings)), 6),
            "probe_readings": [round(r, 6) for r in readings]}
    table = {**head, **table}
    write_timings(out, table)
    return out, table

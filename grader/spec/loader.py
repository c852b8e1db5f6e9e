"""Reading and validating ``assignment.toml`` (and its ``calibration.toml``).

Every problem is a ``SpecError`` naming the file and the field, e.g.
``reference/x/assignment.toml: tasks[2].points: expected a positive number,
got 'ten'``.  Unknown keys are errors too, so a typo never passes silently.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path

from .. import versions
from ..errors import SpecError
from .model import (
    ANY, METRICS_FOR_KIND, TIME_LIMIT_MODES, Architecture, Assignment, BackendTimings, Conciseness, Curve,
    Dataset, EvaluationLimits, GradeBands, Intake, LayerPattern, MissRate, NotebookSettings, Preprocessing,
    Retraining, Task, ThresholdRule, Thresholds, Timings, passes,
)
from .tables import TableError, read_labelled_csv

SPEC_FILE = "assignment.toml"
DEFAULT_CALIBRATION_FILE = "calibration.toml"


class _Table:
    """A TOML table with its dotted location, for precise error messages."""

    def __init__(self, path: Path, where: str, data):
        if not isinstance(data, dict):
            raise SpecError(path, where or None, f"expected a table, got {data!r}")
        self.path, self.where, self.data = path, where, data
        self.used: set[str] = set()

    def _field(self, key):
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key, problem):
        raise SpecError(self.path, self._field(key), problem)

    def get(self, key, kind, default=..., check=None, expect=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            self.fail(key, f"expected {expect or kind.__name__}, got {value!r}")
        if check is not None and not check(value):
            self.fail(key, f"expected {expect}, got {value!r}")
        return value

    def table(self, key, default=...):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing (required)")
            return default
        return _Table(self.path, self._field(key), self.data[key])

    def done(self):
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(unknown[0], "unknown key (a typo?)")


TRAINING = ("fit", "hand_set", "any")


def _positive(v):
    return v > 0


def _fraction(v):
    return 0 <= v <= 1


def _ref(path, root, where, value, *, must_exist: bool = True):
    """Check a ``module:function`` reference to the assignment's own code.  ``must_exist=False`` for the
    reference solution, which a student's kit does not have (only ``calibrate`` and the demo need it)."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise SpecError(path, where, f"expected 'module:function', got {value!r}")
    module = value.split(":")[0]
    if must_exist and not (root / f"{module}.py").is_file():
        raise SpecError(path, where, f"no file {module}.py in {root}")
    return value


def _layer(path, where, value) -> LayerPattern:
    if not (isinstance(value, list) and len(value) == 2):
        raise SpecError(path, where, f"expected [units, activation], got {value!r}")
    units, acts = value
    if not (units == ANY or isinstance(units, int) and not isinstance(units, bool) and units > 0):
        raise SpecError(path, where, f"units must be a positive whole number or '*', got {units!r}")
    acts = [acts] if isinstance(acts, str) else acts
    if not (isinstance(acts, list) and acts and all(isinstance(a, str) for a in acts)):
        raise SpecError(path, where, f"activation must be a name or a list of names, got {value[1]!r}")
    return LayerPattern(units, tuple(acts))


def _architecture(t: _Table) -> Architecture:
    inputs = t.get("inputs", int, check=_positive, expect="a positive whole number")
    output = _layer(t.path, t._field("output"), t.get("output", list, expect="[units, activation]"))
    hidden = t.get("hidden", (list, str), default=ANY, expect="a list of [units, activation] or '*'")
    if hidden == ANY:
        patterns = None
    elif isinstance(hidden, str):
        t.fail("hidden", f"expected a list of [units, activation] or '*', got {hidden!r}")
    else:
        patterns = tuple(_layer(t.path, f"{t._field('hidden')}[{i}]", h) for i, h in enumerate(hidden))
    t.done()
    return Architecture(inputs, output, patterns)


def _rule(t: _Table) -> ThresholdRule:
    rule = ThresholdRule(
        statistic=t.get("statistic", str, default="median",
                        check=lambda s: s in ("min", "median", "max"), expect="min, median or max"),
        factor=t.get("factor", float, default=1.0),
        offset=t.get("offset", float, default=0.0),
    )
    t.done()
    return rule


def _dataset(name: str, t: _Table, root: Path) -> Dataset:
    kind = t.get("kind", str, check=lambda k: k in METRICS_FOR_KIND, expect="'function' or 'classes'")
    if kind == "function":
        domain = t.get("domain", list, default=[0.0, 1.0], expect="[low, high]")
        if not (len(domain) == 2 and all(isinstance(v, (int, float)) for v in domain) and domain[0] < domain[1]):
            t.fail("domain", f"expected [low, high] with low < high, got {domain!r}")
        ds = Dataset(
            name, kind,
            function=_ref(t.path, root, t._field("function"), t.get("function", str)),
            train_x=_ref(t.path, root, t._field("train_x"), t.get("train_x", str)),
            domain=(float(domain[0]), float(domain[1])),
            heldout_points=t.get("heldout_points", int, default=2000, check=lambda n: n >= 10,
                                 expect="a whole number of at least 10"),
        )
    else:
        extent = t.get("extent", list, default=[-10, 10, -10, 10], expect="[xmin, xmax, ymin, ymax]")
        if len(extent) != 4:
            t.fail("extent", f"expected [xmin, xmax, ymin, ymax], got {extent!r}")
        generator = t.get("generator", str, default=None)
        if generator is not None:
            generator = _ref(t.path, root, t._field("generator"), generator)
        file_spec = t.get("heldout_file", str, default=None)
        label_column = t.get("label_column", str, default=None)
        heldout = t.table("heldout", default=None)
        heldout = dict(heldout.data) if heldout is not None else {}
        if generator is not None and (not isinstance(heldout.get("n"), int) or heldout["n"] < 10):
            t.fail("heldout.n", "expected a whole number of held-out points, at least 10")
        heldout_file, note = None, ""
        if file_spec is not None:
            heldout_file, note = _heldout_file(t, root, file_spec, label_column, generator is not None)
        elif generator is None:
            t.fail("generator", "missing: a classes dataset needs a generator or a heldout_file")
        ds = Dataset(
            name, kind, generator=generator, heldout=heldout, extent=tuple(float(v) for v in extent),
            heldout_file=heldout_file, label_column=label_column, heldout_note=note,
        )
    t.done()
    return ds


def _heldout_file(t: _Table, root: Path, spec: str, label_column, has_generator: bool):
    """Resolve ``heldout_file`` (``~`` and ``${VAR}`` expanded, relative to the assignment folder).

    A file that is named but missing or malformed stops everything before any student is graded.  A
    path whose variable is unset falls back to the generator (the demo, the tests) and says so."""
    expanded = os.path.expanduser(os.path.expandvars(spec))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", expanded)
    if unset:
        if not has_generator:
            t.fail("heldout_file", f"{spec!r} needs the environment variable {unset[0]}, which is not set "
                                   "(and the dataset has no generator to fall back on)")
        return None, (f"The held-out file ({spec}) was not given: {unset[0]} is not set, so held-out data was "
                      "drawn from the synthetic generator. Set it to mark with the real unreleased data.")
    path = Path(expanded)
    path = path if path.is_absolute() else root / path
    try:
        read_labelled_csv(path, label_column)
    except TableError as e:
        t.fail("heldout_file", f"{path}: {e}")
    return path, ""


def _retraining(t: _Table | None) -> Retraining:
    """``[evaluation.retraining]``: how recipes that missed a pass threshold are re-trained (defaults when absent)."""
    d = Retraining()
    if t is None:
        return d
    r = Retraining(
        backend=t.get("backend", str, default=d.backend, check=lambda b: b in ("tensorflow", "jax"),
                      expect="'tensorflow' or 'jax'"),
        epochs_factor=t.get("epochs_factor", float, default=d.epochs_factor, check=lambda f: f >= 1,
                            expect="a number of at least 1"),
        max_per_student=t.get("max_per_student", int, default=d.max_per_student, check=lambda n: n >= 0,
                              expect="a whole number of at least 0"),
        budget_s=t.get("budget_s", float, default=d.budget_s, check=_positive, expect="seconds > 0"),
        false_fail_bound=t.get("false_fail_bound", float, default=d.false_fail_bound, check=lambda b: 0 < b < 1,
                               expect="a probability between 0 and 1"),
    )
    t.done()
    return r


def _curve(t: _Table, key: str, value) -> Curve:
    ok = (isinstance(value, list) and len(value) >= 2 and
          all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in p) for p in value))
    if not ok:
        t.fail(key, f"expected [[value, fraction], ...] with at least two points, got {value!r}")
    points = tuple((float(x), float(y)) for x, y in value)
    if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
        t.fail(key, "the values of a curve must increase from point to point")
    if not all(0 <= y <= 1 for _, y in points):
        t.fail(key, "every fraction of a curve must be between 0 and 1")
    return Curve(points)


def _task(t: _Table, root: Path, datasets: dict[str, Dataset], calibration: dict, cal_path) -> Task:
    task_id = t.get("id", str, check=lambda s: s.isalnum(), expect="letters and digits only")
    kind = t.get("kind", str, default="model", check=lambda k: k in ("model", "saved_file"),
                 expect="'model' or 'saved_file'")
    points = t.get("points", float, check=_positive, expect="a positive number")
    title = t.get("title", str)
    hint = t.get("hint", str, default="")
    names = tuple(t.get("names", list, default=[task_id]))
    optional = t.get("optional", bool, default=False)
    common = dict(id=task_id, title=title, points=points, kind=kind, hint=hint, names=names, optional=optional)
    if kind == "saved_file":
        return _saved_file_task(t, common)
    return _model_task(t, common, root, datasets, calibration.get(task_id, {}), cal_path)


def _saved_file_task(t: _Table, common: dict) -> Task:
    files = t.get("file_names", list, expect="a list of file names")
    fmt = t.get("format", str, check=lambda f: f in ("hdf5", "keras_zip"), expect="'hdf5' or 'keras_zip'")
    reference = t.get("reference", str, default=None)
    t.done()
    return Task(**common, dataset=None, metric=None, architecture=None, architecture_weight=0.0,
                reference=reference, partial_credit=0.5, calibration={},
                file_names=tuple(files), file_format=fmt)


def _model_task(t: _Table, common: dict, root: Path, datasets: dict[str, Dataset], recorded: dict,
                cal_path) -> Task:
    dataset = t.get("dataset", str, check=lambda d: d in datasets, expect=f"one of {sorted(datasets)}")
    allowed = METRICS_FOR_KIND[datasets[dataset].kind]
    metric = t.get("metric", str, check=lambda m: m in allowed, expect=f"one of {sorted(allowed)}")
    fallback = t.get("fallback_metric", str, default=None, check=lambda m: m in allowed and m != metric,
                     expect=f"another of {sorted(allowed)}")
    fallback_reason = t.get("fallback_reason", str, default="")
    arch = _architecture(t.table("architecture"))
    if arch.output.units == ANY:
        t.fail("architecture.output", "the output layer needs a number of units")
    weight = t.get("architecture_weight", float, default=0.2, check=_fraction, expect="a number from 0 to 1")
    partial_credit = t.get("partial_credit", float, default=0.5, check=_fraction, expect="a number from 0 to 1")
    reference = _ref(t.path, root, t._field("reference"), t.get("reference", str), must_exist=False)
    training = t.get("training", str, default="any", check=lambda v: v in TRAINING,
                     expect=" or ".join(repr(v) for v in TRAINING))
    epochs = t.get("epochs", int, default=None, check=_positive, expect="a positive whole number")
    pass_fraction = t.get("pass_fraction", float, default=1.0, check=lambda f: 0 < f <= 1,
                          expect="a number above 0, at most 1")
    curve, conciseness, preprocessing = _task_tables(t, metric)
    rules, thresholds = _task_thresholds(t, metric, fallback, curve, recorded, cal_path)
    t.done()
    seed = recorded.get("reference_seed")
    return Task(**common, dataset=dataset, metric=metric, architecture=arch, architecture_weight=weight,
                reference=reference, partial_credit=partial_credit, calibration=rules,
                fallback_metric=fallback, fallback_reason=fallback_reason, thresholds=thresholds,
                reference_seed=int(seed) if seed is not None else None, curve=curve, conciseness=conciseness,
                preprocessing=preprocessing, training=training, epochs=epochs,
                pass_fraction=pass_fraction)


def _task_tables(t: _Table, metric: str):
    """A task's ``curve``, ``conciseness`` and ``preprocessing`` tables (each None when absent)."""
    curve = None
    ct = t.table("curve", default=None)
    if ct is not None:
        for m in ct.data:
            if m != metric:
                ct.fail(m, f"a curve is for the task's metric ({metric})")
        curve = _curve(ct, metric, ct.get(metric, list))
        ct.done()
    conciseness = None
    cc = t.table("conciseness", default=None)
    if cc is not None:
        conciseness = Conciseness(cc.get("weight", float, check=lambda w: 0 < w < 1, expect="a number between 0 and 1"),
                                  _curve(cc, "nodes", cc.get("nodes", list)))
        cc.done()
    preprocessing = None
    pt = t.table("preprocessing", default=None)
    if pt is not None:
        preprocessing = Preprocessing(
            suffix=pt.get("suffix", str, check=lambda x: x.startswith(".") and len(x) > 1, expect="like '.txt'"),
            kind=pt.get("kind", str, default="offset_scale", check=lambda k: k == "offset_scale",
                        expect="'offset_scale'"))
        pt.done()
    return curve, conciseness, preprocessing


def _task_thresholds(t: _Table, metric: str, fallback, curve, recorded: dict, cal_path):
    """A task's calibration rules per metric and its thresholds: set by hand in the spec, else recorded by
    ``grader calibrate`` (``recorded``: the task's entry of the calibration file)."""
    rules = {}
    cal = t.table("calibration", default=None if curve is not None else ...)
    if cal is not None:
        for m in filter(None, (metric, fallback)):
            mt = cal.table(m)
            rules[m] = (_rule(mt.table("pass")), _rule(mt.table("partial")))
            mt.done()
        cal.done()

    thresholds = {}
    fixed = t.table("thresholds", default=None)
    if fixed is not None:  # set by hand in the spec: overrides calibration
        for m in fixed.data:
            if m not in rules:
                fixed.fail(m, f"not a metric of this task ({sorted(rules)})")
            ft = fixed.table(m)
            thresholds[m] = Thresholds(ft.get("pass", float), ft.get("partial", float),
                                       f"set by hand in {t.path.name}")
            ft.done()
        fixed.done()
    for m in rules:
        if m not in thresholds and isinstance(recorded.get(m), dict) and "pass" in recorded[m]:
            typical = recorded[m].get("median")
            thresholds[m] = Thresholds(float(recorded[m]["pass"]), float(recorded[m]["partial"]),
                                       f"calibration ({cal_path.name}, {len(recorded[m].get('runs', []))} runs)",
                                       float(typical) if typical is not None else None, _miss_rate(recorded[m]))
    for m, th in thresholds.items():
        if not passes(m, th.passing, th.partial):
            raise SpecError(t.path, t._field(f"thresholds.{m}"),
                            f"the pass threshold {th.passing} is easier than the partial one {th.partial}")
    return rules, thresholds


def _miss_rate(recorded: dict) -> MissRate | None:
    """The miss rates ``grader calibrate`` wrote beside a metric's thresholds, when it did."""
    keys = ("run_count", "missed_pass", "missed_partial", "p_miss_pass", "p_miss_partial", "retrainings")
    if not all(isinstance(recorded.get(k), (int, float)) for k in keys):
        return None
    return MissRate(int(recorded["run_count"]), int(recorded["missed_pass"]), int(recorded["missed_partial"]),
                    float(recorded["p_miss_pass"]), float(recorded["p_miss_partial"]), int(recorded["retrainings"]))


def _timings(path: Path, data) -> Timings:
    """``[timings]`` of the calibration file (written by ``grader calibrate``): the reference notebook's
    timings per backend, each a ``[timings.<backend>]`` table."""
    t = _Table(path, "timings", data)
    seconds = dict(check=lambda v: v >= 0, expect="seconds >= 0")
    backends = []
    for name in ("jax", "tensorflow"):
        if name not in t.data:
            continue
        b = t.table(name)
        cells = b.get("cells_s", list, default=[], expect="a list of seconds")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cells):
            b.fail("cells_s", f"expected a list of seconds, got {cells!r}")
        backends.append(BackendTimings(
            name, b.get("runs", int, check=_positive, expect="a positive whole number"),
            b.get("notebook_s", float, **seconds), b.get("slowest_cell_s", float, **seconds),
            b.get("slowest_cell", int, check=_positive, expect="a cell position (1 or more)"),
            tuple(float(v) for v in cells)))
    return Timings(t.get("notebook", str), t.get("notebook_sha256", str, default=""),
                   t.get("probe_s", float, check=_positive, expect="seconds > 0"),
                   t.get("probe_version", int), tuple(backends))


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(path, None, "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(path, None, f"not valid TOML: {e}") from None


def load_assignment(folder, *, require_thresholds: bool = True) -> Assignment:
    """Load and validate ``folder/assignment.toml`` and its calibration file."""
    root = Path(folder).resolve()
    if root.is_file():
        root = root.parent
    path = root / SPEC_FILE
    top = _Table(path, "", _read_toml(path))

    a = top.table("assignment")
    assignment_id = a.get("id", str)
    title = a.get("title", str)
    cal_name = a.get("calibration", str, default=DEFAULT_CALIBRATION_FILE)
    a.done()
    cal_path = root / cal_name
    recorded = _read_toml(cal_path) if cal_path.exists() else {}
    calibration = recorded.get("tasks", {})
    timings = _timings(cal_path, recorded["timings"]) if "timings" in recorded else None
    calibrated_versions = versions.from_meta(recorded.get("meta"))
    limits = _evaluation_limits(top)
    notebooks = _notebook_settings(top, root)
    intake = _intake(top)
    grades = _grade_bands(top)
    dt = top.table("datasets")
    datasets = {name: _dataset(name, dt.table(name), root) for name in list(dt.data)}
    dt.done()
    tasks = _tasks(top, path, root, datasets, calibration, cal_path)
    if recorded.get("keras2"):  # the Keras 2 path's own thresholds, where Keras 3's do not hold there
        tasks = _with_keras2_thresholds(tasks, recorded["keras2"], cal_path.name)
    top.done()
    _check_tasks(path, root, tasks, datasets, require_thresholds)
    return Assignment(assignment_id, title, root, path, datasets, tuple(tasks), limits,
                      cal_path if cal_path.exists() else None, notebooks, intake, grades, timings,
                      calibrated_versions=calibrated_versions)


def _with_keras2_thresholds(tasks: list, section: dict, cal_name: str) -> list:
    """The spec's tasks, each with the thresholds of its metrics that do not hold on the Keras 2 path
    (``Task.keras2_thresholds``), from the calibration file's ``[keras2]`` ``section`` (written by
    ``grader calibrate --keras 2``, ``grader.calibrate_keras2``)."""
    out = []
    for task in tasks:
        entry = (section.get("tasks") or {}).get(task.id) or {}
        own = {}
        for metric, e in entry.items():
            if isinstance(e, dict) and e.get("holds") is False and metric in task.thresholds:
                misses = MissRate(int(e["run_count"]), int(e.get("missed_pass_own", 0)), 0,
                                  float(e.get("p_miss_pass_own", 1.0)), 1.0, int(e.get("retrainings", 0)))
                own[metric] = Thresholds(float(e["pass"]), float(e["partial"]),
                                         f"calibration on the Keras 2 path ({cal_name} [keras2], "
                                         f"{e['run_count']} runs on tf_keras)", float(e["median"]), misses)
        out.append(dataclasses.replace(task, keras2_thresholds=own) if own else task)
    return out


def _evaluation_limits(top: _Table) -> EvaluationLimits:
    lt = top.table("evaluation", default=None)
    limits = EvaluationLimits()
    if lt is not None:
        limits = EvaluationLimits(
            backend=lt.get("backend", str, default=limits.backend,
                           check=lambda b: b in ("tensorflow", "jax"), expect="'tensorflow' or 'jax'"),
            memory_mb=lt.get("memory_mb", int, default=limits.memory_mb, check=lambda m: m >= 1024,
                             expect="at least 1024 (TensorFlow alone needs about 500 MB)"),
            timeout_s=lt.get("timeout_s", float, default=limits.timeout_s, check=_positive, expect="seconds > 0"),
            max_parameters=lt.get("max_parameters", int, default=limits.max_parameters, check=_positive,
                                  expect="a positive whole number"),
            max_layers=lt.get("max_layers", int, default=limits.max_layers, check=_positive,
                              expect="a positive whole number"),
            student_budget_s=lt.get("student_budget_s", float, default=limits.student_budget_s, check=_positive,
                                    expect="seconds > 0"),
            retraining=_retraining(lt.table("retraining", default=None)),
            student_time_s=lt.get("student_time_s", float, default=limits.student_time_s, check=_positive,
                                  expect="seconds > 0"),
        )
        lt.done()
    return limits


def _notebook_settings(top: _Table, root: Path) -> NotebookSettings:
    nt = top.table("notebooks", default=None)
    notebooks = NotebookSettings()
    if nt is not None:
        support = nt.get("support_files", dict, default={}, expect="a table of name = file in the assignment folder")
        for name, src in support.items():
            if not isinstance(src, str) or not (root / src).is_file() or "/" in name:
                nt.fail(f"support_files.{name}", f"expected a file of {root}, got {src!r}")
        notebooks = NotebookSettings(
            backend=nt.get("backend", str, default=notebooks.backend, check=lambda b: b in ("tensorflow", "jax"),
                           expect="'tensorflow' or 'jax'"),
            cell_timeout_s=nt.get("cell_timeout_s", float, default=notebooks.cell_timeout_s, check=_positive,
                                  expect="seconds > 0"),
            notebook_timeout_s=nt.get("notebook_timeout_s", float, default=notebooks.notebook_timeout_s,
                                      check=_positive, expect="seconds > 0"),
            time_limits=nt.get("time_limits", str, default=notebooks.time_limits,
                               check=lambda m: m in TIME_LIMIT_MODES, expect="'reference' or 'fixed'"),
            cell_limit_factor=nt.get("cell_limit_factor", float, default=notebooks.cell_limit_factor,
                                     check=_positive, expect="a number > 0"),
            notebook_limit_factor=nt.get("notebook_limit_factor", float, default=notebooks.notebook_limit_factor,
                                         check=_positive, expect="a number > 0"),
            min_cell_limit_s=nt.get("min_cell_limit_s", float, default=notebooks.min_cell_limit_s,
                                    check=_positive, expect="seconds > 0"),
            min_notebook_limit_s=nt.get("min_notebook_limit_s", float, default=notebooks.min_notebook_limit_s,
                                        check=_positive, expect="seconds > 0"),
            memory_mb=nt.get("memory_mb", int, default=notebooks.memory_mb, check=lambda m: m >= 1024,
                             expect="at least 1024"),
            processes=nt.get("processes", int, default=notebooks.processes, check=lambda p: p >= 16,
                             expect="at least 16"),
            max_output_kb=nt.get("max_output_kb", int, default=notebooks.max_output_kb, check=_positive,
                                 expect="a positive whole number"),
            disk_mb=nt.get("disk_mb", int, default=notebooks.disk_mb, check=lambda m: m >= 16, expect="at least 16"),
            max_files_written=nt.get("max_files_written", int, default=notebooks.max_files_written,
                                     check=lambda n: n >= 100, expect="at least 100"),
            tmp_mb=nt.get("tmp_mb", int, default=notebooks.tmp_mb, check=lambda m: m >= 16, expect="at least 16"),
            support_files=tuple(sorted(support.items())),
        )
        for low, high in (("min_cell_limit_s", "cell_timeout_s"), ("min_notebook_limit_s", "notebook_timeout_s")):
            if getattr(notebooks, low) > getattr(notebooks, high):
                nt.fail(low, f"the minimum ({getattr(notebooks, low):g} s) is above the maximum {high} "
                             f"({getattr(notebooks, high):g} s)")
        nt.done()
    return notebooks


def _intake(top: _Table) -> Intake:
    it = top.table("intake", default=None)
    intake = Intake()
    if it is not None:
        pattern = it.get("pattern", str, default="",
                         check=lambda p: p == "" or ("{student}" in p and "{task}" in p),
                         expect="a name with {student} and {task}, like '{student}-{task}'")
        exts = it.get("model_extensions", list, default=[".h5"], expect="a list like ['.h5']")
        if not all(isinstance(e, str) and e.startswith(".") for e in exts):
            it.fail("model_extensions", f"expected a list like ['.h5'], got {exts!r}")
        default = Intake()
        intake = Intake(pattern, tuple(e.lower() for e in exts),
                        max_files=it.get("max_files", int, default=default.max_files, check=_positive,
                                         expect="a positive whole number"),
                        max_megabytes=it.get("max_megabytes", int, default=default.max_megabytes, check=_positive,
                                             expect="a positive whole number"),
                        max_depth=it.get("max_depth", int, default=default.max_depth, check=_positive,
                                         expect="a positive whole number"))
        it.done()
    return intake


def _grade_bands(top: _Table) -> GradeBands | None:
    gt = top.table("grades", default=None)
    grades = None
    if gt is not None:
        bands = gt.get("bands", list, expect="[[letter, minimum percent], ...] from the best down")
        ok = all(isinstance(b, list) and len(b) == 2 and isinstance(b[0], str) and
                 isinstance(b[1], (int, float)) and not isinstance(b[1], bool) for b in bands)
        if not ok or not bands or any(b[1] >= a[1] for a, b in zip(bands, bands[1:])):
            gt.fail("bands", f"expected [[letter, minimum percent], ...] with the minimums falling, got {bands!r}")
        grades = GradeBands(tuple((str(a), float(b)) for a, b in bands))
        gt.done()
    return grades


def _tasks(top: _Table, path: Path, root: Path, datasets: dict, calibration: dict, cal_path) -> list[Task]:
    """The ``[[tasks]]``, each id once."""
    raw_tasks = top.get("tasks", list, expect="an array of [[tasks]] tables")
    tasks, seen = [], set()
    for i, raw in enumerate(raw_tasks):
        task = _task(_Table(path, f"tasks[{i}]", raw), root, datasets, calibration, cal_path)
        if task.id in seen:
            raise SpecError(path, f"tasks[{i}].id", f"task id {task.id!r} is used twice")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def _check_tasks(path: Path, root: Path, tasks: list[Task], datasets: dict, require_thresholds: bool) -> None:
    """What holds across the spec: some task, each metric's thresholds, each held-out file readable."""
    if not tasks:
        raise SpecError(path, "tasks", "the assignment has no tasks")
    if require_thresholds:
        for i, task in enumerate(tasks):
            for m in task.calibration:
                if m not in task.thresholds and not (task.curve is not None and m == task.metric):
                    raise SpecError(path, f"tasks[{i}] ({task.id})",
                                    f"no thresholds for metric {m!r}: run `grader calibrate {root}` "
                                    f"or set [tasks.thresholds.{m}] by hand")
    for task in tasks:
        ds = datasets.get(task.dataset) if task.dataset else None
        if ds is not None and ds.heldout_file is not None:
            try:
                read_labelled_csv(ds.heldout_file, ds.label_column, task.architecture.inputs)
            except TableError as e:
                raise SpecError(path, f"datasets.{ds.name}.heldout_file", f"{ds.heldout_file}: {e}") from None


def import_reference(assignment: Assignment, ref: str):
    """Resolve ``module:function`` inside the assignment folder (trusted course code).

    The module runs with its own folder first on ``sys.path`` and its sibling modules (``datasets``,
    ``solution``, ...) resolved from that folder, then those plain names are put back as they were:
    two assignments that both have a ``datasets.py`` never see each other's."""
    module_name, func = ref.split(":")
    if not (assignment.root / f"{module_name}.py").is_file():
        raise SpecError(assignment.spec_path, None, f"no file {module_name}.py in {assignment.root} (a student's "
                        "kit has no reference solution: calibration and the demo need the full assignment folder)")
    # one module per spec version: a batch of an edited spec never runs the code of an earlier one
    unique = f"_grader_ref_{assignment.id}_{(assignment.digest or '')[:12]}_{module_name}"
    module = sys.modules.get(unique)
    if module is None:
        root = str(assignment.root)
        siblings = {p.stem for p in assignment.root.glob("*.py")}
        saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name in siblings}
        sys.path.insert(0, root)
        try:
            spec = importlib.util.spec_from_file_location(unique, assignment.root / f"{module_name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[unique]
                raise
        finally:
            sys.path.remove(root)
            for name in siblings:
                sys.modules.pop(name, None)
            sys.modules.update(saved)
    try:
        return getattr(module, func)
    except AttributeError:
        raise SpecError(assignment.spec_path, None, f"{module_name}.py has no function {func!r}") from None

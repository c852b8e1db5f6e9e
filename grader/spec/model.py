"""The assignment spec as typed, validated objects.

``Assignment`` is one ``reference/<assignment>/`` folder: its tasks, their
points, metrics, expected architectures and thresholds, and the datasets the
held-out data is drawn from.  Nothing here knows any particular assignment:
every name comes from the spec file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: metric name -> True when larger is better
METRICS = {
    "mse": False,        # mean squared error against the true function (function datasets)
    "max_error": False,  # largest absolute error against the true function
    "accuracy": True,    # held-out accuracy (class datasets)
    "gap": True,         # training accuracy minus held-out accuracy (overfitting)
}



def passes(metric: str, value: float, threshold: float) -> bool:
    """Whether ``value`` of ``metric`` is at ``threshold`` or better (the one place a direction is applied)."""
    return value >= threshold if METRICS[metric] else value <= threshold


def goodness(metric: str, value: float) -> float:
    """``value`` on a scale where larger is always better (for ranking models by a metric)."""
    return value if METRICS[metric] else -value


def relation(metric: str) -> str:
    """The sign a threshold of ``metric`` is written with: ``≥`` when larger is better, else ``≤``."""
    return "≥" if METRICS[metric] else "≤"


#: which metrics a dataset kind supports
METRICS_FOR_KIND = {"function": {"mse", "max_error"}, "classes": {"accuracy", "gap"}}

ANY = "*"


@dataclass(frozen=True)
class Dataset:
    """Where a task's data comes from.

    ``kind = "function"``: a true function ``y = f(x)`` on ``domain``; held-out
    inputs are a dense grid, offset by the secret so it never equals the
    training points.  ``kind = "classes"``: a generator ``(n, ..., rng) ->
    (X, y)``; held-out data is a fresh sample with ``heldout`` arguments.
    """

    name: str
    kind: str
    function: str | None = None
    train_x: str | None = None
    domain: tuple[float, float] = (0.0, 1.0)
    heldout_points: int = 2000
    generator: str | None = None
    heldout: dict = field(default_factory=dict)
    extent: tuple[float, float, float, float] = (-10.0, 10.0, -10.0, 10.0)
    # held-out data from a file the TA keeps outside the repository (the unreleased dataset): a CSV
    # with a header row, the inputs in order and a 0/1 label column.  None: drawn from the generator.
    heldout_file: Path | None = None
    label_column: str | None = None
    heldout_note: str = ""  # said in reports when the file was named but not given


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear map from a measured value to a fraction of points (flat beyond its ends)."""

    points: tuple[tuple[float, float], ...]  # (value, fraction), values increasing

    def __call__(self, value: float) -> float:
        xs, ys = zip(*self.points)
        return float(np.interp(value, xs, ys))

    def full_at(self) -> float:
        """The value from which the curve gives full marks (for reports)."""
        best = max(p[1] for p in self.points)
        return next(p[0] for p in self.points if p[1] == best)

    def describe(self, fmt=lambda v: f"{v:g}") -> str:
        return ", ".join(f"{fmt(x)} → {y:.0%}" for x, y in self.points)


@dataclass(frozen=True)
class Conciseness:
    """Part of a task's points for a small network: ``curve`` maps the total number of nodes (units of
    every Dense layer, the output included) to a fraction of ``weight`` of the points."""

    weight: float
    curve: Curve


@dataclass(frozen=True)
class Preprocessing:
    """A file the student submits beside a model that says how to scale its inputs.

    ``kind = "offset_scale"``: a 2 x inputs array written by numpy.savetxt (space-delimited); row 0
    is subtracted from the inputs, then they are divided by row 1: ``Xt = (X - s[0]) / s[1]``.
    """

    suffix: str
    kind: str = "offset_scale"


@dataclass(frozen=True)
class LayerPattern:
    units: int | str  # a number or "*"
    activations: tuple[str, ...]  # allowed activations, or ("*",)

    def matches(self, units: int, activation: str) -> bool:
        return (self.units == ANY or self.units == units) and (
            ANY in self.activations or activation in self.activations
        )

    def describe(self) -> str:
        units = "any number of" if self.units == ANY else str(self.units)
        acts = "any activation" if ANY in self.activations else " or ".join(self.activations)
        return f"Dense({units}, {acts})"


@dataclass(frozen=True)
class Architecture:
    inputs: int
    output: LayerPattern
    hidden: tuple[LayerPattern, ...] | None  # None: any hidden stack

    def describe(self) -> str:
        hidden = "any hidden layers" if self.hidden is None else (
            ", ".join(p.describe() for p in self.hidden) or "no hidden layer")
        return f"{self.inputs} input(s); {hidden}; output {self.output.describe()}"


@dataclass(frozen=True)
class ThresholdRule:
    """How calibration turns reference runs into a threshold:
    ``statistic(runs) * factor + offset``."""

    statistic: str = "median"  # min | median | max
    factor: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class MissRate:
    """How often the reference's own runs miss a task's thresholds, from calibration (``grader.calibrate``),
    and how many re-trainings of a student's recipe that makes necessary.

    Training is random: a correct recipe misses the pass threshold in some runs.  ``p_pass`` and
    ``p_partial`` are honest upper bounds (one-sided Clopper-Pearson) on a correct run's chance of
    missing each threshold, from ``missed_pass`` and ``missed_partial`` of ``runs`` reference runs;
    ``retrainings`` (K) is the number of re-trainings after which a correct recipe has missed the pass
    threshold in all of them with probability ``p_pass ** K``, at most the spec's bound.  K = 0: the
    metric is not re-trained (weights set by hand, or a fallback metric of models without a recipe)."""

    runs: int
    missed_pass: int
    missed_partial: int
    p_pass: float
    p_partial: float
    retrainings: int


@dataclass(frozen=True)
class Thresholds:
    passing: float
    partial: float
    source: str  # where they came from, said in reports
    typical: float | None = None  # the reference runs' median, when calibrated
    misses: MissRate | None = None  # how often the reference misses them, when calibrated


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    points: float
    kind: str  # "model" or "saved_file"
    dataset: str | None
    metric: str | None
    architecture: Architecture | None
    architecture_weight: float
    names: tuple[str, ...]
    reference: str | None
    hint: str
    partial_credit: float
    calibration: dict  # metric name -> (pass rule, partial rule)
    fallback_metric: str | None = None  # used when the primary cannot be measured
    fallback_reason: str = ""
    file_names: tuple[str, ...] = ()
    file_format: str | None = None
    thresholds: dict = field(default_factory=dict)  # metric name -> Thresholds
    reference_seed: int | None = None
    optional: bool = False  # bonus points: not counted in the maximum
    curve: Curve | None = None  # metric -> fraction of the metric's points, instead of thresholds
    conciseness: Conciseness | None = None
    preprocessing: Preprocessing | None = None
    # how a notebook must have made the model to earn metric credit: "fit" (trained by model.fit, with a
    # positive learning rate, its weights moved), "hand_set" (weights set by hand; any capture) or "any"
    training: str = "any"
    # the epochs the task's reference trains (the sheet's): a re-training of a student's recipe trains at
    # most ``Retraining.epochs_factor`` times this; None: the task's recipes are not re-trained
    epochs: int | None = None
    # the share of the task's points from which it counts as passed (its status, the class page's pass rate):
    # full marks unless the spec states less (a task marked on a curve, where few earn every last point)
    pass_fraction: float = 1.0
    # metric -> Thresholds for a Keras 2 run's models that cannot be re-trained, where Keras 3's do not hold
    # there (recorded by ``grader calibrate --keras 2`` in ``[keras2]``; ``assess.judged_on`` applies them)
    keras2_thresholds: dict = field(default_factory=dict)

    def for_keras(self, keras: str | None) -> "Task":
        """The task as the models of a run on ``keras`` ("2": the Keras 2 path) are judged: with the Keras 2
        path's thresholds where it has its own."""
        if keras != "2" or not self.keras2_thresholds:
            return self
        import dataclasses

        return dataclasses.replace(self, thresholds={**self.thresholds, **self.keras2_thresholds})

    @property
    def retrained(self) -> bool:
        """Whether a notebook's recipe for this task is re-trained when its own run misses the pass threshold:
        a task trained by model.fit whose expected epochs the spec states (and then only its own metric)."""
        return self.kind == "model" and self.training == "fit" and self.epochs is not None

    def threshold(self, metric: str) -> Thresholds | None:
        return self.thresholds.get(metric)


@dataclass(frozen=True)
class Retraining:
    """How the grader re-trains the recipe of a captured model that missed a task's pass threshold
    (``grader.evaluate.retrain``): in its own training worker on ``backend``, at most ``epochs_factor``
    times the task's expected epochs per re-training, at most ``max_per_student`` re-trainings and
    ``budget_s`` seconds (re-training and evaluating the re-trained models) per student.
    ``false_fail_bound``: calibration refuses a rule under which a correct recipe would still fail all of
    its re-trainings with a larger probability."""

    backend: str = "jax"  # training on the JAX backend: about 11x faster than TensorFlow for the sheet's code
    epochs_factor: float = 2.0
    max_per_student: int = 24
    budget_s: float = 600.0
    false_fail_bound: float = 0.001


@dataclass(frozen=True)
class EvaluationLimits:
    """The evaluation worker's limits, and (``retraining``) those of re-training a student's recipe: part of
    the limits so that a changed setting means measuring again."""

    backend: str = "tensorflow"
    memory_mb: int = 4096
    timeout_s: float = 120.0
    max_parameters: int = 2_000_000
    max_layers: int = 100            # a config of 10,000 layers is refused before Keras builds it
    student_budget_s: float = 300.0  # all of one student's files together (each file: at most timeout_s)
    retraining: Retraining = Retraining()
    # everything of one student together, on the wall clock: every notebook run (a TensorFlow re-run too), the
    # loading of its captures, evaluation and re-training; each part also keeps its own limit within it
    student_time_s: float = 1200.0


#: how a notebook's time limits are set (``NotebookSettings.time_limits``)
TIME_LIMIT_MODES = ("reference", "fixed")


@dataclass(frozen=True)
class NotebookSettings:
    """How submitted notebooks run (in the sandbox).

    Time limits (``grader.execute.limits``): with ``time_limits = "reference"`` and the reference notebook's
    timings in the calibration file (``Timings``), a cell may run ``cell_limit_factor`` times the reference's
    slowest cell and the notebook ``notebook_limit_factor`` times the whole reference notebook, both scaled
    by this machine's speed (the speed probe now against the one at calibration, clamped), never less than
    ``min_cell_limit_s`` / ``min_notebook_limit_s`` and never more than ``cell_timeout_s`` /
    ``notebook_timeout_s``.  With ``time_limits = "fixed"``, or no timings recorded, ``cell_timeout_s`` and
    ``notebook_timeout_s`` are the limits."""

    backend: str = "jax"            # the fast backend; a backend-specific failure re-runs on tensorflow
    cell_timeout_s: float = 600.0   # the most a cell may ever run (the limit itself when fixed)
    notebook_timeout_s: float = 1800.0  # the most a notebook may ever run (the limit itself when fixed)
    time_limits: str = "reference"  # "reference": from the reference notebook's timings; "fixed"
    cell_limit_factor: float = 3.0  # x the reference notebook's slowest cell
    notebook_limit_factor: float = 3.0  # x the whole reference notebook
    min_cell_limit_s: float = 30.0
    min_notebook_limit_s: float = 120.0
    memory_mb: int = 4096
    processes: int = 256
    max_output_kb: int = 64
    disk_mb: int = 512              # what a run may write in its work and capture folders together
    max_files_written: int = 5000   # files and folders a run may create there
    tmp_mb: int = 256               # the sandbox's private /tmp (a memory-backed tmpfs of this size)
    support_files: tuple = ()       # ((name in the work dir, file in the assignment folder), ...)


@dataclass(frozen=True)
class BackendTimings:
    """How long the reference notebook took on one backend, run by the grader's own executor (the sandboxed
    runner students get) ``runs`` times at calibration: medians, in seconds."""

    backend: str
    runs: int
    notebook_s: float      # the whole notebook, kernel start included (what a notebook's limit counts)
    slowest_cell_s: float  # its slowest code cell
    slowest_cell: int      # that cell's position in the notebook (1-based, as reports number cells)
    cells_s: tuple[float, ...] = ()  # every code cell, in order (for a TA to read)


@dataclass(frozen=True)
class Timings:
    """``[timings]`` of the calibration file (``grader calibrate``, or ``--timings-only``): the reference
    notebook's timings per backend and the speed probe's reading on the machine that recorded them."""

    notebook: str          # the reference notebook's file name
    notebook_sha256: str   # its bytes when timed (a changed notebook is named as stale)
    probe_s: float         # the speed probe at calibration (``grader.speed_probe``)
    probe_version: int
    backends: tuple[BackendTimings, ...]

    def get(self, backend: str) -> BackendTimings | None:
        return next((b for b in self.backends if b.backend == backend), None)

    def basis(self) -> tuple:
        """What the limits rest on besides the spec's settings, and so what keys measurements: the probe's
        calibration reading and, per backend, the notebook's and its slowest cell's times (never the probe's
        reading at grading time, which is noise around the same machine)."""
        return (self.probe_version, self.probe_s,
                tuple((b.backend, b.notebook_s, b.slowest_cell_s) for b in self.backends))


@dataclass(frozen=True)
class Intake:
    """How submission files are named, when the course fixes it (e.g. ``{student}-{task}``).

    ``pattern`` empty: any name that names a task (the default).  Otherwise loose files must be
    ``pattern`` with a model extension or a task's preprocessing suffix; near misses (other case, ``_``
    or a space for ``-``, ``.hdf5`` or ``.keras`` for ``.h5``) are accepted with a warning, and any other
    file is listed as unrecognised.
    """

    pattern: str = ""
    model_extensions: tuple[str, ...] = (".h5",)
    max_files: int = 500            # files taken from one student's submission (more: a message)
    max_megabytes: int = 200        # bytes taken from one student's submission
    max_depth: int = 8              # folder depth of a submission

    def file_name(self, student: str, task: str, ext: str = "") -> str:
        """The name the pattern asks for, e.g. ``bob-2.h5`` (the model extension when ``ext`` is empty)."""
        return self.pattern.replace("{student}", student).replace("{task}", task) + (ext or self.model_extensions[0])


@dataclass(frozen=True)
class GradeBands:
    """Letter grades from the percentage of the maximum score: ((letter, minimum percent), ...)."""

    bands: tuple[tuple[str, float], ...]

    def letter(self, percent: float) -> str:
        for letter, minimum in self.bands:
            if percent >= minimum - 1e-9:
                return letter
        return self.bands[-1][0]

    def describe(self) -> str:
        return ", ".join(f"{letter} ≥ {minimum:g}%" for letter, minimum in self.bands)


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    root: Path
    spec_path: Path
    datasets: dict[str, Dataset]
    tasks: tuple[Task, ...]
    limits: EvaluationLimits
    calibration_path: Path | None
    notebooks: NotebookSettings = NotebookSettings()
    intake: Intake = Intake()
    grades: GradeBands | None = None
    timings: Timings | None = None  # the reference notebook's timings, when calibrated
    #: read through ``spec.frozen.freeze``: the folder the TA named (``root`` is then the batch's private copy
    #: of it) and the SHA-256 of its files
    source: Path | None = None
    digest: str | None = None
    #: ``[meta.versions]`` of the calibration file: Python and the packages grades depend on, as calibrated
    #: (``grader.versions``); None when not recorded
    calibrated_versions: dict | None = None

    @property
    def folder(self) -> Path:
        """The assignment folder as the TA named it (for messages such as `grader calibrate <folder>`)."""
        return self.source or self.root

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    @property
    def max_score(self) -> float:
        return math.fsum(t.points for t in self.tasks if not t.optional)

    def model_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.kind == "model"]

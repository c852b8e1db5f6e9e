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

#: metric name -> True when larger is better
METRICS = {
    "mse": False,        # mean squared error against the true function (function datasets)
    "max_error": False,  # largest absolute error against the true function
    "accuracy": True,    # held-out accuracy (class datasets)
    "gap": True,         # training accuracy minus held-out accuracy (overfitting)
}

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
class Thresholds:
    passing: float
    partial: float
    source: str  # where they came from, said in reports
    typical: float | None = None  # the reference runs' median, when calibrated


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

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]

    def threshold(self, metric: str) -> Thresholds | None:
        return self.thresholds.get(metric)


@dataclass(frozen=True)
class EvaluationLimits:
    backend: str = "tensorflow"
    memory_mb: int = 4096
    timeout_s: float = 120.0
    max_parameters: int = 2_000_000


@dataclass(frozen=True)
class NotebookSettings:
    """How submitted notebooks run (in the sandbox)."""

    backend: str = "jax"            # the fast backend; a backend-specific failure re-runs on tensorflow
    cell_timeout_s: float = 600.0
    notebook_timeout_s: float = 1800.0
    memory_mb: int = 4096
    processes: int = 256
    max_output_kb: int = 64
    support_files: tuple = ()       # ((name in the work dir, file in the assignment folder), ...)


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

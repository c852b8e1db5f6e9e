"""Result records: what results.json, the gradebook and the reports are made of."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

STATUSES = ("passed", "partial", "failed", "missing", "error")


def clean_metrics(metrics: dict) -> dict[str, float]:
    """Finite float metrics only (JSON has no NaN), rounded so reruns print identically."""
    out = {}
    for k, v in sorted(metrics.items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(f"{float(v):.10g}")
    return out


@dataclass
class TaskResult:
    id: str
    title: str
    score: float
    max_score: float
    status: str
    metrics: dict = field(default_factory=dict)
    message: str = ""
    source: str | None = None  # the file that earned it
    inferred: bool = False
    optional: bool = False
    threshold: dict | None = None
    architecture: str | None = None
    plot: dict | None = None  # plot data for the report; not serialised
    dataset: str | None = None

    def to_json(self) -> dict:
        d = {"id": self.id, "title": self.title, "score": self.score, "max_score": self.max_score,
             "status": self.status, "metrics": clean_metrics(self.metrics), "message": self.message,
             "source": self.source, "inferred": self.inferred, "optional": self.optional}
        if self.threshold:
            d["threshold"] = {k: v for k, v in self.threshold.items() if k != "source"} | \
                {"source": self.threshold.get("source")}
        if self.architecture:
            d["architecture"] = self.architecture
        return d


@dataclass
class FileResult:
    name: str
    format: str
    outcome: str  # "graded", "error", "not graded", "ignored", "unmatched"
    task: str | None = None
    message: str = ""
    model: str | None = None  # description of the model

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class StudentResult:
    id: str
    score: float
    max_score: float
    tasks: list[TaskResult]
    files: list[FileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    notebooks: list[dict] = field(default_factory=list)  # one summary per executed notebook

    @property
    def fraction(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0

    def to_json(self) -> dict:
        return {"id": self.id, "score": self.score, "max_score": self.max_score,
                "tasks": [t.to_json() for t in self.tasks], "files": [f.to_json() for f in self.files],
                "notes": list(self.notes), "notebooks": list(self.notebooks)}

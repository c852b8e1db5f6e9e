"""Result records: what results.json, the gradebook and the reports are made of."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

PASS_FRACTION = 0.5  # a student 'passes' (in progress counts and summaries) at half the maximum


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
        if self.dataset:
            d["dataset"] = self.dataset
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TaskResult":
        return cls(d["id"], d.get("title", d["id"]), d["score"], d["max_score"], d["status"], dict(d["metrics"]),
                   d["message"], d.get("source"), d.get("inferred", False), d.get("optional", False),
                   d.get("threshold"), d.get("architecture"), None, d.get("dataset"))


@dataclass
class FileResult:
    name: str
    format: str
    # "graded" (a task's model), "unmatched" (a model of no task), "error" (unreadable or refused), "executed"
    # (a notebook or script run), "imported" (a student's module, run by what imports it), "used" (an input
    # scaling file beside its model), "ignored" (not for grading)
    outcome: str
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
    grade: str | None = None  # the letter grade, when the assignment has grade bands

    @property
    def fraction(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0

    @property
    def outcome(self) -> str:
        """The student in one word, for progress counts: 'error' when the grader could not grade some
        task, else 'passed' at half the maximum score or more, else 'failed'."""
        if any(t.status == "error" for t in self.tasks):
            return "error"
        return "passed" if self.fraction >= PASS_FRACTION else "failed"

    def to_json(self) -> dict:
        d = {"id": self.id, "score": self.score, "max_score": self.max_score,
             "tasks": [t.to_json() for t in self.tasks], "files": [f.to_json() for f in self.files],
             "notes": list(self.notes), "notebooks": list(self.notebooks)}
        if self.grade is not None:
            d["grade"] = self.grade
        return d

    @classmethod
    def from_json(cls, d: dict) -> "StudentResult":
        return cls(d["id"], d["score"], d["max_score"], [TaskResult.from_json(t) for t in d["tasks"]],
                   [FileResult(**f) for f in d.get("files", [])], list(d.get("notes", [])),
                   list(d.get("notebooks", [])), d.get("grade"))


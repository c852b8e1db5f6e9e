"""What measuring a submission yields: the data scoring reads and the gradebook stores."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Source:
    """Where a model came from: a submitted file, or a notebook run."""

    name: str
    format: str
    task_hint: str | None = None
    dataset: str | None = None  # the dataset it was trained on, when a notebook run shows it (the likeliest)
    training: dict | None = None
    preprocessing: dict | None = None  # {"path": the student's scaling file or None}, for tasks that have one
    provenance: dict | None = None  # how it was made: {"made_by": "fit" | "predict" | "file" | "saved", ...}
    # measuring only, never stored: a captured fit's recipe (``evaluate.retrain.recipe_from_capture``) with
    # ``model_path``, the grader's copy of the model whose architecture a re-training starts from
    recipe: dict | None = None
    # every dataset its training data may come from, likeliest first (``harvest.identify_datasets``); a gradebook
    # written before these were kept has ``dataset`` alone
    datasets: list | None = None

    @property
    def plausible(self) -> list[str]:
        """Every dataset its training data may come from, likeliest first ([] when no notebook run showed it)."""
        return list(self.datasets) if self.datasets else [self.dataset] if self.dataset else []


@dataclass
class Measurements:
    """Everything measured of one submission; scoring needs nothing else."""

    student_id: str
    files: list  # [score.results.FileResult]: notebooks run, unreadable or ignored files
    notes: list[str]
    notebooks: list[dict]
    errors_by_task: dict[str, str]
    # every model that loaded, with the worker's measurements (and, under "retraining", those of its re-trained
    # recipe: ``grader.measure.student``)
    evaluated: list[tuple[Source, dict]]

    def to_json(self) -> dict:
        return {"student_id": self.student_id, "files": [f.to_json() for f in self.files], "notes": self.notes,
                "notebooks": self.notebooks, "errors_by_task": self.errors_by_task,
                "evaluated": [[{"name": s.name, "format": s.format, "task_hint": s.task_hint,
                                "dataset": s.dataset, "datasets": s.plausible}, e] for s, e in self.evaluated]}

    @classmethod
    def from_json(cls, d: dict) -> "Measurements":
        from ..score.results import FileResult

        return cls(d["student_id"], [FileResult(**f) for f in d["files"]], list(d["notes"]), list(d["notebooks"]),
                   dict(d["errors_by_task"]), [(Source(**s), e) for s, e in d["evaluated"]])

"""Reports: results.json, one HTML page per student, and the class index.

``Reporter`` writes into the output folder as results arrive: a student's page
and an updated ``results.json`` the moment that student is graded, so an
interrupted batch loses nothing already done.
"""
from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .. import __version__
from ..errors import OutputError
from ..score.assess import fmt_value
from ..score.results import StudentResult
from ..spec import import_reference
from . import plots


def _env() -> Environment:
    return Environment(loader=PackageLoader("grader.report", "templates"),
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def safe_name(student_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", student_id).strip("._") or "student"


def atomic_write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


class Reporter:
    def __init__(self, assignment, out_dir: Path, warnings: list[str] | None = None):
        self.assignment = assignment
        self.out = Path(out_dir)
        self.students_dir = self.out / "students"
        self.warnings = list(warnings or [])
        self.env = _env()
        self.css = resources.files("grader.report").joinpath("templates/base.css").read_text()
        self.results: dict[str, StudentResult] = {}
        self._json_written = float("-inf")
        try:
            self.students_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the output folder {self.students_dir}: {e.strerror or e}") from None

    # -- per student ----------------------------------------------------------
    def _threshold_text(self, t) -> str:
        th = t.threshold
        rel = "≥" if th["higher_is_better"] else "≤"
        m = th["metric"]
        value = t.metrics.get(m)
        shown = fmt_value(m, value) if value is not None else "?"
        return (f"{m} = {shown}; pass {rel} {fmt_value(m, th['pass'])}, partial {rel} "
                f"{fmt_value(m, th['partial'])} (thresholds from {th.get('source')})")

    def _image(self, t) -> str | None:
        if not t.plot or not t.dataset:
            return None
        ds = self.assignment.datasets[t.dataset]
        title = f"task {t.id}"
        if ds.kind == "function":
            return plots.curve(t.plot, import_reference(self.assignment, ds.function), title)
        return plots.regions(t.plot, ds.extent, title + " (held-out points)")

    def student_page(self, result: StudentResult) -> Path:
        rows = []
        for t in result.tasks:
            measured = ""
            if t.threshold and t.threshold["metric"] in t.metrics:
                m = t.threshold["metric"]
                measured = f"{m} {fmt_value(m, t.metrics[m])}"
            rows.append({**t.__dict__, "measured": measured, "image": self._image(t),
                         "threshold_text": self._threshold_text(t) if t.threshold else ""})
        html = self.env.get_template("student.html.j2").render(
            assignment=self.assignment, student=result, tasks=rows, css=self.css, version=__version__,
            warnings=self.warnings)
        path = self.students_dir / f"{safe_name(result.id)}.html"
        atomic_write(path, html)
        return path

    #: results.json is rewritten at most this often while a batch runs (the gradebook already holds every
    #: result; rewriting the whole class's file after each of 200 students would cost O(n^2) writes)
    JSON_EVERY_S = 5.0

    def add(self, result: StudentResult, *, render: bool = True) -> None:
        """Take a student's result: write their page (unless ``render`` is False: an unchanged result whose
        page is already there) and, every few seconds, ``results.json``."""
        self.results[result.id] = result
        if render:
            self.student_page(result)
            if time.monotonic() - self._json_written >= self.JSON_EVERY_S:
                self.write_json()

    # -- class ----------------------------------------------------------------
    def results_json(self) -> dict:
        return {"assignment": self.assignment.id, "title": self.assignment.title,
                "max_score": self.assignment.max_score, "grader_version": __version__,
                "students": [self.results[k].to_json() for k in sorted(self.results)]}

    def write_json(self) -> Path:
        path = self.out / "results.json"
        atomic_write(path, json.dumps(self.results_json(), indent=2, ensure_ascii=False) + "\n")
        self._json_written = time.monotonic()
        return path

    def write_index(self) -> Path:
        students = [self.results[k] for k in sorted(self.results)]
        rates = []
        for i in range(len(self.assignment.tasks)):
            done = [s.tasks[i].status == "passed" for s in students]
            rates.append(f"{100 * sum(done) / len(done):.0f}%" if done else "–")
        rows = [{"id": s.id, "score": s.score, "max_score": s.max_score, "tasks": s.tasks, "grade": s.grade,
                 "link": f"students/{safe_name(s.id)}.html"} for s in students]
        hist = plots.histogram([s.score for s in students], self.assignment.max_score) if students else None
        html = self.env.get_template("index.html.j2").render(
            assignment=self.assignment, students=rows, pass_rates=rates, histogram=hist, css=self.css,
            version=__version__, generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            warnings=self.warnings)
        path = self.out / "index.html"
        atomic_write(path, html)
        return path

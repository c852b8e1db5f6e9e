"""Reports: results.json, one HTML page per student, and the class index.

``Reporter`` writes into the output folder as results arrive: a student's page
and an updated ``results.json`` the moment that student is graded, so an
interrupted batch loses nothing already done.

A result as the gradebook stores it (``stored``) may carry TA overrides
(``store.overrides``): ``results.json`` holds it as stored, the student's page
shows each override with its reason and the grader's own score, and the class
page marks overridden scores (and those whose automatic score changed since)
and lists the students whose work is identical (``review.identical_work``).

Plots are kept by what they show (``cache.PlotCache``, in ``OUT/.plots/``
for a batch): a page drawn again draws only plots it has never drawn.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .. import __version__
from ..errors import OutputError
from ..review import describe_evidence
from ..assess import fmt_value
from ..records import StudentResult
from ..textsafe import json_text, visible
from .cache import FOLDER as PLOT_FOLDER, PlotCache, task_plot


def _finalize(value):
    """Every ``{{ ... }}`` of the pages: control and bidirectional characters shown as escapes
    (``textsafe.visible``) before autoescaping; a ``Markup`` stays one (an escape is inert HTML)."""
    if isinstance(value, Markup):
        return Markup(visible(value))
    return visible(value) if isinstance(value, str) else value


def _env() -> Environment:
    return Environment(loader=PackageLoader("grader.report", "templates"), finalize=_finalize,
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


#: a student id used as a file name as it is: portable characters, lower case (``Bob`` and ``bob`` are one file on
#: a disk that ignores case: macOS's, Windows', exFAT, SMB shares), no leading dot, not too long
_PLAIN_ID = re.compile(r"(?!\.)[a-z0-9._-]{1,100}")


def safe_name(student_id: str) -> str:
    """The file or folder name of a student's page and Gradescope export: one name per id, never shared.

    A plain id (``[a-z0-9._-]``, no leading dot, at most 100 characters) is its own name.  Any other
    id becomes its sanitised form, ``~`` and 10 hex digits of the SHA-256 of the whole id: ``x y`` ->
    ``x_y~…``, never ``x_y`` (a plain id has no ``~``), ``аlice`` (Cyrillic а) -> ``lice~…``, never
    ``alice``'s page, and ``Bob`` -> ``Bob~…``, never ``bob``'s page where the disk ignores case."""
    if _PLAIN_ID.fullmatch(student_id):
        return student_id
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", student_id).strip("._")[:40] or "student"
    digest = hashlib.sha256(student_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{readable}~{digest}"


#: each task status as the pages show it: a symbol (never colour alone: error and failed differ in both), the
#: word a reader sees, and what it means, for the legend of the class page and of each student's page
STATUSES = {
    "passed": ("✓", "passed", "full credit, or the share of the points the task counts as a pass"),
    "partial": ("~", "partial", "some of the points"),
    "failed": ("✗", "failed", "handed in, but it earned no points"),
    "missing": ("–", "missing", "nothing was handed in for this task"),
    "error": ("⚠", "could not be graded", "the grader could not read or run the work: the reason is under the "
                                          "task, and a TA looks at it"),
}


#: a kernel's reason for Keras' own fit, in a TA's words where the kernel's are the implementation's
_TA_WORDS = {"Keras' own fit (no fused fit installed)": "the fast training was not available in that run (Keras 2 "
                                                        "code, or GRADER_FUSED=0)"}


#: what the reports and exports hold (names, grades, feedback) is for their owner only
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def atomic_write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (a reader never sees half a file), readable and
    writable by its owner only; a missing folder is created for the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # a killed run's leftover: created afresh, so with the mode below
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


class Reporter:
    def __init__(self, assignment, out_dir: Path, warnings: list[str] | None = None, *, keep_plots: bool = False):
        """``keep_plots``: keep drawn plots in the output folder (``OUT/.plots``) for later pages and runs."""
        self.assignment = assignment
        self.out = Path(out_dir)
        self.students_dir = self.out / "students"
        self.warnings = list(warnings or [])
        self.env = _env()
        self.css = resources.files("grader.report").joinpath("templates/base.css").read_text()
        self.results: dict[str, StudentResult] = {}
        self.stored: dict[str, dict] = {}  # results as the gradebook holds them (overrides marked), by student
        self.time_limits: dict | None = None  # the batch's notebook time limits (``execute.limits``), when it ran any
        self._json_written = float("-inf")
        self.plots = PlotCache(self.out / PLOT_FOLDER if keep_plots else None)
        self.drawn_pages: set[str] = set()
        try:
            self.students_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
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
        plot = task_plot(self.assignment, t)
        if plot is None:
            return None
        from . import plots

        return plots.data_uri(self.plots.png(plot))

    def prepare(self, results, workers: int = 1) -> None:
        """Draw the plots the pages of ``results`` will show that are not kept yet, on ``workers`` processes
        when there are many (a page then takes them from the cache)."""
        self.plots.draw_missing([p for r in results for t in r.tasks
                                 if (p := task_plot(self.assignment, t)) is not None], workers)

    def forget_unused_plots(self) -> None:
        """When every student's page was drawn by this reporter: remove the kept plots none of them shows."""
        if self.results and self.drawn_pages >= set(self.results):
            self.plots.forget_unused()

    def student_page(self, result: StudentResult, notices: list[str] | None = None) -> Path:
        """Write a student's page; ``notices``: what the student must read first (a check's own caveats)."""
        stored = self.stored.get(result.id, {})
        overrides = {t["id"]: t["override"] for t in stored.get("tasks", []) if t.get("override")}
        rows = []
        for t in result.tasks:
            measured = ""
            if t.threshold and t.threshold["metric"] in t.metrics:
                m = t.threshold["metric"]
                measured = f"{m} {fmt_value(m, t.metrics[m])}"
            rows.append({**t.__dict__, "measured": measured, "image": self._image(t),
                         "threshold_text": self._threshold_text(t) if t.threshold else "",
                         "override": overrides.get(t.id)})
        html = self.env.get_template("student.html.j2").render(  # the batch's warnings are the TA's: class page
            assignment=self.assignment, student=result, tasks=rows, css=self.css, version=__version__,
            automatic=stored.get("automatic"), notices=notices or [], work=self._work_page(result),
            statuses=STATUSES)
        self.drawn_pages.add(result.id)
        return atomic_write(self.page_path(result.id), html)

    def _work_page(self, result: StudentResult) -> str | None:
        """Write the student's notebooks as they ran (``students/work/<name>.html``, ``grader.executed``) when the
        result carries them (``score.attach_plots``); the link from their page, or None when there is none."""
        path = self.students_dir / "work" / f"{safe_name(result.id)}.html"
        executed = getattr(result, "executed", None)
        if executed:
            from ..executed import render

            atomic_write(path, render(result.id, executed, title=self.assignment.title,
                                      back=f"../{self.page_path(result.id).name}", files=result.files))
        elif executed is not None:  # measured again, and nothing ran: an older run's page would mislead
            path.unlink(missing_ok=True)
        return f"work/{path.name}" if path.is_file() else None

    def page_path(self, student_id: str) -> Path:
        """Where a student's page is written (``students/<safe_name>.html``)."""
        return self.students_dir / f"{safe_name(student_id)}.html"

    #: results.json is rewritten at most this often while a batch runs (the gradebook already holds every
    #: result; rewriting the whole class's file after each of 200 students would cost O(n^2) writes)
    JSON_EVERY_S = 5.0

    def add(self, result: StudentResult, *, render: bool = True, stored: dict | None = None) -> None:
        """Take a student's result: write their page (unless ``render`` is False: an unchanged result whose
        page is already there) and, every few seconds, ``results.json``.  ``stored``: the result as the
        gradebook holds it, overrides marked (what ``results.json`` shows; ``result.to_json()`` when None)."""
        self.results[result.id] = result
        if stored is not None:
            self.stored[result.id] = stored
        else:
            self.stored.pop(result.id, None)
        if render:
            self.student_page(result)
            if time.monotonic() - self._json_written >= self.JSON_EVERY_S:
                self.write_json()

    # -- class ----------------------------------------------------------------
    def results_json(self) -> dict:
        data = {"assignment": self.assignment.id, "title": self.assignment.title,
                "max_score": self.assignment.max_score, "grader_version": __version__}
        if self.time_limits:  # the notebook time limits of the batch that wrote it
            data["time_limits"] = self.time_limits
        if self.warnings:  # what the class page warns the TA of, for whoever reads the file instead
            data["warnings"] = list(self.warnings)
        data["students"] = [self.stored.get(k) or self.results[k].to_json() for k in sorted(self.results)]
        return data

    def write_json(self) -> Path:
        path = self.out / "results.json"
        atomic_write(path, json_text(self.results_json(), indent=2) + "\n")  # no raw control or bidi character
        self._json_written = time.monotonic()
        return path

    def training_summary(self) -> str | None:
        """What the TA should know of how the class's notebooks trained: only when some fits could not use the
        grader's fast training (the fused fit) and so took longer, with the kernels' reasons (a count, never a
        grade: both ways train the same weights).  None when every fit took the fast way."""
        fits = fused = 0
        reasons: dict[str, int] = {}
        for result in self.results.values():
            for nb in result.notebooks:
                training = nb.get("training") or {}
                fits += int(training.get("fits", 0) or 0)
                fused += int(training.get("fused", 0) or 0)
                for why, n in (training.get("fallbacks") or {}).items():
                    reasons[str(why)] = reasons.get(str(why), 0) + int(n or 0)
        slow = sum(reasons.values()) or fits - fused
        if not fits or slow <= 0:
            return None
        words = (f"Training time: {slow} of the {fits} model trainings in students' notebooks could not use the "
                 "grader's fast training and ran Keras' usual, slower loop (the grades are the same either way)")
        if reasons:
            top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
            words += (": " + ", ".join(f"{_TA_WORDS.get(why, why)} ({n})" for why, n in top)
                      + (" and others" if len(reasons) > 5 else ""))
        return words + "."

    def pass_rule(self) -> str:
        """What the class page's pass rate counts, in words: full marks, or the spec's stated share of them."""
        lower = [t for t in self.assignment.tasks if t.pass_fraction < 1]
        words = "Pass rate: the share of students who passed each task, that is earned all its points"
        if lower:
            by = {}
            for t in lower:
                by.setdefault(t.pass_fraction, []).append(t.id)
            words += "; " + "; ".join(f"for task{'s' if len(ids) > 1 else ''} {', '.join(ids)}, at least "
                                      f"{f:.0%} of its points (pass_fraction in the spec)" for f, ids in by.items())
        return words + "."

    def write_index(self, identical: list[dict] | None = None) -> Path:
        """The class page; ``identical``: the groups of students whose work is identical
        (``review.identical_work``), listed for a TA to look at."""
        students = [self.results[k] for k in sorted(self.results)]
        rates = []
        for i in range(len(self.assignment.tasks)):
            done = [s.tasks[i].status == "passed" for s in students]
            rates.append(f"{100 * sum(done) / len(done):.0f}%" if done else "–")
        rows = [{"id": s.id, "score": s.score, "max_score": s.max_score, "tasks": s.tasks, "grade": s.grade,
                 "link": self.page_path(s.id).relative_to(self.out).as_posix(),
                 "overrides": {t["id"]: t["override"] for t in self.stored.get(s.id, {}).get("tasks", [])
                               if t.get("override")}} for s in students]
        groups = [{"students": g["students"], "evidence": [describe_evidence(e) for e in g["evidence"]]}
                  for g in identical or []]
        hist = None
        if students:
            from . import plots

            hist = plots.histogram([s.score for s in students], self.assignment.max_score)
        html = self.env.get_template("index.html.j2").render(
            assignment=self.assignment, students=rows, pass_rates=rates, histogram=hist, css=self.css,
            version=__version__, generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            warnings=self.warnings, identical=groups, pass_rule=self.pass_rule(),
            training=self.training_summary(), statuses=STATUSES)
        path = self.out / "index.html"
        atomic_write(path, html)
        return path

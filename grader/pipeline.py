"""The batch: spec -> intake -> evaluate -> score -> report, one student at a time.

A student whose grading fails for any reason gets that reason in their report
and the batch goes on; every finished student is written out at once.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .errors import FatalError, OutputError
from .evaluate import Evaluator, dataset_seeds, resolve_secret
from .intake import collect
from .report import Reporter
from .score import grade_student
from .score.results import StudentResult, TaskResult
from .spec import load_assignment


@dataclass
class BatchSummary:
    students: int
    out_dir: Path
    results_path: Path
    index_path: Path


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _internal_error(assignment, student_id: str, exc: BaseException) -> StudentResult:
    """A student whose grading hit a grader bug: every task 'error', with the reason."""
    text = f"The grader failed on this submission ({type(exc).__name__}: {exc}); a TA will look at it."
    tasks = [TaskResult(t.id, t.title, 0.0, t.points, "error", {}, text, optional=t.optional)
             for t in assignment.tasks]
    return StudentResult(student_id, 0.0, assignment.max_score, tasks,
                         notes=[text, "".join(traceback.format_exception_only(type(exc), exc)).strip()])


def grade_batch(submissions, assignment_dir, out_dir, console: Console | None = None) -> BatchSummary:
    console = console or Console(stderr=True, soft_wrap=True)
    submissions, out_dir = Path(submissions), Path(out_dir)
    assignment = load_assignment(assignment_dir)
    if not submissions.is_dir():
        raise FatalError(f"the submissions folder {submissions} does not exist or is not a folder")
    if _inside(out_dir, submissions):
        raise OutputError(f"the output folder {out_dir} is inside the submissions folder {submissions}: "
                          "the grading secret and the reports must never sit beside the submissions. "
                          "Choose another --out.")
    secret = resolve_secret(out_dir)
    if secret.created:
        console.print(f"[yellow]Created a grading secret in {secret.origin}.[/] Held-out data is drawn from it; "
                      "keep this file (or set GRADER_SECRET) so that re-grading gives the same scores.")
    students = collect(submissions, assignment)
    reporter = Reporter(assignment, out_dir)
    columns = [TextColumn("[bold]grading[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[current]}")]
    with Evaluator(assignment, dataset_seeds(assignment, secret.value)) as evaluator, \
            Progress(*columns, console=console, transient=False) as progress:
        evaluator.start()
        if not evaluator.memory_capped:
            warning = ("This platform refused the evaluation worker's memory cap: a model that claims huge "
                       "layers can still be refused by the parameter budget, but not stopped by the cap.")
            reporter.warnings.append(warning)
            console.print(f"[bold yellow]warning:[/] {warning}")
        bar = progress.add_task("grading", total=len(students), current="")
        warned_cap = False
        for sub in students:
            progress.update(bar, current=sub.student_id)
            try:
                result = grade_student(assignment, sub, evaluator)
            except FatalError:
                raise
            except Exception as exc:  # a grader bug must not end the batch
                result = _internal_error(assignment, sub.student_id, exc)
            if not warned_cap:
                evaluator.start()  # ready by now; says whether the platform took the memory cap
                warned_cap = True
                if not evaluator.memory_capped:
                    warning = ("This platform refused the evaluation worker's memory cap: a model that claims "
                               "huge layers is still refused by the parameter budget, but not stopped by the cap.")
                    reporter.warnings.append(warning)
                    console.print(f"[bold yellow]warning:[/] {warning}")
            reporter.add(result)
            progress.advance(bar)
        progress.update(bar, current="")
    reporter.write_index()
    return BatchSummary(len(students), out_dir, out_dir / "results.json", out_dir / "index.html")

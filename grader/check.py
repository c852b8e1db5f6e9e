"""``grader check``: a student's own check of one submission before the deadline.

The same pipeline as ``grade`` -- intake, the sandbox for notebooks, the
evaluation worker, scoring -- on *public* validation data: the held-out
seeds come from ``PUBLIC_SEED``, a fixed, published string, and nothing here
reads the grading secret (neither ``GRADER_SECRET`` nor a ``.grader-secret``
file).  Before any scores it runs format checks (``preflight``): file names
the grader recognises, what every required task still lacks.  It prints per
task what was found, its metric against the threshold and what to fix, writes
the same feedback as an HTML page, and exits 0 when every required task is
present and loads, 1 otherwise, so it can gate a submission.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from .errors import FatalError
from .evaluate import Evaluator, dataset_seeds
from .execute.limits import batch_limits, secs
from .execute.sandbox import unavailable_reason
from .intake import NamingPattern, Submission, collect_one
from .intake.formats import FORMAT_NAMES, MODEL_FORMATS, NOTEBOOK, SCRIPT
from .report import Reporter
from .measure.student import measure_student
from .score import score_student
from .score.assess import fmt_value
from .score.results import StudentResult
from .spec import load_assignment
from .textsafe import terminal

#: the public seed of check's validation data: published on purpose, never the grading secret
PUBLIC_SEED = "grader-check-public-validation-data"

MARK = {"passed": "[green]✓[/]", "partial": "[yellow]~[/]", "failed": "[red]✗[/]", "missing": "[red]✗[/]",
        "error": "[bold red]![/]"}
STATUS_STYLE = {"passed": "[green]passed[/]", "partial": "[yellow]partial[/]", "failed": "[red]failed[/]",
                "missing": "[red]missing[/]", "error": "[bold red]error[/]"}


@dataclass
class CheckOutcome:
    result: StudentResult
    problems: list[str] = field(default_factory=list)  # what makes the submission not gradeable
    advice: list[str] = field(default_factory=list)  # format advice that costs no points yet
    page: Path | None = None
    assignment_id: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


def submission_from(path: Path, assignment) -> Submission:
    path = Path(path)
    if not path.exists():
        raise FatalError(f"{path} does not exist")
    sub = collect_one(path, assignment, path.resolve().name or "submission")
    if not sub.files and not sub.problems:
        raise FatalError(f"nothing to check in {path}: it holds no notebook, script or model file")
    return sub


def preflight(assignment, sub: Submission) -> list[str]:
    """Format advice from file names alone, before anything runs."""
    advice = []
    pattern = assignment.intake.pattern
    expected = ", ".join(assignment.intake.file_name("username", t.id) if pattern
                         else t.id + assignment.intake.model_extensions[0] for t in assignment.model_tasks())
    advice += list(sub.warnings)
    if pattern:
        naming = NamingPattern(assignment)
        for f in sub.files:
            found = naming.match(Path(f.relative).name)
            if found is None:
                advice.append(f"{f.relative} is not named as the course asks ({expected}, and .txt files beside "
                              "them for the input scaling): it would not be marked.")
            elif found[3]:
                advice.append(found[3])
    saved_files = {Path(n).stem.lower(): t for t in assignment.tasks if t.kind == "saved_file" for n in t.file_names}
    for f in sub.files:
        stem = Path(f.relative).stem.lower()
        if f.format in MODEL_FORMATS and not f.task_hint and stem in saved_files:
            task = saved_files[stem]
            advice.append(f"{f.relative} looks like task {task.id}'s file, which must be {task.file_names[0]} "
                          f"({FORMAT_NAMES[task.file_format]}): save it with model.save('{task.file_names[0]}').")
        elif f.format in MODEL_FORMATS and not f.task_hint:
            advice.append(f"{f.relative}: the name does not say which task it answers, so the grader has to guess "
                          f"from the model. Rename it after its task ({expected}).")
        if f.format in MODEL_FORMATS and f.task_hint:
            task = assignment.task(f.task_hint)
            if task.kind == "saved_file" and task.file_format and f.format != task.file_format:
                advice.append(f"{f.relative} is {FORMAT_NAMES[f.format]}, but task {task.id} asks for "
                              f"{FORMAT_NAMES[task.file_format]}: save it with model.save('{task.file_names[0]}').")
            lower = Path(f.relative).name.lower()
            if task.kind == "saved_file" and task.file_names and lower not in {n.lower() for n in task.file_names}:
                advice.append(f"{f.relative}: task {task.id} expects the file name {task.file_names[0]}.")
    return advice


def check(path, assignment_dir, console: Console, *, out_dir: Path | None = None,
          name: str | None = None) -> CheckOutcome:
    assignment = load_assignment(assignment_dir)
    sub = submission_from(Path(path), assignment)
    has_code = any(f.format in (NOTEBOOK, SCRIPT) for f in sub.files)
    warnings = ["This is a check on public validation data, not your grade: the grader uses other held-out data."]
    if has_code and unavailable_reason():
        console.print(f"[bold red]WARNING: {terminal(unavailable_reason())}[/]\n[red]Your notebook runs as you, "
                      "on this machine, like running it in Jupyter.[/]")
        warnings.append(unavailable_reason())
    advice = preflight(assignment, sub) + [p.explain() for p in sub.problems]
    for line in advice:
        console.print(f"[yellow]![/] {terminal(line)}", highlight=False)

    def cell_progress(run):
        mark = {"ok": "[green]ok[/]", "skipped": "[dim]skipped[/]"}.get(run.status, f"[red]{run.status}[/]")
        first = terminal(next((ln for ln in run.source.splitlines() if ln.strip()), "")[:60])
        extra = terminal(f" {run.error_name}: {run.error_value[:100]}") if run.error_name else ""
        console.print(f"  cell {run.index + 1:>3} {mark} {run.seconds:5.1f} s  [dim]{first}[/]{extra}")

    limits = None
    if has_code:  # the speed probe runs once, before anything else loads the machine
        limits = batch_limits(assignment)
        used = limits.for_backend(assignment.notebooks.backend)
        console.print(f"Time limits on this machine: {secs(used.cell.seconds)} s per cell ({terminal(used.cell.why)}), "
                      f"{secs(used.notebook.seconds)} s for the notebook.", highlight=False)
        for note in limits.notes:
            console.print(f"[yellow]![/] {terminal(note)}", highlight=False)
    seeds = dataset_seeds(assignment, PUBLIC_SEED)
    with Evaluator(assignment, seeds) as evaluator:
        evaluator.start(wait=False)
        if has_code:
            console.print("[bold]Running your notebook, cell by cell:[/]")
        result = score_student(assignment, measure_student(assignment, sub, evaluator, progress=cell_progress,
                                                           limits=limits))
    result.id = name or Path(path).resolve().name or "submission"

    problems = []
    for t in result.tasks:
        if t.optional:
            continue
        if t.status == "missing":
            problems.append(f"task {t.id} is missing: {t.message}")
        elif t.status == "error":
            problems.append(f"task {t.id} could not be graded: {t.message}")
    outcome = CheckOutcome(result, problems, advice, assignment_id=assignment.id)
    _print(console, assignment, outcome)
    if out_dir is not None:
        reporter = Reporter(assignment, out_dir, warnings=warnings + advice)
        outcome.page = reporter.student_page(result)
        console.print(f"HTML feedback: [bold]{terminal(outcome.page)}[/]")
    return outcome


def _print(console: Console, assignment, outcome: CheckOutcome) -> None:
    """One block per task: verdict, points, where it was found, the metric against its threshold, and
    (unless passed) what to fix.  Lines, not a table: readable in a narrow terminal and in CI logs."""
    result = outcome.result
    console.rule(f"{terminal(assignment.title)}: check of {terminal(result.id)} on public validation data")
    for t in result.tasks:
        measured = ""
        if t.threshold and t.threshold.get("metric") in t.metrics:
            m = t.threshold["metric"]
            rel = "≥" if t.threshold.get("higher_is_better") else "≤"
            measured = f"  {m} {fmt_value(m, t.metrics[m])} (pass {rel} {fmt_value(m, t.threshold['pass'])})"
        where = f"  from {terminal(t.source)}" if t.source else ""
        optional = " (optional)" if t.optional else ""
        console.print(f"{MARK.get(t.status, '?')} task {t.id}{optional}: {STATUS_STYLE.get(t.status, t.status)} "
                      f"{t.score:g}/{t.max_score:g}{where}{measured}", highlight=False)
        if t.status != "passed":
            console.print(f"    {terminal(t.message)}", style="dim" if t.status == "missing" else None,
                          highlight=False)
    for nb in result.notebooks:
        for f in nb.get("failures", []):
            console.print(f"[red]✗[/] {terminal(nb['name'])}, cell {f['cell']} "
                          f"({terminal(f['error'] or f['status'])}): {terminal(f['explanation'])}", highlight=False)
    for note in result.notes:
        console.print(f"[dim]note:[/] {terminal(note)}", highlight=False)
    console.print(f"Estimated score on public data: [bold]{result.score:g} / {result.max_score:g}[/]")
    if outcome.problems:
        missing = [t.id for t in result.tasks if not t.optional and t.status == "missing"]
        broken = [t.id for t in result.tasks if not t.optional and t.status == "error"]
        parts = ([f"task(s) {', '.join(missing)} missing"] if missing else []) + \
                ([f"task(s) {', '.join(broken)} could not be graded"] if broken else [])
        console.print(f"[bold red]Not ready to submit:[/] {'; '.join(parts)} (see above for what to do).")
    else:
        console.print("[bold green]Every required task is present and loads.[/]")

"""``grader check``: a student's own check of one submission before the deadline.

The same pipeline as ``grade`` -- intake, the sandbox for notebooks, the
evaluation worker, scoring -- on *public* validation data: the held-out
seeds come from ``PUBLIC_SEED``, a fixed, published string, and nothing here
reads the grading secret (neither ``GRADER_SECRET`` nor a ``.grader-secret``
file).  Before any scores it runs format checks (``preflight``): file names
the grader recognises, what every required task still lacks.  It returns per
task what was found, its metric against the threshold and what to fix
(``CheckOutcome``), writes the same feedback as an HTML page, and says in
``CheckOutcome.exit_code`` whether every required task is present and loads
(0) or not (1), so it can gate a submission.  It prints nothing: ``grader
check`` in ``cli.py`` presents it.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FatalError
from .evaluate import dataset_seeds
from .execute.limits import batch_limits
from .execute.sandbox import prove_isolation
from .intake import NamingPattern, Submission, collect_one
from .intake.formats import FORMAT_NAMES, MODEL_FORMATS
from .report import Reporter
from .report.cache import PlotWarmUp
from .records import StudentResult
from .session import Events, GradingSession
from .spec import load_assignment

#: the public seed of check's validation data: published on purpose, never the grading secret
PUBLIC_SEED = "grader-check-public-validation-data"


@dataclass
class CheckOutcome:
    result: StudentResult
    problems: list[str] = field(default_factory=list)  # what makes the submission not gradeable
    advice: list[str] = field(default_factory=list)  # format advice that costs no points yet
    page: Path | None = None
    assignment_id: str = ""
    title: str = ""
    unsandboxed: str | None = None  # why the student's code ran without isolation, when it did
    not_run: str | None = None  # why this machine could not run the student's code at all: no verdict

    @property
    def exit_code(self) -> int:
        return 2 if self.not_run else 1 if self.problems else 0


def submission_from(path: Path, assignment, skip=()) -> Submission:
    """The submission at ``path``, without the files or folders ``skip`` (``not_the_students``)."""
    path = Path(path)
    if not path.exists():
        raise FatalError(f"{path} does not exist")
    sub = collect_one(path, assignment, path.resolve().name or "submission", skip=skip)
    if not sub.files and not sub.problems:
        raise FatalError(f"nothing to check in {path}: it holds no notebook, script or model file")
    return sub


def not_the_students(path: Path, assignment, out_dir: Path | None) -> tuple[list[Path], str]:
    """What ``check`` leaves out of a folder it checks: the kit (or assignment) it checks against, where it sits
    in that folder (its files, by ``kit.kit_files``; a kit folder inside it, whole), and this check's output
    folder (its earlier pages); with the words that say so (empty when nothing was left out)."""
    from .kit import kit_files

    base = Path(path).resolve()
    if not base.is_dir():
        return [], ""
    root = assignment.root.resolve()
    skip, said = [], []
    if root == base:
        skip += kit_files(assignment)
        said.append("the kit's own files (" + ", ".join(p.name for p in skip) + ")")
    elif base in root.parents:
        skip.append(root)
        said.append(f"the kit in {root.relative_to(base)}/")
    outputs = {(Path.cwd() / folder).resolve() for folder in (out_dir, Path("grader-check")) if folder is not None}
    for full in sorted(outputs):
        if base in full.parents and full.is_dir() and not any(p in full.parents for p in skip):
            skip.append(full)
            said.append(f"this check's earlier output in {full.relative_to(base)}/")
    return skip, ("Not checked: " + " and ".join(said) + ".") if said else ""


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


class CheckEvents(Events):
    """What a check tells its caller: ``Events`` and ``unsandboxed(reason)``, ``advice(line)``,
    ``limits(words)``, ``running(file)`` as each run of a notebook or script begins (again for a re-run)."""

    def __init__(self):
        self._last = {}
        self.warming = None  # the page's plot warm-up (``report.cache.PlotWarmUp``), while a check runs

    def unsandboxed(self, reason: str) -> None:
        """The student's code will run without isolation, and why."""

    def versions(self, words: str) -> None:
        """The check runs on other versions of what grades depend on than the course grades with."""

    def advice(self, line: str) -> None:
        """Format advice that costs no points yet."""

    def limits(self, words: str) -> None:
        """The time limits a notebook will run under on this machine."""

    def running(self, file: str) -> None:
        """A run of a notebook or script begins."""

    def cell(self, run, file: str) -> None:
        """Each run is announced with its file's name (``running``), then its cells (``ran``)."""
        if self._last.get("file") != file or run.index <= self._last.get("index", -1):
            self.running(file)
        self._last.update(file=file, index=run.index)
        self.ran(run)

    def ran(self, run) -> None:
        """A cell finished (``execute.CellRun``)."""

    def evaluated(self, evaluation) -> None:
        if self.warming is not None:
            self.warming.evaluated(evaluation)


def check(path, assignment_dir, *, out_dir: Path | None = None, name: str | None = None,
          events: CheckEvents | None = None) -> CheckOutcome:
    """Check one submission on public validation data; print nothing.

    ``events`` (``CheckEvents``, the session's ``Events`` and a check's own hooks) hear what happens, as it
    happens: ``unsandboxed``, ``note`` (what of the folder is not the student's and was left out), ``advice``,
    ``limits``, ``running`` (a file's run begins) and ``ran`` (each cell).
    ``out_dir``: where to write the HTML feedback page (``CheckOutcome.page``)."""
    events = events or CheckEvents()
    assignment = load_assignment(assignment_dir)
    skip, skipped = not_the_students(Path(path), assignment, out_dir)
    sub = submission_from(Path(path), assignment, skip)
    if skipped:
        events.note(skipped)
    has_code = sub.runs_code
    notices = ["This is a check on public validation data, not your grade: the grader uses other held-out data."]
    notices += [skipped] if skipped else []  # the page says what the terminal said was left out
    drift = version_drift(assignment)
    if drift:
        events.versions(drift)
        notices.append(drift)
    unsandboxed = prove_isolation() if has_code else None  # the sandbox started here, now, or why not
    if unsandboxed:
        events.unsandboxed(unsandboxed)
        notices.append(unsandboxed)
    advice = preflight(assignment, sub) + [p.explain() for p in sub.problems]
    for line in advice:
        events.advice(line)
    limits = _limits(assignment, events, sub) if has_code else None
    with GradingSession(assignment, dataset_seeds(assignment, PUBLIC_SEED), limits,
                        unsandboxed=bool(unsandboxed)) as session:  # the student's own code, warned of
        session.start(wait=False)
        # a page's plots: the first of each layout drawn while the notebook trains (``report.cache.PlotWarmUp``)
        with PlotWarmUp(assignment) if out_dir is not None else nullcontext() as warming:
            events.warming = warming
            measured = session.measure(sub, events)
        result = session.score(measured, events)
    result.id = name or Path(path).resolve().name or "submission"

    problems = []
    for t in result.tasks:
        if t.optional:
            continue
        if t.status == "missing":
            problems.append(f"task {t.id} is missing: {t.message}")
        elif t.status == "error":
            problems.append(f"task {t.id} could not be graded: {t.message}")
    outcome = CheckOutcome(result, problems, advice, assignment_id=assignment.id, title=assignment.title,
                           unsandboxed=unsandboxed, not_run=_not_run(result))
    if out_dir is not None:
        outcome.page = Reporter(assignment, out_dir).student_page(result, notices=notices + advice)
    return outcome


#: how a task says the grader's environment, not the student's code, kept a notebook or script from running
#: (``errors.KernelStartFailed``, worded by ``measure.student``)
ENVIRONMENT_FAILED = "This is the grader's environment failing, not your code"


def _not_run(result: StudentResult) -> str | None:
    """Why the check could not run the student's code on this machine (a kernel that does not start): the
    verdicts of those tasks are the machine's, not the work's, so the check has none (exit 2)."""
    failed = [t for t in result.tasks if t.status == "error" and ENVIRONMENT_FAILED in t.message]
    if not failed:
        return None
    return (f"The check could not run your code on this machine, so it has no verdict on task(s) "
            f"{', '.join(t.id for t in failed)}: {failed[0].message.split(ENVIRONMENT_FAILED)[0].strip()} Fix the "
            "installation (follow the kit's README in a new environment) and check again.")


def version_drift(assignment) -> str | None:
    """Why this check's verdicts may differ from the grade: other versions of what grades depend on
    (``versions.GRADING_PACKAGES``, Python) than the kit's ``requirements.lock`` pins or, without one, than
    the calibration recorded.  None when they agree."""
    from . import versions
    from .kit import LOCK_FILE

    lock = assignment.root / LOCK_FILE
    pinned = versions.from_lock(lock)
    if pinned is None:
        return versions.mismatch(assignment.calibrated_versions, doing="Checking")
    diffs = versions.differences(pinned)
    if not diffs:
        return None
    said = "; ".join(f"{n} {now or 'not installed'} (the course grades with {want})" for n, want, now in diffs)
    return (f"This check runs on other versions than your course grades with ({lock}): {said}. Its verdicts may "
            f"differ from your grade. Install the kit's versions in a new environment, as the kit's README says "
            f"(pip install -c {lock} ...).")


def _limits(assignment, events: CheckEvents, sub=None):
    """The notebooks' time limits on this machine (the speed probe runs once, before anything else loads it);
    for code the scan sends to Keras 2, its run's (``execute.keras2.limit_lines``)."""
    from .execute import keras2, read_notebook

    limits = batch_limits(assignment)
    for words in keras2.limit_lines(limits, assignment.notebooks.backend, sub.files if sub else [], read_notebook):
        events.limits(words)
    for note in limits.notes:
        events.advice(note)
    return limits

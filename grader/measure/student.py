"""``measure_student``: one submission's files run and evaluated, the student's own runs (no re-training).

Every file is read as untrusted bytes and *taken* (copied, never following a link) before the evaluation
worker sees it; notebooks and scripts run in the sandbox (``execute``).  One student's files share one
evaluation budget and one clock (``budget``).  Why: docs/design/measure.md.
"""
from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import untrusted
from ..errors import KernelStartFailed, NotebookUnreadable, SubmissionError, UnknownFormat, UnreadableFile
from ..evaluate import heldout, retrain
from ..execute import execute_notebook
from ..execute.limits import StudentClock
from ..harvest import MAX_MODEL_BYTES, Harvester, max_captures
from ..intake import Submission, SubmittedFile, TaskNamer
from ..intake.formats import EMPTY, FORMAT_NAMES, KERAS_ZIP, NOTEBOOK, SAVEDMODEL, SCRIPT, sniff_format
from ..keras_io import saved_model_refusal
from ..records import COULD_NOT_GRADE, FileResult, Measurements, Provenance, Source
from .budget import Budget, student_clock

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras", ".pb")
MAX_SCALING_BYTES = 256 * 1024


def run_seed(seeds: dict, submission: Submission, file: SubmittedFile) -> int:
    """The seed a notebook runs with (its kernel's ``PYTHONHASHSEED``, which the notebook can print): 31 bits
    of an HMAC under the kernels' key (``heldout.run_key``, from the stretched grading secret) of the bytes of
    the whole submission and the notebook's name.  The same files and secret always train the same way; the
    seed shows nothing of the key, and checking a guessed secret against it costs the KDF."""
    parts = []
    for f in sorted(submission.files, key=lambda f: f.relative):
        try:
            digest, _ = untrusted.sha256_relative(f.base, f.relative)
        except (OSError, untrusted.Refused):
            digest = "unreadable"
        parts += [f.relative, digest]
    return heldout.keyed_seed(heldout.run_key(seeds, "kernel"), *parts, "notebook", file.relative, bits=31)


def measure_student(assignment, submission: Submission, evaluator, *, scratch: Path, events=None, limits=None,
                    unsandboxed: bool = False, clock: StudentClock | None = None) -> Measurements:
    """The student's own runs: every file taken into ``scratch`` (a folder the grader owns, which the caller
    removes after re-training), run and evaluated.  Each model's ``Source`` keeps its recipe and training data
    for re-training (``retrain``).  ``events``: ``cell(run, file)`` after each cell of a notebook or script,
    ``evaluated(evaluation)`` as each model is measured (in the evaluating thread).  ``limits``: the notebooks'
    time limits (``execute.limits.BatchLimits``; None: this process's own).  ``unsandboxed``: run notebooks
    even where they cannot be isolated.  ``clock``: the student's whole time (``budget.student_clock``)."""
    m = _Measuring(assignment, submission, evaluator, Path(scratch), events, student_clock(assignment, clock))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-evaluate") as pool:
        m.pool = pool
        for f in submission.files:
            m.file(f, limits, unsandboxed)
    return m.measurements()


class _Measuring:
    """One submission being measured: what it has given so far.  Models are evaluated in one background
    thread (the only user of the evaluator meanwhile), so a notebook's models are measured while its later
    cells still train."""

    def __init__(self, assignment, submission: Submission, evaluator, taken: Path, events, clock: StudentClock):
        self.assignment, self.submission, self.evaluator, self.taken = assignment, submission, evaluator, taken
        self.events, self.clock, self.pool = events, clock, None
        self.files: list[FileResult] = []
        self.notes = [p.explain() for p in submission.problems] + list(submission.warnings)
        self.notebooks: list[dict] = []
        self.executed: list[dict] = []  # each notebook as it ran (``grader.executed``), for the student's page
        self.errors_by_task: dict[str, str] = {}
        self.namer = TaskNamer(assignment)
        self.budget = Budget(assignment.limits.student_budget_s, assignment.limits.timeout_s, clock)
        self.pending: list[tuple[Source, Future]] = []
        self.most_data = max_captures(assignment)  # captures whose training data one student's measuring may hold

    def file_error(self, f: SubmittedFile, error: SubmissionError):
        self.files.append(FileResult(f.relative, f.format, "error", f.task_hint, error.explain()))
        if f.task_hint:
            self.errors_by_task.setdefault(f.task_hint, error.explain())

    def take(self, f: SubmittedFile, limit: int) -> Path:
        dest = self.taken / str(len(list(self.taken.iterdir())))
        dest.mkdir()
        return f.take(dest / f.name, limit)

    def _evaluate(self, source: Source, path):
        evaluation, error = self.budget.evaluate(self.evaluator, source, path)
        if error is None and self.events is not None:
            self.events.evaluated(evaluation)
        return evaluation, error

    def submit(self, source: Source, path):
        self.pending.append((source, self.pool.submit(self._evaluate, source, path)))

    def file(self, f: SubmittedFile, limits, unsandboxed: bool) -> None:
        """Measure one of the submission's files, by its role and format."""
        add = self.files.append
        if f.role == "preprocessing":
            model = next((m for m in self.submission.files if m.is_model and m.task_hint == f.task_hint), None)
            add(FileResult(f.relative, f.format, "used" if model else "ignored", f.task_hint,
                           f"the input scaling of task {f.task_hint}'s model" if model else
                           f"an input scaling file for task {f.task_hint}, but no model of that task was "
                           "submitted beside it"))
        elif f.format == SAVEDMODEL:
            self.file_error(f, saved_model_refusal(f.relative))
        elif f.is_model:
            self.model(f)
        elif f.role == "imported":
            add(FileResult(f.relative, f.format, "imported", None,
                           "a module your own notebook or script imports: given to it, not run on its own"))
        elif f.format in (NOTEBOOK, SCRIPT):
            self.notebook(f, limits, unsandboxed)
        elif f.name.lower().endswith(".ipynb"):
            add(FileResult(f.relative, f.format, "error", None,
                           NotebookUnreadable(f"{f.relative} is not a valid notebook: its JSON is damaged or "
                                              "incomplete.", hint="Download it again from Jupyter/Colab (File > "
                                              "Download > .ipynb) and re-submit.").explain()))
        elif f.name.lower().endswith(MODEL_SUFFIXES) or f.task_hint:
            what = "is empty" if f.format == EMPTY else "is not a Keras model: its bytes are neither HDF5 nor a " \
                                                       ".keras zip"
            self.file_error(f, UnknownFormat(f"{f.relative} {what} (was it renamed, or only partly uploaded?).",
                                             hint="Save the model again with model.save('name.h5') and upload "
                                                  "that file."))
        else:
            add(FileResult(f.relative, f.format, "ignored", None,
                           f"{FORMAT_NAMES.get(f.format, f.format)}; not used for grading."))

    def model(self, f: SubmittedFile) -> None:
        """A submitted model file (and its scaling file), taken and evaluated."""
        task = self.assignment.task(f.task_hint) if f.task_hint else None
        pre = None
        try:
            if task is not None and task.preprocessing is not None:
                companion = self.submission.companion(task.id)
                pre = {"path": str(self.take(companion, MAX_SCALING_BYTES)) if companion else None}
            path = self.take(f, MAX_MODEL_BYTES)
        except untrusted.Refused as e:
            self.file_error(f, UnreadableFile(f"{f.relative}: {e}; it was not graded."))
            return
        self.submit(Source(f.relative, f.format, f.task_hint, preprocessing=pre, provenance=Provenance("file")),
                    path)

    def captured(self, cap, nb_name: str, first: int) -> None:
        """A model the notebook's run made (``harvest.Capture``); None: the run is being redone."""
        if cap is None:  # drop what the run gave
            for _, future in self.pending[first:]:
                future.cancel() or future.exception()
            del self.pending[first:]
            return
        held = sum(s.provenance is not None and s.provenance.samples is not None for s, _ in self.pending)
        if cap.x is not None and held >= self.most_data:  # every notebook of the student's together
            cap.x = cap.y = None  # graded as a model still, its data no longer held
        self.submit(capture_source(cap, nb_name, self.taken / "recipes"), cap.model_path)

    def notebook(self, f: SubmittedFile, limits, unsandboxed: bool) -> None:
        """A notebook or script, run in the sandbox; its models evaluated as they are made."""
        first = len(self.pending)
        events = self.events
        heard = (lambda run, name=f.relative: events.cell(run, name)) if events is not None else None
        try:
            with execute_notebook(self.assignment, f, self.submission.root, progress=heard,
                                  harvester=Harvester(self.assignment, self.clock,
                                                      lambda cap: self.captured(cap, f.relative, first)),
                                  limits=limits, unsandboxed=unsandboxed, clock=self.clock,
                                  seed=run_seed(self.evaluator.seeds, self.submission, f)) as ex:
                summary = ex.summary()
                self.notebooks.append(summary)
                if getattr(ex, "executed", None) is not None:
                    self.executed.append(ex.executed)
                self.notes.extend(ex.notes)
                self.files.append(FileResult(f.relative, f.format, "executed", None,
                                             f"ran {summary['cells_run']} cell(s) in {summary['seconds']} s on the "
                                             f"{summary['backend']} backend; {summary['cells_failed']} failed; "
                                             f"{summary['models_captured']} model(s) captured"))
                for rel, path in ex.saved:
                    self.submit(Source(f"{rel} (saved by {f.relative})", sniff_format(path),
                                       self.namer.task_for(Path(rel).name), provenance=Provenance("saved")), path)
                for _, future in self.pending[first:]:
                    future.exception()  # wait: the models live in the run's scratch folder
        except KernelStartFailed as e:  # the grader's environment: what it would give is unknown
            self.files.append(FileResult(f.relative, f.format, "error", None, e.explain()))
            for task in self.assignment.tasks:
                self.errors_by_task.setdefault(task.id, _not_run(f.relative, e))
        except SubmissionError as e:
            self.files.append(FileResult(f.relative, f.format, "error", None, e.explain()))

    def measurements(self) -> Measurements:
        evaluated = []  # (Source, Evaluation), in submission order
        for source, future in self.pending:
            evaluation, error = future.result()
            if error is None:
                evaluated.append((source, evaluation))
                continue
            self.files.append(FileResult(source.name, source.format, "error", source.task_hint, error.explain()))
            if source.task_hint:
                self.errors_by_task.setdefault(source.task_hint, error.explain())
        measured = Measurements(self.submission.student_id, self.files, self.notes, self.notebooks,
                                self.errors_by_task, evaluated)
        measured.executed = self.executed
        return measured


def _not_run(name: str, error: SubmissionError) -> str:
    """A task's words when a notebook that could have answered it could not be run: could not be graded."""
    said = " ".join(error.message.split()).rstrip(".")
    return (f"{COULD_NOT_GRADE}: {name} could not be run, so what it would give for this task is unknown "
            f"({said}). This is the grader's environment failing, not your code; a TA will re-run the grading.")


def capture_source(cap, notebook: str, keep: Path) -> Source:
    """The ``Source`` of a model a notebook run captured (``harvest.Capture``).  A fit's model is copied into
    ``keep`` (a folder the grader owns), beyond the notebook run's scratch folder, with its recipe, for
    ``retrain_recipes``."""
    recipe = None
    if cap.event == "fit":
        keep.mkdir(parents=True, exist_ok=True)
        copy = keep / f"{len(list(keep.iterdir()))}{cap.model_path.suffix}"  # .h5 from the Keras 2 path
        shutil.copyfile(cap.model_path, copy)  # the grader's own copy (``harvest.take_capture``): no link in it
        recipe = {**retrain.recipe_from_capture(cap.settings, cap.x, cap.y), "model_path": str(copy)}
    fmt = KERAS_ZIP if cap.model_path.suffix == ".keras" else sniff_format(cap.model_path)
    return Source(cap.label(notebook), fmt, None, cap.dataset, cap.training(), provenance=cap.provenance(),
                  recipe=recipe, datasets=list(cap.datasets) or None)

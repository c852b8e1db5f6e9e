"""``measure_student``: one submission's files run and evaluated.

Every file is read as untrusted bytes: a submitted model (and its scaling
file) is first *taken* -- copied without following links into a folder the
grader owns -- and only that copy goes to the evaluation worker; a notebook
runs in the sandbox (``execute``), which hands back copies too.  One
student's files share one evaluation time budget (the spec's
``student_budget_s``), so a submission of many slow files cannot hold a
worker for long.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import untrusted
from ..errors import EvaluationTimeout, NotebookUnreadable, SubmissionError, UnknownFormat, UnreadableFile
from ..execute import _remove, execute_notebook
from ..harvest import MAX_MODEL_BYTES
from ..intake import Submission, SubmittedFile, TaskNamer
from ..intake.formats import EMPTY, FORMAT_NAMES, KERAS_ZIP, NOTEBOOK, SAVEDMODEL, SCRIPT
from ..keras_io import saved_model_refusal
from ..score.results import FileResult
from .records import Measurements, Source

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras", ".pb")
MAX_SCALING_BYTES = 256 * 1024


def run_seed(seeds: dict, submission: Submission, file: SubmittedFile) -> int:
    """The seed a notebook runs with: from the held-out seeds (so from the grading secret), the bytes of the
    whole submission and the notebook's name.  The same files and secret always train the same way."""
    h = hashlib.sha256(json.dumps(sorted(seeds.items())).encode())
    for f in sorted(submission.files, key=lambda f: f.relative):
        try:
            digest, _ = untrusted.sha256_relative(f.base, f.relative)
        except (OSError, untrusted.Refused):
            digest = "unreadable"
        h.update(f"{f.relative}\0{digest}\0".encode())
    h.update(file.relative.encode())
    return int.from_bytes(h.digest()[:4], "little")


class _Budget:
    """The evaluation time one student's files share."""

    def __init__(self, limits):
        self.per_file, self.total = limits.timeout_s, limits.student_budget_s
        self.used = 0.0

    def evaluate(self, evaluator, source: Source, path):
        left = self.total - self.used
        if left <= 0:
            return None, EvaluationTimeout(
                f"{source.name}: not evaluated; this submission's files used up the grader's evaluation time "
                f"of {self.total:.0f} s per student before it.",
                hint="Submit only the models the tasks ask for.")
        t0 = time.monotonic()
        try:
            evaluation = evaluator.evaluate(path, source.training, source.preprocessing,
                                            timeout=min(self.per_file, left))
            evaluation["provenance"] = source.provenance  # scoring reads it (was this model trained?)
            return evaluation, None
        except SubmissionError as e:
            return None, e
        finally:
            self.used += time.monotonic() - t0


def measure_student(assignment, submission: Submission, evaluator, *, progress=None) -> Measurements:
    files: list[FileResult] = []
    notes = [p.explain() for p in submission.problems] + list(submission.warnings)
    notebooks: list[dict] = []
    errors_by_task: dict[str, str] = {}
    namer = TaskNamer(assignment)
    budget = _Budget(assignment.limits)
    taken = Path(tempfile.mkdtemp(prefix="grader-student-"))  # the grader's copies of the student's files
    # models are evaluated in one background thread (the only user of the evaluator meanwhile), so
    # that a notebook's models are measured while its later cells still train
    pending: list[tuple[Source, Future]] = []

    def file_error(f: SubmittedFile, error: SubmissionError):
        files.append(FileResult(f.relative, f.format, "error", f.task_hint, error.explain()))
        if f.task_hint:
            errors_by_task.setdefault(f.task_hint, error.explain())

    def take(f: SubmittedFile, limit: int) -> Path:
        dest = taken / str(len(list(taken.iterdir())))
        dest.mkdir()
        return f.take(dest / f.name, limit)

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-evaluate") as pool:
            def submit(source: Source, path):
                pending.append((source, pool.submit(budget.evaluate, evaluator, source, path)))

            for f in submission.files:
                if f.role == "preprocessing":
                    model = next((m for m in submission.files if m.is_model and m.task_hint == f.task_hint), None)
                    files.append(FileResult(f.relative, f.format, "used" if model else "ignored", f.task_hint,
                                            f"the input scaling of task {f.task_hint}'s model" if model else
                                            f"an input scaling file for task {f.task_hint}, but no model of that "
                                            "task was submitted beside it"))
                elif f.format == SAVEDMODEL:
                    file_error(f, saved_model_refusal(f.relative))
                elif f.is_model:
                    task = assignment.task(f.task_hint) if f.task_hint else None
                    pre = None
                    try:
                        if task is not None and task.preprocessing is not None:
                            companion = submission.companion(task.id)
                            pre = {"path": str(take(companion, MAX_SCALING_BYTES)) if companion else None}
                        path = take(f, MAX_MODEL_BYTES)
                    except untrusted.Refused as e:
                        file_error(f, UnreadableFile(f"{f.relative}: {e}; it was not graded."))
                        continue
                    submit(Source(f.relative, f.format, f.task_hint, preprocessing=pre,
                                  provenance={"made_by": "file"}), path)
                elif f.role == "imported":
                    files.append(FileResult(f.relative, f.format, "imported", None,
                                            "a module your own notebook or script imports: given to it, not run "
                                            "on its own"))
                elif f.format in (NOTEBOOK, SCRIPT):
                    first = len(pending)

                    def on_capture(cap, nb_name=f.relative, first=first):
                        if cap is None:  # the run is being redone: drop what it gave
                            for _, future in pending[first:]:
                                future.cancel() or future.exception()
                            del pending[first:]
                            return
                        submit(Source(cap.label(nb_name), KERAS_ZIP, None, cap.dataset, cap.training(),
                                      provenance=cap.provenance()), cap.model_path)

                    try:
                        with execute_notebook(assignment, f, submission.root, progress=progress,
                                              on_capture=on_capture,
                                              seed=run_seed(evaluator.seeds, submission, f)) as ex:
                            summary = ex.summary()
                            notebooks.append(summary)
                            notes.extend(ex.notes)
                            files.append(FileResult(f.relative, f.format, "executed", None,
                                                    f"ran {summary['cells_run']} cell(s) in {summary['seconds']} s "
                                                    f"on the {summary['backend']} backend; "
                                                    f"{summary['cells_failed']} failed; "
                                                    f"{summary['models_captured']} model(s) captured"))
                            for rel, path in ex.saved:
                                submit(Source(f"{rel} (saved by {f.relative})", _model_format(path),
                                              namer.task_for(Path(rel).name), provenance={"made_by": "saved"}),
                                       path)
                            for _, future in pending[first:]:
                                future.exception()  # wait: the models live in the run's scratch folder
                    except SubmissionError as e:
                        files.append(FileResult(f.relative, f.format, "error", None, e.explain()))
                elif f.name.lower().endswith(".ipynb"):
                    files.append(FileResult(f.relative, f.format, "error", None,
                                            NotebookUnreadable(f"{f.relative} is not a valid notebook: its JSON is "
                                                               "damaged or incomplete.", hint="Download it again "
                                                               "from Jupyter/Colab (File > Download > .ipynb) and "
                                                               "re-submit.").explain()))
                elif f.name.lower().endswith(MODEL_SUFFIXES) or f.task_hint:
                    what = ("is empty" if f.format == EMPTY else
                            "is not a Keras model: its bytes are neither HDF5 nor a .keras zip")
                    file_error(f, UnknownFormat(f"{f.relative} {what} (was it renamed, or only partly uploaded?).",
                                                hint="Save the model again with model.save('name.h5') and upload "
                                                     "that file."))
                else:
                    files.append(FileResult(f.relative, f.format, "ignored", None,
                                            f"{FORMAT_NAMES.get(f.format, f.format)}; not used for grading."))

        evaluated = []  # (Source, evaluation), in submission order
        for source, future in pending:
            evaluation, error = future.result()
            if error is None:
                evaluated.append((source, evaluation))
                continue
            files.append(FileResult(source.name, source.format, "error", source.task_hint, error.explain()))
            if source.task_hint:
                errors_by_task.setdefault(source.task_hint, error.explain())
    finally:
        _remove(taken)
    for source, _ in evaluated:
        source.training = source.preprocessing = None  # used by the worker; scoring needs only its name
    return Measurements(submission.student_id, files, notes, notebooks, errors_by_task, evaluated)


def _model_format(path: Path) -> str:
    from ..intake.formats import sniff_format

    return sniff_format(path)


def grade_student(assignment, submission: Submission, evaluator, *, progress=None):
    """Measure, then score, one submission (no gradebook): for ``check`` and the tests."""
    from ..score import score_student

    return score_student(assignment, measure_student(assignment, submission, evaluator, progress=progress))

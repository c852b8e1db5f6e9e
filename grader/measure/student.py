"""``measure_student``: one submission's files run and evaluated."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import NotebookUnreadable, SubmissionError, UnknownFormat
from ..execute import execute_notebook
from ..intake import Submission, TaskNamer
from ..intake.formats import EMPTY, FORMAT_NAMES, KERAS_ZIP, NOTEBOOK, SCRIPT, sniff_format
from ..score.results import FileResult
from .records import Measurements, Source

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras", ".pb")


def _evaluate(evaluator, source: Source, path):
    try:
        return evaluator.evaluate(path, source.training, source.preprocessing), None
    except SubmissionError as e:
        return None, e


def measure_student(assignment, submission: Submission, evaluator, *, progress=None) -> Measurements:
    files: list[FileResult] = []
    notes = [p.explain() for p in submission.problems] + list(submission.warnings)
    notebooks: list[dict] = []
    errors_by_task: dict[str, str] = {}
    namer = TaskNamer(assignment)
    # models are evaluated in one background thread (the only user of the evaluator meanwhile), so
    # that a notebook's models are measured while its later cells still train
    pending: list[tuple[Source, Future]] = []

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-evaluate") as pool:
        def submit(source: Source, path):
            pending.append((source, pool.submit(_evaluate, evaluator, source, path)))

        for f in submission.files:
            if f.role == "preprocessing":
                model = next((m for m in submission.files if m.is_model and m.task_hint == f.task_hint), None)
                files.append(FileResult(f.relative, f.format, "used" if model else "ignored", f.task_hint,
                                        f"the input scaling of task {f.task_hint}'s model" if model else
                                        f"an input scaling file for task {f.task_hint}, but no model of that "
                                        "task was submitted beside it"))
            elif f.is_model:
                task = assignment.task(f.task_hint) if f.task_hint else None
                pre = None
                if task is not None and task.preprocessing is not None:
                    companion = submission.companion(task.id)
                    pre = {"path": str(companion.path) if companion else None}
                submit(Source(f.relative, f.format, f.task_hint, preprocessing=pre), f.path)
            elif f.format in (NOTEBOOK, SCRIPT):
                first = len(pending)

                def on_capture(cap, nb_name=f.relative, first=first):
                    if cap is None:  # the run is being redone: drop what it gave
                        for _, future in pending[first:]:
                            future.cancel() or future.exception()
                        del pending[first:]
                        return
                    submit(Source(cap.label(nb_name), KERAS_ZIP, None, cap.dataset, cap.training()),
                           cap.model_path)

                try:
                    with execute_notebook(assignment, f.path, f.format, submission.root, progress=progress,
                                          on_capture=on_capture) as ex:
                        summary = ex.summary()
                        notebooks.append(summary)
                        notes.extend(ex.notes)
                        files.append(FileResult(f.relative, f.format, "executed", None,
                                                f"ran {summary['cells_run']} cell(s) in {summary['seconds']} s on "
                                                f"the {summary['backend']} backend; {summary['cells_failed']} "
                                                f"failed; {summary['models_captured']} model(s) captured"))
                        for path in ex.saved:
                            rel = path.relative_to(ex.work_dir).as_posix()
                            submit(Source(f"{rel} (saved by {f.relative})", sniff_format(path),
                                          namer.task_for(path.name)), path)
                        for _, future in pending[first:]:
                            future.exception()  # wait: the models live in the run's scratch folder
                except SubmissionError as e:
                    files.append(FileResult(f.relative, f.format, "error", None, e.explain()))
            elif f.path.suffix.lower() == ".ipynb":
                files.append(FileResult(f.relative, f.format, "error", None,
                                        NotebookUnreadable(f"{f.relative} is not a valid notebook: its JSON is "
                                                           "damaged or incomplete.", hint="Download it again from "
                                                           "Jupyter/Colab (File > Download > .ipynb) and re-submit.")
                                        .explain()))
            elif f.path.suffix.lower() in MODEL_SUFFIXES or f.task_hint:
                what = ("is empty" if f.format == EMPTY else
                        "is not a Keras model: its bytes are neither HDF5 nor a .keras zip")
                e = UnknownFormat(f"{f.relative} {what} (was it renamed, or only partly uploaded?).",
                                  hint="Save the model again with model.save('name.h5') and upload that file.")
                files.append(FileResult(f.relative, f.format, "error", f.task_hint, e.explain()))
                if f.task_hint:
                    errors_by_task.setdefault(f.task_hint, e.explain())
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
    for source, _ in evaluated:
        source.training = source.preprocessing = None  # used by the worker; scoring needs only its name
    return Measurements(submission.student_id, files, notes, notebooks, errors_by_task, evaluated)


def grade_student(assignment, submission: Submission, evaluator, *, progress=None):
    """Measure, then score, one submission (no gradebook): for ``check`` and the tests."""
    from ..score import score_student

    return score_student(assignment, measure_student(assignment, submission, evaluator, progress=progress))

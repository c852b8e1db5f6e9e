"""``measure_student``: one submission's files run and evaluated.

Every file is read as untrusted bytes: a submitted model (and its scaling
file) is first *taken* -- copied without following links into a folder the
grader owns -- and only that copy goes to the evaluation worker; a notebook
runs in the sandbox (``execute``), which hands back copies too.  One
student's files share one evaluation time budget (the spec's
``student_budget_s``), so a submission of many slow files cannot hold a
worker for long; and everything of one student -- notebook runs, loading
captures, evaluation, re-training -- draws from one clock (``student_time_s``,
``StudentClock``).  A notebook the sandbox could not run leaves the tasks it
might have answered "could not be graded", never missing.

Then the recipes (``retrain_recipes``): a model a notebook trained that missed a
task's pass threshold is one draw of a random process, so its recipe is
re-trained by the grader -- in the training worker, with seeds from the
grading secret -- up to the K times calibration asks for, stopping at the
first re-training that passes.  Only the likeliest model per task is
re-trained, and none for a task another model already passes.  The
re-trainings of all of one student's recipes take turns and share a count
and a time budget (``[evaluation.retraining]``), so a wrong recipe that never
passes cannot starve a right but unlucky one.  What each re-training measured
is stored with the model's evaluation (``"retraining"``) for scoring.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import untrusted
from ..errors import (
    EvaluationTimeout, FatalError, KernelStartFailed, NotebookUnreadable, SubmissionError, UnknownFormat,
    UnreadableFile,
)
from ..evaluate import heldout, retrain
from ..execute import _remove, execute_notebook
from ..execute.limits import StudentClock
from ..harvest import MAX_MODEL_BYTES, Harvester, max_captures
from ..intake import Submission, SubmittedFile, TaskNamer
from ..intake.formats import EMPTY, FORMAT_NAMES, KERAS_ZIP, NOTEBOOK, SAVEDMODEL, SCRIPT, sniff_format
from ..keras_io import saved_model_refusal
from ..score.results import FileResult
from .records import Measurements, Source

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


class _Budget:
    """Time one student's requests of one kind share: evaluating their files (``student_budget_s`` in all,
    ``timeout_s`` each) or re-training their recipes (``retraining.budget_s``); never more than what is left
    of the student's whole time (``clock``, a ``StudentClock``)."""

    def __init__(self, total: float, per_request: float | None = None, clock: StudentClock | None = None):
        self.total, self.per_request, self.clock = total, per_request, clock
        self.used = 0.0

    def left(self) -> float:
        own = self.total - self.used
        return own if self.clock is None else min(own, self.clock.left())

    def clock_ran_out(self) -> bool:
        """Whether the student's whole time, rather than this kind's own, is what ran out."""
        return self.clock is not None and self.clock.left() <= 0 < self.total - self.used

    def timeout(self) -> float:
        """The time limit of the next request."""
        return self.left() if self.per_request is None else min(self.per_request, self.left())

    @contextmanager
    def spend(self):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.used += time.monotonic() - t0

    def evaluate(self, evaluator, source: Source, path):
        if self.left() <= 0:
            spent = (f"this submission used up {self.clock.why} ({self.clock.total_s:.0f} s) before it" if
                     self.clock_ran_out() else
                     f"this submission's files used up the grader's evaluation time of {self.total:.0f} s per "
                     "student before it")
            return None, EvaluationTimeout(f"{source.name}: not evaluated; {spent}.",
                                           hint="Submit only the models the tasks ask for.")
        try:
            with self.spend():
                evaluation = evaluator.evaluate(path, source.training, source.preprocessing, timeout=self.timeout())
            evaluation["provenance"] = source.provenance  # scoring reads it (was this model trained?)
            return evaluation, None
        except SubmissionError as e:
            return None, e


def measure_student(assignment, submission: Submission, evaluator, *, progress=None, limits=None,
                    on_evaluated=None, unsandboxed: bool = False,
                    clock: StudentClock | None = None) -> Measurements:
    """``progress(cell_run, file)`` hears each cell of a notebook or script as it finishes, with the file's name.
    ``limits``: the notebooks' time limits (``execute.limits.BatchLimits``), from the batch's speed probe;
    None: this process's own (the probe runs once per process).  ``on_evaluated(evaluation)`` is told each
    model's measurements as they are taken, in the evaluating thread (``report.cache.PlotWarmUp``).
    ``unsandboxed``: run notebooks even where they cannot be isolated (otherwise their tasks could not be
    graded).  The student's whole time is ``[evaluation] student_time_s``, or ``clock`` (a ``StudentClock``
    already running: Gradescope's budget) when it has less left: every notebook run, loading, evaluation
    and re-training draw from it."""
    files: list[FileResult] = []
    notes = [p.explain() for p in submission.problems] + list(submission.warnings)
    notebooks: list[dict] = []
    executed: list[dict] = []  # each notebook as it ran (``grader.executed``), for the student's page
    errors_by_task: dict[str, str] = {}
    namer = TaskNamer(assignment)
    clock = student_clock(assignment, clock)
    budget = _Budget(assignment.limits.student_budget_s, assignment.limits.timeout_s, clock)
    taken = Path(tempfile.mkdtemp(prefix="grader-student-"))  # the grader's copies of the student's files
    # models are evaluated in one background thread (the only user of the evaluator meanwhile), so
    # that a notebook's models are measured while its later cells still train
    pending: list[tuple[Source, Future]] = []
    most_data = max_captures(assignment)  # captures whose training data one student's measuring may hold

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
            def evaluate(source: Source, path):
                evaluation, error = budget.evaluate(evaluator, source, path)
                if error is None and on_evaluated is not None:
                    on_evaluated(evaluation)
                return evaluation, error

            def submit(source: Source, path):
                pending.append((source, pool.submit(evaluate, source, path)))

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
                        held = sum((s.provenance or {}).get("samples") is not None for s, _ in pending)
                        if cap.x is not None and held >= most_data:  # every notebook of the student's together
                            cap.x = cap.y = None  # graded as a model still, its data no longer held
                        submit(capture_source(cap, nb_name, taken / "recipes"), cap.model_path)

                    try:
                        heard = (lambda run, name=f.relative: progress(run, name)) if progress else None
                        with execute_notebook(assignment, f, submission.root, progress=heard,
                                              harvester=Harvester(assignment, clock, on_capture), limits=limits,
                                              unsandboxed=unsandboxed, clock=clock,
                                              seed=run_seed(evaluator.seeds, submission, f)) as ex:
                            summary = ex.summary()
                            notebooks.append(summary)
                            if getattr(ex, "executed", None) is not None:
                                executed.append(ex.executed)
                            notes.extend(ex.notes)
                            files.append(FileResult(f.relative, f.format, "executed", None,
                                                    f"ran {summary['cells_run']} cell(s) in {summary['seconds']} s "
                                                    f"on the {summary['backend']} backend; "
                                                    f"{summary['cells_failed']} failed; "
                                                    f"{summary['models_captured']} model(s) captured"))
                            for rel, path in ex.saved:
                                submit(Source(f"{rel} (saved by {f.relative})", sniff_format(path),
                                              namer.task_for(Path(rel).name), provenance={"made_by": "saved"}),
                                       path)
                            for _, future in pending[first:]:
                                future.exception()  # wait: the models live in the run's scratch folder
                    except KernelStartFailed as e:  # the grader's environment: what it would give is unknown
                        files.append(FileResult(f.relative, f.format, "error", None, e.explain()))
                        for task in assignment.tasks:
                            errors_by_task.setdefault(task.id, _not_run(f.relative, e))
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
        retrain_recipes(assignment, evaluator, evaluated, taken, clock)
    finally:
        _remove(taken)
    for source, _ in evaluated:
        # used by the workers; scoring needs only its name
        source.training = source.preprocessing = source.recipe = None
    measured = Measurements(submission.student_id, files, notes, notebooks, errors_by_task, evaluated)
    measured.executed = executed
    return measured


def student_clock(assignment, outer: StudentClock | None = None) -> StudentClock:
    """The student's whole time from now: ``[evaluation] student_time_s``, or ``outer`` (a budget already
    running, such as Gradescope's) when it has less left."""
    own = assignment.limits.student_time_s
    if outer is not None and outer.left() < own:
        return outer
    return StudentClock(own, "the grader's time budget per student (student_time_s)")


def _not_run(name: str, error: SubmissionError) -> str:
    """A task's words when a notebook that could have answered it could not be run: could not be graded."""
    from ..review import COULD_NOT_GRADE

    said = " ".join(error.message.split()).rstrip(".")
    return (f"{COULD_NOT_GRADE}: {name} could not be run, so what it would give for this task is unknown "
            f"({said}). This is the grader's environment failing, not your code; a TA will re-run the grading.")


def _retraining_plan(assignment, evaluated) -> dict[int, list]:
    """Which recipes to re-train, for which tasks: {index in ``evaluated``: [tasks]}.  Per task whose recipes
    are re-trained and that no model of the student already passes, the model that wants it
    (``wants_retraining``: a notebook's fit, exactly the task's layers, its own run short of the pass threshold)
    and scored best on its own, the latest of equals; one whose training data may be the task's
    (``Source.plausible``) first.  One whose data are not (data of no dataset: forged, or the student's own)
    is planned only to say why it is not re-trained (``retrain_recipes``): no re-training of it could count."""
    from ..score.assess import assess, wants_retraining

    plan: dict[int, list] = {}
    for task in assignment.model_tasks():
        if not task.retrained:
            continue
        answering = [(i, s, e) for i, (s, e) in enumerate(evaluated) if s.task_hint in (None, task.id)]
        judged = [(i, s, e, assess(task, e)) for i, s, e in answering]
        if any(a.architecture_ok and a.metric_fraction >= 1 for *_, a in judged):
            continue
        wanting = [(task.dataset in s.plausible, a.fraction, i) for i, s, e, a in judged
                   if s.recipe is not None and wants_retraining(task, e)]
        if wanting:
            plan.setdefault(max(wanting)[2], []).append(task)
    return plan


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


def _not_the_tasks_data(source: Source, task_ids: list[str]) -> str:
    """Why a recipe whose training data are none of its tasks' is not re-trained, in words for the student."""
    x = (source.recipe or {}).get("x")
    points = f" ({len(x):,} points)" if x is not None else ""
    tasks = " and ".join(task_ids)
    return (f"the data it was trained on{points} are not the data of task {tasks} (neither the sheet's data nor "
            "drawn like it), so no re-training of it could count for the task; train on the data the task names")


@dataclass
class _Recipe:
    """One recipe being re-trained for ``tasks``: its model's source and evaluation, the vetted recipe, the
    epochs cap, K (the most re-trainings any of its tasks asks for) and the record stored for scoring."""

    source: Source
    evaluation: dict
    tasks: list
    vetted: dict
    cap: int
    k: int

    @property
    def record(self) -> dict:
        return self.evaluation["retraining"]

    def finished(self) -> bool:
        """K re-trainings done, or every task passed by one of them (the first that passes is the last)."""
        from ..score.assess import judge

        runs = self.record["runs"]
        return len(runs) >= self.k or all(
            any(t.metric in run["metrics"].get(t.dataset, {}) and
                judge(t, t.metric, run["metrics"][t.dataset][t.metric], run["metrics"][t.dataset])[1] == "pass"
                for run in runs) for t in self.tasks)


def retrain_recipes(assignment, evaluator, evaluated, taken: Path, clock: StudentClock | None = None) -> None:
    """Re-train the recipes ``_retraining_plan`` chooses, taking turns, and store under each model's evaluation
    ``"retraining"`` (``evaluated``: ``[(Source, evaluation)]``, as measured; ``taken``: a scratch folder the
    grader owns): the tasks, the recipe in words, its epochs and those trained (at most ``epochs_factor``
    times the task's), every re-training's seed and metrics (on the tasks' datasets), and why it stopped early,
    if it did; or why the recipe was not re-trained (``refused``)."""
    settings = assignment.limits.retraining
    recipes = []
    for index, tasks in sorted(_retraining_plan(assignment, evaluated).items()):
        source, evaluation = evaluated[index]
        record = evaluation["retraining"] = {"tasks": [t.id for t in tasks], "datasets": source.plausible, "runs": [],
                                             "limit": settings.max_per_student, "budget": settings.budget_s}
        try:
            vetted = retrain.vet(source.recipe)
        except retrain.RecipeRefused as e:
            record["refused"] = str(e)
            continue
        tasks = [t for t in tasks if t.dataset in source.plausible]
        if not tasks:  # a re-training would be graded on data none of its tasks names: none is run
            record["refused"] = _not_the_tasks_data(source, record["tasks"])
            continue
        record["tasks"] = [t.id for t in tasks]
        cap = int(settings.epochs_factor * max(t.epochs for t in tasks))
        record.update(recipe=retrain.describe(vetted), epochs=vetted["epochs"],
                      trained_epochs=min(vetted["epochs"], cap))
        recipes.append(_Recipe(source, evaluation, tasks, vetted, cap,
                               max(t.threshold(t.metric).misses.retrainings for t in tasks)))
    if not recipes:
        return
    try:
        evaluator.trainer.start()  # the training worker's start-up is not re-training's own time
    except FatalError as e:  # no training worker on this machine: graded on the students' own runs
        for recipe in recipes:
            recipe.record.update(stopped="error", error=e.message)
        return
    # re-training gets its own budget, or only what is left of the student's whole time when that is less
    granted = settings.budget_s if clock is None else min(settings.budget_s, clock.left())
    budget = _Budget(granted, clock=clock)
    for recipe in recipes:
        recipe.record["budget"] = round(granted, 1)
        if granted < settings.budget_s:
            recipe.record["budget_of"] = f"what was left of {clock.why} ({clock.total_s:.0f} s)"
    done = 0
    active = list(recipes)
    while active:  # in turns: one re-training of each recipe still short of its tasks, then the next round
        for recipe in list(active):
            record, source = recipe.record, recipe.source
            if recipe.finished():
                active.remove(recipe)
                continue
            if done >= settings.max_per_student or budget.left() <= 0:
                record["stopped"] = "count" if done >= settings.max_per_student else "budget"
                active.remove(recipe)
                continue
            seed = retrain.retrain_seed(evaluator.seeds, recipe.vetted, source.recipe,
                                        recipe.evaluation["info"].get("dense"), len(record["runs"]))
            out = taken / "retrained" / f"{done}.keras"
            out.parent.mkdir(exist_ok=True)
            done += 1
            try:
                with budget.spend():
                    trained = evaluator.retrain(source.recipe["model_path"], source.recipe, seed, recipe.cap, out,
                                                timeout=budget.left())
                    measured = evaluator.evaluate(out, source.training, timeout=budget.timeout())
            except SubmissionError as e:  # a re-training that outlasts the budget is stopped by it
                record["stopped"] = "budget" if budget.left() <= 0 else "error"
                record["error"] = e.message
                active.remove(recipe)
                continue
            finally:
                out.unlink(missing_ok=True)
            datasets = {t.dataset for t in recipe.tasks}
            record["runs"].append({"seed": seed, "epochs": trained["epochs"], "fused": trained.get("fused"),
                                   "metrics": {name: entry["metrics"] for name, entry in measured["datasets"].items()
                                               if name in datasets}})




def grade_student(assignment, submission: Submission, evaluator, *, progress=None, limits=None):
    """Measure, then score, one submission (no gradebook): for ``check`` and the tests."""
    from ..score import score_student

    return score_student(assignment, measure_student(assignment, submission, evaluator, progress=progress,
                                                     limits=limits))

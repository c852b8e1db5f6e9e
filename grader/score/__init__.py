"""Scoring: from a student's measurements to points per task, with reasons.

Pure: ``score_student`` turns ``Measurements`` (made by ``grader.measure``,
stored in the gradebook) into points.  It decides which task each model
answers (``match``), judges it (``assess``), keeps the best file per task and
writes a ``StudentResult``.  Nothing here runs a notebook or loads a model,
so a changed threshold re-scores a class without re-running anything.
"""
from __future__ import annotations

import dataclasses
import math

from ..intake.formats import FORMAT_NAMES
from ..records import FileResult, Measurements, ModelInfo, StudentResult, TaskResult
from ..assess import Assessment, assess, fmt_value
from .match import assign_tasks, infer_task

def _status(fraction: float, pass_fraction: float = 1.0) -> str:
    """A task's status from the share of its points earned: passed from the spec's ``pass_fraction``."""
    if fraction > 0 and fraction >= pass_fraction:
        return "passed"
    return "partial" if fraction > 0 else "failed"


def _points(points: float, fraction: float) -> float:
    return round(points * fraction, 2)


def _model_task_result(task, a: Assessment, source: str, inferred: bool, reason: str, plot,
                       match=None) -> TaskResult:
    message = a.message()
    if inferred and reason:
        message = f"{reason} {message}"
    metrics = dict(a.metrics)
    if inferred:  # 1: another task was nearly as likely (``match.Match.close``), for ``grader review``
        metrics["inferred_close"] = float(match is not None and match.close)
    return TaskResult(task.id, task.title, _points(task.points, a.fraction), task.points,
                      _status(a.fraction, task.pass_fraction),
                      metrics, message, source, inferred, task.optional, a.threshold,
                      plot=plot, dataset=task.dataset)


def _failed_cells(notebooks: list[dict]) -> str:
    """The cells that failed in a student's notebooks, named (for a task whose model never appeared); why each
    failed is said once, in the notebook's own section of the report, not under every task."""
    failures = [(nb, f) for nb in notebooks for f in nb.get("failures", []) if f.get("status") != "skipped"]
    said = [f"cell {f['cell']} of {nb['name']} " + ("ran out of time (the grader stopped it at its time limit)"
                                                    if f.get("status") == "timeout" else "failed")
            for nb, f in failures]
    if not said:
        return ""
    more = f" and {len(said) - 3} more" if len(said) > 3 else ""
    ran_out = (" A cell stopped at a time limit never finished, so a model it was still training was never made; "
               "the limit, and where it comes from, is under the notebook below."
               if any(f.get("status") == "timeout" for _, f in failures) else "")
    return (" Your notebook did not run to the end cleanly: " + ", ".join(said[:3]) + more + " (why, and what to "
            "change, is under the notebook below). The model for this task may have been made in or after a "
            "failing cell: fix it first." + ran_out)


def _missing(task, assignment=None, student: str = "", notebooks: list[dict] = ()) -> TaskResult:
    pattern = assignment.intake.pattern if assignment is not None else ""
    if pattern and task.kind != "saved_file":  # the course fixes the names: say the student's own
        who = student or "username"
        model = assignment.intake.file_name(who, task.id)
        scaling = (f" (and its input scaling as {assignment.intake.file_name(who, task.id, task.preprocessing.suffix)})"
                   if task.preprocessing else "")
        msg = f"No {model} was found: submit the model for task {task.id} as {model}{scaling}."
    elif task.kind == "saved_file":
        msg = (f"No {' or '.join(task.file_names)} was found in the submission. Save a trained model with "
               f"model.save('{task.file_names[0]}') and submit the file.")
    else:
        msg = (f"No model for task {task.id} was found. Submit it as {task.id}.h5 (model.save('{task.id}.h5')), "
               "or in a notebook.")
    if task.optional:
        msg = "Optional task, not attempted. " + msg
    elif task.kind == "model":
        msg += _failed_cells(list(notebooks))
    return TaskResult(task.id, task.title, 0.0, task.points, "missing", {}, msg, optional=task.optional)


def score_student(assignment, measured: Measurements) -> StudentResult:
    """Points per task from measurements (pure: the same measurements always give the same result).

    A file named for a task answers it; every other model is matched to a task (``assign_tasks``:
    exact architectures first).  Each task is then graded on its best answer (``_choose``)."""
    files = [FileResult(**f.to_json()) for f in measured.files]
    notes = list(measured.notes)
    errors_by_task = measured.errors_by_task
    evaluated = measured.evaluated

    # decide the task of every evaluated model and judge it
    saved_tasks = {t.id for t in assignment.tasks if t.kind == "saved_file"}
    unnamed = [(evaluation, f.plausible) for f, evaluation in evaluated if not f.task_hint]
    named = {f.task_hint for f, _ in evaluated if f.task_hint and f.task_hint not in saved_tasks}
    inferred_matches = iter(assign_tasks(assignment, unnamed, answered=named))
    per_task: dict[str, list[tuple[TaskResult, bool]]] = {}  # task -> [(result, whether it answers the task)]
    saved_candidates = []  # (task, file, evaluation, match)
    for f, evaluation in evaluated:
        model_text = _describe(evaluation.info)
        if f.task_hint in saved_tasks:
            match = infer_task(assignment, evaluation)
            saved_candidates.append((assignment.task(f.task_hint), f, evaluation, match))
            files.append(FileResult(f.name, f.format, "graded", f.task_hint,
                                    f"graded as task {f.task_hint}", model_text, _captured(f)))
            continue
        if f.task_hint:
            task = assignment.task(f.task_hint)
            a = assess(task, evaluation)
            inferred, reason, answers, match = False, "", True, None
        else:
            match = next(inferred_matches)
            if match.task_id is None:
                files.append(FileResult(f.name, f.format, "unmatched", None, match.reason, model_text, _captured(f)))
                continue
            task, a, inferred, reason = assignment.task(match.task_id), match.assessment, True, match.reason
            answers = match.exact
        plot = evaluation.measured_on(task.dataset).plot
        result = _model_task_result(task, a, f.name, inferred, reason, plot, match)
        result.architecture = model_text
        per_task.setdefault(task.id, []).append((result, answers))
        files.append(FileResult(f.name, f.format, "graded", task.id,
                                f"graded as task {task.id}" + (" (inferred)" if inferred else ""), model_text,
                                _captured(f)))

    # saved-file tasks: the file exists, is in the required format and holds a trained model
    saved_results: dict[str, TaskResult] = {}
    for task, f, evaluation, match in saved_candidates:
        match, twin = _by_its_recipe(assignment, evaluation, match, evaluated)
        result = _saved_file_result(task, f, evaluation, match, twin)
        if match.task_id and match.task_id not in per_task and match.assessment is not None:
            inner = assignment.task(match.task_id)
            plot = evaluation.measured_on(inner.dataset).plot
            counted = _model_task_result(inner, match.assessment, f.name, True, match.reason, plot, match)
            counted.architecture = _describe(evaluation.info)
            counted.message = f"Taken from {f.name}, the only model for this task. " + counted.message
            per_task[inner.id] = [(counted, match.exact)]
        best = saved_results.get(task.id)
        if best is None or result.score > best.score:
            saved_results[task.id] = result

    tasks: list[TaskResult] = []
    for task in assignment.tasks:
        options = per_task.get(task.id, []) or ([(saved_results[task.id], True)] if task.id in saved_results else [])
        if options:
            tasks.append(_choose(options))
        elif task.id in errors_by_task:
            tasks.append(TaskResult(task.id, task.title, 0.0, task.points, "error", {}, errors_by_task[task.id],
                                    optional=task.optional))
        else:
            tasks.append(_missing(task, assignment, measured.student_id, measured.notebooks))

    notes += _unverified_training(assignment, tasks, evaluated)
    max_score = assignment.max_score
    total = math.fsum(t.score for t in tasks)
    score = round(min(total, max_score), 2)
    if total > max_score:
        notes.append(f"Optional tasks brought the total above {max_score:g}; it is capped there.")
    grade = assignment.grades.letter(100 * score / max_score) if assignment.grades and max_score else None
    return StudentResult(measured.student_id, score, max_score, tasks, files, notes, list(measured.notebooks),
                         grade=grade)


def _captured(source) -> bool:
    """Whether a model came from a notebook's run (captured by the grader), not from a file handed in: only
    the grader's own record says so, never the name, which a student's file may imitate."""
    return source.provenance is not None and source.provenance.made_by in ("fit", "predict")


def _unverified_training(assignment, tasks: list[TaskResult], evaluated) -> list[str]:
    """A note when tasks that ask for training were graded from saved files, which hold no record of it: no
    proof of training, and no recipe to re-train when the model missed a threshold."""
    files = {s.name for s, e in evaluated if e.made_by in ("file", "saved")}
    ids = [t.id for t in tasks if t.source in files and assignment.task(t.id).training == "fit"]
    if not ids:
        return []
    return [f"Task(s) {', '.join(ids)} were graded from your saved model files as submitted. A saved file holds no "
            "record of its training, so the grader could not re-train it for a second chance (as it does for a "
            "model your notebook trains that misses the pass threshold)."]


def _choose(options: list[tuple[TaskResult, bool]]) -> TaskResult:
    """The result a task is graded on, from ``[(result, whether it answers the task)]``.

    The best-scoring file that answers the task (named for it, or with exactly its layers) counts; only
    when none does, the best of the models inferred for it from their performance.  The message names
    the files that were not counted, and why."""
    best, _ = max(options, key=lambda o: (o[1], o[0].score))
    others = [r for r, _ in options if r is not best]
    for words, chosen in (("scored less", [r for r in others if r.score < best.score]),
                          ("scored the same", [r for r in others if r.score == best.score])):
        if chosen:
            best.message += f" Other files that answer this task {words}: {', '.join(r.source for r in chosen)}."
    higher = [r.source for r in others if r.score > best.score]
    if higher:
        best.message += (f" Not counted: {', '.join(higher)}, which scored more but whose layers are not the "
                         "task's (inferred from performance alone).")
    return best


def _describe(info: ModelInfo) -> str:
    layers = ", ".join(f"Dense({u}, {a})" for u, a in info.dense) or "no Dense layer"
    extra = f" + {', '.join(info.other_layers)}" if info.other_layers else ""
    return f"{info.inputs} input(s) → {layers}{extra} ({info.parameters} parameters)"


def _by_its_recipe(assignment, evaluation, match, evaluated):
    """A saved file whose model looks untrained but is, weight for weight, a model a notebook's ``fit`` trained
    (the run saved the model it had just trained): judged as that fit's model is, with its recipe's re-trainings
    (a run whose training got stuck on the seed it was given must not cost the saved file its marks when the
    recipe, re-trained, earns them).  Returns the match (its assessment replaced then) and that fit's source name
    (None otherwise)."""
    if match.task_id is None or match.assessment is None or match.assessment.metric_fraction > 0 \
            or not evaluation.weights_sha256:
        return match, None
    task = assignment.task(match.task_id)
    if not _learned_from_inputs(evaluation, task):
        return match, None  # nothing the grader measured ties it to a training (docs/design/score.md)
    for source, other in evaluated:
        if other is not evaluation and other.made_by == "fit" and other.retraining is not None \
                and other.weights_sha256 == evaluation.weights_sha256 and _network(other) == _network(evaluation):
            a = assess(task, other)
            if a.metric_fraction > 0:
                return dataclasses.replace(match, assessment=a), source.name
    return match, None


def _learned_from_inputs(evaluation, task) -> bool:
    """Whether the model's answers on the held-out data beat the best constant answer (the class frequencies'
    cross-entropy, the mean's squared error): what a training that stopped short of the task still learned (the
    sheet's SGD run stuck at the majority class has), and a model never trained has not.  A capture is the student's word (a notebook can write one claiming any
    recipe), so this, measured by the grader, is what ties a saved file to a training."""
    metrics = evaluation.measured_on(task.dataset).metrics
    for own, constant in (("log_loss", "constant_log_loss"), ("mse", "constant_mse")):
        if own in metrics and constant in metrics:
            return metrics[own] < metrics[constant]
    return False


def _network(evaluation) -> tuple:
    """What a model computes besides its weights (the digest holds only their dtypes, shapes and bytes): the same
    weights under other activations or other layers are another model."""
    info = evaluation.info
    return info.inputs, info.outputs, info.dense, info.other_layers


def _saved_file_result(task, f, evaluation, match, twin: str | None = None) -> TaskResult:
    fraction = 1.0
    words = []
    if f.format != task.file_format:
        fraction -= 0.5
        words.append(f"{f.name} is {FORMAT_NAMES[f.format]}, not {FORMAT_NAMES[task.file_format]}: save it "
                     f"with model.save('{task.file_names[0]}').")
    else:
        words.append(f"{f.name} is {FORMAT_NAMES[f.format]} and loads safely.")
    if match.task_id is None or match.assessment is None:
        fraction -= 0.5
        words.append("It does not hold a model of any earlier task: " + match.reason)
    elif match.assessment.metric_fraction <= 0:
        fraction -= 0.5
        words.append(f"It looks like a model of task {match.task_id}, but on held-out data it does no better than "
                     "an untrained one (never trained, or its training got stuck): " + match.assessment.message())
    elif twin is not None:
        a = match.assessment
        retrained = a.metrics.get(f"retrained_{a.metric}")
        reached = f" reached {fmt_value(a.metric, retrained)}" if retrained is not None else " earned its marks"
        words.append(f"It is the model of task {match.task_id} your notebook trained ({twin}). That run's training "
                     f"got stuck on the seed the grader gave it, but its recipe, re-trained,{reached}: it counts as "
                     "a trained model.")
    else:
        words.append(f"It holds a trained model of task {match.task_id}.")
    fraction = max(fraction, 0.0)
    return TaskResult(task.id, task.title, _points(task.points, fraction), task.points,
                      _status(fraction, task.pass_fraction),
                      {}, " ".join(words), f.name, False, task.optional,
                      architecture=_describe(evaluation.info))


def attach_plots(result: StudentResult, measured: Measurements) -> StudentResult:
    """Give a stored result (which keeps no plot data) its plots back from its measurements."""
    by_source = {s.name: e for s, e in measured.evaluated}
    for t in result.tasks:
        if t.plot is None and t.source in by_source and t.dataset:
            t.plot = by_source[t.source].measured_on(t.dataset).plot
    result.executed = list(getattr(measured, "executed", None) or [])  # the notebooks as they ran (``executed``)
    return result

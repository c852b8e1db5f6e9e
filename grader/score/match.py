"""Which task does a model answer?

A file name that names a task decides first.  Otherwise the candidates are the
tasks whose input width and number of outputs fit the model; among them the
model goes to the one where it earns the largest share of the points.  Ties
(the same model fits several tasks equally well) go to the task with the
stricter pass threshold on the same data and metric -- a hand-set exact fit
is task 1b rather than 1a -- and, across datasets, to the dataset on which
the model does best.  The report says when a task was inferred.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..spec.model import METRICS
from .assess import Assessment, assess


@dataclass
class Match:
    task_id: str | None
    inferred: bool
    assessment: Assessment | None
    reason: str


def _strictness(task) -> float:
    th = task.threshold(task.metric)
    if th is None:
        return 0.0
    return th.passing if METRICS[task.metric] else -th.passing


def _goodness(a: Assessment) -> float:
    """How well the model does on the task's own data, larger is better."""
    if a.value is None:
        return float("-inf")
    return a.value if METRICS[a.metric] else -a.value


def candidates(assignment, info: dict):
    inputs, outputs = info.get("inputs"), info.get("outputs")
    same_inputs = [t for t in assignment.model_tasks() if t.architecture.inputs == inputs]
    exact = [t for t in same_inputs if t.architecture.output.units == outputs]
    return exact or same_inputs


def infer_task(assignment, evaluation: dict, training_known: bool = False) -> Match:
    info = evaluation["info"]
    tasks = candidates(assignment, info)
    if not tasks:
        widths = sorted({t.architecture.inputs for t in assignment.model_tasks()})
        return Match(None, True, None,
                     f"This model takes {info.get('inputs')} input(s) and gives {info.get('outputs')} output(s); "
                     f"no task of this assignment has that input width (the tasks take "
                     f"{' or '.join(map(str, widths))} input(s)).")
    scored = [(t, assess(t, evaluation, training_known=training_known)) for t in tasks]
    best_fraction = max(a.fraction for _, a in scored)
    top = [(t, a) for t, a in scored if a.fraction == best_fraction]
    if len(top) > 1:
        groups = {(t.dataset, t.metric) for t, _ in top}
        if len(groups) == 1:  # same data and metric: the strictest task it still earns most on
            top.sort(key=lambda ta: _strictness(ta[0]), reverse=True)
        else:
            top.sort(key=lambda ta: _goodness(ta[1]), reverse=True)
    task, a = top[0]
    others = [t.id for t, _ in scored if t.id != task.id]
    reason = f"Inferred as task {task.id} from its architecture and held-out performance"
    reason += f" (also considered: {', '.join(others)})." if others else "."
    return Match(task.id, True, a, reason)

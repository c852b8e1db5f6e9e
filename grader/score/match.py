"""Which task does a model answer?

A file name that names a task decides first.  Otherwise the candidates are the
tasks whose input width and number of outputs fit the model; among them the
model goes to the one where it earns the largest share of the points.  Ties
(the same model fits several tasks equally well) on the same data go to the
task whose calibrated reference runs the model most resembles -- a hand-set
exact fit is task 1b, not the 1a whose references fit poorly -- and, across
datasets, to the dataset on which the model does best.  The report says when
a task was inferred.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..spec.model import METRICS
from .assess import Assessment, assess


@dataclass
class Match:
    task_id: str | None
    inferred: bool
    assessment: Assessment | None
    reason: str


def _distance_to_reference(task, a: Assessment) -> float:
    """How far the model's metric is from the task's typical reference run (decades for errors)."""
    th = task.threshold(a.metric) if a.metric else None
    if th is None or th.typical is None or a.value is None:
        return float("inf")
    if METRICS[a.metric]:
        return abs(a.value - th.typical)
    tiny = 1e-30
    return abs(math.log10(max(a.value, tiny)) - math.log10(max(th.typical, tiny)))


def _goodness(a: Assessment) -> float:
    """How well the model does on the task's own data, larger is better."""
    if a.value is None:
        return float("-inf")
    return a.value if METRICS[a.metric] else -a.value


def candidates(assignment, info: dict, dataset: str | None = None):
    inputs, outputs = info.get("inputs"), info.get("outputs")
    same_inputs = [t for t in assignment.model_tasks() if t.architecture.inputs == inputs]
    if dataset is not None:  # a notebook run showed what the model was trained on
        same_inputs = [t for t in same_inputs if t.dataset == dataset] or same_inputs
    exact = [t for t in same_inputs if t.architecture.output.units == outputs]
    return exact or same_inputs


def infer_task(assignment, evaluation: dict, dataset: str | None = None) -> Match:
    info = evaluation["info"]
    tasks = candidates(assignment, info, dataset)
    if not tasks:
        widths = sorted({t.architecture.inputs for t in assignment.model_tasks()})
        return Match(None, True, None,
                     f"This model takes {info.get('inputs')} input(s) and gives {info.get('outputs')} output(s); "
                     f"no task of this assignment has that input width (the tasks take "
                     f"{' or '.join(map(str, widths))} input(s)).")
    scored = [(t, assess(t, evaluation)) for t in tasks]
    best_fraction = max(a.fraction for _, a in scored)
    top = [(t, a) for t, a in scored if a.fraction == best_fraction]
    if len(top) > 1:
        if len({t.dataset for t, _ in top}) == 1:
            top.sort(key=lambda ta: _distance_to_reference(ta[0], ta[1]))
        else:
            top.sort(key=lambda ta: _goodness(ta[1]), reverse=True)
    task, a = top[0]
    others = [t.id for t, _ in scored if t.id != task.id]
    reason = f"Inferred as task {task.id} from its architecture and held-out performance"
    reason += f" (also considered: {', '.join(others)})." if others else "."
    return Match(task.id, True, a, reason)

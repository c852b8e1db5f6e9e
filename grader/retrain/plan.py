"""Which recipes to re-train, and by what: the re-training stage's plan, judged by the spec's thresholds and K.

``retraining_plan`` chooses the models whose recipes are re-trained, per task; ``PlannedRecipe`` carries what
re-training then reads of the spec (its tasks, K, the pass thresholds) and ``passed`` (whether a re-training's
metrics pass every task: the first that does is the last).  ``plan_inputs`` is that, as data for the cache key.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..assess import assess, judge, wants_retraining


def has_recipe(source, evaluation) -> bool:
    """A model a notebook's ``fit`` trained: its recipe was captured (kept while measuring, never stored)."""
    return source.recipe is not None or evaluation.made_by == "fit"


def retraining_plan(assignment, evaluated) -> dict[int, list]:
    """Which recipes to re-train, for which tasks: {index in ``evaluated``: [tasks]}.  Per task whose recipes
    are re-trained and that no model of the student already passes, the model that wants it
    (``wants_retraining``: a notebook's fit, exactly the task's layers, its own run short of the pass threshold)
    and scored best on its own, the latest of equals; one whose training data may be the task's
    (``Source.plausible``) first.  One whose data are not is planned only to say why it is not re-trained."""
    plan: dict[int, list] = {}
    for task in assignment.model_tasks():
        if not task.retrained:
            continue
        answering = [(i, s, e) for i, (s, e) in enumerate(evaluated) if s.task_hint in (None, task.id)]
        judged = [(i, s, e, assess(task, e.own())) for i, s, e in answering]  # the plan is made before re-training
        if any(a.architecture_ok and a.metric_fraction >= 1 for *_, a in judged):
            continue
        wanting = [(task.dataset in s.plausible, a.fraction, i) for i, s, e, a in judged
                   if has_recipe(s, e) and wants_retraining(task, e)]
        if wanting:
            plan.setdefault(max(wanting)[2], []).append(task)
    return plan


@dataclass
class PlannedRecipe:
    """One model's recipe to re-train for ``tasks``: K (the most re-trainings any of its tasks asks for)."""

    index: int
    tasks: list

    @property
    def k(self) -> int:
        return max(t.threshold(t.metric).misses.retrainings for t in self.tasks)

    @property
    def passing(self) -> dict:
        return {t.id: t.threshold(t.metric).passing for t in self.tasks}

    def passed(self, metrics: dict, tasks=None) -> bool:
        """Whether one re-training's metrics (``{dataset: {metric: value}}``) pass every task (of ``tasks``)."""
        return all(t.metric in metrics.get(t.dataset, {}) and
                   judge(t, t.metric, metrics[t.dataset][t.metric], metrics[t.dataset])[1] == "pass"
                   for t in (self.tasks if tasks is None else tasks))

    def only(self, tasks: list) -> "PlannedRecipe":
        return PlannedRecipe(self.index, list(tasks))


def planned(assignment, evaluated) -> list[PlannedRecipe]:
    return [PlannedRecipe(i, tasks) for i, tasks in sorted(retraining_plan(assignment, evaluated).items())]


def plan_inputs(assignment, evaluated) -> list:
    """What re-training reads for these models, as data: per planned recipe its model, tasks, K and pass
    thresholds."""
    return [[p.index, [t.id for t in p.tasks], p.k, p.passing] for p in planned(assignment, evaluated)]

"""Re-training: a student's recipes trained again by the grader, as its plan (``retrain.plan``) asks.

``retrain(assignment, evaluator, evaluated, plan, scratch, clock)`` takes the student's own runs
(``[(Source, Evaluation)]``) and the planned recipes (each with its tasks, K and pass thresholds), re-trains
them in turns within one count and time budget, and gives each planned model's ``Evaluation`` its
``Retraining``: what it read (K, thresholds) and what each re-training measured.  Why: docs/design/retrain.md.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import FatalError, SubmissionError
from ..evaluate import retrain as recipes
from ..execute.limits import StudentClock
from ..records import Evaluation, Retraining, RetrainingRun, Source
from ..measure.budget import Budget


def _not_the_tasks_data(source: Source, task_ids: list[str]) -> str:
    """Why a recipe whose training data are none of its tasks' is not re-trained, in words for the student."""
    x = (source.recipe or {}).get("x")
    points = f" ({len(x):,} points)" if x is not None else ""
    tasks = " and ".join(task_ids)
    return (f"the data it was trained on{points} are not the data of task {tasks} (neither the sheet's data nor "
            "drawn like it), so no re-training of it could count for the task; train on the data the task names")


class _Turns:
    """One recipe being re-trained: its model, the planned recipe (tasks, K, ``passed``), the vetted recipe,
    the epochs cap and its record."""

    def __init__(self, source: Source, evaluation: Evaluation, planned, vetted: dict, cap: int):
        self.source, self.evaluation, self.planned, self.vetted, self.cap = source, evaluation, planned, vetted, cap
        self.record = evaluation.retraining

    def finished(self) -> bool:
        """K re-trainings done, or every task passed by one of them (the first that passes is the last)."""
        runs = self.record.runs
        return len(runs) >= self.planned.k or all(any(self.planned.passed(run.metrics, [t]) for run in runs)
                                                   for t in self.planned.tasks)


def _prepare(assignment, evaluated, plan) -> list[_Turns]:
    """Each planned model's record, vetted; the recipes to re-train."""
    settings = assignment.limits.retraining
    turns = []
    for planned in plan:
        source, evaluation = evaluated[planned.index]
        record = evaluation.retraining = Retraining([t.id for t in planned.tasks], source.plausible, [],
                                                    settings.max_per_student, settings.budget_s)
        try:
            vetted = recipes.vet(source.recipe)
        except recipes.RecipeRefused as e:
            record.refused = str(e)
            continue
        tasks = [t for t in planned.tasks if t.dataset in source.plausible]
        if not tasks:  # a re-training would be graded on data none of its tasks names: none is run
            record.refused = _not_the_tasks_data(source, record.tasks)
            continue
        planned = planned.only(tasks)
        record.tasks, record.k, record.passing = [t.id for t in tasks], planned.k, planned.passing
        cap = int(settings.epochs_factor * max(t.epochs for t in tasks))
        record.recipe, record.epochs = recipes.describe(vetted), vetted["epochs"]
        record.trained_epochs = min(vetted["epochs"], cap)
        turns.append(_Turns(source, evaluation, planned, vetted, cap))
    return turns


def retrain(assignment, evaluator, evaluated, plan, scratch: Path, clock: StudentClock | None = None) -> None:
    """Re-train the planned recipes (``retrain.plan.planned``), taking turns; each planned model's
    ``Evaluation.retraining`` says what was read and measured, or why the recipe was not re-trained."""
    settings = assignment.limits.retraining
    turns = _prepare(assignment, evaluated, plan)
    if not turns:
        return
    try:
        evaluator.trainer.start()  # the training worker's start-up is not re-training's own time
    except FatalError as e:  # no training worker on this machine: graded on the students' own runs
        for turn in turns:
            turn.record.stopped, turn.record.error = "error", e.message
        return
    # re-training gets its own budget, or only what is left of the student's whole time when that is less
    granted = settings.budget_s if clock is None else min(settings.budget_s, clock.left())
    budget = Budget(granted, clock=clock)
    for turn in turns:
        turn.record.budget = round(granted, 1)
        if granted < settings.budget_s:
            turn.record.budget_of = f"what was left of {clock.why} ({clock.total_s:.0f} s)"
    _rounds(evaluator, turns, budget, settings.max_per_student, Path(scratch))


def _rounds(evaluator, turns: list[_Turns], budget: Budget, most: int, scratch: Path) -> None:
    """In turns: one re-training of each recipe still short of its tasks, then the next round."""
    done = 0
    active = list(turns)
    while active:
        for turn in list(active):
            record, source = turn.record, turn.source
            if turn.finished():
                active.remove(turn)
                continue
            if done >= most or budget.left() <= 0:
                record.stopped = "count" if done >= most else "budget"
                active.remove(turn)
                continue
            seed = recipes.retrain_seed(evaluator.seeds, turn.vetted, source.recipe,
                                        [list(layer) for layer in turn.evaluation.info.dense], len(record.runs))
            out = scratch / "retrained" / f"{done}.keras"
            out.parent.mkdir(exist_ok=True)
            done += 1
            try:
                with budget.spend():
                    trained = evaluator.retrain(source.recipe["model_path"], source.recipe, seed, turn.cap, out,
                                                timeout=budget.left())
                    measured = evaluator.evaluate(out, source.training, timeout=budget.timeout())
            except SubmissionError as e:  # a re-training that outlasts the budget is stopped by it
                record.stopped = "budget" if budget.left() <= 0 else "error"
                record.error = e.message
                active.remove(turn)
                continue
            finally:
                out.unlink(missing_ok=True)
            datasets = {t.dataset for t in turn.planned.tasks}
            record.runs.append(RetrainingRun(seed, trained.epochs, trained.fused,
                                             {name: r.metrics for name, r in measured.datasets.items()
                                              if name in datasets}))

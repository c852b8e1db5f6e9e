"""Which task does a model answer?  A task's exact architecture first (an assignment problem over the
student's models, ``assign_tasks``), then held-out performance among the likeliest dataset's tasks, ties
going to the task whose calibrated reference runs the model most resembles.  Why: docs/design/score.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..records import Evaluation, ModelInfo
from ..spec.model import METRICS, goodness
from ..assess import Assessment, architecture_differences, assess


@dataclass
class Match:
    task_id: str | None
    inferred: bool
    assessment: Assessment | None
    reason: str
    exact: bool = False  # the model's layers are exactly the task's
    runner_up: str | None = None  # the task it would next most likely answer (None: no other candidate)
    close: bool = False  # the runner-up was nearly as likely (``_close``): worth a human look


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
    return goodness(a.metric, a.value)


def _ranked(scored: list) -> list:
    """``[(task, assessment)]`` best first: the largest share of the points, ties as the module says."""
    ranked = []
    for fraction in sorted({a.fraction for _, a in scored}, reverse=True):
        tied = [(t, a) for t, a in scored if a.fraction == fraction]
        if len({t.dataset for t, _ in tied}) == 1:
            tied.sort(key=lambda ta: _distance_to_reference(*ta))
        else:
            tied.sort(key=lambda ta: _goodness(ta[1]), reverse=True)
        ranked.extend(tied)
    return ranked


#: a runner-up whose share of the points is within this of the chosen task's was nearly as likely
CLOSE_SHARE = 0.1
#: when the shares tie, the resemblance (``_distance_to_reference``, or the metric across datasets) decided:
#: it was clear beyond a decade of an error metric or this much of an accuracy metric
CLEAR_TIE = 0.05


def _close(chosen: tuple, runner: tuple, options: list) -> bool:
    """Whether ``runner`` (task, assessment) was nearly as likely an answer as ``chosen`` among ``options``
    (ranked, best first): it ranked above it, or its share of the points is within ``CLOSE_SHARE`` and,
    where the shares tie, the tie-break of ``_ranked`` was not clear either."""
    (task, a), (other, b) = chosen, runner
    if options.index(runner) < options.index(chosen) or b.fraction > a.fraction:
        return True
    if a.fraction - b.fraction > CLOSE_SHARE:
        return False
    if a.fraction != b.fraction:
        return True
    if task.dataset == other.dataset:
        da, db = _distance_to_reference(task, a), _distance_to_reference(other, b)
        if math.isinf(da) or math.isinf(db):
            return True
        return abs(da - db) < (CLEAR_TIE if METRICS.get(a.metric) else 1.0)
    ga, gb = _goodness(a), _goodness(b)
    if a.metric != b.metric or math.isinf(ga) or math.isinf(gb):
        return True
    if METRICS[a.metric]:
        return abs(ga - gb) < CLEAR_TIE
    return abs(math.log10(max(-ga, 1e-30)) - math.log10(max(-gb, 1e-30))) < 1.0


def _with_runner_up(match: "Match", options: list) -> "Match":
    """``match`` with the best other task among ``options`` ((task, assessment), ranked) and whether it was
    nearly as likely."""
    chosen = next(((t, a) for t, a in options if t.id == match.task_id), None)
    others = [(t, a) for t, a in options if t.id != match.task_id]
    if chosen is not None and others:
        runner = max(others, key=lambda ta: (ta[1].fraction, -options.index(ta)))
        match.runner_up, match.close = runner[0].id, _close(chosen, runner, options)
        if match.close:
            match.reason = f"{match.reason[:-1]}; task {match.runner_up} was nearly as likely."
    return match


def candidates(assignment, info: ModelInfo, datasets=()):
    """The tasks a model could answer: its input width, then (when known) the datasets its training data
    may come from and its number of outputs narrow them down."""
    inputs, outputs = info.inputs, info.outputs
    same_inputs = [t for t in assignment.model_tasks() if t.architecture.inputs == inputs]
    if datasets:  # a notebook run showed what the model was trained on
        same_inputs = [t for t in same_inputs if t.dataset in datasets] or same_inputs
    exact = [t for t in same_inputs if t.architecture.output.units == outputs]
    return exact or same_inputs


@dataclass
class _Considered:
    """One model measured against each of its candidate tasks."""

    info: ModelInfo
    ranked: list  # [(task, assessment)], best first
    exact: list   # the same for the tasks whose architecture the model has exactly
    likeliest: str | None = None  # the likeliest dataset of its training data, when known


def _consider(assignment, evaluation: Evaluation, datasets) -> _Considered:
    """Judge one model against every candidate task, and find those whose layers it has exactly."""
    info = evaluation.info
    ranked = _ranked([(t, assess(t, evaluation)) for t in candidates(assignment, info, datasets)])
    exact = [(t, a) for t, a in ranked if not architecture_differences(t.architecture, info)]
    return _Considered(info, ranked, exact, datasets[0] if datasets else None)


def _min_cost_assignment(cost: list[list[int]]) -> list[int]:
    """The column of each row in a minimum-cost assignment of n rows to m >= n columns (the Hungarian
    algorithm in its O(n^2 m) potentials form; integer costs, so the optimum is exact)."""
    n, m = len(cost), len(cost[0])
    u, v = [0] * (n + 1), [0] * (m + 1)
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: the row (1-based) holding column j
    for row in range(1, n + 1):
        owner[0], j0 = row, 0
        slack, used = [math.inf] * (m + 1), [False] * (m + 1)
        while owner[j0]:
            used[j0] = True
            i0, delta, j1 = owner[j0], math.inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if reduced < slack[j]:
                        slack[j], way[j] = reduced, j0
                    if slack[j] < delta:
                        delta, j1 = slack[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    slack[j] -= delta
            j0 = j1
        while j0:
            owner[j0] = owner[way[j0]]
            j0 = way[j0]
    column = [0] * n
    for j in range(1, m + 1):
        if owner[j]:
            column[owner[j] - 1] = j - 1
    return column


def _assign_exact(considered: list[_Considered]) -> dict[int, str]:
    """Model index -> task id for the exact matches: each task at most one model, each model at most one
    task, the largest total share of the points; among equal totals, the tasks the models prefer."""
    tasks = sorted({t.id for c in considered for t, _ in c.exact})
    if not tasks:
        return {}
    # one integer per (task, model): the share of the points (in millionths) first, the model's own
    # ranking of the task (0 = its favourite) only among equal shares
    scale = len(tasks) * len(tasks) + 1
    cost = [[0] * (len(considered) + len(tasks)) for _ in tasks]  # a column per model, one "none" per task
    for i, c in enumerate(considered):
        for rank, (t, a) in enumerate(c.exact):
            cost[tasks.index(t.id)][i] = -(round(a.fraction * 1_000_000) * scale - rank)
    placed = {}
    for row, col in enumerate(_min_cost_assignment(cost)):
        if col < len(considered) and cost[row][col] < 0:  # a real, worthwhile edge, not "none"
            placed[col] = tasks[row]
    return placed


def _exact_match(c: _Considered, task_id: str) -> Match:
    """The match of a model to ``task_id``, one of the tasks whose layers it has exactly, with the reason."""
    a = next(a for t, a in c.exact if t.id == task_id)
    reason = f"Inferred as task {task_id}: its layers are exactly those the task asks for"
    favourite = c.exact[0][0].id
    also = [t.id for t, _ in c.exact if t.id != task_id]
    if favourite != task_id:
        reason += f" (they fit task {favourite} too, which went to another of your models)"
    elif also:
        reason += f" (they fit task{'s' * (len(also) > 1)} {', '.join(also)} too; its held-out performance decided)"
    return _with_runner_up(Match(task_id, True, a, reason + ".", exact=True), c.exact)


def _fallback_match(c: _Considered, claimed: set[str]) -> Match:
    """The match of a model whose layers are no task's: its best share of the points, on a task nothing
    else answers when it earns something there."""
    ranked = [(t, a) for t, a in c.ranked if t.dataset == c.likeliest] or c.ranked
    unclaimed = [(t, a) for t, a in ranked if t.id not in claimed and a.fraction > 0]
    task, a = _ranked(unclaimed)[0] if unclaimed else ranked[0]
    others = [t.id for t, _ in ranked if t.id != task.id]
    reason = f"Inferred as task {task.id} from its held-out performance: its layers match no task exactly"
    reason += f" (also considered: {', '.join(others)})." if others else "."
    return _with_runner_up(Match(task.id, True, a, reason), c.ranked)  # every dataset its data may come from


def _no_task(assignment, info: ModelInfo) -> Match:
    """No task takes a model of this input width: the reason says which widths they take."""
    widths = sorted({t.architecture.inputs for t in assignment.model_tasks()})
    return Match(None, True, None,
                 f"This model takes {info.inputs} input(s) and gives {info.outputs} output(s); "
                 f"no task of this assignment has that input width (the tasks take "
                 f"{' or '.join(map(str, widths))} input(s)).")


def assign_tasks(assignment, models: list[tuple[dict, list[str] | None]], answered=()) -> list[Match]:
    """The task each of a student's unnamed models answers, one ``Match`` per model in order.

    ``models``: ``[(evaluation, the datasets it may have been trained on, likeliest first)]`` ([] or None:
    unknown); ``answered``: the tasks that a file the student named answers
    (models that match no task exactly avoid them)."""
    considered = [_consider(assignment, evaluation, datasets or []) for evaluation, datasets in models]
    placed = _assign_exact(considered)
    claimed = set(answered) | {t.id for c in considered for t, _ in c.exact[:1]} | set(placed.values())
    matches = []
    for i, c in enumerate(considered):
        if not c.ranked:
            matches.append(_no_task(assignment, c.info))
        elif c.exact:
            matches.append(_exact_match(c, placed.get(i, c.exact[0][0].id)))
        else:
            matches.append(_fallback_match(c, claimed))
    return matches


def infer_task(assignment, evaluation: Evaluation, datasets=None) -> Match:
    """The task one model answers, on its own (``assign_tasks`` for a single model)."""
    return assign_tasks(assignment, [(evaluation, datasets)])[0]

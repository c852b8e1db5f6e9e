"""One grading session: a student's job enters each stage once, in the pipeline's order.

The session tells its ``Events`` each stage it enters; the calls themselves are traced too (``sys.setprofile``
on the grader's own modules), so a stage that asked a later one for something (re-training asking scoring for
its plan) shows as a call into the later stage before the earlier one is done.
"""
from __future__ import annotations

import sys

from conftest import small_model
from grader.intake import collect
from grader.session import Events, GradingSession

STAGES = ("measure", "retrain", "score", "report")


class _Recorder(Events):
    def __init__(self):
        self.stages = []

    def stage(self, name: str) -> None:
        self.stages.append(name)


def _traced(calls: list):
    """A profile function that appends each stage of the grader the calls enter (consecutive ones once)."""
    def profile(frame, event, arg):
        if event != "call":
            return
        parts = frame.f_globals.get("__name__", "").split(".")
        if parts[0] == "grader" and len(parts) > 1 and parts[1] in STAGES and (not calls or calls[-1] != parts[1]):
            calls.append(parts[1])
    return profile


def test_one_job_enters_measure_retrain_score_and_plots_once_in_that_order(assignment, evaluator, tmp_path):
    # a model whose file names no task: re-training's plan judges it against every task whose recipes it re-trains
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    small_model(hidden=((4, "relu"), (4, "relu"))).save(folder / "work.h5")
    (submission,) = collect(tmp_path / "subs", assignment)
    events, calls = _Recorder(), []
    session = GradingSession(assignment, evaluator.seeds, evaluator=evaluator)
    sys.setprofile(_traced(calls))
    try:
        measured = session.measure(submission, events)
        result = session.score(measured, events)
        plots = session.plots(result, events)
    finally:
        sys.setprofile(None)
    assert events.stages == ["measure", "retrain", "score", "plots"]
    assert plots and any(t.status != "missing" for t in result.tasks)  # the job was graded and drawn
    # the calls: scoring's code runs only after re-training is done, and nothing measures or re-trains after it
    assert {"measure", "retrain", "score", "report"} <= set(calls), calls
    first_score = calls.index("score")
    last_retrain = len(calls) - 1 - calls[::-1].index("retrain")
    assert calls.index("measure") < calls.index("retrain") < first_score, calls
    assert last_retrain < first_score, calls
    assert not {"measure", "retrain"} & set(calls[first_score:]), calls
    assert "report" not in calls[:first_score], calls

"""One grading session: the stages composed once, for every caller (batch engines, check, Gradescope).

``GradingSession(assignment, seeds, limits)`` owns the evaluation worker; ``measure`` (the student's own runs,
then ``retrain``, which plans and re-trains the recipes), ``score`` and ``plots`` (of a scored result): one job
enters each stage once, in that order (``Events.stage``).  ``Events`` is the one interface by which a session,
and a batch, tell their caller what happens.  Why: docs/design/session.md.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .execute import _remove
from .measure.budget import student_clock
from .measure.student import measure_student
from .records import Evaluation, Measurements, StudentResult
from .retrain import retrain
from .retrain.plan import plan_inputs, planned
from .score import score_student
from .store import keys


class Events:
    """What grading tells its caller as it goes, as hooks (each a no-op here: override what you show).  Every
    text is as the grader wrote it, student-chosen parts included: a presenter makes it safe for its medium."""

    def secret_created(self, origin: str) -> None:
        """A new grading secret was written to ``origin`` (the TA must keep it)."""

    def warning(self, text: str, *, severe: bool = False) -> None:
        """Something the TA must know; ``severe``: grading runs without a safeguard."""

    def note(self, text: str) -> None:
        """Something the caller may like to know (the time limits in force, files left out)."""

    def started(self, total: int) -> None:
        """A batch begins: ``total`` students."""

    def status(self, text: str) -> None:
        """What the batch is doing now (empty: nothing in particular)."""

    def student_done(self, student_id: str, counts: dict) -> None:
        """A student's result is stored; ``counts``: measured / rescored / cached and passed / failed / error."""

    def finished(self) -> None:
        """A batch ended (also after an error or an interruption)."""

    def cell(self, run, file: str) -> None:
        """A cell of the notebook or script ``file`` finished (``execute.CellRun``)."""

    def evaluated(self, evaluation) -> None:
        """A model's ``Evaluation``, as it is measured (in the evaluating thread)."""

    def stage(self, name: str) -> None:
        """One student's grading enters a stage: ``measure``, ``retrain``, ``score``, ``plots`` (in that order)."""

    def reference_run(self, task_id: str, seed: int, metrics: dict) -> None:
        """Calibration: the reference of ``task_id`` trained with ``seed`` was evaluated (``{metric: value}``)."""

    def timing_run(self, backend: str, run: int, runs: int, result) -> None:
        """Calibration: run ``run`` of ``runs`` of the reference notebook on ``backend`` ended (its ``RunResult``)."""


class GradingSession:
    """The stages for one assignment and one set of held-out seeds.  ``limits``: the notebooks' time limits
    (``execute.limits.BatchLimits``; None: this process's own); ``unsandboxed``: run notebooks even where they
    cannot be isolated.  ``evaluator``: an evaluation worker to use (the session then does not close it)."""

    def __init__(self, assignment, seeds: dict, limits=None, *, unsandboxed: bool = False, evaluator=None):
        from .evaluate import Evaluator

        self.assignment, self.seeds, self.limits, self.unsandboxed = assignment, dict(seeds), limits, unsandboxed
        self._owned = evaluator is None
        self.evaluator = Evaluator(assignment, self.seeds) if evaluator is None else evaluator

    def start(self, wait: bool = True) -> "GradingSession":
        self.evaluator.start(wait=wait)
        return self

    def close(self) -> None:
        if self._owned:
            self.evaluator.close()

    def __enter__(self) -> "GradingSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def measure(self, submission, events: Events | None = None, clock=None) -> Measurements:
        """The student's own runs, then their recipes re-trained: all one clock (``clock``: a budget already
        running, such as Gradescope's, when it has less left than the spec's ``student_time_s``)."""
        clock = student_clock(self.assignment, clock)
        scratch = Path(tempfile.mkdtemp(prefix="grader-student-"))  # the grader's copies of the student's files
        try:
            (events or Events()).stage("measure")
            measured = measure_student(self.assignment, submission, self.evaluator, scratch=scratch, events=events,
                                       limits=self.limits, unsandboxed=self.unsandboxed, clock=clock)
            self.retrain(measured, scratch, clock, events)
        finally:
            _remove(scratch)
        for source, _ in measured.evaluated:  # used by the workers; scoring needs only its name
            source.training = source.preprocessing = source.recipe = None
        return measured

    def retrain(self, measured: Measurements, scratch: Path, clock=None, events: Events | None = None) -> Measurements:
        """Plan and re-train the recipes of the student's own runs (``retrain.plan``: by the spec's thresholds and
        K); ``measured.retrain_key`` says what re-training read (``store.keys.retrain_key``)."""
        (events or Events()).stage("retrain")
        plan = planned(self.assignment, measured.evaluated)
        measured.retrain_key = retrain_key(self.assignment, measured)
        retrain(self.assignment, self.evaluator, measured.evaluated, plan, scratch, clock)
        return measured

    def evaluate(self, path, training: dict | None = None) -> Evaluation:
        """One model file evaluated as a student's is, outside any submission (calibration's reference runs)."""
        return self.evaluator.evaluate(path, training)

    def score(self, measured: Measurements, events: Events | None = None) -> StudentResult:
        (events or Events()).stage("score")
        return score_student(self.assignment, measured)

    def plots(self, result: StudentResult, events: Events | None = None) -> dict:
        """The plots a scored result's page shows, drawn now: ``{key: PNG}``."""
        from .report.cache import task_plot

        (events or Events()).stage("plots")
        out = {}
        for t in result.tasks:
            plot = task_plot(self.assignment, t)
            if plot is not None and plot.key not in out:
                out[plot.key] = plot.png()
        return out

    def grade(self, submission, events: Events | None = None, clock=None) -> tuple[Measurements, StudentResult]:
        measured = self.measure(submission, events, clock)
        return measured, self.score(measured, events)


def retrain_key(assignment, measured: Measurements) -> str:
    """What re-training reads of these runs (``store.keys.retrain_key``): the same key, the same re-trainings."""
    return keys.retrain_key(assignment, plan_inputs(assignment, measured.evaluated))


def grade_student(assignment, submission, evaluator, *, events: Events | None = None, limits=None) -> StudentResult:
    """Measure, re-train and score one submission with ``evaluator`` (no gradebook): for the tests."""
    return GradingSession(assignment, evaluator.seeds, limits, evaluator=evaluator).grade(submission, events)[1]


def retrain_recipes(assignment, evaluator, evaluated, scratch: Path, clock=None) -> None:
    """Plan and re-train the recipes of ``evaluated`` (``[(Source, Evaluation)]``, as measured): for the
    tests."""
    retrain(assignment, evaluator, evaluated, planned(assignment, evaluated), scratch, clock)

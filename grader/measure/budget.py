"""Time one student's requests share: the student's whole clock, and each kind's own budget."""
from __future__ import annotations

import time
from contextlib import contextmanager

from ..errors import EvaluationTimeout, SubmissionError
from ..execute.limits import StudentClock


def student_clock(assignment, outer: StudentClock | None = None) -> StudentClock:
    """The student's whole time from now: ``[evaluation] student_time_s``, or ``outer`` (a budget already
    running, such as Gradescope's) when it has less left."""
    own = assignment.limits.student_time_s
    if outer is not None and outer.left() < own:
        return outer
    return StudentClock(own, "the grader's time budget per student (student_time_s)")


class Budget:
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

    def evaluate(self, evaluator, source, path):
        """(the model's ``Evaluation``, None), or (None, the error that says why it was not evaluated)."""
        if self.left() <= 0:
            spent = (f"this submission used up {self.clock.why} ({self.clock.total_s:.0f} s) before it" if
                     self.clock_ran_out() else
                     f"this submission's files used up the grader's evaluation time of {self.total:.0f} s per "
                     "student before it")
            return None, EvaluationTimeout(f"{source.name}: not evaluated; {spent}.",
                                           hint="Submit only the models the tasks ask for.")
        try:
            with self.spend():
                return evaluator.evaluate(path, source.training, source.preprocessing, timeout=self.timeout(),
                                          provenance=source.provenance), None
        except SubmissionError as e:
            return None, e

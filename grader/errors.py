"""Every failure the grader can meet, as a named exception.

Each exception carries a plain-words ``message`` meant for the person who will
read the report (a student or a TA); ``explain()`` is what ends up there.
``GraderError`` subclasses that concern one submission fail that submission
(or that task) only; ``FatalError`` subclasses stop the run because the
grader itself cannot work (a broken spec, an unwritable output folder).
"""
from __future__ import annotations


class GraderError(Exception):
    """Base of every error the grader reports in words."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def explain(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message

    def __reduce__(self):
        # crossing a process boundary (worker pools, Dask) must keep the hint and the exact class
        return _rebuild, (type(self), self.message, self.hint)


def _rebuild(cls, message: str, hint: str | None):
    error = cls.__new__(cls)
    GraderError.__init__(error, message, hint=hint)
    return error


# --- errors that stop the run -------------------------------------------------


class FatalError(GraderError):
    """The grader itself cannot run; the CLI exits non-zero."""


class SpecError(FatalError):
    """The assignment spec is missing, malformed or inconsistent."""

    def __init__(self, path, field: str | None, problem: str):
        where = f"{path}: {field}" if field else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class OutputError(FatalError):
    """The output folder cannot be written."""


# --- errors that fail one file, task or student ------------------------------


class SubmissionError(GraderError):
    """Something is wrong with a submission (not with the grader)."""


class EmptySubmission(SubmissionError):
    """The submission holds nothing to grade."""


class UnreadableFile(SubmissionError):
    """A submitted file cannot be read (a link, a special file, too large, unreadable bytes)."""


class UnknownFormat(SubmissionError):
    """The bytes of a file are not a model format Keras can load."""


class CorruptModel(SubmissionError):
    """The file has a model format's signature but cannot be read as one."""


class UnsafeModel(SubmissionError):
    """The model holds code or layers that could run code when loaded."""


class ModelTooLarge(SubmissionError):
    """The model claims more parameters than any task needs (a shape bomb)."""


class ModelLoadError(SubmissionError):
    """Keras could not rebuild the model from the file."""


class EvaluationFailed(SubmissionError):
    """The model loaded but could not be run on the held-out data."""


class EvaluationTimeout(SubmissionError):
    """Loading or evaluating took longer than the time limit."""


class EvaluationOutOfMemory(SubmissionError):
    """The evaluation worker ran out of its memory cap."""


class WorkerCrashed(SubmissionError):
    """The evaluation worker died while handling this file."""


class NotebookUnreadable(SubmissionError):
    """A notebook or script that cannot be read as one."""


class KernelStartFailed(SubmissionError):
    """The notebook's kernel could not be started."""


class GradebookError(FatalError):
    """The gradebook cannot be opened, read or written."""


class OutputBusy(FatalError):
    """Another grader process is writing to the same output folder."""


class ClusterError(FatalError):
    """The Dask cluster given with --scheduler cannot be used."""

"""Result records: what results.json, the gradebook and the reports are made of (``grader.records``)."""
from ..records import PASS_FRACTION, FileResult, StudentResult, TaskResult, clean_metrics

__all__ = ["PASS_FRACTION", "FileResult", "StudentResult", "TaskResult", "clean_metrics"]

"""What measuring a submission yields (``grader.records``, where these now live)."""
from ..records import Evaluation, Measurements, Retraining, Source

__all__ = ["Evaluation", "Measurements", "Retraining", "Source"]

"""Measure: running a submission and evaluating its models (the slow half of grading).

``measure_student`` runs a submission's notebooks and scripts in the sandbox
(``execute``), takes the models they leave (``harvest``) and the models the
student submitted, and has each evaluated on held-out data by the evaluation
worker (``evaluate``).  Its ``Measurements`` (``records``) are all that
scoring needs, and what the gradebook stores.
"""
from .records import Measurements, Source

__all__ = ["Measurements", "Source"]

"""Measure: running a submission and evaluating its models, the student's own runs (the slow half of grading).

``measure_student`` runs notebooks and scripts in the sandbox (``execute``), takes the models they leave
(``harvest``) and those submitted, and has each evaluated (``evaluate``).  Why: docs/design/measure.md.
"""
from ..records import Measurements, Source

__all__ = ["Measurements", "Source"]

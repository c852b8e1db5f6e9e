"""Continuous-integration templates shipped with grader (see `grader workflow`)."""

"""grader: grades Keras neural-network assignments from notebooks and saved models.

The pipeline, one subpackage per stage:
spec -> intake -> evaluate -> score -> report (results.json, HTML).
"""
__version__ = "0.1.0"

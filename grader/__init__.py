"""grader: grades Keras neural-network assignments from notebooks, scripts and saved models.

The pipeline, one subpackage per stage (the README's code map says more):

    spec -> intake -> execute -> harvest -> evaluate -> measure -> score (pure) -> store / report / export

``grader.api`` is the public API (it never prints); ``grader.cli`` only presents it.
"""
__version__ = "0.1.0"

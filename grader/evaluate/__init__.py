"""Held-out evaluation of models, in a separate clean process."""
from .heldout import dataset_seeds, resolve_secret
from .worker import Evaluator

__all__ = ["Evaluator", "dataset_seeds", "resolve_secret"]

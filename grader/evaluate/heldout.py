"""Held-out data: made by the grader from a secret, never seen by students.

The secret comes from ``GRADER_SECRET`` or from a file the grader keeps in its
output folder; only seeds derived from it (one per dataset) ever leave the
grading process, and they go to the evaluation worker alone.
"""
from __future__ import annotations

import hashlib
import os
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..spec import Assignment, Dataset, import_reference
from ..spec.tables import read_labelled_csv

SECRET_ENV = "GRADER_SECRET"
SECRET_FILE = ".grader-secret"


@dataclass(frozen=True)
class Secret:
    value: str
    origin: str  # "environment", "created <path>", "<path>"
    created: bool = False


def resolve_secret(out_dir: Path) -> Secret:
    """The grading secret: ``$GRADER_SECRET``, else ``out_dir/.grader-secret`` (created once)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return Secret(env, f"the {SECRET_ENV} environment variable")
    path = Path(out_dir) / SECRET_FILE
    try:
        if path.is_file():
            value = path.read_text().strip()
            if value:
                return Secret(value, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        value = _secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    except OSError as e:
        raise OutputError(f"cannot keep the grading secret in {path}: {e.strerror or e}") from None
    return Secret(value, str(path), created=True)


def derive_seed(secret: str, *parts: str) -> int:
    digest = hashlib.sha256(":".join((secret,) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def dataset_seeds(assignment: Assignment, secret: str) -> dict[str, int]:
    return {name: derive_seed(secret, assignment.id, "heldout", name) for name in assignment.datasets}


def function_grid(ds: Dataset, seed: int, training_x: np.ndarray) -> np.ndarray:
    """A dense grid over the domain, shifted by a secret offset, minus the training points."""
    rng = np.random.default_rng(seed)
    lo, hi = ds.domain
    n = ds.heldout_points
    offset = rng.uniform(0.05, 0.95)
    x = lo + (np.arange(n) + offset) * (hi - lo) / n
    train = np.asarray(training_x, dtype=np.float64).ravel()
    keep = ~np.isin(np.round(x, 12), np.round(train, 12))
    return x[keep]


def make_heldout(assignment: Assignment, ds: Dataset, seed: int) -> dict[str, np.ndarray]:
    """Held-out inputs and truth for one dataset: ``{"x", "y"}``."""
    if ds.kind == "function":
        f = import_reference(assignment, ds.function)
        x = function_grid(ds, seed, import_reference(assignment, ds.train_x)())
        return {"x": x, "y": np.asarray(f(x), dtype=np.float64)}
    if ds.heldout_file is not None:  # the unreleased dataset the TA keeps: the file is the held-out data
        X, y, _ = read_labelled_csv(ds.heldout_file, ds.label_column)
        return {"x": X, "y": y}
    gen = import_reference(assignment, ds.generator)
    X, y = gen(**ds.heldout, rng=np.random.default_rng(seed))
    return {"x": np.asarray(X, dtype=np.float64), "y": np.asarray(y, dtype=np.float64).ravel()}


def make_training(assignment: Assignment, ds: Dataset) -> dict[str, np.ndarray] | None:
    """The training inputs a function dataset fixes (the sheet's linspace), or None."""
    if ds.kind != "function":
        return None
    x = np.asarray(import_reference(assignment, ds.train_x)(), dtype=np.float64)
    return {"x": x, "y": np.asarray(import_reference(assignment, ds.function)(x), dtype=np.float64)}

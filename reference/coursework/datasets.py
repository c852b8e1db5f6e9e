"""Synthetic catapult designs of the coursework's form, for the demo and the tests.

The real datasets (2,000 and 4,000 labelled designs) belong to the course and
the marking set is unreleased; these generators make data of the same form so
that everything runs without them: the six inputs in the sheet's order and
roughly its ranges (dataset 2 with the ball radius in millimetres and stiffer
springs, as in the real dataset 2), and a 0/1 "target hit" label from a
simple physical model: the spring's energy throws the ball, drag shortens the
throw, and the target is hit when the throw lands near the target distance.
About half the designs hit; 3% of labels are flipped, as measurement noise.
"""
from __future__ import annotations

import numpy as np

COLUMNS = ["Arm length (m)", "Ball weight (kg)", "Ball radius (mm)", "Air temperature (deg C)",
           "Spring constant (N per m)", "Device weight (kg)"]
LABEL = "Target hit"
NOISE = 0.03


def _designs(n: int, dataset: int, rng: np.random.Generator) -> np.ndarray:
    arm = np.clip(rng.normal(0.3, 0.1, n), 0.05, 0.65)
    weight = rng.uniform(0.011, 0.61, n)
    if dataset == 1:
        radius = np.clip(0.01 + rng.exponential(0.15, n), 0.01, 0.47)
        spring = np.clip(50 + rng.exponential(234, n), 50, 800)
    else:
        radius = np.clip(10 + rng.exponential(42, n), 10, 275)
        spring = np.clip(67 + rng.exponential(550, n), 67, 2950)
    temperature = rng.integers(7, 31, n).astype(float)
    device = rng.uniform(0.5, 8.0, n)
    return np.column_stack([arm, weight, radius, temperature, spring, device])


def _log_throw(X: np.ndarray, dataset: int) -> np.ndarray:
    arm, weight, radius, temperature, spring, device = X.T
    r = radius / (0.47 if dataset == 1 else 275.0)  # the radius relative to the largest ball
    speed2 = spring * arm ** 2 / (weight + 0.05 * device)  # the spring's energy into the ball (and the arm)
    drag = np.exp(-1.5 * r / np.sqrt(weight + 0.05)) * (1 + (temperature - 20) / 300)
    return np.log(speed2 * drag / 9.81)


def _band(dataset: int) -> tuple[float, float]:
    """The target: throws within this band of log-distances hit (about half of all designs)."""
    sample = _log_throw(_designs(200_000, dataset, np.random.default_rng(12345)), dataset)
    centre = float(np.median(sample))
    return centre, float(np.median(np.abs(sample - centre)))


_BANDS = {1: _band(1), 2: _band(2)}


def gen_catapult(n: int, dataset: int = 1, rng: np.random.Generator | None = None):
    """n designs and their labels: (X of shape (n, 6) in COLUMNS order, y of 0/1)."""
    rng = rng if rng is not None else np.random.default_rng()
    X = _designs(n, dataset, rng)
    centre, width = _BANDS[dataset]
    y = (np.abs(_log_throw(X, dataset) - centre) < width).astype(float)
    flip = rng.random(n) < NOISE
    y[flip] = 1 - y[flip]
    return X, y


def write_csv(path, X, y) -> None:
    """A file of the real datasets' form: a header row, six inputs, the label."""
    with open(path, "w") as f:
        f.write(",".join(COLUMNS + [LABEL]) + "\n")
        for row, label in zip(X, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{float(label)}\n")

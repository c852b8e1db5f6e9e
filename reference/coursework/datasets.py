"""Synthetic catapult designs of the coursework's form and law, for the demo and the tests.

The released datasets (2,000 and 4,000 labelled designs) belong to the course and the marking set is
unreleased; these generators make data of the same form and, as far as a small network can tell,
the same law, so that the demo and the tests say something about real marking: a reference trained
on this data scores on released designs within a few points of one trained on released designs
(tests/test_coursework.py checks it when the files are present).  No released row is stored here,
only parameters fitted to the released files (``fit_datasets.py`` prints them again from the files):

* **Inputs**, in the sheet's order, each from its released marginal: arm length, ball weight and
  (dataset 1) ball radius and spring constant are normals truncated to the released ranges, the air
  temperature whole degrees of a normal within 7-30, the device weight uniform on 0.5-8 kg.
  Dataset 1's ball radius is in metres despite its column's "(mm)"; dataset 2's is in millimetres,
  and its springs are stiffer.
* **Dataset 1's law**: independent inputs, and a design hits with probability ``1 / (1 + e^-z)``,
  ``z`` linear in the log arm length, log ball weight, log ball radius, temperature, spring constant
  and device weight (a logistic regression on the released rows).  The labels are noisy near the
  boundary: the law itself labels only 92% of the released designs right, and networks trained on
  them do no better.
* **Dataset 2's law**: the label depends on a design only through two combinations,
  ``u = log(spring * arm**1.22)`` and ``v = log(radius / weight**0.84)``; in their plane hits and
  misses lie on two interleaved spiral arms (no catapult's physics: a puzzle the course set).
  Each class's ``(u, v)`` is drawn from a mixture of six Gaussians fitted to that class's released
  designs, so both where the designs lie and how much the two classes overlap (the label noise:
  the mixtures label 84% of the released designs right) are the released data's.  Arm length and
  ball weight are drawn on their own, the spring constant and radius follow from ``u`` and ``v``,
  and a design outside the released ranges is drawn again.
"""
from __future__ import annotations

import numpy as np

COLUMNS = ["Arm length (m)", "Ball weight (kg)", "Ball radius (mm)", "Air temperature (deg C)",
           "Spring constant (N per m)", "Device weight (kg)"]
LABEL = "Target hit"

# inputs both datasets share: (mean, sd, low, high) of a truncated normal; the device weight uniform
ARM = (0.30, 0.10, 0.05, 0.70)  # m
BALL_WEIGHT = (0.31, 0.10, 0.01, 0.67)  # kg
TEMPERATURE = (19.0, 5.2, 7, 30)  # deg C, rounded to whole degrees
DEVICE_WEIGHT = (0.5, 8.0)  # kg

# dataset 1: the radius in metres
RADIUS_1 = (0.1381, 0.1076, 0.01, 0.47)
SPRING_1 = (245.1, 168.5, 50.0, 800.0)  # N/m
#: the log-odds of a hit: intercept, then the coefficients of logit_features' columns
LOGIT_1 = (-5.806, (4.651, -8.582, 5.149, 0.03985, 0.03552, 0.1283))

# dataset 2: the radius in millimetres
SPRING_ARM_POWER = 1.22
RADIUS_WEIGHT_POWER = 0.84
SPRING_2 = (67.0, 2950.0)  # N/m, the released range
RADIUS_2 = (10.0, 275.0)  # mm, the released range
HIT_SHARE_2 = 0.5
#: per class, the mixture in the (u, v) plane: (weight, mean (u, v), covariance (uu, uv, vv)) per component
MIXTURES_2 = {
    0: ((0.2421, (4.6231, 4.4756), (0.04997, -0.00555, 0.00313)),
        (0.1989, (5.0496, 4.6069), (0.00662, 0.00451, 0.01138)),
        (0.1815, (4.9204, 4.9172), (0.02147, -0.00076, 0.01649)),
        (0.1696, (4.3162, 5.3261), (0.10740, 0.10373, 0.17131)),
        (0.1515, (4.1558, 4.6867), (0.05456, -0.01780, 0.02358)),
        (0.0563, (5.2135, 5.3634), (0.02145, -0.04851, 0.18096))),
    1: ((0.3369, (4.6076, 5.1191), (0.04530, 0.03449, 0.05139)),
        (0.2382, (5.1127, 5.0979), (0.01687, -0.02017, 0.05130)),
        (0.1904, (4.7026, 4.6605), (0.03066, -0.00124, 0.00767)),
        (0.1293, (5.1840, 4.5320), (0.00792, 0.00614, 0.01387)),
        (0.0648, (4.5740, 4.3609), (0.12500, -0.00911, 0.00204)),
        (0.0403, (3.9864, 5.1217), (0.23541, 0.17487, 0.26728))),
}


def logit_features(X: np.ndarray) -> np.ndarray:
    """Dataset 1's law reads these columns of the designs X: log arm, log ball weight, log radius,
    temperature, spring constant, device weight."""
    arm, weight, radius, temperature, spring, device = X.T
    return np.column_stack([np.log(arm), np.log(weight), np.log(radius), temperature, spring, device])


def plane(X: np.ndarray) -> np.ndarray:
    """Dataset 2's law reads only these two combinations of the designs X: ``(u, v)`` per row."""
    arm, weight, radius, _, spring, _ = X.T
    return np.column_stack([np.log(spring * arm ** SPRING_ARM_POWER), np.log(radius / weight ** RADIUS_WEIGHT_POWER)])


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, sd: float, low: float, high: float):
    """n draws of a normal truncated to [low, high]: a draw outside is drawn again."""
    x = rng.normal(mean, sd, n)
    outside = (x < low) | (x > high)
    while outside.any():
        x[outside] = rng.normal(mean, sd, outside.sum())
        outside = (x < low) | (x > high)
    return x


def _shared(n: int, rng: np.random.Generator):
    """Arm length, ball weight, temperature and device weight: drawn alike in both datasets."""
    arm = _truncated_normal(rng, n, *ARM)
    weight = _truncated_normal(rng, n, *BALL_WEIGHT)
    mean, sd, low, high = TEMPERATURE
    temperature = np.clip(np.round(rng.normal(mean, sd, n)), low, high)
    return arm, weight, temperature, rng.uniform(*DEVICE_WEIGHT, n)


def _dataset_1(n: int, rng: np.random.Generator):
    """Independent inputs, each label drawn with the logistic law's probability of a hit."""
    arm, weight, temperature, device = _shared(n, rng)
    radius = _truncated_normal(rng, n, *RADIUS_1)
    spring = _truncated_normal(rng, n, *SPRING_1)
    X = np.column_stack([arm, weight, radius, temperature, spring, device])
    intercept, coefficients = LOGIT_1
    hit = 1 / (1 + np.exp(-(intercept + logit_features(X) @ np.array(coefficients))))
    return X, (rng.random(n) < hit).astype(float)


def _mixture(rng: np.random.Generator, components, n: int) -> np.ndarray:
    """n points of the plane drawn from a mixture of Gaussians given as MIXTURES_2 gives them."""
    weights = np.array([w for w, _, _ in components])
    which = rng.choice(len(components), n, p=weights / weights.sum())
    out = np.empty((n, 2))
    for j, (_, mean, (uu, uv, vv)) in enumerate(components):
        rows = which == j
        out[rows] = rng.multivariate_normal(mean, [[uu, uv], [uv, vv]], rows.sum())
    return out


def _draw_2(n: int, rng: np.random.Generator):
    """n labels, then each label's designs: (u, v) from its class's mixture, spring and radius from them."""
    y = (rng.random(n) < HIT_SHARE_2).astype(float)
    uv = np.empty((n, 2))
    for label, components in MIXTURES_2.items():
        rows = y == label
        uv[rows] = _mixture(rng, components, rows.sum())
    arm, weight, temperature, device = _shared(n, rng)
    spring = np.exp(uv[:, 0]) / arm ** SPRING_ARM_POWER
    radius = np.exp(uv[:, 1]) * weight ** RADIUS_WEIGHT_POWER
    return np.column_stack([arm, weight, radius, temperature, spring, device]), y


def _outside_2(X: np.ndarray) -> np.ndarray:
    radius, spring = X[:, 2], X[:, 4]
    return (spring < SPRING_2[0]) | (spring > SPRING_2[1]) | (radius < RADIUS_2[0]) | (radius > RADIUS_2[1])


def _dataset_2(n: int, rng: np.random.Generator):
    """Designs of dataset 2 within the released ranges: one outside is drawn again, label and all."""
    X, y = _draw_2(n, rng)
    outside = _outside_2(X)
    while outside.any():
        X[outside], y[outside] = _draw_2(outside.sum(), rng)
        outside = _outside_2(X)
    return X, y


def gen_catapult(n: int, dataset: int = 1, rng: np.random.Generator | None = None):
    """n designs of released dataset ``dataset`` (1 or 2) and their labels: (X of shape (n, 6) in COLUMNS
    order, y of 0/1 with 1 a hit), drawn from ``rng`` (the grader passes a seeded one)."""
    if dataset not in (1, 2):
        raise ValueError(f"dataset must be 1 or 2, not {dataset!r}")
    rng = rng if rng is not None else np.random.default_rng()
    return _dataset_1(n, rng) if dataset == 1 else _dataset_2(n, rng)


def write_csv(path, X, y) -> None:
    """A file of the real datasets' form: a header row, six inputs, the label."""
    with open(path, "w") as f:
        f.write(",".join(COLUMNS + [LABEL]) + "\n")
        for row, label in zip(X, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{float(label)}\n")

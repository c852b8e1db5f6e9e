"""Data of Tutorial 6, reproduced from the sheet and the course's ``tools.py``.

Trusted reference code: the grader imports it to make held-out data, it is
never given to student code.  Every generator takes ``rng`` (a
``numpy.random.Generator``) so the grader controls the randomness; the
distributions are the course's, point for point:

* ``gen_simple_circular_distribution``: ``round(n/3)`` points of class 0 at
  radius Normal(0, scale), the rest of class 1 at radius Normal(5, scale),
  angles Uniform(0, 2*pi), class 0 first.
* ``gen_xor_distribution``: four clusters of ``a = round(n/4)`` points
  (``b = n - 3a`` in the last), covariance diag(0.4, 0.1) rotated by -45
  degrees (class 0) or +45 degrees (class 1).
* ``gen_circular_distribution``: ``a = round(n/7)`` class-0 points at radius
  Normal(2, scale), ``b = round(2n/7)`` class-1 points at radius
  Normal(5, scale), ``c = n - a - b`` class-0 points at radius Normal(8, scale).
"""
from __future__ import annotations

import numpy as np


def target(x):
    """The piecewise-linear function of task 1 (the sheet's ``y``)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros_like(x)
    rising = (x >= 0.1) & (x < 0.6)
    y[rising] = 0.5 * (x[rising] - 0.1)
    falling = (x >= 0.6) & (x <= 0.8)
    y[falling] = 0.25 - 0.25 / 0.2 * (x[falling] - 0.6)
    return y


def training_x():
    """The sheet's training inputs: ``np.linspace(0, 1, 200)``."""
    return np.linspace(0, 1, 200)


def _rng(rng):
    """The grader passes a seeded Generator; a student's call (the course's tools.py) draws from NumPy's
    global generator, as the course's own code does, so np.random.seed and keras.utils.set_random_seed
    make it repeatable."""
    return rng if rng is not None else np.random


def _ring(rng, count, radius, scale):
    r = rng.normal(radius, scale, count)
    theta = rng.uniform(0, 2 * np.pi, count)
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)])


def gen_simple_circular_distribution(n=100, scale=1, rng=None):
    rng = _rng(rng)
    a = round(n / 3)
    X = np.vstack([_ring(rng, a, 0, scale), _ring(rng, n - a, 5, scale)])
    y = np.concatenate([np.zeros(a), np.ones(n - a)])
    return X, y


def _rotation(degrees):
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def gen_xor_distribution(n=100, rng=None):
    rng = _rng(rng)
    a = round(n / 4)
    b = n - 3 * a
    base = np.diag([0.4, 0.1])
    cov0 = _rotation(-45) @ base @ _rotation(-45).T
    cov1 = _rotation(45) @ base @ _rotation(45).T
    X = np.vstack([
        rng.multivariate_normal([-2.3, -2.3], cov0, a),
        rng.multivariate_normal([2.3, 2.3], cov0, a),
        rng.multivariate_normal([-2.3, 2.3], cov1, a),
        rng.multivariate_normal([2.3, -2.3], cov1, b),
    ])
    y = np.concatenate([np.zeros(2 * a), np.ones(a + b)])
    return X, y


def gen_circular_distribution(n=500, scale=1, rng=None):
    rng = _rng(rng)
    a = round(n / 7)
    b = round(2 * n / 7)
    c = n - a - b
    X = np.vstack([_ring(rng, a, 2, scale), _ring(rng, c, 8, scale), _ring(rng, b, 5, scale)])
    y = np.concatenate([np.zeros(a + c), np.ones(b)])
    return X, y

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
  Normal(5, scale), ``c = n - a - b`` class-0 points at radius Normal(8, scale);
  the first coordinate times ``scale_ellipse``, the second divided by it.
* ``gen_sample_grid`` and ``get_cov``: the course's helpers (the decision-region
  grid, the rotated covariance).

This file is also the course's ``tools.py`` in a student's sandbox.  Called
without ``rng`` (as students call it) every generator draws from NumPy's global
generator in the course's order -- all radii first, each ring's an ``(count, 1)``
array in the order above, then all angles likewise -- so a student's
``np.random.seed(0)`` gives the course's points.  The grader's own draws (a
``numpy.random.Generator``) keep the order the calibration was made with: each
ring's radii, then its angles.
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


def _rings(rng, rings, scale):
    """Points on rings ``[(count, radius), ...]``, stacked in that order."""
    if isinstance(rng, np.random.Generator):  # the grader's draws: the calibrated order, ring by ring
        drawn = [(rng.normal(radius, scale, count), rng.uniform(0, 2 * np.pi, count)) for count, radius in rings]
    else:  # the course's order: every radius, then every angle
        radii = [rng.normal(radius, scale, (count, 1)) for count, radius in rings]
        angles = [rng.uniform(0, 2 * np.pi, (count, 1)) for count, _ in rings]
        drawn = [(r.ravel(), t.ravel()) for r, t in zip(radii, angles)]
    return np.vstack([np.column_stack([r * np.cos(t), r * np.sin(t)]) for r, t in drawn])


def gen_simple_circular_distribution(n=100, scale=1, rng=None):
    rng = _rng(rng)
    a = round(n / 3)
    X = _rings(rng, [(a, 0), (n - a, 5)], scale)
    y = np.concatenate([np.zeros(a), np.ones(n - a)])
    return X, y


def _rotation(degrees):
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def get_cov(sdx=1., sdy=1., rotangdeg=0.):
    """The course's covariance: ``diag(sdx, sdy)`` rotated by ``rotangdeg`` degrees (``R C R^T``)."""
    r = _rotation(rotangdeg)
    return r @ np.diag([float(sdx), float(sdy)]) @ r.T


def gen_sample_grid(npx=200, npy=200, limit=1):
    """The course's grid for decision-region plots: ``(Xgrid, x1line, x2line)``.  ``x1line`` is
    ``linspace(-limit, limit, npx)`` and ``x2line`` likewise with ``npy``, or, when ``limit`` is a list
    ``[x1min, x1max, x2min, x2max]``, those bounds; ``Xgrid`` holds the ``npx*npy`` points of
    ``meshgrid(x1line, x2line)`` as rows (``x1`` varying fastest)."""
    if np.ndim(limit) == 0:
        x1min, x1max, x2min, x2max = -limit, limit, -limit, limit
    else:
        x1min, x1max, x2min, x2max = limit
    x1line = np.linspace(x1min, x1max, npx)
    x2line = np.linspace(x2min, x2max, npy)
    x1grid, x2grid = np.meshgrid(x1line, x2line)
    Xgrid = np.array([x1grid, x2grid]).reshape([2, npx * npy]).T
    return Xgrid, x1line, x2line


def gen_xor_distribution(n=100, rng=None):
    rng = _rng(rng)
    a = round(n / 4)
    b = n - 3 * a
    cov0, cov1 = get_cov(0.4, 0.1, -45), get_cov(0.4, 0.1, 45)
    X = np.vstack([
        rng.multivariate_normal([-2.3, -2.3], cov0, a),
        rng.multivariate_normal([2.3, 2.3], cov0, a),
        rng.multivariate_normal([-2.3, 2.3], cov1, a),
        rng.multivariate_normal([2.3, -2.3], cov1, b),
    ])
    y = np.concatenate([np.zeros(2 * a), np.ones(a + b)])
    return X, y


def gen_circular_distribution(n=500, scale=1, scale_ellipse=1, rng=None):
    rng = _rng(rng)
    a = round(n / 7)
    b = round(2 * n / 7)
    c = n - a - b
    X = _rings(rng, [(a, 2), (c, 8), (b, 5)], scale)
    X[:, 0] *= scale_ellipse
    X[:, 1] /= scale_ellipse
    y = np.concatenate([np.zeros(a + c), np.ones(b)])
    return X, y

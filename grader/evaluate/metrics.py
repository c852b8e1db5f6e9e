"""Metrics computed from a model's outputs on held-out data (pure NumPy)."""
from __future__ import annotations

import numpy as np

PLOT_CURVE_POINTS = 400
PLOT_GRID = 120
PLOT_SAMPLE = 600
PLOT_SEED = 6  # the held-out points a decision-region plot shows: the same for every model and every run
PLOT_MARGIN = 0.04  # of the data's span, left around the outermost points shown


def function_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = pred[:, 0] - truth
    return {"mse": float(np.mean(err ** 2)), "max_error": float(np.max(np.abs(err))),
            # what the best constant answer (the mean) would score: a model that beats it has learned from its inputs
            "constant_mse": float(np.var(truth))}


def class_predictions(out: np.ndarray) -> np.ndarray:
    """Predicted class per row: argmax of several outputs, or a 0.5 cut of a single one."""
    if out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.float64)
    return np.argmax(out, axis=1).astype(np.float64)


def class_metrics(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = class_predictions(out)
    _, counts = np.unique(y, return_counts=True)
    metrics = {"accuracy": float(np.mean(pred == y)),
               # what always answering the most common class would score
               "majority_baseline": float(counts.max() / len(y))}
    if out.shape[1] <= 2:  # what the accuracy would be with the two outputs the other way round
        metrics["accuracy_swapped"] = float(np.mean((1 - pred) == y))
    sums = out.sum(axis=1)
    metrics["outputs_are_probabilities"] = float(
        out.shape[1] > 1 and bool(np.all(out >= -1e-6)) and bool(np.allclose(sums, 1.0, atol=1e-3)))
    cross = cross_entropy(out, y, bool(metrics["outputs_are_probabilities"]))
    if cross is not None:  # and what the best constant answer (the class frequencies) would score
        freq = counts / len(y)
        metrics["log_loss"], metrics["constant_log_loss"] = cross, float(-np.sum(freq * np.log(freq)))
    return metrics


#: the least probability a cross-entropy reads (Keras' epsilon): one confident mistake costs at most -log(1e-7)
PROBABILITY_FLOOR = 1e-7


def cross_entropy(out: np.ndarray, y: np.ndarray, probabilities: bool) -> float | None:
    """The mean cross-entropy of outputs read as class probabilities (one sigmoid output, or several that are
    ``probabilities``) against labels ``y``; None when the outputs are not probabilities."""
    labels = np.asarray(y).ravel().astype(np.int64)
    if out.shape[1] == 1:
        p = out[:, 0]
        if not (np.all(p >= -1e-6) and np.all(p <= 1 + 1e-6)) or labels.max(initial=0) > 1:
            return None
        p = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        return float(-np.mean(np.where(labels == 1, np.log(p), np.log1p(-p))))
    if not probabilities or labels.min(initial=0) < 0 or labels.max(initial=0) >= out.shape[1]:
        return None
    return float(-np.mean(np.log(np.clip(out[np.arange(len(labels)), labels], PROBABILITY_FLOOR, 1.0))))


def positive_probability(out: np.ndarray) -> np.ndarray:
    """The score of class 1 per row, for decision-region plots."""
    return out[:, 1] if out.shape[1] > 1 else out[:, 0]


def grid_points(extent, n=PLOT_GRID) -> np.ndarray:
    xmin, xmax, ymin, ymax = extent
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n))
    return np.column_stack([gx.ravel(), gy.ravel()])


def plot_sample(y: np.ndarray, n: int = PLOT_SAMPLE, seed: int = PLOT_SEED) -> np.ndarray:
    """Indices of the held-out points a decision-region plot draws: up to ``n``, stratified by class.

    Held-out data come sorted by class, so a plain head would show one class only.  Each class gets a
    share in proportion to its size, but at least half of an equal split (a small class stays visible)
    or all of its points when it has fewer; the points are drawn at random with a fixed seed, so the
    same held-out data give the same picture, and returned shuffled, so no class is painted over the
    other as a block."""
    y = np.asarray(y).ravel()
    classes, counts = np.unique(y, return_counts=True)
    n = min(n, len(y))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    floor = np.minimum(counts, n // (2 * len(classes)))
    quota = np.clip(np.floor(counts * n / len(y)).astype(np.int64), floor, counts)
    while quota.sum() > n:  # the floors pushed the total over: take from the classes above their floor
        quota[np.argmax(np.where(quota > floor, quota - floor, -1))] -= 1
    while quota.sum() < n:  # rounding left places: give them to the classes with the most points left over
        quota[np.argmax((counts - quota) / counts)] += 1
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                             for c, k in zip(classes, quota, strict=True)])
    return rng.permutation(picked)


def plot_extent(extent, x: np.ndarray, margin: float = PLOT_MARGIN) -> list[float]:
    """``[xmin, xmax, ymin, ymax]`` covering both the dataset's plotting extent and the points ``x``
    (two columns) with a small margin: no point drawn falls outside the axes or the decision grid."""
    xmin, xmax, ymin, ymax = (float(v) for v in extent)
    if len(x) == 0:
        return [xmin, xmax, ymin, ymax]
    lo, hi = np.min(x, axis=0), np.max(x, axis=0)
    pad = margin * (hi - lo)
    return [min(xmin, float(lo[0] - pad[0])), max(xmax, float(hi[0] + pad[0])),
            min(ymin, float(lo[1] - pad[1])), max(ymax, float(hi[1] + pad[1]))]

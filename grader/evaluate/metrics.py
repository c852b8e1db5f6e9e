"""Metrics computed from a model's outputs on held-out data (pure NumPy)."""
from __future__ import annotations

import numpy as np

PLOT_CURVE_POINTS = 400
PLOT_GRID = 120
PLOT_SAMPLE = 600


def function_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = pred[:, 0] - truth
    return {"mse": float(np.mean(err ** 2)), "max_error": float(np.max(np.abs(err)))}


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
    return metrics


def positive_probability(out: np.ndarray) -> np.ndarray:
    """The score of class 1 per row, for decision-region plots."""
    return out[:, 1] if out.shape[1] > 1 else out[:, 0]


def grid_points(extent, n=PLOT_GRID) -> np.ndarray:
    xmin, xmax, ymin, ymax = extent
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n))
    return np.column_stack([gx.ravel(), gy.ravel()])

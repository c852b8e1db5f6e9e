"""Plots for the reports, drawn with matplotlib and inlined as base64 PNG."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def curve(plot: dict, truth, title: str) -> str:
    """The model's fitted curve against the true function."""
    x = np.asarray(plot["x"])
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(x, truth(x), color="#444", lw=2, label="true function")
    ax.plot(x, plot["y_pred"], color="#d62728", lw=1.5, ls="--", label="your model")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def regions(plot: dict, extent, title: str) -> str:
    """Decision regions (probability of class 1) with held-out points."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(np.asarray(plot["grid"], dtype=np.float32), origin="lower", extent=extent, cmap="RdBu_r", vmin=0, vmax=1, alpha=0.6,
              aspect="auto")
    x, y, pred = np.asarray(plot["x"]), np.asarray(plot["y"]), np.asarray(plot["pred"])
    right = pred == y
    for cls, color in ((0, "#1f4e9c"), (1, "#a1171b")):
        sel = (y == cls) & right
        ax.scatter(x[sel, 0], x[sel, 1], s=4, c=color, marker="o", label=f"class {cls}")
    wrong = ~right
    ax.scatter(x[wrong, 0], x[wrong, 1], s=14, c="#ffcc00", marker="x", label="misclassified")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def histogram(scores, max_score: float) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    bins = np.linspace(0, max_score, 11) if max_score > 0 else 10
    ax.hist(scores, bins=bins, color="#4c72b0", edgecolor="white")
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.set_title("Score distribution", fontsize=10)
    return _png(fig)

"""Plots for the reports, drawn with matplotlib and inlined as base64 PNG."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


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


#: decision-region colours: the model's probability of class 1 as a light grey shading (white = class 0),
#: its 0.5 contour as the boundary, held-out points in two hues that are neither grey nor like each other
#: (blue and orange: told apart with colour-blindness too), a black cross over each misclassified point
REGION_SHADES = LinearSegmentedColormap.from_list("grader-regions", ["#ffffff", "#a6a6a6"])
CLASS_COLOURS = ("#0072b2", "#e69f00")
MISCLASSIFIED = "#000000"
BOUNDARY = "#333333"


def regions(plot: dict, extent, title: str) -> str:
    """Decision regions (the model's probability of class 1, its 0.5 boundary) under held-out points
    of both classes, misclassified ones crossed; the axes cover the grid and every point drawn
    (``plot["extent"]``; stored measurements that predate it are drawn over the dataset's ``extent``)."""
    extent = [float(v) for v in plot.get("extent", extent)]
    grid = np.asarray(plot["grid"], dtype=np.float32)
    x, y, pred = np.asarray(plot["x"]), np.asarray(plot["y"]), np.asarray(plot["pred"])
    fig, ax = plt.subplots(figsize=(4.2, 4.6))
    ax.imshow(grid, origin="lower", extent=extent, cmap=REGION_SHADES, vmin=0, vmax=1, aspect="equal")
    if np.nanmin(grid) < 0.5 < np.nanmax(grid):
        ax.contour(grid, levels=[0.5], origin="lower", extent=extent, colors=BOUNDARY, linewidths=1.2)
    colours = np.array(CLASS_COLOURS)[np.clip(y.astype(int), 0, 1)]
    ax.scatter(x[:, 0], x[:, 1], s=9, c=colours, linewidths=0)  # one call: classes interleaved, none on top
    wrong = pred != y
    ax.scatter(x[wrong, 0], x[wrong, 1], s=16, c=MISCLASSIFIED, marker="x", linewidths=0.9)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_title(title, fontsize=10)
    dot = dict(marker="o", linestyle="none", markersize=5, markeredgewidth=0)
    handles = [Line2D([], [], color=CLASS_COLOURS[0], label=f"class 0 ({np.sum(y == 0)})", **dot),
               Line2D([], [], color=CLASS_COLOURS[1], label=f"class 1 ({np.sum(y == 1)})", **dot),
               Line2D([], [], color=MISCLASSIFIED, marker="x", linestyle="none", markersize=5,
                      label=f"misclassified ({np.sum(wrong)})"),
               Line2D([], [], color=BOUNDARY, lw=1.2, label="boundary, P(class 1) = 0.5"),
               Patch(facecolor=REGION_SHADES(0.0), edgecolor="#777777", label="P(class 1) = 0"),
               Patch(facecolor=REGION_SHADES(1.0), edgecolor="#777777", label="P(class 1) = 1")]
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.07),
              frameon=False)
    return _png(fig)


def histogram(scores, max_score: float) -> str:
    """The class's score distribution, in ten bins from 0 to the maximum."""
    fig, ax = plt.subplots(figsize=(6, 2.5))
    bins = np.linspace(0, max_score, 11) if max_score > 0 else 10
    ax.hist(scores, bins=bins, color="#4c72b0", edgecolor="white")
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.set_title("Score distribution", fontsize=10)
    return _png(fig)

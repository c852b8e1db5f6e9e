"""Plots for the reports, drawn with matplotlib (Agg) and inlined as base64 PNG.

A ``Plot`` is what it shows (plain arrays, picklable) and a ``key`` (a digest of that and of this module's
source): the same key is the same picture, so a ``PlotCache`` keeps each one drawn, and a plot can be drawn
wherever is idle.  Each kind is drawn on a figure kept per process (``_Kept``) with blitting;
``Plot.png(plain=True)`` draws it the plain way, and the tests hold the two to the same picture.
Why: docs/design/report.md.
"""
from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imsave  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import Bbox, TransformedBbox  # noqa: E402

DPI = 80
PAD_INCHES = 0.1  # around the tight box, as savefig pads it
#: this module's source and matplotlib's version: a change to how plots are drawn changes every key, so nothing
#: stale is reused
CODE = hashlib.sha256(Path(__file__).read_bytes() + f"\0matplotlib {matplotlib.__version__}".encode()).hexdigest()[:16]
#: room around a kept figure's default size, so that what the tight box holds (a legend below the axes) is on
#: the canvas; the axes keep the size and place they have in a figure of the default size
MARGIN_INCHES = 1.0
KEPT_FIGURES = 12  # per process: one per kind of plot and layout (x range and size, dataset extent)
WORDS_KEPT = 256  # titles and legends' pixels, per kept figure
#: zlib level 3: a few per cent larger than the default (6), encoded in half the time
PNG_OPTIONS = {"compress_level": 3}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=PAD_INCHES, metadata={"Software": None},
                pil_kwargs=PNG_OPTIONS)
    plt.close(fig)
    return data_uri(buf.getvalue())


# -- what a plot shows, and its key ----------------------------------------------------------------------


def _digest(kind: str, data: dict) -> str:
    h = hashlib.sha256(f"{CODE}\0{kind}\0".encode())
    for name in sorted(data):
        value = data[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(repr(value).encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Plot:
    """One plot: ``kind`` (``curve`` or ``regions``), what it shows (``data``: arrays, numbers and text), and
    ``key``, a digest of both and of this module's source."""

    kind: str
    data: dict
    key: str

    def png(self, *, plain: bool = False) -> bytes:
        """The plot as PNG bytes: on this process's kept figure, or (``plain``) on a fresh one with savefig."""
        return _DRAWERS[self.kind](plain=plain, **self.data)

    @property
    def layout(self) -> tuple:
        """What its kept figure is kept by: the kind and the axes' fixed extent (all plots of a layout share one)."""
        return _LAYOUTS[self.kind](**self.data)


def has_figure(layout: tuple) -> bool:
    """Whether this process keeps the figure of ``layout`` (``Plot.layout``, ``curve_layout``, ``regions_layout``)."""
    with _lock:
        return layout in _kept


def curve_layout(plot: dict) -> tuple:
    """The layout ``curve_plot(plot, ...)`` is drawn in, without making the plot."""
    return _curve_layout(np.asarray(plot["x"]))


def regions_layout(plot: dict, extent) -> tuple:
    """The layout ``regions_plot(plot, extent, ...)`` is drawn in, without making the plot."""
    return _regions_layout(tuple(float(v) for v in plot.get("extent", extent)))


def curve_plot(plot: dict, truth, title: str) -> Plot:
    """The model's fitted curve (``plot``: ``x``, ``y_pred``) against the true function ``truth``."""
    x = np.asarray(plot["x"])
    data = {"x": x, "y_true": np.asarray(truth(x)), "y_pred": np.asarray(plot["y_pred"]), "title": title}
    return Plot("curve", data, _digest("curve", data))


def regions_plot(plot: dict, extent, title: str) -> Plot:
    """Decision regions (``plot``: ``grid``, ``x``, ``y``, ``pred``, ``extent``; stored measurements that predate
    ``extent`` are drawn over the dataset's ``extent``)."""
    data = {"extent": tuple(float(v) for v in plot.get("extent", extent)),
            "grid": np.asarray(plot["grid"], dtype=np.float32), "x": np.asarray(plot["x"]),
            "y": np.asarray(plot["y"]), "pred": np.asarray(plot["pred"]), "title": title}
    return Plot("regions", data, _digest("regions", data))


# -- kept figures -----------------------------------------------------------------------------------------

_lock = threading.Lock()  # one plot at a time per process: matplotlib's artists are not for threads
_kept: OrderedDict = OrderedDict()


class _Kept:
    """A figure kept for one kind of plot and layout.  ``artists()`` are the model's own (animated: left out of
    the figure's normal draw); everything else is drawn once into ``background``."""

    def __init__(self, size: tuple[float, float]):
        w, h = size
        m = MARGIN_INCHES
        self.fig = Figure(figsize=(w + 2 * m, h + 2 * m), dpi=DPI)
        FigureCanvasAgg(self.fig)
        p = matplotlib.rcParams  # the subplot a figure of the default size has, in inches, moved in by the margin
        left, bottom = m + p["figure.subplot.left"] * w, m + p["figure.subplot.bottom"] * h
        width = (p["figure.subplot.right"] - p["figure.subplot.left"]) * w
        height = (p["figure.subplot.top"] - p["figure.subplot.bottom"]) * h
        self.ax = self.fig.add_axes((left / (w + 2 * m), bottom / (h + 2 * m), width / (w + 2 * m),
                                     height / (h + 2 * m)))
        # the task's title: drawn over the kept background with the model's artists (``update``), so that one kept
        # figure serves every task of a layout
        self.ax.set_title(" ", fontsize=10)
        self.background = None
        self.static_box = None
        #: the pixels and extent of artists drawn where nothing else is (the title; a legend below the axes), by
        #: the artist and its words: over the kept background, the same words give the same pixels
        self.by_words: OrderedDict = OrderedDict()
        self.boxes: dict = {}  # each such artist's extent in this render, from its kept pixels

    def artists(self) -> list:
        raise NotImplementedError

    def animate(self):
        """Leave the model's own artists, the spines drawn over them and the title (the task's: one kept figure
        serves every task of a layout) out of the kept background."""
        for a in self.artists():
            a.set_animated(True)

    def render(self) -> bytes:
        """Draw the model's artists over the kept background, crop to the tight box, encode."""
        canvas = self.fig.canvas
        if self.background is None:
            canvas.draw()
            self.background = canvas.copy_from_bbox(self.fig.bbox)
        else:
            canvas.restore_region(self.background)
        renderer = canvas.get_renderer()
        for a in sorted(self.artists(), key=lambda a: a.get_zorder()):  # stable: a full draw's order
            self.draw(a, renderer)
        box = self.tight_box(renderer)
        x0, y0 = int(np.floor(box.x0 * DPI)), int(np.floor(box.y0 * DPI))
        width, height = int(box.width * DPI), int(box.height * DPI)
        rgba = np.asarray(canvas.buffer_rgba())
        top = rgba.shape[0] - (y0 + height)
        if x0 < 0 or top < 0 or x0 + width > rgba.shape[1] or y0 < 0:
            raise _OffCanvas
        buf = io.BytesIO()
        imsave(buf, rgba[top:top + height, x0:x0 + width], format="png", dpi=DPI, metadata={"Software": None},
               pil_kwargs=PNG_OPTIONS)
        return buf.getvalue()

    def draw(self, artist, renderer) -> None:
        if artist in self.by_own_words():
            return self.draw_by_words(artist, renderer)
        self.ax.draw_artist(artist)

    def by_own_words(self) -> list:
        """The artists whose pixels depend on their words alone (``draw_by_words``)."""
        return [self.ax.title]

    def draw_by_words(self, artist, renderer) -> None:
        """Draw ``artist`` from its kept pixels when the same words were drawn before, else draw it and keep
        its pixels if it lies clear of the axes (nothing else is drawn there over the kept background)."""
        texts = artist.get_texts() if hasattr(artist, "get_texts") else [artist]
        key = (id(artist), tuple(t.get_text() for t in texts))
        kept = self.by_words.pop(key, None)
        if kept is not None:
            self.fig.canvas.restore_region(kept[0])
        else:
            self.ax.draw_artist(artist)
            box = artist.get_window_extent(renderer)
            area = box.padded(2)  # antialiased edges
            axes = self.ax.bbox
            if area.y1 < axes.y0 - 3 or area.y0 > axes.y1 + 3:  # below or above the axes, clear of the spines
                kept = (self.fig.canvas.copy_from_bbox(area), box)
        self.boxes[id(artist)] = kept[1] if kept is not None else None
        if kept is not None:
            self.by_words[key] = kept
            while len(self.by_words) > WORDS_KEPT:
                self.by_words.popitem(last=False)

    def moving(self) -> list:
        """The artists whose extent changes from plot to plot (the rest of the tight box is the layout's)."""
        raise NotImplementedError

    def extent_of(self, artist, renderer):
        """A moving artist's tight box, in pixels."""
        if self.boxes.get(id(artist)) is not None:
            return self.boxes[id(artist)]
        return artist.get_tightbbox(renderer)

    def tight_box(self, renderer):
        """The figure's tight box (``Figure.get_tightbbox``, as savefig takes it), padded, in inches: the
        extent of what every plot of this layout shares is taken once, then joined with the moving artists'."""
        if self.static_box is None:
            moving = self.moving()
            # the axes' tight box places the title anew, and with it hidden places it wrong: put back after
            title_at = self.ax.title.get_position()
            for a in moving:
                a.set_visible(False)
            try:
                self.static_box = self.fig.get_tightbbox(renderer)
            finally:
                for a in moving:
                    a.set_visible(True)
                self.ax.title.set_position(title_at)
        boxes = [self.static_box] + [TransformedBbox(self.extent_of(a, renderer), self.fig.dpi_scale_trans.inverted())
                                     for a in self.moving()]
        return Bbox.union(boxes).padded(PAD_INCHES)

    def plain(self) -> bytes:
        """The same figure drawn the plain way: every artist, savefig's tight box."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=PAD_INCHES,
                         metadata={"Software": None}, pil_kwargs=PNG_OPTIONS)
        return buf.getvalue()


class _OffCanvas(Exception):
    """The tight box reaches past the kept canvas (a very wide legend): drawn the plain way instead."""


def _draw(key: tuple, make, update, plain: bool, title: str) -> bytes:
    with _lock:
        if plain:
            fig = make()
        else:
            fig = _kept.pop(key, None) or make()
            _kept[key] = fig  # the most recently used last
            while len(_kept) > KEPT_FIGURES:
                _kept.popitem(last=False)
        fig.ax.title.set_text(title)  # its font and place are the layout's (``_Kept``)
        update(fig)
        if plain:
            return fig.plain()
        try:
            return fig.render()
        except _OffCanvas:
            return fig.plain()


# -- the model's fitted curve -----------------------------------------------------------------------------


class _Curve(_Kept):
    def __init__(self, xlim: tuple[float, float]):
        super().__init__((5, 3))
        ax = self.ax
        self.truth, = ax.plot(xlim, (0, 0), color="#444", lw=2, label="true function")
        self.model, = ax.plot(xlim, (0, 0), color="#d62728", lw=1.5, ls="--", label="your model")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        self.legend = ax.legend(fontsize=8)
        self.animate()

    def artists(self):
        # the y axis follows the model's outputs; the spines are drawn over the curves
        return [self.ax.yaxis, self.truth, self.model, *self.ax.spines.values(), self.legend, self.ax.title]

    def moving(self):
        return [self.ax.yaxis, self.legend, self.ax.title]

    def update(self, x, y_true, y_pred):
        self.truth.set_data(x, y_true)
        self.model.set_data(x, y_pred)
        self.ax.relim()  # the limits a fresh figure's autoscaling gives (the x range is the figure's key)
        self.ax.autoscale_view()


def _curve_layout(x, **_) -> tuple:
    span = (float(np.min(x)), float(np.max(x))) if len(x) else (0.0, 1.0)
    return "curve", span, len(x)


def _curve(x, y_true, y_pred, title: str, plain: bool = False) -> bytes:
    layout = _curve_layout(x)
    return _draw(layout, lambda: _Curve(layout[1]), lambda fig: fig.update(x, y_true, y_pred), plain, title)


def curve(plot: dict, truth, title: str) -> str:
    """The model's fitted curve against the true function, as a data URI."""
    return data_uri(curve_plot(plot, truth, title).png())


# -- decision regions -------------------------------------------------------------------------------------

#: decision-region colours: the model's probability of class 1 as a light grey shading (white = class 0),
#: its 0.5 contour as the boundary, held-out points in two hues that are neither grey nor like each other
#: (blue and orange: told apart with colour-blindness too), a black cross over each misclassified point
REGION_SHADES = LinearSegmentedColormap.from_list("grader-regions", ["#ffffff", "#a6a6a6"])
CLASS_COLOURS = ("#0072b2", "#e69f00")
MISCLASSIFIED = "#000000"
BOUNDARY = "#333333"


class _Regions(_Kept):
    def __init__(self, extent: tuple):
        super().__init__((4.2, 4.6))
        ax = self.ax
        self.extent = list(extent)
        self.image = ax.imshow(np.full((2, 2), 0.5, np.float32), origin="lower", extent=self.extent,
                               cmap=REGION_SHADES, vmin=0, vmax=1, aspect="equal")
        none = np.zeros((0, 2))
        # one call for both classes: interleaved, neither painted over the other as a block
        self.points = ax.scatter(none[:, 0], none[:, 1], s=9, c=CLASS_COLOURS[0], linewidths=0)
        self.wrong = ax.scatter(none[:, 0], none[:, 1], s=16, c=MISCLASSIFIED, marker="x", linewidths=0.9)
        self.contour = None
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        dot = dict(marker="o", linestyle="none", markersize=5, markeredgewidth=0)
        handles = [Line2D([], [], color=CLASS_COLOURS[0], label="class 0", **dot),
                   Line2D([], [], color=CLASS_COLOURS[1], label="class 1", **dot),
                   Line2D([], [], color=MISCLASSIFIED, marker="x", linestyle="none", markersize=5,
                          label="misclassified"),
                   Line2D([], [], color=BOUNDARY, lw=1.2, label="boundary, P(class 1) = 0.5"),
                   Patch(facecolor=REGION_SHADES(0.0), edgecolor="#777777", label="P(class 1) = 0"),
                   Patch(facecolor=REGION_SHADES(1.0), edgecolor="#777777", label="P(class 1) = 1")]
        self.legend = ax.legend(handles=handles, fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.07),
                                frameon=False)
        self.animate()
    def artists(self):
        found = [self.image, self.points, self.wrong] + ([self.contour] if self.contour is not None else [])
        return found + [*self.ax.spines.values(), self.legend, self.ax.title]

    def moving(self):
        return [self.legend, self.ax.title]

    def by_own_words(self):
        return [self.ax.title, self.legend]  # the legend below the axes says the counts

    def update(self, grid, x, y, pred):
        if self.contour is not None:
            self.contour.remove()
            self.contour = None
        self.image.set_data(grid)
        if np.nanmin(grid) < 0.5 < np.nanmax(grid):
            self.contour = self.ax.contour(grid, levels=[0.5], origin="lower", extent=self.extent, colors=BOUNDARY,
                                           linewidths=1.2)
            self.contour.set_animated(True)
        self.points.set_offsets(x[:, :2])
        self.points.set_facecolor(np.array(CLASS_COLOURS)[np.clip(y.astype(int), 0, 1)])
        wrong = pred != y
        self.wrong.set_offsets(x[wrong, :2])
        texts = self.legend.get_texts()
        for text, words in zip(texts, (f"class 0 ({np.sum(y == 0)})", f"class 1 ({np.sum(y == 1)})",
                                       f"misclassified ({np.sum(wrong)})"), strict=False):
            text.set_text(words)


def _regions_layout(extent, **_) -> tuple:
    return "regions", tuple(extent)


def _regions(extent, grid, x, y, pred, title: str, plain: bool = False) -> bytes:
    return _draw(_regions_layout(extent), lambda: _Regions(extent), lambda fig: fig.update(grid, x, y, pred), plain,
                 title)


def regions(plot: dict, extent, title: str) -> str:
    """Decision regions (the model's probability of class 1, its 0.5 boundary) under held-out points
    of both classes, misclassified ones crossed; the axes cover the grid and every point drawn
    (``plot["extent"]``; stored measurements that predate it are drawn over the dataset's ``extent``).
    A data URI."""
    return data_uri(regions_plot(plot, extent, title).png())


_DRAWERS = {"curve": _curve, "regions": _regions}
_LAYOUTS = {"curve": _curve_layout, "regions": _regions_layout}


# -- the class page ---------------------------------------------------------------------------------------


def histogram(scores, max_score: float) -> str:
    """The class's score distribution, in ten bins from 0 to the maximum."""
    fig, ax = plt.subplots(figsize=(6, 2.5))
    bins = np.linspace(0, max_score, 11) if max_score > 0 else 10
    ax.hist(scores, bins=bins, color="#4c72b0", edgecolor="white")
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.set_title("Score distribution", fontsize=10)
    return _png(fig)

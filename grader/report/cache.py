"""Drawn plots, kept by key, and the plots a student's page shows.

A plot's key (``plots.Plot.key``) is a digest of what it shows and of the
code that draws it, so a kept PNG is the picture that code would draw now:
re-drawing every page after a template edit, re-scoring a class or grading
an identical model draws nothing again, and a change to ``plots.py`` draws
every plot afresh.  ``PlotCache`` keeps them as files in a folder of the
output folder (readable by its owner only, like every report), counts what
it drew and what it reused, and draws many missing plots at once on
several processes (``draw_missing``).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OutputError
from ..logs import log
from ..records import Evaluation
from ..spec import import_reference

if TYPE_CHECKING:
    from . import plots  # matplotlib: imported where a plot is made, not by whoever imports the reports

FOLDER = ".plots"
#: fewer missing plots than this are drawn in this process: starting processes (and matplotlib in each) costs
#: about as much as drawing this many
POOL_FROM = 48


def task_plot(assignment, t) -> plots.Plot | None:
    """The plot a task result's section shows (``t.plot``: the measurements of the model it was graded on), or
    None."""
    if not t.plot or not t.dataset:
        return None
    return plot_of(assignment, t.id, t.dataset, t.plot)


def layout_of(assignment, dataset: str, measured: dict) -> tuple:
    """The layout (``plots.Plot.layout``) of any task's plot of a model whose plot data on ``dataset`` are
    ``measured``: found without drawing or even making the plot."""
    from . import plots

    ds = assignment.datasets[dataset]
    return plots.curve_layout(measured) if ds.kind == "function" else plots.regions_layout(measured, ds.extent)


def plot_of(assignment, task_id: str, dataset: str, measured: dict) -> plots.Plot:
    """The plot of task ``task_id`` for a model whose plot data on ``dataset`` are ``measured``."""
    from . import plots

    ds = assignment.datasets[dataset]
    title = f"task {task_id}"
    if ds.kind == "function":
        return plots.curve_plot(measured, import_reference(assignment, ds.function), title)
    return plots.regions_plot(measured, ds.extent, title + " (held-out points)")


class PlotWarmUp:
    """Warms this process's plotting up while a student is measured, in a thread of its own: told each model's
    measurements as they arrive (``evaluated``), it makes the kept figure of each layout they show that this
    process lacks, by drawing one plot on it and throwing the picture away.  A layout's first plot costs
    several times the next (the figure, its kept background and tight box, matplotlib's fonts and text
    layouts); a notebook's kernel leaves a core idle while it trains, and the first student's plots, drawn
    after the run, then cost what later students' cost.  Used as a context: leaving it waits for the thread
    (matplotlib is not for two threads at once; ``plots`` locks anyway).  Nothing it meets is an error: a plot
    it cannot draw is drawn, or explained, when the page is made."""

    def __init__(self, assignment):
        self.assignment = assignment
        self.drawn = 0
        self._task_of = {}  # dataset -> the first task graded on it: its title is as long as the others'
        for task in assignment.model_tasks():
            if task.dataset and task.dataset not in self._task_of:
                self._task_of[task.dataset] = task.id
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="grader-plot-warm-up")

    def evaluated(self, evaluation: Evaluation) -> None:
        """One model's measurements (an ``Evaluation``), from any thread."""
        self._pool.submit(self._warm, evaluation)

    def _warm(self, evaluation: Evaluation) -> None:
        from . import plots

        for dataset, measured in sorted(evaluation.datasets.items()):
            try:
                if not (measured.plot and dataset in self._task_of):
                    continue
                if plots.has_figure(layout_of(self.assignment, dataset, measured.plot)):
                    continue  # the usual case, after a worker's first student: nothing to make
                plot_of(self.assignment, self._task_of[dataset], dataset, measured.plot).png()
                self.drawn += 1
            except Exception:  # noqa: BLE001 - the page's own drawing meets it again, and says so
                log.debug("plot warm-up of %s failed", dataset, exc_info=True)

    def finish(self) -> None:
        """Wait for the drawing thread, and end it."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "PlotWarmUp":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


def _draw(plot: plots.Plot) -> tuple[str, bytes]:
    return plot.key, plot.png()


class PlotCache:
    """PNGs by key, in ``folder`` (None: kept in memory only, for one page).  ``drawn`` and ``reused`` count
    this cache's plots drawn and found."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, bytes] = {}
        self.used: set[str] = set()
        self.drawn = 0
        self.reused = 0

    def _path(self, key: str) -> Path:
        if not key.isalnum():  # a hex digest: never a path of its own
            raise ValueError(f"not a plot key: {key!r}")
        return self.folder / f"{key}.png"

    def get(self, key: str) -> bytes | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is None:
            return None
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def has(self, key: str) -> bool:
        return key in self.memory or (self.folder is not None and self._path(key).is_file())

    def put(self, key: str, png: bytes) -> None:
        """Keep a drawn plot: written whole or not at all, readable by its owner only."""
        if self.folder is None:
            self.memory[key] = png
            return
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(png)
            os.replace(tmp, path)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None

    def add(self, drawn: dict[str, bytes]) -> None:
        """Keep plots drawn elsewhere (a worker process's ``GradingSession.plots``)."""
        for key, png in drawn.items():
            if not self.has(key):
                self.put(key, png)
                self.drawn += 1

    def png(self, plot: plots.Plot) -> bytes:
        """The plot's PNG: kept, or drawn now and kept."""
        self.used.add(plot.key)
        png = self.get(plot.key)
        if png is not None:
            self.reused += 1
            return png
        png = plot.png()
        self.put(plot.key, png)
        self.drawn += 1
        return png

    def draw_missing(self, wanted: list[plots.Plot], workers: int = 1) -> None:
        """Draw the plots of ``wanted`` that are not kept: on ``workers`` processes when there are many."""
        missing = list({p.key: p for p in wanted if not self.has(p.key)}.values())
        if workers <= 1 or len(missing) < POOL_FROM:
            for plot in missing:
                self.put(plot.key, plot.png())
                self.drawn += 1
            return
        with ProcessPoolExecutor(min(workers, len(missing) // (POOL_FROM // 2)),
                                 mp_context=mp.get_context("spawn")) as pool:
            for key, png in pool.map(_draw, missing, chunksize=8):
                self.put(key, png)
                self.drawn += 1

    def forget_unused(self) -> int:
        """Remove the kept plots this cache was not asked for (after every page was drawn: none shows them any
        more).  Returns how many."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        removed = 0
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".tmp") or (entry.name.endswith(".png") and entry.name[:-4] not in self.used):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
        return removed

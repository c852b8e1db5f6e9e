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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..errors import OutputError
from ..spec import import_reference
from . import plots

FOLDER = ".plots"
#: fewer missing plots than this are drawn in this process: starting processes (and matplotlib in each) costs
#: about as much as drawing this many
POOL_FROM = 48


def task_plot(assignment, t) -> plots.Plot | None:
    """The plot a task result's section shows (``t.plot``: the measurements of the model it was graded on), or
    None."""
    if not t.plot or not t.dataset:
        return None
    ds = assignment.datasets[t.dataset]
    title = f"task {t.id}"
    if ds.kind == "function":
        return plots.curve_plot(t.plot, import_reference(assignment, ds.function), title)
    return plots.regions_plot(t.plot, ds.extent, title + " (held-out points)")


def draw_plots(assignment, measured) -> dict[str, bytes]:
    """The plots a student's page will show, drawn now: ``{key: PNG}``.  For a batch's worker process, which
    draws them while the parent records and writes; it scores the measurements only to know which model's plot
    each task shows (the parent scores them again and draws whatever this did not)."""
    from ..score import score_student

    out = {}
    for t in score_student(assignment, measured).tasks:
        plot = task_plot(assignment, t)
        if plot is not None and plot.key not in out:
            out[plot.key] = plot.png()
    return out


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
        """Keep plots drawn elsewhere (a worker process's ``draw_plots``)."""
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

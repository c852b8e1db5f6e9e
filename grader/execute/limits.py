"""A notebook's time limits, from the reference notebook's timings and this machine's speed.

``derive`` and ``time_limits`` (pure) scale the reference's slowest cell and whole notebook by the speed
probe's ratio, within the spec's minimums and maximums, or fall back to the spec's fixed limits; every limit
carries the sentence a student reads.  A run on the Keras 2 path (tf_keras) gets them times ``KERAS2_LOOP_FACTOR``:
its fits with callbacks or validation run tf_keras's own epoch-by-epoch loop, not a fused program; a notebook that
trains on ``tf.data`` pipelines, times ``DATASET_LOOP_FACTOR`` (Keras' own loop over the pipeline's batches).
``batch_limits`` runs the probe once per batch; ``StudentClock`` caps each run at what is left of the student's
time.  The formulas: docs/design/execute.md.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

from .. import speed_probe

#: the probe's scale is kept within these bounds, so that a freak reading cannot make limits absurd
SCALE_BOUNDS = (0.5, 8.0)
BACKENDS = ("jax", "tensorflow")
#: the limits of a run on the Keras 2 path (``keras2``: tf_keras on TensorFlow), kept beside the backends'
KERAS2 = "keras2"
#: how many times the reference's time (timed on Keras 3, whose every fit is fused) a Keras 2 run's limits allow:
#: a tf_keras fit with callbacks (``EarlyStopping``, a student's ``Callback``) or validation runs tf_keras's own
#: Python loop, epoch by epoch.  Measured (2026-12-07, 2 cores, shared; times at the calibration machine's speed
#: by the speed probe) against the reference's slowest cell (0.69 s: the sheet's 1c fit, 2000 epochs, fused on
#: JAX), that fit on tf_keras with ``EarlyStopping(monitor='loss')``: 34x one batch per call, 12x 64 per call
#: (``keras2_kernel.stepped`` now, exact); with ``validation_split=0.2`` and ``EarlyStopping()`` (the usual
#: pairing, whose validation runs tf_keras's ``evaluate`` every epoch): 100x.  The factor covers that one; the
#: cell factor's margin comes on top, and the assignment's maximums still bound every limit.
KERAS2_LOOP_FACTOR = 100
#: the limits of a run of a notebook whose fits take ``tf.data`` pipelines (on its backend), kept beside the others'
DATASETS = "datasets"
#: how many times the reference's time a notebook that trains on ``tf.data`` pipelines gets: the fused fit takes
#: arrays, and Keras' own fit iterates a pipeline batch by batch, making a new iterator every epoch.  Measured
#: (2026-12-07, quiet 2-core machine, sandboxed): the sheet's 1c fit (2000 epochs) of
#: ``Dataset.from_tensor_slices((x, y)).shuffle(200).batch(32)`` on JAX took 17 s, 25x the reference's slowest cell
#: (0.69 s, fused); a validation pipeline beside it adds little.  Four such fits (1c-1f) and the rest of the sheet
#: came to about 100 s against the JAX notebook limit of 120 s: later cells were cut off on a busier machine.
DATASET_LOOP_FACTOR = 50
#: why a run's limits were multiplied (``time_limits``'s ``loop``), completing "... the reference solution's slowest
#: cell as ..."
LOOP_WHY = {
    KERAS2: "Keras 2 runs it ({here} s on Keras 3 here, ×{loop} for tf_keras's epoch-by-epoch loop on the tensorflow "
            "backend, which runs a fit with callbacks or validation)",
    DATASETS: "Keras runs it on tf.data pipelines ({here} s with arrays here, ×{loop} for Keras' own loop over a "
              "pipeline, batch by batch, which the grader's fused fit does not run)",
}


#: code that makes a ``tf.data`` pipeline (or one of Keras' dataset makers, which return one): a notebook with it
#: gets the limits of ``DATASETS``.  Read from the student's code, so a mention buys at most those limits, within the
#: assignment's maximums and the student's time budget, as Keras 2 code buys the Keras 2 path's.
DATASET_SIGNS = re.compile(r"\btf\.data\b|\btensorflow\.data\b|\bDataset\.(?:from_tensor_slices|from_tensors|"
                           r"from_generator|range|zip)\b|\b(?:image|text|audio)_dataset_from_directory\b|"
                           r"\btimeseries_dataset_from_array\b|\btfds\.load\b")


def trains_on_datasets(sources) -> bool:
    """Whether any of the code ``sources`` (a notebook's code cells) makes a ``tf.data`` pipeline."""
    return any(DATASET_SIGNS.search(source or "") for source in sources)


def secs(v: float) -> str:
    """Seconds as a student reads them: ``7.5`` below 10 s, whole seconds above."""
    return f"{v:.1f}" if v < 9.95 else f"{v:.0f}"


def probe_scale(now: float, calibrated: float, bounds: tuple[float, float] = SCALE_BOUNDS) -> float:
    """How much slower (> 1) or faster (< 1) this machine is than the calibration machine, clamped."""
    lo, hi = bounds
    return min(hi, max(lo, now / calibrated))


def derive(factor: float, reference_s: float, scale: float, floor: float, cap: float) -> tuple[float, str]:
    """``factor x reference_s x scale`` rounded up to whole seconds, at least ``floor``, at most ``cap`` (the
    cap wins over the floor): (seconds, which of "reference", "minimum", "maximum" decided)."""
    raw = float(math.ceil(factor * reference_s * scale - 1e-9))
    if raw > cap:
        return cap, "maximum"
    if raw < floor:
        return min(floor, cap), "minimum"
    return raw, "reference"


@dataclass(frozen=True)
class Limit:
    """One time limit, and why it is what it is, in words that complete
    "the grader's limit for a cell is 45 s (...)"."""

    seconds: float
    why: str


@dataclass(frozen=True)
class TimeLimits:
    """The limits a notebook runs under on one backend."""

    backend: str
    cell: Limit
    notebook: Limit
    scale: float | None = None  # the probe's scale; None: fixed limits

    def noted(self, backend: str, note: str) -> TimeLimits:
        """These limits for a run on ``backend``, each saying ``note`` after why it is what it is."""
        return TimeLimits(backend, Limit(self.cell.seconds, f"{self.cell.why}; {note}"),
                          Limit(self.notebook.seconds, f"{self.notebook.why}; {note}"), self.scale)

    def to_json(self) -> dict:
        return {"backend": self.backend, "cell_s": round(self.cell.seconds, 1), "cell_why": self.cell.why,
                "notebook_s": round(self.notebook.seconds, 1), "notebook_why": self.notebook.why,
                "scale": None if self.scale is None else round(self.scale, 3)}


def _limit(what: str, setting: str, minimum: str, factor: float, reference_s: float, scale: float, floor: float,
           cap: float, loop: float = 1.0, loop_why: str = KERAS2) -> Limit:
    seconds, decided = derive(factor * loop, reference_s, scale, floor, cap)
    here = reference_s * scale * loop
    of = f"{factor:g}× the reference solution's {what}"
    if loop != 1:
        of += " as " + LOOP_WHY[loop_why].format(here=secs(reference_s * scale), loop=f"{loop:g}")
    if decided == "reference":
        return Limit(seconds, f"{of}, which takes {secs(here)} s on this machine")
    if decided == "minimum":
        return Limit(seconds, f"the grader's minimum ({minimum}); {of}, {secs(here)} s on this machine, "
                              "would be less")
    return Limit(seconds, f"the assignment's maximum ({setting}); {of}, {secs(here)} s on this machine, "
                          "would be more")


def fixed_limits(settings, backend: str, reason: str = "") -> TimeLimits:
    """The spec's fixed limits (``cell_timeout_s``, ``notebook_timeout_s``); ``reason``: why they apply."""
    tail = f"; {reason}" if reason else ""
    return TimeLimits(backend, Limit(settings.cell_timeout_s, f"set by the assignment, cell_timeout_s{tail}"),
                      Limit(settings.notebook_timeout_s, f"set by the assignment, notebook_timeout_s{tail}"))


def time_limits(settings, timings, backend: str, scale: float | None, loop: float = 1.0,
                run_on: str | None = None, loop_why: str = KERAS2) -> TimeLimits:
    """The limits on ``backend`` from the spec's ``settings`` (``NotebookSettings``), the calibration's
    ``timings`` (``Timings`` or None) and the probe's ``scale`` (None: no reading).  ``loop``: the reference's
    times multiplied by it, for the reason ``LOOP_WHY[loop_why]`` (``KERAS2_LOOP_FACTOR``, for a run on ``run_on``:
    the Keras 2 path's TensorFlow; ``DATASET_LOOP_FACTOR``).  Pure."""
    if run_on is not None:
        limits = time_limits(settings, timings, backend, scale, loop, loop_why=loop_why)
        return TimeLimits(run_on, limits.cell, limits.notebook, limits.scale)
    if settings.time_limits == "fixed":
        return fixed_limits(settings, backend)
    ref = timings.get(backend) if timings is not None else None
    if ref is None or scale is None:
        why = ("the assignment has no timings of a reference notebook" if timings is None else
               f"no timings of the reference notebook on the {backend} backend" if ref is None else
               "this machine's speed could not be compared with the calibration machine's")
        return fixed_limits(settings, backend, why)
    cell = _limit("slowest cell", "cell_timeout_s", "min_cell_limit_s", settings.cell_limit_factor,
                  ref.slowest_cell_s, scale, settings.min_cell_limit_s, settings.cell_timeout_s, loop, loop_why)
    notebook = _limit("whole notebook", "notebook_timeout_s", "min_notebook_limit_s",
                      settings.notebook_limit_factor, ref.notebook_s, scale, settings.min_notebook_limit_s,
                      settings.notebook_timeout_s, loop, loop_why)
    return TimeLimits(backend, cell, notebook, scale)


@dataclass(frozen=True)
class BatchLimits:
    """Every backend's limits for a batch, from one probe reading."""

    by_backend: tuple[tuple[str, TimeLimits], ...]
    probe_s: float | None = None     # the reading at batch start
    scale: float | None = None       # clamped probe_s / the calibration's reading
    notes: tuple[str, ...] = ()      # what a TA should know (a stale timing table, a failed probe)

    def for_backend(self, backend: str) -> TimeLimits:
        return dict(self.by_backend)[backend]

    def for_keras2(self, first: str) -> TimeLimits:
        """The limits of a run on the Keras 2 path of a notebook whose backend is ``first``: ``first``'s from the
        reference's timings times ``KERAS2_LOOP_FACTOR`` (the batch's ``keras2`` entry); without that entry,
        ``for_rerun("tensorflow", first)``."""
        own = dict(self.by_backend).get(KERAS2)
        return own if own is not None else self.for_rerun("tensorflow", first)

    def for_datasets(self, backend: str) -> TimeLimits:
        """The limits of a run on ``backend`` of a notebook whose fits take ``tf.data`` pipelines: ``backend``'s
        from the reference's timings times ``DATASET_LOOP_FACTOR`` (the batch's ``datasets`` entry, made for the
        spec's backend); otherwise ``backend``'s own."""
        own = dict(self.by_backend).get(DATASETS)
        return own if own is not None and own.backend == backend else self.for_backend(backend)

    def for_rerun(self, backend: str, first: str) -> TimeLimits:
        """The limits of a re-run on ``backend`` of a notebook that failed on ``first`` in a way ``first``
        explains: ``backend``'s own when they come from the reference's own timings there; otherwise, on
        TensorFlow, the batch's ``keras2`` entry (the reference's times on ``first`` times the loop factor: a fit
        on TensorFlow, unfused, is as slow as the Keras 2 path's, and ``first``'s limits cut fair students' fits
        short); else ``first``'s, kept (a forged "JAX-only" error buys no more than Keras 2 code gets, never the
        fixed maximums without timings)."""
        own, before = self.for_backend(backend), self.for_backend(first)
        if own.scale is not None or before.scale is None:  # the reference timed there, or no timings at all
            return own
        on_tensorflow = dict(self.by_backend).get(KERAS2) if backend == "tensorflow" else None
        if on_tensorflow is not None:
            return on_tensorflow.noted(backend, "the limit of a run on TensorFlow (the Keras 2 path's), for the "
                                                "re-run on tensorflow")
        return before.noted(backend, f"the {first} limit, kept for the re-run on {backend}, which has no timings "
                                     "of the reference notebook")

    def describe(self) -> str:
        """One line for the TA's console and log."""
        parts = []
        for backend, lim in self.by_backend:
            parts.append(f"{backend}: cell {secs(lim.cell.seconds)} s ({lim.cell.why}), notebook "
                         f"{secs(lim.notebook.seconds)} s ({lim.notebook.why})")
        probe = "" if self.probe_s is None else \
            f"; speed probe {self.probe_s * 1000:.0f} ms, scale {self.scale:.2f} (clamped to {SCALE_BOUNDS[0]:g}-" \
            f"{SCALE_BOUNDS[1]:g})"
        return "notebook time limits: " + "; ".join(parts) + probe

    def to_json(self) -> dict:
        return {"probe_s": self.probe_s, "scale": self.scale, "notes": list(self.notes),
                "backends": {b: lim.to_json() for b, lim in self.by_backend}}


def _stale(assignment) -> str | None:
    timings = assignment.timings
    path = assignment.root / timings.notebook
    if not timings.notebook_sha256 or not path.is_file():
        return None
    if hashlib.sha256(path.read_bytes()).hexdigest() != timings.notebook_sha256:
        return (f"{timings.notebook} changed after its timings were recorded: the time limits rest on the old "
                f"timings until `grader calibrate {assignment.folder} --timings-only` runs again.")
    return None


def batch_limits(assignment, probe=speed_probe.probe) -> BatchLimits:
    """The limits of every backend a notebook may run on, from one run of ``probe`` (only when the spec takes
    its limits from recorded timings: no probe runs otherwise)."""
    settings, timings = assignment.notebooks, assignment.timings
    notes, reading, scale = [], None, None
    if settings.time_limits == "reference" and timings is not None:
        if timings.probe_version != speed_probe.PROBE_VERSION:
            notes.append(f"The speed probe changed since the timings were recorded (version {timings.probe_version},"
                         f" now {speed_probe.PROBE_VERSION}): the fixed limits apply until `grader calibrate "
                         f"{assignment.folder} --timings-only` runs again.")
        else:
            try:
                reading = probe()
            except Exception as e:  # a probe that cannot run must not stop grading: the fixed limits apply
                notes.append(f"The speed probe could not run ({type(e).__name__}: {str(e)[:200]}): the fixed "
                             "limits apply.")
            else:
                scale = probe_scale(reading, timings.probe_s)
        stale = _stale(assignment)
        if stale:
            notes.append(stale)
    keras2 = time_limits(settings, timings, settings.backend, scale, KERAS2_LOOP_FACTOR, run_on="tensorflow")
    datasets = time_limits(settings, timings, settings.backend, scale, DATASET_LOOP_FACTOR, loop_why=DATASETS)
    return BatchLimits(tuple((b, time_limits(settings, timings, b, scale)) for b in BACKENDS)
                       + ((KERAS2, keras2), (DATASETS, datasets)), reading, scale, tuple(notes))


class StudentClock:
    """One student's time budget (``[evaluation] student_time_s``, and on Gradescope the bundle's budget inside
    it): every notebook run, a re-run, the loading of captures, evaluation and re-training draw from it, on
    the wall clock from the moment the student's measuring starts."""

    def __init__(self, total_s: float, why: str, *, started: float | None = None):
        """``started``: when the budget began (``time.monotonic()``; default: now)."""
        self.total_s, self.why = float(total_s), why
        self._now = time.monotonic
        self.started = self._now() if started is None else started

    def left(self) -> float:
        return max(0.0, self.total_s - (self._now() - self.started))

    def spent(self) -> float:
        return self._now() - self.started

    def cap(self, limits: TimeLimits) -> TimeLimits:
        """``limits`` with the notebook's (and so each cell's) limit at most what is left of the budget."""
        left = float(math.floor(self.left()))
        if left >= limits.notebook.seconds:
            return limits
        notebook = Limit(max(left, 0.0), f"what was left of {self.why} ({secs(self.total_s)} s) when this run "
                                         f"started; the notebook's own limit is {secs(limits.notebook.seconds)} s")
        cell = limits.cell if limits.cell.seconds <= notebook.seconds else Limit(notebook.seconds, notebook.why)
        return TimeLimits(limits.backend, cell, notebook, limits.scale)


_cached: dict = {}


def default_limits(assignment) -> BatchLimits:
    """The limits for a caller that was given none (one student graded directly): the probe runs once per
    process and assignment spec."""
    key = (str(assignment.root), assignment.notebooks, assignment.timings)
    if key not in _cached:
        _cached[key] = batch_limits(assignment)
    return _cached[key]

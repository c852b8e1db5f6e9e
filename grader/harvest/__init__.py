"""Harvest: the models a notebook run left behind, taken out of the sandbox, and the data they were trained on.

``Harvester`` takes each capture the kernel's hook wrote as the run goes, and the models the notebook saved,
for ``execute.execute_notebook`` (the composing caller makes it): opened without following links, bounded,
copied into a folder the grader owns (``take_capture``, ``DataBounds``, ``max_captures``).
``identify_datasets`` says which of the spec's datasets a model may have been trained on.
Why each bound, and how datasets are told apart: docs/design/harvest.md.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import untrusted
from ..execute.limits import secs
from ..intake.formats import EMPTY, MODEL_FORMATS, parse_json, sniff_format, zip_entries
from ..records import Provenance
from ..spec import Assignment, import_reference

MAX_META_BYTES = 64 * 1024
MAX_DATA_BYTES = 16 * 2**20          # a capture's .npz as written (read whole, then let go)
#: the entries a capture's .npz may list (the hook's np.savez writes x.npy and y.npy): ``zipfile`` reads every
#: entry of the central directory first, and 16 MB list 180,000 (1.4 s and 106 MB of the grader's own process for
#: each of a run's 50 captures)
MAX_DATA_ENTRIES = 8
MAX_MODEL_BYTES = 64 * 2**20         # a captured or saved model (the course's are a few KB)
#: the most points of a capture's training data loaded: ``identify_datasets`` names no dataset from more, so
#: more could neither be matched to a task nor re-trained (the kernel's hook saves up to 200,000 values)
MAX_TRAINING_POINTS = 20_000
#: the most values per point (x's features, y's columns) loaded where the spec's tasks do not say
MAX_POINT_WIDTH = 16
#: captures taken from one notebook run: this many per model task of the spec, and at least MIN_CAPTURES
#: (the sheet's notebook makes about one per task; the kernel's hook stops at 200)
CAPTURES_PER_TASK = 5
MIN_CAPTURES = 20
SAVED_MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")


@dataclass(frozen=True)
class DataBounds:
    """How much of a capture's training data is loaded: at most ``points`` points of at most ``x_width``
    features and ``y_width`` label columns, as float64.  ``of(assignment)``: the widest input and output of the
    spec's tasks, so that one capture's arrays hold at most ``bytes`` (tutorial6: 20,000 x (2 + 2) x 8 = 640 KB)."""

    points: int = MAX_TRAINING_POINTS
    x_width: int = MAX_POINT_WIDTH
    y_width: int = MAX_POINT_WIDTH

    @classmethod
    def of(cls, assignment: Assignment) -> "DataBounds":
        tasks = assignment.model_tasks()
        inputs = [t.architecture.inputs for t in tasks]
        outputs = [t.architecture.output.units for t in tasks]
        if not tasks or not all(isinstance(n, int) and n > 0 for n in inputs + outputs):
            return cls()
        return cls(MAX_TRAINING_POINTS, min(max(inputs), MAX_POINT_WIDTH), min(max(outputs), MAX_POINT_WIDTH))

    @property
    def bytes(self) -> int:
        """The most one capture's arrays take once loaded."""
        return self.points * (self.x_width + self.y_width) * 8


def max_captures(assignment: Assignment) -> int:
    """How many captures of one notebook run are taken: ``CAPTURES_PER_TASK`` per model task (tutorial6: 50),
    at least ``MIN_CAPTURES``.  With ``DataBounds`` they bound the training data the grader holds for one
    notebook run (tutorial6: 50 x 640 KB = 32 MB)."""
    return max(MIN_CAPTURES, CAPTURES_PER_TASK * len(assignment.model_tasks()))


@dataclass
class Capture:
    model_path: Path  # the grader's own copy
    event: str  # "fit" or "predict"
    cell: int | None
    index: int
    settings: dict = field(default_factory=dict)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    datasets: tuple = ()  # every dataset its training data may come from, likeliest first (``identify``)
    keras: str = "3"  # the Keras of the run that made it ("2": Keras 2), as the grader ran it (not the kernel's word)

    @property
    def dataset(self) -> str | None:
        """The likeliest of ``datasets`` (None when the data say nothing)."""
        return self.datasets[0] if self.datasets else None

    def identify(self, assignment: Assignment) -> None:
        """Say which datasets the training data may come from (``identify_datasets``)."""
        self.datasets = tuple(identify_datasets(assignment, self.x, self.y))

    def label(self, notebook: str) -> str:
        where = f"cell {self.cell}" if self.cell else "a cell"
        what = ("trained by model.fit" if self.event == "fit" else
                f"used by model.{'evaluate' if self.settings.get('call') == 'evaluate' else 'predict'}")
        layers = f"; the layers {self.settings['subclass']}.call runs" if self.settings.get("subclass") else ""
        return f"{notebook}, {where}: model {what} (capture {self.index}{layers})"

    def provenance(self) -> Provenance:
        """How the notebook made this model, as the capture says (forgeable: it only ever costs credit), with the
        number of points and of distinct labels it was fitted on (its keys as the gradebook has kept them)."""
        keep = ("epochs", "batch_size", "optimizer", "learning_rate", "weight_change", "fused", "fused_fallback")
        labels = self._labels()
        return Provenance.from_json({
            "made_by": self.event, **{k: self.settings[k] for k in keep if k in self.settings},
            **({"keras": "2"} if self.keras == "2" else {}),
            "samples": int(len(self.x)) if self.x is not None else None,
            "classes": int(len(np.unique(labels))) if labels is not None and labels.size else None})

    def _labels(self) -> np.ndarray | None:
        """A fit's training labels as one number per point (one-hot rows as their class), or None."""
        if self.event != "fit" or self.y is None:
            return None
        y = self.y
        if y.ndim == 2 and y.shape[1] > 1:
            y = np.argmax(y, axis=1)
        return y.ravel().astype(np.float64)

    def training(self) -> dict | None:
        """Training data for the evaluation worker (class labels as numbers)."""
        if self.x is None or not self.datasets or (labels := self._labels()) is None:
            return None
        return {"datasets": list(self.datasets), "x": self.x, "y": labels}


def _bounded_array(z: zipfile.ZipFile, name: str, points: int, width: int) -> np.ndarray | None:
    """Array ``name`` of an ``.npz`` as float64, or None when absent, damaged, not numbers, or larger than
    ``points`` x ``width``: its header is read first, and nothing more unless it passes (a 65 KB file can hold
    64 MiB of int8, 512 MB once widened)."""
    try:
        info = z.getinfo(name + ".npy")
    except KeyError:
        return None
    if info.file_size > points * width * 16 + 2**17:  # more than any array within the bounds, with its header
        return None
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 16 or not 1 <= len(shape) <= 2:
            return None
        if any(d < 0 for d in shape) or shape[0] > points or (shape[1] if len(shape) == 2 else 1) > width:
            return None  # numpy's header parser takes a negative dimension: f.read(negative) reads it all
        count = int(np.prod(shape))
        raw = f.read(count * dtype.itemsize)  # at most points x width values: the header said so
    if len(raw) != count * dtype.itemsize:
        return None
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").astype(np.float64)


def load_arrays(data: bytes, bounds: DataBounds = DataBounds()):
    """(x, y) from an ``.npz``'s bytes, as float64: (None, None) when damaged, forged, or when x holds more
    than ``bounds`` allows; y alone is None when it does (checked on each array's header, before it is
    decompressed or widened)."""
    try:
        if zip_entries(io.BytesIO(data)) > MAX_DATA_ENTRIES:  # read from its end record, before any entry
            return None, None
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            x = _bounded_array(z, "x", bounds.points, bounds.x_width)
            if x is None:
                return None, None
            return x, _bounded_array(z, "y", bounds.points, bounds.y_width)
    except Exception:  # a damaged or forged file: no data, nothing more
        return None, None


def take_capture(capture_dir: Path, meta_name: str, taken: Path,
                 bounds: DataBounds = DataBounds()) -> Capture | None:
    """One capture written by the hook, its model copied into ``taken`` and its training data loaded within
    ``bounds`` (``DataBounds.of`` the assignment); None when its metadata is missing or damaged (nothing to
    grade).  Raises ``untrusted.Refused`` when its model file is not a regular file (a link or a pipe put in
    its place): the caller says so in the report."""
    try:
        dir_fd = untrusted.open_tree(capture_dir)
    except OSError:
        return None
    try:
        try:
            meta = parse_json(untrusted.read_bytes(meta_name, MAX_META_BYTES, dir_fd))
        except (untrusted.Refused, ValueError):
            return None
        if not isinstance(meta, dict):
            return None
        stem = meta_name[: -len(".json")]
        taken.mkdir(parents=True, exist_ok=True)
        # the Keras 2 path's hook saves .h5 (``execute.keras2``), Keras 3's .keras: one of two fixed names
        suffix = ".h5" if str(meta.get("model_file", "")).endswith(".h5") else ".keras"
        try:
            model_path = untrusted.take(stem + suffix, taken / (stem + suffix), MAX_MODEL_BYTES, dir_fd)
        except OSError as e:
            raise untrusted.Refused(f"it could not be copied ({e.strerror or e})") from None
        try:
            x, y = load_arrays(untrusted.read_bytes(stem + ".npz", MAX_DATA_BYTES, dir_fd), bounds)
        except untrusted.Refused:
            x, y = None, None
    finally:
        os.close(dir_fd)
    settings = {k: meta.get(k) for k in ("epochs", "batch_size", "loss", "optimizer", "learning_rate",
                                         "weight_change", "validation_split")
                if isinstance(meta.get(k), (int, float, str)) and not isinstance(meta.get(k), bool)}
    settings.update({k: meta[k] for k in ("optimizer_config", "loss_config")
                     if isinstance(meta.get(k), (dict, str))})
    if isinstance(meta.get("shuffle"), bool):
        settings["shuffle"] = meta["shuffle"]
    if isinstance(meta.get("fused"), bool):  # how the kernel trained it (fused_fit): a count for the TA
        settings["fused"] = meta["fused"]
        for k in ("fused_fallback", "fused_program"):
            if isinstance(meta.get(k), str):
                settings[k] = meta[k][:200]
    if meta.get("call") == "evaluate":  # a model used by evaluate, captured as one predict uses
        settings["call"] = "evaluate"
    subclass = meta.get("subclass")  # a subclassed keras.Model, saved as the layers its call runs: its name
    if meta.get("subclass_traced") is True and isinstance(subclass, str) and subclass.isidentifier() \
            and len(subclass) <= 60:
        settings["subclass"] = subclass
    index = meta.get("index") if isinstance(meta.get("index"), int) else 0
    event = meta.get("event") if meta.get("event") in ("fit", "predict") else "fit"
    return Capture(model_path, event, None, index, settings, x, y)


def snapshot(work_dir: Path, bounds: untrusted.Bounds) -> dict[str, tuple[int, int]]:
    """The files of a work folder (relative path -> (size, mtime in ns)), walked without following links."""
    out = {}
    for e in untrusted.Walk(work_dir, bounds):
        if e.is_file:
            try:
                st = os.stat(work_dir / e.relative, follow_symlinks=False)
                out[e.relative] = (st.st_size, st.st_mtime_ns)
            except OSError:
                continue
    return out


def saved_models(work_dir: Path, before: dict, taken: Path, bounds: untrusted.Bounds,
                 notes: list[str] | None = None, most: int | None = None,
                 named: frozenset = frozenset()) -> list[tuple[str, Path]]:
    """Model files the notebook wrote (new or changed) in its work folder, as (relative path, the grader's
    copy).  Only model names (.h5, .hdf5, .keras) are looked at, and only regular files whose bytes are a
    model format are kept: at most ``most`` of them, those whose file name is one of ``named`` (the spec's,
    ``model.h5``) first, then by path; the rest are named in ``notes``.  ``notes``: the report's words on the
    TensorFlow SavedModel folders it wrote (``savedmodel_notes``), and on the model files it wrote that hold no
    model (``unsaved_note``), are added there."""
    found, no_model = [], []
    now = snapshot(work_dir, bounds)
    if notes is not None:
        notes.extend(savedmodel_notes(now, before))
    new = [rel for rel, state in now.items() if before.get(rel) != state
           and rel.lower().endswith(SAVED_MODEL_SUFFIXES) and not any(p.startswith(".") for p in rel.split("/"))]
    new.sort(key=lambda rel: (rel.rsplit("/", 1)[-1].lower() not in named, rel))
    if most is not None and len(new) > most:  # each is taken, evaluated and stored with its plots: bounded
        if notes is not None:
            notes.append(f"The run saved {len(new)} model files; only {most} were graded, more than the "
                         f"assignment's tasks could use (not graded: {', '.join(r[:80] for r in new[most:most + 3])}"
                         f"{', ...' if len(new) > most + 3 else ''}).")
        new = new[:most]
    for rel in sorted(new):
        # the grader's copy at the same relative path under saved/: one name a file (x/model.h5 and
        # x__model.h5 were both saved/x__model.h5, and the second was lost), a name the student's folder holds
        dest = taken / "saved" / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            untrusted.take_relative(work_dir, rel, dest, MAX_MODEL_BYTES)
            fmt = sniff_format(dest)
            if fmt in MODEL_FORMATS:
                found.append((rel, dest))
            else:
                no_model.append((rel, fmt))
        except (untrusted.Refused, OSError) as e:
            if notes is not None:
                why = str(e) if isinstance(e, untrusted.Refused) else f"it could not be copied ({e.strerror or e})"
                notes.append(f"{rel}, saved by the run: {why}; it was not graded.")
    if notes is not None and no_model:
        notes.append(unsaved_note(no_model))
    return found


def unsaved_note(files: list[tuple[str, str]]) -> str:
    """The report's words on model files (``(relative path, sniffed format)``) a run wrote that hold no model:
    an empty one is what a save stopped at its start leaves (a cell's time limit, a dead kernel), and a task
    whose model it was would otherwise read only as "no model.h5 was found"."""
    named = ", ".join(f"{rel} ({'empty' if fmt == EMPTY else 'not a Keras model'})"
                      for rel, fmt in files[:MAX_SAVEDMODEL_NOTES])
    more = f" and {len(files) - MAX_SAVEDMODEL_NOTES} more" if len(files) > MAX_SAVEDMODEL_NOTES else ""
    return (f"The run wrote {named}{more}, but no model is in it, so it was not graded. A save stopped part-way "
            "(by a cell's time limit, or a kernel that died) leaves such a file: let the cell that saves the "
            "model finish.")


#: SavedModel folders named in the report, at most
MAX_SAVEDMODEL_NOTES = 5


def savedmodel_notes(now: dict, before: dict) -> list[str]:
    """The report's words on each TensorFlow SavedModel folder a run wrote (a new or changed ``saved_model.pb``:
    Keras 2's ``save_format='tf'``, ``tf.saved_model.save``): the grader grades none, and a task whose model
    was one would otherwise read only as missing."""
    folders = [rel[: -len("saved_model.pb")].rstrip("/") or "." for rel, state in sorted(now.items())
               if (rel == "saved_model.pb" or rel.endswith("/saved_model.pb")) and before.get(rel) != state]
    notes = []
    for folder in folders[:MAX_SAVEDMODEL_NOTES]:
        name = folder.rsplit("/", 1)[-1] if folder != "." else "model"
        notes.append(f"The notebook saved a TensorFlow SavedModel folder, {folder}/, which the grader does not "
                     f"grade (no Keras 3 loads one as a model): save the model as one file, "
                     f"model.save('{name}.h5'), to have it graded.")
    if len(folders) > MAX_SAVEDMODEL_NOTES:
        notes.append(f"... and {len(folders) - MAX_SAVEDMODEL_NOTES} more SavedModel folder(s).")
    return notes


class Harvester:
    """What one notebook's runs hand back, taken as the run goes: ``execute.execute_notebook`` calls it (it never
    imports this stage); the caller that composes the stages makes it.  ``on_capture(capture)`` hears each model
    taken (``None``: forget what a run that is being redone gave); ``clock`` (``limits.StudentClock``): no capture
    is loaded once the student's time is spent."""

    suffixes = SAVED_MODEL_SUFFIXES  # the names of model files a notebook saves

    def __init__(self, assignment: Assignment, clock=None, on_capture=None):
        self.assignment, self.clock, self.on_capture = assignment, clock, on_capture
        self.most, self.bounds = max_captures(assignment), DataBounds.of(assignment)  # what one run may hold
        self.captures: list[Capture] = []
        self.refused: list[str] = []  # the report's words on captures not taken
        self.taken: Path | None = None
        self.keras = "3"  # the Keras of the run going on ("2": the Keras 2 path), set by ``execute``
        self._tried = 0
        self._late = False

    def start(self, taken: Path) -> None:
        """A run begins; its models are copied into ``taken`` (a folder the grader owns)."""
        self.taken, self._tried = taken, 0

    def discard(self) -> None:
        """Forget what the run gave: it is being redone (called before its files go)."""
        self.captures.clear()
        self.refused.clear()
        self._late = False
        if self.on_capture:
            self.on_capture(None)

    def aside(self) -> tuple:
        """What the run gave, set aside (its files stay) while another run of the same notebook is tried; then
        ``restore`` it, or drop it."""
        kept = (list(self.captures), list(self.refused), self.taken, self._tried, self._late)
        self.discard()
        return kept

    def restore(self, kept: tuple) -> None:
        """Forget the run since ``aside`` and take back what ``aside`` kept, each model heard again."""
        self.discard()
        captures, refused, self.taken, self._tried, self._late = kept
        self.refused.extend(refused)
        for cap in captures:
            self.captures.append(cap)
            if self.on_capture:
                self.on_capture(cap)

    def capture(self, meta_path: Path, cell: int) -> None:
        """The hook wrote ``meta_path`` (a capture's metadata) in ``cell``: take it, within the bounds."""
        self._tried = n = self._tried + 1
        if n > self.most:  # more than the tasks could use: neither loaded nor held
            if n == self.most + 1:
                self.refused.append(f"Only the first {self.most} models the notebook made (fits and predicts) were "
                                    f"graded, more than the assignment's {len(self.assignment.model_tasks())} tasks "
                                    f"could use; those from cell {cell} on beyond them were not.")
            return
        clock = self.clock
        if clock is not None and clock.left() <= 0:  # loading captures is the student's time too
            if not self._late:
                self._late = True
                self.refused.append(f"Models captured from cell {cell} on were not loaded: this submission used up "
                                    f"{clock.why} ({secs(clock.total_s)} s).")
            return
        try:
            cap = take_capture(meta_path.parent, meta_path.name, self.taken, self.bounds)
        except untrusted.Refused as e:
            self.refused.append(f"The model captured in cell {cell} ({meta_path.stem}) was not graded: its file "
                                f"is {e}.")
            return
        if cap is None:
            return
        cap.cell = cap.cell or cell
        cap.keras = self.keras
        cap.identify(self.assignment)
        self.captures.append(cap)
        if self.on_capture:
            self.on_capture(cap)

    def snapshot(self, work: Path, bounds: untrusted.Bounds) -> dict:
        """The work folder's files before the run (``saved``)."""
        return snapshot(work, bounds)

    def saved(self, work: Path, before: dict, bounds: untrusted.Bounds) -> list[tuple[str, Path]]:
        """The models the run saved in its work folder, copied beside the captures (``saved_models``): as many as
        the captures taken of a run, the spec's own file names (``model.h5``) first."""
        named = frozenset(n.lower() for t in self.assignment.tasks
                          for n in (*t.file_names, *(f"{name}{s}" for name in t.names for s in SAVED_MODEL_SUFFIXES)))
        return saved_models(work, before, self.taken, bounds, self.refused, self.most, named)


# -- which dataset was this trained on? -------------------------------------

REFERENCE_SEED = 20240601  # public: the reference samples for identification are not held-out data
_reference_cache: dict = {}


def _reference(assignment: Assignment, name: str):
    key = (assignment.id, name)
    if key not in _reference_cache:
        ds = assignment.datasets[name]
        gen = import_reference(assignment, ds.generator)
        X, y = gen(**{**ds.heldout, "n": 2000}, rng=np.random.default_rng(REFERENCE_SEED))
        _reference_cache[key] = (np.asarray(X, float), np.asarray(y, float).ravel())
    return _reference_cache[key]


#: points whose density is estimated at once: a block's distances to the 2,000 reference points take 32 MB
#: (all 20,000 points loaded at once took 570 MB)
DENSITY_BLOCK = 1024


def _log_density(points: np.ndarray, sample: np.ndarray, bandwidth: float = 0.5) -> np.ndarray:
    """Gaussian kernel density estimate of ``sample`` at ``points`` (log), ``DENSITY_BLOCK`` points at a time."""
    dim = points.shape[1]
    out = np.empty(len(points))
    for start in range(0, len(points), DENSITY_BLOCK):
        block = points[start:start + DENSITY_BLOCK]
        d2 = ((block[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
        logk = -d2 / (2 * bandwidth ** 2)
        m = logk.max(axis=1, keepdims=True)
        out[start:start + len(block)] = m[:, 0] + np.log(np.exp(logk - m).mean(axis=1))
    return out - dim / 2 * np.log(2 * np.pi * bandwidth ** 2)


#: datasets whose likelihood of the training data is within this factor (as a natural log) of the likeliest's
#: are kept (``identify_datasets``).  Measured on the tutorial's generators (3,000 draws each): a true dataset
#: trails the likeliest by at most 10.4 at 30 points and 15.2 at 15 points of the circular data at scale 2 (the
#: likeliest being scale 1), while clearly different data trail by more than 39 (10 points of the circular data
#: against xor) and 200 points at scale 1 against scale 2 by more than 52.
PLAUSIBLE_LOG_RATIO = 20.0
#: ... from this many points on.  Fewer carry too little evidence to rule anything out (five xor points are about
#: as likely under every class dataset), so a handful of points fitted last would expose a model to every task of
#: its layers: below it, the likeliest dataset alone is named.
MIN_POINTS_TO_WIDEN = 20


def _class_log_likelihoods(assignment: Assignment, x: np.ndarray, labels) -> dict[str, float]:
    """The log-likelihood of the sample under each class dataset's reference sample (a kernel density estimate,
    per class when the labels are known)."""
    out = {}
    for name, ds in assignment.datasets.items():
        if ds.kind != "classes":
            continue
        ref_x, ref_y = _reference(assignment, name)
        if labels is None:
            out[name] = float(_log_density(x, ref_x).sum())
            continue
        score = 0.0
        for c in np.unique(labels):
            sel, ref_sel = labels == c, ref_y == c
            if not ref_sel.any():
                score = -np.inf
                break
            score += _log_density(x[sel], ref_x[ref_sel]).sum() + sel.sum() * np.log(ref_sel.mean())
        out[name] = float(score)
    return out


def identify_datasets(assignment: Assignment, x: np.ndarray | None, y: np.ndarray | None) -> list[str]:
    """The datasets the training data ``x`` (labels ``y``) may have been drawn from, likeliest first: the 1-D
    task's own points, or every class dataset within ``PLAUSIBLE_LOG_RATIO`` of the likeliest (the likeliest
    alone below ``MIN_POINTS_TO_WIDEN`` points); [] when the data say nothing (no data, another shape, too few
    or too many points)."""
    if x is None:
        return []
    x = np.asarray(x, dtype=np.float64)
    flat = x.ravel() if x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1) else None
    for name, ds in assignment.datasets.items():
        if ds.kind == "function" and flat is not None:
            train = np.asarray(import_reference(assignment, ds.train_x)(), dtype=np.float64).ravel()
            if flat.shape == train.shape and np.allclose(flat, train, atol=1e-6):
                return [name]
    if x.ndim != 2 or x.shape[1] != 2 or len(x) < 5 or len(x) > MAX_TRAINING_POINTS or not np.isfinite(x).all():
        return []
    labels = None
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        labels = np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.ravel()
        if len(labels) != len(x):
            labels = None
    scores = {name: v for name, v in _class_log_likelihoods(assignment, x, labels).items() if np.isfinite(v)}
    if not scores:
        return []
    ranked = sorted(scores, key=lambda n: -scores[n])
    if len(x) < MIN_POINTS_TO_WIDEN:
        return ranked[:1]
    return [name for name in ranked if scores[name] >= scores[ranked[0]] - PLAUSIBLE_LOG_RATIO]

"""Harvest: the models a notebook run left behind, taken out of the sandbox.

The capture hook in the kernel wrote ``capture-NNN.{keras,json,npz}`` for
every ``fit`` and ``predict``; the notebook may also have saved models itself
(``model.save('model.h5')``).  Everything in those folders was written by
student code, so it is *taken*, not trusted: each file is opened without
following links, checked to be a regular file on the opened descriptor,
bounded in size, and copied into a folder the grader owns (``taken``); only
that copy is ever evaluated.  A capture's metadata is read defensively
(sizes, types), its data is loaded without pickle and with the uncompressed
size of every array bounded.  A student who tampers with any of it can only
lose credit.

``identify_datasets`` says which of the spec's datasets a model may have been
trained on, from the training data alone (the sheet's 200 points of [0, 1] are
the 1-D task; the circular, xor and ring generators are told apart by
likelihood).  A small sample cannot always tell two settings of one generator
apart (30 points of the circular data at scale 2 look like scale 1 in about one
draw of 40), so every dataset about as likely as the likeliest is kept, and
scoring lets the model's layers choose among their tasks.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import untrusted
from ..intake.formats import MODEL_FORMATS, parse_json, sniff_format
from ..spec import Assignment, import_reference

MAX_META_BYTES = 64 * 1024
MAX_DATA_BYTES = 16 * 2**20          # a capture's .npz as written
MAX_DATA_UNCOMPRESSED = 64 * 2**20   # ... and what its arrays may hold once decompressed
MAX_MODEL_BYTES = 64 * 2**20         # a captured or saved model (the course's are a few KB)
MAX_CAPTURES = 200
SAVED_MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")


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

    @property
    def dataset(self) -> str | None:
        """The likeliest of ``datasets`` (None when the data say nothing)."""
        return self.datasets[0] if self.datasets else None

    def identify(self, assignment: Assignment) -> None:
        """Say which datasets the training data may come from (``identify_datasets``)."""
        self.datasets = tuple(identify_datasets(assignment, self.x, self.y))

    def label(self, notebook: str) -> str:
        where = f"cell {self.cell}" if self.cell else "a cell"
        what = "trained by model.fit" if self.event == "fit" else "used by model.predict"
        return f"{notebook}, {where}: model {what} (capture {self.index})"

    def provenance(self) -> dict:
        """How the notebook made this model, as the capture says (forgeable: it only ever costs credit), with the
        number of points and of distinct labels it was fitted on."""
        keep = ("epochs", "batch_size", "optimizer", "learning_rate", "weight_change", "fused", "fused_fallback")
        labels = self._labels()
        return {"made_by": self.event, **{k: self.settings[k] for k in keep if k in self.settings},
                "samples": int(len(self.x)) if self.x is not None else None,
                "classes": int(len(np.unique(labels))) if labels is not None and labels.size else None}

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


def load_arrays(data: bytes):
    """(x, y) from an ``.npz``'s bytes, or (None, None) when damaged, forged or too large once decompressed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(max(i.file_size, 0) for i in z.infolist()) > MAX_DATA_UNCOMPRESSED:
                return None, None  # a small file that decompresses to gigabytes
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            x = np.asarray(arrays["x"], dtype=np.float64) if "x" in arrays.files else None
            y = np.asarray(arrays["y"], dtype=np.float64) if "y" in arrays.files else None
            return x, y
    except Exception:  # a damaged or forged file: no data, nothing more
        return None, None


def take_capture(capture_dir: Path, meta_name: str, taken: Path) -> Capture | None:
    """One capture written by the hook, its model copied into ``taken``; None when its metadata is missing
    or damaged (nothing to grade).  Raises ``untrusted.Refused`` when its model file is not a regular file
    (a link or a pipe put in its place): the caller says so in the report."""
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
        try:
            model_path = untrusted.take(stem + ".keras", taken / (stem + ".keras"), MAX_MODEL_BYTES, dir_fd)
        except OSError as e:
            raise untrusted.Refused(f"it could not be copied ({e.strerror or e})") from None
        try:
            x, y = load_arrays(untrusted.read_bytes(stem + ".npz", MAX_DATA_BYTES, dir_fd))
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


def saved_models(work_dir: Path, before: dict, taken: Path, bounds: untrusted.Bounds) -> list[tuple[str, Path]]:
    """Model files the notebook wrote (new or changed) in its work folder, as (relative path, the grader's
    copy).  Only names that say "model" (.h5, .hdf5, .keras) are looked at, and only regular files whose
    bytes are a model format are kept."""
    found = []
    now = snapshot(work_dir, bounds)
    for rel, state in sorted(now.items()):
        if before.get(rel) == state or not rel.lower().endswith(SAVED_MODEL_SUFFIXES):
            continue
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        dest = taken / "saved" / rel.replace("/", "__")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            untrusted.take_relative(work_dir, rel, dest, MAX_MODEL_BYTES)
            if sniff_format(dest) in MODEL_FORMATS:
                found.append((rel, dest))
        except (untrusted.Refused, OSError):
            continue
    return found


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


def _log_density(points: np.ndarray, sample: np.ndarray, bandwidth: float = 0.5) -> np.ndarray:
    """Gaussian kernel density estimate of ``sample`` at ``points`` (log)."""
    d2 = ((points[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
    logk = -d2 / (2 * bandwidth ** 2)
    m = logk.max(axis=1, keepdims=True)
    dim = points.shape[1]
    return (m[:, 0] + np.log(np.exp(logk - m).mean(axis=1))
            - dim / 2 * np.log(2 * np.pi * bandwidth ** 2))


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
    if x.ndim != 2 or x.shape[1] != 2 or len(x) < 5 or len(x) > 20000 or not np.isfinite(x).all():
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


"""Harvest: the models a notebook run left behind, made ready for evaluation.

The capture hook in the kernel wrote ``capture-NNN.{keras,json,npz}`` for
every ``fit`` and ``predict``; the notebook may also have saved models itself
(``model.save('model.h5')``).  None of it is trusted: the metadata is read
defensively (sizes, types, paths inside the capture folder), the data is
loaded without pickle, and each model is later loaded by the evaluation
worker exactly like a submitted file.  A student who tampers with any of it
can only lose credit.

``identify_dataset`` says which of the spec's datasets a model was trained on,
from the training data alone (the sheet's 200 points of [0, 1] are the 1-D
task; the circular, xor and ring generators are told apart by likelihood).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..intake.formats import MODEL_FORMATS, sniff_format
from ..spec import Assignment, import_reference

MAX_META_BYTES = 64 * 1024
MAX_DATA_BYTES = 16 * 2**20
MAX_CAPTURES = 200


@dataclass
class Capture:
    model_path: Path
    event: str  # "fit" or "predict"
    cell: int | None
    index: int
    settings: dict = field(default_factory=dict)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    dataset: str | None = None
    meta_name: str = ""

    def label(self, notebook: str) -> str:
        where = f"cell {self.cell}" if self.cell else "a cell"
        what = "trained by model.fit" if self.event == "fit" else "used by model.predict"
        return f"{notebook}, {where}: model {what} (capture {self.index})"

    def training(self) -> dict | None:
        """Training data for the evaluation worker (class labels as numbers)."""
        if self.event != "fit" or self.x is None or self.y is None or self.dataset is None:
            return None
        y = self.y
        if y.ndim == 2 and y.shape[1] > 1:
            y = np.argmax(y, axis=1)
        return {"dataset": self.dataset, "x": self.x, "y": y.ravel().astype(np.float64)}


def _load_arrays(path: Path):
    if not path.is_file() or path.stat().st_size > MAX_DATA_BYTES:
        return None, None
    try:
        with np.load(path, allow_pickle=False) as data:
            x = np.asarray(data["x"], dtype=np.float64) if "x" in data.files else None
            y = np.asarray(data["y"], dtype=np.float64) if "y" in data.files else None
            return x, y
    except Exception:  # a damaged or forged file: no data, nothing more
        return None, None


def read_capture(meta_path: Path) -> Capture | None:
    """One capture written by the hook, or None when it is missing, damaged or forged."""
    root = meta_path.parent.resolve()
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            return None
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    stem = meta_path.with_suffix("")
    model_path = stem.with_suffix(".keras")
    if not model_path.is_file() or model_path.resolve().parent != root:
        return None
    x, y = _load_arrays(stem.with_suffix(".npz"))
    settings = {k: meta.get(k) for k in ("epochs", "batch_size", "loss", "optimizer", "learning_rate")
                if isinstance(meta.get(k), (int, float, str)) and not isinstance(meta.get(k), bool)}
    index = meta.get("index") if isinstance(meta.get("index"), int) else 0
    event = meta.get("event") if meta.get("event") in ("fit", "predict") else "fit"
    return Capture(model_path, event, None, index, settings, x, y, meta_name=meta_path.name)


def saved_models(work_dir: Path, before: dict[str, float]) -> list[Path]:
    """Model files the notebook wrote (new or changed) in its work directory."""
    found = []
    for path in sorted(work_dir.rglob("*")):
        if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in path.relative_to(work_dir).parts):
            continue
        rel = path.relative_to(work_dir).as_posix()
        if before.get(rel) == path.stat().st_mtime:
            continue
        try:
            if sniff_format(path) in MODEL_FORMATS:
                found.append(path)
        except OSError:
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


def identify_dataset(assignment: Assignment, x: np.ndarray | None, y: np.ndarray | None) -> str | None:
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    flat = x.ravel() if x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1) else None
    for name, ds in assignment.datasets.items():
        if ds.kind == "function" and flat is not None:
            train = np.asarray(import_reference(assignment, ds.train_x)(), dtype=np.float64).ravel()
            if flat.shape == train.shape and np.allclose(flat, train, atol=1e-6):
                return name
    if x.ndim != 2 or x.shape[1] != 2 or len(x) < 5 or len(x) > 20000:
        return None
    labels = None
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        labels = np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.ravel()
        if len(labels) != len(x):
            labels = None
    best, best_score = None, -np.inf
    for name, ds in assignment.datasets.items():
        if ds.kind != "classes":
            continue
        ref_x, ref_y = _reference(assignment, name)
        if labels is not None:
            score = 0.0
            for c in np.unique(labels):
                sel, ref_sel = labels == c, ref_y == c
                if not ref_sel.any():
                    score = -np.inf
                    break
                score += _log_density(x[sel], ref_x[ref_sel]).sum() + sel.sum() * np.log(ref_sel.mean())
            score /= len(x)
        else:
            score = _log_density(x, ref_x).mean()
        if score > best_score:
            best, best_score = name, score
    return best

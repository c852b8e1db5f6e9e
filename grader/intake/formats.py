"""Telling file formats apart by their bytes, never by their names."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

HDF5 = "hdf5"
KERAS_ZIP = "keras_zip"
SAVEDMODEL = "savedmodel"
NOTEBOOK = "notebook"
SCRIPT = "script"
EMPTY = "empty"
UNKNOWN = "unknown"

#: human names used in messages
FORMAT_NAMES = {
    HDF5: "an HDF5 (.h5) Keras model",
    KERAS_ZIP: "a Keras v3 (.keras) zip model",
    SAVEDMODEL: "a TensorFlow SavedModel folder",
    NOTEBOOK: "a Jupyter notebook",
    SCRIPT: "a Python script with # %% cells",
    EMPTY: "an empty file",
    UNKNOWN: "not a format the grader knows",
}

MODEL_FORMATS = (HDF5, KERAS_ZIP, SAVEDMODEL)


def _hdf5_signature_at(head: bytes) -> bool:
    # HDF5 allows a user block: the signature may sit at 0, 512, 1024, 2048, ...
    offset = 0
    while offset + 8 <= len(head):
        if head[offset:offset + 8] == HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


def sniff_format(path: Path) -> str:
    """Return one of the format constants for ``path`` (a file or a folder).

    Raises ``OSError`` when the file cannot be read at all.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SAVEDMODEL
        return UNKNOWN
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return EMPTY
    if _hdf5_signature_at(head):
        return HDF5
    if head.startswith(ZIP_SIGNATURE):
        try:
            with zipfile.ZipFile(path) as z:
                if "config.json" in z.namelist():
                    return KERAS_ZIP
        except zipfile.BadZipFile:
            pass
        return UNKNOWN
    text = head.lstrip()
    if text.startswith(b"{"):
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            if isinstance(doc, dict) and "cells" in doc and "nbformat" in doc:
                return NOTEBOOK
        except (ValueError, UnicodeDecodeError):
            pass
        return UNKNOWN
    if path.suffix == ".py" and b"# %%" in _read_all(path):
        return SCRIPT
    return UNKNOWN


def _read_all(path: Path, limit: int = 5 * 2**20) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)

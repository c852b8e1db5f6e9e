"""Measurements as bytes for the gradebook: JSON (arrays tagged) compressed with zlib.

JSON rather than pickle: the gradebook is data, and reading it back must never
run code, whoever edited the file.
"""
from __future__ import annotations

import base64
import json
import zlib

import numpy as np

_TAG = "__ndarray__"


def _default(obj):
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {_TAG: base64.b64encode(arr.tobytes()).decode("ascii"), "dtype": arr.dtype.str,
                "shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in the gradebook")


def _hook(d: dict):
    if _TAG in d:
        dtype = np.dtype(d["dtype"])
        if dtype.hasobject:
            raise ValueError("object arrays are not stored")
        return np.frombuffer(base64.b64decode(d[_TAG]), dtype=dtype).reshape(d["shape"]).copy()
    return d


def encode(value) -> bytes:
    return zlib.compress(json.dumps(value, default=_default, separators=(",", ":")).encode("utf-8"), 6)


def decode(blob: bytes):
    return json.loads(zlib.decompress(blob).decode("utf-8"), object_hook=_hook)

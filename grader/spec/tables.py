"""Held-out data from a file: a CSV with a header row, input columns and a 0/1 label column."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class TableError(ValueError):
    """The file is not a usable held-out table; the message says why, in words."""


def read_labelled_csv(path: Path, label_column: str | None, inputs: int | None = None):
    """(X, y, input column names) from ``path``; ``label_column`` None means the last column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise TableError("the file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"the file cannot be read ({getattr(e, 'strerror', None) or e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 11:
        raise TableError(f"it has {max(len(rows) - 1, 0)} data row(s); a held-out table needs a header row and at "
                         "least 10 rows")
    header = [c.strip() for c in rows[0]]
    label = len(header) - 1 if label_column is None else (header.index(label_column)
                                                          if label_column in header else None)
    if label is None:
        raise TableError(f"it has no column {label_column!r} (its columns: {', '.join(header)})")
    columns = [c for i, c in enumerate(header) if i != label]
    if inputs is not None and len(columns) != inputs:
        raise TableError(f"it has {len(columns)} input column(s) but the tasks take {inputs} input(s)")
    try:
        data = np.array([[float(c) for c in r] for r in rows[1:]], dtype=np.float64)
    except ValueError:
        bad = next(i for i, r in enumerate(rows[1:], 2) if not _numeric(r))
        raise TableError(f"row {bad} is not all numbers ({','.join(rows[bad - 1])[:80]!r})") from None
    if data.ndim != 2 or data.shape[1] != len(header):
        raise TableError(f"its rows do not all have the header's {len(header)} columns")
    if not np.all(np.isfinite(data)):
        raise TableError("it contains NaN or infinite values")
    y = data[:, label]
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise TableError(f"its label column {header[label]!r} holds values other than 0 and 1")
    X = np.delete(data, label, axis=1)
    return X, y, columns


def _numeric(row) -> bool:
    try:
        [float(c) for c in row]
        return True
    except ValueError:
        return False

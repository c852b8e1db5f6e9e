"""What a submitted file is: its format from its bytes (a name only breaks ties: a ``.py`` file is a script),
and safe parsers for what intake reads of it (JSON, Python's imports)."""
from __future__ import annotations

import ast
import json
import os
import re
import zipfile
from pathlib import Path
from struct import error as struct_error

from .. import untrusted

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
    SCRIPT: "a Python script",
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


#: the largest notebook or script the grader reads (a sheet-style notebook with its plots is a few MB)
MAX_NOTEBOOK_BYTES = 20 * 2**20
#: the most entries a zip archive may list to be looked into: a .keras file holds three (``keras_io.KERAS_MEMBERS``);
#: ``zipfile`` reads every entry of the central directory first (an 86 MB archive of a million empty entries: 7 s
#: and 545 MB of the grader's own process, at every look)
MAX_ZIP_ENTRIES = 64


def zip_entries(f) -> int:
    """The number of entries the archive's end record declares, read without reading the entries (a damaged
    archive: 0, left to ``zipfile`` to refuse)."""
    try:
        end = zipfile._EndRecData(f)  # the end record (zip64's when there is one), as ZipFile itself reads it
    except (OSError, ValueError, EOFError, struct_error):
        return 0
    return int(end[zipfile._ECD_ENTRIES_TOTAL]) if end else 0


def parse_json(data: bytes):
    """JSON from untrusted bytes: any failure (bad text, nesting deep enough to exhaust the recursion
    limit, ...) is a ``ValueError``."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError, MemoryError) as e:
        raise ValueError(f"{type(e).__name__}: {str(e)[:160]}") from None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(node):
    """``node`` (parsed JSON) with every lone surrogate (JSON's ``"\\ud800"`` escape) replaced by U+FFFD, as
    undecodable bytes are: no UTF-8 file, kernel message or database takes one, and one in a cell's code made
    the gradebook's write of the result raise, which stopped the whole batch."""
    if isinstance(node, str):
        return _LONE_SURROGATE.sub("\ufffd", node)
    if isinstance(node, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_surrogates(v) for v in node]
    return node


def read_notebook_bytes(data: bytes):
    """The notebook (an nbformat v4 ``NotebookNode``) in untrusted bytes, read as leniently as Jupyter reads
    it: metadata that breaks nbformat's schema (a ``kernelspec`` without ``display_name``, a malformed
    ``language_info``) is dropped by nbformat's own repair (``normalize``: Jupyter opens such a notebook and
    the grader chooses the kernel itself); cells must still be valid.  Raises ``ValueError`` (bad JSON) or
    nbformat's errors."""
    import nbformat
    from nbformat.validator import normalize

    parse_json(data)  # refuses hostile JSON (deep nesting, bad text) before nbformat sees it
    nb = nbformat.reads(data.decode("utf-8", errors="replace"), as_version=4, capture_validation_error={})
    _, repaired = normalize(nb, strip_invalid_metadata=True)
    nb = nbformat.from_dict(_without_surrogates(repaired))
    nbformat.validate(nb)
    return nb


def sniff_format(path: Path, dir_fd: int | None = None) -> str:
    """One of the format constants for the regular file ``path`` (a name in ``dir_fd`` when given).

    The file is never followed if it is a link and never read past what telling its format needs;
    raises ``untrusted.Refused`` when it is not a regular file or cannot be read."""
    path = Path(path)
    name = path.name if dir_fd is not None else path
    head = untrusted.read_head(name, 4096, dir_fd)
    if not head:
        return EMPTY
    if _hdf5_signature_at(head):
        return HDF5
    if head.startswith(ZIP_SIGNATURE):
        fd = untrusted.open_regular(name, dir_fd)
        try:
            with os.fdopen(fd, "rb") as f:
                if zip_entries(f) > MAX_ZIP_ENTRIES:
                    return UNKNOWN
                with zipfile.ZipFile(f) as z:
                    if "config.json" in z.namelist():
                        return KERAS_ZIP
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
            pass
        return UNKNOWN
    text = head.lstrip()
    if text.startswith(b"{"):
        try:
            doc = parse_json(untrusted.read_bytes(name, MAX_NOTEBOOK_BYTES, dir_fd))
        except (ValueError, untrusted.Refused):
            return UNKNOWN
        if isinstance(doc, dict) and "nbformat" in doc and ("cells" in doc or "worksheets" in doc):
            return NOTEBOOK  # (worksheets: nbformat 3, IPython's before Jupyter's, which nbformat converts)
        return UNKNOWN
    if path.suffix == ".py":  # with `# %%` cells or without: both are run (``execute.scripts``)
        return SCRIPT
    return UNKNOWN


def imported_modules(source: str) -> set[str]:
    """The top-level module names ``source`` imports (``import tools``, ``from helpers import f``)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # blanks within a line only: ``^\\s*`` ran on over every blank line below each line start, quadratic
        return set(re.findall(r"^[ \t\f]*(?:from|import)[ \t\f]+([A-Za-z_]\w*)", source, re.MULTILINE))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names
